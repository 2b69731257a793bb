//! Where the injector's audit records go (`SIDEKEY_AUDIT`): standard output
//! (the default, collected with the pod's logs), standard error, or a file
//! shared with other processes (`file:PATH`, hash-chained across them).
//!
//! A stalled output never blocks the runtime's workers (see
//! [`AuditSink`]): standard output is written by the reviews themselves
//! through a non-blocking description of its pipe while the pipe takes the
//! bytes at once, and by one writer thread, fed by a bounded queue, once it
//! does not (and always for the other targets).
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
use std::os::fd::{AsFd as _, OwnedFd};
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
/// No review ever waits on the output with a runtime worker: a slow or
/// stalled output (a full log pipe, a slow log collector, a locked file)
/// never blocks health checks, metrics, TLS handshakes or other reviews.
///
/// A review builds its record's text on its own worker ([`EventText`]) and
/// hands it over with [`AuditSink::submit`], which never blocks; the review
/// is answered only once its record is written ([`Pending`]). On a stream
/// (stdout, stderr, memory, any writer) one hash chain is shared by every
/// review: `submit` stamps the record (time, seq, `prev`, the line's
/// SHA-256) under the stream's lock, in the order the lines are written.
///
/// Standard output, and any descriptor given to [`AuditSink::descriptor`],
/// is written by the reviews themselves when it is a pipe or a character
/// device (`/dev/null`, a terminal): through a second, non-blocking open
/// file description of the same pipe (`/proc/self/fd/N` opened with
/// `O_NONBLOCK`, so the process's own descriptor, shared with whoever
/// else writes it, stays blocking). A group commit: the review that finds
/// nobody writing writes its line and every line stamped meanwhile; the
/// others' reviews are told when theirs is out. When the pipe takes only
/// part of a batch (it is full), the rest, cut anywhere in a line, goes
/// first to one dedicated writer thread, which waits for the pipe to drain
/// with a blocking write; every line stamped until the thread has written
/// everything goes to it too, in chain order, and then the reviews write
/// again. So lines are never split, interleaved or reordered.
///
/// Other outputs (standard error, which the log shares; a regular file;
/// a socket; memory or a writer in tests) and systems where the second
/// description cannot be opened are always written by the writer thread.
///
/// Bounded: while [`AuditSink::capacity`] records wait for a write to
/// start, `submit` refuses at once ([`SubmitError::Full`]) and the review
/// is answered 503.
///
/// A batch that cannot be written is lost whole: each of its reviews gets a
/// [`Lost`] for its own record. The chain has moved on past them, so
/// `sidekey audit verify` shows the gap at the next line. A file target
/// (`file:PATH`, shared with other processes) is appended to one record at
/// a time by the writer thread, each under the file's lock.
///
/// Records still waiting when the sink is dropped are written by the
/// writer thread before it ends, if the process lives that long.
#[derive(Debug)]
pub struct AuditSink {
    shared: Arc<Shared>,
    capacity: usize,
    /// Whether records go to a file (queued as events, not text).
    file: bool,
    /// The lines of a [`Self::memory`] sink.
    memory: Option<Arc<Mutex<Vec<u8>>>>,
}

/// The default number of records that may wait for a write.
pub const QUEUE: usize = 1024;

/// The most records the writer thread writes at once.
pub const MAX_BATCH: usize = 256;

/// How many times the writer thread yields, looking for more records,
/// before it sleeps (outputs it writes alone).
const SPINS: usize = 4;

/// How many batches one review writes for others after its own before it
/// leaves the rest to the writer thread.
const ROUNDS: usize = 8;

/// The largest batch buffer kept for reuse.
const KEPT_BUFFER: usize = 64 * 1024;

/// What reviews and the writer thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// A non-blocking description of the stream's pipe, written by reviews
    /// while nobody else writes ([`Writing::Nobody`]); `None`: only the
    /// writer thread writes.
    direct: Option<std::fs::File>,
}

/// Who writes the stream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// Nobody: the next review writes at once (outputs with a
    /// [`Shared::direct`] only; pending lines are empty).
    Nobody,
    /// A review, with a non-blocking write; lines stamped meanwhile wait
    /// for it.
    Review,
    /// The writer thread: every stamped line waits for it.
    Thread,
}

#[derive(Debug)]
struct State {
    /// File targets: the events waiting for the writer thread.
    jobs: Vec<Job>,
    /// Stream targets: the chain, the stamped lines not written yet and
    /// their reviews (in line order).
    chain: Chain,
    pending: Vec<u8>,
    waiters: Vec<Waiter>,
    writing: Writing,
    /// A buffer kept for the next batch.
    spare: Vec<u8>,
    /// The writer thread waits on [`Shared::wake`] (or is about to).
    idle: bool,
    /// Every sink is gone: the writer writes what is waiting and ends.
    closed: bool,
    /// The writer thread is gone (it could not start, or has ended).
    gone: bool,
}

/// A stamped line's review.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    /// Where its line ends in the pending lines (or the batch).
    end: usize,
    /// `None`: the review writing the batch itself.
    done: Option<oneshot::Sender<Result<(), Lost>>>,
}

impl Shared {
    /// Takes the waiting lines (at most [`MAX_BATCH`]) or file events
    /// into `batch`, `waiters` and `jobs` (empty), sleeping while there are
    /// none for the writer thread; false once closed and empty.
    fn take(&self, batch: &mut Vec<u8>, waiters: &mut Vec<Waiter>, jobs: &mut Vec<Job>) -> bool {
        let mut st = lock(&self.state);
        loop {
            if !st.jobs.is_empty() {
                std::mem::swap(&mut st.jobs, jobs);
                return true;
            }
            if st.writing == Writing::Thread && !st.waiters.is_empty() {
                let s = &mut *st;
                if s.waiters.len() <= MAX_BATCH {
                    std::mem::swap(&mut s.pending, batch);
                    std::mem::swap(&mut s.waiters, waiters);
                } else {
                    let cut = s.waiters[MAX_BATCH - 1].end;
                    batch.extend_from_slice(&s.pending[..cut]);
                    s.pending.drain(..cut);
                    waiters.extend(s.waiters.drain(..MAX_BATCH));
                    for w in &mut s.waiters {
                        w.end -= cut;
                    }
                }
                return true;
            }
            if st.closed && st.waiters.is_empty() {
                return false;
            }
            st.idle = true;
            st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle = false;
        }
    }

    /// Whether lines or events wait for the writer thread.
    fn any(&self) -> bool {
        let st = lock(&self.state);
        !st.jobs.is_empty() || !st.waiters.is_empty()
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// Marks the writer gone when the writer thread ends (even by a panic):
/// later submits fail at once instead of waiting.
struct Ending(Arc<Shared>);

impl Drop for Ending {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.gone = true;
        // Whatever is still waiting will never be written: its reviews are
        // told so (their senders are dropped).
        st.jobs.clear();
        st.waiters.clear();
        st.pending.clear();
    }
}

/// One file record queued for the writer thread, and where its result
/// goes.
struct Job {
    event: Box<Event>,
    ts: SystemTime,
    done: oneshot::Sender<Result<(), Lost>>,
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

/// A record that was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// `capacity` records wait for a write: the output is stalled or
    /// slower than the reviews.
    #[error("the audit log is not keeping up: {capacity} records are waiting to be written")]
    Full { capacity: usize },
    /// The record cannot be written at all (a reserved field, the writer
    /// thread gone).
    #[error(transparent)]
    Lost(#[from] Lost),
}

/// A submitted record's write, awaited by its review (see [`AuditSink`]).
#[derive(Debug)]
pub struct Pending(Waiting);

#[derive(Debug)]
enum Waiting {
    /// Written (or lost) by `submit` itself.
    Done(Option<Result<(), Lost>>),
    /// Written by another review's write or by the writer thread.
    Told(oneshot::Receiver<Result<(), Lost>>),
}

impl Future for Pending {
    type Output = Result<(), Lost>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Waiting::Done(result) => Poll::Ready(result.take().unwrap_or_else(|| Err(gone()))),
            Waiting::Told(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(gone()))),
        }
    }
}

impl Pending {
    /// Waits for the write, blocking the thread (not on a runtime worker).
    pub fn wait(self) -> Result<(), Lost> {
        match self.0 {
            Waiting::Done(result) => result.unwrap_or_else(|| Err(gone())),
            Waiting::Told(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(gone())),
        }
    }

    /// Whether `submit` wrote the record itself (or failed to): the result
    /// is there without waiting.
    pub fn is_done(&self) -> bool {
        matches!(self.0, Waiting::Done(_))
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
    /// A sink writing to `target`, with room for [`QUEUE`] waiting records.
    pub fn new(target: &AuditTarget) -> AuditSink {
        AuditSink::with_capacity(target, QUEUE)
    }

    /// A sink writing to `target`, refusing records while `capacity` (at
    /// least 1) wait to be written.
    pub fn with_capacity(target: &AuditTarget, capacity: usize) -> AuditSink {
        match target {
            AuditTarget::Stdout => {
                let stdout = std::io::stdout();
                let direct = nonblocking::reopen(stdout.as_fd());
                AuditSink::start(Writer::Stream(Out::Stdout(stdout)), capacity, None, direct)
            }
            AuditTarget::Stderr => AuditSink::start(
                Writer::Stream(Out::Stderr(std::io::stderr())),
                capacity,
                None,
                None,
            ),
            AuditTarget::File(p) => AuditSink::start(Writer::File(p.clone()), capacity, None, None),
        }
    }

    /// A sink that keeps its lines in memory (tests): see [`Self::lines`].
    pub fn memory() -> AuditSink {
        let lines = Arc::new(Mutex::new(Vec::new()));
        AuditSink::start(
            Writer::Stream(Out::Memory(lines.clone())),
            QUEUE,
            Some(lines),
            None,
        )
    }

    /// A sink writing to any writer (a pipe, a socket; tests), always by
    /// the writer thread.
    pub fn writer(out: Box<dyn std::io::Write + Send>, capacity: usize) -> AuditSink {
        AuditSink::start(Writer::Stream(Out::Writer(out)), capacity, None, None)
    }

    /// A sink writing to an open descriptor as it writes to standard
    /// output: by the reviews themselves while a pipe or character device
    /// takes the bytes at once, else by the writer thread (see the type's
    /// documentation).
    pub fn descriptor(fd: OwnedFd, capacity: usize) -> AuditSink {
        let direct = nonblocking::reopen(fd.as_fd());
        let out = Out::Writer(Box::new(std::fs::File::from(fd)));
        AuditSink::start(Writer::Stream(out), capacity, None, direct)
    }

    /// Whether reviews write this sink's records themselves when the output
    /// takes them at once (else only the writer thread writes).
    pub fn writes_directly(&self) -> bool {
        self.shared.direct.is_some()
    }

    fn start(
        writer: Writer,
        capacity: usize,
        memory: Option<Arc<Mutex<Vec<u8>>>>,
        direct: Option<std::fs::File>,
    ) -> AuditSink {
        let capacity = capacity.max(1);
        let file = matches!(writer, Writer::File(_));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: Vec::new(),
                chain: Chain::new(),
                pending: Vec::new(),
                waiters: Vec::new(),
                writing: if direct.is_some() {
                    Writing::Nobody
                } else {
                    Writing::Thread
                },
                spare: Vec::new(),
                idle: false,
                closed: false,
                gone: false,
            }),
            wake: Condvar::new(),
            direct,
        });
        let ending = Ending(shared.clone());
        let thread = std::thread::Builder::new()
            .name("sidekey-audit".to_owned())
            .spawn(move || writer.run(ending));
        if let Err(e) = thread {
            // The writer went with the thread: every submit fails (and is
            // counted) instead of hanging.
            lock(&shared.state).gone = true;
            tracing::error!(error = %e, "cannot start the audit writer thread");
        }
        AuditSink {
            shared,
            capacity,
            file,
            memory,
        }
    }

    /// How many records may wait to be written before reviews are refused.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hands one record over without blocking; await the [`Pending`] for
    /// its write.
    pub fn submit(&self, event: &Event) -> Result<Pending, SubmitError> {
        if self.file {
            return self.queue_event(event);
        }
        let text = EventText::new(Component::Injector, event).map_err(Lost::one)?;
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        if st.gone {
            return Err(SubmitError::Lost(gone()));
        }
        let writes = st.writing == Writing::Nobody;
        if !writes && st.waiters.len() >= self.capacity {
            return Err(SubmitError::Full {
                capacity: self.capacity,
            });
        }
        let s = &mut *st;
        let seq = s.chain.next_seq();
        s.chain
            .append(&text, SystemTime::now(), &mut s.pending)
            .map_err(Lost::one)?;
        let end = s.pending.len();
        if let (true, Some(fd)) = (writes, &shared.direct) {
            // Nobody writes: this review does (and nothing else is pending).
            s.waiters.push(Waiter {
                seq,
                end,
                done: None,
            });
            s.writing = Writing::Review;
            let batch = std::mem::replace(&mut s.pending, std::mem::take(&mut s.spare));
            let waiters = std::mem::take(&mut s.waiters);
            drop(st);
            return Ok(self.write_directly(fd, batch, waiters));
        }
        let (done, told) = oneshot::channel();
        s.waiters.push(Waiter {
            seq,
            end,
            done: Some(done),
        });
        // Only a sleeping writer thread that is to write needs the wake-up
        // (a futex call); one that is writing takes this line with its
        // next batch, and a review writing takes it in its next round.
        let wake = s.writing == Writing::Thread && std::mem::take(&mut s.idle);
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
        Ok(Pending(Waiting::Told(told)))
    }

    /// A review's own write (see the type's documentation): `batch` holds
    /// its line, last; then, while lines were stamped during the write, up
    /// to [`ROUNDS`] more batches; whatever the pipe does not take at once
    /// goes to the writer thread.
    fn write_directly(
        &self,
        fd: &std::fs::File,
        mut batch: Vec<u8>,
        mut waiters: Vec<Waiter>,
    ) -> Pending {
        let shared = &*self.shared;
        let mut own: Option<Pending> = None;
        for round in 1.. {
            let written = nonblocking::write(fd, &batch);
            let mut st = lock(&shared.state);
            let s = &mut *st;
            // The waiters whose lines are out, and the result for them.
            let (out, result) = match &written {
                Ok(n) => (waiters.partition_point(|w| w.end <= *n), None),
                Err(e) => (waiters.len(), Some(e)),
            };
            let mut handed_over = false;
            if out < waiters.len() {
                // The pipe is full: the rest of the batch, then the lines
                // stamped meanwhile, go to the writer thread, in order.
                let from = written.as_ref().copied().unwrap_or(0);
                let rest = batch.len() - from;
                batch.drain(..from);
                batch.extend_from_slice(&s.pending);
                std::mem::swap(&mut batch, &mut s.pending);
                let mut rest_waiters: Vec<Waiter> = waiters.drain(out..).collect();
                for w in &mut rest_waiters {
                    w.end -= from;
                    if w.done.is_none() {
                        let (done, told) = oneshot::channel();
                        w.done = Some(done);
                        own = Some(Pending(Waiting::Told(told)));
                    }
                }
                for w in &mut s.waiters {
                    w.end += rest;
                }
                rest_waiters.append(&mut s.waiters);
                s.waiters = rest_waiters;
                s.writing = Writing::Thread;
                handed_over = true;
                if s.gone {
                    // Nobody will write them: their reviews are told so.
                    s.waiters.clear();
                    s.pending.clear();
                }
            }
            let next = if handed_over {
                false
            } else if s.waiters.is_empty() {
                s.writing = Writing::Nobody;
                false
            } else if round < ROUNDS {
                true
            } else {
                s.writing = Writing::Thread;
                handed_over = true;
                false
            };
            let wake = handed_over && std::mem::take(&mut s.idle);
            // The next batch: the lines stamped during this write.
            let mut done = std::mem::take(&mut waiters);
            if next {
                batch.clear();
                std::mem::swap(&mut batch, &mut s.pending);
                std::mem::swap(&mut waiters, &mut s.waiters);
            } else if s.spare.capacity() < batch.capacity() && batch.capacity() <= KEPT_BUFFER {
                batch.clear();
                s.spare = std::mem::take(&mut batch);
            }
            drop(st);
            if wake {
                shared.wake.notify_one();
            }
            for w in done.drain(..) {
                let r = match result {
                    None => Ok(()),
                    Some(e) => Err(Lost {
                        records: 1,
                        first_seq: w.seq,
                        last_seq: w.seq,
                        error: AuditError::Write(std::io::Error::new(e.kind(), e.to_string())),
                    }),
                };
                match w.done {
                    Some(tell) => {
                        // The review may have stopped waiting (it timed out).
                        let _ = tell.send(r);
                    }
                    None => own = Some(Pending(Waiting::Done(Some(r)))),
                }
            }
            if !next {
                break;
            }
        }
        own.unwrap_or(Pending(Waiting::Done(None)))
    }

    /// A file target's record, queued for the writer thread.
    fn queue_event(&self, event: &Event) -> Result<Pending, SubmitError> {
        let (done, told) = oneshot::channel();
        let job = Job {
            event: Box::new(event.clone()),
            ts: SystemTime::now(),
            done,
        };
        let mut st = lock(&self.shared.state);
        if st.gone {
            return Err(SubmitError::Lost(gone()));
        }
        if st.jobs.len() >= self.capacity {
            return Err(SubmitError::Full {
                capacity: self.capacity,
            });
        }
        st.jobs.push(job);
        let wake = std::mem::take(&mut st.idle);
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(Pending(Waiting::Told(told)))
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
    /// The writer thread: until every sink is gone and nothing waits.
    fn run(self, ending: Ending) {
        let shared = &*ending.0;
        let mut batch = Vec::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut jobs: Vec<Job> = Vec::new();
        match self {
            Writer::File(path) => {
                while shared.take(&mut batch, &mut waiters, &mut jobs) {
                    for job in jobs.drain(..) {
                        let result =
                            append_to_file_at(&path, Component::Injector, *job.event, job.ts)
                                .map(drop)
                                .map_err(Lost::one);
                        // The review may have stopped waiting (it timed out).
                        let _ = job.done.send(result);
                    }
                }
            }
            Writer::Stream(mut out) => {
                while shared.take(&mut batch, &mut waiters, &mut jobs) {
                    let written = catch_unwind(AssertUnwindSafe(|| out.write_batch(&batch)))
                        .unwrap_or_else(|_| {
                            Err(std::io::Error::other("the audit writer panicked"))
                        });
                    let more = {
                        let mut st = lock(&shared.state);
                        if st.waiters.is_empty() && shared.direct.is_some() {
                            // Written up: the reviews write again.
                            st.writing = Writing::Nobody;
                        }
                        !st.waiters.is_empty()
                    };
                    for w in waiters.drain(..) {
                        let result = match &written {
                            Ok(()) => Ok(()),
                            Err(e) => Err(Lost {
                                records: 1,
                                first_seq: w.seq,
                                last_seq: w.seq,
                                error: AuditError::Write(std::io::Error::new(
                                    e.kind(),
                                    e.to_string(),
                                )),
                            }),
                        };
                        if let Some(tell) = w.done {
                            let _ = tell.send(result);
                        }
                    }
                    batch.clear();
                    if batch.capacity() > KEPT_BUFFER {
                        batch = Vec::new();
                    }
                    if more || shared.direct.is_some() {
                        continue;
                    }
                    // Before sleeping (and making the next review wake this
                    // thread), give the runtime's threads a few turns to
                    // submit more: under load the next batch is then taken
                    // without a wake-up.
                    for _ in 0..SPINS {
                        if shared.any() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

/// The second, non-blocking open file description of a pipe that reviews
/// write at once.
mod nonblocking {
    use std::fs::File;
    use std::io::Write as _;
    use std::os::fd::BorrowedFd;

    /// A new open file description of `fd`'s pipe or character device,
    /// non-blocking, with the process's own descriptor (and whoever shares
    /// its description) left as it is; `None` for anything else (a
    /// regular file would get an offset of its own, a socket cannot be
    /// opened again), or when it cannot be opened.
    pub(super) fn reopen(fd: BorrowedFd<'_>) -> Option<File> {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};

        let meta = File::from(fd.try_clone_to_owned().ok()?).metadata().ok()?;
        let kind = meta.file_type();
        if !(kind.is_fifo() || kind.is_char_device()) {
            return None;
        }
        let twin = std::fs::OpenOptions::new()
            .write(true)
            // The flag's bits as the C library takes them (rustix knows
            // each platform's value).
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .ok()?;
        let same = twin.metadata().ok()?;
        (same.dev() == meta.dev() && same.ino() == meta.ino() && same.rdev() == meta.rdev())
            .then_some(twin)
    }

    /// Writes what `fd` takes now: how many bytes of `buf` (all of it, or
    /// fewer when the pipe is full).
    pub(super) fn write(mut fd: &File, buf: &[u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match fd.write(&buf[n..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
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

#[cfg(test)]
mod direct_tests {
    use super::*;
    use std::io::Read as _;
    use std::task::Waker;

    fn event(pod: &str, pad: usize) -> Event {
        let mut e = Event::new("review");
        e.pod = Some(pod.to_owned());
        e.extra.insert("pad".to_owned(), "x".repeat(pad).into());
        e
    }

    fn ready(p: &mut Pending) -> Option<Result<(), Lost>> {
        match Pin::new(p).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// A batch of three lines meets a pipe with one page free: the pipe
    /// takes the first line and part of the second; the rest goes to the
    /// writer thread, which writes it once the pipe drains, before any
    /// later line; then reviews write at once again.
    #[test]
    fn a_pipe_full_mid_batch_keeps_lines_whole_and_in_order() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let sink = AuditSink::descriptor(writer.into(), QUEUE);
        assert!(sink.writes_directly());
        let fd = sink.shared.direct.as_ref().unwrap();

        // A record written at once.
        let mut first = sink.submit(&event("first", 10)).unwrap();
        assert!(first.is_done());
        assert!(ready(&mut first).unwrap().is_ok());

        // Fill the pipe (its first page holds the first line, the others
        // a page of filler each), then read the first line: one page free.
        let page = [b'#'; 4096];
        let mut filler = 0;
        loop {
            let n = nonblocking::write(fd, &page).unwrap();
            filler += n;
            if n < page.len() {
                break;
            }
        }
        assert!(filler >= 4096);
        let mut head = Vec::new();
        let mut byte = [0u8];
        while head.last() != Some(&b'\n') {
            reader.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }

        // Three lines stamped while "a review writes" (2,000 bytes each:
        // the batch is more than a page), then that review's round.
        lock(&sink.shared.state).writing = Writing::Review;
        let mut pending: Vec<Pending> = (0..3)
            .map(|i| sink.submit(&event(&format!("batch-{i}"), 2000)).unwrap())
            .collect();
        assert!(pending.iter().all(|p| !p.is_done()));
        let (batch, waiters) = {
            let mut st = lock(&sink.shared.state);
            let s = &mut *st;
            assert_eq!(s.waiters.len(), 3);
            (
                std::mem::take(&mut s.pending),
                std::mem::take(&mut s.waiters),
            )
        };
        let lines = batch.clone();
        assert!(lines.len() > 4096 && lines.len() < 2 * 4096);
        let ends: Vec<usize> = (0..lines.len()).filter(|i| lines[*i] == b'\n').collect();
        assert!(ends[0] < 4096 && ends[1] > 4096, "{ends:?}");
        drop(sink.write_directly(fd, batch, waiters));
        // The first line went out whole; the second was cut (4,096 bytes
        // taken) and waits with the third for the writer thread, which is
        // stuck in its write: the pipe is full.
        assert!(ready(&mut pending[0]).unwrap().is_ok());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(ready(&mut pending[1]).is_none());
        assert!(ready(&mut pending[2]).is_none());
        assert_eq!(lock(&sink.shared.state).writing, Writing::Thread);
        // A record submitted now waits behind them.
        let later = sink.submit(&event("later", 10)).unwrap();
        assert!(!later.is_done());

        // Drain: everything arrives, in order, and reviews write again.
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        // (The first is already told.)
        for p in pending.into_iter().skip(1) {
            p.wait().unwrap();
        }
        later.wait().unwrap();
        let mut again = sink.submit(&event("again", 10)).unwrap();
        assert!(again.is_done());
        assert!(ready(&mut again).unwrap().is_ok());
        drop(sink);
        let all = drain.join().unwrap();
        assert!(all[..filler].iter().all(|b| *b == b'#'));
        let records = &all[filler..];
        assert_eq!(&records[..lines.len()], &lines[..]);
        let mut text = head;
        text.extend_from_slice(records);
        assert_eq!(sidekey_audit::verify(&text[..]).unwrap().records, 6);
        let pods: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["pod"].to_string())
            .collect();
        assert_eq!(
            pods,
            ["first", "batch-0", "batch-1", "batch-2", "later", "again"]
                .map(|p| format!("\"{p}\""))
        );
    }
}
