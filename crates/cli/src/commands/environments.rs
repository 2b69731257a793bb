//! `env list`, `env copy` and `env destroy`: whole environments.

use serde_json::json;
use sidekey_model::Environment;

use super::{store_failure, Ctx};
use crate::args::Output;
use crate::Failure;

impl Ctx {
    pub(super) async fn env_list(&mut self) -> Result<(), Failure> {
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

    pub(super) async fn env_copy(
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

    pub(super) async fn env_destroy(&mut self, env: &Environment) -> Result<(), Failure> {
        let mut pending = self.pending("env-destroy", env);
        let result = self.store.destroy_environment(env).await.map(|deleted| {
            for p in &deleted {
                pending.secret(p.service().as_str(), p.key().as_str(), None);
            }
            println!("{env}: {} secrets deleted", deleted.len());
        });
        self.close(pending, result.map_err(store_failure))
    }
}
