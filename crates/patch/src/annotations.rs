//! Parsing a pod's `sidekey.io/*` annotations into [`Annotations`], with
//! every problem collected as a [`Denial`].

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sidekey_model::annotations::{
    self as names, ChoiceError, Delivery, FilesFormat, OnMissing, DEFAULT_FILES_PATH,
};
use sidekey_model::{parse_picks, parse_services, Pick, Service};

use crate::config::Defaults;
use crate::quote::{Name, Q};

/// The shortest accepted `sidekey.io/refresh`.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Where the agent binary is installed in every env-delivery container;
/// `files-path` may not be under it.
pub const AGENT_ROOT: &str = "/sidekey";

/// Why a pod is refused. `message` names the annotation (or container) and
/// the rule, says how to fix it, and never holds a value from the pod's env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The annotation at fault, when one is.
    pub annotation: Option<String>,
    /// One line for the user.
    pub message: String,
}

impl Denial {
    /// A denial about `annotation`.
    pub fn annotation(annotation: &str, message: impl Into<String>) -> Denial {
        Denial {
            annotation: Some(annotation.to_owned()),
            message: message.into(),
        }
    }

    /// A denial about the pod as a whole (a container, a volume...).
    pub fn pod(message: impl Into<String>) -> Denial {
        Denial {
            annotation: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A pod's parsed `sidekey.io/*` annotations, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotations {
    /// `sidekey.io/services`, in order (later ones win).
    pub services: Vec<Service>,
    /// `sidekey.io/secrets`.
    pub picks: Vec<Pick>,
    /// `sidekey.io/delivery`.
    pub delivery: Delivery,
    /// `sidekey.io/containers`; `None` = every app container.
    pub containers: Option<Vec<String>>,
    /// `sidekey.io/files-path`.
    pub files_path: String,
    /// `sidekey.io/files-format`.
    pub files_format: FilesFormat,
    /// `sidekey.io/refresh`; `None` = no refreshing sidecar.
    pub refresh: Option<Duration>,
    /// `sidekey.io/command`; empty (`[]`): the image has no ENTRYPOINT and
    /// each container's `args` are its command.
    pub command: Option<Vec<String>>,
    /// `sidekey.io/command.<container>` by container name: the same, for
    /// one container; it wins over `sidekey.io/command`.
    pub commands: BTreeMap<String, Vec<String>>,
    /// `sidekey.io/on-missing`.
    pub on_missing: OnMissing,
}

/// Whether the pod opts in: `sidekey.io/inject` is exactly `"true"`.
pub fn wants_injection<K, V>(annotations: &BTreeMap<K, V>) -> bool
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    annotations.get(names::INJECT).map(AsRef::as_ref) == Some("true")
}

/// Whether the injector already mutated the pod (`sidekey.io/injected` is
/// present, whatever its value).
pub fn is_injected<K, V>(annotations: &BTreeMap<K, V>) -> bool
where
    K: Borrow<str> + Ord,
{
    annotations.contains_key(names::INJECTED)
}

/// Annotations that would let a pod reach outside its environment or change
/// what the operator configured, with the reason shown to the user.
const FORBIDDEN: [(&str, &str); 8] = [
    (
        "environment",
        "a pod cannot choose its environment: the environment belongs to the namespace and is \
         set by the injector's configuration",
    ),
    (
        "inherit",
        "a pod cannot choose base environments: inheritance is set by the injector's \
         configuration",
    ),
    (
        "prefix",
        "a pod cannot choose the parameter prefix: it is set by the injector's configuration",
    ),
    (
        "store",
        "a pod cannot choose the store: it is set by the injector's configuration",
    ),
    (
        "kms-key",
        "a pod cannot choose the KMS key: it is set by the injector's configuration",
    ),
    (
        "region",
        "a pod cannot choose the AWS region: it is set by the injector's configuration",
    ),
    (
        "image",
        "a pod cannot choose the agent image: it is set by the injector's configuration",
    ),
    (
        "namespace",
        "a pod cannot choose a namespace: secrets come from its own namespace's environment",
    ),
];

fn suffix(key: &str) -> &str {
    key.strip_prefix(names::PREFIX).unwrap_or(key)
}

/// Levenshtein distance on bytes, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn unknown_key(key: &str) -> Denial {
    let given = suffix(key);
    let hint = if given.len() <= 64 {
        names::KNOWN
            .iter()
            .filter(|k| **k != names::INJECTED)
            .map(|k| (distance(given, suffix(k)), *k))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, k)| format!("did you mean {k}? "))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let known: Vec<&str> = names::KNOWN
        .iter()
        .filter(|k| **k != names::INJECTED)
        .copied()
        .collect();
    Denial::annotation(
        key,
        format!(
            "unknown annotation {}: sidekey refuses unknown sidekey.io/ annotations to catch \
             typos; {hint}the known ones are {}",
            Name(key),
            known.join(", ")
        ),
    )
}

fn choice_denial(annotation: &str, e: &ChoiceError) -> Denial {
    Denial::annotation(annotation, format!("annotation {annotation}: {e}"))
}

/// Parses a pod's annotations. Keys outside `sidekey.io/` are ignored;
/// `sidekey.io/inject` and the marker `sidekey.io/injected` are accepted
/// but not interpreted here. Every problem is reported, not just the first.
pub fn parse_annotations<K, V>(
    annotations: &BTreeMap<K, V>,
    defaults: &Defaults,
) -> Result<Annotations, Vec<Denial>>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    let mut denials = Vec::new();
    let get = |k: &str| annotations.get(k).map(AsRef::as_ref);

    for key in annotations.keys() {
        let key: &str = key.borrow();
        if !key.starts_with(names::PREFIX)
            || names::KNOWN.contains(&key)
            || key.starts_with(names::COMMAND_FOR)
        {
            continue;
        }
        match FORBIDDEN.iter().find(|(name, _)| *name == suffix(key)) {
            Some((_, why)) => denials.push(Denial::annotation(
                key,
                format!(
                    "annotation {key} is not allowed: {why}; remove it, and name services and \
                     keys inside the namespace's environment with {} or {}",
                    names::SERVICES,
                    names::SECRETS
                ),
            )),
            None => denials.push(unknown_key(key)),
        }
    }

    let services = match get(names::SERVICES).map(parse_services) {
        None => Vec::new(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            denials.push(Denial::annotation(
                names::SERVICES,
                format!("annotation {}: {e}", names::SERVICES),
            ));
            Vec::new()
        }
    };
    let picks = match get(names::SECRETS).map(parse_picks) {
        None => Vec::new(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            denials.push(Denial::annotation(
                names::SECRETS,
                format!("annotation {}: {e}", names::SECRETS),
            ));
            Vec::new()
        }
    };
    let lists_ok = !denials.iter().any(|d| {
        matches!(
            d.annotation.as_deref(),
            Some(names::SERVICES | names::SECRETS)
        )
    });
    if lists_ok && services.is_empty() && picks.is_empty() {
        denials.push(Denial::annotation(
            names::SERVICES,
            format!(
                "annotations {} and {} are both empty or absent: a pod that opts in with {} must \
                 name at least one service in {} (e.g. \"api,shared\") or pick keys in {} (e.g. \
                 \"DB_PASSWORD=db/PASSWORD\")",
                names::SERVICES,
                names::SECRETS,
                names::INJECT,
                names::SERVICES,
                names::SECRETS
            ),
        ));
    }

    let delivery_given = get(names::DELIVERY);
    let delivery = match delivery_given.map(Delivery::parse) {
        None => Some(defaults.delivery),
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            denials.push(choice_denial(names::DELIVERY, &e));
            None
        }
    };
    let files_format = match get(names::FILES_FORMAT).map(FilesFormat::parse) {
        None => defaults.files_format,
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            denials.push(choice_denial(names::FILES_FORMAT, &e));
            defaults.files_format
        }
    };
    let on_missing = match get(names::ON_MISSING).map(OnMissing::parse) {
        None => defaults.on_missing,
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            denials.push(choice_denial(names::ON_MISSING, &e));
            defaults.on_missing
        }
    };

    let containers = match get(names::CONTAINERS) {
        None => None,
        Some(list) => match parse_containers(list) {
            Ok(c) => Some(c),
            Err(m) => {
                denials.push(Denial::annotation(
                    names::CONTAINERS,
                    format!("annotation {}: {m}", names::CONTAINERS),
                ));
                None
            }
        },
    };

    let files_path = match get(names::FILES_PATH) {
        None => DEFAULT_FILES_PATH.to_owned(),
        Some(p) => match check_files_path(p) {
            Ok(()) => p.to_owned(),
            Err(m) => {
                denials.push(Denial::annotation(
                    names::FILES_PATH,
                    format!("annotation {} {}: {m}", names::FILES_PATH, Q(p)),
                ));
                DEFAULT_FILES_PATH.to_owned()
            }
        },
    };

    let refresh = match get(names::REFRESH) {
        None => None,
        Some(r) => match parse_refresh(r) {
            Ok(d) => {
                if delivery == Some(Delivery::Env) {
                    let how = if delivery_given.is_some() {
                        "is env"
                    } else {
                        "defaults to env"
                    };
                    denials.push(Denial::annotation(
                        names::REFRESH,
                        format!(
                            "annotation {}: refresh applies to files only, but {} {how}; set {} \
                             to files or both, or remove {} (environment variables are read \
                             once at start: restart the pod to pick up new versions)",
                            names::REFRESH,
                            names::DELIVERY,
                            names::DELIVERY,
                            names::REFRESH
                        ),
                    ));
                }
                Some(d)
            }
            Err(m) => {
                denials.push(Denial::annotation(
                    names::REFRESH,
                    format!("annotation {} {}: {m}", names::REFRESH, Q(r)),
                ));
                None
            }
        },
    };

    let command = match get(names::COMMAND) {
        None => None,
        Some(c) => match parse_command(c) {
            Ok(c) => Some(c),
            Err(m) => {
                denials.push(Denial::annotation(
                    names::COMMAND,
                    format!("annotation {}: {m}", names::COMMAND),
                ));
                None
            }
        },
    };

    let mut commands = BTreeMap::new();
    for (key, value) in annotations {
        let key: &str = key.borrow();
        let Some(container) = key.strip_prefix(names::COMMAND_FOR) else {
            continue;
        };
        if let Err(m) = check_container_name(container) {
            denials.push(Denial::annotation(
                key,
                format!(
                    "annotation {}: {m}; the key is {}<container> with the name of an app \
                     container, e.g. {}app",
                    Name(key),
                    names::COMMAND_FOR,
                    names::COMMAND_FOR
                ),
            ));
            continue;
        }
        match parse_command(value.as_ref()) {
            Ok(c) => {
                commands.insert(container.to_owned(), c);
            }
            Err(m) => denials.push(Denial::annotation(key, format!("annotation {key}: {m}"))),
        }
    }

    match delivery {
        Some(delivery) if denials.is_empty() => Ok(Annotations {
            services,
            picks,
            delivery,
            containers,
            files_path,
            files_format,
            refresh,
            command,
            commands,
            on_missing,
        }),
        _ => Err(denials),
    }
}

fn parse_containers(list: &str) -> Result<Vec<String>, String> {
    let trimmed = list.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(
            "it names no container; list container names separated by commas, or remove the \
             annotation to inject into every app container"
                .into(),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in trimmed.split(',').enumerate() {
        let name = item.trim_matches(|c: char| c.is_ascii_whitespace());
        if name.is_empty() {
            return Err(format!(
                "item {} of {} is empty (a stray or trailing comma?)",
                i + 1,
                Q(list)
            ));
        }
        if out.iter().any(|n| n == name) {
            return Err(format!("container {} is listed twice", Q(name)));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// The `files-path` rule: absolute, normalised, not `/`, not under
/// [`AGENT_ROOT`], plain characters.
fn check_files_path(p: &str) -> Result<(), String> {
    const RULE: &str = "it must be an absolute, normalised path (no \"..\" or \".\" segments, no \
                        \"//\", no trailing '/'), not \"/\" and not under /sidekey, made of \
                        letters, digits, '.', '_', '-' and '/'";
    let problem = if !p.starts_with('/') {
        Some("it is not absolute")
    } else if p == "/" {
        Some("it is the root directory")
    } else if p.contains("//") {
        Some("it contains \"//\"")
    } else if p.ends_with('/') {
        Some("it ends with '/'")
    } else if p.split('/').any(|s| s == ".." || s == ".") {
        Some("it has a \"..\" or \".\" segment")
    } else if p == AGENT_ROOT || p.starts_with("/sidekey/") {
        Some("it is under /sidekey, where the agent is installed")
    } else if p.len() > 1024 {
        Some("it is longer than 1024 characters")
    } else if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        Some("it has a character other than letters, digits, '.', '_', '-' and '/'")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!("{why}; {RULE}")),
        None => Ok(()),
    }
}

fn parse_refresh(r: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(r.trim_matches(|c: char| c.is_ascii_whitespace())).map_err(
        |e| format!("it is not a duration such as \"5m\" or \"30s\" ({e}); the minimum is 10s"),
    )?;
    if d < MIN_REFRESH {
        return Err(format!(
            "the refresh interval {} is below the minimum of 10s",
            humantime::format_duration(d)
        ));
    }
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err("the refresh interval is above the maximum of 7 days".into());
    }
    Ok(d)
}

/// A container name as Kubernetes allows it (a DNS label: lower-case
/// letters, digits and '-', 1 to 63, starting and ending alphanumeric).
fn check_container_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else if name.is_empty() {
        Err("it names no container".into())
    } else {
        Err(format!(
            "{} is not a container name (lower-case letters, digits and '-', at most 63)",
            Q(name)
        ))
    }
}

/// A JSON array of strings. `[]` says the image has no ENTRYPOINT (the
/// container's `args` are the whole command); otherwise the first element,
/// the program, may not be empty.
fn parse_command(c: &str) -> Result<Vec<String>, String> {
    const EXAMPLE: &str = "e.g. [\"/app/server\",\"--port\",\"8080\"], or [] when the image has \
                           no ENTRYPOINT and the container's args are the command";
    let cmd: Vec<String> = serde_json::from_str(c)
        .map_err(|e| format!("it must be a JSON array of strings, {EXAMPLE}; it is not ({e})"))?;
    match cmd.first() {
        Some(first) if first.is_empty() => Err(format!(
            "its first element (the program) is empty; {EXAMPLE}"
        )),
        _ => Ok(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_works() {
        assert_eq!(distance("servics", "services"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
    }

    #[test]
    fn files_paths() {
        for ok in [
            "/run/secrets/sidekey",
            "/etc/app",
            "/sidekeyx",
            "/a.b/c_d-e",
        ] {
            assert!(check_files_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "run",
            "/",
            "/a//b",
            "/a/",
            "/a/../b",
            "/a/./b",
            "/sidekey",
            "/sidekey/x",
            "/a b",
            "/a:b",
            "/é",
        ] {
            assert!(check_files_path(bad).is_err(), "{bad}");
        }
    }
}
