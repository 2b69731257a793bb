//! Where the CLI's audit records go: a file shared with other runs
//! (hash-chained across them) or standard error (a chain per run).

use std::path::PathBuf;
use std::time::Instant;

use sidekey_audit::{append_to_file, ChainWriter, Component, Event, Outcome, SecretRef};

use crate::Failure;

/// The audit sink of one CLI run.
#[derive(Debug)]
pub enum AuditSink {
    File(PathBuf),
    Stderr(ChainWriter<std::io::Stderr>),
}

impl AuditSink {
    pub fn new(path: Option<PathBuf>) -> AuditSink {
        match path {
            Some(p) => AuditSink::File(p),
            None => AuditSink::Stderr(ChainWriter::new(Component::Cli, std::io::stderr())),
        }
    }

    /// Writes one record. A command whose audit record cannot be written
    /// fails: an unaudited write is worse than a failed one.
    pub fn record(&mut self, event: Event) -> Result<(), Failure> {
        let result = match self {
            AuditSink::File(path) => append_to_file(path, Component::Cli, event).map(|_| ()),
            AuditSink::Stderr(w) => w.write(event).map(|_| ()),
        };
        result.map_err(|e| Failure::failed(format!("cannot write the audit record: {e}")))
    }
}

/// Builds an event as a command goes, then records success or failure.
#[derive(Debug)]
pub struct Pending {
    pub event: Event,
    started: Instant,
}

impl Pending {
    pub fn new(name: &str, environment: Option<&str>, actor: &str) -> Pending {
        Pending {
            event: Event {
                event: name.to_owned(),
                environment: environment.map(str::to_owned),
                actor: Some(actor.to_owned()),
                ..Event::default()
            },
            started: Instant::now(),
        }
    }

    pub fn secret(&mut self, service: &str, key: &str, version: Option<u64>) {
        self.event.secrets.push(SecretRef {
            service: service.to_owned(),
            key: key.to_owned(),
            version,
        });
    }

    pub fn extra(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.event.extra.insert(name.to_owned(), value.into());
    }

    /// The finished event with its outcome, reason and duration.
    pub fn finish(mut self, result: &Result<(), Failure>) -> Event {
        self.event.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        match result {
            Ok(()) => self.event.outcome = Outcome::Success,
            Err(f) => {
                self.event.outcome = Outcome::Failure;
                self.event.reason = Some(f.message.clone());
            }
        }
        self.event
    }
}
