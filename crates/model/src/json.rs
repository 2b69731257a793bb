//! JSON strings written by hand, byte for byte as `serde_json` writes them.
//!
//! The injector writes its patches and audit lines as text, appending
//! constants and escaping only what comes from input; this is the one
//! escaper they share.

use std::fmt::Write as _;

/// Appends `s` to `out` as a JSON string: `"` and `\` escaped, control
/// characters as `\n`, `\t`... or `\u00XX`; everything else as is (JSON
/// text is UTF-8). The same bytes `serde_json::to_string(s)` gives.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
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
    }

    #[test]
    fn control_characters_escape() {
        assert_eq!(
            written("a\"b\\c\n\u{1}\u{7f}é\u{8}\u{c}\r\t"),
            "\"a\\\"b\\\\c\\n\\u0001\u{7f}é\\b\\f\\r\\t\""
        );
        assert_eq!(written(""), "\"\"");
    }
}
