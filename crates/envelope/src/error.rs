//! The crate's one error type.

/// Why sealing, opening, decoding or a key operation failed.
///
/// No message ever contains plaintext, key material or the text of a key
/// file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The stored value is not a well-formed `sk2.`/`sk1.` value; says what
    /// is wrong.
    #[error("malformed envelope: {0}")]
    Format(String),

    /// The version byte is not one this build reads.
    #[error(
        "unsupported envelope format version {0:#04x} (this build reads 0x01 after \"sk1.\" and 0x02 after \"sk2.\")"
    )]
    UnsupportedVersion(u8),

    /// AES-256-GCM authentication failed when opening a value.
    #[error(
        "authentication failed: the value was altered, or it was sealed for another \
         environment, service or key, or under another data key"
    )]
    Decrypt,

    /// A key had the wrong length.
    #[error("{what} must be exactly {expected} bytes, got {actual}")]
    KeyLength {
        /// Which key ("data key", "local master key", ...).
        what: &'static str,
        /// The required length in bytes.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },

    /// A field does not fit its length prefix.
    #[error("{field} is {len} bytes, more than the maximum of {max}")]
    FieldTooLong {
        /// Which field ("key id", "wrapped data key", "environment", ...).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// A required field is empty.
    #[error("{0} must not be empty")]
    EmptyField(&'static str),

    /// The random number generator failed.
    #[error("the system random number generator failed")]
    Random,

    /// AES-256-GCM refused to encrypt (input too long for one nonce).
    #[error("aes-256-gcm encryption failed: input too long")]
    Seal,

    /// The text of a local master key file is malformed; says what is wrong,
    /// never echoes the text.
    #[error("malformed local master key file: {0}")]
    LocalKeyFile(String),

    /// An encryption context is invalid (a key appears twice).
    #[error("invalid encryption context: {0}")]
    Context(String),

    /// The local master key could not unwrap a data key.
    #[error(
        "the local master key could not unwrap the data key: it was wrapped under another \
         master key or with another encryption context, or it was altered"
    )]
    Unwrap,
}
