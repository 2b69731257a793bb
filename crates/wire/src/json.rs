//! JSON text written by hand, byte for byte as `serde_json` writes it, and
//! what a `serde_json` error says without quoting its input.
//!
//! The injector writes its patches, answers and audit lines as text,
//! appending constants and escaping only what comes from input; the agent
//! writes its `secrets.json` into a buffer that is zeroized. This is the
//! one escaper they share ([`write_str`] into a `String`, [`write_bytes`]
//! into a `Vec<u8>`).

/// Appends `s` to `out` as a JSON string: `"` and `\` escaped, control
/// characters as `\n`, `\t`... or `\u00XX`; everything else as is (JSON
/// text is UTF-8). The same bytes `serde_json::to_string(s)` gives.
pub fn write_str(out: &mut String, s: &str) {
    write_into(out, s);
}

/// [`write_str`] into bytes: the same text appended to `out`. Reserves
/// `s.len() + 2` bytes first; a caller that must not leave copies behind
/// (a buffer of secrets) reserves the worst case, six bytes per byte of
/// `s` plus two, up front.
pub fn write_bytes(out: &mut Vec<u8>, s: &str) {
    write_into(out, s);
}

/// Where JSON text is appended: a `String` or a `Vec<u8>`.
trait Text {
    fn reserve_more(&mut self, n: usize);
    fn put(&mut self, s: &str);
}

impl Text for String {
    fn reserve_more(&mut self, n: usize) {
        self.reserve(n);
    }
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Text for Vec<u8> {
    fn reserve_more(&mut self, n: usize) {
        self.reserve(n);
    }
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

fn write_into(out: &mut impl Text, s: &str) {
    out.reserve_more(s.len() + 2);
    out.put("\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = next_escape(bytes, i) {
        // `at` is an ASCII byte, so both slices end on character
        // boundaries.
        out.put(&s[start..at]);
        push_escaped(out, bytes[at]);
        start = at + 1;
        i = at + 1;
    }
    out.put(&s[start..]);
    out.put("\"");
}

/// The index of the first byte at or after `from` that JSON escapes: `"`,
/// `\` or a control character below 0x20. Eight bytes at a time (the
/// strings written are names, paths and keys: mostly nothing to escape).
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const SLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Each term sets a byte's high bit where that byte is below 0x20,
        // is `"`, or is `\` (and may set it for a byte after one that
        // matched: the scan below finds the first match exactly). Bytes
        // with their own high bit set (UTF-8 beyond ASCII) are masked out.
        let quote = word ^ QUOTES;
        let slash = word ^ SLASHES;
        let found =
            (word.wrapping_sub(SPACES) | quote.wrapping_sub(ONES) | slash.wrapping_sub(ONES))
                & !word
                & HIGHS;
        if found != 0 {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|p| i + p)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_escaped(out: &mut impl Text, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        _ => {
            // Only bytes below 0x20 get here: two hex digits, ASCII.
            let digits = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ];
            out.put(std::str::from_utf8(&digits).unwrap_or("\\ufffd"));
            return;
        }
    };
    out.put(short);
}

/// What a `serde_json` error says, without any part of the input: the kind
/// of error and its position. serde's own messages can carry input
/// ("invalid type: string \"...\"", an unknown variant), and the input may
/// hold secrets, so only these are kept; a field named in a message about a
/// missing or duplicate field comes from the schema, not from the input,
/// and is kept when it is a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    what: What,
    line: usize,
    column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Syntax,
    Eof,
    Io,
    MissingField(String),
    DuplicateField(String),
    DuplicateKeyIn(String),
    WrongType,
}

impl JsonError {
    /// The description of `e`.
    pub fn of(e: &serde_json::Error) -> JsonError {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax => What::Syntax,
            Category::Eof => What::Eof,
            Category::Io => What::Io,
            Category::Data => {
                let message = e.to_string();
                let named = |prefix: &str| {
                    message
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.split('`').next())
                        .filter(|name| {
                            name.len() <= 64
                                && name.chars().all(|c| {
                                    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' '
                                })
                        })
                        .map(str::to_owned)
                };
                if let Some(name) = named("missing field `") {
                    What::MissingField(name)
                } else if let Some(name) = named("duplicate field `") {
                    What::DuplicateField(name)
                } else if let Some(name) = named("duplicate key in `") {
                    What::DuplicateKeyIn(name)
                } else {
                    What::WrongType
                }
            }
        };
        JsonError {
            what,
            line: e.line(),
            column: e.column(),
        }
    }

    /// The description for a document of one line (an audit record): the
    /// column only, and none for a missing field (the line number is the
    /// caller's to give).
    pub fn in_line(&self) -> String {
        let column = self.column;
        match &self.what {
            What::MissingField(name) => format!("missing field `{name}`"),
            _ => self.describe(&format!("column {column}")),
        }
    }

    fn describe(&self, at: &str) -> String {
        match &self.what {
            What::Syntax => format!("invalid JSON at {at}"),
            What::Eof => "the JSON ends early".to_owned(),
            What::Io => "cannot read the input".to_owned(),
            What::MissingField(name) => format!("missing field `{name}` at {at}"),
            What::DuplicateField(name) => {
                format!("duplicate field `{name}` at {at}: a key may appear once")
            }
            What::DuplicateKeyIn(name) => {
                format!("a key appears twice in `{name}` at {at}: a key may appear once")
            }
            What::WrongType => format!("a field has the wrong type or value at {at}"),
        }
    }
}

impl std::fmt::Display for JsonError {
    /// `line L column C` positions.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(&format!("line {} column {}", self.line, self.column)))
    }
}

/// [`JsonError::of`] as text, with the line and column of the error.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    JsonError::of(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(s: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, s);
        out
    }

    proptest! {
        #[test]
        fn strings_are_written_as_serde_json_writes_them(
            chars in proptest::collection::vec(any::<char>(), 0..40)
        ) {
            let s = String::from_iter(chars);
            prop_assert_eq!(written(&s), serde_json::to_string(&s).unwrap());
        }

        /// Mostly bytes that escape, at every offset of the eight-byte scan.
        #[test]
        fn escapes_anywhere_are_written_as_serde_json_writes_them(
            chars in proptest::collection::vec(
                prop_oneof![
                    Just('"'), Just('\\'), Just('\n'), Just('\u{1f}'), Just('\u{0}'),
                    Just(' '), Just('!'), Just('#'), Just('['), Just(']'), Just('\u{7f}'),
                    Just('é'), Just('\u{2028}'), Just('😀'), Just('a'),
                ],
                0..40,
            )
        ) {
            let s = String::from_iter(chars);
            prop_assert_eq!(written(&s), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn control_characters_escape() {
        assert_eq!(
            written("a\"b\\c\n\u{1}\u{7f}é\u{8}\u{c}\r\t"),
            "\"a\\\"b\\\\c\\n\\u0001\u{7f}é\\b\\f\\r\\t\""
        );
        assert_eq!(written(""), "\"\"");
    }

    #[test]
    fn bytes_are_the_same_text() {
        let s = "a\"b\\c\n\u{1}\u{7f}é\u{8}\u{c}\r\t😀";
        let mut bytes = b"x".to_vec();
        write_bytes(&mut bytes, s);
        assert_eq!(bytes, format!("x{}", written(s)).into_bytes());
    }

    proptest! {
        #[test]
        fn bytes_are_written_as_serde_json_writes_them(
            chars in proptest::collection::vec(any::<char>(), 0..40)
        ) {
            let s = String::from_iter(chars);
            let mut out = Vec::new();
            write_bytes(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }

        /// Whatever the input, the description quotes none of it beyond
        /// a schema's field name.
        #[test]
        fn descriptions_never_quote_the_input(secret in "[a-z]{12}") {
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Doc {
                uid: String,
                n: u8,
            }
            for text in [
                format!("{{\"uid\":\"x\",\"n\":\"{secret}\"}}"),
                format!("{{\"uid\":{secret}}}"),
                format!("{{\"uid\":\"{secret}\""),
                format!("[\"{secret}\"]"),
                format!("{{\"n\":1,\"{secret}\":2}}"),
            ] {
                let e = serde_json::from_str::<Doc>(&text).unwrap_err();
                let full = describe_json_error(&e);
                let one = JsonError::of(&e).in_line();
                prop_assert!(!full.contains(&secret), "{}", full);
                prop_assert!(!one.contains(&secret), "{}", one);
            }
        }
    }

    #[test]
    fn errors_are_described_by_kind_and_position() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            uid: String,
            #[serde(default)]
            n: u8,
        }
        let of = |text: &str| serde_json::from_str::<Doc>(text).unwrap_err();
        let e = of("{\"n\":1}");
        assert_eq!(
            describe_json_error(&e),
            "missing field `uid` at line 1 column 7"
        );
        assert_eq!(JsonError::of(&e).in_line(), "missing field `uid`");
        let e = of("{\"uid\":\"a\",\"uid\":\"b\"}");
        assert_eq!(
            describe_json_error(&e),
            "duplicate field `uid` at line 1 column 16: a key may appear once"
        );
        let e = of("{\"uid\":\"a\",\n\"n\":\"x\"}");
        assert_eq!(
            describe_json_error(&e),
            "a field has the wrong type or value at line 2 column 7"
        );
        assert_eq!(
            JsonError::of(&e).in_line(),
            "a field has the wrong type or value at column 7"
        );
        let e = of("{\"uid\" 1}");
        assert_eq!(describe_json_error(&e), "invalid JSON at line 1 column 8");
        assert_eq!(JsonError::of(&e).in_line(), "invalid JSON at column 8");
        assert_eq!(describe_json_error(&of("{\"uid\":")), "the JSON ends early");
    }
}
