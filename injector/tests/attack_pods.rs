//! A pod author against the real `sidekey-injector` process, reviews
//! coming through the API server (TLS with its client certificate): a
//! forged `sidekey.io/injected` marker with their own agent and
//! environment, `SIDEKEY_*` settings from `envFrom`, the injector's
//! volumes mounted by their own containers, hundreds of bad annotations;
//! and the audit file after a line longer than 64 KiB. A real injection
//! followed by a reinvocation (the pod as other webhooks and the API server
//! leave it) must stay allowed without a patch.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};
use sidekey_audit::{append_to_file, verify_file, Component, Event};

const IMAGE: &str = "sidekey/agent:attack";

struct World {
    _dir: tempfile::TempDir,
    process: Process,
    ca: Ca,
    /// The API server's client certificate (`--client-ca` trusts its CA):
    /// the pod author's reviews come through the API server.
    apiserver: Leaf,
    audit: std::path::PathBuf,
}

fn start(dir: tempfile::TempDir, prepare_audit: impl FnOnce(&Path)) -> World {
    let (ca, _, cert, key) = write_certs(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "agentImage: {IMAGE}\nenvironments:\n  - namespaces: team-a\n    environment: staging\n"
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    prepare_audit(&audit);
    let apiserver_ca = Ca::new("API server client CA");
    let client_ca = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca, &apiserver_ca.pem).unwrap();
    let process = Process::start(
        &cert,
        &key,
        &[
            "--config",
            config.to_str().unwrap(),
            "--client-ca",
            client_ca.to_str().unwrap(),
        ],
        &[("SIDEKEY_AUDIT", &format!("file:{}", audit.display()))],
    );
    World {
        _dir: dir,
        process,
        ca,
        apiserver: apiserver_ca.client("kube-apiserver"),
        audit,
    }
}

impl World {
    async fn post(&self, review: &Value) -> Value {
        let mut client = Client::connect_as(
            self.process.addr,
            &[&self.ca.der],
            Alpn::H2,
            Some(&self.apiserver),
        )
        .await
        .unwrap();
        let answer = client
            .send("POST", "/mutate", serde_json::to_vec(review).unwrap())
            .await
            .unwrap();
        answer.response()
    }

    async fn metrics(&self) -> String {
        let mut client = Client::connect_as(
            self.process.addr,
            &[&self.ca.der],
            Alpn::Http11,
            Some(&self.apiserver),
        )
        .await
        .unwrap();
        client
            .send("GET", "/metrics", Vec::new())
            .await
            .unwrap()
            .text()
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn denied_message(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response:#}");
    assert_eq!(response["status"]["code"], 403, "{response:#}");
    response["status"]["message"].as_str().unwrap().to_owned()
}

/// The attack of the issue: the marker, an agent init container of the
/// author's own and their own SIDEKEY_ENVIRONMENT.
fn forged() -> Value {
    let mut annotations = opted_in("api");
    annotations["sidekey.io/injected"] = json!("true");
    let mut p = pod(annotations);
    let spec = &mut p["spec"];
    spec["volumes"].as_array_mut().unwrap().push(
        json!({"name": "sidekey-bin", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}),
    );
    spec["initContainers"] = json!([{
        "name": "sidekey-install", "image": IMAGE,
        "command": ["/sidekey-agent", "install", "/sidekey/bin"],
        "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/sidekey/bin"}]
    }]);
    let c = &mut spec["containers"][0];
    c["command"] = json!(["/sidekey/bin/sidekey-agent", "exec", "--", "/app/api"]);
    c["env"].as_array_mut().unwrap().extend([
        json!({"name": "SIDEKEY_ENVIRONMENT", "value": "production"}),
        json!({"name": "SIDEKEY_SERVICES", "value": "api"}),
    ]);
    c["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidekey-bin", "mountPath": "/sidekey/bin", "readOnly": true}));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_author_cannot_switch_the_checks_off_or_steer_the_agent() {
    let w = start(tempfile::tempdir().unwrap(), |_| {});

    // The forged marker is denied, naming the rule.
    let message = denied_message(
        &w.post(&review("u-forged", "team-a", "CREATE", forged()))
            .await,
    );
    assert!(message.contains("sidekey.io/injected"), "{message}");
    assert!(
        message.contains("the marker counts only when the injector's containers and volumes are as this injector makes them"),
        "{message}"
    );
    assert!(message.contains("SIDEKEY_ENVIRONMENT"), "{message}");

    // A real injection, then a reinvocation with the pod as other
    // webhooks and the API server leave it: allowed, no patch.
    let fresh = pod(opted_in("api"));
    let response = w
        .post(&review("u-fresh", "team-a", "CREATE", fresh.clone()))
        .await;
    assert_eq!(response["allowed"], true, "{response:#}");
    let patch = patch_of(&response).expect("a patch");
    let mut injected = sidekey_patch::apply(&fresh, &patch).unwrap();
    let spec = &mut injected["spec"];
    for c in spec["initContainers"].as_array_mut().unwrap() {
        // The service account admission plugin mounts the token in every
        // container; the API server drops empty env values.
        c["volumeMounts"].as_array_mut().unwrap().push(json!({
            "name": "kube-api-access-x7k2p", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
        }));
        c["terminationMessagePath"] = json!("/dev/termination-log");
    }
    for e in spec["containers"][0]["env"].as_array_mut().unwrap() {
        if e["value"] == "" {
            e.as_object_mut().unwrap().remove("value");
        }
    }
    spec["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "mesh-proxy", "image": "mesh:1", "args": ["proxy"]}));
    let again = w
        .post(&review("u-again", "team-a", "CREATE", injected.clone()))
        .await;
    assert_eq!(again["allowed"], true, "{again:#}");
    assert!(again.get("patch").is_none(), "{again:#}");

    // The same injected pod, steered: its environment changed.
    let mut steered = injected.clone();
    for e in steered["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
    {
        if e["name"] == "SIDEKEY_ENVIRONMENT" {
            e["value"] = json!("production");
        }
    }
    let message = denied_message(
        &w.post(&review("u-steered", "team-a", "CREATE", steered))
            .await,
    );
    assert!(
        message.contains("SIDEKEY_ENVIRONMENT with another value"),
        "{message}"
    );

    // Settings through envFrom, in every form that can make SIDEKEY_*
    // names, and in an init container.
    for (i, prefix) in ["SIDEKEY_", "SIDE", "S"].into_iter().enumerate() {
        let mut p = pod(opted_in("api"));
        p["spec"]["containers"][0]["envFrom"] =
            json!([{"prefix": prefix, "configMapRef": {"name": "steer"}}]);
        let message = denied_message(
            &w.post(&review(&format!("u-prefix-{i}"), "team-a", "CREATE", p))
                .await,
        );
        assert!(
            message.contains(&format!("ConfigMap \"steer\" with the prefix \"{prefix}\"")),
            "{message}"
        );
    }
    let mut p = pod(opted_in("api"));
    p["spec"]["initContainers"] = json!([{
        "name": "setup", "image": "busybox",
        "env": [{"name": "SIDEKEY_CA_FILE", "value": "/tmp/ca.pem"}]
    }]);
    let message = denied_message(&w.post(&review("u-init-env", "team-a", "CREATE", p)).await);
    assert!(
        message.contains("container \"setup\" sets SIDEKEY_CA_FILE"),
        "{message}"
    );

    // The injector's volumes, mounted by the pod's own containers.
    let mut p = pod(
        json!({"sidekey.io/inject": "true", "sidekey.io/services": "api", "sidekey.io/delivery": "both", "sidekey.io/containers": "api"}),
    );
    p["spec"]["initContainers"] = json!([{
        "name": "swap", "image": "busybox", "command": ["cp", "/evil", "/b/sidekey-agent"],
        "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/b"}]
    }]);
    p["spec"]["containers"].as_array_mut().unwrap().push(json!({
        "name": "reader", "image": "busybox",
        "volumeMounts": [{"name": "sidekey-secrets", "mountPath": "/s", "subPath": "API_TOKEN"}]
    }));
    let message = denied_message(&w.post(&review("u-mounts", "team-a", "CREATE", p)).await);
    assert!(
        message.contains("container \"swap\" mounts the volume sidekey-bin"),
        "{message}"
    );
    assert!(
        message.contains("container \"reader\" mounts the volume sidekey-secrets"),
        "{message}"
    );

    // Every decision is audited in one valid chain.
    let records = w.audit_lines();
    assert_eq!(records.len(), 9, "{records:#?}");
    assert!(records
        .iter()
        .any(|r| r["uid"] == "u-forged" && r["outcome"] == "denied"));
    assert!(records
        .iter()
        .any(|r| r["uid"] == "u-again" && r["outcome"] == "skipped"));
    assert_eq!(verify_file(&w.audit).unwrap().records, 9);
    assert!(w
        .metrics()
        .await
        .contains("sidekey_injector_audit_failures_total 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_bad_annotations_give_a_bounded_denial_and_record() {
    let w = start(tempfile::tempdir().unwrap(), |_| {});
    let mut annotations = opted_in("api");
    for i in 0..300 {
        annotations[format!("sidekey.io/x{i:03}-{}", "y".repeat(40))] = json!("1");
    }
    let response = w
        .post(&review("u-many", "team-a", "CREATE", pod(annotations)))
        .await;
    let message = denied_message(&response);
    assert!(message.len() < 4096, "{} bytes: {message}", message.len());
    assert!(
        message.contains("unknown annotation sidekey.io/x000-"),
        "{message}"
    );
    assert!(message.ends_with("and 295 more problem(s)"), "{message}");
    let line = std::fs::read_to_string(&w.audit).unwrap();
    assert_eq!(line.lines().count(), 1);
    assert!(line.len() < 8192, "{} bytes", line.len());
    let record: Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(record["outcome"], "denied");
    assert_eq!(record["reason"], message.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_after_a_line_longer_than_64_kib_is_still_appended() {
    // The file the injector appends to ends with a 100 KiB record (an
    // older release wrote such lines).
    let w = start(tempfile::tempdir().unwrap(), |audit| {
        append_to_file(audit, Component::Cli, Event::new("put")).unwrap();
        let mut long = Event::new("review");
        long.reason = Some("x".repeat(100 * 1024));
        append_to_file(audit, Component::Injector, long).unwrap();
    });
    assert!(std::fs::metadata(&w.audit).unwrap().len() > 100 * 1024);
    for i in 0..3 {
        let response = w.post(&injectable(&format!("u-after-{i}"))).await;
        assert_eq!(response["allowed"], true, "{response:#}");
    }
    let records = w.audit_lines();
    assert_eq!(records.len(), 5);
    assert_eq!(records[4]["uid"], "u-after-2");
    assert_eq!(records[4]["seq"], 5);
    assert_eq!(verify_file(&w.audit).unwrap().records, 5);
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("sidekey_injector_audit_failures_total 0"),
        "{metrics}"
    );
}
