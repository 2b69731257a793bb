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

/// `sidekey audit FILE... --html OUT`: verifies each file's chain and
/// writes the review page of the selected records (see [`crate::audit_html`]).
pub fn write_html(
    out: &std::path::Path,
    files: &[PathBuf],
    filter: &sidekey_audit::Filter,
    selected: &[sidekey_audit::Record],
) -> Result<(), Failure> {
    let mut applied: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("env", &filter.environment),
        ("service", &filter.service),
        ("key", &filter.key),
        ("pod", &filter.pod),
    ] {
        if let Some(v) = value {
            applied.push((name, v.clone()));
        }
    }
    if let Some(o) = filter.outcome {
        applied.push(("outcome", o.as_str().to_owned()));
    }
    if filter.retried {
        applied.push(("outcome", "retried".to_owned()));
    }
    if let Some(t) = filter.since {
        applied.push(("since", sidekey_wire::rfc3339::seconds_text(t)));
    }
    let chains = crate::audit_html::chains(files);
    let page = crate::audit_html::render(&chains, &applied, selected);
    std::fs::write(out, page)
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", out.display())))?;
    let broken = chains.iter().filter(|c| c.status.is_err()).count();
    eprintln!(
        "sidekey: wrote {} ({} records{})",
        out.display(),
        selected.len(),
        if broken > 0 {
            format!(", {broken} broken chain(s) flagged")
        } else {
            String::new()
        }
    );
    Ok(())
}
