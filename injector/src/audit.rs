//! Where the injector's audit records go (`SIDEKEY_AUDIT`): standard output
//! (the default, collected with the pod's logs), standard error, or a file
//! shared with other processes (`file:PATH`, hash-chained across them).
//!
//! Records are written by one writer thread fed by a bounded queue (see
//! [`AuditSink`]), so a stalled output never blocks the runtime's workers.
//! A record that cannot be written is logged and counted
//! (`sidekey_injector_audit_failures_total`), and the review is still
//! answered: an admission webhook that fails closed on its own log output
//! would stop every pod in the cluster. A review whose record cannot even
//! be queued (the queue is full: the output is stalled) or is not written
//! within the request timeout is answered 503 and counted
//! (`sidekey_injector_audit_queue_full_total`,
//! `sidekey_injector_audit_timeouts_total`).

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use sidekey_audit::{append_to_file_at, AuditError, Chain, Component, Event, EventText};
use tokio::sync::oneshot;

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
/// Records are written by one dedicated writer thread, fed by a bounded
/// queue, so that a slow or stalled output (a full log pipe, a slow log
/// collector, a locked file) never blocks a runtime worker: health checks,
/// metrics and TLS handshakes go on.
///
/// A review builds its record's text on its own worker ([`EventText`]) and
/// queues it ([`AuditSink::submit`]); that never blocks. The review then
/// awaits its record's write ([`Pending`]) without holding a worker, and is
/// answered only once the record is written. When the queue is full (the
/// output has not kept up with [`AuditSink::capacity`] records), `submit`
/// refuses at once ([`SubmitError::Full`]) and the review is answered 503.
///
/// On a stream (stdout, stderr, memory, any writer) the writer thread owns
/// the one hash chain shared by every review and writes with a group commit:
/// it takes every record queued (at most [`MAX_BATCH`]), stamps each (time,
/// seq, `prev`, the line's SHA-256) in queue order, writes them at once, and
/// then tells each review its result. A batch that cannot be written is lost
/// whole: each of its reviews gets a [`Lost`] for its own record. The chain
/// has moved on past them, so `sidekey audit verify` shows the gap at the
/// next line. A file target (`file:PATH`, shared with other processes) is
/// appended to one record at a time, each under the file's lock.
///
/// Records still queued when the sink is dropped are written by the writer
/// thread before it ends, if the process lives that long.
#[derive(Debug)]
pub struct AuditSink {
    queue: Arc<Queue>,
    capacity: usize,
    /// Whether records go to a file (queued as events, not text).
    file: bool,
    /// The lines of a [`Self::memory`] sink.
    memory: Option<Arc<Mutex<Vec<u8>>>>,
}

/// The default number of records that may wait for the writer thread.
pub const QUEUE: usize = 1024;

/// The most records written at once.
pub const MAX_BATCH: usize = 256;

/// How many times the writer thread yields, looking for more records,
/// before it sleeps.
const SPINS: usize = 4;

/// The largest batch buffer kept for reuse.
const KEPT_BUFFER: usize = 64 * 1024;

/// The hand-off between the reviews and the writer thread: a plain
/// vector under a mutex. A review pushes its record and wakes the writer
/// only when the writer sleeps (one futex call per batch, not per record);
/// the writer takes the whole queue at once by swapping vectors (no
/// allocation, no per-record receive).
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    jobs: Vec<Job>,
    /// The writer thread waits on [`Queue::wake`] (or is about to).
    idle: bool,
    /// Every sink is gone: the writer writes what is queued and ends.
    closed: bool,
    /// The writer thread is gone (it could not start, or has ended).
    gone: bool,
}

impl Queue {
    /// Takes the records queued (at most [`MAX_BATCH`]) into `into`
    /// (empty), sleeping while there are none; false once the queue is
    /// closed and empty.
    fn take(&self, into: &mut Vec<Job>) -> bool {
        let mut st = lock(&self.state);
        loop {
            if !st.jobs.is_empty() {
                if st.jobs.len() <= MAX_BATCH {
                    std::mem::swap(&mut st.jobs, into);
                } else {
                    into.extend(st.jobs.drain(..MAX_BATCH));
                }
                return true;
            }
            if st.closed {
                return false;
            }
            st.idle = true;
            st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle = false;
        }
    }

    /// Whether records are queued (without waiting).
    fn any(&self) -> bool {
        !lock(&self.state).jobs.is_empty()
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        lock(&self.queue.state).closed = true;
        self.queue.wake.notify_one();
    }
}

/// Marks the queue's writer gone when the writer thread ends (even by a
/// panic): later submits fail at once instead of waiting.
struct Ending(Arc<Queue>);

impl Drop for Ending {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.gone = true;
        // Whatever is still queued will never be written: its reviews are
        // told so (their senders are dropped).
        st.jobs.clear();
    }
}

/// One record queued for the writer thread, and where its result goes.
struct Job {
    record: Queued,
    ts: SystemTime,
    done: oneshot::Sender<Result<(), Lost>>,
}

enum Queued {
    /// Stream targets: the text, stamped by the writer thread.
    Text(EventText),
    /// File targets: the event, appended under the file's lock.
    Event(Box<Event>),
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

enum Out {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    Memory(Arc<Mutex<Vec<u8>>>),
    Writer(Box<dyn std::io::Write + Send>),
}

impl Out {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stdout(w) => w.write_all(batch).and_then(|()| w.flush()),
            Out::Stderr(w) => w.write_all(batch).and_then(|()| w.flush()),
            Out::Memory(w) => {
                lock(w).extend_from_slice(batch);
                Ok(())
            }
            Out::Writer(w) => w.write_all(batch).and_then(|()| w.flush()),
        }
    }
}

/// A record that could not be written, and why.
#[derive(Debug, thiserror::Error)]
#[error("{records} audit record(s) not written (seq {first_seq} to {last_seq})")]
pub struct Lost {
    /// How many: always 1 (each review is told of its own record).
    pub records: u64,
    /// The seq of the first and the last record lost (both 0 when the
    /// record was refused before it had one, or on a file target whose
    /// chain position was never reached).
    pub first_seq: u64,
    pub last_seq: u64,
    #[source]
    pub error: AuditError,
}

/// A record that was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `capacity` records not written yet: the output is
    /// stalled or slower than the reviews.
    #[error("the audit log is not keeping up: {capacity} records are waiting to be written")]
    Full { capacity: usize },
    /// The record cannot be written at all (a reserved field, the writer
    /// thread gone).
    #[error(transparent)]
    Lost(#[from] Lost),
}

/// A queued record's write, awaited by its review (see [`AuditSink`]).
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<(), Lost>>);

impl Future for Pending {
    type Output = Result<(), Lost>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(gone())))
    }
}

impl Pending {
    /// Waits for the write, blocking the thread (not on a runtime worker).
    pub fn wait(self) -> Result<(), Lost> {
        self.0.blocking_recv().unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> Lost {
    Lost::one(AuditError::Write(std::io::Error::other(
        "the audit writer thread has stopped",
    )))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuditSink {
    /// A sink writing to `target`, with a queue of [`QUEUE`] records.
    pub fn new(target: &AuditTarget) -> AuditSink {
        AuditSink::with_capacity(target, QUEUE)
    }

    /// A sink writing to `target`, refusing records while `capacity` (at
    /// least 1) wait to be written.
    pub fn with_capacity(target: &AuditTarget, capacity: usize) -> AuditSink {
        match target {
            AuditTarget::Stdout => AuditSink::start(
                Writer::Stream(Out::Stdout(std::io::stdout())),
                capacity,
                None,
            ),
            AuditTarget::Stderr => AuditSink::start(
                Writer::Stream(Out::Stderr(std::io::stderr())),
                capacity,
                None,
            ),
            AuditTarget::File(p) => AuditSink::start(Writer::File(p.clone()), capacity, None),
        }
    }

    /// A sink that keeps its lines in memory (tests): see [`Self::lines`].
    pub fn memory() -> AuditSink {
        let lines = Arc::new(Mutex::new(Vec::new()));
        AuditSink::start(
            Writer::Stream(Out::Memory(lines.clone())),
            QUEUE,
            Some(lines),
        )
    }

    /// A sink writing to any writer (a pipe, a socket; tests).
    pub fn writer(out: Box<dyn std::io::Write + Send>, capacity: usize) -> AuditSink {
        AuditSink::start(Writer::Stream(Out::Writer(out)), capacity, None)
    }

    fn start(writer: Writer, capacity: usize, memory: Option<Arc<Mutex<Vec<u8>>>>) -> AuditSink {
        let capacity = capacity.max(1);
        let file = matches!(writer, Writer::File(_));
        let queue = Arc::new(Queue::default());
        let jobs = Ending(queue.clone());
        let thread = std::thread::Builder::new()
            .name("sidekey-audit".to_owned())
            .spawn(move || writer.run(jobs));
        if let Err(e) = thread {
            // The writer went with the thread: every submit fails (and is
            // counted) instead of hanging.
            lock(&queue.state).gone = true;
            tracing::error!(error = %e, "cannot start the audit writer thread");
        }
        AuditSink {
            queue,
            capacity,
            file,
            memory,
        }
    }

    /// How many records may wait to be written before reviews are refused.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues one record without blocking; await the [`Pending`] for its
    /// write.
    pub fn submit(&self, event: &Event) -> Result<Pending, SubmitError> {
        let record = if !self.file {
            Queued::Text(EventText::new(Component::Injector, event).map_err(Lost::one)?)
        } else {
            Queued::Event(Box::new(event.clone()))
        };
        let (done, pending) = oneshot::channel();
        let job = Job {
            record,
            ts: SystemTime::now(),
            done,
        };
        let mut st = lock(&self.queue.state);
        if st.gone {
            return Err(SubmitError::Lost(gone()));
        }
        if st.jobs.len() >= self.capacity {
            return Err(SubmitError::Full {
                capacity: self.capacity,
            });
        }
        st.jobs.push(job);
        // Only a sleeping writer needs the wake-up (a futex call); one
        // that is writing takes this record with its next batch.
        let wake = std::mem::take(&mut st.idle);
        drop(st);
        if wake {
            self.queue.wake.notify_one();
        }
        Ok(Pending(pending))
    }

    /// Writes one record and returns once it is written, blocking the
    /// thread (tests; reviews use [`Self::submit`]).
    pub fn write(&self, event: &Event) -> Result<(), SubmitError> {
        Ok(self.submit(event)?.wait()?)
    }

    /// The lines written so far by a [`Self::memory`] sink; empty for the
    /// others.
    pub fn lines(&self) -> Vec<String> {
        match &self.memory {
            Some(m) => String::from_utf8_lossy(&lock(m))
                .lines()
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
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

/// What the writer thread writes to.
enum Writer {
    Stream(Out),
    File(PathBuf),
}

impl Writer {
    /// The writer thread: until every sink is gone and the queue is
    /// empty.
    fn run(self, ending: Ending) {
        let queue = &*ending.0;
        let mut jobs: Vec<Job> = Vec::new();
        match self {
            Writer::File(path) => {
                while queue.take(&mut jobs) {
                    for job in jobs.drain(..) {
                        let result = match job.record {
                            Queued::Event(event) => {
                                append_to_file_at(&path, Component::Injector, *event, job.ts)
                                    .map(drop)
                                    .map_err(Lost::one)
                            }
                            Queued::Text(_) => Err(Lost::one(AuditError::Write(
                                std::io::Error::other("a stream record sent to a file sink"),
                            ))),
                        };
                        // The review may have stopped waiting (it timed out).
                        let _ = job.done.send(result);
                    }
                }
            }
            Writer::Stream(mut out) => {
                let mut chain = Chain::new();
                let mut batch = Vec::new();
                // Each written record's seq and its review.
                let mut waiting: Vec<(u64, oneshot::Sender<Result<(), Lost>>)> = Vec::new();
                while queue.take(&mut jobs) {
                    for job in jobs.drain(..) {
                        let seq = chain.next_seq();
                        let stamped = match &job.record {
                            Queued::Text(text) => chain.append(text, job.ts, &mut batch),
                            Queued::Event(event) => EventText::new(Component::Injector, event)
                                .and_then(|text| chain.append(&text, job.ts, &mut batch)),
                        };
                        match stamped {
                            Ok(()) => waiting.push((seq, job.done)),
                            Err(e) => {
                                let _ = job.done.send(Err(Lost::one(e)));
                            }
                        }
                    }
                    let written = if batch.is_empty() {
                        Ok(())
                    } else {
                        catch_unwind(AssertUnwindSafe(|| out.write_batch(&batch))).unwrap_or_else(
                            |_| Err(std::io::Error::other("the audit writer panicked")),
                        )
                    };
                    for (seq, done) in waiting.drain(..) {
                        let result = match &written {
                            Ok(()) => Ok(()),
                            Err(e) => Err(Lost {
                                records: 1,
                                first_seq: seq,
                                last_seq: seq,
                                error: AuditError::Write(std::io::Error::new(
                                    e.kind(),
                                    e.to_string(),
                                )),
                            }),
                        };
                        let _ = done.send(result);
                    }
                    batch.clear();
                    if batch.capacity() > KEPT_BUFFER {
                        batch = Vec::new();
                    }
                    // Before sleeping (and making the next review wake this
                    // thread), give the runtime's threads a few turns to
                    // queue more: under load the next batch is then taken
                    // without a wake-up.
                    for _ in 0..SPINS {
                        if queue.any() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
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
        let sink = Arc::new(AuditSink::writer(Box::new(out.clone()), QUEUE));
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
        // While one write sleeps, the lines queued meanwhile go out
        // together in the next one.
        let writes = out.writes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(writes < 200, "{writes} writes for 200 records");
        let largest = out.largest.load(std::sync::atomic::Ordering::SeqCst);
        assert!(largest > bytes.len() / 200, "no batch held two lines");
    }

    /// A writer whose writes wait until the test lets them go.
    struct Gate {
        open: std::sync::mpsc::Receiver<()>,
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.open.recv().map_err(std::io::Error::other)?;
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_fills_the_queue_and_submit_refuses_without_blocking() {
        let (open, gate) = std::sync::mpsc::channel();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = AuditSink::writer(
            Box::new(Gate {
                open: gate,
                bytes: bytes.clone(),
            }),
            3,
        );
        // The writer thread takes the first records and stalls in its
        // write; then the queue fills with 3 more; the next is refused at
        // once (this thread never blocks: a hang here fails the test by
        // its harness timeout, and nothing else can make submit return).
        let mut pending = Vec::new();
        let refused = loop {
            match sink.submit(&Event::new("review")) {
                Ok(p) => pending.push(p),
                Err(e) => break e,
            }
            assert!(pending.len() <= 3 + MAX_BATCH, "never refused");
        };
        let SubmitError::Full { capacity } = refused else {
            panic!("{refused}");
        };
        assert_eq!(capacity, 3);
        assert_eq!(
            refused.to_string(),
            "the audit log is not keeping up: 3 records are waiting to be written"
        );
        // The output drains: every queued record is written, in one chain.
        assert!(pending.len() >= 3, "{}", pending.len());
        // The output closes for good: every queued record is reported
        // lost, none hangs...
        drop(open);
        for p in pending {
            assert!(matches!(p.wait(), Err(Lost { records: 1, .. })));
        }

        // ...and with a writer that lets everything through, the records
        // queued behind a stall are all written and chained.
        let (open, gate) = std::sync::mpsc::channel();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = AuditSink::writer(
            Box::new(Gate {
                open: gate,
                bytes: bytes.clone(),
            }),
            3,
        );
        let mut pending = Vec::new();
        while let Ok(p) = sink.submit(&Event::new("review")) {
            pending.push(p);
        }
        for _ in 0..pending.len() {
            open.send(()).unwrap();
        }
        let n = pending.len();
        for p in pending {
            p.wait().unwrap();
        }
        let text = bytes.lock().unwrap().clone();
        assert_eq!(sidekey_audit::verify(&text[..]).unwrap().records, n as u64);
        // Room again.
        open.send(()).unwrap();
        sink.write(&Event::new("review")).unwrap();
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

    fn lost(e: SubmitError) -> Lost {
        match e {
            SubmitError::Lost(l) => l,
            SubmitError::Full { .. } => panic!("{e}"),
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_its_records() {
        let sink = AuditSink::writer(Box::new(Broken), QUEUE);
        let e = lost(sink.write(&Event::new("review")).unwrap_err());
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 1, 1));
        assert!(matches!(e.error, AuditError::Write(_)));
        assert_eq!(e.to_string(), "1 audit record(s) not written (seq 1 to 1)");
        // The sink stays usable: the next record is tried again, and the
        // chain has moved past the lost one.
        let e = lost(sink.write(&Event::new("review")).unwrap_err());
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 2, 2));

        let mut bad = Event::new("review");
        bad.extra.insert("seq".to_owned(), 1.into());
        let e = lost(AuditSink::memory().write(&bad).unwrap_err());
        assert!(matches!(e.error, AuditError::ReservedField(_)));
        assert_eq!((e.records, e.first_seq, e.last_seq), (1, 0, 0));
    }
}
