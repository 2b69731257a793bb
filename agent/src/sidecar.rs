//! `init` and `sidecar`: the secrets written as files on tmpfs, swapped in
//! whole; the sidecar fetches again every interval, writes only when a
//! version changed, and exits 0 on SIGTERM or SIGINT.

use std::time::{Duration, Instant};

use crate::args::FilesArgs;
use crate::audit::AuditSink;
use crate::config::Vars;
use crate::fetch::{Fetched, Fetcher, Plan};
use crate::files::{self, AtomicDir};
use crate::store::open_store;
use crate::{failed, fetch_failure, record, runtime, start, Failure, EXIT_SOFTWARE};

/// Runs `init` (`refresh` None: one fetch, then exit) or `sidecar`.
pub(crate) fn files_mode(
    vars: &dyn Vars,
    args: &FilesArgs,
    refresh: Option<Duration>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let config = start(vars)?;
    let mode = if refresh.is_some() { "sidecar" } else { "init" };
    let mut dir =
        AtomicDir::open(&args.dir, args.group).map_err(|e| Failure::new(e.exit_code(), e))?;
    let mut sink = AuditSink::new(config.audit());
    let rt = runtime()?;
    rt.block_on(async {
        let mut signals = match refresh {
            Some(_) => Some(Signals::new()?),
            None => None,
        };
        let store = match open_store(&config).await {
            Ok(s) => s,
            Err(f) => return Err(failed(&mut sink, &config, mode, started, f)),
        };
        let mut fetcher = Fetcher::new(&store, Plan::from_config(&config), config.on_missing());
        let fetched = match fetcher.fetch().await {
            Ok(f) => f,
            Err(e) => {
                let f = fetch_failure(&config, e);
                return Err(failed(&mut sink, &config, mode, started, f));
            }
        };
        if let Err(f) = write_set(&mut dir, &fetched, args) {
            return Err(failed(&mut sink, &config, mode, started, f));
        }
        dir.mark_ready()
            .map_err(|e| Failure::new(e.exit_code(), e))?;
        record(&mut sink, &config, mode, Ok(&fetched), started)?;
        let (Some(interval), Some(signals)) = (refresh, signals.as_mut()) else {
            return Ok(());
        };
        let mut current = fetched.fingerprint();
        drop(fetched);
        // A failure is audited when it starts or changes, not every interval.
        let mut last_failure: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = signals.next() => return Ok(()),
            }
            let started = Instant::now();
            store.restart_deadline();
            let result = tokio::select! {
                r = fetcher.fetch() => r,
                _ = signals.next() => return Ok(()),
            };
            let failure = match result {
                Ok(fetched) => {
                    let fingerprint = fetched.fingerprint();
                    if fingerprint == current {
                        tracing::debug!("no new version");
                        last_failure = None;
                        continue;
                    }
                    match write_set(&mut dir, &fetched, args) {
                        Ok(()) => {
                            tracing::info!(variables = fingerprint.len(), "new versions written");
                            current = fingerprint;
                            last_failure = None;
                            if let Err(f) = record(&mut sink, &config, mode, Ok(&fetched), started)
                            {
                                tracing::error!(error = %f.message, "audit");
                            }
                            continue;
                        }
                        Err(f) => f,
                    }
                }
                Err(e) => fetch_failure(&config, e),
            };
            tracing::warn!(error = %failure.message, "refresh failed; the current files stay");
            if last_failure.as_deref() != Some(failure.message.as_str()) {
                last_failure = Some(failure.message.clone());
                failed(&mut sink, &config, mode, started, failure);
            }
        }
    })
}

fn write_set(dir: &mut AtomicDir, fetched: &Fetched, args: &FilesArgs) -> Result<(), Failure> {
    let rendered =
        files::render(&fetched.secrets, args.format).map_err(|e| Failure::new(e.exit_code(), e))?;
    dir.write(&rendered)
        .map_err(|e| Failure::new(e.exit_code(), e))
}

/// SIGTERM and SIGINT: the sidecar's way out (exit 0).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        use tokio::signal::unix::{signal, SignalKind};
        let err =
            |e: std::io::Error| Failure::new(EXIT_SOFTWARE, format!("cannot handle signals: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: exiting"),
            _ = self.int.recv() => tracing::info!("SIGINT: exiting"),
        }
    }
}
