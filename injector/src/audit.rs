//! Where the injector's audit records go (`SIDEKEY_AUDIT`): standard output
//! (the default, collected with the pod's logs), standard error, or a file
//! shared with other processes (`file:PATH`, hash-chained across them).
//!
//! A record that cannot be written is logged and counted
//! (`sidekey_injector_audit_failures_total`), and the review is still
//! answered: an admission webhook that fails closed on its own log output
//! would stop every pod in the cluster.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use sidekey_audit::{append_to_file, AuditError, ChainWriter, Component, Event};

/// A parsed `SIDEKEY_AUDIT` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// A `SIDEKEY_AUDIT` value that is none of `stdout`, `stderr`, `file:PATH`.
#[derive(Debug, thiserror::Error)]
#[error("expected stdout, stderr or file:PATH, got {0:?}")]
pub struct AuditTargetError(String);

impl FromStr for AuditTarget {
    type Err = AuditTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" | "" => Ok(AuditTarget::Stdout),
            "stderr" => Ok(AuditTarget::Stderr),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(AuditTarget::File(PathBuf::from(path))),
                _ => Err(AuditTargetError(other.to_owned())),
            },
        }
    }
}

impl fmt::Display for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditTarget::Stdout => f.write_str("stdout"),
            AuditTarget::Stderr => f.write_str("stderr"),
            AuditTarget::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// The injector's audit stream. Writes are serialised by a mutex, so the
/// chain (seq, prev) of one stream stays intact under concurrent reviews.
#[derive(Debug)]
pub struct AuditSink {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
enum Inner {
    Stdout(ChainWriter<std::io::Stdout>),
    Stderr(ChainWriter<std::io::Stderr>),
    File(PathBuf),
    Memory(ChainWriter<Vec<u8>>),
}

impl AuditSink {
    /// A sink writing to `target`.
    pub fn new(target: &AuditTarget) -> AuditSink {
        let inner = match target {
            AuditTarget::Stdout => {
                Inner::Stdout(ChainWriter::new(Component::Injector, std::io::stdout()))
            }
            AuditTarget::Stderr => {
                Inner::Stderr(ChainWriter::new(Component::Injector, std::io::stderr()))
            }
            AuditTarget::File(p) => Inner::File(p.clone()),
        };
        AuditSink {
            inner: Mutex::new(inner),
        }
    }

    /// A sink that keeps its lines in memory (tests): see [`Self::lines`].
    pub fn memory() -> AuditSink {
        AuditSink {
            inner: Mutex::new(Inner::Memory(ChainWriter::new(
                Component::Injector,
                Vec::new(),
            ))),
        }
    }

    /// Writes one record.
    pub fn write(&self, event: Event) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *inner {
            Inner::Stdout(w) => w.write(event).map(drop),
            Inner::Stderr(w) => w.write(event).map(drop),
            Inner::File(path) => append_to_file(path, Component::Injector, event).map(drop),
            Inner::Memory(w) => w.write(event).map(drop),
        }
    }

    /// The lines written so far by a [`Self::memory`] sink; empty for the
    /// others.
    pub fn lines(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &*inner {
            Inner::Memory(w) => String::from_utf8_lossy(w.get_ref())
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "stdout".parse::<AuditTarget>().unwrap(),
            AuditTarget::Stdout
        );
        assert_eq!(
            "stderr".parse::<AuditTarget>().unwrap(),
            AuditTarget::Stderr
        );
        assert_eq!(
            "file:/var/log/a.log".parse::<AuditTarget>().unwrap(),
            AuditTarget::File(PathBuf::from("/var/log/a.log"))
        );
        for bad in ["file:", "syslog", "STDOUT"] {
            assert!(bad.parse::<AuditTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_memory_sink_chains_its_records() {
        let sink = AuditSink::memory();
        sink.write(Event::new("review")).unwrap();
        sink.write(Event::new("review")).unwrap();
        let lines = sink.lines();
        assert_eq!(lines.len(), 2);
        let text = lines.join("\n") + "\n";
        let summary = sidekey_audit::verify(text.as_bytes()).unwrap();
        assert_eq!(summary.records, 2);
    }
}
