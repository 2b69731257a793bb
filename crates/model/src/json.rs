//! JSON strings written by hand, byte for byte as `serde_json` writes them.
//!
//! The injector writes its patches and audit lines as text, appending
//! constants and escaping only what comes from input; this is the one
//! escaper they share.

/// Appends `s` to `out` as a JSON string: `"` and `\` escaped, control
/// characters as `\n`, `\t`... or `\u00XX`; everything else as is (JSON
/// text is UTF-8). The same bytes `serde_json::to_string(s)` gives.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = next_escape(bytes, i) {
        // `at` is an ASCII byte, so both slices end on character
        // boundaries.
        out.push_str(&s[start..at]);
        push_escaped(out, bytes[at]);
        start = at + 1;
        i = at + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
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

fn push_escaped(out: &mut String, b: u8) {
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
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
            return;
        }
    };
    out.push_str(short);
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
}
