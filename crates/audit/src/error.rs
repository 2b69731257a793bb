//! Errors of the audit crate. Messages name the file, line or input and the
//! rule that failed; they never quote a record's content.

use std::path::PathBuf;

/// Writing, reading or filtering audit records failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Writing a record to a stream failed.
    #[error("cannot write an audit record")]
    Write(#[source] std::io::Error),

    /// Opening (or creating) an audit log file failed.
    #[error("cannot open audit log {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Taking or releasing the exclusive lock on an audit log file failed.
    #[error("cannot lock audit log {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading the end of an audit log file (to continue its chain) failed.
    #[error("cannot read the end of audit log {}", path.display())]
    ReadTail {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing a record to an audit log file failed.
    #[error("cannot append to audit log {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The end of an audit log file does not let the chain continue.
    #[error("cannot continue the chain of audit log {}: {detail}", path.display())]
    Tail { path: PathBuf, detail: String },

    /// The line given to [`crate::ChainWriter::resume`] is not a record.
    #[error("cannot continue the chain: the last line is not a valid audit record: {detail}")]
    Resume { detail: String },

    /// An extra field of an event has the name of a fixed record field.
    #[error("extra field `{0}` has the name of a fixed audit record field")]
    ReservedField(String),

    /// The stream's sequence number reached `u64::MAX`.
    #[error("audit sequence number overflow")]
    SeqOverflow,

    /// The time cannot be written as an RFC 3339 timestamp.
    #[error("time is outside 1970-01-01..9999-12-31, the range of an audit timestamp")]
    TimeOutOfRange,

    /// Reading a line of an audit stream failed.
    #[error("line {line}: cannot read the audit stream")]
    ReadLine {
        line: u64,
        #[source]
        source: std::io::Error,
    },

    /// A line of an audit stream is not a record.
    #[error("line {line}: not a valid audit record: {detail}")]
    Parse { line: u64, detail: String },

    /// A `--since` value is neither a time nor a duration.
    #[error(
        "since `{input}`: {detail}; expected an RFC 3339 UTC time such as \
         2026-11-26T10:00:00Z or a duration back from now such as 15m, 2h or 7d"
    )]
    Since { input: String, detail: String },

    /// An outcome name is not one of the four outcomes.
    #[error("unknown outcome `{0}`: expected success, denied, failure or skipped")]
    UnknownOutcome(String),

    /// A component name is not one of the three components.
    #[error("unknown component `{0}`: expected injector, agent or cli")]
    UnknownComponent(String),
}

/// An audit stream failed verification. Every message names the 1-based line
/// and the rule; none quotes the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Opening the file failed ([`crate::verify_file`]).
    #[error("cannot open audit log {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading the stream failed.
    #[error("line {line}: cannot read the audit stream")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },

    /// The line is not a record.
    #[error("line {line}: not a valid audit record: {detail}")]
    Invalid { line: u64, detail: String },

    /// The first line does not start a chain.
    #[error("line 1: a stream must start with seq 1 and a zero prev")]
    Start,

    /// The sequence number does not follow the previous one.
    #[error("line {line}: seq {seq} follows seq {previous} (line(s) removed or reordered)")]
    Seq { line: u64, seq: u64, previous: u64 },

    /// `prev` is not the hash of the previous line.
    #[error(
        "line {line}: prev does not match the hash of line {} \
         (a line was edited, removed or inserted)",
        line - 1
    )]
    Prev { line: u64 },
}

impl VerifyError {
    /// The 1-based line the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::Open { .. } => None,
            VerifyError::Start => Some(1),
            VerifyError::Io { line, .. }
            | VerifyError::Invalid { line, .. }
            | VerifyError::Seq { line, .. }
            | VerifyError::Prev { line } => Some(*line),
        }
    }
}
