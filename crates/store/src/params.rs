//! Parameter stores: where values (envelopes or native SecureStrings) live,
//! with versions, labels and history. Two backends, one interface.

use std::time::SystemTime;

use crate::error::Result;
use crate::local::LocalParams;
use crate::retry::Retry;
use crate::ssm::SsmParams;

/// How a parameter is stored: SSM's own types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Plain text in SSM: sidekey's envelopes (already ciphertext) are
    /// stored this way, as are non-secret values written by other tools.
    String,
    /// SSM encrypts it with KMS itself; read with decryption.
    SecureString,
}

impl ParamType {
    /// SSM's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "String",
            ParamType::SecureString => "SecureString",
        }
    }
}

/// One version of a parameter as read, with its stored value. The value is
/// the stored form: an envelope (ciphertext) or a native value, which may
/// be plaintext; callers turn it into a `Secret` at once.
#[derive(Debug)]
pub struct StoredParam {
    pub name: String,
    pub value: sidekey_envelope::Secret,
    pub version: u64,
    pub param_type: ParamType,
    pub last_modified: Option<SystemTime>,
}

/// Metadata of a parameter's current version: no value.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    pub version: u64,
    pub param_type: ParamType,
    pub last_modified: Option<SystemTime>,
    pub last_modified_user: Option<String>,
}

/// One entry of a parameter's history: no value.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub version: u64,
    pub param_type: ParamType,
    pub last_modified: Option<SystemTime>,
    pub last_modified_user: Option<String>,
    pub labels: Vec<String>,
}

/// What to write. Its `Debug` never shows the value (for a native write it
/// is the plaintext).
pub struct PutRequest<'a> {
    pub name: &'a str,
    /// The stored form (an envelope, or for native writes the plaintext).
    pub value: &'a [u8],
    pub param_type: ParamType,
    /// For SecureString: the KMS key SSM should use.
    pub kms_key: Option<&'a str>,
    pub overwrite: bool,
}

impl std::fmt::Debug for PutRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutRequest")
            .field("name", &self.name)
            .field(
                "value",
                &format_args!("<{} bytes redacted>", self.value.len()),
            )
            .field("param_type", &self.param_type)
            .field("kms_key", &self.kms_key)
            .field("overwrite", &self.overwrite)
            .finish()
    }
}

/// The largest value SSM accepts (advanced tier; standard is 4096).
pub const MAX_VALUE_BYTES: usize = 8192;
/// SSM accepts at most this many names in one GetParameters or DeleteParameters call.
pub const BATCH: usize = 10;

/// A parameter store backend.
#[derive(Debug)]
pub enum Params {
    Ssm(SsmParams),
    Local(LocalParams),
}

impl Params {
    /// Writes a new version; returns its number.
    pub async fn put(&self, request: &PutRequest<'_>, retry: Retry) -> Result<u64> {
        match self {
            Params::Ssm(s) => s.put(request, &retry).await,
            Params::Local(l) => l.put(request),
        }
    }

    /// Moves `label` to `version` of `name`.
    pub async fn label(&self, name: &str, version: u64, label: &str, retry: Retry) -> Result<()> {
        match self {
            Params::Ssm(s) => s.label(name, version, label, &retry).await,
            Params::Local(l) => l.label(name, version, label),
        }
    }

    /// Reads one parameter; `selector` is SSM's `:3` or `:label` suffix.
    pub async fn get(
        &self,
        name: &str,
        selector: Option<&str>,
        retry: Retry,
    ) -> Result<StoredParam> {
        match self {
            Params::Ssm(s) => s.get(name, selector, &retry).await,
            Params::Local(l) => l.get(name, selector),
        }
    }

    /// Reads many names (with optional `:selector` suffixes), in batches of
    /// ten. Returns what was found and the names that were not.
    pub async fn get_many(
        &self,
        names: &[String],
        retry: Retry,
    ) -> Result<(Vec<StoredParam>, Vec<String>)> {
        match self {
            Params::Ssm(s) => s.get_many(names, &retry).await,
            Params::Local(l) => l.get_many(names),
        }
    }

    /// Reads every parameter directly under `path` (which ends in '/'), in
    /// pages of ten.
    pub async fn get_by_path(&self, path: &str, retry: Retry) -> Result<Vec<StoredParam>> {
        match self {
            Params::Ssm(s) => s.get_by_path(path, &retry).await,
            Params::Local(l) => l.get_by_path(path, false),
        }
    }

    /// Metadata of `name`'s current version, without reading its value
    /// (`StoreError::NotFound` when it does not exist).
    pub async fn info(&self, name: &str, retry: Retry) -> Result<ParamInfo> {
        match self {
            Params::Ssm(s) => s.info(name, &retry).await,
            Params::Local(l) => l.info(name),
        }
    }

    /// Metadata of every parameter under `path`, at any depth.
    pub async fn describe(&self, path: &str, retry: Retry) -> Result<Vec<ParamInfo>> {
        match self {
            Params::Ssm(s) => s.describe(path, &retry).await,
            Params::Local(l) => l.describe(path),
        }
    }

    /// Every version of `name`, oldest first.
    pub async fn history(&self, name: &str, retry: Retry) -> Result<Vec<HistoryEntry>> {
        match self {
            Params::Ssm(s) => s.history(name, &retry).await,
            Params::Local(l) => l.history(name),
        }
    }

    /// Deletes the names (every version); returns those that did not exist.
    pub async fn delete(&self, names: &[String], retry: Retry) -> Result<Vec<String>> {
        match self {
            Params::Ssm(s) => s.delete(names, &retry).await,
            Params::Local(l) => l.delete(names),
        }
    }
}
