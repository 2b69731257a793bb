//! Configuration: the non-secret `SIDEKEY_*` variables the injector sets,
//! read through [`Vars`] (so tests never touch the process environment) and
//! parsed into a validated [`Config`]. Every error names the variable and
//! the rule it breaks, and ends the agent with exit status 64.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use sidekey_model::{
    parse_environments, parse_picks, parse_services, Environment, Pick, Prefix, Service,
};
use sidekey_store::{AwsSettings, Backend};

/// Where the agent's variables come from.
pub trait Vars {
    /// The value of `name`, if set. A value that is not UTF-8 comes back
    /// with replacement characters (and then fails validation).
    fn get(&self, name: &str) -> Option<String>;

    /// Every variable, in the process's order: the base of the child's
    /// environment for `exec`.
    fn all(&self) -> Vec<(OsString, OsString)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessVars;

impl Vars for ProcessVars {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }

    fn all(&self) -> Vec<(OsString, OsString)> {
        std::env::vars_os().collect()
    }
}

/// Variables from a map (tests, embedding).
#[derive(Debug, Clone, Default)]
pub struct MapVars(pub BTreeMap<String, String>);

impl MapVars {
    /// A map from pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> MapVars {
        MapVars(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Vars for MapVars {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn all(&self) -> Vec<(OsString, OsString)> {
        self.0
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }
}

/// Every variable the agent reads; any other `SIDEKEY_*` one is reported
/// as unknown (a typo would otherwise go unnoticed).
pub const KNOWN_VARIABLES: &[&str] = &[
    "SIDEKEY_ENVIRONMENT",
    "SIDEKEY_INHERIT",
    "SIDEKEY_SERVICES",
    "SIDEKEY_SECRETS",
    "SIDEKEY_PREFIX",
    "SIDEKEY_STORE",
    "SIDEKEY_KMS_KEY",
    "SIDEKEY_ON_MISSING",
    "SIDEKEY_TIMEOUT",
    "SIDEKEY_AUDIT",
    "SIDEKEY_POD",
    "SIDEKEY_NAMESPACE",
    "SIDEKEY_CA_FILE",
    "SIDEKEY_LOG",
    "SIDEKEY_LOG_FORMAT",
    "SIDEKEY_ALLOW_LEGACY",
    "SIDEKEY_ALLOW_LOADER_ENV",
    // The CLI's own, harmless in the same shell.
    "SIDEKEY_AUDIT_LOG",
    "SIDEKEY_ACTOR",
];

/// The default KMS key, as for the CLI.
pub const DEFAULT_KMS_KEY: &str = "alias/sidekey";
/// The default overall deadline of a fetch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A variable that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {rule}")]
pub struct ConfigError {
    /// The variable (or option) at fault.
    pub variable: String,
    /// What is wrong and what is allowed; never a secret value.
    pub rule: String,
}

impl ConfigError {
    /// An error for `variable`.
    pub fn new(variable: &str, rule: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.to_owned(),
            rule: rule.into(),
        }
    }
}

/// What to do when a requested secret does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMissing {
    /// End with exit status 69 (the default).
    #[default]
    Fail,
    /// Start without it; the audit record says so.
    Skip,
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditTarget {
    /// Standard output, collected with the pod's logs (the default).
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file shared with other writers (under a file lock).
    File(PathBuf),
}

/// The validated configuration of one agent run.
#[derive(Debug, Clone)]
pub struct Config {
    environment: Environment,
    inherit: Vec<Environment>,
    services: Vec<Service>,
    picks: Vec<Pick>,
    prefix: Prefix,
    backend: Backend,
    kms_key: String,
    on_missing: OnMissing,
    timeout: Duration,
    audit: AuditTarget,
    pod: Option<String>,
    namespace: Option<String>,
    ca_file: Option<PathBuf>,
    aws: AwsSettings,
    allow_legacy: bool,
    allow_loader_env: Vec<String>,
}

/// A set variable, trimmed; blank counts as unset.
fn var(vars: &dyn Vars, name: &str) -> Option<String> {
    vars.get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Config {
    /// Reads and validates every variable.
    pub fn from_vars(vars: &dyn Vars) -> Result<Config, ConfigError> {
        let environment = match var(vars, "SIDEKEY_ENVIRONMENT") {
            None => {
                return Err(ConfigError::new(
                    "SIDEKEY_ENVIRONMENT",
                    "is required: the environment whose secrets the pod gets (set by the injector from the namespace)",
                ))
            }
            Some(e) => Environment::parse(&e)
                .map_err(|e| ConfigError::new("SIDEKEY_ENVIRONMENT", e.to_string()))?,
        };
        let inherit = parse_environments(&var(vars, "SIDEKEY_INHERIT").unwrap_or_default())
            .map_err(|e| ConfigError::new("SIDEKEY_INHERIT", e.to_string()))?;
        let services = parse_services(&var(vars, "SIDEKEY_SERVICES").unwrap_or_default())
            .map_err(|e| ConfigError::new("SIDEKEY_SERVICES", e.to_string()))?;
        let picks = parse_picks(&var(vars, "SIDEKEY_SECRETS").unwrap_or_default())
            .map_err(|e| ConfigError::new("SIDEKEY_SECRETS", e.to_string()))?;
        if services.is_empty() && picks.is_empty() {
            return Err(ConfigError::new(
                "SIDEKEY_SERVICES",
                "names no service and SIDEKEY_SECRETS no pick: set at least one of them",
            ));
        }
        let prefix = match var(vars, "SIDEKEY_PREFIX") {
            None => Prefix::default(),
            Some(p) => {
                Prefix::parse(&p).map_err(|e| ConfigError::new("SIDEKEY_PREFIX", e.to_string()))?
            }
        };
        let backend = match var(vars, "SIDEKEY_STORE") {
            None => Backend::Ssm,
            Some(s) => s
                .parse::<Backend>()
                .map_err(|e| ConfigError::new("SIDEKEY_STORE", e.to_string()))?,
        };
        let kms_key = var(vars, "SIDEKEY_KMS_KEY").unwrap_or_else(|| DEFAULT_KMS_KEY.to_owned());
        let on_missing = match var(vars, "SIDEKEY_ON_MISSING").as_deref() {
            None | Some("fail") => OnMissing::Fail,
            Some("skip") => OnMissing::Skip,
            Some(other) => {
                return Err(ConfigError::new(
                    "SIDEKEY_ON_MISSING",
                    format!("{other:?} is neither \"fail\" nor \"skip\""),
                ))
            }
        };
        let timeout = match var(vars, "SIDEKEY_TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some(t) => sidekey_store::parse_timeout(&t)
                .map_err(|e| ConfigError::new("SIDEKEY_TIMEOUT", e.to_string()))?,
        };
        let audit = match var(vars, "SIDEKEY_AUDIT").as_deref() {
            None | Some("stdout") => AuditTarget::Stdout,
            Some("stderr") => AuditTarget::Stderr,
            Some(other) => match other.strip_prefix("file:") {
                Some("") => {
                    return Err(ConfigError::new(
                        "SIDEKEY_AUDIT",
                        "\"file:\" names no file: use file:PATH",
                    ))
                }
                Some(path) => AuditTarget::File(PathBuf::from(path)),
                None => {
                    return Err(ConfigError::new(
                        "SIDEKEY_AUDIT",
                        format!("{other:?} is not \"stdout\", \"stderr\" or \"file:PATH\""),
                    ))
                }
            },
        };
        if let Some(format) = var(vars, "SIDEKEY_LOG_FORMAT") {
            if format != "plain" && format != "json" {
                return Err(ConfigError::new(
                    "SIDEKEY_LOG_FORMAT",
                    format!("{format:?} is neither \"plain\" nor \"json\""),
                ));
            }
        }
        let allow_legacy = match var(vars, "SIDEKEY_ALLOW_LEGACY").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "SIDEKEY_ALLOW_LEGACY",
                    format!("{other:?} is neither \"true\" nor \"false\""),
                ))
            }
        };
        let allow_loader_env = crate::loader::parse_allow_list(
            &var(vars, "SIDEKEY_ALLOW_LOADER_ENV").unwrap_or_default(),
        )
        .map_err(|e| ConfigError::new("SIDEKEY_ALLOW_LOADER_ENV", e))?;
        Ok(Config {
            allow_legacy,
            allow_loader_env,
            environment,
            inherit,
            services,
            picks,
            prefix,
            backend,
            kms_key,
            on_missing,
            timeout,
            audit,
            pod: var(vars, "SIDEKEY_POD"),
            namespace: var(vars, "SIDEKEY_NAMESPACE"),
            ca_file: var(vars, "SIDEKEY_CA_FILE").map(PathBuf::from),
            aws: AwsSettings {
                region: var(vars, "AWS_REGION").or_else(|| var(vars, "AWS_DEFAULT_REGION")),
                endpoint_url: var(vars, "AWS_ENDPOINT_URL"),
            },
        })
    }

    /// `SIDEKEY_*` variables that are set but not known to this agent.
    pub fn unknown_variables(vars: &dyn Vars) -> Vec<String> {
        let mut unknown: Vec<String> = vars
            .all()
            .into_iter()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("SIDEKEY_") && !KNOWN_VARIABLES.contains(&k.as_str()))
            .collect();
        unknown.sort();
        unknown
    }

    /// The pod's environment.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// Base environments, lowest precedence first.
    pub fn inherit(&self) -> &[Environment] {
        &self.inherit
    }

    /// Services, later ones win.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Explicit picks.
    pub fn picks(&self) -> &[Pick] {
        &self.picks
    }

    /// The parameter prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// `ssm` or `file:DIR`.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The KMS key passed to every Decrypt.
    pub fn kms_key(&self) -> &str {
        &self.kms_key
    }

    /// What a missing secret does.
    pub fn on_missing(&self) -> OnMissing {
        self.on_missing
    }

    /// The overall deadline of one fetch, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where audit records go.
    pub fn audit(&self) -> &AuditTarget {
        &self.audit
    }

    /// The pod's name, for audit records.
    pub fn pod(&self) -> Option<&str> {
        self.pod.as_deref()
    }

    /// The pod's namespace, for audit records.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// An extra PEM bundle of trusted CAs.
    pub fn ca_file(&self) -> Option<&PathBuf> {
        self.ca_file.as_ref()
    }

    /// Whether plain String parameters and legacy `sk1.` envelopes are
    /// read (`SIDEKEY_ALLOW_LEGACY=true`, for migrations).
    pub fn allow_legacy(&self) -> bool {
        self.allow_legacy
    }

    /// Loader variables the app may get from secrets
    /// (`SIDEKEY_ALLOW_LOADER_ENV`).
    pub fn allow_loader_env(&self) -> &[String] {
        &self.allow_loader_env
    }

    /// Region and endpoint for the AWS SDK (unset: its default chain).
    pub fn aws(&self) -> &AwsSettings {
        &self.aws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> MapVars {
        MapVars::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(&vars(&[
            ("SIDEKEY_ENVIRONMENT", "staging"),
            ("SIDEKEY_SERVICES", "api, web"),
        ]))
        .expect("valid");
        assert_eq!(c.environment().as_str(), "staging");
        assert_eq!(c.services().len(), 2);
        assert!(c.picks().is_empty());
        assert_eq!(c.prefix().as_str(), "sidekey");
        assert_eq!(c.backend(), &Backend::Ssm);
        assert_eq!(c.kms_key(), DEFAULT_KMS_KEY);
        assert_eq!(c.on_missing(), OnMissing::Fail);
        assert_eq!(c.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(c.audit(), &AuditTarget::Stdout);
    }

    #[test]
    fn unknown_variables_are_listed() {
        let v = vars(&[
            ("SIDEKEY_ENVIRONMENT", "x"),
            ("SIDEKEY_SERVICE", "typo"),
            ("PATH", "/bin"),
        ]);
        assert_eq!(Config::unknown_variables(&v), vec!["SIDEKEY_SERVICE"]);
    }
}
