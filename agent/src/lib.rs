//! `sidekey-agent`: runs inside users' pods and starts the app with exactly
//! its environment's secrets, or not at all.
//!
//! - `install DIR`: copies this (static) binary into a shared volume.
//! - `exec -- CMD...`: fetches, builds the app's environment explicitly and
//!   `execve`s CMD: no child process, the app keeps the PID.
//! - `init --dir DIR` / `sidecar --dir DIR --refresh D`: writes the secrets
//!   as files, only on tmpfs or ramfs, swapped in whole; the sidecar checks
//!   for new versions every interval. `ready --dir DIR` is its probe.
//!
//! Configuration comes from the non-secret `SIDEKEY_*` variables the
//! injector sets, read through [`config::Vars`]. Exit status: 0 success;
//! 64 configuration or usage error; 65 a value that cannot be delivered
//! (a NUL byte in an environment variable, non-UTF-8 in a text format, a
//! variable that changes how the app loads code, see [`loader`]);
//! 69 a secret that cannot be had (one line names the environment, the
//! parameter and the AWS error code); 70 internal error; 73 files that
//! cannot be written; 74 audit record that cannot be written; 126/127 a
//! program that cannot run or does not exist. After a successful `exec`
//! the process is the app.
//!
//! The fetch plan, the files and the exec are this crate's; names, picks
//! and precedence come from `sidekey-model`, the SSM/KMS and local stores
//! from `sidekey-store`, records from `sidekey-audit`. It must not depend
//! on the CLI or the injector.

pub mod args;
pub mod audit;
pub mod config;
pub mod exec;
pub mod fetch;
pub mod files;
mod install;
pub mod loader;
mod ready;
mod sidecar;
pub mod store;

use std::ffi::OsString;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::args::{Args, Command};
use crate::audit::{fetch_event, AuditSink};
use crate::config::{Config, ConfigError, ProcessVars, Vars};
use crate::fetch::{Fetched, Fetcher, Plan};
use crate::store::open_store;

/// Configuration or usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// A value that cannot be delivered as asked (EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// A secret that cannot be had (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// An internal error (EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;
/// Files that cannot be written (EX_CANTCREAT).
pub const EXIT_CANTCREAT: u8 = 73;
/// An audit record that cannot be written (EX_IOERR).
pub const EXIT_IOERR: u8 = 74;

/// A failure: the exit status and the one line printed on stderr (after
/// `sidekey-agent: `). Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    /// The message, one line.
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Display) -> Failure {
        Failure {
            code,
            message: message.to_string().replace(['\n', '\r'], " "),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::new(EXIT_USAGE, e)
    }
}

/// Runs the agent with the process's arguments and environment.
pub fn main() -> ExitCode {
    run(std::env::args_os().collect(), &ProcessVars)
}

/// Runs the agent with the given arguments (the first is the program
/// name) and variables. Returns only when there is no `exec` to do, or it
/// failed.
pub fn run(argv: Vec<OsString>, vars: &dyn Vars) -> ExitCode {
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("sidekey-agent: {line} (see sidekey-agent --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match args.command {
        Command::Install { dir } => install::install(&dir),
        Command::Ready { dir } => ready::ready(&dir),
        Command::Exec { command } => exec_mode(vars, command),
        Command::Init(files) => sidecar::files_mode(vars, &files, None),
        Command::Sidecar { files, refresh } => sidecar::files_mode(vars, &files, Some(refresh)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sidekey-agent: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Logging, the configuration, and core dumps off: what every fetching
/// command starts with.
fn start(vars: &dyn Vars) -> Result<Config, Failure> {
    sidekey_logging::init(
        "sidekey-agent",
        "warn",
        vars.get("SIDEKEY_LOG").as_deref(),
        vars.get("SIDEKEY_LOG_FORMAT").as_deref(),
    );
    let config = Config::from_vars(vars)?;
    for name in Config::unknown_variables(vars) {
        tracing::warn!(variable = %name, "unknown SIDEKEY_ variable ignored");
    }
    no_core_dumps();
    Ok(config)
}

/// Secrets are about to be in memory: no core dump may hold them. (`exec`
/// resets this for the app: execve makes a process dumpable again.)
fn no_core_dumps() {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "cannot turn core dumps off (prctl PR_SET_DUMPABLE)");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("cannot start the runtime: {e}")))
}

/// Refuses a secret that would set a variable changing how the app loads
/// code ([`loader`]), unless `SIDEKEY_ALLOW_LOADER_ENV` names it. Names the
/// variable and its parameter, never the value.
fn check_loader_variables(config: &Config, fetched: &Fetched) -> Result<(), Failure> {
    for d in &fetched.secrets {
        if loader::is_loader_variable(&d.var) && !config.allow_loader_env().contains(&d.var) {
            return Err(Failure::new(
                EXIT_DATA,
                format!(
                    "environment {}: {}: variable {} changes how the app loads code: refused \
                     (name it in the environment's SIDEKEY_ALLOW_LOADER_ENV to allow it)",
                    config.environment(),
                    d.got.path,
                    d.var
                ),
            ));
        }
    }
    Ok(())
}

fn fetch_failure(config: &Config, e: fetch::FetchError) -> Failure {
    Failure::new(
        EXIT_UNAVAILABLE,
        format!("environment {}: {e}", config.environment()),
    )
}

/// Writes the record of one fetch; a record that cannot be written stops
/// the delivery (fail closed).
fn record(
    sink: &mut AuditSink,
    config: &Config,
    mode: &str,
    result: Result<&Fetched, &str>,
    started: Instant,
) -> Result<(), Failure> {
    sink.write(fetch_event(config, mode, result, started.elapsed()))
        .map_err(|e| Failure::new(EXIT_IOERR, format!("cannot write the audit record: {e}")))
}

/// Records a failure and passes it on.
fn failed(
    sink: &mut AuditSink,
    config: &Config,
    mode: &str,
    started: Instant,
    failure: Failure,
) -> Failure {
    match record(sink, config, mode, Err(&failure.message), started) {
        Ok(()) => failure,
        Err(audit) => {
            tracing::error!(error = %audit.message, "the failure could not be audited");
            failure
        }
    }
}

fn exec_mode(vars: &dyn Vars, command: Vec<OsString>) -> Result<(), Failure> {
    let started = Instant::now();
    let config = start(vars)?;
    let mut sink = AuditSink::new(config.audit());
    let rt = runtime()?;
    let fetched = rt.block_on(async {
        let store = open_store(&config).await?;
        let mut fetcher = Fetcher::new(&store, Plan::from_config(&config), config.on_missing());
        fetcher.fetch().await.map_err(|e| fetch_failure(&config, e))
    });
    let fetched = match fetched {
        Ok(f) => f,
        Err(f) => return Err(failed(&mut sink, &config, "exec", started, f)),
    };
    if let Err(f) = check_loader_variables(&config, &fetched) {
        return Err(failed(&mut sink, &config, "exec", started, f));
    }
    let env = match exec::child_env(vars.all(), &fetched.secrets) {
        Ok(env) => env,
        Err(e) => {
            let f = Failure::new(e.exit_code(), e);
            return Err(failed(&mut sink, &config, "exec", started, f));
        }
    };
    let program = match exec::resolve(&command[0], exec::path_of(&env)) {
        Ok(p) => p,
        Err(e) => {
            exec::wipe(env);
            let f = Failure::new(e.exit_code(), e);
            return Err(failed(&mut sink, &config, "exec", started, f));
        }
    };
    if let Err(f) = record(&mut sink, &config, "exec", Ok(&fetched), started) {
        exec::wipe(env);
        return Err(f);
    }
    tracing::debug!(program = %program.display(), variables = fetched.secrets.len(), "exec");
    drop(fetched);
    drop(rt);
    let err = exec::exec(&program, &command, env);
    Err(Failure::new(err.exit_code(), err))
}
