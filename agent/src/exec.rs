//! `exec`: the app's environment, built explicitly (the agent's own
//! environment without any `SIDEKEY_*` variable, plus the secrets), its
//! program found through that environment's `PATH`, and `execve`: the app
//! replaces the agent, keeps its PID and receives signals directly.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use crate::fetch::Delivered;

/// `PATH` when the environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the app could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A value holds a NUL byte, which an environment variable cannot.
    #[error(
        "{parameter}: the value of {var} contains a NUL byte and cannot be an environment variable"
    )]
    Nul {
        /// The variable.
        var: String,
        /// The parameter it came from.
        parameter: String,
    },
    /// No such program.
    #[error("{}: not found{}", .program.to_string_lossy(), searched(.path.as_deref()))]
    NotFound {
        /// The command as given.
        program: OsString,
        /// The `PATH` searched, if it was.
        path: Option<OsString>,
    },
    /// `execve` failed.
    #[error("cannot run {}: {source}", .program.display())]
    Exec {
        /// The resolved program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn searched(path: Option<&OsStr>) -> String {
    match path {
        Some(p) => format!(" in PATH {}", p.to_string_lossy()),
        None => String::new(),
    }
}

impl ExecError {
    /// 127 for a program that does not exist, 126 when it cannot run, 65
    /// (EX_DATAERR) for a value that cannot be an environment variable.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Nul { .. } => 65,
            ExecError::NotFound { .. } => 127,
            ExecError::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            ExecError::Exec { .. } => 126,
        }
    }
}

/// The child's environment: `base` without any `SIDEKEY_*` variable and
/// without the names a secret sets, then the secrets (sorted by name). A
/// value with a NUL byte is an error naming its variable and parameter.
pub fn child_env(
    base: Vec<(OsString, OsString)>,
    secrets: &[Delivered],
) -> Result<Vec<(OsString, OsString)>, ExecError> {
    for d in secrets {
        if d.got.value.expose().contains(&0) {
            return Err(ExecError::Nul {
                var: d.var.clone(),
                parameter: d.got.path.to_string(),
            });
        }
    }
    let mut env: Vec<(OsString, OsString)> = base
        .into_iter()
        .filter(|(k, _)| {
            !k.as_bytes().starts_with(b"SIDEKEY_")
                && !secrets.iter().any(|d| d.var.as_bytes() == k.as_bytes())
        })
        .collect();
    for d in secrets {
        env.push((
            OsString::from(&d.var),
            OsString::from_vec(d.got.value.expose().to_vec()),
        ));
    }
    Ok(env)
}

/// Zeroizes the values of an environment that was not handed over.
pub fn wipe(env: Vec<(OsString, OsString)>) {
    for (_, v) in env {
        let mut bytes = v.into_vec();
        bytes.zeroize();
    }
}

/// Finds `program` as `execvp` would, but in the child's `PATH`: a name
/// with a `/` is used as it is; otherwise the first executable regular
/// file `DIR/program` for DIR in `PATH` (an empty entry is the current
/// directory).
pub fn resolve(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, ExecError> {
    if program.is_empty() {
        return Err(ExecError::NotFound {
            program: program.to_owned(),
            path: None,
        });
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let search = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(ExecError::NotFound {
        program: program.to_owned(),
        path: Some(search.to_owned()),
    })
}

/// Replaces this process with `program`, `argv[0]` as given and the other
/// arguments byte for byte, in exactly `env`. Returns only on failure.
pub fn exec(program: &Path, argv: &[OsString], env: Vec<(OsString, OsString)>) -> ExecError {
    let mut cmd = std::process::Command::new(program);
    if let Some(first) = argv.first() {
        cmd.arg0(first);
    }
    cmd.args(argv.iter().skip(1)).env_clear();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let source = cmd.exec();
    drop(cmd);
    wipe(env);
    ExecError::Exec {
        program: program.to_owned(),
        source,
    }
}

/// The `PATH` of an environment.
pub fn path_of(env: &[(OsString, OsString)]) -> Option<&OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_follows_the_given_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tool");
        std::fs::write(&bin, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = dir.path().join("data");
        std::fs::write(&plain, b"x").expect("write");
        let path = OsString::from(format!("/nonexistent:{}", dir.path().display()));
        assert_eq!(
            resolve(OsStr::new("tool"), Some(&path)).expect("found"),
            bin
        );
        let err = resolve(OsStr::new("data"), Some(&path)).expect_err("not executable");
        assert_eq!(err.exit_code(), 127);
        assert!(err.to_string().contains("not found in PATH"), "{err}");
        assert_eq!(
            resolve(OsStr::new("./x/y"), None).expect("as is"),
            PathBuf::from("./x/y")
        );
    }

    #[test]
    fn sidekey_variables_are_removed() {
        let base = vec![
            (OsString::from("SIDEKEY_ENVIRONMENT"), OsString::from("x")),
            (OsString::from("HOME"), OsString::from("/root")),
            (OsString::from("SIDEKEY_SECRETS"), OsString::from("A=b/C")),
        ];
        let env = child_env(base, &[]).expect("env");
        assert_eq!(env, vec![(OsString::from("HOME"), OsString::from("/root"))]);
    }
}
