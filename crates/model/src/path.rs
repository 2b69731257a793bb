//! Parameter names in SSM: `/{prefix}/{environment}/{service}/{key}`.

use std::fmt;

use crate::name::{Environment, Key, NameError, Prefix, Service};
use crate::pick::Selector;
use crate::quote::Quoted;

const PATH_RULE: &str = "a parameter name is exactly /{prefix}/{environment}/{service}/{key}";

/// The full name of one parameter: `/{prefix}/{environment}/{service}/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamPath {
    prefix: Prefix,
    environment: Environment,
    service: Service,
    key: Key,
}

impl ParamPath {
    /// Builds the name from its validated parts.
    pub fn new(prefix: &Prefix, environment: &Environment, service: &Service, key: &Key) -> Self {
        ParamPath {
            prefix: prefix.clone(),
            environment: environment.clone(),
            service: service.clone(),
            key: key.clone(),
        }
    }

    /// Parses a parameter name as SSM returns it. It must be exactly
    /// `/{prefix}/{environment}/{service}/{key}` under the given prefix;
    /// anything else is an error that names the rule.
    pub fn parse(prefix: &Prefix, name: &str) -> Result<Self, PathError> {
        let err_name = || name.to_owned();
        let Some(rest) = name.strip_prefix('/') else {
            return Err(PathError::NotAbsolute { name: err_name() });
        };
        if name.ends_with('/') {
            return Err(PathError::TrailingSlash { name: err_name() });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if let Some(i) = parts.iter().position(|p| p.is_empty()) {
            return Err(PathError::EmptySegment {
                name: err_name(),
                position: i + 1,
            });
        }
        if parts[0] != prefix.as_str() {
            return Err(PathError::WrongPrefix {
                name: err_name(),
                prefix: prefix.clone(),
            });
        }
        let [_, environment, service, key] = parts[..] else {
            return Err(PathError::WrongSegmentCount {
                name: err_name(),
                found: parts.len() - 1,
            });
        };
        let wrap = |source| PathError::Name {
            name: err_name(),
            source,
        };
        Ok(ParamPath {
            prefix: prefix.clone(),
            environment: Environment::parse(environment).map_err(wrap)?,
            service: Service::parse(service).map_err(wrap)?,
            key: Key::parse(key).map_err(wrap)?,
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The environment.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The service.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The name in SSM's `name:selector` syntax, as `GetParameters` takes
    /// it: `/sidekey/staging/api/DB_PASSWORD:3`, or the plain name for
    /// [`Selector::Latest`].
    pub fn with_selector(&self, selector: &Selector) -> String {
        match selector.ssm_suffix() {
            Some(suffix) => format!("{self}{suffix}"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for ParamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/{}/{}/{}/{}",
            self.prefix, self.environment, self.service, self.key
        )
    }
}

/// `/{prefix}/`, e.g. `/sidekey/`.
pub fn prefix_path(prefix: &Prefix) -> String {
    format!("/{prefix}/")
}

/// `/{prefix}/{environment}/`, e.g. `/sidekey/staging/`: the path of one
/// environment, with a trailing slash so it never matches `staging2`.
pub fn environment_path(prefix: &Prefix, env: &Environment) -> String {
    format!("/{prefix}/{env}/")
}

/// `/{prefix}/{environment}/{service}/`, e.g. `/sidekey/staging/api/`: the
/// path `GetParametersByPath` is called with for one service.
pub fn service_path(prefix: &Prefix, env: &Environment, service: &Service) -> String {
    format!("/{prefix}/{env}/{service}/")
}

/// A parameter name that is not `/{prefix}/{environment}/{service}/{key}`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The name does not start with `/`.
    #[error("invalid parameter name {}: it must start with '/'; {}", Quoted(.name), PATH_RULE)]
    NotAbsolute {
        /// The rejected name.
        name: String,
    },
    /// The name ends with `/`.
    #[error("invalid parameter name {}: it must not end with '/'; {}", Quoted(.name), PATH_RULE)]
    TrailingSlash {
        /// The rejected name.
        name: String,
    },
    /// Two slashes in a row.
    #[error(
        "invalid parameter name {}: segment {position} is empty (\"//\"); {}",
        Quoted(.name),
        PATH_RULE
    )]
    EmptySegment {
        /// The rejected name.
        name: String,
        /// 1-based segment number.
        position: usize,
    },
    /// The first segment is not the configured prefix.
    #[error(
        "invalid parameter name {}: it is not under the prefix \"/{prefix}/\"; {}",
        Quoted(.name),
        PATH_RULE
    )]
    WrongPrefix {
        /// The rejected name.
        name: String,
        /// The prefix that was expected.
        prefix: Prefix,
    },
    /// Not exactly environment, service and key after the prefix.
    #[error(
        "invalid parameter name {}: it has {found} segments after the prefix, exactly 3 are \
         needed (environment, service and key); {}",
        Quoted(.name),
        PATH_RULE
    )]
    WrongSegmentCount {
        /// The rejected name.
        name: String,
        /// How many segments follow the prefix.
        found: usize,
    },
    /// A segment is not a valid environment, service or key.
    #[error("invalid parameter name {}: {source}", Quoted(.name))]
    Name {
        /// The rejected name.
        name: String,
        /// Which rule the segment breaks.
        #[source]
        source: NameError,
    },
}
