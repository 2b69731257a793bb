//! A pod author against a real Kubernetes API server with the injector
//! registered (the local control plane of `scripts/cluster`): a forged
//! `sidekey.io/injected` marker with their own agent and environment, the
//! injector's volume mounted by their own init container, settings through
//! an `envFrom` prefix. And what must keep working: a pod re-created from
//! an injected one (as `kubectl get -o json | kubectl create` does), which
//! the API server defaults and sends with the injector's parts already in.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sidekey_cluster_tests::{block_on, cluster, namespace, to_json, AGENT_IMAGE};

async fn create(client: &Client, ns: &str, pod: Value) -> Result<Value, (u16, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod).expect("a Pod");
    match pods.create(&PostParams::default(), &pod).await {
        Ok(p) => Ok(to_json(&p)),
        Err(kube::Error::Api(s)) => Err((s.code, s.message.clone())),
        Err(other) => panic!("not an API server answer: {other}"),
    }
}

fn app_pod(name: &str, annotations: Value) -> Value {
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

fn denied(result: Result<Value, (u16, String)>) -> String {
    let (code, message) = result.expect_err("the API server refuses the pod");
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("admission webhook \"inject.sidekey.io\" denied the request"),
        "{message}"
    );
    message
}

#[test]
fn a_forged_marker_is_refused_and_a_recreated_injected_pod_is_admitted() {
    let (c, _serial) = cluster();
    block_on(async {
        let client = c.client().await;
        namespace(&client, "marker", json!({})).await;

        // The attack: the marker, an agent of the author's own and their own
        // SIDEKEY_ENVIRONMENT.
        let mut annotations = opted_in();
        annotations["sidekey.io/injected"] = json!("true");
        let mut forged = app_pod("forged", annotations);
        let spec = &mut forged["spec"];
        spec["volumes"] =
            json!([{"name": "sidekey-bin", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]);
        spec["initContainers"] = json!([{
            "name": "sidekey-install", "image": AGENT_IMAGE,
            "command": ["/sidekey-agent", "install", "/sidekey/bin"],
            "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/sidekey/bin"}]
        }]);
        let app = &mut spec["containers"][0];
        app["command"] = json!(["/sidekey/bin/sidekey-agent", "exec", "--", "/app/run"]);
        app["env"] = json!([
            {"name": "SIDEKEY_ENVIRONMENT", "value": "production"},
            {"name": "SIDEKEY_SERVICES", "value": "api"}
        ]);
        app["volumeMounts"] =
            json!([{"name": "sidekey-bin", "mountPath": "/sidekey/bin", "readOnly": true}]);
        let message = denied(create(&client, "marker", forged).await);
        assert!(
            message.contains("sidekey.io/injected")
                && message.contains("the marker counts only when"),
            "{message}"
        );

        // The pod's own init container replacing the agent binary.
        let mut swap = app_pod("swap", opted_in());
        swap["spec"]["initContainers"] = json!([{
            "name": "swap", "image": "busybox", "command": ["cp", "/evil", "/b/sidekey-agent"],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/b"}]
        }]);
        let message = denied(create(&client, "marker", swap).await);
        assert!(
            message.contains("container \"swap\" mounts the volume sidekey-bin"),
            "{message}"
        );

        // Settings through an envFrom prefix.
        let mut steer = app_pod("steer", opted_in());
        steer["spec"]["containers"][0]["envFrom"] =
            json!([{"prefix": "SIDEKEY_", "configMapRef": {"name": "steer"}}]);
        let message = denied(create(&client, "marker", steer).await);
        assert!(
            message.contains("with the prefix \"SIDEKEY_\""),
            "{message}"
        );

        // An injected pod, re-created from what the API server stored.
        let stored = create(&client, "marker", app_pod("first", opted_in()))
            .await
            .expect("an opted-in pod is injected");
        assert_eq!(
            stored["metadata"]["annotations"]["sidekey.io/injected"],
            "true"
        );
        let mut again = stored.clone();
        let meta = again["metadata"].as_object_mut().unwrap();
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(field);
        }
        meta.insert("name".to_owned(), json!("second"));
        again.as_object_mut().unwrap().remove("status");
        again["spec"].as_object_mut().unwrap().remove("nodeName");
        let recreated = create(&client, "marker", again)
            .await
            .unwrap_or_else(|(code, m)| panic!("re-created pod refused ({code}): {m}"));
        // Admitted unchanged: no second injection.
        let names = |p: &Value| -> Vec<String> {
            p["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["name"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(names(&recreated), names(&stored));
        assert_eq!(
            recreated["spec"]["containers"][0]["env"],
            stored["spec"]["containers"][0]["env"]
        );
        assert_eq!(
            recreated["spec"]["containers"][0]["command"],
            stored["spec"]["containers"][0]["command"]
        );

        // The same re-created pod steered to another environment: refused.
        let mut steered = stored.clone();
        let meta = steered["metadata"].as_object_mut().unwrap();
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(field);
        }
        meta.insert("name".to_owned(), json!("third"));
        steered.as_object_mut().unwrap().remove("status");
        steered["spec"].as_object_mut().unwrap().remove("nodeName");
        for e in steered["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
        {
            if e["name"] == "SIDEKEY_ENVIRONMENT" {
                e["value"] = json!("production");
            }
        }
        let message = denied(create(&client, "marker", steered).await);
        assert!(
            message.contains("SIDEKEY_ENVIRONMENT with another value"),
            "{message}"
        );
    });
}
