//! Command-line arguments. Settings that the injector sets per pod come
//! from `SIDEKEY_*` variables ([`crate::config`]); the arguments only say
//! what to do.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::files::Format;

/// `sidekey-agent`: fetches a pod's secrets and hands them to its app.
#[derive(Debug, Parser)]
#[command(name = "sidekey-agent", version, about, disable_help_subcommand = true)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The agent's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy this binary into DIR as DIR/sidekey-agent, mode 0555 (the
    /// init container that puts the agent into a shared volume).
    Install {
        /// The target directory.
        dir: PathBuf,
    },
    /// Fetch the secrets, then execve CMD with them in its environment.
    Exec {
        /// The command and its arguments, passed byte for byte.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<OsString>,
    },
    /// Fetch the secrets and write them as files into a tmpfs directory.
    Init(FilesArgs),
    /// Like init, then check for new versions every interval and swap the
    /// files atomically; exits 0 on SIGTERM.
    Sidecar {
        #[command(flatten)]
        files: FilesArgs,
        /// How often to check for new versions, e.g. 30s, 5m.
        #[arg(long, value_parser = parse_interval, value_name = "DURATION")]
        refresh: Duration,
    },
    /// Exit 0 once the first full set of files is written (a startup probe
    /// that needs no shell).
    Ready {
        /// The directory the sidecar writes.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Where and how files are written.
#[derive(Debug, Clone, ClapArgs)]
pub struct FilesArgs {
    /// The directory: must be on tmpfs or ramfs.
    #[arg(long)]
    pub dir: PathBuf,
    /// One file per key, a dotenv file, or a JSON file.
    #[arg(long, value_enum, default_value_t = Format::PerKey)]
    pub format: Format,
    /// Give this group read access (files 0440, directories 0550) instead
    /// of the owner only (0400, 0500).
    #[arg(long, value_name = "GID")]
    pub group: Option<u32>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (use a duration such as 30s or 5m)"))?;
    if d < Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_owned());
    }
    Ok(d)
}
