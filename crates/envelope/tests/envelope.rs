//! Format, tamper, wrong-key and wrong-context tests through the public API.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use sidekey_envelope::{
    is_envelope, open, seal, Binding, DataKey, Envelope, EnvelopeError, CONTEXT_ENVIRONMENT,
    CONTEXT_SERVICE,
};

const KEY_ID: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd";
const WRAPPED: &[u8] = b"wrapped-by-kms";
const BINDING: Binding<'static> = Binding {
    environment: "staging",
    service: "billing",
    key: "DATABASE_URL",
};

fn key() -> DataKey {
    DataKey::generate(&SystemRandom::new()).unwrap()
}

fn sealed(key: &DataKey, plaintext: &[u8]) -> Envelope {
    seal(
        key,
        KEY_ID,
        WRAPPED,
        BINDING,
        plaintext,
        &SystemRandom::new(),
    )
    .unwrap()
}

fn binary(env: &Envelope) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(env.encode().strip_prefix("sk1.").unwrap())
        .unwrap()
}

fn from_binary(bin: &[u8]) -> String {
    format!("sk1.{}", URL_SAFE_NO_PAD.encode(bin))
}

fn is_decrypt(r: Result<sidekey_envelope::Secret, EnvelopeError>) -> bool {
    matches!(r, Err(EnvelopeError::Decrypt))
}

#[test]
fn round_trip() {
    let k = key();
    let env = sealed(&k, b"hello");
    assert!(is_envelope(&env.encode()));
    let back = Envelope::decode(&env.encode()).unwrap();
    assert_eq!(back, env);
    assert_eq!(open(&back, &k, BINDING).unwrap().expose(), b"hello");
}

#[test]
fn nonces_are_random() {
    let k = key();
    let a = sealed(&k, b"same");
    let b = sealed(&k, b"same");
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn kms_context_is_environment_then_service() {
    assert_eq!(
        BINDING.kms_context(),
        vec![
            (CONTEXT_ENVIRONMENT.to_owned(), "staging".to_owned()),
            (CONTEXT_SERVICE.to_owned(), "billing".to_owned()),
        ]
    );
    assert_eq!(CONTEXT_ENVIRONMENT, "sidekey:environment");
    assert_eq!(CONTEXT_SERVICE, "sidekey:service");
}

#[test]
fn is_envelope_checks_prefix_only() {
    assert!(is_envelope("sk1."));
    assert!(is_envelope("sk1.AAAA"));
    assert!(!is_envelope("SK1.AAAA"));
    assert!(is_envelope("sk2.AAAA"));
    assert!(!is_envelope("sk3.AAAA"));
    assert!(!is_envelope(" sk1.AAAA"));
    assert!(!is_envelope("plain value"));
}

#[test]
fn every_single_byte_flip_is_detected() {
    let k = key();
    let env = sealed(&k, b"correct horse battery staple");
    let bin = binary(&env);
    let mut decode_failures = 0;
    let mut open_failures = 0;
    for pos in 0..bin.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = bin.clone();
            bad[pos] ^= mask;
            match Envelope::decode(&from_binary(&bad)) {
                Err(_) => decode_failures += 1,
                Ok(e) => {
                    let r = open(&e, &k, BINDING);
                    assert!(
                        is_decrypt(r),
                        "flip {mask:#04x} at byte {pos} was not detected"
                    );
                    open_failures += 1;
                }
            }
        }
    }
    assert_eq!(decode_failures + open_failures, bin.len() * 3);
    // Both layers took part: header flips that break the framing fail in
    // decode, everything else fails authentication.
    assert!(decode_failures > 0 && open_failures > 0);
}

#[test]
fn truncation_and_extension_are_detected() {
    let k = key();
    let env = sealed(&k, b"value");
    let bin = binary(&env);
    for len in 0..bin.len() {
        if let Ok(e) = Envelope::decode(&from_binary(&bin[..len])) {
            assert!(is_decrypt(open(&e, &k, BINDING)), "truncated to {len}");
        }
    }
    for extra in [&[0u8][..], b"garbage", &[0; 16]] {
        let mut longer = bin.clone();
        longer.extend_from_slice(extra);
        let e = Envelope::decode(&from_binary(&longer)).unwrap();
        assert!(is_decrypt(open(&e, &k, BINDING)));
    }
}

#[test]
fn wrong_data_key_fails() {
    let env = sealed(&key(), b"value");
    assert!(is_decrypt(open(&env, &key(), BINDING)));
}

#[test]
fn wrong_binding_fails() {
    let k = key();
    let env = sealed(&k, b"value");
    let others = [
        Binding {
            environment: "production",
            ..BINDING
        },
        Binding {
            service: "payments",
            ..BINDING
        },
        Binding {
            key: "DATABASE_PASSWORD",
            ..BINDING
        },
        // Moving bytes between fields must not help.
        Binding {
            environment: "stagingb",
            service: "illing",
            ..BINDING
        },
        Binding {
            environment: "",
            service: "",
            key: "",
        },
    ];
    for other in others {
        assert!(is_decrypt(open(&env, &k, other)), "{other:?}");
    }
    assert!(open(&env, &k, BINDING).is_ok());
}

#[test]
fn swapped_key_id_or_wrapped_key_fails() {
    let k = key();
    let rng = SystemRandom::new();
    let a = seal(&k, KEY_ID, WRAPPED, BINDING, b"a", &rng).unwrap();
    let b = seal(&k, "alias/other", b"other-wrapped", BINDING, b"b", &rng).unwrap();

    let with_b_wrapped = Envelope {
        wrapped_key: b.wrapped_key.clone(),
        ..a.clone()
    };
    assert!(is_decrypt(open(&with_b_wrapped, &k, BINDING)));
    let with_b_key_id = Envelope {
        key_id: b.key_id.clone(),
        ..a.clone()
    };
    assert!(is_decrypt(open(&with_b_key_id, &k, BINDING)));
    let with_b_nonce = Envelope {
        nonce: b.nonce,
        ..a.clone()
    };
    assert!(is_decrypt(open(&with_b_nonce, &k, BINDING)));
    let with_b_ciphertext = Envelope {
        ciphertext: b.ciphertext.clone(),
        ..a.clone()
    };
    assert!(is_decrypt(open(&with_b_ciphertext, &k, BINDING)));
    assert_eq!(open(&a, &k, BINDING).unwrap().expose(), b"a");
}

#[test]
fn decrypt_message() {
    assert_eq!(
        EnvelopeError::Decrypt.to_string(),
        "authentication failed: the value was altered, or it was sealed for another \
         environment, service or key, or under another data key"
    );
}

fn format_err(stored: &str) -> String {
    match Envelope::decode(stored) {
        Err(EnvelopeError::Format(msg)) => msg,
        other => panic!("{stored:?}: expected a format error, got {other:?}"),
    }
}

/// Hand-built binary: version, key id, wrapped key, nonce, ciphertext.
fn raw(version: u8, key_id: &[u8], wrapped: &[u8], nonce_len: usize, ct_len: usize) -> Vec<u8> {
    let mut b = vec![version];
    b.extend((key_id.len() as u16).to_be_bytes());
    b.extend(key_id);
    b.extend((wrapped.len() as u16).to_be_bytes());
    b.extend(wrapped);
    b.extend(vec![7u8; nonce_len]);
    b.extend(vec![9u8; ct_len]);
    b
}

#[test]
fn decode_rejects_malformed_values() {
    let good = from_binary(&raw(1, b"kid", b"w", 12, 16));
    assert!(Envelope::decode(&good).is_ok());

    let cases: Vec<(String, &str)> = vec![
        ("".into(), "does not start with"),
        ("sk1".into(), "does not start with"),
        ("SK1.AQ".into(), "does not start with"),
        (good.replacen("sk1.", "sk3.", 1), "does not start with"),
        ("sk1.".into(), "nothing after"),
        (format!("{good}="), "padding"),
        (format!("{good}=="), "padding"),
        (format!(" {good}"), "does not start with"),
        (format!("{good}\n"), "base64url alphabet"),
        (format!("{good} "), "base64url alphabet"),
        (good.replacen("sk1.A", "sk1.+", 1), "base64url alphabet"),
        (good.replacen("sk1.A", "sk1./", 1), "base64url alphabet"),
        ("sk1.A".into(), "possible encoded length"),
        // "AB" has unused low bits set: non-canonical.
        ("sk1.AB".into(), "non-canonical"),
        (from_binary(&[1]), "truncated"),
        (from_binary(&[1, 0]), "truncated"),
        (from_binary(&[1, 0, 5, b'a']), "truncated"),
        (from_binary(&raw(1, b"", b"w", 12, 16)), "key id is empty"),
        (
            from_binary(&raw(1, &[0xff, 0xfe], b"w", 12, 16)),
            "not valid UTF-8",
        ),
        (
            from_binary(&raw(1, b"kid", b"", 12, 16)),
            "wrapped data key is empty",
        ),
        (
            from_binary(&raw(1, b"kid", b"w", 11, 0)),
            "truncated: the nonce",
        ),
        (
            from_binary(&raw(1, b"kid", b"w", 12, 15)),
            "shorter than the 16-byte",
        ),
        (
            from_binary(&raw(1, b"kid", b"w", 12, 0)),
            "shorter than the 16-byte",
        ),
    ];
    for (stored, want) in cases {
        let msg = format_err(&stored);
        assert!(
            msg.contains(want),
            "{stored:?}: {msg:?} should mention {want:?}"
        );
    }
}

#[test]
fn decode_rejects_unknown_versions() {
    for v in [0u8, 2, 0x7f, 0xff] {
        let stored = from_binary(&raw(v, b"kid", b"w", 12, 16));
        match Envelope::decode(&stored) {
            Err(e @ EnvelopeError::UnsupportedVersion(got)) => {
                assert_eq!(got, v);
                assert!(e.to_string().contains(&format!("{v:#04x}")), "{e}");
            }
            other => panic!("version {v}: {other:?}"),
        }
    }
}

#[test]
fn format_errors_do_not_echo_the_value() {
    let msg = Envelope::decode("sk1.AAAA$hunter2")
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("hunter2") && !msg.contains('$'), "{msg}");
    let msg = Envelope::decode("postgres://user:hunter2@db")
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn seal_validates_fields() {
    let k = key();
    let rng = SystemRandom::new();
    assert!(matches!(
        seal(&k, "", WRAPPED, BINDING, b"x", &rng),
        Err(EnvelopeError::EmptyField("key id"))
    ));
    assert!(matches!(
        seal(&k, KEY_ID, b"", BINDING, b"x", &rng),
        Err(EnvelopeError::EmptyField("wrapped data key"))
    ));
    let long = "k".repeat(65_536);
    match seal(&k, &long, WRAPPED, BINDING, b"x", &rng) {
        Err(EnvelopeError::FieldTooLong {
            field: "key id",
            len: 65_536,
            max: 65_535,
        }) => {}
        other => panic!("{other:?}"),
    }
    match seal(&k, KEY_ID, long.as_bytes(), BINDING, b"x", &rng) {
        Err(EnvelopeError::FieldTooLong {
            field: "wrapped data key",
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match seal(
        &k,
        KEY_ID,
        WRAPPED,
        Binding {
            key: &long,
            ..BINDING
        },
        b"x",
        &rng,
    ) {
        Err(EnvelopeError::FieldTooLong {
            field: "key name", ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The largest representable key id still round-trips.
    let max = "k".repeat(65_535);
    let env = seal(&k, &max, WRAPPED, BINDING, b"x", &rng).unwrap();
    let back = Envelope::decode(&env.encode()).unwrap();
    assert_eq!(open(&back, &k, BINDING).unwrap().expose(), b"x");
}

#[test]
fn try_encode_refuses_unrepresentable_lengths() {
    let env = Envelope {
        bound: None,
        key_id: "k".repeat(70_000),
        wrapped_key: vec![1],
        nonce: [0; 12],
        ciphertext: vec![0; 16],
    };
    assert!(matches!(
        env.try_encode(),
        Err(EnvelopeError::FieldTooLong { .. })
    ));
    let panicked = std::panic::catch_unwind(|| env.encode()).is_err();
    assert!(panicked);
}

#[test]
fn encode_is_faithful_for_invalid_envelopes() {
    // Useful for tests elsewhere: encode never validates, decode does.
    let env = Envelope {
        bound: None,
        key_id: String::new(),
        wrapped_key: vec![],
        nonce: [0; 12],
        ciphertext: vec![],
    };
    assert!(Envelope::decode(&env.encode()).is_err());
}

#[test]
fn encoded_len_examples() {
    // 1 + 2 + 3 + 2 + 1 + 12 + 16 = 37 bytes -> 50 base64 chars + 4.
    assert_eq!(Envelope::encoded_len(0, 3, 1), 54);
    // A typical KMS value: an ARN of 75 bytes and a 184-byte CiphertextBlob
    // leave room for about 2.8 KiB of plaintext in a 4 KiB parameter.
    let overhead = Envelope::encoded_len(0, 75, 184);
    assert!(overhead < 420, "{overhead}");
}
