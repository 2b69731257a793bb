//! The audit record: its fields, their JSON shape and the line hash.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::SystemTime;

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use sidekey_wire::json::{write_str, JsonError};
use sidekey_wire::rfc3339;

use crate::error::AuditError;

/// The `prev` of the first record of a stream: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The record's fixed fields and their order, defined once: [`RECORD_FIELDS`],
/// the `Serialize` impl and the hand writer all walk [`Field::ALL`] and
/// match on each field exhaustively (a new field does not compile until
/// both write it).
macro_rules! record_fields {
    ($($variant:ident => $name:literal,)+) => {
        /// A fixed record field.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Field {
            $($variant,)+
        }

        impl Field {
            /// Every field, in the order they are written.
            pub(crate) const ALL: [Field; [$($name),+].len()] = [$(Field::$variant),+];

            /// The field's name in a record.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)+
                }
            }

            /// `,"name":`: what comes before the field's value in a line.
            const fn key(self) -> &'static str {
                match self {
                    $(Field::$variant => concat!(",\"", $name, "\":"),)+
                }
            }
        }

        /// The names of the fixed record fields, in the order they are
        /// written. An event's `extra` field may not use one of them.
        pub const RECORD_FIELDS: [&str; [$($name),+].len()] = [$($name),+];
    };
}

record_fields! {
    Ts => "ts",
    Seq => "seq",
    Prev => "prev",
    Component => "component",
    Event => "event",
    Environment => "environment",
    Namespace => "namespace",
    Pod => "pod",
    Actor => "actor",
    Secrets => "secrets",
    Outcome => "outcome",
    Reason => "reason",
    DurationMs => "duration_ms",
}

/// How many fields lead a line and are stamped by the chain (`ts`, `seq`,
/// `prev`): an [`EventText`] holds the rest.
const CHAIN_FIELDS: usize = 3;

// The stamp writes the chain fields first, in this order.
const _: () = assert!(matches!(
    Field::ALL,
    [Field::Ts, Field::Seq, Field::Prev, ..]
));

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

/// An enum written in records by name: the variants, their names, `ALL`
/// (every variant, for tests and listings) and `FromStr` from one list.
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident, unknown: $unknown:ident {
            $($(#[$vmeta:meta])* $variant:ident => $name:literal,)+
        }
    ) => {
        $(#[$meta])*
        pub enum $enum {
            $($(#[$vmeta])* $variant,)+
        }

        impl $enum {
            /// Every variant, in declaration order.
            pub const ALL: [$enum; [$($name),+].len()] = [$($enum::$variant),+];

            /// The name as written in records.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)+
                }
            }
        }

        impl FromStr for $enum {
            type Err = AuditError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($enum::$variant),)+
                    other => Err(AuditError::$unknown(other.to_owned())),
                }
            }
        }
    };
}

named! {
    /// The binary that wrote a record.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum Component, unknown: UnknownComponent {
        Injector => "injector",
        Agent => "agent",
        Cli => "cli",
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

named! {
    /// How a decision or access ended.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
    #[serde(rename_all = "lowercase")]
    pub enum Outcome, unknown: UnknownOutcome {
        #[default]
        Success => "success",
        Denied => "denied",
        Failure => "failure",
        Skipped => "skipped",
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The record as written. JSON field order: [`RECORD_FIELDS`] (ts, seq,
/// prev, component, event, environment, namespace, pod, actor, secrets,
/// outcome, reason, duration_ms), then the extra fields. `None` is written
/// as `null`, so every record has every field.
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
        for field in Field::ALL {
            let name = field.name();
            match field {
                Field::Ts => map.serialize_entry(name, &self.ts),
                Field::Seq => map.serialize_entry(name, &self.seq),
                Field::Prev => map.serialize_entry(name, &self.prev),
                Field::Component => map.serialize_entry(name, &self.component),
                Field::Event => map.serialize_entry(name, &self.event),
                Field::Environment => map.serialize_entry(name, &self.environment),
                Field::Namespace => map.serialize_entry(name, &self.namespace),
                Field::Pod => map.serialize_entry(name, &self.pod),
                Field::Actor => map.serialize_entry(name, &self.actor),
                Field::Secrets => map.serialize_entry(name, &self.secrets),
                Field::Outcome => map.serialize_entry(name, &self.outcome),
                Field::Reason => map.serialize_entry(name, &self.reason),
                Field::DurationMs => map.serialize_entry(name, &self.duration_ms),
            }?;
        }
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
            ts: rfc3339::format_millis(ts).map_err(|_| AuditError::TimeOutOfRange)?,
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
        out.push('{');
        out.push_str(&Field::Ts.key()[1..]);
        write_str(out, &self.ts);
        write_seq_prev(out, self.seq, &self.prev);
        body.write(out);
        Ok(())
    }

    /// Parses one line (a trailing newline is allowed). The error detail
    /// never quotes the line.
    pub(crate) fn from_line(line: &str) -> Result<Record, String> {
        serde_json::from_str(line).map_err(|e| JsonError::of(&e).in_line())
    }

    /// The record's time, if `ts` is a valid RFC 3339 UTC time.
    pub fn time(&self) -> Option<SystemTime> {
        rfc3339::parse(&self.ts).ok()
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

    /// From `,"component":` to the closing brace: every field after the
    /// chain fields, in [`Field::ALL`] order, then the extra ones.
    fn write(&self, out: &mut String) {
        for field in &Field::ALL[CHAIN_FIELDS..] {
            out.push_str(field.key());
            match field {
                // Stamped before the body (`write_stamped`, `write_line`).
                Field::Ts | Field::Seq | Field::Prev => {}
                Field::Component => {
                    out.push('"');
                    out.push_str(self.component.as_str());
                    out.push('"');
                }
                Field::Event => write_str(out, self.event),
                Field::Environment => write_opt_str(out, self.environment),
                Field::Namespace => write_opt_str(out, self.namespace),
                Field::Pod => write_opt_str(out, self.pod),
                Field::Actor => write_opt_str(out, self.actor),
                Field::Secrets => {
                    out.push('[');
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
                    out.push(']');
                }
                Field::Outcome => {
                    out.push('"');
                    out.push_str(self.outcome.as_str());
                    out.push('"');
                }
                Field::Reason => write_opt_str(out, self.reason),
                Field::DurationMs => match self.duration_ms {
                    Some(ms) => {
                        let _ = write!(out, "{ms}");
                    }
                    None => out.push_str("null"),
                },
            }
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
    out.push_str(Field::Seq.key());
    let _ = write!(out, "{seq}");
    out.push_str(Field::Prev.key());
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
    let start = out.len();
    out.push('{');
    out.push_str(&Field::Ts.key()[1..]);
    out.push('"');
    if rfc3339::write_millis(out, ts).is_err() {
        out.truncate(start);
        return Err(AuditError::TimeOutOfRange);
    }
    out.push('"');
    write_seq_prev(out, seq, prev);
    out.push_str(&text.0);
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn fields_are_named_in_their_order() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, RECORD_FIELDS);
        for field in Field::ALL {
            assert_eq!(field.key(), format!(",\"{}\":", field.name()));
        }
    }

    #[test]
    fn a_time_out_of_range_is_refused_and_nothing_written() {
        let text = EventText::new(Component::Cli, &Event::new("put")).unwrap();
        let mut out = "kept".to_owned();
        for t in [
            UNIX_EPOCH - Duration::from_millis(1),
            UNIX_EPOCH + Duration::from_secs(rfc3339::END_SECS),
        ] {
            assert!(matches!(
                write_stamped(&mut out, t, 1, GENESIS, &text),
                Err(AuditError::TimeOutOfRange)
            ));
            assert_eq!(out, "kept");
        }
        write_stamped(&mut out, UNIX_EPOCH, 1, GENESIS, &text).unwrap();
        assert!(
            out.starts_with("kept{\"ts\":\"1970-01-01T00:00:00.000Z\",\"seq\":1,"),
            "{out}"
        );
    }
}
