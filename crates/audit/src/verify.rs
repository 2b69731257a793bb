//! Verifying a stream's chain.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::VerifyError;
use crate::record::{bytes_hash, Record, GENESIS};

/// What a verified stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Number of records (lines).
    pub records: u64,
    /// [`crate::line_hash`] of the last line; [`GENESIS`] for an empty
    /// stream. A chain cannot show that its last line was removed or edited:
    /// compare this with a value kept elsewhere for that.
    pub last_hash: String,
}

/// Reads the next line into `buf` without its `\n`; `false` at the end.
pub(crate) fn next_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    if reader.read_until(b'\n', buf)? == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(true)
}

/// Verifies one stream: every line is a [`Record`]; the first has seq 1 and
/// prev [`GENESIS`]; each next seq is the previous + 1; each prev is the hash
/// of the previous line. An empty stream is valid.
pub fn verify<R: BufRead>(mut reader: R) -> Result<VerifySummary, VerifyError> {
    let mut buf = Vec::new();
    let mut line: u64 = 0;
    let mut last: Option<(u64, String)> = None;
    loop {
        let reading = line + 1;
        let more = next_line(&mut reader, &mut buf).map_err(|source| VerifyError::Io {
            line: reading,
            source,
        })?;
        if !more {
            break;
        }
        line = reading;
        let text = std::str::from_utf8(&buf).map_err(|_| VerifyError::Invalid {
            line,
            detail: "not UTF-8".to_owned(),
        })?;
        let record =
            Record::from_line(text).map_err(|detail| VerifyError::Invalid { line, detail })?;
        match &last {
            None => {
                if record.seq != 1 || record.prev != GENESIS {
                    return Err(VerifyError::Start);
                }
            }
            Some((previous, hash)) => {
                if Some(record.seq) != previous.checked_add(1) {
                    return Err(VerifyError::Seq {
                        line,
                        seq: record.seq,
                        previous: *previous,
                    });
                }
                if record.prev != *hash {
                    return Err(VerifyError::Prev { line });
                }
            }
        }
        last = Some((record.seq, bytes_hash(&buf)));
    }
    Ok(VerifySummary {
        records: line,
        last_hash: last.map_or_else(|| GENESIS.to_owned(), |(_, hash)| hash),
    })
}

/// [`verify`] on a file, an independent stream.
pub fn verify_file(path: &Path) -> Result<VerifySummary, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Open {
        path: path.to_owned(),
        source,
    })?;
    verify(BufReader::new(file))
}
