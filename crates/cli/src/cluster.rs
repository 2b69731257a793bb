//! The Kubernetes side of `status`, `restart` and `rotate --restart`: a
//! kube-rs client from the user's kubeconfig (the standard inference:
//! `KUBECONFIG`, `~/.kube/config`, then in-cluster), the pods the injector
//! admitted (read from what the injector wrote into them), and errors that
//! name the verb and resource the API server refused.
//!
//! What a pod uses is read from the pod itself: the `SIDEKEY_ENVIRONMENT`,
//! `SIDEKEY_INHERIT`, `SIDEKEY_SERVICES` and `SIDEKEY_SECRETS` variables the
//! injector set on the containers it wrapped (or on its own init container
//! or sidecar). They are the truth for that pod whatever the injector's
//! configuration says now; no configuration file is needed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, Config};
use sidekey_model::{Environment, Pick, Service};

use crate::{one_line, Failure};

/// How long connecting to the API server may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Page size of list calls.
const PAGE: u32 = 500;

/// A kube-rs client from the user's kubeconfig, or a failure saying there is none.
pub async fn client() -> Result<Client, Failure> {
    let mut config = Config::infer().await.map_err(|e| {
        Failure::failed(one_line(&format!(
            "no Kubernetes configuration: set KUBECONFIG or create ~/.kube/config (or run in a pod): {e}"
        )))
    })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(config).map_err(|e| {
        Failure::failed(one_line(&format!(
            "cannot build the Kubernetes client: {e}"
        )))
    })
}

/// A client only when a kubeconfig (or the in-cluster configuration) is
/// there: `rotate` without `--restart` then says how many pods run the old
/// version, and says nothing when there is none.
pub async fn optional_client() -> Option<Client> {
    let mut config = Config::infer().await.ok()?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).ok()
}

/// One line for a failed API call: the verb and resource, then what the API
/// server (or the connection) said.
pub fn api_failure(verb: &str, resource: &str, e: kube::Error) -> Failure {
    let what = format!("{verb} {resource}");
    let message = match &e {
        kube::Error::Api(status) if status.is_forbidden() => format!(
            "the Kubernetes API server refused to {what} (Forbidden): {}; the ClusterRole in deploy/rbac/ grants what sidekey needs",
            status.message
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "the Kubernetes API server refused to {what} (Unauthorized: the kubeconfig's credentials were not accepted): {}",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "cannot {what}: the Kubernetes API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot {what}: the Kubernetes API server is not reachable ({e}); check the cluster and the kubeconfig's server"
        ),
        _ => format!("cannot {what}: {e}"),
    };
    Failure::failed(one_line(&message))
}

/// The workload a pod belongs to, following owner references.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet, Job, ReplicaSet, Pod, or the owner's kind.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    /// Whether `restart` can roll it by patching its pod template.
    pub fn restartable(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        )
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// What the injector wrote into one running pod.
#[derive(Debug, Clone)]
pub struct InjectedPod {
    pub namespace: String,
    pub name: String,
    pub workload: Workload,
    /// `status.startTime`: when the kubelet accepted the pod, before any
    /// container (the agent's fetch included) started.
    pub started: Option<SystemTime>,
    pub environment: Environment,
    /// Base environments, lowest precedence first.
    pub inherit: Vec<Environment>,
    pub services: Vec<Service>,
    pub picks: Vec<Pick>,
    /// The pod runs the refreshing sidecar (files follow new versions).
    pub refresh: bool,
    /// The `restart.sidekey.io/versions-hash` its template had when it was created.
    pub versions_hash: Option<String>,
}

/// Counts of API calls, for the benchmark and `--output json`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calls {
    pub list_pods: u32,
    pub get_replicasets: u32,
}

/// Every running pod the injector admitted, in `namespace` or in all.
pub async fn injected_pods(
    client: &Client,
    namespace: Option<&str>,
    calls: &mut Calls,
) -> Result<Vec<InjectedPod>, Failure> {
    let (pods, scope): (Api<Pod>, String) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            format!("pods in namespace {ns}"),
        ),
        None => (Api::all(client.clone()), "pods (all namespaces)".to_owned()),
    };
    let mut out = Vec::new();
    let mut owners: HashMap<(String, String), Workload> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default()
            .limit(PAGE)
            .fields("status.phase=Running");
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        calls.list_pods += 1;
        let page = pods
            .list(&params)
            .await
            .map_err(|e| api_failure("list", &scope, e))?;
        for pod in page.items {
            if let Some(mut p) = read_pod(&pod) {
                p.workload = workload_of(client, &pod, &mut owners, calls).await?;
                out.push(p);
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

fn var<'c>(c: &'c Container, name: &str) -> Option<&'c str> {
    c.env
        .as_ref()?
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.value.as_deref())
}

/// The injector's settings of a pod, from the first container that has
/// them; `None` for a pod the injector did not admit or that is not Running.
fn read_pod(pod: &Pod) -> Option<InjectedPod> {
    let meta = &pod.metadata;
    let injected = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(sidekey_model::annotations::INJECTED))
        .is_some_and(|v| v == "true");
    let status = pod.status.as_ref()?;
    // A pod being deleted still reports Running until its containers stop:
    // it is on its way out and no longer counts.
    if !injected || status.phase.as_deref() != Some("Running") || meta.deletion_timestamp.is_some()
    {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let refresh = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == sidekey_patch::CONTAINER_SIDECAR);
    let mut found = None;
    for c in all {
        if let Some(env) = var(c, "SIDEKEY_ENVIRONMENT") {
            found = Some((
                env,
                var(c, "SIDEKEY_INHERIT").unwrap_or(""),
                var(c, "SIDEKEY_SERVICES").unwrap_or(""),
                var(c, "SIDEKEY_SECRETS").unwrap_or(""),
            ));
            break;
        }
    }
    let (env, inherit, services, secrets) = found?;
    // What the injector wrote parses (it wrote it); a pod that does not is
    // not one sidekey can reason about, and is left out.
    let environment = Environment::parse(env).ok()?;
    let inherit = sidekey_model::parse_environments(inherit).ok()?;
    let services = sidekey_model::parse_services(services).ok()?;
    let picks = sidekey_model::parse_picks(secrets).ok()?;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    Some(InjectedPod {
        workload: Workload {
            kind: "Pod".into(),
            namespace: namespace.clone(),
            name: name.clone(),
        },
        namespace,
        name,
        started: status.start_time.as_ref().map(|t| SystemTime::from(t.0)),
        environment,
        inherit,
        services,
        picks,
        refresh,
        versions_hash: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::restart::VERSIONS_HASH))
            .cloned(),
    })
}

/// The owner chain of a pod up to its Deployment, StatefulSet, DaemonSet or
/// Job (a ReplicaSet is followed to its Deployment; each ReplicaSet is read
/// once per run).
async fn workload_of(
    client: &Client,
    pod: &Pod,
    cache: &mut HashMap<(String, String), Workload>,
    calls: &mut Calls,
) -> Result<Workload, Failure> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let Some(owner) = owner else {
        return Ok(Workload {
            kind: "Pod".into(),
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
        });
    };
    if owner.kind != "ReplicaSet" {
        return Ok(Workload {
            kind: owner.kind.clone(),
            namespace,
            name: owner.name.clone(),
        });
    }
    let cache_key = (namespace.clone(), owner.name.clone());
    if let Some(w) = cache.get(&cache_key) {
        return Ok(w.clone());
    }
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    calls.get_replicasets += 1;
    let rs = replicasets
        .get_opt(&owner.name)
        .await
        .map_err(|e| api_failure("get", &format!("replicasets in namespace {namespace}"), e))?;
    let w = match rs.as_ref().and_then(|rs| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
    }) {
        Some(o) => Workload {
            kind: o.kind.clone(),
            namespace: namespace.clone(),
            name: o.name.clone(),
        },
        None => Workload {
            kind: "ReplicaSet".into(),
            namespace: namespace.clone(),
            name: owner.name.clone(),
        },
    };
    cache.insert(cache_key, w.clone());
    Ok(w)
}
