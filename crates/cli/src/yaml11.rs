//! YAML the way Kubernetes reads it, and YAML every reader reads back the same.
//!
//! Reading: `kubectl` turns YAML into JSON through sigs.k8s.io/yaml, which
//! follows go-yaml v2, a YAML 1.1 resolver. So plain (unquoted) scalars are
//! resolved here with its rules: `0755` is the octal integer 493, `0x1F` and
//! `0b101` are integers, `1_000` is 1000, `yes`/`no`/`on`/`off`/`y`/`n` (and
//! their `Yes`/`YES` forms) are booleans, `~`/`null`/empty are null, while
//! timestamps (`2024-01-02`) and sexagesimal numbers (`12:30`) stay strings.
//! Merge keys (`<<: *anchor`, `<<: [*a, *b]`) are applied: keys written in
//! the mapping win over merged ones, and an earlier merged mapping wins over
//! a later one. Quoted and block (`|`, `>`) scalars are always strings.
//!
//! Writing: block style, every string that a YAML 1.1 or 1.2 resolver could
//! read as anything but a string (booleans, nulls, numbers, octal,
//! sexagesimal, timestamps, `<<`, leading indicators...) double-quoted, so
//! PyYAML, go-yaml v2/v3 and YAML 1.2 readers all read the same values.
//! Comments are not kept; keys come out sorted within each mapping.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The most values alias expansion may produce in one stream (a guard
/// against "billion laughs" inputs).
const MAX_ALIAS_VALUES: usize = 1_000_000;

/// Reads every document of a YAML stream; `Value::Null` for an empty one.
/// Errors name the document (1-based) and the line in the user's text.
pub fn read(text: &str) -> Result<Vec<Value>, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let parsed = parser.load(&mut builder, true);
    if let Some(e) = builder.error.take() {
        return Err(e);
    }
    parsed.map_err(|e| {
        format!(
            "document {}: not valid YAML: {e}",
            builder.docs.len() + usize::from(builder.in_doc)
        )
    })?;
    Ok(builder.docs)
}

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        entries: Map<String, Value>,
        merges: Vec<Value>,
        key: Option<Key>,
        anchor: usize,
        line: usize,
    },
}

enum Key {
    Name(String),
    Merge,
}

#[derive(Default)]
struct Builder {
    docs: Vec<Value>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, usize)>,
    expanded: usize,
    in_doc: bool,
    error: Option<String>,
}

impl Builder {
    fn fail(&mut self, mark: &Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(format!(
                "document {} line {}: {message}",
                self.docs.len() + 1,
                mark.line()
            ));
        }
    }

    /// A finished node: into its parent, or the document.
    fn push(&mut self, value: Value, anchor: usize, mark: &Marker) {
        if anchor != 0 {
            let size = count(&value);
            self.anchors.insert(anchor, (value.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                entries,
                merges,
                key,
                ..
            }) => match key.take() {
                None => match key_of(&value) {
                    Ok(k) => *key = Some(k),
                    Err(m) => self.fail(mark, m),
                },
                Some(Key::Merge) => merges.push(value),
                Some(Key::Name(name)) => {
                    if entries.contains_key(&name) {
                        let m = format!("key {name:?} is given twice in one mapping");
                        self.fail(mark, m);
                    } else {
                        entries.insert(name, value);
                    }
                }
            },
        }
    }

    fn map_key_pending(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

/// What a value becomes as a mapping key (sigs.k8s.io/yaml turns booleans and
/// numbers into their text).
fn key_of(value: &Value) -> Result<Key, String> {
    match value {
        Value::String(s) => Ok(Key::Name(s.clone())),
        Value::Bool(b) => Ok(Key::Name(b.to_string())),
        Value::Number(n) => Ok(Key::Name(n.to_string())),
        Value::Null => Ok(Key::Name("null".to_owned())),
        _ => Err("a mapping or sequence used as a mapping key".to_owned()),
    }
}

fn count(value: &Value) -> usize {
    match value {
        Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.in_doc = true;
                self.anchors.clear();
            }
            Event::DocumentEnd => self.in_doc = false,
            Event::Scalar(text, style, anchor, tag) => {
                if style == TScalarStyle::Plain
                    && text == "<<"
                    && tag.is_none()
                    && self.map_key_pending()
                {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(Key::Merge);
                    }
                    return;
                }
                match scalar(text, style, tag.as_ref()) {
                    Ok(v) => self.push(v, anchor, &mark),
                    Err(m) => self.fail(&mark, m),
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((value, size)) => {
                    self.expanded += size;
                    if self.expanded > MAX_ALIAS_VALUES {
                        let m = format!("aliases expand to more than {MAX_ALIAS_VALUES} values");
                        self.fail(&mark, m);
                        return;
                    }
                    let value = value.clone();
                    self.push(value, 0, &mark);
                }
                None => self.fail(&mark, "an alias to an unknown anchor".to_owned()),
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Map::new(),
                merges: Vec::new(),
                key: None,
                anchor,
                line: mark.line(),
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor }) = self.stack.pop() {
                    self.push(Value::Array(items), anchor, &mark);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    mut entries,
                    merges,
                    anchor,
                    line,
                    ..
                }) = self.stack.pop()
                {
                    for merge in merges {
                        let sources = match merge {
                            Value::Object(m) => vec![m],
                            Value::Array(items) => {
                                let mut maps = Vec::new();
                                for item in items {
                                    match item {
                                        Value::Object(m) => maps.push(m),
                                        _ => {
                                            self.error.get_or_insert_with(|| {
                                                format!("document {} line {line}: a merge key (<<) lists something that is not a mapping", self.docs.len() + 1)
                                            });
                                            return;
                                        }
                                    }
                                }
                                maps
                            }
                            _ => {
                                self.error.get_or_insert_with(|| {
                                    format!("document {} line {line}: a merge key (<<) must name a mapping or a list of mappings", self.docs.len() + 1)
                                });
                                return;
                            }
                        };
                        for source in sources {
                            for (k, v) in source {
                                entries.entry(k).or_insert(v);
                            }
                        }
                    }
                    self.push(Value::Object(entries), anchor, &mark);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let tag = tag.map(|t| {
        if t.handle == "!!" || t.handle == "tag:yaml.org,2002:" {
            format!("!!{}", t.suffix)
        } else {
            format!("{}{}", t.handle, t.suffix)
        }
    });
    match tag.as_deref() {
        Some("!!str") | Some("!!binary") | Some("!!timestamp") => return Ok(Value::String(text)),
        Some("!!null") => return Ok(Value::Null),
        _ => {}
    }
    if style != TScalarStyle::Plain && tag.is_none() {
        return Ok(Value::String(text));
    }
    resolve_plain(text)
}

/// go-yaml v2's resolution of a plain scalar, as sigs.k8s.io/yaml hands it
/// to JSON.
pub fn resolve_plain(text: String) -> Result<Value, String> {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Ok(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Ok(Value::Bool(false))
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "{text} is a YAML float JSON cannot hold (Kubernetes would refuse it); quote it if a string is meant"
            ))
        }
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Ok(Value::String(text));
    }
    let plain: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(n) = parse_go_int(&plain) {
        return Ok(Value::Number(n));
    }
    if is_yaml_float(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            if f.is_finite() {
                // sigs.k8s.io/yaml writes a float without a fraction as an integer.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    return Ok(Value::Number(Number::from(f as i64)));
                }
                if let Some(n) = Number::from_f64(f) {
                    return Ok(Value::Number(n));
                }
            }
        }
    }
    Ok(Value::String(text))
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint` (underscores already removed).
fn parse_go_int(s: &str) -> Option<Number> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
        (16, b)
    } else if let Some(b) = lower.strip_prefix("0o") {
        (8, b)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            Some(Number::from((magnitude as i128).wrapping_neg() as i64))
        } else {
            None
        }
    } else {
        Some(Number::from(magnitude))
    }
}

/// go-yaml v2's float pattern: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Writes documents as a YAML stream, each after `---`.
pub fn write(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        match doc {
            Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
            Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
            other => {
                out.push_str(&scalar_text(other));
                out.push('\n');
            }
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string_text(k));
        out.push(':');
        if is_block(v) {
            out.push('\n');
            write_node(v, indent + 2, out);
        } else {
            out.push(' ');
            out.push_str(&scalar_text(v));
            out.push('\n');
        }
    }
}

fn write_seq(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        if is_block(item) {
            let mut inner = String::new();
            write_node(item, indent + 2, &mut inner);
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&inner[indent + 2..]);
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&scalar_text(item));
            out.push('\n');
        }
    }
}

fn write_node(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) => write_map(m, indent, out),
        Value::Array(a) => write_seq(a, indent, out),
        _ => {}
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                // Display never uses an exponent; a dot makes it a float for
                // YAML 1.1 readers too.
                let mut s = f.to_string();
                if !s.contains('.') {
                    s.push_str(".0");
                }
                s
            } else {
                n.to_string()
            }
        }
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Words some YAML 1.1 or 1.2 resolver reads as a boolean or null.
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// Whether `s` can be written plain and be read back as this string by
/// every YAML 1.1 and 1.2 reader: it starts with a letter or `/` (so no number,
/// timestamp, sexagesimal, indicator or `<<`), holds only letters, digits
/// and `._/@=+-`, a `:` not followed by a space nor last, single spaces
/// inside, and is no boolean or null word in any case.
pub fn plain_is_safe(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !(b[0].is_ascii_alphabetic() || b[0] == b'/') {
        return false;
    }
    if RESERVED.iter().any(|w| w.eq_ignore_ascii_case(s)) {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let next = b.get(i + 1).copied();
        let ok = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
            b'.' | b'_' | b'/' | b'@' | b'=' | b'+' | b'-' => true,
            b':' => next.is_some() && next != Some(b' '),
            b' ' => next.is_some() && next != Some(b' '),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A string as YAML: plain when safe, else double-quoted with every
/// character YAML does not allow raw escaped.
pub fn string_text(s: &str) -> String {
    if plain_is_safe(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// YAML 1.1's printable set, less the line breaks YAML 1.1 readers treat
/// specially (NEL, LS, PS) and the byte-order mark.
fn printable(c: char) -> bool {
    let u = c as u32;
    (0x20..=0x7E).contains(&u)
        || (0xA0..=0xD7FF).contains(&u) && u != 0x2028 && u != 0x2029
        || (0xE000..=0xFFFD).contains(&u) && u != 0xFEFF
        || (0x10000..=0x10FFFF).contains(&u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2() {
        let doc = "a: 0755\nb: yes\nc: \"yes\"\nd: 1_000\ne: 12:30\nf: 2024-01-02\ng: ~\nh: 0x1F\ni: Off\nj: y\nk: 3.0\nl: 1.5\nm: -0b101\no: 08\n";
        let v = read(doc).expect("reads");
        assert_eq!(
            v[0],
            json!({"a": 493, "b": true, "c": "yes", "d": 1000, "e": "12:30", "f": "2024-01-02",
                   "g": null, "h": 31, "i": false, "j": true, "k": 3, "l": 1.5, "m": -5, "o": 8})
        );
    }

    #[test]
    fn merge_keys_apply_and_explicit_keys_win() {
        let doc = "base: &b {x: 1, w: 2}\nother: &o {w: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 9\n";
        let v = read(doc).expect("reads");
        assert_eq!(v[0]["m"], json!({"x": 9, "w": 2, "z": 4}));
        assert!(read("a: {<<: 1}").unwrap_err().contains("merge key"));
    }

    #[test]
    fn ambiguous_strings_are_quoted_and_read_back() {
        for s in [
            "yes",
            "Y",
            "NO",
            "on",
            "null",
            "~",
            "",
            "0755",
            "1_000",
            "12:30",
            "2024-01-02",
            "<<",
            "- x",
            "a: b",
            "#c",
            "1e3",
            ".5",
            "x ",
            " x",
            "a #b",
            "tab\there",
            "\u{85}",
        ] {
            let text = write(&[json!({ "k": s })]);
            assert_eq!(read(&text).expect("reads")[0]["k"], json!(s), "{text}");
            assert!(!plain_is_safe(s), "{s}");
        }
        for s in ["api", "example/app:1", "ls -la", "a.b_c", "http://x/y"] {
            assert!(plain_is_safe(s), "{s}");
        }
    }
}
