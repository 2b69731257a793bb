//! The commands. Each parses its names first (a bad name is a usage error,
//! before any call), then talks to the store, then writes one audit record
//! for anything that writes or reveals.
//!
//! This file dispatches a parsed command line and holds what every store
//! command shares ([`Ctx`]: the store, the audit sink, the actor); beside
//! it, one file per group of commands:
//!
//! - `write.rs`: `put`, `rotate`, `delete`, `rekey`;
//! - `read.rs`: `get`, `list`, `history`;
//! - `environments.rs`: `env list`, `env copy`, `env destroy`;
//! - `import_export.rs`: `import` and `export` (dotenv, JSON);
//! - `exec.rs`: `exec`;
//! - `rollout.rs`: `status`/`restart` scopes and `--restart` after a write;
//! - `policy.rs`: `policy` (the IAM policy document);
//! - `audit.rs`: `audit` (review and `audit verify`);
//! - `input.rs`: reading a value or a dotenv file (stdin, file,
//!   `--generate`) without leaving copies behind;
//! - `table.rs`: text tables.

mod audit;
mod environments;
mod exec;
mod import_export;
mod input;
mod policy;
mod read;
mod rollout;
mod table;
mod write;

use sidekey_model::{Environment, Key, Label, Prefix, Service};
use sidekey_store::{Backend, PutOptions, Store, StoreConfig, StoreError};

use crate::args::{Cli, Command, EnvCommand, Global, Output};
use crate::audit::{AuditSink, Pending};
use crate::{one_line, Failure};

use audit::audit_command;
use input::read_value;
use policy::policy_command;
use read::selector;
use rollout::scope_of;
// Also used by `status.rs`.
pub(crate) use table::print_table;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let Cli { global, command } = cli;
    match command {
        Command::Policy(args) => policy_command(&global, args),
        Command::Audit(args) => audit_command(&global, args),
        Command::Inject {
            file,
            namespace,
            config,
            registry_lookup,
            registry_auth,
            registry_ca,
        } => crate::inject::run(
            &file,
            namespace.as_deref(),
            config.as_deref(),
            match global.output {
                Output::Text => crate::inject::Format::Yaml,
                Output::Json => crate::inject::Format::Json,
            },
            registry_lookup
                .then_some(crate::inject::RegistryLookup {
                    auth: registry_auth,
                    ca: registry_ca,
                })
                .as_ref(),
        ),
        command => {
            let mut ctx = Ctx::open(&global).await?;
            ctx.run(command).await
        }
    }
}

/// What a store command works with.
struct Ctx {
    store: Store,
    audit: AuditSink,
    actor: String,
    output: Output,
    backend: &'static str,
    timeout: std::time::Duration,
}

fn usage<E: std::fmt::Display>(e: E) -> Failure {
    Failure::usage(one_line(&e.to_string()))
}

fn store_failure(e: StoreError) -> Failure {
    Failure::failed(one_line(&e.to_string()))
}

fn env_name(s: &str) -> Result<Environment, Failure> {
    Environment::parse(s).map_err(usage)
}

fn names(env: &str, service: &str, key: &str) -> Result<(Environment, Service, Key), Failure> {
    Ok((
        env_name(env)?,
        Service::parse(service).map_err(usage)?,
        Key::parse(key).map_err(usage)?,
    ))
}

/// Who is acting, for audit records and the local store's history.
fn actor() -> String {
    for var in ["SIDEKEY_ACTOR", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v;
            }
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return format!("uid:{}", meta.uid());
        }
    }
    "unknown".to_owned()
}

impl Ctx {
    async fn open(global: &Global) -> Result<Ctx, Failure> {
        let backend: Backend = global.store.parse().map_err(usage)?;
        let prefix = Prefix::parse(&global.prefix).map_err(usage)?;
        let timeout = sidekey_store::parse_timeout(&global.timeout).map_err(usage)?;
        let actor = actor();
        let config = StoreConfig {
            backend: backend.clone(),
            prefix,
            kms_key: global.kms_key.clone(),
            aws: sidekey_store::AwsSettings {
                region: global.region.clone(),
                endpoint_url: global.endpoint_url.clone(),
            },
            timeout,
            actor: actor.clone(),
            allow_legacy: global.allow_legacy,
        };
        let store = Store::open(&config).await.map_err(store_failure)?;
        Ok(Ctx {
            store,
            audit: AuditSink::new(global.audit_log.clone()),
            actor,
            output: global.output,
            backend: match backend {
                Backend::Ssm => "ssm",
                Backend::File(_) => "file",
            },
            timeout,
        })
    }

    fn pending(&self, event: &str, env: &Environment) -> Pending {
        let mut p = Pending::new(event, Some(env.as_str()), &self.actor);
        p.extra("store", self.backend);
        p.extra("kms_key", self.store.key_id());
        p
    }

    /// Records the outcome of an audited command and passes it on.
    fn close(&mut self, pending: Pending, result: Result<(), Failure>) -> Result<(), Failure> {
        let event = pending.finish(&result);
        self.audit.record(event)?;
        result
    }

    async fn run(&mut self, command: Command) -> Result<(), Failure> {
        match command {
            Command::Put {
                env,
                service,
                key,
                source,
                native,
                label,
            } => {
                let (env, service, key) = names(&env, &service, &key)?;
                let label = label
                    .map(|l| Label::parse(&l).map(|l| l.to_string()))
                    .transpose()
                    .map_err(usage)?;
                let value = read_value(&source)?;
                let options = PutOptions { native, label };
                self.write(&env, &service, &key, &value, &options, "put")
                    .await
            }
            Command::Rotate {
                env,
                service,
                key,
                source,
                restart,
            } => {
                let (env, service, key) = names(&env, &service, &key)?;
                let value = read_value(&source)?;
                self.rotate(env, service, key, &value, &restart).await
            }
            Command::Status {
                env,
                service,
                namespace,
            } => {
                let scope = scope_of(&env, service)?;
                crate::status::run(&self.store, &scope, namespace.as_deref(), self.output).await
            }
            Command::Restart {
                env,
                service,
                dry_run,
                wait,
                include_refresh,
                max_in_flight,
            } => {
                let scope = scope_of(&env, service)?;
                let options = crate::restart::Options {
                    dry_run,
                    wait,
                    timeout: self.timeout,
                    include_refresh,
                    max_in_flight,
                };
                self.restart(&scope, &options).await
            }
            Command::Get {
                env,
                service,
                key,
                version,
                label,
                reveal,
            } => {
                let (env, service, key) = names(&env, &service, &key)?;
                let selector = selector(version.as_deref(), label.as_deref())?;
                self.get(&env, &service, &key, &selector, reveal).await
            }
            Command::List { env, service } => {
                let env = env_name(&env)?;
                let service = service
                    .map(|s| Service::parse(&s))
                    .transpose()
                    .map_err(usage)?;
                self.list(&env, service.as_ref()).await
            }
            Command::History { env, service, key } => {
                let (env, service, key) = names(&env, &service, &key)?;
                self.history(&env, &service, &key).await
            }
            Command::Delete { env, service, key } => {
                let (env, service, key) = names(&env, &service, &key)?;
                self.delete(&env, &service, &key).await
            }
            Command::Env(EnvCommand::List) => self.env_list().await,
            Command::Env(EnvCommand::Copy {
                from,
                to,
                overwrite,
                restart,
            }) => {
                let (from, to) = (env_name(&from)?, env_name(&to)?);
                self.env_copy(&from, &to, overwrite).await?;
                // Every key of TO has a new version: the workloads of TO (and
                // of environments inheriting TO) that use any of them roll.
                let scope = crate::status::Scope {
                    environment: to,
                    service: None,
                    key: None,
                };
                self.after_write(&scope, &restart).await
            }
            Command::Env(EnvCommand::Destroy { env, yes }) => {
                let env = env_name(&env)?;
                if !yes {
                    return Err(Failure::usage(format!(
                        "env destroy deletes every secret of {env} and all their versions: add --yes to confirm"
                    )));
                }
                self.env_destroy(&env).await
            }
            Command::Import {
                env,
                service,
                dotenv,
            } => {
                let env = env_name(&env)?;
                let service = Service::parse(&service).map_err(usage)?;
                self.import(&env, &service, &dotenv).await
            }
            Command::Export {
                env,
                service,
                format,
            } => {
                let env = env_name(&env)?;
                let service = Service::parse(&service).map_err(usage)?;
                self.export(&env, &service, format).await
            }
            Command::Rekey {
                env,
                service,
                restart,
            } => {
                let env = env_name(&env)?;
                let service = Service::parse(&service).map_err(usage)?;
                self.rekey(env, service, &restart).await
            }
            Command::Exec {
                env,
                services,
                command,
            } => {
                let env = env_name(&env)?;
                let services = sidekey_model::parse_services(&services).map_err(usage)?;
                if services.is_empty() {
                    return Err(Failure::usage("exec needs at least one service"));
                }
                self.exec(&env, &services, command).await
            }
            Command::Policy(_) | Command::Audit(_) | Command::Inject { .. } => {
                Err(Failure::failed("internal: not a store command"))
            }
        }
    }
}
