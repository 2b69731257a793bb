//! The local master key: a stand-in for KMS on laptops, in the quick start
//! and in tests.

use std::fmt;
use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::envelope::{NONCE_LEN, TAG_LEN};
use crate::{aead, DataKey, EnvelopeError, DATA_KEY_LEN};

/// First line of a local master key file, up to the key.
pub const LOCAL_KEY_FILE_HEADER: &str = "sidekey-local-key v1 ";
/// Key ids of local master keys start with this.
pub const LOCAL_KEY_ID_PREFIX: &str = "local:";
/// Length of a data key wrapped by [`LocalMasterKey::wrap`]: nonce, key, tag.
pub const LOCAL_WRAPPED_LEN: usize = NONCE_LEN + DATA_KEY_LEN + TAG_LEN;

/// Domain separation for the wrap's associated data.
const CONTEXT_DOMAIN: &[u8] = b"sidekey local-wrap v1\0";
const MASTER_KEY_LEN: usize = 32;

/// A 256-bit master key kept in a local file, standing in for KMS.
///
/// It wraps data keys with AES-256-GCM; the associated data is a canonical
/// encoding of the encryption context, so context semantics match KMS: a
/// changed, missing or extra entry fails, order does not matter.
///
/// Zeroized on drop, not `Clone`; `Debug` shows only the key id (a
/// fingerprint, also written into every envelope).
pub struct LocalMasterKey(Box<[u8; MASTER_KEY_LEN]>);

impl LocalMasterKey {
    /// A fresh random master key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<LocalMasterKey, EnvelopeError> {
        let mut key = LocalMasterKey(Box::new([0u8; MASTER_KEY_LEN]));
        rng.fill(&mut key.0[..])
            .map_err(|_| EnvelopeError::Random)?;
        Ok(key)
    }

    /// The file contents: `sidekey-local-key v1 <base64url, no padding>\n`.
    /// The caller writes it to a file with mode 0600 and should zeroize the
    /// string afterwards.
    pub fn to_file_text(&self) -> String {
        let mut out = String::with_capacity(LOCAL_KEY_FILE_HEADER.len() + 44);
        out.push_str(LOCAL_KEY_FILE_HEADER);
        URL_SAFE_NO_PAD.encode_string(&self.0[..], &mut out);
        out.push('\n');
        out
    }

    /// Parses the text written by [`LocalMasterKey::to_file_text`]. Strict:
    /// exactly the header, 43 base64url characters and at most one trailing
    /// newline (`\n` or `\r\n`). Error messages never contain the text.
    pub fn from_file_text(text: &str) -> Result<LocalMasterKey, EnvelopeError> {
        let bad = |what: &str| EnvelopeError::LocalKeyFile(what.to_owned());
        let line = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let Some(encoded) = line.strip_prefix(LOCAL_KEY_FILE_HEADER) else {
            return Err(if line.starts_with("sidekey-local-key ") {
                bad("unsupported version (this build reads \"sidekey-local-key v1\")")
            } else {
                bad("it does not start with \"sidekey-local-key v1 \"")
            });
        };
        if encoded.contains(['\n', '\r']) {
            return Err(bad("it has more than one line"));
        }
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            bad("the key is not 43 characters of unpadded base64url encoding 32 bytes")
        })?);
        if bytes.len() != MASTER_KEY_LEN {
            return Err(EnvelopeError::KeyLength {
                what: "local master key",
                expected: MASTER_KEY_LEN,
                actual: bytes.len(),
            });
        }
        let mut key = LocalMasterKey(Box::new([0u8; MASTER_KEY_LEN]));
        key.0.copy_from_slice(&bytes);
        Ok(key)
    }

    /// `local:` followed by the first 16 hex characters of SHA-256 of the key
    /// bytes: a stable fingerprint, safe to show and to store in envelopes.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0[..]);
        let mut id = String::with_capacity(LOCAL_KEY_ID_PREFIX.len() + 16);
        id.push_str(LOCAL_KEY_ID_PREFIX);
        for b in &digest.as_ref()[..8] {
            // Writing to a String cannot fail.
            let _ = write!(id, "{b:02x}");
        }
        id
    }

    /// Wraps a data key: `nonce || ciphertext || tag` ([`LOCAL_WRAPPED_LEN`]
    /// bytes), bound to `context` (order irrelevant, duplicate keys refused).
    pub fn wrap(
        &self,
        key: &DataKey,
        context: &[(String, String)],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
        self.wrap_with_nonce(key, context, nonce)
    }

    fn wrap_with_nonce(
        &self,
        key: &DataKey,
        context: &[(String, String)],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, EnvelopeError> {
        let aad = canonical_context(context)?;
        let sealed = aead::seal(&self.0, nonce, &aad, key.expose())?;
        let mut out = Vec::with_capacity(LOCAL_WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Unwraps what [`LocalMasterKey::wrap`] produced, with the same context
    /// (in any order). Fails with [`EnvelopeError::Unwrap`] under another
    /// master key or another context.
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[(String, String)],
    ) -> Result<DataKey, EnvelopeError> {
        let aad = canonical_context(context)?;
        if wrapped.len() != LOCAL_WRAPPED_LEN {
            return Err(EnvelopeError::KeyLength {
                what: "locally wrapped data key",
                expected: LOCAL_WRAPPED_LEN,
                actual: wrapped.len(),
            });
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let plain = aead::open(&self.0, n, &aad, sealed).ok_or(EnvelopeError::Unwrap)?;
        DataKey::from_slice(&plain)
    }
}

/// `domain || u16 BE count || for each entry sorted by key: u16 BE len ||
/// key || u16 BE len || value`.
fn canonical_context(context: &[(String, String)]) -> Result<Vec<u8>, EnvelopeError> {
    let mut entries: Vec<(&str, &str)> = context
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    entries.sort_unstable();
    if let Some(pair) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(EnvelopeError::Context(format!(
            "the key {:?} appears more than once",
            pair[0].0
        )));
    }
    let too_long = |field, len| EnvelopeError::FieldTooLong {
        field,
        len,
        max: usize::from(u16::MAX),
    };
    let count = u16::try_from(entries.len())
        .map_err(|_| too_long("encryption context (entries)", entries.len()))?;
    let mut out = Vec::from(CONTEXT_DOMAIN);
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in entries {
        for (field, s) in [
            ("encryption context key", k),
            ("encryption context value", v),
        ] {
            let len = u16::try_from(s.len()).map_err(|_| too_long(field, s.len()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(out)
}

impl fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("key_id", &self.key_id())
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

impl Drop for LocalMasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for LocalMasterKey {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn canonical_context_is_unambiguous() {
        // Moving a byte between key and value, or between entries, changes it.
        let a = canonical_context(&ctx(&[("ab", "c")])).unwrap();
        let b = canonical_context(&ctx(&[("a", "bc")])).unwrap();
        assert_ne!(a, b);
        let c = canonical_context(&ctx(&[])).unwrap();
        let d = canonical_context(&ctx(&[("", "")])).unwrap();
        assert_ne!(c, d);
    }

    /// Expected values computed independently with Python's `cryptography`
    /// package (OpenSSL AES-GCM, hashlib SHA-256) from the layout documented
    /// on `canonical_context`, not by this crate.
    #[test]
    fn known_answer() {
        let master: Vec<u8> = (0x40u8..0x60).collect();
        let text = "sidekey-local-key v1 QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8\n";
        let mk = LocalMasterKey::from_file_text(text).unwrap();
        assert_eq!(&mk.0[..], &master[..]);
        assert_eq!(mk.to_file_text(), text);
        assert_eq!(mk.key_id(), "local:ca2a4fe727faaecf");

        let dk = DataKey::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let nonce: [u8; 12] = core::array::from_fn(|i| 0xb0 + i as u8);
        let context = ctx(&[
            ("sidekey:service", "billing"),
            ("sidekey:environment", "staging"),
        ]);
        let wrapped = mk.wrap_with_nonce(&dk, &context, nonce).unwrap();
        assert_eq!(
            hex::encode(&wrapped),
            "b0b1b2b3b4b5b6b7b8b9babb03018286c54fed9e33e72df3e1fb42c4ae19963b\
             5000c088ebdf7a2095adec8fdad8cc0b1925677884d9eefe9010a4f4"
        );
        assert_eq!(mk.unwrap(&wrapped, &context).unwrap().expose(), dk.expose());
    }

    #[test]
    fn duplicate_keys_refused() {
        let err = canonical_context(&ctx(&[("a", "1"), ("b", "2"), ("a", "1")])).unwrap_err();
        assert!(matches!(err, EnvelopeError::Context(_)), "{err}");
        assert!(err.to_string().contains("\"a\""), "{err}");
    }
}
