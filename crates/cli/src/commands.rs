//! The commands. Each parses its names first (a bad name is a usage error,
//! before any call), then talks to the store, then writes one audit record
//! for anything that writes or reveals.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use serde_json::json;
use sidekey_audit::{Filter, Outcome};
use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Label, Merge, Prefix, Rank, Selector, Service};
use sidekey_store::{Backend, PutOptions, Store, StoreConfig, StoreError};

use crate::args::{
    AuditArgs, AuditCommand, Cli, Command, EnvCommand, ExportFormat, Global, Output, PolicyArgs,
    ValueSource,
};
use crate::audit::{AuditSink, Pending};
use crate::{dotenv, one_line, policy, Failure};

/// The longest value `--generate` makes.
const MAX_GENERATE: usize = 4096;

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
                let name = sidekey_model::ParamPath::new(self.store.prefix(), &env, &service, &key)
                    .to_string();
                // Metadata only: the current value is not read.
                match self.store.params().info(&name, self.store.retry()).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => {
                        return Err(Failure::failed(format!(
                            "{env}/{service}/{key} does not exist: rotate adds a version to an existing secret; use `sidekey put` to create it"
                        )))
                    }
                    Err(e) => return Err(store_failure(e)),
                }
                self.write(
                    &env,
                    &service,
                    &key,
                    &value,
                    &PutOptions::default(),
                    "rotate",
                )
                .await?;
                let scope = crate::status::Scope {
                    environment: env,
                    service: Some(service),
                    key: Some(key),
                };
                self.after_write(&scope, &restart).await
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
                let mut pending = self.pending("delete", &env);
                pending.secret(service.as_str(), key.as_str(), None);
                let result = self.store.delete(&env, &service, &key).await.map(|path| {
                    println!("{env}/{service}/{key} deleted ({path})");
                });
                self.close(pending, result.map_err(store_failure))
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
                let mut pending = self.pending("rekey", &env);
                let result = self.store.rekey(&env, &service).await.map(|written| {
                    for w in &written {
                        pending.secret(service.as_str(), w.path.key().as_str(), Some(w.version));
                    }
                    println!(
                        "{env}/{service}: new data key, {} values re-encrypted",
                        written.len()
                    );
                });
                self.close(pending, result.map_err(store_failure))?;
                // A rekey writes new versions of every key of the service.
                let scope = crate::status::Scope {
                    environment: env,
                    service: Some(service),
                    key: None,
                };
                self.after_write(&scope, &restart).await
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

    /// After rotate, rekey or env copy: `--restart` rolls the workloads using what was
    /// written; without it, a hint on standard error when a kubeconfig is there.
    async fn after_write(
        &mut self,
        scope: &crate::status::Scope,
        restart: &crate::args::RestartAfter,
    ) -> Result<(), Failure> {
        if !restart.restart {
            crate::restart::hint(&self.store, scope).await;
            return Ok(());
        }
        let options = crate::restart::Options {
            dry_run: false,
            wait: restart.wait,
            timeout: self.timeout,
            include_refresh: restart.include_refresh,
            max_in_flight: restart.max_in_flight,
        };
        self.restart(scope, &options).await
    }

    async fn restart(
        &mut self,
        scope: &crate::status::Scope,
        options: &crate::restart::Options,
    ) -> Result<(), Failure> {
        let who = crate::restart::Actor {
            audit: &mut self.audit,
            actor: &self.actor,
            output: self.output,
        };
        crate::restart::run(&self.store, scope, options, who)
            .await
            .map(|_| ())
    }

    async fn write(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
        value: &Secret,
        options: &PutOptions,
        event: &str,
    ) -> Result<(), Failure> {
        let mut pending = self.pending(event, env);
        if options.native {
            pending.extra("format", "native");
        }
        let result = self.store.put(env, service, key, value, options).await;
        let result = match result {
            Ok(w) => {
                pending.secret(service.as_str(), key.as_str(), Some(w.version));
                match self.output {
                    Output::Text => println!("{env}/{service}/{key} version {}", w.version),
                    Output::Json => println!(
                        "{}",
                        json!({"environment": env.as_str(), "service": service.as_str(), "key": key.as_str(), "version": w.version})
                    ),
                }
                Ok(())
            }
            Err(e) => {
                pending.secret(service.as_str(), key.as_str(), None);
                Err(store_failure(e))
            }
        };
        self.close(pending, result)
    }

    async fn get(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
        selector: &Selector,
        reveal: bool,
    ) -> Result<(), Failure> {
        if !reveal {
            let name =
                sidekey_model::ParamPath::new(self.store.prefix(), env, service, key).to_string();
            let suffix = selector.ssm_suffix();
            let stored = self
                .store
                .params()
                .get(&name, suffix.as_deref(), self.store.retry())
                .await
                .map_err(store_failure)?;
            let kind = match stored.param_type {
                sidekey_store::ParamType::SecureString => "native",
                sidekey_store::ParamType::String
                    if stored
                        .value
                        .expose()
                        .starts_with(sidekey_envelope::PREFIX_SK2.as_bytes()) =>
                {
                    "envelope"
                }
                sidekey_store::ParamType::String
                    if stored
                        .value
                        .expose()
                        .starts_with(sidekey_envelope::PREFIX.as_bytes()) =>
                {
                    "sk1"
                }
                sidekey_store::ParamType::String => "plain",
            };
            let modified = stored
                .last_modified
                .map(format_time)
                .unwrap_or_else(|| "-".to_owned());
            match self.output {
                Output::Text => println!(
                    "{env}/{service}/{key} version {} ({kind}), modified {modified}; add --reveal to print the value",
                    stored.version
                ),
                Output::Json => println!(
                    "{}",
                    json!({"environment": env.as_str(), "service": service.as_str(), "key": key.as_str(),
                           "version": stored.version, "format": kind, "modified": modified, "parameter": name})
                ),
            }
            return Ok(());
        }
        let mut pending = self.pending("reveal", env);
        let revealed = match self.store.get(env, service, key, selector).await {
            Ok(revealed) => revealed,
            Err(e) => {
                pending.secret(service.as_str(), key.as_str(), None);
                return self.close(pending, Err(store_failure(e)));
            }
        };
        pending.secret(service.as_str(), key.as_str(), Some(revealed.version));
        // The record first: a value is shown only once its reveal is on the
        // audit trail; if the record cannot be written, nothing is printed.
        self.close(pending, Ok(()))?;
        let mut out = std::io::stdout().lock();
        out.write_all(revealed.value.expose())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
    }

    async fn list(&mut self, env: &Environment, service: Option<&Service>) -> Result<(), Failure> {
        let keys = self.store.list(env, service).await.map_err(store_failure)?;
        match self.output {
            Output::Json => {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"service": k.path.service().as_str(), "key": k.path.key().as_str(), "version": k.version,
                               "modified": k.last_modified.map(format_time), "modified_by": k.last_modified_user})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            Output::Text => {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            format!("{}/{}", k.path.service(), k.path.key()),
                            k.version.to_string(),
                            k.last_modified
                                .map(format_time)
                                .unwrap_or_else(|| "-".into()),
                            k.last_modified_user.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print_table(&["KEY", "VERSION", "MODIFIED", "BY"], &rows);
            }
        }
        Ok(())
    }

    async fn history(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
    ) -> Result<(), Failure> {
        let entries = self
            .store
            .history(env, service, key)
            .await
            .map_err(store_failure)?;
        match self.output {
            Output::Json => {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|h| {
                        json!({"version": h.version, "modified": h.last_modified.map(format_time),
                               "modified_by": h.last_modified_user, "labels": h.labels, "type": h.param_type.as_str()})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            Output::Text => {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|h| {
                        vec![
                            h.version.to_string(),
                            h.last_modified
                                .map(format_time)
                                .unwrap_or_else(|| "-".into()),
                            h.last_modified_user.clone().unwrap_or_else(|| "-".into()),
                            if h.labels.is_empty() {
                                "-".into()
                            } else {
                                h.labels.join(",")
                            },
                        ]
                    })
                    .collect();
                print_table(&["VERSION", "MODIFIED", "BY", "LABELS"], &rows);
            }
        }
        Ok(())
    }

    async fn env_list(&mut self) -> Result<(), Failure> {
        let envs = self.store.environments().await.map_err(store_failure)?;
        match self.output {
            Output::Json => println!(
                "{}",
                json!(envs.iter().map(|e| e.as_str()).collect::<Vec<_>>())
            ),
            Output::Text => {
                for e in envs {
                    println!("{e}");
                }
            }
        }
        Ok(())
    }

    async fn env_copy(
        &mut self,
        from: &Environment,
        to: &Environment,
        overwrite: bool,
    ) -> Result<(), Failure> {
        if from == to {
            return Err(Failure::usage(format!(
                "env copy: FROM and TO are both {from}"
            )));
        }
        if self
            .store
            .list(from, None)
            .await
            .map_err(store_failure)?
            .is_empty()
        {
            return Err(Failure::failed(format!(
                "environment {from} has no secrets to copy"
            )));
        }
        if !overwrite
            && !self
                .store
                .list(to, None)
                .await
                .map_err(store_failure)?
                .is_empty()
        {
            return Err(Failure::failed(format!(
                "environment {to} already has secrets: add --overwrite to write new versions over them"
            )));
        }
        let mut pending = self.pending("env-copy", to);
        pending.extra("from", from.as_str());
        let result = self.store.copy_environment(from, to).await.map(|written| {
            for w in &written {
                pending.secret(
                    w.path.service().as_str(),
                    w.path.key().as_str(),
                    Some(w.version),
                );
            }
            println!(
                "{from} -> {to}: {} secrets copied and re-encrypted",
                written.len()
            );
        });
        self.close(pending, result.map_err(store_failure))
    }

    async fn env_destroy(&mut self, env: &Environment) -> Result<(), Failure> {
        let mut pending = self.pending("env-destroy", env);
        let result = self.store.destroy_environment(env).await.map(|deleted| {
            for p in &deleted {
                pending.secret(p.service().as_str(), p.key().as_str(), None);
            }
            println!("{env}: {} secrets deleted", deleted.len());
        });
        self.close(pending, result.map_err(store_failure))
    }

    async fn import(
        &mut self,
        env: &Environment,
        service: &Service,
        file: &Path,
    ) -> Result<(), Failure> {
        let text = read_text_input(file)?;
        let items =
            dotenv::parse(&text).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
        if items.is_empty() {
            return Err(Failure::usage(format!(
                "{}: no KEY=value lines",
                file.display()
            )));
        }
        let mut pending = self.pending("import", env);
        let refs: Vec<(Key, &Secret)> = items.iter().map(|(k, v)| (k.clone(), v)).collect();
        let result = self
            .store
            .put_many(env, service, &refs, &PutOptions::default())
            .await
            .map(|written| {
                for w in &written {
                    pending.secret(service.as_str(), w.path.key().as_str(), Some(w.version));
                }
                println!("{env}/{service}: {} secrets imported", written.len());
            });
        self.close(pending, result.map_err(store_failure))
    }

    async fn export(
        &mut self,
        env: &Environment,
        service: &Service,
        format: ExportFormat,
    ) -> Result<(), Failure> {
        let mut pending = self.pending("export", env);
        let rendered = self.render_export(env, service, format, &mut pending).await;
        let mut out = match rendered {
            Ok(out) => out,
            Err(e) => return self.close(pending, Err(e)),
        };
        // The record first: values are printed only once the export is on
        // the audit trail; if the record cannot be written, nothing is.
        if let Err(e) = self.close(pending, Ok(())) {
            zeroize_vec(&mut out);
            return Err(e);
        }
        let mut stdout = std::io::stdout().lock();
        let written = stdout.write_all(&out).and_then(|()| stdout.flush());
        // The buffer held values: wipe it.
        zeroize_vec(&mut out);
        written.map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
    }

    /// The export's bytes, or why there are none (nothing half-rendered
    /// is kept: a buffer given up is wiped).
    async fn render_export(
        &mut self,
        env: &Environment,
        service: &Service,
        format: ExportFormat,
        pending: &mut Pending,
    ) -> Result<Vec<u8>, Failure> {
        let values = self
            .store
            .read_service(env, service)
            .await
            .map_err(store_failure)?;
        // Room for every line up front: a growing buffer would leave copies
        // of values in freed memory.
        let mut out: Vec<u8> = Vec::with_capacity(
            values
                .iter()
                .map(|r| sidekey_model::dotenv::line_len(r.path.key().as_str(), "") + r.value.len())
                .sum(),
        );
        let mut object = serde_json::Map::new();
        let mut failure = None;
        for r in &values {
            pending.secret(service.as_str(), r.path.key().as_str(), Some(r.version));
            let Some(text) = r.value.expose_str() else {
                failure = Some(Failure::failed(format!(
                    "{} is not UTF-8 text and cannot be exported as {}: read it with `sidekey get --reveal`",
                    r.path,
                    match format {
                        ExportFormat::Dotenv => "dotenv",
                        ExportFormat::Json => "JSON",
                    }
                )));
                break;
            };
            match format {
                ExportFormat::Dotenv => {
                    if let Err(refusal) = dotenv::write_line(&mut out, r.path.key().as_str(), text)
                    {
                        failure = Some(Failure::failed(format!(
                            "{}: {refusal} (--format json)",
                            r.path
                        )));
                        break;
                    }
                }
                ExportFormat::Json => {
                    object.insert(
                        r.path.key().to_string(),
                        serde_json::Value::String(text.to_owned()),
                    );
                }
            }
        }
        if failure.is_none() && format == ExportFormat::Json {
            match serde_json::to_vec_pretty(&object) {
                Ok(mut json) => {
                    json.push(b'\n');
                    zeroize_vec(&mut out);
                    out = json;
                }
                Err(e) => failure = Some(Failure::failed(e.to_string())),
            }
        }
        for v in object.values_mut() {
            if let serde_json::Value::String(s) = v {
                zeroize_string(s);
            }
        }
        match failure {
            Some(f) => {
                zeroize_vec(&mut out);
                Err(f)
            }
            None => Ok(out),
        }
    }

    async fn exec(
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

fn zeroize_vec(v: &mut Vec<u8>) {
    use zeroize::Zeroize;
    v.zeroize();
}

fn zeroize_string(s: &mut String) {
    use zeroize::Zeroize;
    s.zeroize();
}

fn selector(version: Option<&str>, label: Option<&str>) -> Result<Selector, Failure> {
    match (version, label) {
        (Some(v), _) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Selector::Version(n)),
            _ => Err(Failure::usage(format!(
                "--version {v:?}: a version is a whole number from 1"
            ))),
        },
        (None, Some(l)) => Label::parse(l).map(Selector::Label).map_err(usage),
        (None, None) => Ok(Selector::Latest),
    }
}

/// The new value of a put or rotate: a file, generated, or standard input.
fn read_value(source: &ValueSource) -> Result<Secret, Failure> {
    if let Some(n) = source.generate {
        if n == 0 || n > MAX_GENERATE {
            return Err(Failure::usage(format!(
                "--generate {n}: choose 1 to {MAX_GENERATE} characters"
            )));
        }
        return generate(n);
    }
    if let Some(path) = &source.from_file {
        return std::fs::File::open(path)
            .and_then(read_all)
            .map(|mut bytes| Secret::new(std::mem::take(&mut *bytes)))
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())));
    }
    let stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        return Err(Failure::usage(
            "no value given: pipe it on standard input, or use --from-file FILE or --generate N (values are never read from a terminal, where they would echo)",
        ));
    }
    // Read through a duplicate of the descriptor, unbuffered: standard
    // input's own buffer would keep a copy of the value.
    drop(stdin);
    let mut buf = raw_stdin()
        .and_then(read_all)
        .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?;
    Ok(Secret::new(std::mem::take(&mut *buf)))
}

/// Standard input as an unbuffered file (a duplicate of descriptor 0).
fn raw_stdin() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        std::io::stdin().as_fd().try_clone_to_owned()?,
    ))
}

/// Reads all of `r` (a secret value, a dotenv file) leaving no copy
/// behind: the buffer grows by moving into one twice its size and
/// zeroizing the old one, where `read_to_end` would hand the old one back
/// to the allocator as it is.
fn read_all(mut r: impl Read) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use zeroize::Zeroizing;
    let mut buf = Zeroizing::new(Vec::with_capacity(8 * 1024));
    let mut chunk = Zeroizing::new([0u8; 8 * 1024]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() + n > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.len() + n).max(buf.capacity().saturating_mul(2)),
            ));
            bigger.extend_from_slice(&buf);
            // The old buffer is zeroized as it drops.
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// N characters from A-Z, a-z, 0-9, uniformly (rejection sampling over
/// random bytes from the system's CSPRNG through ring).
fn generate(n: usize) -> Result<Secret, Failure> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        rng.fill(&mut buf)
            .map_err(|_| Failure::failed("the system random number generator failed"))?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the choice.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize]);
            }
        }
    }
    zeroize_bytes(&mut buf);
    Ok(Secret::new(out))
}

fn zeroize_bytes(b: &mut [u8]) {
    use zeroize::Zeroize;
    b.zeroize();
}

/// A dotenv file's text (its values are secrets: zeroized when dropped).
fn read_text_input(file: &Path) -> Result<zeroize::Zeroizing<String>, Failure> {
    let mut bytes = if file.as_os_str() == "-" {
        raw_stdin()
            .and_then(read_all)
            .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::File::open(file)
            .and_then(read_all)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?
    };
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text)),
        Err(e) => {
            drop(zeroize::Zeroizing::new(e.into_bytes()));
            Err(Failure::usage(format!(
                "{}: a dotenv file must be UTF-8 text",
                file.display()
            )))
        }
    }
}

fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What `status` and `restart` look at: ENV and, if given, one SERVICE.
fn scope_of(env: &str, service: Option<String>) -> Result<crate::status::Scope, Failure> {
    Ok(crate::status::Scope {
        environment: env_name(env)?,
        service: service
            .map(|s| Service::parse(&s))
            .transpose()
            .map_err(usage)?,
        key: None,
    })
}

/// Prints rows under a header, columns padded to their widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn policy_command(global: &Global, args: PolicyArgs) -> Result<(), Failure> {
    let prefix = Prefix::parse(&global.prefix).map_err(usage)?;
    let environment = match (&args.env, args.pod_identity) {
        (Some(_), true) => {
            return Err(Failure::usage(
                "--pod-identity takes the environment from the pod's namespace tag: drop ENV",
            ))
        }
        (Some(e), false) => Some(env_name(e)?),
        (None, _) => None,
    };
    let inherit = args
        .inherit
        .iter()
        .map(|b| env_name(b))
        .collect::<Result<Vec<_>, _>>()?;
    policy::check_account(&args.account).map_err(Failure::usage)?;
    policy::check_kms_key_arn(&args.kms_key_arn).map_err(Failure::usage)?;
    // The parameters' region: --policy-region, else --region, else the
    // key's own region (never a wildcard).
    let (flag, region) = match (&args.policy_region, &global.region) {
        (Some(r), _) => ("--policy-region", r.as_str()),
        (None, Some(r)) => ("--region", r.as_str()),
        (None, None) => ("--kms-key-arn", policy::arn_region(&args.kms_key_arn)),
    };
    policy::check_region(flag, region).map_err(Failure::usage)?;
    let doc = policy::build(&policy::PolicyRequest {
        prefix: &prefix,
        environment: environment.as_ref(),
        inherit: &inherit,
        account: &args.account,
        region,
        kms_key_arn: &args.kms_key_arn,
        native: args.native,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn audit_command(global: &Global, args: AuditArgs) -> Result<(), Failure> {
    if let Some(AuditCommand::Verify { files }) = args.verify {
        let mut failed = 0;
        for file in &files {
            let reader = std::fs::File::open(file)
                .map(std::io::BufReader::new)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?;
            match sidekey_audit::verify(reader) {
                Ok(summary) => println!(
                    "{}: {} records, chain intact, last hash {} (keep it elsewhere: removing or editing the last line is only caught against it)",
                    file.display(),
                    summary.records,
                    summary.last_hash
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("sidekey: {}: {e}", file.display());
                }
            }
        }
        if failed > 0 {
            return Err(Failure::failed(format!(
                "audit verification failed for {failed} of {} files",
                files.len()
            )));
        }
        return Ok(());
    }
    let outcome = args
        .outcome
        .as_deref()
        .map(|o| {
            o.parse::<Outcome>().map_err(|_| {
                Failure::usage(format!(
                    "--outcome {o:?}: use success, denied, failure or skipped"
                ))
            })
        })
        .transpose()?;
    let since = args
        .since
        .as_deref()
        .map(|s| sidekey_audit::parse_since(s, SystemTime::now()).map_err(usage))
        .transpose()?;
    let filter = Filter {
        environment: args.environment,
        service: args.service,
        key: args.key,
        pod: args.pod,
        outcome,
        since,
    };
    let mut records = Vec::new();
    if args.files.is_empty() {
        let stdin = std::io::stdin();
        records.extend(
            sidekey_audit::read_records(stdin.lock())
                .map_err(|e| Failure::failed(format!("standard input: {e}")))?,
        );
    }
    for file in &args.files {
        let reader = std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?;
        records.extend(
            sidekey_audit::read_records(reader)
                .map_err(|e| Failure::failed(format!("{}: {e}", file.display())))?,
        );
    }
    let mut selected: Vec<_> = records.into_iter().filter(|r| filter.matches(r)).collect();
    selected.sort_by(|a, b| a.ts.cmp(&b.ts));
    if let Some(out) = &args.html {
        return crate::audit::write_html(out, &args.files, &filter, &selected);
    }
    match global.output {
        Output::Text => print!("{}", sidekey_audit::render_table(&selected)),
        Output::Json => print!("{}", sidekey_audit::render_json(&selected)),
    }
    Ok(())
}
