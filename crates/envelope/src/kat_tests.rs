//! Known-answer vectors for the whole envelope.
//!
//! The expected strings were computed independently with Python's
//! `cryptography` package (OpenSSL's AES-GCM), assembling the header and the
//! associated data by hand from the layout in the crate docs; the tests below
//! also rebuild the header and associated data byte by byte and check the
//! ciphertext through the same AES-GCM helper that `seal` and `open` use,
//! which `aead::tests` checks against the GCM specification's vectors.

use crate::{aead, open, seal_with_nonce, Binding, DataKey, Envelope, EnvelopeError};

struct Kat {
    key_id: &'static str,
    wrapped: Vec<u8>,
    nonce: [u8; 12],
    binding: Binding<'static>,
    plaintext: &'static [u8],
    expected: &'static str,
}

fn data_key() -> DataKey {
    DataKey::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap()
}

fn kats() -> Vec<Kat> {
    vec![
        Kat {
            key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            wrapped: b"kms-ciphertext-blob".to_vec(),
            nonce: core::array::from_fn(|i| 0xa0 + i as u8),
            binding: Binding {
                environment: "staging",
                service: "billing",
                key: "DATABASE_URL",
            },
            plaintext: b"postgres://billing:s3cr3t@db:5432/billing",
            expected: concat!(
                "sk1.AQBLYXJuOmF3czprbXM6ZXUtd2VzdC0xOjExMTEyMjIyMzMzMzprZXkvMTIz",
                "NGFiY2QtMTJhYi0zNGNkLTU2ZWYtMTIzNDU2Nzg5MGFiABNrbXMtY2lwaGVydGV4",
                "dC1ibG9ioKGio6SlpqeoqaqrlncPWSK5Z8xYSqixbhastx7LY2Oh1DBf6E5C5EWe",
                "QTLgWSWWw046UzhX1Dtl7pe0-WF-BNkH6-GX",
            ),
        },
        Kat {
            key_id: "local:0123456789abcdef",
            wrapped: vec![0x5a; 60],
            nonce: [0; 12],
            binding: Binding {
                environment: "pr-1234",
                service: "web",
                key: "EMPTY",
            },
            plaintext: b"",
            expected: concat!(
                "sk1.AQAWbG9jYWw6MDEyMzQ1Njc4OWFiY2RlZgA8WlpaWlpaWlpaWlpaWlpaWlpa",
                "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaAAAAAAAA",
                "AAAAAAAAHwoGleY42WbB5SiCOy8kCg",
            ),
        },
    ]
}

fn len16(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

#[test]
fn seal_with_nonce_matches_literal() {
    for k in kats() {
        let env = seal_with_nonce(
            &data_key(),
            k.key_id,
            &k.wrapped,
            k.binding,
            k.plaintext,
            k.nonce,
        )
        .unwrap();
        assert_eq!(env.encode(), k.expected);
        assert_eq!(
            env.encode().len(),
            Envelope::encoded_len(k.plaintext.len(), k.key_id.len(), k.wrapped.len())
        );
    }
}

#[test]
fn literal_decodes_and_opens() {
    for k in kats() {
        let env = Envelope::decode(k.expected).unwrap();
        assert_eq!(env.key_id, k.key_id);
        assert_eq!(env.wrapped_key, k.wrapped);
        assert_eq!(env.nonce, k.nonce);
        assert_eq!(env.ciphertext.len(), k.plaintext.len() + 16);
        let secret = open(&env, &data_key(), k.binding).unwrap();
        assert_eq!(secret.expose(), k.plaintext);
    }
}

#[test]
fn literal_layout_built_by_hand() {
    use base64::Engine as _;
    for k in kats() {
        // Header: version | len | key id | len | wrapped key | nonce.
        let mut header = vec![0x01];
        header.extend(len16(k.key_id.as_bytes()));
        header.extend(len16(&k.wrapped));
        header.extend(k.nonce);
        // AAD: domain | header | len-prefixed environment, service, key.
        let mut aad = b"sidekey sk1\0".to_vec();
        aad.extend(&header);
        aad.extend(len16(k.binding.environment.as_bytes()));
        aad.extend(len16(k.binding.service.as_bytes()));
        aad.extend(len16(k.binding.key.as_bytes()));

        let ct = aead::seal(data_key().expose(), k.nonce, &aad, k.plaintext).unwrap();
        let mut binary = header;
        binary.extend(ct);
        let body = k.expected.strip_prefix("sk1.").unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
            binary
        );
    }
}

#[test]
fn literal_refuses_other_binding() {
    let k = &kats()[0];
    let env = Envelope::decode(k.expected).unwrap();
    let other = Binding {
        key: "DATABASE_URL2",
        ..k.binding
    };
    assert!(matches!(
        open(&env, &data_key(), other),
        Err(EnvelopeError::Decrypt)
    ));
}

// ---- sk2: the same inputs bound to a parameter version and write time ----
//
// Computed independently with Python's `cryptography` (OpenSSL AES-GCM):
// header = 0x02 | u64 BE version | u64 BE written | len key id | key id |
// len wrapped | wrapped | nonce; AAD = b"sidekey sk2\0" | header | the
// length-prefixed environment, service and key.

use crate::{seal_bound_with_nonce, Bound};

fn kats_sk2() -> Vec<(Kat, Bound)> {
    let expected = [
        concat!(
            "sk2.AgAAAAAAAAADAAAAAGkwzwAAS2Fybjphd3M6a21zOmV1LXdlc3QtMToxMTEx",
            "MjIyMjMzMzM6a2V5LzEyMzRhYmNkLTEyYWItMzRjZC01NmVmLTEyMzQ1Njc4OTBh",
            "YgATa21zLWNpcGhlcnRleHQtYmxvYqChoqOkpaanqKmqq5Z3D1kiuWfMWEqosW4W",
            "rLcey2NjodQwX-hOQuRFnkEy4FkllsNOOlM4y_gM4CrxJQMeBwRtWRWkAw",
        ),
        concat!(
            "sk2.AgAAAAAAAAABAAAAAAAAAAAAFmxvY2FsOjAxMjM0NTY3ODlhYmNkZWYAPFpa",
            "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa",
            "WlpaWlpaWlpaWgAAAAAAAAAAAAAAALSD5jARUxTnSkDNoydN5yo",
        ),
    ];
    let bounds = [
        Bound {
            version: 3,
            written: 1_764_806_400,
        },
        Bound {
            version: 1,
            written: 0,
        },
    ];
    kats()
        .into_iter()
        .zip(expected.into_iter().zip(bounds))
        .map(|(k, (expected, bound))| (Kat { expected, ..k }, bound))
        .collect()
}

#[test]
fn sk2_seal_with_nonce_matches_literal() {
    for (k, bound) in kats_sk2() {
        let env = seal_bound_with_nonce(
            &data_key(),
            k.key_id,
            &k.wrapped,
            k.binding,
            bound,
            k.plaintext,
            k.nonce,
        )
        .unwrap();
        assert_eq!(env.encode(), k.expected);
        assert_eq!(
            env.encode().len(),
            Envelope::encoded_len_sk2(k.plaintext.len(), k.key_id.len(), k.wrapped.len())
        );
    }
}

#[test]
fn sk2_literal_decodes_and_opens() {
    for (k, bound) in kats_sk2() {
        let env = Envelope::decode(k.expected).unwrap();
        assert_eq!(env.bound, Some(bound));
        assert_eq!(env.key_id, k.key_id);
        assert_eq!(env.wrapped_key, k.wrapped);
        let secret = open(&env, &data_key(), k.binding).unwrap();
        assert_eq!(secret.expose(), k.plaintext);
    }
}

#[test]
fn sk2_literal_layout_built_by_hand() {
    use base64::Engine as _;
    for (k, bound) in kats_sk2() {
        let mut header = vec![0x02];
        header.extend(bound.version.to_be_bytes());
        header.extend(bound.written.to_be_bytes());
        header.extend(len16(k.key_id.as_bytes()));
        header.extend(len16(&k.wrapped));
        header.extend(k.nonce);
        let mut aad = b"sidekey sk2\0".to_vec();
        aad.extend(&header);
        aad.extend(len16(k.binding.environment.as_bytes()));
        aad.extend(len16(k.binding.service.as_bytes()));
        aad.extend(len16(k.binding.key.as_bytes()));
        let ct = aead::seal(data_key().expose(), k.nonce, &aad, k.plaintext).unwrap();
        let mut binary = header;
        binary.extend(ct);
        let body = k.expected.strip_prefix("sk2.").unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
            binary
        );
    }
}

/// The bound version and write time are authenticated: an envelope whose
/// header claims another version or time (a replay dressed up as the
/// current version) does not open.
#[test]
fn sk2_altered_version_or_time_fails() {
    let (k, bound) = kats_sk2().remove(0);
    let env = Envelope::decode(k.expected).unwrap();
    for other in [
        Bound {
            version: bound.version + 2,
            ..bound
        },
        Bound {
            written: bound.written + 60,
            ..bound
        },
    ] {
        let forged = Envelope {
            bound: Some(other),
            ..env.clone()
        };
        let reencoded = Envelope::decode(&forged.encode()).unwrap();
        assert!(matches!(
            open(&reencoded, &data_key(), k.binding),
            Err(EnvelopeError::Decrypt)
        ));
    }
    // Downgrading to sk1 (dropping the binding) fails too: another domain.
    let downgraded = Envelope { bound: None, ..env };
    assert!(matches!(
        open(&downgraded, &data_key(), k.binding),
        Err(EnvelopeError::Decrypt)
    ));
}

/// The prefix and the version byte must agree.
#[test]
fn prefix_and_version_byte_must_agree() {
    let sk1 = kats()[0].expected;
    let sk2 = kats_sk2()[0].0.expected;
    assert!(matches!(
        Envelope::decode(&sk1.replacen("sk1.", "sk2.", 1)),
        Err(EnvelopeError::UnsupportedVersion(1))
    ));
    assert!(matches!(
        Envelope::decode(&sk2.replacen("sk2.", "sk1.", 1)),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
}
