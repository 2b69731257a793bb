//! The `sidekey.io/*` pod annotations: their names and the enumerations
//! they take (`delivery`, `files-format`, `on-missing`).
//!
//! The enumerations live here, not in the patch planner, because the agent
//! reads the same words back (`SIDEKEY_ON_MISSING`, `--format`) and must not
//! depend on Kubernetes types. Parsing is exact: values are lower-case words
//! as the README documents them, surrounding ASCII whitespace is ignored, and
//! anything else is an error that lists the accepted words.

use std::fmt;
use std::str::FromStr;

/// Every sidekey annotation starts with this.
pub const PREFIX: &str = "sidekey.io/";
/// `"true"` opts the pod in; anything else leaves it untouched.
pub const INJECT: &str = "sidekey.io/inject";
/// Set by the injector on pods it mutated; never injected twice.
pub const INJECTED: &str = "sidekey.io/injected";
/// Comma list of services, later ones override earlier ones.
pub const SERVICES: &str = "sidekey.io/services";
/// Explicit picks, `ENV_NAME=service/KEY[@version|@label]`, comma separated.
pub const SECRETS: &str = "sidekey.io/secrets";
/// `env`, `files` or `both`.
pub const DELIVERY: &str = "sidekey.io/delivery";
/// Comma list of the containers that receive secrets.
pub const CONTAINERS: &str = "sidekey.io/containers";
/// Mount path of the in-memory volume for files delivery.
pub const FILES_PATH: &str = "sidekey.io/files-path";
/// `per-key`, `dotenv` or `json`.
pub const FILES_FORMAT: &str = "sidekey.io/files-format";
/// Refresh interval of the files sidecar.
pub const REFRESH: &str = "sidekey.io/refresh";
/// JSON array: the command of a container whose spec has none.
pub const COMMAND: &str = "sidekey.io/command";
/// `sidekey.io/command.<container>`: [`COMMAND`] for one container (pods
/// whose containers use different images).
pub const COMMAND_FOR: &str = "sidekey.io/command.";
/// `fail` or `skip` for keys that do not exist.
pub const ON_MISSING: &str = "sidekey.io/on-missing";

/// Every annotation a pod may carry, in documentation order.
pub const KNOWN: [&str; 11] = [
    INJECT,
    INJECTED,
    SERVICES,
    SECRETS,
    DELIVERY,
    CONTAINERS,
    FILES_PATH,
    FILES_FORMAT,
    REFRESH,
    COMMAND,
    ON_MISSING,
];

/// The default `files-path`.
pub const DEFAULT_FILES_PATH: &str = "/run/secrets/sidekey";

/// A word that is not one of an enumeration's values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid {what} {input:?}: it must be one of {}", .allowed.join(", "))]
pub struct ChoiceError {
    /// What was being parsed: `"delivery"`, `"files format"`, `"on-missing"`.
    pub what: &'static str,
    /// The rejected input (shown escaped by `{:?}`).
    pub input: String,
    /// The accepted words.
    pub allowed: &'static [&'static str],
}

macro_rules! choice {
    (
        $(#[$doc:meta])* $name:ident, $what:literal,
        $( $(#[$vdoc:meta])* $variant:ident => $word:literal ),+ $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// The accepted words, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word for this value, as annotations and the agent spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }

            /// Parses one of [`Self::WORDS`]; surrounding ASCII whitespace is
            /// ignored, case is not.
            pub fn parse(s: &str) -> Result<Self, ChoiceError> {
                match s.trim_matches(|c: char| c.is_ascii_whitespace()) {
                    $( $word => Ok($name::$variant), )+
                    _ => Err(ChoiceError {
                        what: $what,
                        input: s.to_owned(),
                        allowed: Self::WORDS,
                    }),
                }
            }
        }

        impl FromStr for $name {
            type Err = ChoiceError;

            fn from_str(s: &str) -> Result<Self, ChoiceError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice!(
    /// How secrets reach the app (`sidekey.io/delivery`).
    Delivery, "delivery",
    /// Process environment variables, through the `exec` wrapper.
    Env => "env",
    /// Files on an in-memory volume.
    Files => "files",
    /// Both of the above.
    Both => "both",
);

impl Delivery {
    /// Whether the app's command is wrapped to receive environment variables.
    pub fn env(self) -> bool {
        matches!(self, Delivery::Env | Delivery::Both)
    }

    /// Whether files are written to an in-memory volume.
    pub fn files(self) -> bool {
        matches!(self, Delivery::Files | Delivery::Both)
    }
}

choice!(
    /// Layout of delivered files (`sidekey.io/files-format`, the agent's
    /// `--format`).
    FilesFormat, "files format",
    /// One file per key, named like the variable.
    PerKey => "per-key",
    /// One `.env` file.
    Dotenv => "dotenv",
    /// One JSON object file.
    Json => "json",
);

choice!(
    /// What to do with keys that do not exist (`sidekey.io/on-missing`,
    /// `SIDEKEY_ON_MISSING`).
    OnMissing, "on-missing",
    /// Refuse to start the app.
    Fail => "fail",
    /// Leave the variable unset.
    Skip => "skip",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for w in Delivery::WORDS {
            assert_eq!(Delivery::parse(w).unwrap().as_str(), *w);
        }
        for w in FilesFormat::WORDS {
            assert_eq!(w.parse::<FilesFormat>().unwrap().to_string(), *w);
        }
        for w in OnMissing::WORDS {
            assert_eq!(OnMissing::parse(w).unwrap().as_str(), *w);
        }
        assert_eq!(Delivery::parse(" both\n"), Ok(Delivery::Both));
    }

    #[test]
    fn rejects_other_words_with_the_list() {
        let e = Delivery::parse("Env").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid delivery \"Env\": it must be one of env, files, both"
        );
        assert!(FilesFormat::parse("yaml").is_err());
        assert!(OnMissing::parse("").is_err());
    }

    #[test]
    fn known_names_share_the_prefix() {
        assert!(KNOWN.iter().all(|k| k.starts_with(PREFIX)));
    }
}
