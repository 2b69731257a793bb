//! Logs: `tracing` to standard error, filtered by `SIDEKEY_LOG` (default
//! `warn`), formatted by `SIDEKEY_LOG_FORMAT` (`plain` or `json`), exactly
//! as the `sidekey` CLI does (the few lines are repeated here rather than
//! shared, so the agent does not depend on the CLI crate).
//!
//! The HTTP, TLS, DNS and AWS SDK crates are capped at `info` whatever the
//! filter's default level: at `trace` they can dump request and response
//! bodies, which carry data keys and native SecureString values. A filter
//! that names one of those crates explicitly overrides the cap.

use tracing_subscriber::EnvFilter;

use crate::config::Vars;

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
    "hickory_resolver",
    "hickory_proto",
    "hickory_net",
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

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(vars: &dyn Vars) {
    let user = vars.get("SIDEKEY_LOG");
    let filter = EnvFilter::try_new(directives(user.as_deref())).unwrap_or_else(|e| {
        eprintln!("sidekey-agent: warning: SIDEKEY_LOG is not a valid filter ({e}); using warn");
        EnvFilter::new(directives(None))
    });
    let json = vars.get("SIDEKEY_LOG_FORMAT").is_some_and(|f| f == "json");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_crates_are_capped_at_info() {
        let d = directives(Some("trace"));
        assert!(d.contains("aws_smithy_runtime=info"));
        assert!(d.contains("hyper=info"));
        assert!(d.ends_with(",trace"));
        assert!(directives(None).ends_with(",warn"));
        assert!(directives(Some("  ")).ends_with(",warn"));
    }
}
