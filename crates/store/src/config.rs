//! Choosing a store: `ssm` (SSM + KMS) or `file:DIR` (the embedded local
//! store and its master key), and its overall timeout.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::StoreError;

/// Which backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// AWS SSM Parameter Store with KMS envelopes.
    Ssm,
    /// The embedded local store in a directory.
    File(PathBuf),
}

impl FromStr for Backend {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Backend, StoreError> {
        match s {
            "ssm" => Ok(Backend::Ssm),
            _ => match s.strip_prefix("file:") {
                Some("") => Err(StoreError::Config(
                    "store \"file:\" names no directory: use file:PATH, e.g. file:.sidekey"
                        .to_owned(),
                )),
                Some(path) => Ok(Backend::File(PathBuf::from(path))),
                None => Err(StoreError::Config(format!(
                    "unknown store {s:?}: use \"ssm\" or \"file:PATH\""
                ))),
            },
        }
    }
}

/// Parses a duration such as `30s`, `1m`, `500ms`.
pub fn parse_timeout(s: &str) -> Result<Duration, StoreError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        StoreError::Config(format!(
            "invalid timeout {s:?}: {e} (use a duration such as 30s, 2m or 500ms)"
        ))
    })?;
    if d.is_zero() {
        return Err(StoreError::Config(
            "timeout must be greater than zero".to_owned(),
        ));
    }
    Ok(d)
}
