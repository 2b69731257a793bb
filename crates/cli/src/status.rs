//! `sidekey status ENV [SERVICE]`: the running pods of an environment (and
//! of the environments inheriting it) and, for each, the keys whose current
//! version was written after the pod started. Metadata only: the store is
//! listed (names, versions, modification times), never read.
//!
//! Precision: a pod's start is `status.startTime` (whole seconds, set when
//! the kubelet accepts the pod, before the agent fetches), a version's is
//! the store's modification time. A version written in the same second the
//! pod started counts as newer: the error is always toward "stale", never
//! toward "current". Exact for env delivery and for files without
//! `sidekey.io/refresh` (values are taken once, at start); pods with the
//! refreshing sidecar follow new versions within their refresh interval and
//! are shown with `refresh` (restart skips them unless asked).

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{json, Value};
use sidekey_model::{Environment, Key, Merge, Rank, Selector, Service};
use sidekey_store::{KeyInfo, Store};

use crate::args::Output;
use crate::cluster::{self, Calls, InjectedPod};
use crate::{one_line, Failure};

/// One resolved variable of a pod: which parameter version it gets now.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub var: String,
    pub environment: Environment,
    pub service: Service,
    pub key: Key,
    /// The current version, or the pinned selector of a pick (`v3`, `label:x`).
    pub version: String,
    /// When the version the pod would get now was written; `None` for a
    /// pinned pick (it never changes under the pod).
    pub modified: Option<SystemTime>,
}

/// What `status`, `restart` and `rotate --restart` look at.
#[derive(Debug, Clone)]
pub struct Scope {
    pub environment: Environment,
    pub service: Option<Service>,
    /// Only this key (rotate): the parameter ENV/SERVICE/KEY exactly.
    pub key: Option<Key>,
}

impl Scope {
    /// Whether the pod uses the environment (itself or as a base) and the service.
    pub fn selects(&self, pod: &InjectedPod) -> bool {
        let env_ok = pod.environment == self.environment || pod.inherit.contains(&self.environment);
        let service_ok = match &self.service {
            None => true,
            Some(s) => pod.services.contains(s) || pod.picks.iter().any(|p| &p.service == s),
        };
        env_ok && service_ok
    }

    /// Whether a resolved variable of a selected pod is in scope: in a pod
    /// of the environment itself, every variable (of the service); in a pod
    /// inheriting it, only those whose winning version is the environment's
    /// (a key the pod's own environment overrides is not).
    pub fn counts(&self, pod: &InjectedPod, r: &Resolved) -> bool {
        if let Some(k) = &self.key {
            return r.environment == self.environment
                && Some(&r.service) == self.service.as_ref()
                && &r.key == k;
        }
        (pod.environment == self.environment || r.environment == self.environment)
            && self.service.as_ref().is_none_or(|s| &r.service == s)
    }
}

/// Lists of the store, one per (environment, service), each listed once per run.
#[derive(Debug, Default)]
pub struct Listing {
    lists: HashMap<(Environment, Service), Vec<KeyInfo>>,
    pub calls: u32,
}

impl Listing {
    async fn get(
        &mut self,
        store: &Store,
        env: &Environment,
        service: &Service,
    ) -> Result<&[KeyInfo], Failure> {
        let k = (env.clone(), service.clone());
        if !self.lists.contains_key(&k) {
            self.calls += 1;
            let list = store
                .list(env, Some(service))
                .await
                .map_err(|e| Failure::failed(one_line(&e.to_string())))?;
            self.lists.insert(k.clone(), list);
        }
        Ok(self.lists.get(&k).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// What each variable of the pod resolves to now, with the agent's
    /// precedence (bases lowest first, then the environment; services in
    /// order, later wins; picks above all), sorted by variable.
    pub async fn resolve(
        &mut self,
        store: &Store,
        pod: &InjectedPod,
    ) -> Result<Vec<Resolved>, Failure> {
        let mut merge: Merge<Resolved> = Merge::new();
        let layers = sidekey_model::layers(&pod.environment, &pod.inherit);
        for (layer, env) in layers.iter().enumerate() {
            for (si, service) in pod.services.iter().enumerate() {
                for info in self.get(store, env, service).await? {
                    let key = info.path.key().clone();
                    merge.offer(
                        key.as_str(),
                        Rank::Service { layer, service: si },
                        Resolved {
                            var: key.as_str().to_owned(),
                            environment: env.clone(),
                            service: service.clone(),
                            key: key.clone(),
                            version: info.version.to_string(),
                            modified: info.last_modified,
                        },
                    );
                }
            }
        }
        for (index, pick) in pod.picks.iter().enumerate() {
            let (version, modified) = match &pick.selector {
                Selector::Latest => {
                    let list = self.get(store, &pod.environment, &pick.service).await?;
                    match list.iter().find(|i| i.path.key() == &pick.key) {
                        Some(i) => (i.version.to_string(), i.last_modified),
                        None => continue,
                    }
                }
                Selector::Version(n) => (format!("v{n}"), None),
                Selector::Label(l) => (format!("label:{l}"), None),
            };
            merge.offer(
                pick.var.as_str(),
                Rank::Pick { index },
                Resolved {
                    var: pick.var.as_str().to_owned(),
                    environment: pod.environment.clone(),
                    service: pick.service.clone(),
                    key: pick.key.clone(),
                    version,
                    modified,
                },
            );
        }
        Ok(merge.into_sorted().into_iter().map(|(_, r)| r).collect())
    }
}

/// Whether the pod started before this version was written.
pub fn is_stale(pod: &InjectedPod, r: &Resolved) -> bool {
    match (pod.started, r.modified) {
        (Some(started), Some(modified)) => modified > started,
        _ => false,
    }
}

/// A selected pod, what it resolves to, and its stale variables in scope.
#[derive(Debug)]
pub struct PodState {
    pub pod: InjectedPod,
    pub resolved: Vec<Resolved>,
    pub stale: Vec<Resolved>,
}

/// The selected pods with their stale variables.
pub async fn survey(
    client: &kube::Client,
    store: &Store,
    scope: &Scope,
    namespace: Option<&str>,
    calls: &mut Calls,
    listing: &mut Listing,
) -> Result<Vec<PodState>, Failure> {
    let pods = cluster::injected_pods(client, namespace, calls).await?;
    let mut out = Vec::new();
    for pod in pods.into_iter().filter(|p| scope.selects(p)) {
        let resolved = listing.resolve(store, &pod).await?;
        // A pod created from a template that `restart` stamped with the hash
        // of exactly these versions runs them, whatever the clocks say (start
        // times have whole seconds: a pod started in the second of the
        // rotation would otherwise look stale).
        let current = pod.versions_hash.as_deref() == Some(versions_hash(&resolved).as_str());
        let stale = resolved
            .iter()
            .filter(|r| !current && scope.counts(&pod, r) && is_stale(&pod, r))
            .cloned()
            .collect();
        out.push(PodState {
            pod,
            resolved,
            stale,
        });
    }
    Ok(out)
}

/// The hash `restart` writes into a template: SHA-256 over the sorted
/// `VAR=ENV/SERVICE/KEY@VERSION` lines of everything the pod resolves.
pub fn versions_hash(resolved: &[Resolved]) -> String {
    let mut lines: Vec<String> = resolved
        .iter()
        .map(|r| {
            format!(
                "{}={}/{}/{}@{}\n",
                r.var, r.environment, r.service, r.key, r.version
            )
        })
        .collect();
    lines.sort();
    let digest = ring::digest::digest(&ring::digest::SHA256, lines.concat().as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256-{}", &hex[..32])
}

pub use sidekey_wire::rfc3339::seconds_text as format_time;

fn stale_json(r: &Resolved) -> Value {
    json!({"variable": r.var, "environment": r.environment.as_str(), "service": r.service.as_str(),
           "key": r.key.as_str(), "version": r.version, "modified": r.modified.map(format_time)})
}

/// `sidekey status`.
pub async fn run(
    store: &Store,
    scope: &Scope,
    namespace: Option<&str>,
    output: Output,
) -> Result<(), Failure> {
    let client = cluster::client().await?;
    let mut calls = Calls::default();
    let mut listing = Listing::default();
    let states = survey(&client, store, scope, namespace, &mut calls, &mut listing).await?;
    let stale_pods = states.iter().filter(|s| !s.stale.is_empty()).count();
    match output {
        Output::Json => {
            let pods: Vec<Value> = states
                .iter()
                .map(|s| {
                    json!({
                        "namespace": s.pod.namespace, "pod": s.pod.name,
                        "workload": {"kind": s.pod.workload.kind, "name": s.pod.workload.name},
                        "environment": s.pod.environment.as_str(),
                        "inherit": s.pod.inherit.iter().map(Environment::as_str).collect::<Vec<_>>(),
                        "services": s.pod.services.iter().map(Service::as_str).collect::<Vec<_>>(),
                        "started": s.pod.started.map(format_time),
                        "refresh": s.pod.refresh,
                        "stale": s.stale.iter().map(stale_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({"environment": scope.environment.as_str(),
                       "service": scope.service.as_ref().map(Service::as_str),
                       "pods": pods, "stale_pods": stale_pods,
                       "api_calls": {"list_pods": calls.list_pods, "get_replicasets": calls.get_replicasets},
                       "store_lists": listing.calls})
            );
        }
        Output::Text => {
            let mut rows = Vec::new();
            for s in &states {
                let stale = if s.stale.is_empty() {
                    "-".to_owned()
                } else {
                    s.stale
                        .iter()
                        .map(|r| {
                            format!("{}/{}/{} v{}", r.environment, r.service, r.key, r.version)
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                rows.push(vec![
                    format!("{}/{}", s.pod.namespace, s.pod.name),
                    format!("{}/{}", s.pod.workload.kind, s.pod.workload.name),
                    s.pod.environment.to_string(),
                    s.pod
                        .services
                        .iter()
                        .map(Service::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    s.pod.started.map(format_time).unwrap_or_else(|| "-".into()),
                    if s.pod.refresh { "refresh" } else { "start" }.to_owned(),
                    stale,
                ]);
            }
            crate::commands::print_table(
                &[
                    "POD",
                    "WORKLOAD",
                    "ENV",
                    "SERVICES",
                    "STARTED",
                    "VALUES",
                    "ROTATED SINCE START",
                ],
                &rows,
            );
            println!(
                "{stale_pods} of {} pods run values rotated since they started{}",
                states.len(),
                if stale_pods > 0 {
                    format!(
                        "; roll them with: sidekey restart {}{}",
                        scope.environment,
                        scope
                            .service
                            .as_ref()
                            .map(|s| format!(" {s}"))
                            .unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::cluster::Workload;

    fn env(s: &str) -> Environment {
        Environment::parse(s).unwrap()
    }

    fn svc(s: &str) -> Service {
        Service::parse(s).unwrap()
    }

    fn pod(environment: &str, inherit: &[&str], services: &[&str], started: u64) -> InjectedPod {
        InjectedPod {
            namespace: environment.into(),
            name: "p".into(),
            workload: Workload {
                kind: "Deployment".into(),
                namespace: environment.into(),
                name: "w".into(),
            },
            started: Some(UNIX_EPOCH + Duration::from_secs(started)),
            environment: env(environment),
            inherit: inherit.iter().map(|e| env(e)).collect(),
            services: services.iter().map(|s| svc(s)).collect(),
            picks: Vec::new(),
            refresh: false,
            versions_hash: None,
        }
    }

    fn resolved(e: &str, s: &str, k: &str, version: u64, modified: u64) -> Resolved {
        Resolved {
            var: k.into(),
            environment: env(e),
            service: svc(s),
            key: Key::parse(k).unwrap(),
            version: version.to_string(),
            modified: Some(UNIX_EPOCH + Duration::from_secs(modified)),
        }
    }

    fn scope(e: &str, s: Option<&str>, k: Option<&str>) -> Scope {
        Scope {
            environment: env(e),
            service: s.map(svc),
            key: k.map(|k| Key::parse(k).unwrap()),
        }
    }

    #[test]
    fn an_inheriting_pod_counts_only_the_bases_winning_versions() {
        let p = pod("pr-1", &["staging"], &["api"], 100);
        let staging = scope("staging", None, None);
        assert!(staging.selects(&p));
        assert!(staging.counts(&p, &resolved("staging", "api", "OTHER", 2, 200)));
        // pr-1 overrides TOKEN: staging's rotation does not concern it.
        assert!(!staging.counts(&p, &resolved("pr-1", "api", "TOKEN", 1, 200)));
        // The pod's own environment: everything it resolves.
        let own = scope("pr-1", None, None);
        assert!(own.counts(&p, &resolved("staging", "api", "OTHER", 2, 200)));
        // Another service, or an environment it does not use.
        assert!(!scope("staging", Some("web"), None).selects(&p));
        assert!(!scope("prod", None, None).selects(&p));
        // rotate: exactly ENV/SERVICE/KEY.
        let key = scope("staging", Some("api"), Some("TOKEN"));
        assert!(key.counts(&p, &resolved("staging", "api", "TOKEN", 3, 200)));
        assert!(!key.counts(&p, &resolved("staging", "api", "OTHER", 3, 200)));
    }

    #[test]
    fn stale_means_written_after_the_pod_started() {
        let p = pod("staging", &[], &["api"], 100);
        assert!(is_stale(&p, &resolved("staging", "api", "A", 2, 101)));
        assert!(!is_stale(&p, &resolved("staging", "api", "A", 2, 100)));
        assert!(!is_stale(&p, &resolved("staging", "api", "A", 2, 99)));
        let mut pinned = resolved("staging", "api", "A", 2, 101);
        pinned.modified = None;
        assert!(!is_stale(&p, &pinned));
    }

    #[test]
    fn the_versions_hash_depends_on_versions_only_not_on_order_or_times() {
        let a = resolved("staging", "api", "A", 1, 10);
        let b = resolved("staging", "api", "B", 4, 10);
        let h = versions_hash(&[a.clone(), b.clone()]);
        assert!(h.starts_with("sha256-") && h.len() == 39, "{h}");
        assert_eq!(h, versions_hash(&[b.clone(), a.clone()]));
        let later = resolved("staging", "api", "A", 1, 99);
        assert_eq!(h, versions_hash(&[later, b.clone()]));
        let rotated = resolved("staging", "api", "A", 2, 10);
        assert_ne!(h, versions_hash(&[rotated, b]));
    }
}
