//! The injector's configuration: one YAML document, every field optional,
//! unknown fields rejected. See `CONFIG.md` beside `Cargo.toml`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use sidekey_model::annotations::{ChoiceError, Delivery, FilesFormat, OnMissing};
use sidekey_model::{Environment, NameError, Prefix};

use crate::quote::Q;

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

/// What every plan reuses, computed once per configuration.
#[derive(Debug, Clone, Default)]
struct Cache {
    timeout_text: String,
    /// `"image":…,"imagePullPolicy":…,["resources":…,]"terminationMessagePolicy":…`
    container_base: String,
    /// The JSON text of each `SIDEKEY_*` env entry that does not depend on
    /// the pod, in order.
    fixed_env: Vec<String>,
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
    fn rebuild(&mut self) {
        let timeout_text = humantime::format_duration(self.timeout).to_string();
        // serde_json renders (and escapes) what comes from the
        // configuration, once.
        let text = |v: serde_json::Value| v.to_string();
        let mut base = format!(
            "\"image\":{},\"imagePullPolicy\":{}",
            text(json!(self.agent_image)),
            text(json!(self.image_pull_policy.as_str()))
        );
        if let Some(r) = self.resources.to_json() {
            base.push_str(",\"resources\":");
            base.push_str(&text(r));
        }
        base.push_str(",\"terminationMessagePolicy\":\"FallbackToLogsOnError\"");
        let value = |name: &str, value: &str| text(json!({"name": name, "value": value}));
        let field = |name: &str, path: &str| {
            text(
                json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}),
            )
        };
        let fixed_env = vec![
            value("SIDEKEY_PREFIX", self.prefix.as_str()),
            value("SIDEKEY_STORE", &self.store.to_string()),
            value("SIDEKEY_KMS_KEY", &self.kms_key),
            value("SIDEKEY_TIMEOUT", &timeout_text),
            value("SIDEKEY_AUDIT", &self.audit.to_string()),
            field("SIDEKEY_POD", "metadata.name"),
            field("SIDEKEY_NAMESPACE", "metadata.namespace"),
            // Read by the agent, never chosen by a pod: set empty (the
            // agent's defaults: the bundled CA roots only, log level warn,
            // plain format), so no envFrom source can supply them.
            value("SIDEKEY_CA_FILE", ""),
            value("SIDEKEY_LOG", ""),
            value("SIDEKEY_LOG_FORMAT", ""),
            value("SIDEKEY_AUDIT_LOG", ""),
            value("SIDEKEY_ACTOR", ""),
        ];
        self.cache = Cache {
            timeout_text,
            container_base: base,
            fixed_env,
        };
    }

    /// The JSON text of an injected container's image, pull policy,
    /// resources and termination message policy (object members, no
    /// braces).
    pub(crate) fn container_base(&self) -> &str {
        &self.cache.container_base
    }

    /// The `SIDEKEY_*` env entries that do not depend on the pod, as JSON
    /// text, in order.
    pub(crate) fn fixed_env(&self) -> &[String] {
        &self.cache.fixed_env
    }

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    prefix: Option<String>,
    store: Option<String>,
    kms_key: Option<String>,
    region: Option<String>,
    agent_image: Option<String>,
    image_pull_policy: Option<String>,
    timeout: Option<String>,
    audit: Option<String>,
    excluded_namespaces: Option<Vec<String>>,
    environments: Option<Vec<RawRule>>,
    resources: Option<RawResources>,
    files_size_limit: Option<String>,
    defaults: Option<RawDefaults>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    namespaces: String,
    environment: Option<String>,
    inherit: Option<Vec<String>>,
    allow_legacy_values: Option<bool>,
    allow_loader_env: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawResources {
    requests: Option<RawList>,
    limits: Option<RawList>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawList {
    cpu: Option<String>,
    memory: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDefaults {
    delivery: Option<String>,
    files_format: Option<String>,
    on_missing: Option<String>,
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
        let raw: Option<RawConfig> = serde_norway::from_str(text).map_err(ConfigError::Yaml)?;
        let mut config = Config::default_for(None);
        let Some(raw) = raw else {
            return Ok(config);
        };
        let s = &mut config.settings;
        if let Some(p) = raw.prefix {
            s.prefix = Prefix::parse(&p).map_err(|e| ConfigError::field("prefix", e))?;
        }
        if let Some(store) = raw.store {
            s.store = parse_store(&store).map_err(|m| ConfigError::field("store", m))?;
        }
        if let Some(k) = raw.kms_key {
            check_token(&k, 2048).map_err(|m| {
                ConfigError::field(
                    "kmsKey",
                    format!("{m}; give a KMS key id, key ARN, alias name or alias ARN"),
                )
            })?;
            s.kms_key = k;
        }
        if let Some(r) = raw.region {
            check_region(&r).map_err(|m| ConfigError::field("region", m))?;
            s.region = Some(r);
        }
        if let Some(image) = raw.agent_image {
            check_token(&image, 1024).map_err(|m| {
                ConfigError::field("agentImage", format!("{m}; give an image reference"))
            })?;
            s.agent_image = image;
        }
        if let Some(p) = raw.image_pull_policy {
            s.image_pull_policy = match p.as_str() {
                "Always" => PullPolicy::Always,
                "IfNotPresent" => PullPolicy::IfNotPresent,
                "Never" => PullPolicy::Never,
                _ => {
                    return Err(ConfigError::field(
                        "imagePullPolicy",
                        format!("{} must be one of Always, IfNotPresent, Never", Q(&p)),
                    ))
                }
            };
        }
        if let Some(t) = raw.timeout {
            let d = humantime::parse_duration(t.trim()).map_err(|e| {
                ConfigError::field(
                    "timeout",
                    format!("{} is not a duration such as \"30s\" or \"1m\": {e}", Q(&t)),
                )
            })?;
            if d < Duration::from_secs(1) {
                return Err(ConfigError::field(
                    "timeout",
                    format!("{} is below the minimum of 1s", Q(&t)),
                ));
            }
            s.timeout = d;
        }
        if let Some(a) = raw.audit {
            s.audit = parse_audit(&a).map_err(|m| ConfigError::field("audit", m))?;
        }
        if let Some(r) = raw.resources {
            if let Some(list) = r.requests {
                s.resources.requests = parse_list(list, "resources.requests")?;
            }
            if let Some(list) = r.limits {
                s.resources.limits = parse_list(list, "resources.limits")?;
            }
            check_requests_within_limits(&s.resources)?;
        }
        if let Some(q) = raw.files_size_limit {
            match parse_quantity(&q) {
                Some(v) if v > 0.0 => s.files_size_limit = q,
                _ => {
                    return Err(ConfigError::field(
                        "filesSizeLimit",
                        format!(
                            "{} is not a positive Kubernetes quantity such as \"1Mi\"",
                            Q(&q)
                        ),
                    ))
                }
            }
        }
        if let Some(d) = raw.defaults {
            let choice = |field: &str, e: ChoiceError| ConfigError::field(field, e);
            if let Some(v) = d.delivery {
                s.defaults.delivery =
                    Delivery::parse(&v).map_err(|e| choice("defaults.delivery", e))?;
            }
            if let Some(v) = d.files_format {
                s.defaults.files_format =
                    FilesFormat::parse(&v).map_err(|e| choice("defaults.filesFormat", e))?;
            }
            if let Some(v) = d.on_missing {
                s.defaults.on_missing =
                    OnMissing::parse(&v).map_err(|e| choice("defaults.onMissing", e))?;
            }
        }
        if let Some(list) = raw.excluded_namespaces {
            for (i, p) in list.iter().enumerate() {
                check_glob(p)
                    .map_err(|m| ConfigError::field(format!("excludedNamespaces[{i}]"), m))?;
            }
            config.excluded = list;
        }
        if let Some(rules) = raw.environments {
            config.rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| parse_rule(i, r))
                .collect::<Result<_, _>>()?;
        }
        config.settings.rebuild();
        Ok(config)
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

    /// The first `environments` rule matching `namespace`, if any.
    pub fn rule_for(&self, namespace: &str) -> Option<&EnvironmentRule> {
        self.rules.iter().find(|r| glob(&r.namespaces, namespace))
    }

    /// What the agent of `namespace`'s pods may accept (its rule's
    /// `allowLegacyValues` and `allowLoaderEnv`; nothing without a rule).
    pub fn agent_policy(&self, namespace: &str) -> AgentPolicy<'_> {
        self.rule_for(namespace)
            .map(|r| AgentPolicy {
                allow_legacy_values: r.allow_legacy_values,
                allow_loader_env: &r.allow_loader_env,
            })
            .unwrap_or_default()
    }

    /// Which environment `namespace` maps to: excluded namespaces first,
    /// then the first matching rule, else the namespace name itself.
    pub fn resolve(&self, namespace: &str) -> Resolution {
        if self.own_namespace.as_deref() == Some(namespace) {
            return Resolution::Excluded {
                reason: format!(
                    "namespace {} is the injector's own namespace, which is never mutated",
                    Q(namespace)
                ),
            };
        }
        if let Some(p) = self.excluded.iter().find(|p| glob(p, namespace)) {
            return Resolution::Excluded {
                reason: format!(
                    "namespace {} is excluded by the injector's configuration \
                     (excludedNamespaces: {})",
                    Q(namespace),
                    Q(p)
                ),
            };
        }
        let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| glob(&r.namespaces, namespace))
        else {
            return match Environment::parse(namespace) {
                Ok(environment) => Resolution::Environment {
                    environment,
                    inherit: Vec::new(),
                },
                Err(e) => Resolution::Invalid {
                    reason: format!(
                        "namespace {} is not a valid environment name ({e}); an operator can \
                         map it with an environments rule of the injector configuration",
                        Q(namespace)
                    ),
                },
            };
        };
        let name = match &rule.environment {
            Some(t) => t.replace("{namespace}", namespace),
            None => namespace.to_owned(),
        };
        match Environment::parse(&name) {
            Ok(environment) => {
                let mut inherit: Vec<Environment> = Vec::with_capacity(rule.inherit.len());
                for base in &rule.inherit {
                    if *base != environment && !inherit.contains(base) {
                        inherit.push(base.clone());
                    }
                }
                Resolution::Environment {
                    environment,
                    inherit,
                }
            }
            Err(e) => Resolution::Invalid {
                reason: format!(
                    "namespace {} maps to environment {} through environments[{i}] (namespaces \
                     {}) of the injector configuration, and that is not a valid environment: \
                     {e}",
                    Q(namespace),
                    Q(&name),
                    Q(&rule.namespaces)
                ),
            },
        }
    }
}

fn parse_rule(i: usize, r: RawRule) -> Result<EnvironmentRule, ConfigError> {
    let at = |f: &str| format!("environments[{i}].{f}");
    check_glob(&r.namespaces).map_err(|m| ConfigError::field(at("namespaces"), m))?;
    let environment = match r.environment {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) => {
            check_template(&t).map_err(|m| ConfigError::field(at("environment"), m))?;
            Some(t)
        }
    };
    let mut inherit: Vec<Environment> = Vec::new();
    for (j, base) in r.inherit.unwrap_or_default().iter().enumerate() {
        let env = Environment::parse(base)
            .map_err(|e| ConfigError::field(at(&format!("inherit[{j}]")), e))?;
        if inherit.contains(&env) {
            return Err(ConfigError::field(
                at(&format!("inherit[{j}]")),
                format!("environment {} is listed twice", Q(base)),
            ));
        }
        inherit.push(env);
    }
    let mut allow_loader_env: Vec<String> = Vec::new();
    for (j, name) in r
        .allow_loader_env
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = at(&format!("allowLoaderEnv[{j}]"));
        check_env_name(&name).map_err(|m| ConfigError::field(&field, m))?;
        if allow_loader_env.contains(&name) {
            return Err(ConfigError::field(
                field,
                format!("variable {} is listed twice", Q(&name)),
            ));
        }
        allow_loader_env.push(name);
    }
    Ok(EnvironmentRule {
        namespaces: r.namespaces,
        environment,
        inherit,
        allow_legacy_values: r.allow_legacy_values.unwrap_or(false),
        allow_loader_env,
    })
}

/// An environment variable name the agent may be allowed to set: a key
/// name (letters, digits and `_`, not starting with a digit, at most 128
/// characters), not a `SIDEKEY_*` one. Whether it is one of the loader
/// variables the agent refuses is the agent's to say (it exits 64 naming
/// `SIDEKEY_ALLOW_LOADER_ENV` otherwise): the list lives in one place.
fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(format!(
            "{} is not an environment variable name: letters, digits and '_', not starting \
             with a digit, at most 128 characters",
            Q(name)
        ));
    }
    if name.starts_with("SIDEKEY_") {
        return Err(format!(
            "{} is one of the agent's own settings, never a secret's name",
            Q(name)
        ));
    }
    Ok(())
}

/// An environment template: lower-case letters, digits, `-` and
/// `{namespace}`; without the placeholder it must be an environment.
fn check_template(t: &str) -> Result<(), String> {
    let rest = t.replace("{namespace}", "");
    if let Some(c) = rest
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{} has {}: an environment template is lower-case letters, digits, '-' and the \
             placeholder {{namespace}}",
            Q(t),
            Q(&c.to_string())
        ));
    }
    if !t.contains("{namespace}") {
        Environment::parse(t).map_err(|e: NameError| e.to_string())?;
    }
    Ok(())
}

/// A namespace glob: lower-case letters, digits, `-` and `*`.
fn check_glob(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("the namespace pattern is empty".into());
    }
    if p.len() > 63 {
        return Err(format!(
            "the namespace pattern {} is longer than 63 characters",
            Q(p)
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*')))
    {
        return Err(format!(
            "the namespace pattern {} has {}: a pattern is lower-case letters, digits, '-' and \
             '*' (any run of characters), matched against the whole namespace name",
            Q(p),
            Q(&c.to_string())
        ));
    }
    Ok(())
}

/// Whole-string match where `*` matches any run of characters (also none).
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

fn check_token(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{} has {}: only printable ASCII without spaces is allowed",
            Q(s),
            Q(&c.to_string())
        ));
    }
    Ok(())
}

fn check_region(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an AWS region name such as \"eu-west-1\"",
            Q(r)
        ))
    }
}

fn parse_store(s: &str) -> Result<Store, String> {
    if s == "ssm" {
        return Ok(Store::Ssm);
    }
    match s.strip_prefix("file:") {
        Some(p) if p.starts_with('/') && check_token(p, 4096).is_ok() => Ok(Store::File(p.into())),
        _ => Err(format!(
            "{} must be \"ssm\" or \"file:\" followed by an absolute path",
            Q(s)
        )),
    }
}

fn parse_audit(s: &str) -> Result<Audit, String> {
    match s {
        "stdout" => Ok(Audit::Stdout),
        "stderr" => Ok(Audit::Stderr),
        _ => match s.strip_prefix("file:") {
            Some(p) if p.starts_with('/') && check_token(p, 4096).is_ok() => {
                Ok(Audit::File(p.into()))
            }
            _ => Err(format!(
                "{} must be \"stdout\", \"stderr\" or \"file:\" followed by an absolute path",
                Q(s)
            )),
        },
    }
}

fn parse_list(raw: RawList, field: &str) -> Result<ResourceList, ConfigError> {
    for (name, v) in [("cpu", &raw.cpu), ("memory", &raw.memory)] {
        if let Some(v) = v {
            if parse_quantity(v).is_none() {
                return Err(ConfigError::field(
                    format!("{field}.{name}"),
                    format!(
                        "{} is not a Kubernetes quantity such as \"10m\", \"0.5\", \"16Mi\" \
                         or \"1G\"",
                        Q(v)
                    ),
                ));
            }
        }
    }
    Ok(ResourceList {
        cpu: raw.cpu,
        memory: raw.memory,
    })
}

fn check_requests_within_limits(r: &Resources) -> Result<(), ConfigError> {
    for (name, req, lim) in [
        ("cpu", &r.requests.cpu, &r.limits.cpu),
        ("memory", &r.requests.memory, &r.limits.memory),
    ] {
        if let (Some(req), Some(lim)) = (req, lim) {
            let (rv, lv) = (parse_quantity(req), parse_quantity(lim));
            if let (Some(rv), Some(lv)) = (rv, lv) {
                if rv > lv {
                    return Err(ConfigError::field(
                        format!("resources.requests.{name}"),
                        format!(
                            "the request {} is above the limit {}; Kubernetes refuses such pods",
                            Q(req),
                            Q(lim)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The value of a Kubernetes quantity in base units: decimal digits with an
/// optional fraction and an optional suffix (`n u m k M G T P E Ki Mi Gi Ti
/// Pi Ei`). Signs and exponents are not accepted here.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mut parts = num.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    if int.is_empty() && frac.is_none_or(str::is_empty) {
        return None;
    }
    if frac.is_some_and(|f| f.contains('.')) {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("pr-*", "pr-12"));
        assert!(glob("pr-*", "pr-"));
        assert!(!glob("pr-*", "xpr-1"));
        assert!(glob("*-dev", "alice-dev"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("prod", "prod"));
        assert!(!glob("prod", "prod2"));
        assert!(glob("*", ""));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10m"), Some(0.01));
        assert_eq!(parse_quantity("16Mi"), Some(16.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        for bad in ["", "Mi", "1.2.3", "-1", "1 Mi", "1mi", ".", "1e3"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
