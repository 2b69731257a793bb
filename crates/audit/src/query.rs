//! Reading, filtering and printing records for `sidekey audit`.

use std::io::BufRead;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::AuditError;
use crate::record::{Outcome, Record};
use crate::verify::next_line;

/// Reads every record of a stream; blank lines are skipped. The error names
/// the 1-based line and never quotes it.
pub fn read_records<R: BufRead>(mut reader: R) -> Result<Vec<Record>, AuditError> {
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line: u64 = 0;
    loop {
        let reading = line + 1;
        let more = next_line(&mut reader, &mut buf).map_err(|source| AuditError::ReadLine {
            line: reading,
            source,
        })?;
        if !more {
            return Ok(records);
        }
        line = reading;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|_| AuditError::Parse {
            line,
            detail: "not UTF-8".to_owned(),
        })?;
        let record =
            Record::from_line(text).map_err(|detail| AuditError::Parse { line, detail })?;
        records.push(record);
    }
}

/// Which records `sidekey audit` shows. Every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub environment: Option<String>,
    /// Matches when one secret reference has this service (and `key`, if
    /// that is set too).
    pub service: Option<String>,
    /// Matches when one secret reference has this key (and `service`, if
    /// that is set too).
    pub key: Option<String>,
    pub pod: Option<String>,
    pub outcome: Option<Outcome>,
    /// Matches only records of starts that AWS slowed down: an agent record
    /// whose `aws` counts show retries or throttled calls
    /// (`sidekey audit --outcome retried`).
    pub retried: bool,
    /// Matches records at or after this time; a record whose `ts` does not
    /// parse does not match.
    pub since: Option<SystemTime>,
}

/// Whether `r` carries AWS counts (the agent's `aws` field) with at least
/// one retry or throttled call.
pub fn was_retried(r: &Record) -> bool {
    let Some(aws) = r.extra.get("aws") else {
        return false;
    };
    ["retries", "throttled"]
        .iter()
        .any(|k| aws.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0) > 0)
}

impl Filter {
    /// Whether `r` passes every set field.
    pub fn matches(&self, r: &Record) -> bool {
        fn same(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        if !same(&self.environment, r.environment.as_deref()) || !same(&self.pod, r.pod.as_deref())
        {
            return false;
        }
        if self.outcome.is_some_and(|o| o != r.outcome) || (self.retried && !was_retried(r)) {
            return false;
        }
        if (self.service.is_some() || self.key.is_some())
            && !r
                .secrets
                .iter()
                .any(|s| same(&self.service, Some(&s.service)) && same(&self.key, Some(&s.key)))
        {
            return false;
        }
        match self.since {
            None => true,
            Some(since) => r.time().is_some_and(|t| t >= since),
        }
    }
}

/// Parses a `--since` value: an RFC 3339 UTC time (`2026-11-26T10:00:00Z`,
/// fractions and a space for `T` allowed) or a duration back from `now`
/// (`15m`, `2h`, `7d`, `1h 30m`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, AuditError> {
    let err = |detail: &str| AuditError::Since {
        input: s.to_owned(),
        detail: detail.to_owned(),
    };
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(err("empty"));
    }
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) && trimmed.len() >= 10 {
        if let Ok(t) = sidekey_wire::rfc3339::parse(trimmed) {
            return Ok(t);
        }
        if trimmed.as_bytes().get(4) == Some(&b'-') {
            return Err(err("not a valid RFC 3339 UTC time"));
        }
    }
    let back: Duration =
        humantime::parse_duration(trimmed).map_err(|_| err("neither a time nor a duration"))?;
    // Reaching back past 1970 means "everything": no record is older.
    Ok(now
        .checked_sub(back)
        .map_or(UNIX_EPOCH, |t| t.max(UNIX_EPOCH)))
}

/// A table with a header line and one row per record: TIME, COMPONENT,
/// EVENT, ENV, POD, ACTOR, SECRETS (`svc/KEY@v`, comma-joined), OUTCOME,
/// REASON. `-` stands for none; nothing is truncated; control characters are
/// escaped so a field cannot break the layout.
pub fn render_table(records: &[Record]) -> String {
    const HEADER: [&str; 9] = [
        "TIME",
        "COMPONENT",
        "EVENT",
        "ENV",
        "POD",
        "ACTOR",
        "SECRETS",
        "OUTCOME",
        "REASON",
    ];
    let rows: Vec<[String; 9]> = records
        .iter()
        .map(|r| {
            let secrets = r
                .secrets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            [
                cell(&r.ts),
                cell(r.component.as_str()),
                cell(&r.event),
                opt_cell(r.environment.as_deref()),
                opt_cell(r.pod.as_deref()),
                opt_cell(r.actor.as_deref()),
                cell(&secrets),
                cell(r.outcome.as_str()),
                opt_cell(r.reason.as_deref()),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn opt_cell(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_owned(), cell)
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One record a line, the same JSON as written.
pub fn render_json(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        // A record holds only strings, numbers and JSON values with string
        // keys, so serializing cannot fail.
        out.push_str(&serde_json::to_string(r).expect("an audit record serializes"));
        out.push('\n');
    }
    out
}
