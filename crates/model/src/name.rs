//! Validated names: prefix, environment, service, key and SSM label.
//!
//! Every name is parsed, never normalised: `Staging` is rejected as an
//! environment rather than lower-cased.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use crate::quote::{Described, Quoted, QuotedChar};

/// Which kind of name an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameKind {
    /// The SSM path prefix ([`Prefix`]).
    Prefix,
    /// An environment ([`Environment`]).
    Environment,
    /// A service ([`Service`]).
    Service,
    /// A key, i.e. an environment-variable name ([`Key`]).
    Key,
    /// An SSM parameter label ([`Label`]).
    Label,
}

impl NameKind {
    /// The word used in messages: `"environment"`, `"service"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Prefix => "prefix",
            NameKind::Environment => "environment",
            NameKind::Service => "service",
            NameKind::Key => "key",
            NameKind::Label => "label",
        }
    }

    /// The whole rule in words, as it ends every [`NameError`] message.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Prefix => {
                "it must be 1 to 64 lower-case letters, digits, '.', '_' and '-', starting and \
                 ending with a letter or digit, without '/' and not starting with \"aws\" or \"ssm\" \
                 (at most 64 characters)"
            }
            NameKind::Environment => {
                "it must be a DNS-1123 label (lower-case letters, digits and '-', starting and \
                 ending with a letter or digit, at most 63 characters)"
            }
            NameKind::Service => {
                "it must be lower-case letters, digits, '.', '_' and '-', starting with a letter \
                 or digit, without \"..\" (at most 63 characters)"
            }
            NameKind::Key => {
                "it must be an environment variable name (letters, digits and '_', not starting \
                 with a digit, at most 128 characters)"
            }
            NameKind::Label => {
                "it must be an SSM parameter label (letters, digits, '.', '-' and '_', not \
                 starting with a digit, \"aws\" or \"ssm\", at most 100 characters)"
            }
        }
    }

    /// The longest accepted name of this kind, in characters.
    pub fn max_len(self) -> usize {
        self.spec().max
    }

    fn first_rule(self) -> &'static str {
        match self {
            NameKind::Prefix | NameKind::Environment | NameKind::Service => {
                "a lower-case letter or digit"
            }
            NameKind::Key => "a letter or '_'",
            NameKind::Label => "a letter, '.', '-' or '_' (not a digit)",
        }
    }

    fn last_rule(self) -> &'static str {
        "a lower-case letter or digit"
    }

    fn char_note(self, c: char) -> &'static str {
        match (self, c) {
            (NameKind::Prefix, '/') => " (write the prefix without slashes; sidekey adds them)",
            (NameKind::Service, '/') => " (a service is one path segment)",
            _ => "",
        }
    }

    fn spec(self) -> &'static Spec {
        match self {
            NameKind::Prefix => &PREFIX,
            NameKind::Environment => &ENVIRONMENT,
            NameKind::Service => &SERVICE,
            NameKind::Key => &KEY,
            NameKind::Label => &LABEL,
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that breaks its rule. Messages are one line, lower-case, name the
/// kind, quote the input (escaped) and state the rule. Positions are
/// 1-based and count characters, not bytes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The input is empty.
    #[error("invalid {kind} \"\": it is empty; {}", .kind.rule())]
    Empty {
        /// What was being parsed.
        kind: NameKind,
    },
    /// The input has more characters than the kind allows.
    #[error(
        "invalid {kind} {}: it is {len} characters long, at most {max} are allowed; {}",
        Quoted(.input),
        .kind.rule()
    )]
    TooLong {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An upper-case letter where only lower-case is allowed.
    #[error(
        "invalid {kind} {}: upper-case {} at position {position} is not allowed (names are used \
         as written, never lower-cased); {}",
        Quoted(.input),
        QuotedChar(*.ch),
        .kind.rule()
    )]
    UpperCase {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// The first upper-case letter.
        ch: char,
        /// Its 1-based character position.
        position: usize,
    },
    /// A character the kind never allows.
    #[error(
        "invalid {kind} {}: {} at position {position} is not allowed{}; {}",
        Quoted(.input),
        Described(*.ch),
        .kind.char_note(*.ch),
        .kind.rule()
    )]
    BadCharacter {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// The first bad character.
        ch: char,
        /// Its 1-based character position.
        position: usize,
    },
    /// An allowed character that may not come first.
    #[error(
        "invalid {kind} {}: the first character {} must be {}; {}",
        Quoted(.input),
        QuotedChar(*.ch),
        .kind.first_rule(),
        .kind.rule()
    )]
    BadFirstCharacter {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// The first character.
        ch: char,
    },
    /// An allowed character that may not come last.
    #[error(
        "invalid {kind} {}: the last character {} must be {}; {}",
        Quoted(.input),
        QuotedChar(*.ch),
        .kind.last_rule(),
        .kind.rule()
    )]
    BadLastCharacter {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// The last character.
        ch: char,
    },
    /// The input contains `..`.
    #[error("invalid {kind} {}: it must not contain \"..\"; {}", Quoted(.input), .kind.rule())]
    DotDot {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
    },
    /// The input starts with `aws` or `ssm`, which SSM reserves.
    #[error(
        "invalid {kind} {}: it must not start with \"{reserved}\" in any case (reserved by SSM); {}",
        Quoted(.input),
        .kind.rule()
    )]
    Reserved {
        /// What was being parsed.
        kind: NameKind,
        /// The rejected input.
        input: String,
        /// `"aws"` or `"ssm"`.
        reserved: &'static str,
    },
    /// A list names the same thing twice.
    #[error("duplicate {kind} {}: each {kind} may be listed only once", Quoted(.input))]
    Duplicate {
        /// What was being parsed.
        kind: NameKind,
        /// The repeated name.
        input: String,
    },
}

impl NameError {
    /// The kind of name that was rejected.
    pub fn kind(&self) -> NameKind {
        match self {
            NameError::Empty { kind }
            | NameError::TooLong { kind, .. }
            | NameError::UpperCase { kind, .. }
            | NameError::BadCharacter { kind, .. }
            | NameError::BadFirstCharacter { kind, .. }
            | NameError::BadLastCharacter { kind, .. }
            | NameError::DotDot { kind, .. }
            | NameError::Reserved { kind, .. }
            | NameError::Duplicate { kind, .. } => *kind,
        }
    }
}

/// The rule of one kind, as data.
struct Spec {
    kind: NameKind,
    max: usize,
    allowed: fn(char) -> bool,
    /// Upper-case letters are refused with [`NameError::UpperCase`].
    lower_only: bool,
    first: fn(char) -> bool,
    last: Option<fn(char) -> bool>,
    no_dot_dot: bool,
    reserved: bool,
}

fn lower_digit(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

static PREFIX: Spec = Spec {
    kind: NameKind::Prefix,
    max: 64,
    allowed: |c| lower_digit(c) || matches!(c, '.' | '_' | '-'),
    lower_only: true,
    first: lower_digit,
    last: Some(lower_digit),
    no_dot_dot: false,
    reserved: true,
};

static ENVIRONMENT: Spec = Spec {
    kind: NameKind::Environment,
    max: 63,
    allowed: |c| lower_digit(c) || c == '-',
    lower_only: true,
    first: lower_digit,
    last: Some(lower_digit),
    no_dot_dot: false,
    reserved: false,
};

static SERVICE: Spec = Spec {
    kind: NameKind::Service,
    max: 63,
    allowed: |c| lower_digit(c) || matches!(c, '.' | '_' | '-'),
    lower_only: true,
    first: lower_digit,
    last: None,
    no_dot_dot: true,
    reserved: false,
};

static KEY: Spec = Spec {
    kind: NameKind::Key,
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || c == '_',
    lower_only: false,
    first: |c| c.is_ascii_alphabetic() || c == '_',
    last: None,
    no_dot_dot: false,
    reserved: false,
};

static LABEL: Spec = Spec {
    kind: NameKind::Label,
    max: 100,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'),
    lower_only: false,
    first: |c| !c.is_ascii_digit(),
    last: None,
    no_dot_dot: false,
    reserved: true,
};

fn check(spec: &Spec, s: &str) -> Result<(), NameError> {
    let kind = spec.kind;
    let input = || s.to_owned();
    let Some(first) = s.chars().next() else {
        return Err(NameError::Empty { kind });
    };
    let len = s.chars().count();
    if len > spec.max {
        return Err(NameError::TooLong {
            kind,
            input: input(),
            len,
            max: spec.max,
        });
    }
    if let Some((i, ch)) = s.chars().enumerate().find(|&(_, c)| !(spec.allowed)(c)) {
        let position = i + 1;
        return Err(if spec.lower_only && ch.is_ascii_uppercase() {
            NameError::UpperCase {
                kind,
                input: input(),
                ch,
                position,
            }
        } else {
            NameError::BadCharacter {
                kind,
                input: input(),
                ch,
                position,
            }
        });
    }
    // From here on `s` is ASCII.
    if !(spec.first)(first) {
        return Err(NameError::BadFirstCharacter {
            kind,
            input: input(),
            ch: first,
        });
    }
    if let Some(last_ok) = spec.last {
        let last = s.chars().next_back().unwrap_or(first);
        if !last_ok(last) {
            return Err(NameError::BadLastCharacter {
                kind,
                input: input(),
                ch: last,
            });
        }
    }
    if spec.no_dot_dot && s.contains("..") {
        return Err(NameError::DotDot {
            kind,
            input: input(),
        });
    }
    if spec.reserved {
        for reserved in ["aws", "ssm"] {
            if s.len() >= 3 && s[..3].eq_ignore_ascii_case(reserved) {
                return Err(NameError::Reserved {
                    kind,
                    input: input(),
                    reserved,
                });
            }
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// What kind of name this is, as errors report it.
            pub const KIND: NameKind = $kind;

            /// Checks `s` against the rule and keeps it exactly as given.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check(Self::KIND.spec(), s)?;
                Ok(Self(s.to_owned()))
            }

            /// The name as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(s: String) -> Result<Self, NameError> {
                check(Self::KIND.spec(), &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The first segment of every parameter name, `sidekey` by default.
    ///
    /// 1-64 characters of `[a-z0-9]([a-z0-9_.-]*[a-z0-9])?`, written without
    /// slashes, not starting with `aws` or `ssm` in any case.
    Prefix,
    NameKind::Prefix
);

name_type!(
    /// An environment: a DNS-1123 label, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`,
    /// 1-63 characters. By default the pod's namespace name.
    Environment,
    NameKind::Environment
);

name_type!(
    /// A service, a group of keys: `[a-z0-9][a-z0-9._-]{0,62}`, never
    /// containing `..`.
    Service,
    NameKind::Service
);

name_type!(
    /// A key, an environment-variable name with its case preserved:
    /// `[A-Za-z_][A-Za-z0-9_]{0,127}`.
    Key,
    NameKind::Key
);

name_type!(
    /// An SSM parameter label: 1-100 letters, digits, `.`, `-` and `_`, not
    /// starting with a digit, nor with `aws` or `ssm` in any case.
    Label,
    NameKind::Label
);

impl Prefix {
    /// The default prefix.
    pub const DEFAULT: &'static str = "sidekey";
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix(Self::DEFAULT.to_owned())
    }
}

/// Parses a comma list (items trimmed of ASCII whitespace); an empty or
/// blank string is an empty list, an empty item is an error, and so is a
/// name given twice.
fn parse_list<T>(
    s: &str,
    kind: NameKind,
    parse: fn(&str) -> Result<T, NameError>,
) -> Result<Vec<T>, NameError>
where
    T: AsRef<str> + Eq + Hash + Clone,
{
    if s.trim_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in s.split(',') {
        let name = parse(item.trim_matches(|c: char| c.is_ascii_whitespace()))?;
        if !seen.insert(name.clone()) {
            return Err(NameError::Duplicate {
                kind,
                input: name.as_ref().to_owned(),
            });
        }
        out.push(name);
    }
    Ok(out)
}

/// Parses `sidekey.io/services`: a comma list of services, trimmed; later
/// ones override earlier ones. Empty string gives an empty list; empty items
/// and duplicates are errors.
pub fn parse_services(s: &str) -> Result<Vec<Service>, NameError> {
    parse_list(s, NameKind::Service, Service::parse)
}

/// Parses a comma list of environments (`SIDEKEY_INHERIT`), trimmed.
/// Empty string gives an empty list; empty items and duplicates are errors.
pub fn parse_environments(s: &str) -> Result<Vec<Environment>, NameError> {
    parse_list(s, NameKind::Environment, Environment::parse)
}
