//! One-line rendering of user input (annotation keys and values, container
//! names) for messages: plain names as is, anything else quoted and escaped
//! by the model's [`sidekey_model::Quoted`].

use std::fmt;

/// Names longer than this are quoted (and cut) rather than shown as is.
const MAX_SHOWN: usize = 120;

/// `"text"` with control and non-ASCII characters escaped, long input cut:
/// the model's rendering, so every sidekey message quotes input alike.
pub(crate) use sidekey_model::Quoted as Q;

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
