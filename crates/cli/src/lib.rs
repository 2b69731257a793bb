//! The `sidekey` ops CLI: write, rotate, read, list, history, environments,
//! policies, audit review, exec.
//!
//! A library with a thin `main.rs`. It talks to stores only through
//! `sidekey-store`; names and rules come from `sidekey-model`; it never
//! prints a value except where the user asked for one on stdout
//! (`get --reveal`, `export`) or hands them to a child (`exec`).

mod args;
mod audit;
mod audit_html;
mod cluster;
mod commands;
mod dotenv;
mod inject;
mod policy;
mod restart;
mod status;
mod yaml11;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Exit status for failures other than usage errors.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for usage errors (clap uses it too).
pub const EXIT_USAGE: u8 = 2;

/// A failure with the exit status it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure
where
    E: Into<anyhow::Error>,
{
    fn from(e: E) -> Failure {
        Failure::failed(one_line(&e.to_string()))
    }
}

/// Messages are printed on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    sidekey_logging::init(
        "sidekey",
        "warn",
        std::env::var("SIDEKEY_LOG").ok().as_deref(),
        std::env::var("SIDEKEY_LOG_FORMAT").ok().as_deref(),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidekey: error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sidekey: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
