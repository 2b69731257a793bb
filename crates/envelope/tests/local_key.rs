//! The local master key through the public API.

use ring::rand::SystemRandom;
use sidekey_envelope::{
    open, seal, Binding, DataKey, EnvelopeError, LocalMasterKey, LOCAL_WRAPPED_LEN,
};

fn ctx(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn base() -> Vec<(String, String)> {
    ctx(&[
        ("sidekey:environment", "staging"),
        ("sidekey:service", "billing"),
    ])
}

fn fresh() -> (LocalMasterKey, DataKey) {
    let rng = SystemRandom::new();
    (
        LocalMasterKey::generate(&rng).unwrap(),
        DataKey::generate(&rng).unwrap(),
    )
}

fn is_unwrap(r: Result<DataKey, EnvelopeError>) -> bool {
    matches!(r, Err(EnvelopeError::Unwrap))
}

#[test]
fn wrap_unwrap_round_trip() {
    let (mk, dk) = fresh();
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    assert_eq!(wrapped.len(), LOCAL_WRAPPED_LEN);
    assert_eq!(mk.unwrap(&wrapped, &base()).unwrap().expose(), dk.expose());
    // Random nonce: wrapping twice differs.
    assert_ne!(
        wrapped,
        mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap()
    );
}

#[test]
fn context_order_does_not_matter() {
    let (mk, dk) = fresh();
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    let mut reversed = base();
    reversed.reverse();
    assert_eq!(
        mk.unwrap(&wrapped, &reversed).unwrap().expose(),
        dk.expose()
    );
}

#[test]
fn wrong_context_fails() {
    let (mk, dk) = fresh();
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    let wrong = [
        ctx(&[
            ("sidekey:environment", "production"),
            ("sidekey:service", "billing"),
        ]),
        ctx(&[
            ("sidekey:environment", "staging"),
            ("sidekey:service", "payments"),
        ]),
        ctx(&[("sidekey:environment", "staging")]),
        ctx(&[]),
        ctx(&[
            ("sidekey:environment", "staging"),
            ("sidekey:service", "billing"),
            ("extra", "entry"),
        ]),
        ctx(&[
            ("sidekey:environment", "staging"),
            ("sidekey:servicE", "billing"),
        ]),
    ];
    for c in &wrong {
        assert!(is_unwrap(mk.unwrap(&wrapped, c)), "{c:?}");
    }
}

#[test]
fn duplicate_context_keys_are_an_error() {
    let (mk, dk) = fresh();
    let dup = ctx(&[("sidekey:service", "a"), ("sidekey:service", "b")]);
    assert!(matches!(
        mk.wrap(&dk, &dup, &SystemRandom::new()),
        Err(EnvelopeError::Context(_))
    ));
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    assert!(matches!(
        mk.unwrap(&wrapped, &dup),
        Err(EnvelopeError::Context(_))
    ));
}

#[test]
fn another_master_key_fails() {
    let (mk, dk) = fresh();
    let (other, _) = fresh();
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    assert!(is_unwrap(other.unwrap(&wrapped, &base())));
}

#[test]
fn altered_or_wrong_length_wrapped_key_fails() {
    let (mk, dk) = fresh();
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    for pos in 0..wrapped.len() {
        let mut bad = wrapped.clone();
        bad[pos] ^= 0x01;
        assert!(is_unwrap(mk.unwrap(&bad, &base())), "byte {pos}");
    }
    for len in [0, 1, LOCAL_WRAPPED_LEN - 1, LOCAL_WRAPPED_LEN + 1] {
        let mut bad = wrapped.clone();
        bad.resize(len, 0);
        assert!(matches!(
            mk.unwrap(&bad, &base()),
            Err(EnvelopeError::KeyLength {
                expected: LOCAL_WRAPPED_LEN,
                ..
            })
        ));
    }
}

#[test]
fn key_id_is_a_stable_fingerprint() {
    let (mk, _) = fresh();
    let (other, _) = fresh();
    let id = mk.key_id();
    assert!(id.starts_with("local:"));
    assert_eq!(id.len(), "local:".len() + 16);
    assert!(id["local:".len()..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(id, mk.key_id());
    let reloaded = LocalMasterKey::from_file_text(&mk.to_file_text()).unwrap();
    assert_eq!(reloaded.key_id(), id);
    assert_ne!(other.key_id(), id);
}

#[test]
fn file_text_round_trip() {
    let (mk, dk) = fresh();
    let text = mk.to_file_text();
    assert!(text.starts_with("sidekey-local-key v1 "));
    assert!(text.ends_with('\n'));
    assert_eq!(text.len(), "sidekey-local-key v1 ".len() + 43 + 1);
    let wrapped = mk.wrap(&dk, &base(), &SystemRandom::new()).unwrap();
    for variant in [
        text.clone(),
        text.trim_end().to_owned(),
        format!("{}\r\n", text.trim_end()),
    ] {
        let back = LocalMasterKey::from_file_text(&variant).unwrap();
        assert_eq!(
            back.unwrap(&wrapped, &base()).unwrap().expose(),
            dk.expose()
        );
    }
}

#[test]
fn from_file_text_rejects_garbage_without_echoing_it() {
    let (mk, _) = fresh();
    let good = mk.to_file_text();
    let body = good
        .trim_end()
        .strip_prefix("sidekey-local-key v1 ")
        .unwrap()
        .to_owned();
    let cases = [
        String::new(),
        "\n".to_owned(),
        "SECRETMARKER".to_owned(),
        format!("sidekey-local-key v2 {body}\n"),
        format!("sidekey-local-key  v1 {body}\n"),
        format!(" {good}"),
        format!("{good}\n"),
        format!("{}\n\n", good.trim_end()),
        format!("{} \n", good.trim_end()),
        format!("{}=\n", good.trim_end()),
        format!("sidekey-local-key v1 {}\n", &body[..42]),
        format!("sidekey-local-key v1 {body}AAAA\n"),
        format!("sidekey-local-key v1 +{}\n", &body[1..]),
        format!("sidekey-local-key v1 SECRET$MARKER{}\n", &body[13..]),
        format!("sidekey-local-key v1 {body}\nsidekey-local-key v1 {body}\n"),
    ];
    for text in &cases {
        let Err(err) = LocalMasterKey::from_file_text(text) else {
            panic!("accepted {text:?}");
        };
        let msg = err.to_string();
        assert!(!msg.contains("SECRETMARKER"), "{msg}");
        assert!(!msg.contains(&body[..8]), "{msg}");
        assert!(
            matches!(
                err,
                EnvelopeError::LocalKeyFile(_) | EnvelopeError::KeyLength { .. }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn debug_shows_fingerprint_only() {
    let text = "sidekey-local-key v1 TU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU0\n";
    let mk = LocalMasterKey::from_file_text(text).unwrap();
    let shown = format!("{mk:?} {mk:#?}");
    assert!(shown.contains(&mk.key_id()), "{shown}");
    assert!(!shown.contains("TU1N"), "{shown}");
    assert!(!shown.contains("MMMM"), "{shown}");
    assert!(!shown.contains("77, 77"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn local_key_works_with_envelopes() {
    // The path the local store takes: wrap under the local key with the
    // binding's KMS context, seal, then unwrap and open.
    let rng = SystemRandom::new();
    let (mk, dk) = fresh();
    let b = Binding {
        environment: "dev-alice",
        service: "api",
        key: "TOKEN",
    };
    let wrapped = mk.wrap(&dk, &b.kms_context(), &rng).unwrap();
    let env = seal(&dk, &mk.key_id(), &wrapped, b, b"t0k3n", &rng).unwrap();
    drop(dk);

    let decoded = sidekey_envelope::Envelope::decode(&env.encode()).unwrap();
    let dk = mk.unwrap(&decoded.wrapped_key, &b.kms_context()).unwrap();
    assert_eq!(open(&decoded, &dk, b).unwrap().expose_str(), Some("t0k3n"));

    let other = Binding {
        service: "web",
        ..b
    };
    assert!(is_unwrap(
        mk.unwrap(&decoded.wrapped_key, &other.kms_context())
    ));
}
