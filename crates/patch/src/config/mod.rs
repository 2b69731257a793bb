//! The injector's configuration: one YAML document, every field optional,
//! unknown fields rejected. See `CONFIG.md` beside `Cargo.toml`.
//!
//! This file holds the public types and the entry point
//! ([`Config::from_yaml`]); beside it:
//!
//! - `raw.rs`: the YAML document's shape, as serde reads it;
//! - `validate.rs`: the rule of every field, from the raw shape to a
//!   [`Config`];
//! - `resolve.rs`: which environment a namespace maps to;
//! - `glob.rs`: namespace patterns (their syntax and matching);
//! - `quantity.rs`: Kubernetes quantities (`10m`, `16Mi`);
//! - `cache.rs`: the JSON text every plan reuses, rendered once per
//!   configuration.

mod cache;
mod glob;
mod quantity;
mod raw;
mod resolve;
mod validate;

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use sidekey_model::annotations::{Delivery, FilesFormat, OnMissing};
use sidekey_model::{Environment, Prefix};

use cache::Cache;
pub(crate) use quantity::parse_quantity;
use validate::check_token;

/// The agent image used when the configuration names none: the image of the
/// same release.
pub const DEFAULT_AGENT_IMAGE: &str = concat!("sidekey/agent:", env!("CARGO_PKG_VERSION"));

/// Namespaces excluded when the configuration names none (the injector's own
/// namespace is always added).
pub const DEFAULT_EXCLUDED: [&str; 2] = ["kube-system", "kube-public"];

/// Bad configuration. Every message names the field (or the YAML line and
/// column) and the rule it breaks.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML of the expected shape (unknown field, wrong
    /// type...). The message carries the field path, line and column.
    #[error("invalid injector configuration: {0}")]
    Yaml(#[source] serde_norway::Error),
    /// A field has the right type but breaks its rule.
    #[error("invalid injector configuration: field {field}: {message}")]
    Field {
        /// The field path, e.g. `environments[1].inherit[0]`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// The field path for [`ConfigError::Field`], `None` for YAML errors.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            ConfigError::Yaml(_) => None,
        }
    }

    /// The 1-based line for YAML errors, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Yaml(e) => e.location().map(|l| l.line()),
            ConfigError::Field { .. } => None,
        }
    }
}

/// Where the agent reads parameters (`SIDEKEY_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// AWS SSM Parameter Store.
    Ssm,
    /// The embedded local store at this path (tests and demos).
    File(String),
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Ssm => f.write_str("ssm"),
            Store::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// Where the agent writes audit records (`SIDEKEY_AUDIT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audit {
    /// Standard output (collected with the pod's logs).
    Stdout,
    /// Standard error.
    Stderr,
    /// A file at this absolute path.
    File(String),
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Audit::Stdout => f.write_str("stdout"),
            Audit::Stderr => f.write_str("stderr"),
            Audit::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// `imagePullPolicy` of the injected containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// `Always`.
    Always,
    /// `IfNotPresent`.
    IfNotPresent,
    /// `Never`.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// CPU and memory of one side (requests or limits) of the injected
/// containers' resources, as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceList {
    /// e.g. `10m`.
    pub cpu: Option<String>,
    /// e.g. `16Mi`.
    pub memory: Option<String>,
}

impl ResourceList {
    fn to_json(&self) -> Option<Value> {
        let mut map = serde_json::Map::new();
        if let Some(cpu) = &self.cpu {
            map.insert("cpu".into(), Value::String(cpu.clone()));
        }
        if let Some(memory) = &self.memory {
            map.insert("memory".into(), Value::String(memory.clone()));
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }
}

/// Resources of every injected container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Requests.
    pub requests: ResourceList,
    /// Limits.
    pub limits: ResourceList,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            requests: ResourceList {
                cpu: Some("10m".into()),
                memory: Some("16Mi".into()),
            },
            limits: ResourceList {
                cpu: Some("200m".into()),
                memory: Some("64Mi".into()),
            },
        }
    }
}

impl Resources {
    /// The `resources` object of a container, `None` when both sides are
    /// empty.
    pub fn to_json(&self) -> Option<Value> {
        let mut map = serde_json::Map::new();
        if let Some(r) = self.requests.to_json() {
            map.insert("requests".into(), r);
        }
        if let Some(l) = self.limits.to_json() {
            map.insert("limits".into(), l);
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }
}

/// Defaults for the annotations a pod leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `sidekey.io/delivery`, `env` unless configured.
    pub delivery: Delivery,
    /// `sidekey.io/files-format`, `per-key` unless configured.
    pub files_format: FilesFormat,
    /// `sidekey.io/on-missing`, `fail` unless configured.
    pub on_missing: OnMissing,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            delivery: Delivery::Env,
            files_format: FilesFormat::PerKey,
            on_missing: OnMissing::Fail,
        }
    }
}

/// Everything the planner needs besides the namespace mapping: what the
/// agent is told and how injected containers look. Validated, read-only.
#[derive(Debug, Clone)]
pub struct Settings {
    prefix: Prefix,
    store: Store,
    kms_key: String,
    region: Option<String>,
    agent_image: String,
    image_pull_policy: PullPolicy,
    timeout: Duration,
    audit: Audit,
    resources: Resources,
    files_size_limit: String,
    defaults: Defaults,
    cache: Cache,
}

impl Default for Settings {
    fn default() -> Self {
        let timeout = Duration::from_secs(30);
        let mut s = Settings {
            prefix: Prefix::default(),
            store: Store::Ssm,
            kms_key: "alias/sidekey".into(),
            region: None,
            agent_image: DEFAULT_AGENT_IMAGE.into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            timeout,
            audit: Audit::Stdout,
            resources: Resources::default(),
            files_size_limit: "1Mi".into(),
            defaults: Defaults::default(),
            cache: Cache::default(),
        };
        s.rebuild();
        s
    }
}

impl Settings {
    /// `SIDEKEY_PREFIX`.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }
    /// `SIDEKEY_STORE`.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// `SIDEKEY_KMS_KEY`.
    pub fn kms_key(&self) -> &str {
        &self.kms_key
    }
    /// `AWS_REGION` of injected containers, when configured.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
    /// The agent image.
    pub fn agent_image(&self) -> &str {
        &self.agent_image
    }
    /// `imagePullPolicy` of injected containers.
    pub fn image_pull_policy(&self) -> PullPolicy {
        self.image_pull_policy
    }
    /// `SIDEKEY_TIMEOUT`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// `SIDEKEY_TIMEOUT` as the agent receives it (humantime, e.g. `30s`).
    pub fn timeout_text(&self) -> &str {
        &self.cache.timeout_text
    }
    /// `SIDEKEY_AUDIT`.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
    /// Resources of injected containers.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
    /// `sizeLimit` of the `sidekey-secrets` volume.
    pub fn files_size_limit(&self) -> &str {
        &self.files_size_limit
    }
    /// Defaults for annotations a pod leaves out.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }
}

/// One `environments` rule: namespaces matching `namespaces` map to an
/// environment and inherit from bases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRule {
    namespaces: String,
    environment: Option<String>,
    inherit: Vec<Environment>,
    allow_legacy_values: bool,
    allow_loader_env: Vec<String>,
}

impl EnvironmentRule {
    /// The namespace glob (`*` matches any run of characters).
    pub fn namespaces(&self) -> &str {
        &self.namespaces
    }
    /// The environment template (`{namespace}` replaced), `None` for the
    /// namespace name itself.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }
    /// Base environments, lowest precedence first.
    pub fn inherit(&self) -> &[Environment] {
        &self.inherit
    }
    /// `allowLegacyValues`: the agent accepts plain `String` parameters
    /// and old envelopes (`SIDEKEY_ALLOW_LEGACY=true`), for migrations.
    pub fn allow_legacy_values(&self) -> bool {
        self.allow_legacy_values
    }
    /// `allowLoaderEnv`: process-loading variables (such as `NODE_OPTIONS`)
    /// the agent may set from secrets (`SIDEKEY_ALLOW_LOADER_ENV`).
    pub fn allow_loader_env(&self) -> &[String] {
        &self.allow_loader_env
    }
}

/// What the agent of a namespace's pods may accept beyond the defaults
/// (from its `environments` rule; nothing without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentPolicy<'a> {
    /// `SIDEKEY_ALLOW_LEGACY`.
    pub allow_legacy_values: bool,
    /// `SIDEKEY_ALLOW_LOADER_ENV`.
    pub allow_loader_env: &'a [String],
}

/// Which environment a namespace maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The namespace is never mutated.
    Excluded {
        /// Why, for the log and the audit record.
        reason: String,
    },
    /// Pods of the namespace get this environment.
    Environment {
        /// The environment.
        environment: Environment,
        /// Its bases, lowest precedence first; never contains `environment`
        /// and never repeats.
        inherit: Vec<Environment>,
    },
    /// The mapping gives no valid environment: pods that opt in are denied.
    Invalid {
        /// What is wrong, naming the namespace and the rule.
        reason: String,
    },
}

/// The injector's configuration: settings plus namespace scoping.
#[derive(Debug, Clone)]
pub struct Config {
    settings: Settings,
    excluded: Vec<String>,
    own_namespace: Option<String>,
    rules: Vec<EnvironmentRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config::default_for(None)
    }
}

impl Config {
    /// Every default; `injector_namespace` (where the injector runs) is
    /// excluded besides `kube-system` and `kube-public`.
    pub fn default_for(injector_namespace: Option<&str>) -> Config {
        Config {
            settings: Settings::default(),
            excluded: DEFAULT_EXCLUDED.iter().map(|s| (*s).to_owned()).collect(),
            own_namespace: injector_namespace.map(str::to_owned),
            rules: Vec::new(),
        }
    }

    /// Parses and validates the YAML configuration. An empty document (or
    /// one with only comments) is every default. The injector's own
    /// namespace is added with [`Config::with_injector_namespace`].
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: Option<raw::RawConfig> =
            serde_norway::from_str(text).map_err(ConfigError::Yaml)?;
        match raw {
            None => Ok(Config::default_for(None)),
            Some(raw) => validate::config(raw),
        }
    }

    /// Adds the namespace the injector runs in to the excluded ones.
    pub fn with_injector_namespace(mut self, namespace: &str) -> Config {
        self.own_namespace = Some(namespace.to_owned());
        self
    }

    /// Replaces the agent image (the injector's `--agent-image`).
    pub fn with_agent_image(mut self, image: &str) -> Result<Config, ConfigError> {
        check_token(image, 1024).map_err(|m| {
            ConfigError::field("agentImage", format!("{m}; give an image reference"))
        })?;
        self.settings.agent_image = image.to_owned();
        self.settings.rebuild();
        Ok(self)
    }

    /// The settings given to the planner.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The excluded namespace patterns (the injector's own namespace is
    /// excluded besides these).
    pub fn excluded_namespaces(&self) -> &[String] {
        &self.excluded
    }

    /// The injector's own namespace, when known.
    pub fn injector_namespace(&self) -> Option<&str> {
        self.own_namespace.as_deref()
    }

    /// The environment rules, first match wins.
    pub fn environment_rules(&self) -> &[EnvironmentRule] {
        &self.rules
    }
}
