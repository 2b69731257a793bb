//! Self-managed TLS against the real API server: two injectors started at
//! once with `--self-managed-tls` and the fixture's kubeconfig (outside the
//! cluster, on 127.0.0.1, as the fixture's injector runs) agree on one
//! Secret (compare-and-swap), patch the `caBundle` of a webhook
//! configuration that was registered without one, and the API server then
//! calls the webhook over TLS verified with that bundle: an opted-in pod
//! in the webhook's namespace is admitted (failurePolicy Fail) and the
//! review is in the injector's audit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use sidekey_cluster_tests::{
    bin_dir, block_on, cluster, namespace, opted_in_pod, wait_until, Cluster,
};

const WEBHOOK: &str = "sidekey-self-managed-test";
const NS: &str = "sidekey-self-managed-test";
const SECRET: &str = "sidekey-injector-tls";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Injector(Child);

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    dir: &Path,
    name: &str,
    config: &Path,
    kubeconfig: &Path,
    port: u16,
    probes: u16,
) -> Injector {
    start_in(
        dir,
        name,
        config,
        kubeconfig,
        &v4(port),
        probes,
        NS,
        WEBHOOK,
        &[],
    )
}

/// `127.0.0.1:port`.
fn v4(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// An injector listening on `listen` (`HOST:PORT`), its certificate for
/// 127.0.0.1, localhost and the names in `extra`.
#[allow(clippy::too_many_arguments)]
fn start_in(
    dir: &Path,
    name: &str,
    config: &Path,
    kubeconfig: &Path,
    listen: &str,
    probes: u16,
    ns: &str,
    webhook: &str,
    extra: &[&str],
) -> Injector {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(bin_dir().join("sidekey-injector"))
        .args(["--listen", listen])
        .args(["--metrics-listen", &format!("127.0.0.1:{probes}")])
        .arg("--config")
        .arg(config)
        .arg("--audit")
        .arg(format!(
            "file:{}",
            dir.join(format!("{name}.jsonl")).display()
        ))
        .args(["--self-managed-tls", &format!("{ns}/{SECRET}")])
        .args(["--webhook-configuration", webhook])
        .args(extra)
        .args(["--dns-name", "127.0.0.1", "--dns-name", "localhost"])
        .env("KUBECONFIG", kubeconfig)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sidekey-injector");
    Injector(child)
}

/// The leaf certificate the injector on `port` serves (PEM body without
/// line breaks), read over TLS: self-managed TLS keeps it in memory only.
fn served(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509"
        ))
        .output()
        .expect("openssl");
    pem_body(&String::from_utf8_lossy(&out.stdout))
}

/// The base64 of the first PEM block, without line breaks.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect()
}

/// `GET /readyz` on the plain probes port: true on 200.
fn ready(probes: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", probes)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// The injector configuration the fixture wrote.
fn fixture_config(c: &Cluster) -> PathBuf {
    [
        c.state.join("injector-config.yaml"),
        c.state.with_extension("injector-config.yaml"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("the fixture's injector configuration")
}

/// A MutatingWebhookConfiguration `name` calling `https://{authority}/mutate`
/// (no caBundle: the injector patches it in) for pods created in
/// namespaces labelled `label=yes`; failurePolicy Fail. The API of such
/// configurations.
async fn create_webhook(
    client: &kube::Client,
    name: &str,
    authority: &str,
    label: &str,
) -> Api<MutatingWebhookConfiguration> {
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "self-managed.sidekey.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://{authority}/mutate")},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {label: "yes"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10,
        }],
    }))
    .expect("webhook configuration");
    webhooks
        .create(&PostParams::default(), &mwc)
        .await
        .expect("create the webhook configuration");
    webhooks
}

/// Deletes the test's webhook configuration and namespace.
async fn clean_up(
    client: &kube::Client,
    webhooks: &Api<MutatingWebhookConfiguration>,
    webhook: &str,
    ns: &str,
) {
    webhooks
        .delete(webhook, &DeleteParams::default())
        .await
        .expect("delete the webhook configuration");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
}

#[test]
fn two_injectors_agree_on_one_secret_patch_the_ca_bundle_and_are_called_by_the_api_server() {
    let (c, _guard) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fixture_config(c);
    block_on(async {
        let client = c.client().await;
        namespace(&client, NS, json!({"sidekey-self-managed-test": "yes"})).await;
        let port = free_port();
        let webhooks =
            create_webhook(&client, WEBHOOK, &v4(port), "sidekey-self-managed-test").await;

        // Both at once: one creates the Secret, the other adopts it.
        let probes = [free_port(), free_port()];
        let _a = start(dir.path(), "a", &config, &c.kubeconfig, port, probes[0]);
        let port_b = free_port();
        let _b = start(dir.path(), "b", &config, &c.kubeconfig, port_b, probes[1]);
        for p in probes {
            wait_until("both injectors ready", 60, || async move {
                ready(p).then_some(())
            })
            .await;
        }

        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let secret = secrets.get(SECRET).await.expect("the Secret exists");
        let data = secret.data.expect("data");
        let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf-8");
        let served_a = served(port);
        let served_b = served(port_b);
        assert!(!served_a.is_empty(), "injector a serves a certificate");
        assert_eq!(
            served_a,
            pem_body(&text("tls.crt")),
            "injector a serves the Secret's certificate"
        );
        assert_eq!(
            served_b,
            pem_body(&text("tls.crt")),
            "injector b serves the Secret's certificate"
        );
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            let content = std::fs::read(&path).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&content).contains("PRIVATE KEY"),
                "{} holds a private key: self-managed TLS keeps it in memory",
                path.display()
            );
        }
        let wrote = ["a", "b"]
            .iter()
            .filter(|n| {
                std::fs::read_to_string(dir.path().join(format!("{n}.log")))
                    .unwrap_or_default()
                    .contains("wrote a new certificate")
            })
            .count();
        assert_eq!(wrote, 1, "exactly one injector wrote the Secret");

        let live = webhooks.get(WEBHOOK).await.expect("webhook configuration");
        let bundle = live.webhooks.expect("webhooks")[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("caBundle patched");
        assert_eq!(bundle.0, text("ca-bundle.crt").into_bytes());

        // The API server trusts the injector through the patched bundle.
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let pod = opted_in_pod("opted-in");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("an opted-in pod is admitted through the self-managed webhook");
        let audit = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap_or_default();
        let records: Vec<Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            records.iter().any(|r| r.to_string().contains("opted-in")),
            "the review of the pod reached the self-managed injector: {audit}"
        );

        clean_up(&client, &webhooks, WEBHOOK, NS).await;
    });
}

/// A serving certificate of 6 s (renewed at 4 s, the Secret read every
/// second): pods created in a loop while it is renewed several times are
/// all admitted (failurePolicy Fail: a review the API server could not
/// make would refuse the pod), and the injector serves the renewed
/// certificate, under the same CA (the caBundle does not change).
#[test]
fn reviews_keep_succeeding_across_forced_renewals() {
    const NS2: &str = "sidekey-self-managed-renewal";
    const WEBHOOK2: &str = "sidekey-self-managed-renewal";
    let (c, _guard) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fixture_config(c);
    block_on(async {
        let client = c.client().await;
        namespace(&client, NS2, json!({"sidekey-self-managed-renewal": "yes"})).await;
        let port = free_port();
        let webhooks =
            create_webhook(&client, WEBHOOK2, &v4(port), "sidekey-self-managed-renewal").await;
        let probes = free_port();
        let _a = start_in(
            dir.path(),
            "a",
            &config,
            &c.kubeconfig,
            &v4(port),
            probes,
            NS2,
            WEBHOOK2,
            &[
                "--cert-validity",
                "6s",
                "--ca-validity",
                "1h",
                "--self-managed-poll",
                "1s",
            ],
        );
        wait_until("the injector ready", 60, || async move {
            ready(probes).then_some(())
        })
        .await;
        let first = served(port);
        assert!(!first.is_empty(), "a certificate is served");
        let bundle_before = webhooks
            .get(WEBHOOK2)
            .await
            .expect("webhook")
            .webhooks
            .expect("webhooks")[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("caBundle");

        let pods: Api<Pod> = Api::namespaced(client.clone(), NS2);
        let mut seen = vec![first.clone()];
        let (mut admitted, mut refused) = (0u32, Vec::new());
        let mut i = 0;
        // Until the certificate has been renewed three times.
        while seen.len() < 4 {
            i += 1;
            assert!(i < 2000, "three renewals not seen after {i} pods");
            let pod = opted_in_pod(&format!("loop-{i}"));
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => admitted += 1,
                Err(e) => refused.push(e.to_string()),
            }
            let now = served(port);
            if !now.is_empty() && seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        eprintln!("renewals: {}, pods admitted: {admitted}", seen.len() - 1);
        assert!(
            refused.is_empty(),
            "pods refused across renewals: {refused:?}"
        );
        let now = served(port);
        assert_ne!(now, first, "a renewed certificate is served");
        let bundle_after = webhooks
            .get(WEBHOOK2)
            .await
            .expect("webhook")
            .webhooks
            .expect("webhooks")[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("caBundle");
        assert_eq!(bundle_before, bundle_after, "renewals keep the CA");

        clean_up(&client, &webhooks, WEBHOOK2, NS2).await;
    });
}

/// `GET path` on the plain probes port: the status code, if any answer.
fn status(probes: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", probes)).ok()?;
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1)?.parse().ok()
}

/// Until the first certificate is in place (here: its webhook
/// configuration does not exist yet, so the pass fails and is retried)
/// the injector is alive (`/healthz` 200) and not ready (`/readyz` 503);
/// once the configuration exists it patches it and becomes ready.
#[test]
fn alive_but_not_ready_until_the_first_certificate_is_served() {
    const NS3: &str = "sidekey-self-managed-probes";
    const WEBHOOK3: &str = "sidekey-self-managed-probes";
    let (c, _guard) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fixture_config(c);
    block_on(async {
        let client = c.client().await;
        namespace(&client, NS3, json!({"sidekey-self-managed-probes": "yes"})).await;
        let (port, probes) = (free_port(), free_port());
        let _a = start_in(
            dir.path(),
            "a",
            &config,
            &c.kubeconfig,
            &v4(port),
            probes,
            NS3,
            WEBHOOK3,
            &[],
        );
        wait_until("/healthz answers", 60, || async move {
            (status(probes, "/healthz") == Some(200)).then_some(())
        })
        .await;
        // Several failed passes (every 2 s) later: still alive, not ready.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert_eq!(status(probes, "/healthz"), Some(200));
        assert_ne!(
            status(probes, "/readyz"),
            Some(200),
            "ready without a certificate"
        );
        assert!(served(port).is_empty(), "no certificate is served yet");

        let webhooks =
            create_webhook(&client, WEBHOOK3, &v4(port), "sidekey-self-managed-probes").await;
        wait_until(
            "ready once the certificate is in place",
            60,
            || async move { ready(probes).then_some(()) },
        )
        .await;
        assert!(!served(port).is_empty(), "a certificate is served");

        clean_up(&client, &webhooks, WEBHOOK3, NS3).await;
    });
}

/// An injector outside the cluster called at an IPv6 address, as the
/// chart's `webhook.url=https://[::1]:PORT/mutate` makes it: `--dns-name
/// ::1` (the URL's host, as the chart passes it) puts the address into the
/// self-managed certificate, and the API server verifies the injector by
/// it and admits an opted-in pod, injected.
#[test]
fn an_injector_called_at_an_ipv6_address_is_verified_by_it() {
    const NS4: &str = "sidekey-self-managed-ipv6";
    const WEBHOOK4: &str = "sidekey-self-managed-ipv6";
    let (c, _guard) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fixture_config(c);
    let port = std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on ::1 (IPv6 loopback)")
        .port();
    let authority = format!("[::1]:{port}");
    block_on(async {
        let client = c.client().await;
        namespace(&client, NS4, json!({NS4: "yes"})).await;
        let webhooks = create_webhook(&client, WEBHOOK4, &authority, NS4).await;
        let probes = free_port();
        let _a = start_in(
            dir.path(),
            "v6",
            &config,
            &c.kubeconfig,
            &authority,
            probes,
            NS4,
            WEBHOOK4,
            &["--dns-name", "::1"],
        );
        let log = dir.path().join("v6.log");
        wait_until("the injector on [::1] ready", 60, || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    !text.contains("--dns-name"),
                    "the injector refused its options: {text}"
                );
                ready(probes).then_some(())
            }
        })
        .await;

        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect '{authority}' </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName"
            ))
            .output()
            .expect("openssl");
        let san = String::from_utf8_lossy(&out.stdout);
        assert!(
            san.contains("IP Address:0:0:0:0:0:0:0:1"),
            "::1 in the served certificate's names: {san}"
        );

        let pods: Api<Pod> = Api::namespaced(client.clone(), NS4);
        let pod = opted_in_pod("opted-in");
        let stored = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("an opted-in pod is admitted through the webhook at [::1]");
        let annotations = stored.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("sidekey.io/injected").map(String::as_str),
            Some("true"),
            "injected by the injector at [::1]"
        );

        clean_up(&client, &webhooks, WEBHOOK4, NS4).await;
    });
}
