//! The Helm chart on the real API server, through the real helm binary
//! (`scripts/helm`, the pinned version built from the Go module proxy).
//!
//! kwok's nodes run no container, so the chart's injector Deployment never
//! really runs. The test plays its pods instead: it reads the installed
//! Deployment's container (args, env, volume mounts) and runs the locally
//! built `sidekey-injector` with exactly those args and env, the mounted
//! ConfigMap written where the args point, the `emptyDir` a temporary
//! folder, the listen addresses moved to loopback ports, and a kubeconfig
//! holding a token of the chart's service account (so the chart's RBAC is
//! what it runs with). The chart is installed with `webhook.url` pointing at
//! a TCP forwarder on loopback that stands in for the Service: it passes
//! each connection to one of the "ready endpoints" (the injectors the test
//! has added), as kube-proxy would.
//!
//! - `helm install` with the defaults (self-managed TLS) and only
//!   `webhook.url`: the injector makes its Secret, patches the caBundle,
//!   and an opted-in pod is injected.
//! - `helm upgrade` to new values (log level, webhook timeout, replicas, a
//!   9 s certificate) while pods are created in a loop: the injector rolls
//!   as a Deployment rolls it (the new one started with the new rendered
//!   args and added once ready, then the old one removed and sent SIGTERM),
//!   the new one renews its certificate twice; no pod is refused, every one
//!   is injected. (Renewals over many rounds and two replicas agreeing on
//!   one Secret are `self_managed_tls.rs`.)
//! - `helm uninstall`: every object carrying the release's label is gone,
//!   the webhook configuration included, and an opted-in pod created after
//!   it (no injector running; the webhook's failurePolicy was Fail) is
//!   admitted without injection.
//!
//! The chart's webhook configuration is named `sidekey-injector`, like the
//! fixture's: the fixture's is removed for the test and applied again after.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sidekey_cluster_tests::{
    bin_dir, block_on, cluster, namespace, opted_in_pod, to_json, touched_by_sidekey, wait_until,
    Cluster,
};

const RELEASE: &str = "sidekey";
const NS: &str = "sidekey-helm";
const APPS: &str = "helm-apps";
const CHART: &str = "deploy/helm/sidekey";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on the plain probes port: the status line's code.
fn probe(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1)?.parse().ok()
}

/// The Service's stand-in: forwards each connection to one of `backends`
/// (round robin), both ways, until either side closes.
struct Forwarder {
    port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start() -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("forwarder port");
        let port = listener.local_addr().expect("addr").port();
        let backends: Arc<Mutex<Vec<u16>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (list, halt) = (backends.clone(), stop.clone());
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let ports = list.lock().expect("backends").clone();
                if ports.is_empty() {
                    continue; // no ready endpoint: the connection is refused
                }
                let port = ports[next.fetch_add(1, Ordering::SeqCst) % ports.len()];
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                pipe(client, server);
            }
        });
        Forwarder {
            port,
            backends,
            stop,
        }
    }

    fn set(&self, ports: &[u16]) {
        *self.backends.lock().expect("backends") = ports.to_vec();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        copy(a, b2);
        copy(b, a2);
    }
}

/// The local injector run as one pod of the installed Deployment.
struct Injector {
    child: Option<Child>,
    name: String,
    port: u16,
    probes: u16,
    log: PathBuf,
    /// The args as the chart rendered them (before the loopback rewrites).
    rendered: Vec<String>,
    /// The container's environment, as given to the process.
    env: Vec<(String, String)>,
}

impl Injector {
    /// SIGTERM (as the kubelet stops a pod) and wait for the exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.name);
        child.wait().expect("wait for the injector")
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Starts the local injector with the args, env and mounts of the
/// installed Deployment's `injector` container (see the module docs).
async fn start_from_deployment(c: &Cluster, client: &Client, dir: &Path, name: &str) -> Injector {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment = serde_json::to_value(
        deployments
            .get("sidekey-injector")
            .await
            .expect("the Deployment"),
    )
    .expect("JSON");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "injector")
        .expect("the injector container");
    let rendered = strings(&container["args"]);

    // The volume mounts, made local.
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("pod folder");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in container["volumeMounts"].as_array().expect("volumeMounts") {
        let mount_name = m["name"].as_str().expect("mount name");
        let mount_path = m["mountPath"].as_str().expect("mountPath").to_owned();
        let volume = spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount_name)
            .unwrap_or_else(|| panic!("volume {mount_name} of the Deployment"));
        let local = root.join(mount_name);
        if volume["emptyDir"].is_object() {
            std::fs::create_dir_all(&local).expect("emptyDir");
            mounts.push((mount_path, local));
        } else if let Some(cm) = volume["configMap"]["name"].as_str() {
            let data = config_maps
                .get(cm)
                .await
                .unwrap_or_else(|e| panic!("ConfigMap {cm} the Deployment mounts: {e}"))
                .data
                .unwrap_or_default();
            std::fs::create_dir_all(&local).expect("configMap folder");
            for (k, v) in &data {
                std::fs::write(local.join(k), v).expect("configMap file");
            }
            match m["subPath"].as_str() {
                Some(sub) => mounts.push((mount_path, local.join(sub))),
                None => mounts.push((mount_path, local)),
            }
        } else {
            panic!("volume {mount_name} is neither an emptyDir nor a ConfigMap: {volume}");
        }
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));

    let (port, probes) = (free_port(), free_port());
    let mut args = Vec::new();
    for (i, arg) in rendered.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| rendered[j].as_str());
        let local = match prev {
            Some("--listen") => format!("127.0.0.1:{port}"),
            Some("--metrics-listen") => format!("127.0.0.1:{probes}"),
            _ => match mounts.iter().find(|(p, _)| arg.starts_with(p.as_str())) {
                Some((p, l)) => format!("{}{}", l.display(), &arg[p.len()..]),
                None => arg.clone(),
            },
        };
        args.push(local);
    }
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().expect("env name").to_owned();
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => v.to_owned(),
            (None, Some("metadata.namespace")) => NS.to_owned(),
            _ => panic!("env {key} of the Deployment is neither a value nor the namespace: {e}"),
        };
        env.push((key, value));
    }

    let kubeconfig = root.join("serviceaccount.kubeconfig");
    let sa = spec["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    assert_eq!(
        spec["automountServiceAccountToken"],
        json!(true),
        "self-managed TLS needs the service account token mounted"
    );
    c.service_account_kubeconfig(NS, sa, &kubeconfig);
    let log = root.join("injector.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(bin_dir().join("sidekey-injector"))
        .args(&args)
        .env_clear()
        .envs(env.iter().cloned())
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("sidekey-injector");
    eprintln!("{name}: sidekey-injector {}", args.join(" "));
    Injector {
        child: Some(child),
        name: name.to_owned(),
        port,
        probes,
        log,
        rendered,
        env,
    }
}

async fn wait_ready(i: &Injector) {
    let probes = i.probes;
    let what = format!(
        "{} ready (GET /readyz 200); its log: {}",
        i.name,
        i.log.display()
    );
    wait_until(&what, 90, || async move {
        (probe(probes, "/readyz") == Some(200)).then_some(())
    })
    .await;
}

fn helm(c: &Cluster, args: &[&str]) -> String {
    let out = c.helm(args);
    assert!(
        out.status.success(),
        "helm {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects carrying the release's instance label, as `kind/name`.
fn release_objects(c: &Cluster) -> BTreeSet<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let mut names = BTreeSet::new();
    for (ns, kinds) in [
        (
            Some(NS),
            "pods,deployments,replicasets,services,configmaps,serviceaccounts,secrets,\
             networkpolicies,poddisruptionbudgets,roles,rolebindings",
        ),
        (
            None,
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,\
             validatingwebhookconfigurations",
        ),
    ] {
        let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let out = c.kubectl(&args, None);
        assert!(
            out.status.success(),
            "kubectl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    names
}

fn cert_window(secret: &Secret) -> String {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sidekey.io/cert-validity"))
        .cloned()
        .unwrap_or_default()
}

/// Removes what the test made, whatever happened.
struct Cleanup(&'static Cluster);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self
            .0
            .helm(&["uninstall", RELEASE, "-n", NS, "--ignore-not-found"]);
        for ns in [NS, APPS] {
            let _ = self.0.kubectl(
                &[
                    "delete",
                    "namespace",
                    ns,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

#[test]
fn helm_install_upgrade_and_uninstall_with_self_managed_tls() {
    let (c, _guard) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let _fixture_webhook = c.without_fixture_webhook();
    let _cleanup = Cleanup(c);
    let service = Forwarder::start();
    let url = format!("https://127.0.0.1:{}/mutate", service.port);

    block_on(async {
        let client = c.client().await;
        namespace(&client, NS, json!({"sidekey.io/ignore": "true"})).await;
        namespace(&client, APPS, json!({})).await;
        let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);

        // --- install: the defaults, and where the injector is reached.
        helm(
            c,
            &[
                "install",
                RELEASE,
                CHART,
                "-n",
                NS,
                "--set",
                &format!("webhook.url={url}"),
            ],
        );
        let installed = webhooks
            .get("sidekey-injector")
            .await
            .expect("the chart's webhook");
        let hook = &installed.webhooks.as_ref().expect("webhooks")[0];
        assert_eq!(hook.client_config.url.as_deref(), Some(url.as_str()));
        assert!(
            hook.client_config.service.is_none(),
            "url replaces the Service"
        );
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));

        let mut a = start_from_deployment(c, &client, dir.path(), "a").await;
        assert!(
            a.rendered.iter().any(|x| x == "--self-managed-tls"),
            "the default render is self-managed TLS: {:?}",
            a.rendered
        );
        assert!(
            a.rendered
                .windows(2)
                .any(|w| w[0] == "--dns-name" && w[1] == "127.0.0.1"),
            "webhook.url's host is a name of the serving certificate: {:?}",
            a.rendered
        );
        wait_ready(&a).await;
        service.set(&[a.port]);

        let secret = secrets
            .get("sidekey-injector-tls")
            .await
            .expect("the injector's Secret");
        let bundle = String::from_utf8(
            secret.data.as_ref().expect("data")["ca-bundle.crt"]
                .0
                .clone(),
        )
        .expect("PEM");
        let patched = webhooks.get("sidekey-injector").await.expect("webhook");
        let ca_bundle = patched.webhooks.expect("webhooks")[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("the injector patched caBundle");
        assert_eq!(
            ca_bundle.0,
            bundle.as_bytes(),
            "caBundle is the Secret's CA bundle"
        );

        let pod = pods
            .create(&PostParams::default(), &opted_in_pod("after-install"))
            .await
            .expect("an opted-in pod is admitted through the chart's webhook");
        assert!(
            touched_by_sidekey(&to_json(&pod)),
            "the pod is injected: {}",
            to_json(&pod)
        );

        // --- upgrade while pods are created in a loop.
        let stop = Arc::new(AtomicBool::new(false));
        let looping = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                block_on(async move {
                    let client = c.client().await;
                    let pods: Api<Pod> = Api::namespaced(client, APPS);
                    let (mut injected, mut refused, mut bare) = (0u32, Vec::new(), Vec::new());
                    let mut i = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let name = format!("during-upgrade-{i}");
                        match pods
                            .create(&PostParams::default(), &opted_in_pod(&name))
                            .await
                        {
                            Ok(p) if touched_by_sidekey(&to_json(&p)) => injected += 1,
                            Ok(_) => bare.push(name),
                            Err(e) => refused.push(format!("{name}: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    (injected, refused, bare)
                })
            })
        };
        // Pods are flowing through a before the upgrade starts.
        wait_until("pods created before the upgrade", 60, || async {
            let list = pods.list(&Default::default()).await.ok()?;
            (list.items.len() > 5).then_some(())
        })
        .await;

        helm(
            c,
            &[
                "upgrade",
                RELEASE,
                CHART,
                "-n",
                NS,
                "--reuse-values",
                "--set",
                "injector.logLevel=debug",
                "--set",
                "webhook.timeoutSeconds=10",
                "--set",
                "injector.replicas=3",
                "--set",
                "tls.duration=9s",
            ],
        );
        let upgraded = webhooks.get("sidekey-injector").await.expect("webhook");
        let hook = &upgraded.webhooks.as_ref().expect("webhooks")[0];
        assert_eq!(
            hook.timeout_seconds,
            Some(10),
            "the upgrade changed the webhook"
        );
        assert!(
            hook.client_config.ca_bundle.is_some(),
            "helm upgrade left the caBundle the injector patched"
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let replicas = deployments
            .get("sidekey-injector")
            .await
            .expect("the Deployment")
            .spec
            .and_then(|s| s.replicas);
        assert_eq!(replicas, Some(3), "the upgrade changed the replicas");
        // The rolling update: the new pod up and ready, then the old one out
        // of the endpoints and stopped.
        let mut b = start_from_deployment(c, &client, dir.path(), "b").await;
        assert_ne!(
            a.rendered, b.rendered,
            "the upgrade changed the injector's args"
        );
        assert!(
            b.rendered
                .windows(2)
                .any(|w| w[0] == "--cert-validity" && w[1] == "9s"),
            "{:?}",
            b.rendered
        );
        wait_ready(&b).await;
        let renewed_from = cert_window(&secrets.get("sidekey-injector-tls").await.expect("Secret"));
        service.set(&[a.port, b.port]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        service.set(&[b.port]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = a.stop();
        assert!(
            status.success(),
            "the old injector drained and exited 0: {status}"
        );
        // Two renewals of the 9 s certificate (at 2/3 of its life) while the
        // loop goes on.
        let mut windows = vec![renewed_from];
        let started = std::time::Instant::now();
        while windows.len() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "two renewals of the 9 s certificate not seen after 90 s: {windows:?}; log {}",
                b.log.display()
            );
            if let Ok(s) = secrets.get("sidekey-injector-tls").await {
                let now = cert_window(&s);
                if windows.last() != Some(&now) {
                    windows.push(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let (injected, refused, bare) = looping.join().expect("the pod loop");
        eprintln!("during the upgrade: {injected} pods injected, certificate windows {windows:?}");
        assert!(
            refused.is_empty(),
            "pods refused during the upgrade: {refused:?}"
        );
        assert!(bare.is_empty(), "pods admitted without injection: {bare:?}");
        assert!(
            injected > 10,
            "the loop created pods throughout: {injected}"
        );
        assert!(
            b.env
                .contains(&("SIDEKEY_LOG".to_owned(), "debug".to_owned())),
            "the new injector runs with the new log level: {:?}",
            b.env
        );

        // --- uninstall: every object of the release, the webhook included.
        let before = release_objects(c);
        for expected in [
            "deployment.apps/sidekey-injector",
            "service/sidekey-injector",
            "configmap/sidekey-injector",
            "serviceaccount/sidekey-injector",
            "networkpolicy.networking.k8s.io/sidekey-injector",
            "poddisruptionbudget.policy/sidekey-injector",
            "role.rbac.authorization.k8s.io/sidekey-injector-tls",
            "rolebinding.rbac.authorization.k8s.io/sidekey-injector-tls",
            "clusterrole.rbac.authorization.k8s.io/sidekey-injector-cabundle",
            "clusterrolebinding.rbac.authorization.k8s.io/sidekey-injector-cabundle",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/sidekey-injector",
        ] {
            assert!(
                before.contains(expected),
                "{expected} before uninstall: {before:?}"
            );
        }
        helm(c, &["uninstall", RELEASE, "-n", NS]);
        let left = wait_until("the release's objects gone", 90, || async {
            let left = release_objects(c);
            left.is_empty().then_some(left)
        })
        .await;
        eprintln!("before uninstall: {before:?}; after: {left:?}");
        assert!(
            webhooks
                .get_opt("sidekey-injector")
                .await
                .expect("get")
                .is_none(),
            "the webhook configuration is gone"
        );
        // The Secret the injector made (with the CA's key) is owned by the
        // webhook configuration: the garbage collector deletes it too.
        wait_until(
            "the injector's Secret deleted with its owner",
            90,
            || async {
                secrets
                    .get_opt("sidekey-injector-tls")
                    .await
                    .expect("get Secret")
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        let status = b.stop();
        assert!(status.success(), "the injector exited 0: {status}");
        // No injector runs now; the namespace is not blocked.
        let pod = pods
            .create(&PostParams::default(), &opted_in_pod("after-uninstall"))
            .await
            .expect("an opted-in pod is admitted after uninstall");
        assert!(
            !touched_by_sidekey(&to_json(&pod)),
            "nothing injects it: {}",
            to_json(&pod)
        );

        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in [NS, APPS] {
            let _ = namespaces.delete(ns, &DeleteParams::default()).await;
        }
    });
}
