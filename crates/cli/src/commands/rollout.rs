//! What `status` and `restart` look at, and `--restart` after a write.

use sidekey_model::Service;

use super::{env_name, usage, Ctx};
use crate::Failure;

impl Ctx {
    /// After rotate, rekey or env copy: `--restart` rolls the workloads using what was
    /// written; without it, a hint on standard error when a kubeconfig is there.
    pub(super) async fn after_write(
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

    pub(super) async fn restart(
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
}

/// What `status` and `restart` look at: ENV and, if given, one SERVICE.
pub(super) fn scope_of(
    env: &str,
    service: Option<String>,
) -> Result<crate::status::Scope, Failure> {
    Ok(crate::status::Scope {
        environment: env_name(env)?,
        service: service
            .map(|s| Service::parse(&s))
            .transpose()
            .map_err(usage)?,
        key: None,
    })
}
