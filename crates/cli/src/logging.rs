//! Logs: `tracing` to standard error, filtered by `SIDEKEY_LOG` (default
//! `warn`), formatted by `SIDEKEY_LOG_FORMAT` (`plain` or `json`).
//!
//! The HTTP, TLS and AWS SDK crates are capped at `info` whatever the
//! filter's default level: at `trace` they can dump request and response
//! bodies, which carry data keys and native SecureString values. A filter
//! that names one of those crates explicitly overrides the cap.

use tracing_subscriber::EnvFilter;

const CAPPED: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_http",
    "aws_smithy_types",
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "aws_sdk_ssm",
    "aws_sdk_kms",
    "aws_sdk_sts",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
    "tower",
];

/// Builds the filter directives from `SIDEKEY_LOG`.
pub fn directives(user: Option<&str>) -> String {
    let user = user
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("warn");
    let mut parts: Vec<String> = CAPPED.iter().map(|c| format!("{c}=info")).collect();
    parts.push(user.to_owned());
    parts.join(",")
}

/// Installs the subscriber (once).
pub fn init() {
    let user = std::env::var("SIDEKEY_LOG").ok();
    let filter = EnvFilter::try_new(directives(user.as_deref())).unwrap_or_else(|e| {
        eprintln!("sidekey: warning: SIDEKEY_LOG is not a valid filter ({e}); using warn");
        EnvFilter::new(directives(None))
    });
    let json = std::env::var("SIDEKEY_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
