//! One-line, escaped rendering of user input for error messages.

use std::fmt;

/// Inputs longer than this many characters are cut in messages, so a
/// megabyte-long annotation cannot produce a megabyte-long denial.
const MAX_SHOWN: usize = 200;

/// Renders a string in double quotes, `{:?}`-style: printable ASCII as is,
/// everything else (control characters, non-ASCII) escaped, so the result is
/// always one line of ASCII.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_SHOWN {
                let total = self.0.chars().count();
                return write!(f, "\"... ({total} characters)");
            }
            escape(f, c, '"')?;
        }
        f.write_str("\"")
    }
}

/// Renders one character in single quotes with the same escaping as
/// [`Quoted`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotedChar(pub(crate) char);

impl fmt::Display for QuotedChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        escape(f, self.0, '\'')?;
        f.write_str("'")
    }
}

/// Describes a character for a message: `character 'x'`,
/// `control character '\n'` or `non-ASCII character '\u{ff2b}'`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Described(pub(crate) char);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let what = if !c.is_ascii() {
            "non-ASCII character"
        } else if c.is_ascii_control() {
            "control character"
        } else {
            "character"
        };
        write!(f, "{what} {}", QuotedChar(c))
    }
}

fn escape(f: &mut fmt::Formatter<'_>, c: char, quote: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if c == quote => write!(f, "\\{c}"),
        ' '..='~' => write!(f, "{c}"),
        c => write!(f, "\\u{{{:x}}}", u32::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_non_ascii() {
        assert_eq!(Quoted("a\nb\"\\").to_string(), r#""a\nb\"\\""#);
        assert_eq!(Quoted("Ｋ\u{7}").to_string(), r#""\u{ff2b}\u{7}""#);
        assert_eq!(QuotedChar('\'').to_string(), r"'\''");
    }

    #[test]
    fn truncates_long_input() {
        let long = "a".repeat(500);
        let shown = Quoted(&long).to_string();
        assert!(shown.ends_with("\"... (500 characters)"));
        assert!(shown.len() < 250);
    }
}
