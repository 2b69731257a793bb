//! Property tests: decoding never panics, sealing round-trips, and
//! `encoded_len` is exact.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use sidekey_envelope::{open, seal, Binding, DataKey, Envelope, EnvelopeError};

proptest! {
    #[test]
    fn decode_any_string_never_panics(s in any::<String>()) {
        let _ = Envelope::decode(&s);
    }

    #[test]
    fn decode_any_prefixed_string_never_panics(s in "sk1\\.[A-Za-z0-9_=+/ -]{0,200}") {
        let _ = Envelope::decode(&s);
    }

    /// Arbitrary bytes behind a valid prefix and base64 exercise the binary
    /// parser: either an error, or an envelope that re-encodes to the input.
    #[test]
    fn decode_any_binary_never_panics(bin in proptest::collection::vec(any::<u8>(), 0..300),
                                      version_one in any::<bool>()) {
        let mut bin = bin;
        if version_one && !bin.is_empty() {
            bin[0] = 1;
        }
        let stored = format!("sk1.{}", URL_SAFE_NO_PAD.encode(&bin));
        if let Ok(env) = Envelope::decode(&stored) {
            prop_assert_eq!(env.encode(), stored);
        }
    }

    #[test]
    fn seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..10 * 1024),
        key_id in "[ -~]{1,100}",
        wrapped in proptest::collection::vec(any::<u8>(), 1..300),
        environment in "\\PC{0,30}",
        service in "\\PC{0,30}",
        key in "\\PC{0,30}",
    ) {
        let rng = SystemRandom::new();
        let dk = DataKey::generate(&rng).unwrap();
        let b = Binding { environment: &environment, service: &service, key: &key };
        let env = seal(&dk, &key_id, &wrapped, b, &plaintext, &rng).unwrap();
        let stored = env.encode();
        prop_assert_eq!(
            stored.len(),
            Envelope::encoded_len(plaintext.len(), key_id.len(), wrapped.len())
        );
        let back = Envelope::decode(&stored).unwrap();
        prop_assert_eq!(&back, &env);
        let secret = open(&back, &dk, b).unwrap();
        prop_assert_eq!(secret.expose(), &plaintext[..]);

        let other_key = format!("{key}x");
        let wrong = Binding { key: &other_key, ..b };
        prop_assert!(matches!(open(&back, &dk, wrong), Err(EnvelopeError::Decrypt)));
    }

    #[test]
    fn encoded_len_is_exact(
        plaintext_len in 0usize..5000,
        key_id_len in 1usize..2000,
        wrapped_len in 1usize..2000,
    ) {
        let env = Envelope {
            bound: None,
            key_id: "k".repeat(key_id_len),
            wrapped_key: vec![0xab; wrapped_len],
            nonce: [3; 12],
            ciphertext: vec![0xcd; plaintext_len + 16],
        };
        prop_assert_eq!(
            env.encode().len(),
            Envelope::encoded_len(plaintext_len, key_id_len, wrapped_len)
        );
    }
}
