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
//! Keys are [`Key`](crate::Key)s: `[A-Za-z_][A-Za-z0-9_]*`, safe unquoted
//! everywhere.

use std::fmt;

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
}
