//! Logs: `tracing` to standard error, filtered by `SIDEKEY_LOG` (default
//! `info`), formatted by `SIDEKEY_LOG_FORMAT` (`plain` or `json`), the same
//! convention as the `sidekey` CLI.
//!
//! The HTTP and TLS crates are capped at `info` whatever the filter's
//! default level: at `trace` they can dump request bodies (a review carries
//! a pod, whose env values may be secrets). A filter that names one of those
//! crates explicitly overrides the cap. Colours only on a terminal (a pod's
//! log is a pipe).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

const CAPPED: &[&str] = &[
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
    "tower",
];

/// The filter directives for `SIDEKEY_LOG` (`user`).
pub fn directives(user: Option<&str>) -> String {
    let user = user
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let mut parts: Vec<String> = CAPPED.iter().map(|c| format!("{c}=info")).collect();
    parts.push(user.to_owned());
    parts.join(",")
}

/// Installs the subscriber (once) from `SIDEKEY_LOG` and `SIDEKEY_LOG_FORMAT`.
pub fn init() {
    let user = std::env::var("SIDEKEY_LOG").ok();
    let filter = EnvFilter::try_new(directives(user.as_deref())).unwrap_or_else(|e| {
        eprintln!("sidekey-injector: warning: SIDEKEY_LOG is not a valid filter ({e}); using info");
        EnvFilter::new(directives(None))
    });
    let json = std::env::var("SIDEKEY_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn http_crates_are_capped_before_the_user_filter() {
        let d = directives(Some("trace"));
        assert!(d.starts_with("hyper=info,"));
        assert!(d.contains("h2=info"));
        assert!(d.ends_with(",trace"));
        assert!(directives(None).ends_with(",info"));
        assert!(directives(Some("  ")).ends_with(",info"));
    }
}
