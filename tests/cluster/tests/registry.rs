//! Issue 18 through the real API server: the fixture's injector restarted
//! with `--registry-lookup --registry-pull-secrets`, reading the API server
//! as its own service account (`sidekey-system/sidekey-injector`, a token
//! from the TokenRequest API) with the RBAC the install ships for it
//! (`deploy/components/registry-pull-secrets/rbac.yaml`), a real
//! registry on loopback (Debian's docker-registry, TLS from a generated CA,
//! htpasswd auth; images from umoci pushed by skopeo), and
//! `kubernetes.io/dockerconfigjson` Secrets in the pods' namespace.
//!
//! - Before that RBAC is applied: denied, naming the permission missing.
//!   After: the service account can `get` secrets and serviceaccounts in
//!   a tenant namespace and nothing more (no list, no watch, no other
//!   resource), as `kubectl auth can-i` reports.
//! - A Deployment whose pod has no `command` and `imagePullSecrets`: the
//!   stored pod runs the image's ENTRYPOINT and CMD through the agent.
//! - The same image without the secret: denied with the registry's 401.
//! - Through the service account's `imagePullSecrets`: injected.
//! - A secret that does not exist, one of the wrong type: denied naming
//!   the secret and the rule.
//! - The password is in no answer, event, log, audit record or stored pod.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sidekey_cluster_tests::{block_on, cluster, namespace, repo, to_json, wait_until, Cluster};
use sidekey_test_support::assert_no_secret;
use sidekey_test_support::registry::{ImageSpec, TestRegistry};

const NS: &str = "registry-lookup";
const ENTRYPOINT: [&str; 2] = ["/bin/app", "--flag"];
const CMD: [&str; 2] = ["serve", "--port=8080"];

/// A pod spec without a command, running `image` as a non-root user.
fn spec(image: &str, pull_secrets: &[&str], service_account: Option<&str>) -> Value {
    let mut s = json!({
        "containers": [{"name": "app", "image": image}],
    });
    if !pull_secrets.is_empty() {
        s["imagePullSecrets"] = pull_secrets.iter().map(|n| json!({"name": n})).collect();
    }
    if let Some(sa) = service_account {
        s["serviceAccountName"] = json!(sa);
    }
    s
}

fn annotations() -> Value {
    json!({"sidekey.io/inject": "true", "sidekey.io/services": "api"})
}

async fn create_pod(client: &Client, name: &str, spec: Value) -> Result<Pod, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations()},
        "spec": spec,
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await
}

fn denial(r: Result<Pod, kube::Error>) -> String {
    match r {
        Ok(p) => panic!("admitted: {}", to_json(&p)),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{}", s.message);
            s.message
        }
        Err(e) => panic!("not an API server refusal: {e}"),
    }
}

/// The stored container's command is the image's ENTRYPOINT and CMD run
/// through the agent (`<agent> exec -- ...`).
fn assert_runs_the_image(pod: &Value) {
    let shown = serde_json::to_string_pretty(pod).unwrap_or_default();
    assert_eq!(
        pod["metadata"]["annotations"]["sidekey.io/injected"], "true",
        "{shown}"
    );
    let app = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "app")
        .unwrap_or_else(|| panic!("no app container: {shown}"));
    let command: Vec<&str> = app["command"]
        .as_array()
        .unwrap_or_else(|| panic!("no command: {shown}"))
        .iter()
        .map(|a| a.as_str().unwrap_or(""))
        .collect();
    let mut tail = vec!["exec", "--"];
    tail.extend(ENTRYPOINT);
    tail.extend(CMD);
    assert_eq!(command.len(), tail.len() + 1, "{shown}");
    assert_eq!(command[1..], tail[..], "{shown}");
    assert!(command[0].starts_with('/'), "the agent binary: {shown}");
    assert!(app.get("args").is_none(), "{shown}");
}

fn apply(c: &Cluster, args: &[&str]) {
    let out = c.kubectl(args, None);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the injector's service account may `verb` `resource` in the
/// test's namespace (`kubectl auth can-i`, as the admin impersonating it).
fn can_i(c: &Cluster, verb: &str, resource: &str) -> bool {
    let out = c.kubectl(
        &[
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            NS,
            "--as=system:serviceaccount:sidekey-system:sidekey-injector",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// The shipped RBAC, deleted when the test ends (the cluster is shared by
/// the tests of this file).
struct Rbac<'a>(&'a Cluster, &'a str);

impl Drop for Rbac<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .kubectl(&["delete", "--ignore-not-found", "-f", self.1], None);
    }
}

#[test]
fn a_pod_without_a_command_runs_its_images_entrypoint_read_with_its_pull_secrets() {
    let missing = TestRegistry::tools_missing();
    if !missing.is_empty() {
        sidekey_test_support::skip(&format!("registry tools missing: {}", missing.join(", ")));
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image_spec = ImageSpec {
        arch: "amd64",
        entrypoint: Some(&ENTRYPOINT),
        cmd: Some(&CMD),
    };
    // One tag per case: an image config, once read, is cached.
    let mut images = Vec::new();
    for tag in [
        "deployment",
        "anonymous",
        "service-account",
        "gone",
        "opaque",
        "forbidden",
    ] {
        images.push(
            registry
                .push_image(&format!("web/app:{tag}"), &image_spec)
                .expect("push"),
        );
    }
    let (c, _guard) = cluster();
    let ca = registry.ca_file();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("sidekey-injector.kubeconfig");
    c.service_account_kubeconfig("sidekey-system", "sidekey-injector", &kubeconfig);
    let rbac = repo().join("deploy/components/registry-pull-secrets/rbac.yaml");
    let rbac = rbac.to_str().expect("path");
    let _rbac = Rbac(c, rbac);
    let injector = c.injector_with(
        &[format!("KUBECONFIG={}", kubeconfig.display())],
        &[
            "--registry-lookup".into(),
            "--registry-pull-secrets".into(),
            "--registry-ca".into(),
            ca.display().to_string(),
            "--registry-allow".into(),
            registry.host(),
        ],
    );
    let password = registry.password().to_owned();
    let mut answers = String::new();
    block_on(async {
        let client = c.client().await;
        namespace(&client, NS, json!({})).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let secret = |name: &str, kind: &str, key: &str| -> Secret {
            serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "type": kind,
                "stringData": {key: registry.docker_config(&password)},
            }))
            .expect("secret")
        };
        // A pull secret for another registry only.
        let ghcr: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ghcr"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": r#"{"auths":{"ghcr.io":{"username":"u","password":"not-this-registry"}}}"#},
        }))
        .expect("secret");
        for s in [
            secret(
                "regcred",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
            ),
            secret("opaque", "Opaque", ".dockerconfigjson"),
            ghcr,
        ] {
            secrets
                .create(&PostParams::default(), &s)
                .await
                .expect("secret");
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
        let sa: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "puller"},
            "imagePullSecrets": [{"name": "regcred"}],
        }))
        .expect("service account");
        accounts
            .create(&PostParams::default(), &sa)
            .await
            .expect("service account");

        // The service account without the shipped RBAC: denied, naming
        // what the injector needs.
        let m = denial(
            create_pod(
                &client,
                "forbidden",
                spec(&images[5], &["regcred"], Some("puller")),
            )
            .await,
        );
        for part in [
            "cannot get service account registry-lookup/puller (the injector needs get on serviceaccounts)",
            "cannot get pull secret registry-lookup/regcred (from the pod's imagePullSecrets) (the injector needs get on secrets)",
            "forbidden",
        ] {
            assert!(m.contains(part), "{part:?} in {m}");
        }
        answers.push_str(&m);

        // With it: get on secrets and serviceaccounts, nothing more.
        apply(c, &["apply", "-f", rbac]);
        wait_until("the shipped RBAC in effect", 30, || async {
            can_i(c, "get", "secrets").then_some(())
        })
        .await;
        for (verb, resource) in [
            ("get", "serviceaccounts"),
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "secrets"),
            ("list", "serviceaccounts"),
            ("get", "configmaps"),
            ("get", "pods"),
        ] {
            assert_eq!(
                can_i(c, verb, resource),
                (verb, resource) == ("get", "serviceaccounts"),
                "{verb} {resource} by the injector's service account"
            );
        }

        // A Deployment: its pod, created by the controllers, is stored
        // running the image's ENTRYPOINT and CMD.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let d: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": annotations()},
                    "spec": spec(&images[0], &["regcred"], None),
                },
            },
        }))
        .expect("deployment");
        deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("deployment");
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let stored = wait_until("the Deployment's pod", 60, || async {
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        })
        .await;
        let stored = to_json(&stored);
        assert_runs_the_image(&stored);
        answers.push_str(&stored.to_string());

        // Without the secret (the default service account has none):
        // the registry's 401.
        let m = denial(create_pod(&client, "anonymous", spec(&images[1], &[], None)).await);
        for part in [
            images[1].as_str(),
            "refused access anonymously",
            "401 Unauthorized",
            "sidekey.io/command.app",
        ] {
            assert!(m.contains(part), "{part:?} in {m}");
        }
        answers.push_str(&m);

        // Through the service account's imagePullSecrets: the pod names
        // its own (for another registry), so the API server does not copy
        // the service account's into it; the injector reads them.
        let p = create_pod(
            &client,
            "by-account",
            spec(&images[2], &["ghcr"], Some("puller")),
        )
        .await
        .expect("admitted through the service account's pull secret");
        let p = to_json(&p);
        assert_eq!(
            p["spec"]["imagePullSecrets"],
            json!([{"name": "ghcr"}]),
            "only the pod's own pull secret is in the stored pod"
        );
        assert_runs_the_image(&p);
        answers.push_str(&p.to_string());

        // A secret that does not exist; one of the wrong type.
        let m = denial(create_pod(&client, "gone", spec(&images[3], &["gone"], None)).await);
        assert!(
            m.contains(&format!(
                "pull secret {NS}/gone (from the pod's imagePullSecrets) does not exist"
            )),
            "{m}"
        );
        answers.push_str(&m);
        let m = denial(create_pod(&client, "opaque", spec(&images[4], &["opaque"], None)).await);
        assert!(
            m.contains(&format!("pull secret {NS}/opaque (from the pod's imagePullSecrets) is of type Opaque, not kubernetes.io/dockerconfigjson")),
            "{m}"
        );
        answers.push_str(&m);

        let events: Api<Event> = Api::namespaced(client.clone(), NS);
        for e in events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
        {
            answers.push_str(e.message.as_deref().unwrap_or(""));
        }
    });

    // The password nowhere: answers, events, stored pods, the injector's
    // log and audit records.
    let log = c.injector_log();
    drop(injector);
    let audit = serde_json::to_string(&c.audit_records()).unwrap_or_default();
    // And the config.json form of it (base64 of user:password).
    let config: Value = serde_json::from_str(&registry.docker_config(&password)).expect("json");
    let auth = config["auths"][registry.host()]["auth"]
        .as_str()
        .expect("auth")
        .to_owned();
    let needles: [&[u8]; 2] = [password.as_bytes(), auth.as_bytes()];
    assert_no_secret(
        "answers, events and stored pods",
        answers.as_bytes(),
        &needles,
    );
    assert_no_secret("the injector's log", log.as_bytes(), &needles);
    assert_no_secret("the audit records", audit.as_bytes(), &needles);
    assert!(!log.is_empty(), "the injector logged");
}
