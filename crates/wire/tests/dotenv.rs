//! The dotenv writer against the parser: every value `write_line` accepts
//! reads back from `parse` as the same bytes, alone or in a document of
//! several lines; a value it refuses leaves the document unchanged.

use proptest::prelude::*;
use sidekey_wire::dotenv::{line_len, parse, quote_for, write_line};

/// Keys as the model's `Key` takes them.
fn key_rule(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a key"))
    }
}

/// Values made mostly of the characters quoting cares about, and any
/// character at all.
fn value() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => prop::sample::select(vec![
                '\'', '"', '\\', '$', '`', '{', '}', '#', '=', ' ', '\t', '\n', '\r', '\0',
                'a', 'Z', '0', 'é', '✓', '\u{7f}', '\u{1}', '\u{2028}',
            ]),
            1 => any::<char>(),
        ],
        0..24,
    )
    .prop_map(String::from_iter)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_written_value_parses_back_to_the_same_bytes(v in value()) {
        let mut doc = Vec::new();
        match write_line(&mut doc, "K", &v) {
            Ok(()) => {
                prop_assert_eq!(doc.len(), line_len("K", &v));
                let text = String::from_utf8(doc).unwrap();
                let parsed = parse(&text, key_rule).unwrap();
                prop_assert_eq!(parsed.len(), 1);
                prop_assert_eq!(parsed[0].0.as_str(), "K");
                prop_assert_eq!(parsed[0].1.as_bytes(), v.as_bytes());
            }
            Err(refusal) => {
                prop_assert!(doc.is_empty());
                prop_assert_eq!(quote_for(&v), Err(refusal));
            }
        }
    }

    /// Documents of several lines, with comments and blank lines between
    /// them: every accepted value comes back, in order, under its key.
    #[test]
    fn written_documents_parse_back(
        values in proptest::collection::vec(value(), 1..8),
        comment in prop::sample::select(vec!["", "\n", "# note\n", "\n# 'x' \"y\"\n\n"]),
    ) {
        let mut doc = Vec::new();
        let mut expected = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let key = format!("K_{i}");
            if write_line(&mut doc, &key, v).is_ok() {
                expected.push((key, v.clone()));
                doc.extend_from_slice(comment.as_bytes());
            }
        }
        let text = String::from_utf8(doc).unwrap();
        let parsed = parse(&text, key_rule).unwrap();
        let got: Vec<(String, String)> = parsed
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn any_text_is_parsed_or_refused(text in "\\PC{0,64}|(?s).{0,64}") {
        let _ = parse(&text, key_rule);
    }
}
