//! Writing hash-chained streams: to any writer, or appended to a file shared
//! by several processes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::error::AuditError;
use crate::record::{
    hash_into, line_hash, write_stamped, Component, Event, EventText, Record, GENESIS,
};

/// How many bytes [`append_to_file`] reads at a time, backwards from the
/// end, to find the last line of a file and continue its chain (a longer
/// line takes several reads).
pub const TAIL_WINDOW: u64 = 64 * 1024;

/// A hash-chained writer for one stream. The `prev` of each record is the
/// [`line_hash`] of the previous line of the same stream ([`GENESIS`] for the
/// first); `seq` starts at 1 and grows by 1.
#[derive(Debug)]
pub struct ChainWriter<W: Write> {
    component: Component,
    out: W,
    chain: Chain,
    /// The line being written, reused across records.
    line: String,
}

/// The largest line buffer a [`ChainWriter`] keeps between records.
const KEPT_LINE_CAPACITY: usize = 16 * 1024;

impl<W: Write> ChainWriter<W> {
    /// A fresh stream (stdout, stderr): seq 1, prev [`GENESIS`].
    pub fn new(component: Component, out: W) -> Self {
        ChainWriter {
            component,
            out,
            chain: Chain::new(),
            line: String::new(),
        }
    }

    /// Continues a stream after `last_line` (its seq + 1, its hash); a fresh
    /// stream when `None`. Fails if the line is not a record.
    pub fn resume(
        component: Component,
        out: W,
        last_line: Option<&str>,
    ) -> Result<Self, AuditError> {
        Ok(ChainWriter {
            component,
            out,
            chain: Chain::resume(last_line)?,
            line: String::new(),
        })
    }

    /// Writes `event` stamped with the current time. See [`Self::write_at`].
    pub fn write(&mut self, event: Event) -> Result<Record, AuditError> {
        self.write_at(event, SystemTime::now())
    }

    /// Writes `event` stamped with `ts`, the next seq and the previous hash:
    /// one line and its newline in a single `write_all`, then a flush. On an
    /// error the chain state does not advance.
    pub fn write_at(&mut self, event: Event, ts: SystemTime) -> Result<Record, AuditError> {
        let record = Record::from_event(
            self.component,
            event,
            ts,
            self.chain.next_seq,
            self.chain.prev.clone(),
        )?;
        let next_seq = self.chain.following_seq()?;
        if self.line.capacity() > KEPT_LINE_CAPACITY {
            self.line = String::new();
        }
        self.line.clear();
        record.write_line(&mut self.line)?;
        let hash = line_hash(&self.line);
        self.line.push('\n');
        self.out
            .write_all(self.line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(AuditError::Write)?;
        self.chain.next_seq = next_seq;
        self.chain.prev = hash;
        Ok(record)
    }

    /// The seq the next record will carry.
    pub fn next_seq(&self) -> u64 {
        self.chain.next_seq
    }

    /// The hash the next record will carry as `prev`.
    pub fn prev(&self) -> &str {
        &self.chain.prev
    }

    /// The component stamped on every record.
    pub fn component(&self) -> Component {
        self.component
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The chain state of one stream, without a writer: the seq and `prev` the
/// next record carries. [`Self::append`] stamps an [`EventText`] built
/// beforehand, so a stream shared by threads holds its lock only to stamp
/// and hash, and can write the lines of several records at once.
#[derive(Debug, Clone)]
pub struct Chain {
    next_seq: u64,
    prev: String,
    /// The line being stamped, reused across records.
    line: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

impl Chain {
    /// A fresh stream: seq 1, prev [`GENESIS`].
    pub fn new() -> Chain {
        Chain {
            next_seq: 1,
            prev: GENESIS.to_owned(),
            line: String::new(),
        }
    }

    /// Continues a stream after `last_line` (its seq + 1, its hash); a
    /// fresh stream when `None`. Fails if the line is not a record.
    pub fn resume(last_line: Option<&str>) -> Result<Chain, AuditError> {
        let Some(line) = last_line else {
            return Ok(Chain::new());
        };
        let line = line.strip_suffix('\n').unwrap_or(line);
        let record = Record::from_line(line).map_err(|detail| AuditError::Resume { detail })?;
        let next_seq = record.seq.checked_add(1).ok_or(AuditError::SeqOverflow)?;
        Ok(Chain {
            next_seq,
            prev: line_hash(line),
            line: String::new(),
        })
    }

    /// The seq the next record will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash the next record will carry as `prev`.
    pub fn prev(&self) -> &str {
        &self.prev
    }

    fn following_seq(&self) -> Result<u64, AuditError> {
        self.next_seq.checked_add(1).ok_or(AuditError::SeqOverflow)
    }

    /// Appends the record of `text` stamped with `ts`, the next seq and
    /// `prev`, and its newline, to `out`, and advances the chain. On an
    /// error neither `out` nor the chain changes.
    pub fn append(
        &mut self,
        text: &EventText,
        ts: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), AuditError> {
        let next_seq = self.following_seq()?;
        if self.line.capacity() > KEPT_LINE_CAPACITY {
            self.line = String::new();
        }
        self.line.clear();
        write_stamped(&mut self.line, ts, self.next_seq, &self.prev, text)?;
        hash_into(self.line.as_bytes(), &mut self.prev);
        out.extend_from_slice(self.line.as_bytes());
        out.push(b'\n');
        self.next_seq = next_seq;
        Ok(())
    }
}

/// Appends one record to a file that several processes may share.
///
/// Opens `path` with O_APPEND|O_CREAT (mode 0600 on unix when created), takes
/// an exclusive [`File::lock`], reads the last line (whatever its length,
/// [`TAIL_WINDOW`] bytes at a time from the end) to continue the chain,
/// writes, and unlocks.
///
/// Refuses to write (rather than fork the chain) when the file does not end
/// with a newline (an interrupted write) or when its last line is not a
/// record.
pub fn append_to_file(
    path: &Path,
    component: Component,
    event: Event,
) -> Result<Record, AuditError> {
    append_to_file_at(path, component, event, SystemTime::now())
}

/// [`append_to_file`] with a given time (tests).
pub fn append_to_file_at(
    path: &Path,
    component: Component,
    event: Event,
    ts: SystemTime,
) -> Result<Record, AuditError> {
    let file = open_append(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })?;
    file.lock().map_err(|source| AuditError::Lock {
        path: path.to_owned(),
        source,
    })?;
    let result = append_locked(path, &file, component, event, ts);
    let unlocked = file.unlock().map_err(|source| AuditError::Lock {
        path: path.to_owned(),
        source,
    });
    let record = result?;
    unlocked?;
    Ok(record)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn append_locked(
    path: &Path,
    file: &File,
    component: Component,
    event: Event,
    ts: SystemTime,
) -> Result<Record, AuditError> {
    let last = read_last_line(path, file)?;
    let mut writer =
        ChainWriter::resume(component, file, last.as_deref()).map_err(|e| match e {
            AuditError::Resume { detail } => AuditError::Tail {
                path: path.to_owned(),
                detail: format!("the last line is not a valid audit record: {detail}"),
            },
            other => other,
        })?;
    writer.write_at(event, ts).map_err(|e| match e {
        AuditError::Write(source) => AuditError::WriteFile {
            path: path.to_owned(),
            source,
        },
        other => other,
    })
}

/// The last line of `file` without its newline; `None` for an empty file.
///
/// The tail is read backwards in [`TAIL_WINDOW`] steps until the newline
/// before the last line (or the start of the file) is found, so a line of
/// any length resumes the chain: a record is never refused because the one
/// before it was long.
fn read_last_line(path: &Path, mut file: &File) -> Result<Option<String>, AuditError> {
    let read_err = |source| AuditError::ReadTail {
        path: path.to_owned(),
        source,
    };
    let tail_err = |detail: &str| AuditError::Tail {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let len = file.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut read_at = |at: u64, buf: &mut Vec<u8>, n: u64| -> Result<(), AuditError> {
        buf.clear();
        file.seek(SeekFrom::Start(at)).map_err(read_err)?;
        (&mut file).take(n).read_to_end(buf).map_err(read_err)?;
        if buf.len() as u64 != n {
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while its tail was read",
            )));
        }
        Ok(())
    };
    let mut chunk = Vec::new();
    read_at(len - 1, &mut chunk, 1)?;
    if chunk != b"\n" {
        return Err(tail_err(
            "the file does not end with a newline (an interrupted write?)",
        ));
    }
    // Backwards from the final newline, a window at a time, to the newline
    // that ends the line before (or the start of the file).
    let body_end = len - 1;
    let mut end = body_end;
    let line_start = loop {
        let start = end.saturating_sub(TAIL_WINDOW);
        read_at(start, &mut chunk, end - start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    let line_len = body_end - line_start;
    if line_len <= chunk.len() as u64 && end == body_end {
        // Found within the first window: the line is the chunk's end.
        let from = chunk.len() - line_len as usize;
        chunk.drain(..from);
    } else {
        read_at(line_start, &mut chunk, line_len)?;
    }
    let last = String::from_utf8(chunk).map_err(|_| tail_err("the last line is not UTF-8"))?;
    Ok(Some(last))
}
