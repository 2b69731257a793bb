//! Explicit picks (`sidekey.io/secrets`): `ENV_NAME=service/KEY[@version|@label]`.
//!
//! A pick names a key *inside* the pod's environment. Anything that could
//! reach elsewhere (absolute paths, `..`, another environment or prefix,
//! percent-encoding, backslashes, non-ASCII look-alikes) is refused with a
//! message that says so.

use std::collections::HashMap;
use std::fmt;

use crate::name::{Environment, Key, Label, NameError, Prefix, Service};
use crate::path::ParamPath;
use crate::quote::{Described, Quoted};

const PICK_RULE: &str = "a pick is ENV_NAME=service/KEY, optionally followed by @version or \
                         @label, and names a key inside the pod's own environment";

/// Which version of a parameter to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Selector {
    /// The current version.
    #[default]
    Latest,
    /// A version number, 1 or more.
    Version(u64),
    /// An SSM parameter label.
    Label(Label),
}

impl Selector {
    /// The suffix for SSM's `name:selector` syntax: `None` for
    /// [`Selector::Latest`], `Some(":3")`, `Some(":prod")`.
    pub fn ssm_suffix(&self) -> Option<String> {
        match self {
            Selector::Latest => None,
            Selector::Version(v) => Some(format!(":{v}")),
            Selector::Label(l) => Some(format!(":{l}")),
        }
    }

    /// Whether this is [`Selector::Latest`].
    pub fn is_latest(&self) -> bool {
        matches!(self, Selector::Latest)
    }
}

/// One explicit pick: environment variable `var` gets `service/key` at
/// `selector`, from the pod's own environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pick {
    /// The environment variable to set.
    pub var: Key,
    /// The service holding the key.
    pub service: Service,
    /// The key inside the service.
    pub key: Key,
    /// Which version to read.
    pub selector: Selector,
}

impl Pick {
    /// The parameter this pick reads, in `environment` under `prefix`.
    pub fn param_path(&self, prefix: &Prefix, environment: &Environment) -> ParamPath {
        ParamPath::new(prefix, environment, &self.service, &self.key)
    }
}

/// The pick in its annotation syntax; parses back to an equal pick.
impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.var, self.service, self.key)?;
        match &self.selector {
            Selector::Latest => Ok(()),
            Selector::Version(v) => write!(f, "@{v}"),
            Selector::Label(l) => write!(f, "@{l}"),
        }
    }
}

/// A pick that breaks the syntax or tries to leave the environment. Every
/// message quotes the pick (escaped, one line) and states the rule.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PickError {
    /// The pick is empty.
    #[error("invalid pick \"\": it is empty; {}", PICK_RULE)]
    Empty,
    /// An empty item in a comma list (`a,,b` or a trailing comma).
    #[error(
        "invalid pick list {}: item {position} is empty (a stray or trailing comma?); {}",
        Quoted(.list),
        PICK_RULE
    )]
    EmptyItem {
        /// The whole list.
        list: String,
        /// 1-based item number.
        position: usize,
    },
    /// A non-ASCII character, e.g. a Unicode look-alike.
    #[error(
        "invalid pick {}: it could leave the environment: {} at position {position} is not \
         allowed (Unicode look-alikes are refused); {}",
        Quoted(.pick),
        Described(*.ch),
        PICK_RULE
    )]
    NonAscii {
        /// The rejected pick.
        pick: String,
        /// The first non-ASCII character.
        ch: char,
        /// Its 1-based character position.
        position: usize,
    },
    /// A control character (newline, tab, NUL, ...) inside the pick.
    #[error(
        "invalid pick {}: {} at position {position} is not allowed; {}",
        Quoted(.pick),
        Described(*.ch),
        PICK_RULE
    )]
    ControlCharacter {
        /// The rejected pick.
        pick: String,
        /// The first control character.
        ch: char,
        /// Its 1-based character position.
        position: usize,
    },
    /// No `=` between variable and parameter.
    #[error("invalid pick {}: there is no '='; {}", Quoted(.pick), PICK_RULE)]
    MissingEquals {
        /// The rejected pick.
        pick: String,
    },
    /// A part of the pick is empty.
    #[error("invalid pick {}: the {part} is empty; {}", Quoted(.pick), PICK_RULE)]
    EmptyPart {
        /// The rejected pick.
        pick: String,
        /// Which part: "variable name", "parameter", "service", "key",
        /// "version or label after '@'".
        part: &'static str,
    },
    /// The parameter starts with `/`.
    #[error(
        "invalid pick {}: it leaves the environment: absolute parameter paths (a leading '/') \
         are not allowed; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    AbsolutePath {
        /// The rejected pick.
        pick: String,
    },
    /// A `..` or `.` segment.
    #[error(
        "invalid pick {}: it leaves the environment: \"..\" and \".\" segments are not \
         allowed; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    Traversal {
        /// The rejected pick.
        pick: String,
    },
    /// A `%`, as in percent-encoding.
    #[error(
        "invalid pick {}: it could leave the environment: percent-encoding ('%') is not \
         allowed; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    PercentEncoded {
        /// The rejected pick.
        pick: String,
    },
    /// A backslash.
    #[error(
        "invalid pick {}: it could leave the environment: a backslash is not allowed; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    Backslash {
        /// The rejected pick.
        pick: String,
    },
    /// More than one `/`: an attempt to name another environment or prefix.
    #[error(
        "invalid pick {}: it leaves the environment: only service/KEY with a single '/' is \
         allowed, another environment or prefix cannot be named; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    TooManySegments {
        /// The rejected pick.
        pick: String,
    },
    /// No `/` between service and key.
    #[error(
        "invalid pick {}: there is no '/' between service and key; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    MissingKey {
        /// The rejected pick.
        pick: String,
    },
    /// `@0`.
    #[error(
        "invalid pick {}: version 0 does not exist, versions start at 1; {}",
        Quoted(.pick),
        PICK_RULE
    )]
    VersionZero {
        /// The rejected pick.
        pick: String,
    },
    /// A version number that does not fit in 64 bits.
    #[error(
        "invalid pick {}: version {} is too large (at most {}); {}",
        Quoted(.pick),
        Quoted(.version),
        u64::MAX,
        PICK_RULE
    )]
    VersionTooLarge {
        /// The rejected pick.
        pick: String,
        /// The digits as written.
        version: String,
    },
    /// A part is not a valid name.
    #[error("invalid pick {}: bad {part}: {source}", Quoted(.pick))]
    Name {
        /// The rejected pick.
        pick: String,
        /// Which part: "variable name", "service", "key" or "label".
        part: &'static str,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// Two picks set the same variable.
    #[error(
        "invalid picks: variable {} is set twice, by {} and by {}; each variable may be \
         picked only once",
        Quoted(.var),
        Quoted(.first),
        Quoted(.second)
    )]
    DuplicateVariable {
        /// The variable.
        var: String,
        /// The first pick that sets it.
        first: String,
        /// The second pick that sets it.
        second: String,
    },
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Parses one pick: `ENV_NAME=service/KEY`, `ENV_NAME=service/KEY@3` or
/// `ENV_NAME=service/KEY@label`. ASCII whitespace around the pick and
/// around `=` is trimmed. `@` followed only by digits is a version (1 or
/// more), anything else after `@` is a label.
pub fn parse_pick(s: &str) -> Result<Pick, PickError> {
    let item = trim(s);
    let pick = || item.to_owned();
    if item.is_empty() {
        return Err(PickError::Empty);
    }
    if let Some((i, ch)) = item.chars().enumerate().find(|(_, c)| !c.is_ascii()) {
        return Err(PickError::NonAscii {
            pick: pick(),
            ch,
            position: i + 1,
        });
    }
    // From here on the pick is ASCII, so byte offsets are positions.
    let Some((raw_var, raw_param)) = item.split_once('=') else {
        return Err(PickError::MissingEquals { pick: pick() });
    };
    let (var, param) = (trim(raw_var), trim(raw_param));
    let leading = |raw: &str| {
        raw.len()
            - raw
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .len()
    };
    for (piece, offset) in [
        (var, leading(raw_var)),
        (param, raw_var.len() + 1 + leading(raw_param)),
    ] {
        if let Some(i) = piece.bytes().position(|b| b.is_ascii_control()) {
            return Err(PickError::ControlCharacter {
                pick: pick(),
                ch: char::from(piece.as_bytes()[i]),
                position: offset + i + 1,
            });
        }
    }
    if var.is_empty() {
        return Err(PickError::EmptyPart {
            pick: pick(),
            part: "variable name",
        });
    }
    let var = Key::parse(var).map_err(|source| PickError::Name {
        pick: pick(),
        part: "variable name",
        source,
    })?;
    if param.is_empty() {
        return Err(PickError::EmptyPart {
            pick: pick(),
            part: "parameter",
        });
    }
    if param.starts_with('/') {
        return Err(PickError::AbsolutePath { pick: pick() });
    }
    let reference = param.split_once('@').map_or(param, |(r, _)| r);
    if param
        .split('/')
        .chain(reference.split('/'))
        .any(|seg| seg == ".." || seg == ".")
    {
        return Err(PickError::Traversal { pick: pick() });
    }
    if param.contains('%') {
        return Err(PickError::PercentEncoded { pick: pick() });
    }
    if param.contains('\\') {
        return Err(PickError::Backslash { pick: pick() });
    }
    let Some((service, rest)) = param.split_once('/') else {
        return Err(PickError::MissingKey { pick: pick() });
    };
    if rest.contains('/') {
        return Err(PickError::TooManySegments { pick: pick() });
    }
    let (key, selector) = match rest.split_once('@') {
        Some((key, selector)) => (key, Some(selector)),
        None => (rest, None),
    };
    if key.is_empty() {
        return Err(PickError::EmptyPart {
            pick: pick(),
            part: "key",
        });
    }
    let name_err = |part: &'static str| {
        move |source| PickError::Name {
            pick: pick(),
            part,
            source,
        }
    };
    let service = Service::parse(service).map_err(name_err("service"))?;
    let key = Key::parse(key).map_err(name_err("key"))?;
    let selector = match selector {
        None => Selector::Latest,
        Some("") => {
            return Err(PickError::EmptyPart {
                pick: pick(),
                part: "version or label after '@'",
            })
        }
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => match digits.parse::<u64>() {
            Ok(0) => return Err(PickError::VersionZero { pick: pick() }),
            Ok(v) => Selector::Version(v),
            Err(_) => {
                return Err(PickError::VersionTooLarge {
                    pick: pick(),
                    version: digits.to_owned(),
                })
            }
        },
        Some(label) => Selector::Label(Label::parse(label).map_err(name_err("label"))?),
    };
    Ok(Pick {
        var,
        service,
        key,
        selector,
    })
}

/// Parses `sidekey.io/secrets`: comma-separated picks. An empty (or blank)
/// string is no picks; an empty item (`a,,b`, trailing comma) is an error,
/// and so is a variable set by two picks.
pub fn parse_picks(s: &str) -> Result<Vec<Pick>, PickError> {
    if trim(s).is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashMap<Key, &str> = HashMap::new();
    let mut picks = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        let item = trim(item);
        if item.is_empty() {
            return Err(PickError::EmptyItem {
                list: s.to_owned(),
                position: i + 1,
            });
        }
        let pick = parse_pick(item)?;
        if let Some(first) = seen.insert(pick.var.clone(), item) {
            return Err(PickError::DuplicateVariable {
                var: pick.var.into_string(),
                first: first.to_owned(),
                second: item.to_owned(),
            });
        }
        picks.push(pick);
    }
    Ok(picks)
}
