//! `put`, `rotate`, `delete` and `rekey`: the commands that write one
//! service's secrets, each with its audit record.

use serde_json::json;
use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Service};
use sidekey_store::{PutOptions, StoreError};

use super::{store_failure, Ctx};
use crate::args::{Output, RestartAfter};
use crate::Failure;

impl Ctx {
    pub(super) async fn write(
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

    /// `rotate`: a new version of a secret that exists (checked from its
    /// metadata), then `--restart` or the hint.
    pub(super) async fn rotate(
        &mut self,
        env: Environment,
        service: Service,
        key: Key,
        value: &Secret,
        restart: &RestartAfter,
    ) -> Result<(), Failure> {
        let name =
            sidekey_model::ParamPath::new(self.store.prefix(), &env, &service, &key).to_string();
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
            value,
            &PutOptions::default(),
            "rotate",
        )
        .await?;
        let scope = crate::status::Scope {
            environment: env,
            service: Some(service),
            key: Some(key),
        };
        self.after_write(&scope, restart).await
    }

    /// `delete`: every version of one secret.
    pub(super) async fn delete(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
    ) -> Result<(), Failure> {
        let mut pending = self.pending("delete", env);
        pending.secret(service.as_str(), key.as_str(), None);
        let result = self.store.delete(env, service, key).await.map(|path| {
            println!("{env}/{service}/{key} deleted ({path})");
        });
        self.close(pending, result.map_err(store_failure))
    }

    /// `rekey`: a new data key for a service, every value re-encrypted
    /// under it, then `--restart` or the hint.
    pub(super) async fn rekey(
        &mut self,
        env: Environment,
        service: Service,
        restart: &RestartAfter,
    ) -> Result<(), Failure> {
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
        self.after_write(&scope, restart).await
    }
}
