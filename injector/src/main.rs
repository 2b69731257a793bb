//! `sidekey-injector`: installs the ring crypto provider, parses the
//! options, and runs the webhook until SIGTERM or SIGINT.
//!
//! Exit status: 0 after a clean shutdown; 64 for bad options or
//! configuration (one line on standard error); 1 when the server cannot
//! start (the address is taken) or in-flight reviews outlive the grace
//! period.

use std::process::ExitCode;

/// Parsing a pod and planning its patch allocate many small strings and
/// maps; with mimalloc the webhook answers about a quarter more reviews per
/// second than with glibc's allocator (measured with `benches/webhook.rs`),
/// for about 10 MB more peak RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use sidekey_injector::self_managed::SelfManaged;
use sidekey_injector::{server, Args, Settings};

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    sidekey_logging::init(
        "sidekey-injector",
        "info",
        std::env::var("SIDEKEY_LOG").ok().as_deref(),
        std::env::var("SIDEKEY_LOG_FORMAT").ok().as_deref(),
    );
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidekey-injector: {e}");
            return ExitCode::from(64);
        }
    };
    let self_managed = match args.self_managed.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidekey-injector: {e}");
            return ExitCode::from(64);
        }
    };
    let self_managed = self_managed.map(|(namespace, secret, policy)| SelfManagedPlan {
        namespace,
        secret,
        policy,
        webhook: args.self_managed.webhook_configuration.clone(),
        dns_names: args.self_managed.dns_names.clone(),
        poll: args.self_managed.self_managed_poll,
        cert_path: args.tls_cert.clone(),
        key_path: args.tls_key.clone(),
    });
    match serve(settings, self_managed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidekey-injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--self-managed-tls`, checked.
struct SelfManagedPlan {
    namespace: String,
    secret: String,
    policy: sidekey_injector::self_managed::Policy,
    webhook: String,
    dns_names: Vec<String>,
    poll: std::time::Duration,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

/// Self-managed TLS: the first pass (Secret, caBundle, files) completes
/// before the server starts, so `/readyz` only answers 200 once the
/// certificate is loaded AND the caBundle holds its CA; a failing pass is
/// retried every 2 s (the liveness probe restarts a pod stuck here).
async fn start_self_managed(plan: SelfManagedPlan) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context(
        "self-managed TLS: no Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    let manager = SelfManaged {
        client,
        namespace: plan.namespace,
        secret: plan.secret,
        webhook: plan.webhook,
        dns_names: plan.dns_names,
        policy: plan.policy,
        cert_path: plan.cert_path,
        key_path: plan.key_path,
    };
    loop {
        match manager.reconcile().await {
            Ok(pass) => {
                tracing::info!(
                    wrote = pass.wrote,
                    patched = pass.patched,
                    "self-managed TLS: certificate in place"
                );
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "self-managed TLS: cannot set up the certificate yet; retrying in 2s");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
    tokio::spawn(manager.run(plan.poll));
    Ok(())
}

fn serve(settings: Settings, self_managed: Option<SelfManagedPlan>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(plan) = self_managed {
        runtime.block_on(start_self_managed(plan))?;
    }
    runtime.block_on(server::run(settings, server::shutdown_signal()))?;
    // Connections cut at the end of the grace period are dropped here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
