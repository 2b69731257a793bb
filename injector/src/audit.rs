//! Where the injector's audit records go (`SIDEKEY_AUDIT`): standard output
//! (the default, collected with the pod's logs), standard error, or a file
//! shared with other processes (`file:PATH`, hash-chained across them).
//!
//! A record that cannot be written is logged and counted
//! (`sidekey_injector_audit_failures_total`), and the review is still
//! answered: an admission webhook that fails closed on its own log output
//! would stop every pod in the cluster.

use std::fmt;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use sidekey_audit::{append_to_file, AuditError, Chain, Component, Event, EventText};

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

/// The injector's audit stream.
///
/// A stream (stdout, stderr, memory, any writer) is one hash chain shared
/// by every review, written with a group commit. A review builds its
/// record's text without any lock ([`EventText`]); under the stream's lock
/// it only stamps it (time, seq, `prev`, the line's SHA-256) and appends it
/// to the pending lines. If no write is in progress it becomes the writer:
/// it takes every pending line (its own and those of reviews waiting for a
/// write) and writes them at once, outside the lock. Otherwise it waits
/// for the write in progress; when that write is done, the first waiter
/// whose line is still pending writes the next batch. So every review
/// returns only once its own line has been written (or its batch has
/// failed), a writer writes one batch and stops, and lines stay in chain
/// order. Pending lines are bounded by the reviews writing at once (one
/// per runtime worker).
///
/// A batch that cannot be written is lost whole: the writer's call reports
/// every record of it, with their seq range ([`Lost`]). The chain has moved
/// on past them, so `sidekey audit verify` shows the gap at the next line.
#[derive(Debug)]
pub struct AuditSink {
    target: Target,
}

/// The largest batch buffer kept for reuse.
const KEPT_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
enum Target {
    Stream(Stream),
    File(PathBuf),
}

#[derive(Debug)]
struct Stream {
    state: Mutex<State>,
    /// Signalled when a write is done, if a review waits (a condition
    /// variable's signal is a system call even when nobody waits).
    written: Condvar,
    /// Locked only by the writer of the moment (`State::writing`), so never
    /// contended; a mutex makes that exclusivity safe to express.
    out: Mutex<Out>,
}

#[derive(Debug)]
struct State {
    chain: Chain,
    pending: Vec<u8>,
    /// Lines appended so far; a line's number is the count after it.
    appended: u64,
    /// Lines whose write is over (written or lost): all up to this number.
    done: u64,
    writing: bool,
    /// Reviews waiting for a write to end.
    waiting: usize,
    spare: Vec<u8>,
}

enum Out {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    Memory(Vec<u8>),
    Writer(Box<dyn std::io::Write + Send>),
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Out::Stdout(_) => "Stdout",
            Out::Stderr(_) => "Stderr",
            Out::Memory(_) => "Memory",
            Out::Writer(_) => "Writer",
        })
    }
}

impl Out {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout(w) => w.write_all(batch).and_then(|()| w.flush()),
            Out::Stderr(w) => w.write_all(batch).and_then(|()| w.flush()),
            Out::Memory(w) => {
                w.extend_from_slice(batch);
                Ok(())
            }
            Out::Writer(w) => w.write_all(batch).and_then(|()| w.flush()),
        }
    }
}

/// Records that could not be written, and why.
#[derive(Debug, thiserror::Error)]
#[error("{records} audit record(s) not written (seq {first_seq} to {last_seq})")]
pub struct Lost {
    /// How many: a failed batch loses the lines of the reviews that waited
    /// for it too.
    pub records: u64,
    /// The seq of the first and the last record lost (both 0 when the
    /// record was refused before it had one).
    pub first_seq: u64,
    pub last_seq: u64,
    #[source]
    pub error: AuditError,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuditSink {
    /// A sink writing to `target`.
    pub fn new(target: &AuditTarget) -> AuditSink {
        let target = match target {
            AuditTarget::Stdout => Target::Stream(Stream::new(Out::Stdout(std::io::stdout()))),
            AuditTarget::Stderr => Target::Stream(Stream::new(Out::Stderr(std::io::stderr()))),
            AuditTarget::File(p) => Target::File(p.clone()),
        };
        AuditSink { target }
    }

    /// A sink that keeps its lines in memory (tests): see [`Self::lines`].
    pub fn memory() -> AuditSink {
        AuditSink {
            target: Target::Stream(Stream::new(Out::Memory(Vec::new()))),
        }
    }

    /// A sink writing to any writer (a pipe, a socket; tests).
    pub fn writer(out: Box<dyn std::io::Write + Send>) -> AuditSink {
        AuditSink {
            target: Target::Stream(Stream::new(Out::Writer(out))),
        }
    }

    /// Writes one record (see the type's documentation) and returns once it
    /// is written. When this call wrote a batch that failed, the error
    /// counts every record of that batch; a record written by another
    /// review's call is that call's to report.
    pub fn write(&self, event: &Event) -> Result<(), Lost> {
        match &self.target {
            Target::Stream(s) => s.write(event),
            Target::File(path) => append_to_file(path, Component::Injector, event.clone())
                .map(drop)
                .map_err(Lost::one),
        }
    }

    /// The lines written so far by a [`Self::memory`] sink; empty for the
    /// others.
    pub fn lines(&self) -> Vec<String> {
        let Target::Stream(s) = &self.target else {
            return Vec::new();
        };
        match &*lock(&s.out) {
            Out::Memory(w) => String::from_utf8_lossy(w)
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Lost {
    fn one(error: AuditError) -> Lost {
        Lost {
            records: 1,
            first_seq: 0,
            last_seq: 0,
            error,
        }
    }
}

impl Stream {
    fn new(out: Out) -> Stream {
        Stream {
            state: Mutex::new(State {
                chain: Chain::new(),
                pending: Vec::new(),
                appended: 0,
                done: 0,
                writing: false,
                waiting: 0,
                spare: Vec::new(),
            }),
            written: Condvar::new(),
            out: Mutex::new(out),
        }
    }

    fn write(&self, event: &Event) -> Result<(), Lost> {
        let text = EventText::new(Component::Injector, event).map_err(Lost::one)?;
        let mut state = lock(&self.state);
        let s = &mut *state;
        s.chain
            .append(&text, SystemTime::now(), &mut s.pending)
            .map_err(Lost::one)?;
        s.appended += 1;
        let mine = s.appended;
        loop {
            if state.done >= mine {
                // Written by another review's call.
                return Ok(());
            }
            if !state.writing {
                break;
            }
            state.waiting += 1;
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        // This call writes every pending line, its own among them.
        state.writing = true;
        let spare = std::mem::take(&mut state.spare);
        let mut batch = std::mem::replace(&mut state.pending, spare);
        let upto = state.appended;
        let records = upto - state.done;
        let last_seq = state.chain.next_seq() - 1;
        drop(state);
        let written = catch_unwind(AssertUnwindSafe(|| lock(&self.out).write_batch(&batch)))
            .unwrap_or_else(|_| Err(std::io::Error::other("the audit writer panicked")));
        let mut state = lock(&self.state);
        state.done = upto;
        state.writing = false;
        batch.clear();
        if batch.capacity() <= KEPT_BUFFER {
            state.spare = batch;
        }
        if state.waiting > 0 {
            self.written.notify_all();
        }
        drop(state);
        written.map_err(|e| Lost {
            records,
            first_seq: last_seq + 1 - records,
            last_seq,
            error: AuditError::Write(e),
        })
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
        sink.write(&Event::new("review")).unwrap();
        sink.write(&Event::new("review")).unwrap();
        let lines = sink.lines();
        assert_eq!(lines.len(), 2);
        let text = lines.join("\n") + "\n";
        let summary = sidekey_audit::verify(text.as_bytes()).unwrap();
        assert_eq!(summary.records, 2);
    }

    /// A writer that counts its writes, each taking `delay`, into a shared
    /// buffer.
    #[derive(Clone)]
    struct Slow {
        delay: std::time::Duration,
        writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        largest: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        bytes: std::sync::Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.delay);
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.largest
                .fetch_max(buf.len(), std::sync::atomic::Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn concurrent_reviews_write_one_chain_in_batches() {
        let out = Slow {
            delay: std::time::Duration::from_millis(2),
            writes: Default::default(),
            largest: Default::default(),
            bytes: Default::default(),
        };
        let sink = std::sync::Arc::new(AuditSink::writer(Box::new(out.clone())));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                let out = out.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let mut e = Event::new("review");
                        let pod = format!("pod-{t}-{i}");
                        e.pod = Some(pod.clone());
                        sink.write(&e).unwrap();
                        // Returned only once its own line is out.
                        let bytes = out.bytes.lock().unwrap();
                        let text = String::from_utf8_lossy(&bytes);
                        assert!(text.contains(&format!("\"{pod}\"")), "{pod}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let bytes = out.bytes.lock().unwrap().clone();
        let summary = sidekey_audit::verify(&bytes[..]).unwrap();
        assert_eq!(summary.records, 200);
        // While one write sleeps, the lines of the reviews waiting for it
        // go out together in the next one.
        let writes = out.writes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(writes < 200, "{writes} writes for 200 records");
        let largest = out.largest.load(std::sync::atomic::Ordering::SeqCst);
        assert!(largest > bytes.len() / 200, "no batch held two lines");
        let Target::Stream(s) = &sink.target else {
            unreachable!()
        };
        let state = lock(&s.state);
        assert!(!state.writing && state.pending.is_empty() && state.waiting == 0);
        assert_eq!((state.appended, state.done), (200, 200));
    }

    struct Broken;

    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("pipe closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_its_records() {
        let sink = AuditSink::writer(Box::new(Broken));
        let e = sink.write(&Event::new("review")).unwrap_err();
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 1, 1));
        assert!(matches!(e.error, AuditError::Write(_)));
        assert_eq!(e.to_string(), "1 audit record(s) not written (seq 1 to 1)");
        // The sink stays usable: the next record is tried again, and the
        // chain has moved past the lost one.
        let e = sink.write(&Event::new("review")).unwrap_err();
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 2, 2));

        let mut bad = Event::new("review");
        bad.extra.insert("seq".to_owned(), 1.into());
        let e = AuditSink::memory().write(&bad).unwrap_err();
        assert!(matches!(e.error, AuditError::ReservedField(_)));
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 0, 0));
    }
}
