//! The log setup every sidekey binary uses: `tracing` to standard error,
//! filtered by `SIDEKEY_LOG`, formatted by `SIDEKEY_LOG_FORMAT` (`plain` or
//! `json`), colours only on a terminal (a pod's log is a pipe).
//!
//! The HTTP, TLS, DNS and AWS SDK crates are capped at `info` whatever the
//! filter's default level: at `trace` they can dump request and response
//! bodies, which carry data keys, native SecureString values and pods (whose
//! env values may be secrets). A filter that names one of those crates
//! explicitly overrides the cap: that is the operator's deliberate choice.
//!
//! Depends on `tracing-subscriber` only; it reads no environment itself, so
//! the agent can pass its variables through its own configuration trait.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Crates whose `debug`/`trace` output may hold request or response bodies.
pub const CAPPED: &[&str] = &[
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
    "hickory_resolver",
    "hickory_proto",
    "hickory_net",
];

/// The filter directives: every capped crate at `info`, then the user's
/// filter (`SIDEKEY_LOG`), or `default_level` when it is unset or blank.
pub fn directives(user: Option<&str>, default_level: &str) -> String {
    let user = user
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default_level);
    let mut parts: Vec<String> = CAPPED.iter().map(|c| format!("{c}=info")).collect();
    parts.push(user.to_owned());
    parts.join(",")
}

/// Installs the subscriber (once per process; later calls do nothing).
/// `program` prefixes the warning printed for an invalid filter.
pub fn init(program: &str, default_level: &str, filter: Option<&str>, format: Option<&str>) {
    let env_filter = EnvFilter::try_new(directives(filter, default_level)).unwrap_or_else(|e| {
        eprintln!(
            "{program}: warning: SIDEKEY_LOG is not a valid filter ({e}); using {default_level}"
        );
        EnvFilter::new(directives(None, default_level))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = if format == Some("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn noisy_crates_are_capped_before_the_user_filter() {
        let d = directives(Some("trace"), "warn");
        assert!(d.starts_with("aws_smithy_runtime=info,"));
        assert!(
            d.contains("hyper=info")
                && d.contains("h2=info")
                && d.contains("hickory_resolver=info")
        );
        assert!(d.ends_with(",trace"));
        assert!(directives(None, "warn").ends_with(",warn"));
        assert!(directives(Some("  "), "info").ends_with(",info"));
    }
}
