//! One-line, escaped rendering of user input (annotation keys and values,
//! container names) for messages: printable ASCII as is, everything else
//! escaped, long input cut.

use std::fmt;

/// Inputs longer than this many characters are cut in messages.
const MAX_SHOWN: usize = 120;

/// `"text"` with control and non-ASCII characters escaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q<'a>(pub(crate) &'a str);

impl fmt::Display for Q<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_SHOWN {
                let total = self.0.chars().count();
                return write!(f, "\"... ({total} characters)");
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                ' '..='~' => write!(f, "{c}")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        f.write_str("\"")
    }
}

/// The name as is when it is plain (letters, digits, `.`, `-`, `_`, `/`),
/// else quoted and escaped like [`Q`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name<'a>(pub(crate) &'a str);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self.0.len() <= MAX_SHOWN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'));
        if plain {
            f.write_str(self.0)
        } else {
            Q(self.0).fmt(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(Q("a\n\"Ｋ").to_string(), r#""a\n\"\u{ff2b}""#);
        assert_eq!(
            Name("sidekey.io/services").to_string(),
            "sidekey.io/services"
        );
        assert_eq!(Name("a b").to_string(), "\"a b\"");
        assert!(Q(&"x".repeat(500))
            .to_string()
            .ends_with("(500 characters)"));
    }
}
