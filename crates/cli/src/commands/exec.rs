//! `exec`: run a command with a service's secrets in its environment
//! (audited before the process is replaced).

use std::ffi::OsString;

use sidekey_model::{Environment, Merge, Rank, Service};

use super::{store_failure, Ctx};
use crate::Failure;

impl Ctx {
    pub(super) async fn exec(
        &mut self,
        env: &Environment,
        services: &[Service],
        command: Vec<OsString>,
    ) -> Result<(), Failure> {
        let mut pending = self.pending("exec", env);
        let mut merged: Merge<sidekey_store::Revealed> = Merge::new();
        let mut failure = None;
        for (index, service) in services.iter().enumerate() {
            match self.store.read_service(env, service).await {
                Ok(values) => {
                    for r in values {
                        let var = r.path.key().to_string();
                        merged.offer(
                            &var,
                            Rank::Service {
                                layer: 0,
                                service: index,
                            },
                            r,
                        );
                    }
                }
                Err(e) => {
                    failure = Some(store_failure(e));
                    break;
                }
            }
        }
        let merged = merged.into_sorted();
        for (_, r) in &merged {
            pending.secret(
                r.path.service().as_str(),
                r.path.key().as_str(),
                Some(r.version),
            );
        }
        let mut vars: Vec<(OsString, OsString)> = Vec::new();
        if failure.is_none() {
            for (var, r) in &merged {
                if r.value.expose().contains(&0) {
                    failure = Some(Failure::failed(format!(
                        "{} contains a NUL byte and cannot be an environment variable",
                        r.path
                    )));
                    break;
                }
                vars.push((OsString::from(var), os_string(r.value.expose())));
            }
        }
        let result = match failure {
            Some(f) => Err(f),
            None => Ok(()),
        };
        self.close(pending, result)?;
        let mut cmd = std::process::Command::new(&command[0]);
        cmd.args(&command[1..]).env_clear();
        for (k, v) in std::env::vars_os() {
            if !k.to_string_lossy().starts_with("SIDEKEY_") {
                cmd.env(k, v);
            }
        }
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        exec_replace(cmd, &command[0])
    }
}

#[cfg(unix)]
fn exec_replace(mut cmd: std::process::Command, program: &std::ffi::OsStr) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(Failure {
        code: if err.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        message: format!("cannot run {}: {err}", program.to_string_lossy()),
    })
}

#[cfg(unix)]
fn os_string(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes.to_vec())
}
