//! The rule of every field: from the YAML document's raw shape to a
//! validated [`Config`], every error naming the field and the rule it
//! breaks.

use std::time::Duration;

use sidekey_model::annotations::{ChoiceError, Delivery, FilesFormat, OnMissing};
use sidekey_model::{Environment, NameError, Prefix};

use super::glob::check_glob;
use super::quantity::parse_quantity;
use super::raw::{RawConfig, RawList, RawRule};
use super::{
    Audit, Config, ConfigError, EnvironmentRule, PullPolicy, ResourceList, Resources, Store,
};
use crate::quote::Q;

/// A configuration from its YAML document: the fields it sets checked and
/// applied over the defaults.
pub(super) fn config(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut config = Config::default_for(None);
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
            check_glob(p).map_err(|m| ConfigError::field(format!("excludedNamespaces[{i}]"), m))?;
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

pub(super) fn check_token(s: &str, max: usize) -> Result<(), String> {
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
