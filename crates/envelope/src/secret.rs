//! Plaintext in memory.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Plaintext secret bytes.
///
/// Zeroized on drop (the whole allocation, spare capacity included), not
/// `Clone`, not `Serialize`, and `Debug` prints `Secret(<redacted>)` only.
/// There is deliberately no `PartialEq`: compare through [`Secret::expose`]
/// in tests.
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of `bytes` without copying them.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// Copies `b` into a new secret. The caller stays responsible for `b`.
    pub fn from_slice(b: &[u8]) -> Secret {
        Secret(b.to_vec())
    }

    /// The plaintext. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as text, if it is valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("MARKER-hunter2-MARKER".to_string());
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("MARKER"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn accessors() {
        let s = Secret::new(b"abc".to_vec());
        assert_eq!(s.expose(), b"abc");
        assert_eq!(s.expose_str(), Some("abc"));
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert!(Secret::from_slice(b"").is_empty());
        assert_eq!(Secret::from(vec![0xff, 0xfe]).expose_str(), None);
        assert_eq!(Secret::from(vec![1, 2]).expose(), &[1, 2]);
    }
}
