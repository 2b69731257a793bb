//! The store's error type. Messages name the parameter (or path) and the
//! AWS error code; they never carry a value.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The parameter does not exist.
    #[error("parameter {name} not found (ParameterNotFound)")]
    NotFound { name: String },

    /// The parameter exists, but not the version or label asked for.
    #[error("parameter {name} has no version or label {selector} (ParameterVersionNotFound)")]
    VersionNotFound { name: String, selector: String },

    /// AWS answered with an error, or could not be reached, and retrying did
    /// not help (or the error is permanent).
    #[error("{operation} {target} failed: {code}: {message}{}", attempts_note(*.attempts))]
    Aws {
        operation: &'static str,
        target: String,
        code: String,
        message: String,
        transient: bool,
        attempts: u32,
    },

    /// The value could not be decrypted (wrong key, context or tampering).
    #[error("cannot decrypt {name}: {reason}")]
    Decrypt { name: String, reason: String },

    /// KMS (or AWS on its behalf) refused to unwrap the value's data key:
    /// `code` is the AWS error code (`InvalidCiphertextException`,
    /// `IncorrectKeyException`, `AccessDeniedException`).
    #[error("cannot decrypt {name}: {reason}")]
    KeyRefused {
        name: String,
        code: String,
        reason: String,
    },

    /// A value was read but is not trusted: a plain String or legacy `sk1.`
    /// parameter without the migration opt-in, or an `sk2.` envelope whose
    /// bound version or write time does not match its parameter (a replayed
    /// or rolled-back value). `rule` says which; never the value.
    #[error("refused {name}: {rule}")]
    Refused { name: String, rule: String },

    /// The value cannot be stored as asked.
    #[error("{0}")]
    Invalid(String),

    /// The stored value would exceed SSM's size limit.
    #[error(
        "value for {name} is too large: {value} bytes, {stored} bytes as stored, over the {limit}-byte limit of an SSM parameter (at most {max_value} bytes fit)"
    )]
    TooLarge {
        name: String,
        value: usize,
        stored: usize,
        limit: usize,
        max_value: usize,
    },

    /// The store's configuration is wrong (store URL, key file).
    #[error("{0}")]
    Config(String),

    /// SSM is configured but no AWS region is (neither given nor found in
    /// the SDK's default chain).
    #[error("no AWS region: set --region or AWS_REGION")]
    NoRegion,

    /// The local store has no master key and it was not to be created
    /// ([`crate::MasterKey::MustExist`]).
    #[error("{}: no master key (master.key) in the local store", dir.display())]
    NoMasterKey { dir: PathBuf },

    /// The local store's files.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The local store's database.
    #[error("local store database {}: {message}", path.display())]
    Database { path: PathBuf, message: String },
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl StoreError {
    /// The AWS error code, when the failure came from AWS.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            StoreError::Aws { code, .. } | StoreError::KeyRefused { code, .. } => Some(code),
            StoreError::NotFound { .. } => Some("ParameterNotFound"),
            StoreError::VersionNotFound { .. } => Some("ParameterVersionNotFound"),
            _ => None,
        }
    }

    /// Whether retrying later could succeed (throttling, network, 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Aws {
                transient: true,
                ..
            }
        )
    }
}

/// A shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
