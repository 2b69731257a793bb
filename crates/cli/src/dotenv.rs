//! The dotenv format of `import` and `export`: the one reader and writer
//! are in `sidekey_wire::dotenv`;
//! this module gives them the CLI's types.
//!
//! Written by [`write_line`]: `KEY='value'`, or `KEY="value"` for a value
//! with a single quote, one per line, sorted, literal in a POSIX shell and
//! in the common dotenv readers; a value that no quoting carries inertly is
//! refused (see that module).
//! Read by [`parse`]: blank lines and `#` comments; an optional `export `
//! before the key; values double-quoted (with the escapes above, `\$` too),
//! single-quoted (literal, may span lines), or bare (trimmed, ending at
//! ` #`).

use sidekey_envelope::Secret;
use sidekey_model::Key;

pub use sidekey_wire::dotenv::{write_line, DotenvError};

/// Parses a dotenv document into keys and values, in file order. A name
/// that is not a [`Key`], or a key given twice, is an error naming the
/// line and the rule, never the value.
pub fn parse(text: &str) -> Result<Vec<(Key, Secret)>, DotenvError> {
    let parsed = sidekey_wire::dotenv::parse(text, Key::parse)?;
    Ok(parsed
        .into_iter()
        // The value's buffer moves into the Secret (no copy); the emptied
        // Zeroizing shell is dropped.
        .map(|(key, mut value)| (key, Secret::from(std::mem::take(&mut *value))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(value: &str) {
        let mut doc = Vec::new();
        write_line(&mut doc, "K", value).expect("has a dotenv form");
        let text = String::from_utf8(doc).expect("utf-8");
        let parsed = parse(&text).expect("parses");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.expose(), value.as_bytes());
    }

    #[test]
    fn round_trips_awkward_values() {
        for v in [
            "plain",
            "with \"double\" quotes",
            "it's",
            "line1\nline2\n",
            "$HOME $(id) `id`",
            "ünïcödé ✓",
            " leading and trailing ",
        ] {
            roundtrip(v);
        }
    }

    #[test]
    fn keys_follow_the_model_rule() {
        for (doc, line) in [("1BAD=secretvalue\n", 1), ("A=1\nB-C=secretvalue\n", 2)] {
            let e = parse(doc).expect_err(doc);
            assert_eq!(e.line, line, "{doc:?}");
            assert!(e.to_string().contains("key"), "{e}");
            assert!(!e.to_string().contains("secretvalue"), "{e}");
        }
        let parsed = parse("export _A1=x\n").expect("parses");
        assert_eq!(parsed[0].0.as_str(), "_A1");
    }
}
