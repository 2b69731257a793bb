//! Command-line options (each also from a `SIDEKEY_INJECTOR_*` variable) and
//! the validated settings built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sidekey_patch::Config;

use crate::audit::{AuditTarget, AuditTargetError};

/// `sidekey-injector --listen ADDR --tls-cert FILE --tls-key FILE [--client-ca FILE] [--config FILE] [--agent-image IMAGE]`
#[derive(Debug, Clone, Parser)]
#[command(name = "sidekey-injector", version, about, long_about = None)]
pub struct Args {
    /// Address to serve HTTPS on, e.g. `0.0.0.0:8443` (port 0 picks a free one).
    #[arg(long, env = "SIDEKEY_INJECTOR_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Also serve `/healthz`, `/readyz` and `/metrics` (nothing else) over
    /// plain HTTP on this address, e.g. `0.0.0.0:9090`: for the kubelet's
    /// probes and Prometheus, which have no client certificate.
    #[arg(long, env = "SIDEKEY_INJECTOR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// PEM certificate chain, leaf first; reloaded when the file changes.
    /// Required unless `--self-managed-tls` (which serves from memory and
    /// refuses these two).
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_TLS_CERT",
        value_name = "FILE",
        required_unless_present = "self_managed_tls",
        conflicts_with = "self_managed_tls",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the certificate; reloaded when the file changes.
    /// Required unless `--self-managed-tls`.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_TLS_KEY",
        value_name = "FILE",
        required_unless_present = "self_managed_tls",
        conflicts_with = "self_managed_tls",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of CA certificates: every caller must present a client
    /// certificate chaining to it (the API server's webhook client
    /// certificate), or the TLS handshake fails. Reloaded with the serving
    /// certificate. Without it, anyone who reaches the port can submit reviews.
    #[arg(long, env = "SIDEKEY_INJECTOR_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// Most open connections (TLS handshakes included); a connection over it
    /// is accepted and closed at once.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_MAX_CONNECTIONS",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Most review body bytes held at once, across all requests (a `Ki`,
    /// `Mi` or `Gi` suffix allowed; at least 3Mi, the largest body). A review
    /// is counted at its Content-Length (3 MiB without one) before any of it
    /// is read; one that does not fit is answered 503.
    #[arg(long, env = "SIDEKEY_INJECTOR_BODY_BUDGET", default_value = "16Mi",
          value_parser = parse_bytes, value_name = "BYTES")]
    pub body_budget: usize,

    /// Longest TLS handshake, wait for a request's headers, and request
    /// (its whole body read included: 408 past it).
    #[arg(long, env = "SIDEKEY_INJECTOR_READ_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub read_timeout: Duration,

    /// A connection with no request in flight for this long is closed
    /// (HTTP/2: GOAWAY; HTTP/1.1 idle connections close after
    /// `--read-timeout` already).
    #[arg(long, env = "SIDEKEY_INJECTOR_IDLE_TIMEOUT", default_value = "20s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// YAML configuration (unknown fields rejected); every default applies without it.
    #[arg(long, env = "SIDEKEY_INJECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Agent image for the injected containers (overrides the configuration's).
    #[arg(long, env = "SIDEKEY_INJECTOR_AGENT_IMAGE", value_name = "IMAGE")]
    pub agent_image: Option<String>,

    /// The injector's own namespace (downward API), excluded from injection.
    #[arg(long = "namespace", env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Where audit records go: `stdout`, `stderr` or `file:PATH`.
    #[arg(
        long,
        env = "SIDEKEY_AUDIT",
        default_value = "stdout",
        value_name = "TARGET"
    )]
    pub audit: String,

    /// Most audit records waiting to be written; while that many wait (the
    /// audit output is stalled or slow), reviews are answered 503 at once.
    #[arg(long, env = "SIDEKEY_INJECTOR_AUDIT_QUEUE", default_value_t = crate::audit::QUEUE,
          value_name = "N")]
    pub audit_queue: usize,

    /// How long in-flight reviews may take to finish after SIGTERM.
    #[arg(long, env = "SIDEKEY_INJECTOR_SHUTDOWN_GRACE", default_value = "25s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,

    /// How often the certificate and key files are checked for changes.
    #[arg(long, env = "SIDEKEY_INJECTOR_RELOAD_INTERVAL", default_value = "1s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub reload_interval: Duration,

    #[command(flatten)]
    pub self_managed: crate::self_managed::SelfManagedArgs,

    /// Read the ENTRYPOINT and CMD of target containers without a
    /// `command` from their image's registry (OCI distribution API), as the
    /// container runtime would; without it such containers need
    /// `sidekey.io/command`. Anonymous first, then `--registry-auth`.
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_LOOKUP")]
    pub registry_lookup: bool,

    /// Longest time the registry lookups of one review may take together
    /// (the webhook's own timeout is 5 s); past it the pod is denied.
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_BUDGET", default_value = "2s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub registry_budget: Duration,

    /// How long an image tag's config is reused before it is read again (a
    /// digest's is kept until evicted).
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_TAG_TTL", default_value = "5m",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub registry_tag_ttl: Duration,

    /// Most image configs cached (least recently used out).
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_CACHE", default_value_t = sidekey_registry::DEFAULT_CACHE_ENTRIES,
          value_name = "N")]
    pub registry_cache: usize,

    /// PEM bundle of CA certificates trusted for registries, besides the
    /// system's (a private registry's CA). TLS is always verified.
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_CA", value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,

    /// Registry credentials: a Docker config.json (`{"auths": {HOST:
    /// {"auth": BASE64(user:password)}}}`), e.g. a mounted
    /// `kubernetes.io/dockerconfigjson` Secret.
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_AUTH", value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,

    /// A registry (`HOST:PORT`) spoken to over plain HTTP; loopback only
    /// (tests). Repeatable. Also exempts that exact `HOST:PORT` from the
    /// address rules (see `--registry-allow`).
    #[arg(long, value_name = "HOST:PORT")]
    pub registry_insecure: Vec<String>,

    /// Only registries matching one of these are contacted: `host` (any
    /// port), `host:port`, or `*.example.com` (its subdomains). Repeatable;
    /// the variable is comma-separated. Without it any registry may be,
    /// except that a host that is or resolves to a loopback, private
    /// (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), link-local
    /// (169.254/16, fe80::/10), unspecified or multicast address is refused
    /// unless that exact `host:port` is named here or in
    /// `--registry-insecure`. Every connection, redirects (blob storage)
    /// and token realms included, is checked by these rules at connect
    /// time, to the address checked.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_REGISTRY_ALLOW",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub registry_allow: Vec<String>,

    /// When a registry refuses anonymous access, try the pod's
    /// `imagePullSecrets` and its service account's (read through the
    /// Kubernetes API: needs `get` on secrets and serviceaccounts in the
    /// pods' namespaces), before `--registry-auth`. Off by default.
    #[arg(long, env = "SIDEKEY_INJECTOR_REGISTRY_PULL_SECRETS")]
    pub registry_pull_secrets: bool,
}

/// A setting that cannot be used: the process exits 64 with this one line.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the configuration file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: sidekey_patch::ConfigError,
    },
    #[error("--agent-image: {0}")]
    AgentImage(#[source] sidekey_patch::ConfigError),
    #[error("SIDEKEY_AUDIT: {0}")]
    Audit(#[from] AuditTargetError),
    #[error("--reload-interval must be more than zero")]
    ReloadInterval,
    #[error("{0}")]
    ClientCa(#[source] crate::tls::TlsError),
    #[error("--max-connections must be between 1 and 1000000")]
    MaxConnections,
    #[error("--audit-queue must be between 1 and 1000000")]
    AuditQueue,
    #[error("--body-budget must be at least {min} bytes (the largest review body), not {got}")]
    BodyBudget { min: usize, got: usize },
    #[error("--{0} must be more than zero")]
    ZeroTimeout(&'static str),
    #[error("--registry-ca {path}: {reason}")]
    RegistryCa { path: PathBuf, reason: String },
    #[error("--registry-auth: {0}")]
    RegistryAuth(#[source] sidekey_registry::CredentialsError),
    #[error("--registry-insecure: {0}")]
    RegistryInsecure(#[source] sidekey_registry::SettingsError),
    #[error("{0}")]
    Registry(#[source] sidekey_registry::SettingsError),
}

fn registry_from_args(args: &Args) -> Result<sidekey_registry::Registry, SettingsError> {
    if args.registry_budget.is_zero() {
        return Err(SettingsError::ZeroTimeout("registry-budget"));
    }
    let ca_bundle = match &args.registry_ca {
        Some(path) => std::fs::read(path).map_err(|e| SettingsError::RegistryCa {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        None => Vec::new(),
    };
    let credentials = match &args.registry_auth {
        Some(path) => {
            sidekey_registry::Credentials::from_file(path).map_err(SettingsError::RegistryAuth)?
        }
        None => sidekey_registry::Credentials::none(),
    };
    sidekey_registry::Registry::new(sidekey_registry::Settings {
        budget: args.registry_budget,
        tag_ttl: args.registry_tag_ttl,
        cache_entries: args.registry_cache,
        ca_bundle,
        insecure: args.registry_insecure.clone(),
        credentials,
        guard: true,
        allow: args
            .registry_allow
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        pod_pull_secrets: args.registry_pull_secrets,
    })
    .map_err(|e| match e {
        sidekey_registry::SettingsError::EmptyCaBundle => SettingsError::RegistryCa {
            path: args.registry_ca.clone().unwrap_or_default(),
            reason: e.to_string(),
        },
        e @ sidekey_registry::SettingsError::InsecureNotLoopback(_) => {
            SettingsError::RegistryInsecure(e)
        }
        e => SettingsError::Registry(e),
    })
}

/// Parses a byte count: digits, optionally followed by `Ki`, `Mi` or `Gi`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "{s:?} is not a byte count (digits, then optionally Ki, Mi or Gi)"
            ))
        }
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (digits, then optionally Ki, Mi or Gi)"))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n <= u32::MAX as usize)
        .ok_or_else(|| format!("{s:?} is too large (at most 4 GiB)"))
}

/// Validated settings: what [`crate::run`] needs.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// The serving certificate and key files (`--tls-cert`, `--tls-key`);
    /// `None` with `--self-managed-tls` (served from memory).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub config: Config,
    pub audit: AuditTarget,
    pub audit_queue: usize,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
    pub client_ca: Option<PathBuf>,
    pub max_connections: usize,
    pub body_budget: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The registry lookup (`--registry-lookup`).
    pub registry: Option<std::sync::Arc<sidekey_registry::Registry>>,
}

impl Settings {
    /// Reads and checks the configuration file and the other options.
    pub fn from_args(args: &Args) -> Result<Settings, SettingsError> {
        let namespace = args.namespace.as_deref().filter(|n| !n.is_empty());
        let mut config = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_yaml(&text).map_err(|source| SettingsError::Config {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default_for(namespace),
        };
        if args.config.is_some() {
            if let Some(ns) = namespace {
                config = config.with_injector_namespace(ns);
            }
        }
        if let Some(image) = &args.agent_image {
            config = config
                .with_agent_image(image)
                .map_err(SettingsError::AgentImage)?;
        }
        if args.reload_interval.is_zero() {
            return Err(SettingsError::ReloadInterval);
        }
        if let Some(path) = &args.client_ca {
            crate::tls::load_client_ca(path).map_err(SettingsError::ClientCa)?;
        }
        if args.max_connections == 0 || args.max_connections > 1_000_000 {
            return Err(SettingsError::MaxConnections);
        }
        if args.body_budget < crate::BODY_LIMIT {
            return Err(SettingsError::BodyBudget {
                min: crate::BODY_LIMIT,
                got: args.body_budget,
            });
        }
        if args.audit_queue == 0 || args.audit_queue > 1_000_000 {
            return Err(SettingsError::AuditQueue);
        }
        if args.read_timeout.is_zero() {
            return Err(SettingsError::ZeroTimeout("read-timeout"));
        }
        if args.idle_timeout.is_zero() {
            return Err(SettingsError::ZeroTimeout("idle-timeout"));
        }
        let registry = if args.registry_lookup {
            Some(std::sync::Arc::new(registry_from_args(args)?))
        } else {
            None
        };
        Ok(Settings {
            registry,
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            tls_files: args.tls_cert.clone().zip(args.tls_key.clone()),
            config,
            audit: args.audit.parse()?,
            audit_queue: args.audit_queue,
            shutdown_grace: args.shutdown_grace,
            reload_interval: args.reload_interval,
            client_ca: args.client_ca.clone(),
            max_connections: args.max_connections,
            body_budget: args.body_budget,
            read_timeout: args.read_timeout,
            idle_timeout: args.idle_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("3Mi"), Ok(3 * 1024 * 1024));
        assert_eq!(parse_bytes("64Ki"), Ok(64 * 1024));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        for bad in ["", "Mi", "3MB", "3 Mi", "-1", "1.5Mi"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains("not a byte count"), "{bad}: {e}");
        }
        assert!(parse_bytes("5Gi").unwrap_err().contains("too large"));
    }
}
