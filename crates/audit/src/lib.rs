//! Audit records for sidekey: one JSON line per decision or access, the same
//! shape from the injector, the agent and the CLI.
//!
//! Each record carries a sequence number and the SHA-256 of the previous line
//! of its stream (`prev`), so [`verify()`] finds a line that was removed,
//! edited, inserted or reordered. [`ChainWriter`] writes a stream to any
//! writer (stdout, stderr); [`append_to_file`] appends to a file that several
//! processes share, under an exclusive file lock. [`read_records`],
//! [`Filter`], [`render_table`] and [`render_json`] serve `sidekey audit`.
//!
//! A record names secrets ([`SecretRef`]: service, key, version) and never
//! holds a value. Error messages name the line or file and the rule, never a
//! line's content.
//!
//! This crate does std I/O on the files and writers it is given, and must not
//! depend on tokio, AWS or HTTP.

mod chain;
mod error;
mod query;
mod record;
mod verify;

pub use chain::{append_to_file, append_to_file_at, Chain, ChainWriter, TAIL_WINDOW};
pub use error::{AuditError, VerifyError};
pub use query::{parse_since, read_records, render_json, render_table, was_retried, Filter};
pub use record::{
    line_hash, Component, Event, EventText, Outcome, Record, SecretRef, GENESIS, RECORD_FIELDS,
};
pub use verify::{verify, verify_file, VerifySummary};
