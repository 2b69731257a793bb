//! `sidekey restart ENV [SERVICE]` and `rotate ... --restart`: roll the
//! workloads whose running pods hold versions written after they started.
//!
//! A workload is found through its injected running pods (owner chain:
//! ReplicaSet to Deployment, StatefulSet, DaemonSet, Job). It is rolled by a
//! merge patch of one annotation on its pod template,
//! [`VERSIONS_HASH`]`: sha256-<32 hex>`, the hash of every
//! `VAR=ENV/SERVICE/KEY@VERSION` its pods resolve now. Rolled only when
//! one of its pods is stale in scope and the template does not already
//! carry that hash: a second restart for the same versions patches nothing.
//! Bare pods and Jobs are listed, never deleted; pods with the refreshing
//! sidecar are skipped unless `--include-refresh`.
//!
//! Workloads are patched `--max-in-flight` at a time; before the next group
//! (and at the end with `--wait`) the group's rollouts are followed until
//! complete, and the first one that does not complete within `--timeout`
//! stops the run (exit status [`EXIT_ROLLOUT`]); nothing after it is patched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sidekey_store::Store;

use crate::args::Output;
use crate::audit::{AuditSink, Pending};
use crate::cluster::{self, api_failure, Calls, Workload};
use crate::status::{self, Listing, PodState, Scope};
use crate::{one_line, Failure};

/// The pod-template annotation `restart` sets. Not under `sidekey.io/`:
/// the injector refuses pods with unknown `sidekey.io/` annotations.
pub const VERSIONS_HASH: &str = "restart.sidekey.io/versions-hash";
/// Exit status when a rollout did not complete within `--timeout`.
pub const EXIT_ROLLOUT: u8 = 3;

/// How a restart runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub wait: bool,
    pub timeout: Duration,
    pub include_refresh: bool,
    pub max_in_flight: usize,
}

/// Who acts and where records go.
#[derive(Debug)]
pub struct Actor<'a> {
    pub audit: &'a mut AuditSink,
    pub actor: &'a str,
    pub output: Output,
}

/// What restart decided for one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Its pods hold no version rotated since they started (in scope).
    Current,
    /// The template already carries this hash: a rollout is under way or done.
    AlreadyRolled,
    /// Files refreshed by the sidecar.
    SkippedRefresh,
    /// A bare pod or a Job (or another owner): listed, never deleted.
    NotRestartable,
    /// To roll (or rolled).
    Roll,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Current => "current",
            Decision::AlreadyRolled => "already-rolled",
            Decision::SkippedRefresh => "skipped-refresh",
            Decision::NotRestartable => "not-restartable",
            Decision::Roll => "roll",
        }
    }
}

#[derive(Debug)]
struct Plan {
    workload: Workload,
    decision: Decision,
    hash: String,
    stale_pods: usize,
    pods: usize,
    stale: Vec<(String, String, u64)>,
}

/// Runs a restart for `scope`; returns how many workloads were patched.
pub async fn run(
    store: &Store,
    scope: &Scope,
    options: &Options,
    who: Actor<'_>,
) -> Result<usize, Failure> {
    let client = cluster::client().await?;
    let mut calls = Calls::default();
    let mut listing = Listing::default();
    let states = status::survey(&client, store, scope, None, &mut calls, &mut listing).await?;
    let mut by_workload: BTreeMap<Workload, Vec<PodState>> = BTreeMap::new();
    for s in states {
        by_workload
            .entry(s.pod.workload.clone())
            .or_default()
            .push(s);
    }
    let mut plans = Vec::new();
    for (workload, pods) in by_workload {
        plans.push(plan(&client, workload, &pods, options).await?);
    }
    let env = scope.environment.as_str();
    let Actor {
        audit,
        actor,
        output,
    } = who;
    let record =
        |audit: &mut AuditSink, p: &Plan, result: &Result<(), Failure>| -> Result<(), Failure> {
            let mut pending = Pending::new("restart", Some(env), actor);
            for (service, key, version) in &p.stale {
                pending.secret(service, key, Some(*version));
            }
            pending.event.namespace = Some(p.workload.namespace.clone());
            pending.extra(
                "workload",
                format!("{}/{}", p.workload.kind, p.workload.name),
            );
            pending.extra("versions_hash", p.hash.as_str());
            pending.extra("decision", p.decision.as_str());
            pending.extra("dry_run", options.dry_run);
            audit.record(pending.finish(result))
        };
    let say = |p: &Plan, what: &str| match output {
        Output::Text => println!("{}  {what}", p.workload),
        Output::Json => println!(
            "{}",
            json!({"namespace": p.workload.namespace, "kind": p.workload.kind, "name": p.workload.name,
                   "decision": p.decision.as_str(), "versions_hash": p.hash, "dry_run": options.dry_run,
                   "pods": p.pods, "stale_pods": p.stale_pods, "status": what})
        ),
    };
    // Everything that is not rolled is decided now, and recorded.
    for p in plans.iter().filter(|p| p.decision != Decision::Roll) {
        record(audit, p, &Ok(()))?;
        let what = match p.decision {
            Decision::Current => "current: no pod runs a version rotated since it started".to_owned(),
            Decision::AlreadyRolled => format!("unchanged: the template already has {VERSIONS_HASH}={}", p.hash),
            Decision::SkippedRefresh => format!(
                "skipped: {} of {} pods run older versions but refresh their files (--include-refresh to roll)",
                p.stale_pods, p.pods
            ),
            Decision::NotRestartable => format!(
                "not restarted: {} of {} pods run older versions; a {} is never deleted by sidekey (recreate it yourself)",
                p.stale_pods, p.pods, p.workload.kind
            ),
            Decision::Roll => unreachable!("filtered"),
        };
        say(p, &what);
    }
    let rolls: Vec<&Plan> = plans
        .iter()
        .filter(|p| p.decision == Decision::Roll)
        .collect();
    if options.dry_run {
        for p in &rolls {
            record(audit, p, &Ok(()))?;
            say(
                p,
                &format!(
                    "would roll ({} of {} pods run older versions; {VERSIONS_HASH}={})",
                    p.stale_pods, p.pods, p.hash
                ),
            );
        }
        return Ok(0);
    }
    let deadline = Instant::now() + options.timeout;
    let mut patched = 0;
    let groups: Vec<&[&Plan]> = rolls.chunks(options.max_in_flight.max(1)).collect();
    let last = groups.len();
    for (i, group) in groups.into_iter().enumerate() {
        for p in group {
            let result = patch(&client, p).await;
            record(audit, p, &result)?;
            result?;
            patched += 1;
            say(
                p,
                &format!(
                    "rolling ({} of {} pods ran older versions; {VERSIONS_HASH}={})",
                    p.stale_pods, p.pods, p.hash
                ),
            );
        }
        if options.wait || i + 1 < last {
            for p in group {
                follow(&client, &p.workload, deadline, output).await?;
            }
        }
    }
    if rolls.is_empty() && output == Output::Text {
        println!("nothing to roll");
    }
    Ok(patched)
}

/// The template annotation a workload carries now.
async fn template_hash(client: &Client, w: &Workload) -> Result<Option<String>, Failure> {
    let v = get_json(client, w).await?;
    Ok(v.pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(VERSIONS_HASH))
        .and_then(Value::as_str)
        .map(str::to_owned))
}

async fn plan(
    client: &Client,
    workload: Workload,
    pods: &[PodState],
    options: &Options,
) -> Result<Plan, Failure> {
    let stale_pods = pods.iter().filter(|s| !s.stale.is_empty()).count();
    // The newest pod's resolution (pods of a rollout under way may differ).
    let newest = pods
        .iter()
        .max_by_key(|s| s.pod.started)
        .expect("a workload has at least one pod");
    let hash = status::versions_hash(&newest.resolved);
    let mut stale: Vec<(String, String, u64)> = pods
        .iter()
        .flat_map(|s| s.stale.iter())
        .map(|r| {
            (
                r.service.as_str().to_owned(),
                r.key.as_str().to_owned(),
                r.version.parse().unwrap_or(0),
            )
        })
        .collect();
    stale.sort();
    stale.dedup();
    let decision = if stale_pods == 0 {
        Decision::Current
    } else if !workload.restartable() {
        Decision::NotRestartable
    } else if pods.iter().all(|s| s.pod.refresh) && !options.include_refresh {
        Decision::SkippedRefresh
    } else if template_hash(client, &workload).await?.as_deref() == Some(hash.as_str()) {
        Decision::AlreadyRolled
    } else {
        Decision::Roll
    };
    Ok(Plan {
        workload,
        decision,
        hash,
        stale_pods,
        pods: pods.len(),
        stale,
    })
}

fn resource(w: &Workload) -> String {
    format!("{}s in namespace {}", w.kind.to_lowercase(), w.namespace)
}

async fn get_typed<K>(client: &Client, w: &Workload) -> Result<Value, Failure>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), &w.namespace);
    let obj = api
        .get(&w.name)
        .await
        .map_err(|e| api_failure("get", &resource(w), e))?;
    serde_json::to_value(&obj).map_err(|e| Failure::failed(one_line(&e.to_string())))
}

async fn get_json(client: &Client, w: &Workload) -> Result<Value, Failure> {
    match w.kind.as_str() {
        "Deployment" => get_typed::<Deployment>(client, w).await,
        "StatefulSet" => get_typed::<StatefulSet>(client, w).await,
        "DaemonSet" => get_typed::<DaemonSet>(client, w).await,
        other => Err(Failure::failed(format!(
            "internal: {other} is not restartable"
        ))),
    }
}

async fn patch_typed<K>(client: &Client, w: &Workload, body: &Value) -> Result<(), Failure>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), &w.namespace);
    api.patch(&w.name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map(|_| ())
        .map_err(|e| api_failure("patch", &resource(w), e))
}

async fn patch(client: &Client, p: &Plan) -> Result<(), Failure> {
    let body =
        json!({"spec": {"template": {"metadata": {"annotations": {VERSIONS_HASH: p.hash}}}}});
    match p.workload.kind.as_str() {
        "Deployment" => patch_typed::<Deployment>(client, &p.workload, &body).await,
        "StatefulSet" => patch_typed::<StatefulSet>(client, &p.workload, &body).await,
        "DaemonSet" => patch_typed::<DaemonSet>(client, &p.workload, &body).await,
        other => Err(Failure::failed(format!(
            "internal: {other} is not restartable"
        ))),
    }
}

/// Where a rollout is: `Ok(true)` once complete, with a progress line.
fn progress(v: &Value) -> (bool, String) {
    let n = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let generation = n("/metadata/generation");
    let observed = n("/status/observedGeneration");
    let kind = v["kind"].as_str().unwrap_or("");
    let (done, line) = match kind {
        "DaemonSet" => {
            let desired = n("/status/desiredNumberScheduled");
            let updated = n("/status/updatedNumberScheduled");
            let available = n("/status/numberAvailable");
            (
                updated == desired && available == desired,
                format!("{updated}/{desired} updated, {available} available"),
            )
        }
        "StatefulSet" => {
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let updated = n("/status/updatedReplicas");
            let ready = n("/status/readyReplicas");
            let same_revision =
                v.pointer("/status/currentRevision") == v.pointer("/status/updateRevision");
            (
                updated == want && ready == want && same_revision,
                format!("{updated}/{want} updated, {ready} ready"),
            )
        }
        _ => {
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let updated = n("/status/updatedReplicas");
            let available = n("/status/availableReplicas");
            let total = n("/status/replicas");
            (
                updated == want && available == want && total == want,
                format!("{updated}/{want} updated, {available} available, {total} total"),
            )
        }
    };
    (done && observed >= generation, line)
}

/// Follows one rollout until complete or the deadline.
async fn follow(
    client: &Client,
    w: &Workload,
    deadline: Instant,
    output: Output,
) -> Result<(), Failure> {
    let mut last = String::new();
    loop {
        let v = get_json(client, w).await?;
        let (done, line) = progress(&v);
        if (line != last || done) && output == Output::Text {
            println!("{w}  {line}{}", if done { " (complete)" } else { "" });
            last = line.clone();
        }
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure {
                code: EXIT_ROLLOUT,
                message: format!(
                    "the rollout of {w} did not complete within --timeout ({line}); workloads after it were not patched"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After `rotate` without `--restart`: how many running pods still use the
/// previous version, on standard error, when a kubeconfig is there. Says
/// nothing when there is none or the cluster cannot be asked.
pub async fn hint(store: &Store, scope: &Scope) {
    let Some(client) = cluster::optional_client().await else {
        return;
    };
    let mut calls = Calls::default();
    let mut listing = Listing::default();
    match status::survey(&client, store, scope, None, &mut calls, &mut listing).await {
        Ok(states) => {
            let stale = states.iter().filter(|s| !s.stale.is_empty()).count();
            if stale > 0 {
                let service = scope.service.as_ref().map(|s| s.as_str()).unwrap_or("");
                eprintln!(
                    "sidekey: {stale} running pods still use the previous version; roll them with: sidekey restart {} {service}",
                    scope.environment
                );
            }
        }
        Err(f) => tracing::debug!(reason = %f.message, "no pod count after rotate"),
    }
}
