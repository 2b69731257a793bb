//! sidekey admitted by a real Kubernetes API server (the local control plane
//! of `scripts/cluster`, see `sidekey_cluster_tests`): no hand-built
//! AdmissionReview anywhere. The API server defaults the pod, calls the
//! injector over TLS with its client certificate, applies the patch itself
//! and runs its full validation before it stores the pod; the controllers
//! create workload pods, the scheduler binds them and kwok reports them
//! Running (containers do not run there: the last test plays the kubelet
//! with the stored pod, the real agent and moto).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sidekey_cluster_tests::{
    bin_dir, block_on, cluster, container_names, default_service_account, namespace, repo, to_json,
    touched_by_sidekey, wait_until, Cluster, AGENT_IMAGE,
};
use sidekey_e2e::{pod_from_workload, Image, Kubelet};
use sidekey_test_support::{assert_no_secret, aws_env, run, Moto};

/// The workload of an example under deploy/examples (its last document).
fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/examples").join(name)).expect("example");
    let mut workload = Value::Null;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v["kind"] != "Namespace" {
            workload = v;
        }
    }
    workload
}

fn pod_value(v: Value) -> Pod {
    serde_json::from_value(v).expect("a Pod")
}

async fn create_pod(client: &Client, ns: &str, pod: Value) -> Result<Pod, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod_value(pod)).await
}

/// A minimal pod; `annotations` decide whether it is opted in. Its spec
/// satisfies the `restricted` Pod Security profile (sidekey-system enforces
/// it).
fn plain_pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": "ghcr.io/example/app:1.0",
                "command": ["/app/run"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    })
}

fn opted_in() -> Value {
    json!({"sidekey.io/inject": "true", "sidekey.io/services": "api"})
}

/// What the API server answered when it refused: (code, message).
fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message.clone()),
        other => panic!("not an API server refusal: {other}"),
    }
}

/// The injected shape of env delivery, checked on a pod the API server
/// stored: the agent installed by an init container into a memory volume,
/// the app's command rewritten to run through it.
fn assert_env_injected(pod: &Value, app: &str, app_command: &str) {
    let shown = serde_json::to_string_pretty(pod).unwrap_or_default();
    assert_eq!(
        pod["metadata"]["annotations"]["sidekey.io/injected"], "true",
        "{shown}"
    );
    let (init, _) = container_names(pod);
    assert_eq!(
        init.iter().filter(|n| n.starts_with("sidekey-")).count(),
        1,
        "exactly one sidekey init container: {shown}"
    );
    let install = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "sidekey-install")
        .unwrap_or_else(|| panic!("no sidekey-install: {shown}"));
    assert_eq!(install["image"], AGENT_IMAGE);
    let bin = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "sidekey-bin")
        .unwrap_or_else(|| panic!("no sidekey-bin volume: {shown}"));
    assert_eq!(bin["emptyDir"]["medium"], "Memory", "{shown}");
    let container = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == app)
        .unwrap_or_else(|| panic!("no container {app}: {shown}"));
    let argv: Vec<&str> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|a| a.as_str().unwrap_or(""))
        .collect();
    assert!(
        argv.first().is_some_and(|a| a.ends_with("/sidekey-agent")),
        "command runs the agent: {argv:?}"
    );
    let dashdash = argv.iter().position(|a| *a == "--").expect("-- in argv");
    assert_eq!(argv[dashdash + 1], app_command, "{argv:?}");
}

async fn wait_running(client: &Client, ns: &str, name: &str) -> Value {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = wait_until(&format!("pod {ns}/{name} Running"), 120, || async {
        let p = pods.get_opt(name).await.ok().flatten()?;
        let v = to_json(&p);
        (v["status"]["phase"] == "Running").then_some(v)
    })
    .await;
    assert!(
        pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| n.starts_with("kwok-node-")),
        "bound by the scheduler to a kwok node: {}",
        pod["spec"]["nodeName"]
    );
    pod
}

/// The pods of `ns` whose labels match `selector`, once there are `n`
/// Running ones.
async fn wait_pods_running(client: &Client, ns: &str, selector: &str, n: usize) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    wait_until(
        &format!("{n} Running pods {selector} in {ns}"),
        180,
        || async {
            let list = pods.list(&lp).await.ok()?;
            let running: Vec<Value> = list
                .items
                .iter()
                .map(to_json)
                .filter(|p| p["status"]["phase"] == "Running")
                .collect();
            (running.len() >= n).then_some(running)
        },
    )
    .await
}

async fn wait_job_complete(client: &Client, ns: &str, name: &str) -> Value {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    wait_until(&format!("Job {ns}/{name} Complete"), 180, || async {
        let j = serde_json::to_value(jobs.get_opt(name).await.ok().flatten()?).ok()?;
        j["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
            .then_some(j)
    })
    .await
}

fn kubectl_ok(c: &Cluster, args: &[&str], input: Option<&str>) -> String {
    let out = c.kubectl(args, input);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stored_opted_in_pod_is_injected_and_passes_the_api_servers_validation() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "stored", json!({})).await;
        let before = c.reviews_total();
        let pod = pod_from_workload(&example("env-deployment.yaml"), "stored").expect("pod");
        // The API server answers with the pod it stored: patched by the
        // injector, validated in full (a patch it found invalid would be
        // refused here, not stored).
        let created = create_pod(&client, "stored", pod)
            .await
            .expect("the API server stores the injected pod");
        let stored = to_json(&created);
        assert_env_injected(&stored, "api", "/app/api");
        // The injector saw the pod as the API server really sends it:
        // defaulted, with the service-account token volume already added.
        let volumes = stored["spec"]["volumes"].to_string();
        assert!(volumes.contains("kube-api-access-"), "{volumes}");
        // Two reviews for one pod: the injection, then the reinvocation the
        // API server makes (reinvocationPolicy IfNeeded) because its own
        // ServiceAccount admission plugin, run again after the webhooks,
        // mounts the token into the init container sidekey added; the
        // injector then sees sidekey.io/injected and leaves the pod alone.
        assert_eq!(c.reviews_total(), before + 2, "injected, then reinvoked");
        // What is read back is what was stored.
        let name = stored["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        assert!(name.starts_with("api-"), "{name}");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "stored");
        let mut again = to_json(&pods.get(&name).await.expect("get"));
        // (the scheduler may have bound it meanwhile)
        let mut first = stored["spec"].clone();
        for spec in [&mut first, &mut again["spec"]] {
            spec.as_object_mut().expect("spec").remove("nodeName");
        }
        assert_eq!(again["spec"], first);
        // Scheduled onto a simulated node and reported Running there.
        let running = wait_running(&client, "stored", &name).await;
        assert_env_injected(&running, "api", "/app/api");
        // The audit records: one injection, one skip (the reinvocation).
        let records: Vec<Value> = c
            .audit_records()
            .into_iter()
            .filter(|r| r["namespace"] == "stored")
            .collect();
        let outcomes: Vec<&str> = records
            .iter()
            .map(|r| r["outcome"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(outcomes, ["success", "skipped"], "{records:?}");
        assert_eq!(
            records[0]["actor"], "sidekey-admin",
            "the requesting user, from the API server"
        );
    });
}

#[test]
fn pods_not_opted_in_never_reach_the_webhook() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "plain", json!({})).await;
        namespace(&client, "ignored", json!({"sidekey.io/ignore": "true"})).await;
        default_service_account(&client, "kube-system").await;
        default_service_account(&client, "sidekey-system").await;
        let before = c.reviews_total();
        // Not opted in: no annotation, or inject "false".
        let cases = [
            ("plain", plain_pod("no-annotation", json!({}))),
            (
                "plain",
                plain_pod(
                    "inject-false",
                    json!({"sidekey.io/inject": "false", "sidekey.io/services": "api"}),
                ),
            ),
            // Opted in, but in namespaces the webhook's selector skips.
            (
                "kube-system",
                plain_pod("sidekey-test-opted-in", opted_in()),
            ),
            ("ignored", plain_pod("opted-in", opted_in())),
            ("sidekey-system", plain_pod("opted-in", opted_in())),
        ];
        for (ns, pod) in cases {
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let stored = create_pod(&client, ns, pod)
                .await
                .unwrap_or_else(|e| panic!("{ns}/{name} is created: {e}"));
            let stored = to_json(&stored);
            assert!(
                !touched_by_sidekey(&stored),
                "{ns}/{name} was mutated: {stored}"
            );
        }
        assert_eq!(
            c.reviews_total(),
            before,
            "the injector was called for a pod that is not opted in"
        );
        // The counter does move for an opted-in pod (so the check above can fail).
        create_pod(&client, "plain", plain_pod("opted-in", opted_in()))
            .await
            .expect("opted-in pod");
        assert_eq!(c.reviews_total(), before + 2, "injected, then reinvoked");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        pods.delete("sidekey-test-opted-in", &Default::default())
            .await
            .expect("cleanup");
    });
}

#[test]
fn a_denial_reaches_the_client_as_the_api_server_returns_it() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "denied", json!({})).await;
        let mut annotations = opted_in();
        annotations["sidekey.io/delivery"] = json!("carrier-pigeon");
        let err = create_pod(&client, "denied", plain_pod("bad-delivery", annotations))
            .await
            .expect_err("a bad annotation is refused");
        let (code, message) = api_error(err);
        assert_eq!(code, 403, "{message}");
        assert!(
            message.contains("admission webhook \"inject.sidekey.io\" denied the request"),
            "{message}"
        );
        assert!(message.contains("sidekey.io/delivery"), "{message}");
        assert!(
            message.contains("carrier-pigeon") || message.contains("env"),
            "names the rule: {message}"
        );
        // The same through kubectl: the message a person sees.
        let out = c.kubectl(
            &["-n", "denied", "create", "-f", "-"],
            Some(
                &plain_pod(
                    "bad-delivery-2",
                    json!({"sidekey.io/inject": "true", "sidekey.io/services": "api", "sidekey.io/delivery": "carrier-pigeon"}),
                )
                .to_string(),
            ),
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("denied the request") && stderr.contains("sidekey.io/delivery"),
            "{stderr}"
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), "denied");
        assert!(pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty());
    });
}

/// Restarts the injector when dropped, so a failing test leaves the
/// cluster usable for the next.
struct Restart<'a>(&'a Cluster);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if !self.0.try_injector("start") {
            eprintln!("could not restart the injector: later tests will fail");
        }
    }
}

#[test]
fn with_the_injector_stopped_opted_in_pods_are_refused_and_others_created() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "outage", json!({})).await;
        c.injector("stop");
        let _restart = Restart(c);
        let err = create_pod(&client, "outage", plain_pod("opted-in", opted_in()))
            .await
            .expect_err("failurePolicy Fail refuses the pod");
        let (code, message) = api_error(err);
        assert_eq!(code, 500, "{message}");
        assert!(
            message.contains("failed calling webhook \"inject.sidekey.io\""),
            "{message}"
        );
        // Every other pod is still created, in any namespace.
        create_pod(&client, "outage", plain_pod("not-opted-in", json!({})))
            .await
            .expect("a pod that is not opted in is created");
        create_pod(
            &client,
            "sidekey-system",
            plain_pod("during-outage", opted_in()),
        )
        .await
        .expect("the injector's own namespace is never blocked");
        // A Deployment's pods that are not opted in keep coming.
        let mut deployment = example("env-deployment.yaml");
        deployment["metadata"]["name"] = json!("plain-api");
        deployment["spec"]["selector"]["matchLabels"]["app"] = json!("plain-api");
        deployment["spec"]["template"]["metadata"] = json!({"labels": {"app": "plain-api"}});
        kubectl_ok(
            c,
            &["-n", "outage", "apply", "-f", "-"],
            Some(&deployment.to_string()),
        );
        let pods = wait_pods_running(&client, "outage", "app=plain-api", 2).await;
        assert!(pods.iter().all(|p| !touched_by_sidekey(p)));
    });
    // Restarted (by `Restart`): opted-in pods are admitted again.
    block_on(async {
        let client = c.client().await;
        let stored = create_pod(&client, "outage", plain_pod("opted-in-again", opted_in()))
            .await
            .expect("admitted once the injector is back");
        assert!(touched_by_sidekey(&to_json(&stored)));
    });
}

#[test]
fn deployment_pods_are_injected_and_run() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "deploy", json!({})).await;
        let file = repo().join("deploy/examples/env-deployment.yaml");
        kubectl_ok(
            c,
            &["-n", "deploy", "apply", "-f", &file.display().to_string()],
            None,
        );
        let pods = wait_pods_running(&client, "deploy", "app=api", 2).await;
        for p in &pods {
            assert_env_injected(p, "api", "/app/api");
            assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        }
    });
}

#[test]
fn statefulset_pods_are_injected_and_run() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "stateful", json!({})).await;
        let template = example("env-deployment.yaml")["spec"]["template"].clone();
        let mut template = template;
        template["metadata"]["labels"] = json!({"app": "db"});
        let sts = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "replicas": 2,
                "selector": {"matchLabels": {"app": "db"}},
                "template": template,
            },
        });
        kubectl_ok(
            c,
            &["-n", "stateful", "apply", "-f", "-"],
            Some(&sts.to_string()),
        );
        let pods = wait_pods_running(&client, "stateful", "app=db", 2).await;
        let mut names: Vec<&str> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["db-0", "db-1"]);
        for p in &pods {
            assert_env_injected(p, "api", "/app/api");
        }
    });
}

/// The native sidecar the injector adds for `refresh` (an init container
/// with restartPolicy Always), on a pod the API server stored.
fn assert_native_sidecar(pod: &Value) {
    let shown = serde_json::to_string_pretty(pod).unwrap_or_default();
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "sidekey-sidecar")
        .unwrap_or_else(|| panic!("no sidekey-sidecar init container: {shown}"));
    assert_eq!(sidecar["restartPolicy"], "Always", "{shown}");
    assert_eq!(pod["spec"]["restartPolicy"], "Never", "{shown}");
    assert_eq!(
        pod["metadata"]["annotations"]["sidekey.io/injected"],
        "true"
    );
}

async fn job_pods(client: &Client, ns: &str, job: &str) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("job-name={job}"));
    pods.list(&lp)
        .await
        .expect("list")
        .items
        .iter()
        .map(to_json)
        .collect()
}

#[test]
fn job_with_a_native_sidecar_is_injected_and_completes() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "jobs", json!({})).await;
        let job = example("job-native-sidecar.yaml");
        kubectl_ok(
            c,
            &["-n", "jobs", "apply", "-f", "-"],
            Some(&job.to_string()),
        );
        let name = job["metadata"]["name"].as_str().expect("name");
        let done = wait_job_complete(&client, "jobs", name).await;
        assert_eq!(done["status"]["succeeded"], 1, "{done}");
        let pods = job_pods(&client, "jobs", name).await;
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_native_sidecar(&pods[0]);
        assert_eq!(pods[0]["status"]["phase"], "Succeeded");
    });
}

#[test]
fn cronjob_created_job_is_injected_and_completes() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "cron", json!({})).await;
        let job = example("job-native-sidecar.yaml");
        let cron = json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "* * * * *",
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": job["spec"].clone()},
            },
        });
        kubectl_ok(
            c,
            &["-n", "cron", "apply", "-f", "-"],
            Some(&cron.to_string()),
        );
        // The CronJob controller creates a Job at the next minute.
        let jobs: Api<Job> = Api::namespaced(client.clone(), "cron");
        let job_name = wait_until("a Job created by CronJob cron/nightly", 150, || async {
            let list = jobs.list(&ListParams::default()).await.ok()?;
            list.items.first().and_then(|j| j.metadata.name.clone())
        })
        .await;
        // No further runs while the rest of the suite counts reviews.
        kubectl_ok(
            c,
            &[
                "-n",
                "cron",
                "patch",
                "cronjob",
                "nightly",
                "-p",
                r#"{"spec":{"suspend":true}}"#,
            ],
            None,
        );
        let done = wait_job_complete(&client, "cron", &job_name).await;
        assert_eq!(
            done["metadata"]["ownerReferences"][0]["kind"], "CronJob",
            "{done}"
        );
        let pods = job_pods(&client, "cron", &job_name).await;
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_native_sidecar(&pods[0]);
    });
}

/// `kubectl apply --dry-run=server`: the client gets the injected pod,
/// nothing is stored, and the injector's audit record of that review says
/// it was a dry run (the injector's decision was real; the pod was not).
#[test]
fn server_dry_run_returns_the_injected_pod_and_audits_it_as_a_dry_run() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "dry", json!({})).await;
        let mut pod = pod_from_workload(&example("env-deployment.yaml"), "dry").expect("pod");
        pod["metadata"]["name"] = json!("dry-api");
        pod["metadata"]
            .as_object_mut()
            .expect("meta")
            .remove("generateName");
        let before = c.audit_records().len();
        let out = kubectl_ok(
            c,
            &[
                "-n",
                "dry",
                "apply",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&pod.to_string()),
        );
        let answered: Value = serde_json::from_str(&out).expect("kubectl JSON");
        assert_env_injected(&answered, "api", "/app/api");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "dry");
        assert!(
            pods.get_opt("dry-api").await.expect("get").is_none(),
            "a dry run stored a pod"
        );
        let records = c.audit_records();
        let new: Vec<&Value> = records[before..]
            .iter()
            .filter(|r| r.to_string().contains("dry-api"))
            .collect();
        // The injection and the reinvocation's skip, both marked dry runs.
        let outcomes: Vec<&str> = new
            .iter()
            .map(|r| r["outcome"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(outcomes, ["success", "skipped"], "{new:?}");
        for r in &new {
            assert_eq!(r["dry_run"], true, "recorded as a dry run: {r}");
        }
    });
}

/// A second mutating webhook (a small HTTPS server of this test, called
/// after sidekey's) changes the pod; the API server calls sidekey again
/// (reinvocationPolicy IfNeeded) and the pod still has exactly one agent.
#[test]
fn reinvocation_after_a_later_webhook_leaves_exactly_one_agent() {
    let (c, _serial) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = c.serving_cert(dir.path(), "second");
    let calls = dir.path().join("calls");
    let mut server = SecondWebhook::start(&crt, &key, &calls);
    let mwc = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-second-mutator"},
        "webhooks": [{
            "name": "second.test.invalid",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": format!("https://127.0.0.1:{}/mutate", server.port),
                "caBundle": base64_std(c.ca_pem().as_bytes()),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "reinvoke"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 5,
        }],
    });
    kubectl_ok(c, &["apply", "-f", "-"], Some(&mwc.to_string()));
    block_on(async {
        let client = c.client().await;
        namespace(&client, "reinvoke", json!({})).await;
        let before = c.reviews_total();
        let pod = pod_from_workload(&example("env-deployment.yaml"), "reinvoke").expect("pod");
        let stored = to_json(&create_pod(&client, "reinvoke", pod).await.expect("created"));
        assert_eq!(
            stored["metadata"]["labels"]["second-webhook"], "seen",
            "the second webhook ran"
        );
        assert_env_injected(&stored, "api", "/app/api");
        // sidekey was called twice: injected, then (reinvoked) left alone.
        assert_eq!(c.reviews_total(), before + 2, "sidekey was reinvoked");
    });
    kubectl_ok(
        c,
        &[
            "delete",
            "mutatingwebhookconfiguration",
            "zz-second-mutator",
        ],
        None,
    );
    let n = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(n >= 1, "the second webhook was never called");
    server.stop();
}

fn base64_std(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A mutating webhook in Python's standard library: adds the label
/// `second-webhook: seen` to every pod it is sent, counts its calls.
struct SecondWebhook {
    child: Child,
    port: u16,
}

const SECOND_WEBHOOK: &str = r#"
import base64, json, ssl, sys
from http.server import HTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        patch = []
        if not req["object"]["metadata"].get("labels"):
            patch.append({"op": "add", "path": "/metadata/labels", "value": {}})
        patch.append({"op": "add", "path": "/metadata/labels/second-webhook", "value": "seen"})
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": True, "patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode()}}).encode()
        with open(sys.argv[3], "a") as f:
            f.write("call\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl SecondWebhook {
    fn start(crt: &Path, key: &Path, calls: &Path) -> SecondWebhook {
        let mut child = Command::new("python3")
            .args(["-c", SECOND_WEBHOOK])
            .arg(crt)
            .arg(key)
            .arg(calls)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().expect("the second webhook's port");
        SecondWebhook { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SecondWebhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The app's image: prints what the process sees.
fn app_image(dir: &Path) -> Image {
    let script = dir.join("app");
    std::fs::write(
        &script,
        "#!/bin/sh\necho APP-STARTED\nenv | grep -E '^(DB_|API_|SIDEKEY_)' | sort | sed 's/^/ENV /'\n",
    )
    .expect("write app");
    Image::default()
        .with_file("/app/api", &script, 0o755)
        .with_entrypoint(&["/app/api"])
}

fn is_root() -> bool {
    run(Path::new("/usr/bin/id"), &["-u"], &[], b"")
        .map(|o| o.stdout_str().trim() == "0")
        .unwrap_or(false)
}

/// From `kubectl apply` to the app's environment with no hand-built
/// review: the pod the API server stored (created by the Deployment's
/// ReplicaSet, injected by the real webhook call) is run by the kubelet
/// played in `sidekey_e2e`, with the real agent against moto.
#[test]
fn the_stored_pod_runs_its_whole_life_with_the_real_agent() {
    let (c, _serial) = cluster();
    if !is_root() {
        sidekey_test_support::skip(
            "playing the kubelet needs root (mount namespaces, tmpfs); CI runs as root",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::shared();
    let secrets = ["cluster-life-db-password-1", "cluster-life-api-token-2"];
    for (key, value) in [("DB_PASSWORD", secrets[0]), ("API_TOKEN", secrets[1])] {
        let mut vars = aws_env(moto.endpoint());
        vars.push(("SIDEKEY_PREFIX".into(), c.prefix.clone()));
        vars.push(("SIDEKEY_KMS_KEY".into(), c.kms_key.clone()));
        vars.push((
            "SIDEKEY_AUDIT_LOG".into(),
            dir.path().join("cli-audit.jsonl").display().to_string(),
        ));
        let out = run(
            &bin_dir().join("sidekey"),
            &["put", "life", "api", key],
            &vars,
            value.as_bytes(),
        )
        .expect("sidekey put");
        assert_eq!(out.status, 0, "sidekey put: {}", out.stderr_str());
    }
    let stored = block_on(async {
        let client = c.client().await;
        namespace(&client, "life", json!({})).await;
        let deployment =
            std::fs::read_to_string(repo().join("deploy/examples/env-deployment.yaml"))
                .expect("example");
        kubectl_ok(c, &["-n", "life", "apply", "-f", "-"], Some(&deployment));
        wait_pods_running(&client, "life", "app=api", 1)
            .await
            .remove(0)
    });
    assert_env_injected(&stored, "api", "/app/api");
    // The kubelet played here makes memory emptyDirs only: the
    // service-account token volume the API server added is left out (the
    // agent does not use it; AWS credentials come from the environment).
    let mut pod = stored.clone();
    let token_volume = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["projected"].is_object())
        .and_then(|v| v["name"].as_str())
        .expect("a service-account token volume")
        .to_owned();
    pod["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .retain(|v| v["name"] != token_volume.as_str());
    for key in ["initContainers", "containers"] {
        for ctr in pod["spec"][key].as_array_mut().into_iter().flatten() {
            if let Some(mounts) = ctr["volumeMounts"].as_array_mut() {
                mounts.retain(|m| m["name"] != token_volume.as_str());
            }
        }
    }
    let mut kubelet = Kubelet::new(dir.path()).expect("kubelet");
    kubelet.extra_env = aws_env(moto.endpoint());
    kubelet.image(
        AGENT_IMAGE,
        Image::default().with_file("/sidekey-agent", bin_dir().join("sidekey-agent"), 0o755),
    );
    kubelet.image("ghcr.io/example/api:1.4.2", app_image(dir.path()));
    let run = kubelet.run(&pod).expect("the stored pod runs");
    let app = run.container("api").expect("api ran");
    assert_eq!(app.status, Some(0), "{}", app.stderr_str());
    let out = app.stdout_str();
    assert!(out.contains("APP-STARTED"), "{out}");
    assert!(
        out.contains(&format!("ENV DB_PASSWORD={}", secrets[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!("ENV API_TOKEN={}", secrets[1])),
        "{out}"
    );
    assert!(
        !out.contains("ENV SIDEKEY_"),
        "SIDEKEY_* must not reach the app: {out}"
    );
    // No value in the agent's output, the injector's logs and audit, or
    // anything the cluster wrote.
    let needles: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    for ctr in &run.containers {
        assert_no_secret(&format!("stderr of {}", ctr.name), &ctr.stderr, &needles);
        let stdout = ctr.stdout_str();
        let agent_part = stdout.split("APP-STARTED").next().unwrap_or("");
        assert_no_secret(
            &format!("agent output in {}", ctr.name),
            agent_part.as_bytes(),
            &needles,
        );
    }
    for file in [
        "logs/injector.log",
        "injector-audit.jsonl",
        "logs/kube-apiserver.log",
    ] {
        let bytes = std::fs::read(c.state.join(file)).unwrap_or_default();
        assert_no_secret(file, &bytes, &needles);
    }
    kubelet.cleanup();
}

/// The injector runs with `--client-ca` (the cluster's CA): a caller
/// without a client certificate is refused at the TLS handshake, and the
/// API server, which presents the certificate of its
/// `--admission-control-config-file`, gets its pods injected.
#[test]
fn the_api_server_presents_its_client_certificate_to_the_webhook() {
    let (c, _serial) = cluster();
    let argv = std::fs::read(c.state.join("injector.argv")).expect("injector.argv");
    assert!(
        argv.split(|b| *b == 0).any(|a| a == b"--client-ca"),
        "scripts/cluster started the injector without --client-ca"
    );
    let pki = c.state.join("pki");
    let url = format!("https://127.0.0.1:{}/readyz", c.injector_port);
    let curl = |cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.arg("-fsS").arg("--cacert").arg(pki.join("ca.crt"));
        if cert {
            cmd.arg("--cert")
                .arg(pki.join("webhook-client.crt"))
                .arg("--key")
                .arg(pki.join("webhook-client.key"));
        }
        cmd.arg(&url).output().expect("curl")
    };
    assert!(
        !curl(false).status.success(),
        "the injector answered a caller without a client certificate"
    );
    assert!(
        curl(true).status.success(),
        "the client certificate is accepted"
    );
    block_on(async {
        let client = c.client().await;
        namespace(&client, "mtls", json!({})).await;
        let stored = create_pod(&client, "mtls", plain_pod("opted-in", opted_in()))
            .await
            .expect("the API server reaches the injector with its certificate");
        assert!(touched_by_sidekey(&to_json(&stored)));
    });
}
