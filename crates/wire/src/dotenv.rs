//! How a secret is written as one dotenv line that stays inert.
//!
//! A dotenv file is read by very different programs: a POSIX shell
//! (`set -a; . ./secrets.env`), python-dotenv, Ruby's dotenv, Node's
//! dotenv, and `sidekey import`. Each gives quotes and backslashes its own
//! meaning, and some expand variables or run commands: bash runs `$(...)`
//! and backticks inside double quotes, Ruby dotenv runs `$(...)` in double
//! quotes, python-dotenv expands `${NAME}` even inside single quotes. A
//! value from the store must come back from every one of them as exactly
//! the same bytes, and must never execute or expand.
//!
//! The rules, the only forms that all of them read literally:
//!
//! - `KEY='value'` when the value has no `'`, no `\\` (python-dotenv reads
//!   it as one backslash) and does not end in `\` (python-dotenv would read
//!   `\'` as an escaped quote). Single quotes are literal in a POSIX shell
//!   and in every reader above; newlines are kept.
//! - `KEY="value"` when the value has a `'` but none of `$`, `` ` ``, `"`
//!   and `\`: inside double quotes only those four mean anything to a shell
//!   (and `$`/`\` to the dotenv readers), so the rest is literal.
//! - Nothing otherwise: a value that holds `${` (expanded by python-dotenv
//!   in any quoting), a carriage return (dropped or translated by readers
//!   that normalise line ends) or a NUL, or that mixes `'` with one of the
//!   four characters above, has no inert dotenv form. It is refused with a
//!   [`DotenvRefusal`] that names the rule (never the value); JSON and
//!   per-key files carry any value.
//!
//! Keys are checked by the caller (`sidekey_model::Key`:
//! `[A-Za-z_][A-Za-z0-9_]*`, safe unquoted everywhere).
//!
//! Read ([`parse`], what `sidekey import` takes): blank lines and `#`
//! comments; an optional `export ` before the key; values double-quoted
//! (the escapes `\n`, `\r`, `\t`, `\"`, `\\` and `\$`), single-quoted
//! (literal, may span lines), or bare (trimmed, ending at ` #`). Every line
//! [`write_line`] writes reads back as the same bytes.

use std::fmt;

use zeroize::Zeroizing;

/// Why a value has no inert dotenv form. Names the rule, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotenvRefusal {
    /// The value holds `${`.
    DollarBrace,
    /// The value holds a carriage return.
    CarriageReturn,
    /// The value holds a NUL byte.
    Nul,
    /// The value mixes `'` with `$`, a backtick, `"` or `\`, or ends in
    /// `\` or holds `\\` next to a `'`.
    MixedQuotes,
}

impl fmt::Display for DotenvRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DotenvRefusal::DollarBrace => {
                "the value contains \"${\", which python-dotenv expands even inside single quotes"
            }
            DotenvRefusal::CarriageReturn => {
                "the value contains a carriage return, which dotenv readers drop or translate"
            }
            DotenvRefusal::Nul => "the value contains a NUL byte",
            DotenvRefusal::MixedQuotes => {
                "the value contains a single quote together with one of $ ` \" \\ (or a \\ that single quotes cannot carry), so no quoting is literal in a shell and in every dotenv reader"
            }
        })?;
        f.write_str("; dotenv cannot carry it inertly: use the json or per-key format")
    }
}

impl std::error::Error for DotenvRefusal {}

/// Whether `value` can be written in single quotes.
fn single_quotable(value: &str) -> bool {
    !value.contains('\'') && !value.contains("\\\\") && !value.ends_with('\\')
}

/// Whether `value` can be written in double quotes.
fn double_quotable(value: &str) -> bool {
    !value.contains(['$', '`', '"', '\\'])
}

/// Checks that `value` has an inert dotenv form; returns the quote it takes.
pub fn quote_for(value: &str) -> Result<u8, DotenvRefusal> {
    if value.contains('\0') {
        return Err(DotenvRefusal::Nul);
    }
    if value.contains('\r') {
        return Err(DotenvRefusal::CarriageReturn);
    }
    if value.contains("${") {
        return Err(DotenvRefusal::DollarBrace);
    }
    if single_quotable(value) {
        Ok(b'\'')
    } else if double_quotable(value) {
        Ok(b'"')
    } else {
        Err(DotenvRefusal::MixedQuotes)
    }
}

/// The bytes [`write_line`] adds for `key` and `value` (for reserving room
/// up front: a growing buffer would leave copies of values in freed memory).
pub fn line_len(key: &str, value: &str) -> usize {
    key.len() + value.len() + 4
}

/// Appends `KEY='value'\n` (or the double-quoted form, see the module
/// docs) to `out`, or refuses the value and leaves `out` unchanged.
pub fn write_line(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), DotenvRefusal> {
    let quote = quote_for(value)?;
    out.reserve(line_len(key, value));
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.push(quote);
    out.extend_from_slice(value.as_bytes());
    out.push(quote);
    out.push(b'\n');
    Ok(())
}

/// A dotenv parse error: names the line and the rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    /// 1-based; a value over several lines is named by its first.
    pub line: usize,
    pub rule: String,
}

impl fmt::Display for DotenvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.rule)
    }
}

impl std::error::Error for DotenvError {}

/// Parses a dotenv document into keys and values, in file order. Each
/// name is checked by `key` (its error is the rule reported for the line);
/// a key given twice is an error. The values, and every copy made while
/// reading, are zeroized when dropped.
pub fn parse<K, E>(
    text: &str,
    mut key: impl FnMut(&str) -> Result<K, E>,
) -> Result<Vec<(K, Zeroizing<String>)>, DotenvError>
where
    K: PartialEq + fmt::Display,
    E: fmt::Display,
{
    let mut out: Vec<(K, Zeroizing<String>)> = Vec::new();
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
        let key = key(name).map_err(|e| DotenvError {
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
        out.push((key, value));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(value: &str) -> Result<String, DotenvRefusal> {
        let mut out = Vec::new();
        write_line(&mut out, "K", value).map(|()| String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn picks_the_literal_quoting() {
        assert_eq!(line("plain").unwrap(), "K='plain'\n");
        assert_eq!(line("$(id) `id` $HOME").unwrap(), "K='$(id) `id` $HOME'\n");
        assert_eq!(line("a\\b\nc\"d").unwrap(), "K='a\\b\nc\"d'\n");
        assert_eq!(line("it's").unwrap(), "K=\"it's\"\n");
        assert_eq!(line("").unwrap(), "K=''\n");
    }

    #[test]
    fn refuses_what_no_quoting_carries() {
        for (value, refusal) in [
            ("a${HOME}", DotenvRefusal::DollarBrace),
            ("a\rb", DotenvRefusal::CarriageReturn),
            ("a\0b", DotenvRefusal::Nul),
            ("it's $5", DotenvRefusal::MixedQuotes),
            ("it's `x`", DotenvRefusal::MixedQuotes),
            ("it's \"x\"", DotenvRefusal::MixedQuotes),
            ("trailing\\", DotenvRefusal::MixedQuotes),
            ("two\\\\", DotenvRefusal::MixedQuotes),
        ] {
            let mut out = b"kept".to_vec();
            assert_eq!(write_line(&mut out, "K", value), Err(refusal), "{value:?}");
            assert_eq!(out, b"kept", "nothing half-written");
        }
    }

    #[test]
    fn refusals_never_show_the_value() {
        let msg = quote_for("it's $ecretvalue").unwrap_err().to_string();
        assert!(!msg.contains("ecretvalue"), "{msg}");
        assert!(msg.contains("json"), "{msg}");
    }

    /// Names as `sidekey_model::Key` takes them (the model is above this
    /// crate: its rule is restated here for the tests).
    fn any_key(name: &str) -> Result<String, String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(name.to_owned())
        } else {
            Err("a key must match [A-Za-z_][A-Za-z0-9_]*".to_owned())
        }
    }

    fn roundtrip(value: &str) {
        let mut doc = Vec::new();
        write_line(&mut doc, "K", value).expect("has a dotenv form");
        let text = String::from_utf8(doc).expect("utf-8");
        let parsed = parse(&text, any_key).expect("parses");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.as_str(), value);
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
        let parsed = parse(doc, any_key).expect("parses");
        let got: Vec<(String, String)> = parsed
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
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
            let e = parse(doc, any_key).expect_err(doc);
            assert_eq!(e.line, line, "{doc:?}");
            assert!(e.to_string().contains(rule), "{e}");
            assert!(!e.to_string().contains("secretvalue"), "{e}");
        }
    }
}
