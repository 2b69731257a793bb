//! The dotenv format of `import` and `export`.
//!
//! Written by [`sidekey_model::dotenv::write_line`]: `KEY='value'`, or
//! `KEY="value"` for a value with a single quote, one per line, sorted,
//! literal in a POSIX shell and in the common dotenv readers; a value that
//! no quoting carries inertly is refused (see that module).
//! Read: blank lines and `#` comments; an optional `export ` before the
//! key; values double-quoted (with the escapes above, `\$` too), single-quoted
//! (literal, may span lines), or bare (trimmed, ending at ` #`).

use sidekey_envelope::Secret;
use sidekey_model::Key;
use zeroize::Zeroizing;

/// A dotenv parse error: names the line and the rule, never the value.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {rule}")]
pub struct DotenvError {
    pub line: usize,
    pub rule: String,
}

/// Parses a dotenv document into keys and values, in file order. A key
/// given twice is an error.
pub fn parse(text: &str) -> Result<Vec<(Key, Secret)>, DotenvError> {
    let mut out: Vec<(Key, Secret)> = Vec::new();
    // Sized once (a char per byte at most) so that it never grows and
    // leaves a copy; the values in it are zeroized with it.
    let mut chars = Zeroizing::new(Vec::with_capacity(text.len()));
    chars.extend(text.chars());
    let mut i = 0;
    let mut line = 1;
    let err = |line: usize, rule: &str| DotenvError {
        line,
        rule: rule.to_owned(),
    };
    while i < chars.len() {
        // Skip blank space and comment lines.
        match chars[i] {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        let start_line = line;
        let mut name = String::new();
        while i < chars.len() && chars[i] != '=' && chars[i] != '\n' {
            name.push(chars[i]);
            i += 1;
        }
        if i >= chars.len() || chars[i] != '=' {
            return Err(err(start_line, "expected KEY=value"));
        }
        i += 1; // '='
        let mut name = name.trim();
        if let Some(rest) = name.strip_prefix("export ") {
            name = rest.trim();
        }
        let key = Key::parse(name).map_err(|e| DotenvError {
            line: start_line,
            rule: e.to_string(),
        })?;
        let mut value = Zeroizing::new(String::new());
        match chars.get(i) {
            Some('"') => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start_line, "unterminated double-quoted value")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let escaped = match chars.get(i + 1) {
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('"') => '"',
                                Some('\\') => '\\',
                                Some('$') => '$',
                                Some(_) => {
                                    return Err(err(
                                        line,
                                        "unknown escape in a double-quoted value (use \\n, \\r, \\t, \\\", \\\\ or \\$)",
                                    ))
                                }
                                None => return Err(err(start_line, "unterminated double-quoted value")),
                            };
                            push(&mut value, escaped);
                            i += 2;
                        }
                        Some(&c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            push(&mut value, c);
                            i += 1;
                        }
                    }
                }
                expect_line_end(&chars, &mut i, line)?;
            }
            Some('\'') => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start_line, "unterminated single-quoted value")),
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            push(&mut value, c);
                            i += 1;
                        }
                    }
                }
                expect_line_end(&chars, &mut i, line)?;
            }
            _ => {
                while i < chars.len() && chars[i] != '\n' {
                    if chars[i] == '#' && value.ends_with(char::is_whitespace) {
                        while i < chars.len() && chars[i] != '\n' {
                            i += 1;
                        }
                        break;
                    }
                    push(&mut value, chars[i]);
                    i += 1;
                }
                value = Zeroizing::new(value.trim().to_owned());
            }
        }
        if out.iter().any(|(k, _)| k == &key) {
            return Err(err(start_line, &format!("{key} is given twice")));
        }
        out.push((key, Secret::from(std::mem::take(&mut *value))));
    }
    Ok(out)
}

/// Appends `c` to a value; when it must grow, it moves into a buffer twice
/// its size and the old one is zeroized (`String::push` would leave it to
/// the allocator as it is).
fn push(value: &mut Zeroizing<String>, c: char) {
    if value.len() + c.len_utf8() > value.capacity() {
        let mut bigger = Zeroizing::new(String::with_capacity(
            (value.capacity() * 2).max(32).max(value.len() + 4),
        ));
        bigger.push_str(value);
        *value = bigger;
    }
    value.push(c);
}

/// After a quoted value: only spaces and an optional comment on the line.
fn expect_line_end(chars: &[char], i: &mut usize, line: usize) -> Result<(), DotenvError> {
    while *i < chars.len() && chars[*i] != '\n' {
        match chars[*i] {
            '#' => {
                while *i < chars.len() && chars[*i] != '\n' {
                    *i += 1;
                }
                return Ok(());
            }
            c if c.is_whitespace() => *i += 1,
            _ => {
                return Err(DotenvError {
                    line,
                    rule: "unexpected text after the closing quote".to_owned(),
                })
            }
        }
    }
    Ok(())
}

pub use sidekey_model::dotenv::write_line;

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
            "with 'single' quotes",
            "a=b=c",
            "# not a comment",
            "x #y",
            "line1\nline2\n",
            "back\\slash\\n",
            "tab\t",
            "$HOME $(id) `id`",
            "it's",
            "ünïcödé ✓",
            " leading and trailing ",
        ] {
            roundtrip(v);
        }
    }

    #[test]
    fn reads_common_forms() {
        let doc = "# comment\n\nexport A=1\nB = two words # comment\nC='lit\\n'\nD=\"x\\$y\"\nE=\n";
        let parsed = parse(doc).expect("parses");
        let got: Vec<(String, String)> = parsed
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8(v.expose().to_vec()).expect("utf-8"),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "lit\\n".into()),
                ("D".into(), "x$y".into()),
                ("E".into(), "".into()),
            ]
        );
    }

    #[test]
    fn errors_name_the_line_not_the_value() {
        for (doc, line, rule) in [
            ("A=1\nno equals sign\n", 2, "expected KEY=value"),
            ("A=\"secretvalue\n", 1, "unterminated"),
            ("1BAD=secretvalue\n", 1, "key"),
            ("A=1\nA=2\n", 2, "twice"),
            ("A=\"x\" secretvalue\n", 1, "after the closing quote"),
            ("A=\"\\q secretvalue\"\n", 1, "unknown escape"),
        ] {
            let e = parse(doc).expect_err(doc);
            assert_eq!(e.line, line, "{doc:?}");
            assert!(e.to_string().contains(rule), "{e}");
            assert!(!e.to_string().contains("secretvalue"), "{e}");
        }
    }
}
