//! Command-line options (each also from a `SIDEKEY_INJECTOR_*` variable) and
//! the validated settings built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sidekey_patch::Config;

use crate::audit::{AuditTarget, AuditTargetError};

/// `sidekey-injector --listen ADDR --tls-cert FILE --tls-key FILE [--config FILE] [--agent-image IMAGE]`
#[derive(Debug, Clone, Parser)]
#[command(name = "sidekey-injector", version, about, long_about = None)]
pub struct Args {
    /// Address to serve HTTPS on, e.g. `0.0.0.0:8443` (port 0 picks a free one).
    #[arg(long, env = "SIDEKEY_INJECTOR_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// PEM certificate chain, leaf first; reloaded when the file changes.
    #[arg(long, env = "SIDEKEY_INJECTOR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long, env = "SIDEKEY_INJECTOR_TLS_KEY", value_name = "FILE")]
    pub tls_key: PathBuf,

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

    /// How long in-flight reviews may take to finish after SIGTERM.
    #[arg(long, env = "SIDEKEY_INJECTOR_SHUTDOWN_GRACE", default_value = "25s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,

    /// How often the certificate and key files are checked for changes.
    #[arg(long, env = "SIDEKEY_INJECTOR_RELOAD_INTERVAL", default_value = "1s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub reload_interval: Duration,

    /// Test only: every `POST /mutate` sleeps this long before answering
    /// (the graceful-shutdown test uses it to hold reviews in flight). It
    /// only sleeps; nothing else changes.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_TEST_DELAY_MS",
        hide = true,
        value_name = "MS"
    )]
    pub test_delay_ms: Option<u64>,
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
}

/// Validated settings: what [`crate::run`] needs.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub config: Config,
    pub audit: AuditTarget,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
    pub test_delay: Option<Duration>,
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
        Ok(Settings {
            listen: args.listen,
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            config,
            audit: args.audit.parse()?,
            shutdown_grace: args.shutdown_grace,
            reload_interval: args.reload_interval,
            test_delay: args.test_delay_ms.map(Duration::from_millis),
        })
    }
}
