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
use sidekey_injector::{server, Args, CertStore, Settings};

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
    let self_managed = self_managed.map(|s| SelfManagedPlan {
        namespace: s.namespace,
        secret: s.secret,
        policy: s.policy,
        webhook: args.self_managed.webhook_configuration.clone(),
        dns_names: s.names,
        poll: args.self_managed.self_managed_poll,
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
}

/// Self-managed TLS: the Kubernetes client is made before the server
/// starts (no client: exit 1); the passes run beside the server, which
/// serves the certificate from `store` (memory only). A pass installs the
/// certificate only after the caBundle holds its CA, so `/readyz` answers
/// 200 once both are true; `/healthz` answers meanwhile. A failing first
/// pass is retried every 2 s.
async fn self_managed_manager(
    plan: SelfManagedPlan,
    store: std::sync::Arc<CertStore>,
) -> anyhow::Result<SelfManaged> {
    let client = kube::Client::try_default().await.context(
        "self-managed TLS: no Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    Ok(SelfManaged {
        client,
        namespace: plan.namespace,
        secret: plan.secret,
        webhook: plan.webhook,
        dns_names: plan.dns_names,
        policy: plan.policy,
        store,
    })
}

async fn run_self_managed(manager: SelfManaged, poll: std::time::Duration) {
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
    manager.run(poll).await;
}

fn serve(settings: Settings, self_managed: Option<SelfManagedPlan>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut store = None;
    if let Some(plan) = self_managed {
        let poll = plan.poll;
        let certs = CertStore::in_memory(settings.client_ca.clone());
        let manager = runtime.block_on(self_managed_manager(plan, certs.clone()))?;
        runtime.spawn(run_self_managed(manager, poll));
        store = Some(certs);
    }
    runtime.block_on(server::run_with_store(
        settings,
        store,
        server::shutdown_signal(),
    ))?;
    // Connections cut at the end of the grace period are dropped here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
