//! The data key.

use std::fmt;

use ring::rand::SecureRandom;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::EnvelopeError;

/// Length of a [`DataKey`] in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit AES data key.
///
/// Boxed so that moving it never leaves copies behind; zeroized on drop, not
/// `Clone`, `Debug` prints `DataKey(<redacted>)`.
pub struct DataKey(Box<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A fresh random key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<DataKey, EnvelopeError> {
        let mut key = DataKey(Box::new([0u8; DATA_KEY_LEN]));
        rng.fill(&mut key.0[..])
            .map_err(|_| EnvelopeError::Random)?;
        Ok(key)
    }

    /// Copies a key of exactly 32 bytes (for example the plaintext of a KMS
    /// `Decrypt` or `GenerateDataKey` answer).
    pub fn from_slice(bytes: &[u8]) -> Result<DataKey, EnvelopeError> {
        if bytes.len() != DATA_KEY_LEN {
            return Err(EnvelopeError::KeyLength {
                what: "data key",
                expected: DATA_KEY_LEN,
                actual: bytes.len(),
            });
        }
        let mut key = DataKey(Box::new([0u8; DATA_KEY_LEN]));
        key.0.copy_from_slice(bytes);
        Ok(key)
    }

    /// The key bytes (to hand to KMS `Encrypt` or the local master key).
    pub fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for DataKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_slice_requires_32_bytes() {
        for len in [0, 1, 16, 31, 33, 64] {
            let err = DataKey::from_slice(&vec![7u8; len]).unwrap_err();
            assert!(matches!(
                err,
                EnvelopeError::KeyLength { expected: 32, actual, .. } if actual == len
            ));
            assert_eq!(
                err.to_string(),
                format!("data key must be exactly 32 bytes, got {len}")
            );
        }
        let k = DataKey::from_slice(&[9u8; 32]).unwrap();
        assert_eq!(k.expose(), &[9u8; 32]);
    }

    #[test]
    fn generate_differs() {
        let rng = ring::rand::SystemRandom::new();
        let a = DataKey::generate(&rng).unwrap();
        let b = DataKey::generate(&rng).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; 32]);
    }

    #[test]
    fn debug_is_redacted() {
        // 0x4d = 'M': the marker would show up in any byte or text rendering.
        let k = DataKey::from_slice(&[0x4d; 32]).unwrap();
        let shown = format!("{k:?} {k:#?}");
        assert_eq!(format!("{k:?}"), "DataKey(<redacted>)");
        assert!(!shown.contains("77"), "{shown}");
        assert!(!shown.contains("4d"), "{shown}");
        assert!(!shown.contains("MM"), "{shown}");
    }
}
