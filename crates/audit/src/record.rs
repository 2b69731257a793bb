//! The audit record: its fields, their JSON shape and the line hash.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use sidekey_model::json::write_str;

use crate::error::{describe_json_error, AuditError};

/// The `prev` of the first record of a stream: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The names of the fixed record fields, in the order they are written. An
/// event's `extra` field may not use one of them.
pub const RECORD_FIELDS: [&str; 13] = [
    "ts",
    "seq",
    "prev",
    "component",
    "event",
    "environment",
    "namespace",
    "pod",
    "actor",
    "secrets",
    "outcome",
    "reason",
    "duration_ms",
];

/// Hex SHA-256 of a line's bytes, without its trailing newline (one trailing
/// `\n`, if present, is ignored).
pub fn line_hash(line: &str) -> String {
    bytes_hash(line.as_bytes())
}

pub(crate) fn bytes_hash(line: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    hash_into(line, &mut out);
    out
}

/// [`bytes_hash`] written over `out`'s contents (its buffer reused).
pub(crate) fn hash_into(line: &[u8], out: &mut String) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let sum = digest(&SHA256, line);
    out.clear();
    for &b in sum.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A reference to one secret: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretRef {
    pub service: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl SecretRef {
    /// A reference to `service`/`key`, at `version` if known.
    pub fn new(service: impl Into<String>, key: impl Into<String>, version: Option<u64>) -> Self {
        SecretRef {
            service: service.into(),
            key: key.into(),
            version,
        }
    }
}

impl fmt::Display for SecretRef {
    /// `svc/KEY@v`, or `svc/KEY` without a version.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.key)?;
        if let Some(v) = self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

/// The binary that wrote a record.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Injector,
    Agent,
    Cli,
}

impl Component {
    /// The name as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Injector => "injector",
            Component::Agent => "agent",
            Component::Cli => "cli",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "injector" => Ok(Component::Injector),
            "agent" => Ok(Component::Agent),
            "cli" => Ok(Component::Cli),
            other => Err(AuditError::UnknownComponent(other.to_owned())),
        }
    }
}

/// How a decision or access ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[default]
    Success,
    Denied,
    Failure,
    Skipped,
}

impl Outcome {
    /// The name as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "denied" => Ok(Outcome::Denied),
            "failure" => Ok(Outcome::Failure),
            "skipped" => Ok(Outcome::Skipped),
            other => Err(AuditError::UnknownOutcome(other.to_owned())),
        }
    }
}

/// One event before it is chained: no ts/seq/prev yet.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// e.g. "put", "rotate", "delete", "env-copy", "fetch", "review".
    pub event: String,
    pub environment: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub actor: Option<String>,
    pub secrets: Vec<SecretRef>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub duration_ms: Option<u64>,
    /// Extra fields such as `kms_key` or `user`, written after the fixed
    /// ones. A name from [`RECORD_FIELDS`] is rejected when written.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event named `event` with every other field empty and outcome
    /// success.
    pub fn new(event: impl Into<String>) -> Self {
        Event {
            event: event.into(),
            ..Event::default()
        }
    }
}

/// The record as written. JSON field order: ts, seq, prev, component, event,
/// environment, namespace, pod, actor, secrets, outcome, reason, duration_ms,
/// then the extra fields. `None` is written as `null`, so every record has
/// every field.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T10:00:00.123Z`.
    pub ts: String,
    pub seq: u64,
    /// 64 hex digits: the hash of the previous line, [`GENESIS`] for the first.
    pub prev: String,
    pub component: Component,
    pub event: String,
    pub environment: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub actor: Option<String>,
    pub secrets: Vec<SecretRef>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub duration_ms: Option<u64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Written as one map: the fixed fields in [`RECORD_FIELDS`] order, then the
/// extra ones (what `#[serde(flatten)]` would write, without its buffering).
impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(RECORD_FIELDS.len() + self.extra.len()))?;
        map.serialize_entry("ts", &self.ts)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("prev", &self.prev)?;
        map.serialize_entry("component", &self.component)?;
        map.serialize_entry("event", &self.event)?;
        map.serialize_entry("environment", &self.environment)?;
        map.serialize_entry("namespace", &self.namespace)?;
        map.serialize_entry("pod", &self.pod)?;
        map.serialize_entry("actor", &self.actor)?;
        map.serialize_entry("secrets", &self.secrets)?;
        map.serialize_entry("outcome", &self.outcome)?;
        map.serialize_entry("reason", &self.reason)?;
        map.serialize_entry("duration_ms", &self.duration_ms)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Record {
    /// Stamps an event. Fails if the time cannot be written or an extra
    /// field reuses a fixed field's name.
    pub fn from_event(
        component: Component,
        event: Event,
        ts: SystemTime,
        seq: u64,
        prev: String,
    ) -> Result<Record, AuditError> {
        if let Some(name) = event
            .extra
            .keys()
            .find(|k| RECORD_FIELDS.contains(&k.as_str()))
        {
            return Err(AuditError::ReservedField(name.clone()));
        }
        Ok(Record {
            ts: format_ts(ts)?,
            seq,
            prev,
            component,
            event: event.event,
            environment: event.environment,
            namespace: event.namespace,
            pod: event.pod,
            actor: event.actor,
            secrets: event.secrets,
            outcome: event.outcome,
            reason: event.reason,
            duration_ms: event.duration_ms,
            extra: event.extra,
        })
    }

    /// The record as one JSON line, without the newline: the same bytes as
    /// its `Serialize` output, written by hand (the injector writes one
    /// per review).
    pub fn to_line(&self) -> Result<String, AuditError> {
        let mut out = String::with_capacity(512);
        self.write_line(&mut out)?;
        Ok(out)
    }

    /// [`Self::to_line`] appended to `out` (a buffer reused across
    /// records). On an error `out` is left as it was.
    pub fn write_line(&self, out: &mut String) -> Result<(), AuditError> {
        let body = Body {
            component: self.component,
            event: &self.event,
            environment: self.environment.as_deref(),
            namespace: self.namespace.as_deref(),
            pod: self.pod.as_deref(),
            actor: self.actor.as_deref(),
            secrets: &self.secrets,
            outcome: self.outcome,
            reason: self.reason.as_deref(),
            duration_ms: self.duration_ms,
            extra: &self.extra,
        };
        body.check()?;
        out.push_str("{\"ts\":");
        write_str(out, &self.ts);
        write_seq_prev(out, self.seq, &self.prev);
        body.write(out);
        Ok(())
    }

    /// Parses one line (a trailing newline is allowed). The error detail
    /// never quotes the line.
    pub(crate) fn from_line(line: &str) -> Result<Record, String> {
        serde_json::from_str(line).map_err(|e| describe_json_error(&e))
    }

    /// The record's time, if `ts` is a valid RFC 3339 UTC time.
    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.ts).ok()
    }
}

/// What a record line holds after its chain fields (`ts`, `seq`, `prev`),
/// borrowed from a [`Record`] or an [`Event`]: one writer for both.
struct Body<'a> {
    component: Component,
    event: &'a str,
    environment: Option<&'a str>,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    actor: Option<&'a str>,
    secrets: &'a [SecretRef],
    outcome: Outcome,
    reason: Option<&'a str>,
    duration_ms: Option<u64>,
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

impl Body<'_> {
    /// Refuses an extra field that reuses a fixed field's name.
    fn check(&self) -> Result<(), AuditError> {
        match self
            .extra
            .keys()
            .find(|k| RECORD_FIELDS.contains(&k.as_str()))
        {
            Some(name) => Err(AuditError::ReservedField(name.clone())),
            None => Ok(()),
        }
    }

    /// From `,"component":` to the closing brace.
    fn write(&self, out: &mut String) {
        out.push_str(",\"component\":\"");
        out.push_str(self.component.as_str());
        out.push_str("\",\"event\":");
        write_str(out, self.event);
        for (name, value) in [
            ("environment", self.environment),
            ("namespace", self.namespace),
            ("pod", self.pod),
            ("actor", self.actor),
        ] {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            write_opt_str(out, value);
        }
        out.push_str(",\"secrets\":[");
        for (i, secret) in self.secrets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"service\":");
            write_str(out, &secret.service);
            out.push_str(",\"key\":");
            write_str(out, &secret.key);
            if let Some(v) = secret.version {
                let _ = write!(out, ",\"version\":{v}");
            }
            out.push('}');
        }
        out.push_str("],\"outcome\":\"");
        out.push_str(self.outcome.as_str());
        out.push_str("\",\"reason\":");
        write_opt_str(out, self.reason);
        match self.duration_ms {
            Some(ms) => {
                let _ = write!(out, ",\"duration_ms\":{ms}");
            }
            None => out.push_str(",\"duration_ms\":null"),
        }
        for (name, value) in self.extra {
            out.push(',');
            write_str(out, name);
            out.push(':');
            write_value(out, value);
        }
        out.push('}');
    }
}

/// `,"seq":N,"prev":"HASH"`.
fn write_seq_prev(out: &mut String, seq: u64, prev: &str) {
    let _ = write!(out, ",\"seq\":{seq},\"prev\":");
    write_str(out, prev);
}

/// An event's line without the chain fields: everything from `component`
/// on, written once and outside any lock, so a stream shared by threads
/// only stamps it ([`crate::Chain::append`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventText(String);

impl EventText {
    /// The text of `event` as `component` writes it. Fails if an extra
    /// field reuses a fixed field's name.
    pub fn new(component: Component, event: &Event) -> Result<EventText, AuditError> {
        let body = Body {
            component,
            event: &event.event,
            environment: event.environment.as_deref(),
            namespace: event.namespace.as_deref(),
            pod: event.pod.as_deref(),
            actor: event.actor.as_deref(),
            secrets: &event.secrets,
            outcome: event.outcome,
            reason: event.reason.as_deref(),
            duration_ms: event.duration_ms,
            extra: &event.extra,
        };
        body.check()?;
        let mut text = String::with_capacity(512);
        body.write(&mut text);
        Ok(EventText(text))
    }

    /// The text: `,"component":...}`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `{"ts":"...",` `"seq":N,"prev":"HASH"` and `text`: a whole line,
/// without its newline.
pub(crate) fn write_stamped(
    out: &mut String,
    ts: SystemTime,
    seq: u64,
    prev: &str,
    text: &EventText,
) -> Result<(), AuditError> {
    out.push_str("{\"ts\":\"");
    write_ts(out, ts)?;
    out.push('"');
    write_seq_prev(out, seq, prev);
    out.push_str(&text.0);
    Ok(())
}

/// Latest time humantime can format: 9999-12-31T23:59:59.999Z.
const MAX_SECS: u64 = 253_402_300_800;

/// Appends `value` as `serde_json` writes it (compact).
fn write_value(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.push_str("null"),
    }
}

/// Formats `t` as RFC 3339 UTC with milliseconds.
pub(crate) fn format_ts(t: SystemTime) -> Result<String, AuditError> {
    let mut out = String::with_capacity(24);
    write_ts(&mut out, t)?;
    Ok(out)
}

/// Appends `t` as RFC 3339 UTC with milliseconds (`2026-11-26T10:00:00.123Z`,
/// what `humantime::format_rfc3339_millis` writes), without the formatting
/// machinery: one per audit record. Fails outside years 1970 to 9999.
pub(crate) fn write_ts(out: &mut String, t: SystemTime) -> Result<(), AuditError> {
    let d = match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() < MAX_SECS => d,
        _ => return Err(AuditError::TimeOutOfRange),
    };
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            // Each digit is below 10: the cast cannot truncate.
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(d.subsec_millis()));
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    Ok(())
}

/// (year, month, day) of `days` since 1970-01-01 in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn humantime_ts(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }

    #[test]
    fn times_are_written_as_humantime_writes_them() {
        for ms in [
            0,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000,     // 2000-02-29
            1_764_151_200_123,   // 2025-11-26T10:00:00.123Z
            4_107_542_400_000,   // 2100-03-01
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(format_ts(t).unwrap(), humantime_ts(t), "{ms}");
        }
        for t in [
            UNIX_EPOCH - Duration::from_millis(1),
            UNIX_EPOCH + Duration::from_secs(MAX_SECS),
        ] {
            assert!(matches!(format_ts(t), Err(AuditError::TimeOutOfRange)));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_time_in_range_is_written_as_humantime_writes_it(ms in 0..MAX_SECS * 1000, nanos in 0u32..1_000_000) {
            let t = UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(u64::from(nanos));
            proptest::prop_assert_eq!(format_ts(t).unwrap(), humantime_ts(t));
        }
    }
}
