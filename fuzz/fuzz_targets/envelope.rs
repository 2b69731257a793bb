//! Opening envelopes: the input is a stored parameter value (`sk2.` /
//! `sk1.` text, or anything). It is decoded, its data key unwrapped with a
//! fixed local master key for a fixed binding, and opened; also opened
//! with a fixed data key directly, so that the AEAD sees fuzzed
//! ciphertext whatever the wrapped key. Checked besides no panic:
//!
//! - decoding is canonical: a value that decodes encodes back to the very
//!   same text, and `encoded_len` predicts its length;
//! - the input as a plaintext: sealed (`sk2.`), encoded, decoded, unwrapped
//!   and opened, it comes back unchanged, and under another binding it
//!   does not open;
//! - the input as a local key file: a key that parses writes back to a
//!   file that parses to the same key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use sidekey_envelope::{
    is_envelope, open, seal_bound, Binding, Bound, DataKey, Envelope, LocalMasterKey,
    LOCAL_KEY_FILE_HEADER, TAG_LEN,
};

/// The master key of the seeds in `fuzz/corpus/envelope` (bytes 0 to 31).
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// The binding the seeds were sealed for.
const BINDING: Binding<'static> = Binding {
    environment: "staging",
    service: "api",
    key: "DB_URL",
};

fn master() -> &'static LocalMasterKey {
    static MASTER: OnceLock<LocalMasterKey> = OnceLock::new();
    MASTER.get_or_init(|| {
        LocalMasterKey::from_file_text(&format!("{LOCAL_KEY_FILE_HEADER}{KEY}\n"))
            .expect("the fuzz key is valid")
    })
}

fn check_decoded(text: &str, envelope: &Envelope) {
    assert_eq!(envelope.encode(), text, "decoding is not canonical");
    let plaintext = envelope.ciphertext.len() - TAG_LEN;
    let predicted = match envelope.bound {
        Some(_) => {
            Envelope::encoded_len_sk2(plaintext, envelope.key_id.len(), envelope.wrapped_key.len())
        }
        None => Envelope::encoded_len(plaintext, envelope.key_id.len(), envelope.wrapped_key.len()),
    };
    assert_eq!(predicted, text.len(), "encoded_len");
    if let Ok(key) = master().unwrap(&envelope.wrapped_key, &BINDING.kms_context()) {
        let _ = open(envelope, &key, BINDING);
    }
    let fixed = DataKey::from_slice(&[7; 32]).expect("32 bytes");
    let _ = open(envelope, &fixed, BINDING);
}

fn round_trip(plaintext: &[u8]) {
    let rng = SystemRandom::new();
    let key = DataKey::generate(&rng).expect("random");
    let master = master();
    let wrapped = master
        .wrap(&key, &BINDING.kms_context(), &rng)
        .expect("wrap");
    let bound = Bound {
        version: 3,
        written: 1_700_000_000,
    };
    let sealed = match seal_bound(
        &key,
        &master.key_id(),
        &wrapped,
        BINDING,
        bound,
        plaintext,
        &rng,
    ) {
        Ok(s) => s,
        Err(e) => panic!("sealing {} bytes failed: {e}", plaintext.len()),
    };
    let text = sealed.encode();
    assert!(is_envelope(&text));
    let decoded = Envelope::decode(&text).expect("a sealed value decodes");
    assert_eq!(decoded, sealed);
    let unwrapped = master
        .unwrap(&decoded.wrapped_key, &BINDING.kms_context())
        .expect("unwrap");
    let opened = open(&decoded, &unwrapped, BINDING).expect("a sealed value opens");
    assert_eq!(opened.expose(), plaintext, "the value changed");
    let other = Binding {
        key: "OTHER",
        ..BINDING
    };
    assert!(
        open(&decoded, &unwrapped, other).is_err(),
        "opened under another key name"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_envelope(text);
    match Envelope::decode(text) {
        Ok(envelope) => check_decoded(text, &envelope),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(key) = LocalMasterKey::from_file_text(text) {
        let again =
            LocalMasterKey::from_file_text(&key.to_file_text()).expect("written key parses");
        assert_eq!(again.key_id(), key.key_id());
    }
});
