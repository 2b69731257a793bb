//! The fetch: which calls a pod's secrets take, made in parallel under one
//! deadline, and how their results merge.
//!
//! - One `GetParametersByPath` walk (pages of 10) per (environment layer,
//!   service): the bases first, then the environment itself.
//! - Explicit picks with a version or label selector, or of a service not
//!   in the service list, are read with `GetParameters` in batches of 10
//!   names (`name:selector`), one name per layer; a pick resolves from the
//!   highest layer that has it. A latest-version pick of a listed service
//!   is served from that service's walk and costs no call.
//! - At most [`CONCURRENCY`] calls are in flight; the store retries
//!   transient failures with jittered backoff inside its one deadline.
//! - Every value is decrypted by the store, which unwraps each distinct
//!   data key once (concurrent readers of one key share the KMS call).
//! - Precedence is [`sidekey_model::Merge`] with [`Rank`]: layer-major,
//!   services in order, picks above all.
//!
//! A [`Fetcher`] can run again (the sidecar's refresh): a value whose
//! (name, version) it already holds is reused, not decrypted again.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use sidekey_envelope::Secret;
use sidekey_model::{
    layers, service_path, Environment, Merge, ParamPath, Pick, Prefix, Rank, Selector, Service,
};
use sidekey_store::{StoreError, StoredParam, ValueKind, BATCH};

use crate::config::{Config, OnMissing};

/// Calls in flight at once.
pub const CONCURRENCY: usize = 8;

/// What to read for one pod: environment layers, services, picks.
#[derive(Debug, Clone)]
pub struct Plan {
    prefix: Prefix,
    layers: Vec<Environment>,
    services: Vec<Service>,
    picks: Vec<Pick>,
}

/// One `GetParametersByPath` walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRequest {
    /// Index into [`Plan::layers`].
    pub layer: usize,
    /// Index into the service list.
    pub service: usize,
    /// `/{prefix}/{environment}/{service}/`.
    pub path: String,
}

/// One name in a `GetParameters` batch, and the (pick, layer) pairs it
/// answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The name as sent: `/{prefix}/{env}/{service}/{key}` or with
    /// `:version` / `:label`.
    pub name: String,
    /// The name without the selector.
    pub base: String,
    /// (pick index, layer index) pairs that read this name.
    pub users: Vec<(usize, usize)>,
}

impl Plan {
    /// The plan for `environment` with its bases (lowest first).
    pub fn new(
        prefix: Prefix,
        environment: &Environment,
        inherit: &[Environment],
        services: Vec<Service>,
        picks: Vec<Pick>,
    ) -> Plan {
        Plan {
            prefix,
            layers: layers(environment, inherit),
            services,
            picks,
        }
    }

    /// The plan a configuration asks for.
    pub fn from_config(config: &Config) -> Plan {
        Plan::new(
            config.prefix().clone(),
            config.environment(),
            config.inherit(),
            config.services().to_vec(),
            config.picks().to_vec(),
        )
    }

    /// The environment layers, lowest precedence first; the last one is
    /// the pod's own environment.
    pub fn layers(&self) -> &[Environment] {
        &self.layers
    }

    /// The pod's own environment.
    pub fn environment(&self) -> &Environment {
        self.layers
            .last()
            .expect("layers() always holds the environment")
    }

    /// The services, in order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The picks, in order.
    pub fn picks(&self) -> &[Pick] {
        &self.picks
    }

    /// The by-path walks, layer-major.
    pub fn path_requests(&self) -> Vec<PathRequest> {
        let mut out = Vec::with_capacity(self.layers.len() * self.services.len());
        for (layer, env) in self.layers.iter().enumerate() {
            for (service, name) in self.services.iter().enumerate() {
                out.push(PathRequest {
                    layer,
                    service,
                    path: service_path(&self.prefix, env, name),
                });
            }
        }
        out
    }

    /// The index of the listed service a pick reads its latest value from,
    /// when the service walks already cover it.
    pub fn pick_service(&self, pick: usize) -> Option<usize> {
        let p = &self.picks[pick];
        if !p.selector.is_latest() {
            return None;
        }
        self.services.iter().position(|s| *s == p.service)
    }

    /// `GetParameters` batches for the picks the walks do not cover: at
    /// most [`BATCH`] names each, a name asked once however many picks
    /// use it, and never two selectors of one parameter in the same batch
    /// (SSM answers with the bare name, so they could not be told apart).
    pub fn pick_batches(&self) -> Vec<Vec<BatchEntry>> {
        let mut entries: Vec<BatchEntry> = Vec::new();
        for (index, pick) in self.picks.iter().enumerate() {
            if self.pick_service(index).is_some() {
                continue;
            }
            for (layer, env) in self.layers.iter().enumerate().rev() {
                let path = pick.param_path(&self.prefix, env);
                let name = path.with_selector(&pick.selector);
                match entries.iter_mut().find(|e| e.name == name) {
                    Some(e) => e.users.push((index, layer)),
                    None => entries.push(BatchEntry {
                        name,
                        base: path.to_string(),
                        users: vec![(index, layer)],
                    }),
                }
            }
        }
        let mut batches: Vec<Vec<BatchEntry>> = Vec::new();
        for entry in entries {
            let slot = batches
                .iter_mut()
                .find(|b| b.len() < BATCH && b.iter().all(|e| e.base != entry.base));
            match slot {
                Some(batch) => batch.push(entry),
                None => batches.push(vec![entry]),
            }
        }
        batches
    }
}

/// One value as read and decrypted.
#[derive(Debug, Clone)]
pub struct Got {
    /// Where it was read.
    pub path: ParamPath,
    /// Its version.
    pub version: u64,
    /// Envelope, native SecureString or plain String.
    pub kind: ValueKind,
    /// The plaintext, shared with the fetcher's cache; zeroized when the
    /// last holder drops it.
    pub value: Arc<Secret>,
}

/// A variable and the value it gets.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The environment variable (a key, or a pick's variable name).
    pub var: String,
    /// Its value and where it came from.
    pub got: Got,
}

/// A requested secret that does not exist (skipped with
/// `SIDEKEY_ON_MISSING=skip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The parameter (`name` or `name:selector`), or a service's path.
    pub parameter: String,
    /// `ParameterNotFound` or `ParameterVersionNotFound`.
    pub code: &'static str,
}

/// The result of one fetch.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The winners, sorted by variable name.
    pub secrets: Vec<Delivered>,
    /// What was requested, does not exist, and was skipped.
    pub skipped: Vec<Missing>,
}

impl Fetched {
    /// (variable, parameter, version) of every secret: equal for two
    /// fetches that deliver the same set.
    pub fn fingerprint(&self) -> Vec<(String, String, u64)> {
        self.secrets
            .iter()
            .map(|d| (d.var.clone(), d.got.path.to_string(), d.got.version))
            .collect()
    }
}

/// Why a fetch failed: the parameter (or path), the AWS error code when
/// there is one, and a detail. Never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {}", describe(.code.as_deref(), .detail.as_deref()))]
pub struct FetchError {
    /// The parameter, path or batch of names that failed.
    pub parameter: String,
    /// The AWS error code (`ParameterNotFound`, `ThrottlingException`, ...).
    pub code: Option<String>,
    /// More about it.
    pub detail: Option<String>,
}

fn describe(code: Option<&str>, detail: Option<&str>) -> String {
    match (code, detail) {
        (Some(c), Some(d)) => format!("{c}: {d}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => "failed".to_owned(),
    }
}

impl FetchError {
    /// Names the parameter and code of a store error; `context` is what was
    /// being read, for errors that carry no name.
    pub fn from_store(err: StoreError, context: &str) -> FetchError {
        let one_line = |s: String| s.replace(['\n', '\r'], " ");
        match err {
            StoreError::NotFound { name } => FetchError {
                parameter: name,
                code: Some("ParameterNotFound".to_owned()),
                detail: None,
            },
            StoreError::VersionNotFound { name, selector } => FetchError {
                parameter: format!("{name}:{selector}"),
                code: Some("ParameterVersionNotFound".to_owned()),
                detail: None,
            },
            StoreError::Aws {
                operation,
                target,
                code,
                message,
                attempts,
                ..
            } => FetchError {
                parameter: target,
                code: Some(code),
                detail: Some(one_line(if attempts > 1 {
                    format!("{message} ({operation}, gave up after {attempts} attempts)")
                } else {
                    format!("{message} ({operation})")
                })),
            },
            StoreError::KeyRefused { name, code, reason } => FetchError {
                parameter: name,
                code: Some(code),
                detail: Some(one_line(reason)),
            },
            StoreError::Refused { name, rule } => FetchError {
                parameter: name,
                code: None,
                detail: Some(one_line(format!("refused: {rule}"))),
            },
            StoreError::Decrypt { name, reason } => FetchError {
                parameter: name,
                code: None,
                detail: Some(one_line(format!("cannot decrypt: {reason}"))),
            },
            other => FetchError {
                parameter: context.to_owned(),
                code: other.aws_code().map(str::to_owned),
                detail: Some(one_line(other.to_string())),
            },
        }
    }

    fn missing(missing: &Missing, more: usize) -> FetchError {
        FetchError {
            parameter: missing.parameter.clone(),
            code: Some(missing.code.to_owned()),
            detail: (more > 0).then(|| format!("and {more} more missing")),
        }
    }
}

enum Job<'p> {
    Path(&'p PathRequest),
    Batch(&'p [BatchEntry]),
}

enum Done<'p> {
    Path(&'p PathRequest, Vec<Got>),
    /// (entry index, value) found, entry indexes missing.
    Batch(&'p [BatchEntry], Vec<(usize, Got)>, Vec<usize>),
}

/// Runs a [`Plan`] against a store, as often as asked.
#[derive(Debug)]
pub struct Fetcher<'s> {
    store: &'s sidekey_store::Store,
    plan: Plan,
    on_missing: OnMissing,
    /// Values of the last fetch by (name, version).
    cache: HashMap<(String, u64), Got>,
}

impl<'s> Fetcher<'s> {
    /// A fetcher with an empty cache.
    pub fn new(store: &'s sidekey_store::Store, plan: Plan, on_missing: OnMissing) -> Self {
        Fetcher {
            store,
            plan,
            on_missing,
            cache: HashMap::new(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Reads, decrypts and merges everything the plan asks for. A missing
    /// secret fails the fetch unless `on_missing` is skip.
    pub async fn fetch(&mut self) -> Result<Fetched, FetchError> {
        let requests = self.plan.path_requests();
        let batches = self.plan.pick_batches();
        let jobs: Vec<Job<'_>> = requests
            .iter()
            .map(Job::Path)
            .chain(batches.iter().map(|b| Job::Batch(b.as_slice())))
            .collect();
        let this = &*self;
        let done: Vec<Done<'_>> = stream::iter(jobs)
            .map(|job| async move {
                match job {
                    Job::Path(req) => Ok(Done::Path(req, this.walk(req).await?)),
                    Job::Batch(batch) => {
                        let (found, missing) = this.batch(batch).await?;
                        Ok(Done::Batch(batch, found, missing))
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;

        let plan = &self.plan;
        let mut walked: HashMap<(usize, usize), Vec<Got>> = HashMap::new();
        // pick index -> (layer, value) of the highest layer that has it.
        let mut picked: HashMap<usize, (usize, Got)> = HashMap::new();
        let mut cache: HashMap<(String, u64), Got> = HashMap::new();
        for d in done {
            match d {
                Done::Path(req, gots) => {
                    walked.insert((req.layer, req.service), gots);
                }
                Done::Batch(batch, found, _missing) => {
                    for (entry, got) in found {
                        for &(pick, layer) in &batch[entry].users {
                            let better = picked.get(&pick).is_none_or(|(l, _)| layer > *l);
                            if better {
                                picked.insert(pick, (layer, got.clone()));
                            }
                        }
                        cache.insert((got.path.to_string(), got.version), got);
                    }
                }
            }
        }

        let mut merge: Merge<Got> = Merge::new();
        let mut missing: Vec<Missing> = Vec::new();
        for (service, name) in plan.services.iter().enumerate() {
            let mut any = false;
            for layer in 0..plan.layers.len() {
                for got in walked.get(&(layer, service)).into_iter().flatten() {
                    any = true;
                    merge.offer(
                        got.path.key().as_str(),
                        Rank::Service { layer, service },
                        got.clone(),
                    );
                    cache.insert((got.path.to_string(), got.version), got.clone());
                }
            }
            if !any {
                missing.push(Missing {
                    parameter: service_path(&plan.prefix, plan.environment(), name),
                    code: "ParameterNotFound",
                });
            }
        }
        let mut missing_picks: Vec<usize> = Vec::new();
        for (index, pick) in plan.picks.iter().enumerate() {
            let found = match plan.pick_service(index) {
                Some(service) => (0..plan.layers.len()).rev().find_map(|layer| {
                    walked
                        .get(&(layer, service))
                        .into_iter()
                        .flatten()
                        .find(|g| *g.path.key() == pick.key)
                        .cloned()
                }),
                None => picked.remove(&index).map(|(_, g)| g),
            };
            match found {
                Some(got) => merge.offer(pick.var.as_str(), Rank::Pick { index }, got),
                None => missing_picks.push(index),
            }
        }
        missing.extend(self.classify(&missing_picks).await);
        self.cache = cache;

        if !missing.is_empty() {
            if self.on_missing == OnMissing::Fail {
                return Err(FetchError::missing(&missing[0], missing.len() - 1));
            }
            for m in &missing {
                tracing::warn!(parameter = %m.parameter, code = m.code, "missing, skipped (SIDEKEY_ON_MISSING=skip)");
            }
        }
        let secrets = merge
            .into_sorted()
            .into_iter()
            .map(|(var, got)| Delivered { var, got })
            .collect();
        Ok(Fetched {
            secrets,
            skipped: missing,
        })
    }

    /// Reads one service path (every page) and decrypts what it holds.
    async fn walk(&self, req: &PathRequest) -> Result<Vec<Got>, FetchError> {
        tracing::debug!(path = %req.path, "GetParametersByPath");
        let stored = self
            .store
            .params()
            .get_by_path(&req.path, self.store.retry())
            .await
            .map_err(|e| FetchError::from_store(e, &req.path))?;
        let mut out = Vec::with_capacity(stored.len());
        for p in stored {
            let Ok(path) = ParamPath::parse(&self.plan.prefix, &p.name) else {
                tracing::warn!(parameter = %p.name, "skipping a parameter whose name does not follow sidekey's layout");
                continue;
            };
            out.push(self.reveal(path, p).await?);
        }
        Ok(out)
    }

    /// One `GetParameters` call for a batch of pick names.
    async fn batch(
        &self,
        batch: &[BatchEntry],
    ) -> Result<(Vec<(usize, Got)>, Vec<usize>), FetchError> {
        let names: Vec<String> = batch.iter().map(|e| e.name.clone()).collect();
        let context = names.join(",");
        tracing::debug!(names = %context, "GetParameters");
        let (stored, _) = self
            .store
            .params()
            .get_many(&names, self.store.retry())
            .await
            .map_err(|e| FetchError::from_store(e, &context))?;
        let mut found = Vec::with_capacity(stored.len());
        let mut seen = vec![false; batch.len()];
        for p in stored {
            let base = strip_selector(&p.name);
            let Some(entry) = batch.iter().position(|e| e.base == base) else {
                tracing::warn!(parameter = %p.name, "an answer that was not asked for, ignored");
                continue;
            };
            let path = ParamPath::parse(&self.plan.prefix, base)
                .map_err(|e| FetchError::from_store(StoreError::Invalid(e.to_string()), base))?;
            seen[entry] = true;
            found.push((entry, self.reveal(path, p).await?));
        }
        let missing = (0..batch.len()).filter(|&i| !seen[i]).collect();
        Ok((found, missing))
    }

    /// Decrypts one value, or reuses the one already held for its version.
    async fn reveal(&self, path: ParamPath, stored: StoredParam) -> Result<Got, FetchError> {
        let name = path.to_string();
        if let Some(got) = self.cache.get(&(name, stored.version)) {
            return Ok(got.clone());
        }
        let name = path.to_string();
        let r = self
            .store
            .reveal(path, stored)
            .await
            .map_err(|e| FetchError::from_store(e, &name))?;
        Ok(Got {
            path: r.path,
            version: r.version,
            kind: r.kind,
            value: Arc::new(r.value),
        })
    }

    /// What a missing pick lacks: the parameter (`ParameterNotFound`), or,
    /// for a pick with a selector whose parameter exists in some layer,
    /// that version or label (`ParameterVersionNotFound`). Costs one call,
    /// and only when a pick with a selector is missing.
    async fn classify(&self, picks: &[usize]) -> Vec<Missing> {
        let plan = &self.plan;
        let with_selector: Vec<usize> = picks
            .iter()
            .copied()
            .filter(|&i| !plan.picks[i].selector.is_latest())
            .collect();
        let mut exists: Vec<String> = Vec::new();
        if !with_selector.is_empty() {
            let mut names: Vec<String> = Vec::new();
            for &i in &with_selector {
                for env in &plan.layers {
                    let name = plan.picks[i].param_path(&plan.prefix, env).to_string();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            if let Ok((found, _)) = self
                .store
                .params()
                .get_many(&names, self.store.retry())
                .await
            {
                exists = found.into_iter().map(|p| p.name.clone()).collect();
            }
        }
        picks
            .iter()
            .map(|&i| {
                let pick = &plan.picks[i];
                let own = pick.param_path(&plan.prefix, plan.environment());
                let version_missing = !pick.selector.is_latest()
                    && plan.layers.iter().any(|env| {
                        exists.contains(&pick.param_path(&plan.prefix, env).to_string())
                    });
                Missing {
                    parameter: match &pick.selector {
                        Selector::Latest => own.to_string(),
                        s => own.with_selector(s),
                    },
                    code: if version_missing {
                        "ParameterVersionNotFound"
                    } else {
                        "ParameterNotFound"
                    },
                }
            })
            .collect()
    }
}

/// `name` without a `:version` or `:label` suffix.
fn strip_selector(name: &str) -> &str {
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].find(':') {
        Some(i) => &name[..last + i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidekey_model::{parse_environments, parse_picks, parse_services};

    fn plan(env: &str, inherit: &str, services: &str, picks: &str) -> Plan {
        Plan::new(
            Prefix::default(),
            &Environment::parse(env).expect("env"),
            &parse_environments(inherit).expect("inherit"),
            parse_services(services).expect("services"),
            parse_picks(picks).expect("picks"),
        )
    }

    #[test]
    fn walks_are_layer_major() {
        let p = plan("pr-1", "staging", "api,web", "");
        let paths: Vec<String> = p.path_requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            [
                "/sidekey/staging/api/",
                "/sidekey/staging/web/",
                "/sidekey/pr-1/api/",
                "/sidekey/pr-1/web/"
            ]
        );
        assert!(p.pick_batches().is_empty());
    }

    #[test]
    fn latest_picks_of_listed_services_cost_no_call() {
        let p = plan("dev", "", "api", "A=api/X,B=api/Y@3,C=web/Z");
        assert_eq!(p.pick_service(0), Some(0));
        assert_eq!(p.pick_service(1), None);
        let batches = p.pick_batches();
        assert_eq!(batches.len(), 1);
        let names: Vec<&str> = batches[0].iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["/sidekey/dev/api/Y:3", "/sidekey/dev/web/Z"]);
    }

    #[test]
    fn picks_batch_by_ten_highest_layer_first() {
        let picks: Vec<String> = (0..12).map(|i| format!("V{i}=svc/K{i}@1")).collect();
        let p = plan("pr-2", "staging", "", &picks.join(","));
        let batches = p.pick_batches();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 24);
        assert!(batches.iter().all(|b| b.len() <= BATCH));
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0][0].name, "/sidekey/pr-2/svc/K0:1");
        assert_eq!(batches[0][1].name, "/sidekey/staging/svc/K0:1");
    }

    #[test]
    fn two_selectors_of_one_parameter_never_share_a_batch() {
        let p = plan("dev", "", "", "A=api/X@1,B=api/X@2,C=api/X@1");
        let batches = p.pick_batches();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0][0].users, vec![(0, 0), (2, 0)]);
        assert_eq!(batches[1][0].name, "/sidekey/dev/api/X:2");
    }

    #[test]
    fn selectors_are_stripped_from_answers() {
        assert_eq!(strip_selector("/sidekey/dev/api/X:3"), "/sidekey/dev/api/X");
        assert_eq!(strip_selector("/sidekey/dev/api/X"), "/sidekey/dev/api/X");
    }

    #[test]
    fn errors_name_parameter_and_code() {
        let e = FetchError::from_store(
            StoreError::NotFound {
                name: "/sidekey/staging/api/DB_PASSWORD".into(),
            },
            "ctx",
        );
        assert_eq!(
            e.to_string(),
            "/sidekey/staging/api/DB_PASSWORD: ParameterNotFound"
        );
    }
}
