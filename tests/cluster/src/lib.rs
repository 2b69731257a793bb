//! The local control plane of `scripts/cluster` as a test fixture: a real
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler built
//! from the pinned Kubernetes release, kwok's simulated nodes, and the
//! locally built `sidekey-injector` registered through
//! `deploy/overlays/local-cluster`. Started once per test binary (by the
//! first test that asks for it) and stopped by `scripts/cluster`'s watchdog
//! when the test process exits, however it exits.
//!
//! A test that needs the cluster fails when it cannot start: [`cluster`]
//! panics with the script's error, and every later caller panics with the
//! same message rather than trying again.
//!
//! Tests hold [`Guard`] for their whole run: they are serialized, because
//! some stop the injector or count its reviews.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use sidekey_test_support::{create_kms_key, Moto};

/// The agent image the injector puts into pods here (the kubelet-played
/// tests map it to the locally built agent).
pub const AGENT_IMAGE: &str = "sidekey/agent:cluster-test";

/// One running control plane.
#[derive(Debug)]
pub struct Cluster {
    /// `scripts/cluster`'s state directory (pki/, logs/, pids/, ...).
    pub state: PathBuf,
    /// The admin kubeconfig (`system:masters` by client certificate).
    pub kubeconfig: PathBuf,
    /// Where kubectl and the control-plane binaries are.
    pub bin: PathBuf,
    /// The injector's loopback port.
    pub injector_port: u16,
    /// Parameter prefix in the injector's configuration (unique per run).
    pub prefix: String,
    /// The KMS key (in moto) in the injector's configuration.
    pub kms_key: String,
}

/// Held by a test for its whole run (see the module docs).
pub type Guard = MutexGuard<'static, ()>;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put the workspace's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// The shared cluster, started on first use, and the lock serializing tests.
///
/// # Panics
/// When the control plane cannot be started (the test then fails).
pub fn cluster() -> (&'static Cluster, Guard) {
    static SERIAL: Mutex<()> = Mutex::new(());
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    match CLUSTER.get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}"))) {
        Ok(c) => (c, guard),
        Err(e) => panic!("the local control plane (scripts/cluster up) did not start: {e}"),
    }
}

/// An opted-in pod `name` (service `api`) whose container has a command.
///
/// # Panics
/// Never for a valid name (the JSON is a fixed pod).
pub fn opted_in_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {"sidekey.io/inject": "true", "sidekey.io/services": "api"}},
        "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/app:1.0", "command": ["/app/run"]}]},
    }))
    .expect("pod")
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let repo = repo();
        // The binaries the cluster and the tests run, current.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&repo)
            .args(["build", "--locked", "--quiet"])
            .args([
                "-p",
                "sidekey-injector",
                "-p",
                "sidekey-agent",
                "-p",
                "sidekey-cli",
            ])
            .stdout(Stdio::null())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the injector, agent and CLI failed");
        }

        // The injector's configuration: the shipped ConfigMap's, with a KMS
        // key in moto, a prefix of this run and the test agent image.
        let moto = Moto::shared();
        let kms_key = block_on(create_kms_key(moto.endpoint())).context("KMS key in moto")?;
        let prefix = format!("cluster{}", std::process::id());
        let shipped = std::fs::read_to_string(repo.join("deploy/base/configmap.yaml"))?;
        let cm: Value = serde_norway::from_str(&shipped)?;
        let mut config: Value = serde_norway::from_str(
            cm["data"]["config.yaml"]
                .as_str()
                .ok_or_else(|| anyhow!("configmap.yaml has no data.config.yaml"))?,
        )?;
        config["prefix"] = json!(prefix);
        config["kmsKey"] = json!(kms_key);
        config["agentImage"] = json!(AGENT_IMAGE);

        let state =
            std::env::temp_dir().join(format!("sidekey-cluster-test-{}", std::process::id()));
        let config_path = state.with_extension("injector-config.yaml");
        std::fs::write(&config_path, serde_norway::to_string(&config)?)?;

        // Progress (and a first build's long output) goes to the test's stderr.
        let out = Command::new(repo.join("scripts/cluster"))
            .arg("up")
            .env("SIDEKEY_CLUSTER_DIR", &state)
            .env("SIDEKEY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("SIDEKEY_INJECTOR_BIN", bin_dir().join("sidekey-injector"))
            .env("SIDEKEY_CLUSTER_INJECTOR_CONFIG", &config_path)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/cluster up")?;
        let _ = std::fs::remove_file(&config_path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "scripts/cluster up exited with {} (its log is above)",
                out.status
            );
        }
        let mut kubeconfig = None;
        let mut bin = None;
        for line in stdout.lines() {
            if let Some(v) = line.strip_prefix("export KUBECONFIG=") {
                kubeconfig = Some(PathBuf::from(v));
            }
            if let Some(v) = line.strip_prefix("export PATH=\"") {
                bin = v.split(':').next().map(PathBuf::from);
            }
        }
        let port = std::fs::read_to_string(state.join("injector.port"))?;
        Ok(Cluster {
            kubeconfig: kubeconfig.ok_or_else(|| anyhow!("no KUBECONFIG line in: {stdout}"))?,
            bin: bin.ok_or_else(|| anyhow!("no PATH line in: {stdout}"))?,
            injector_port: port.trim().parse().context("injector.port")?,
            state,
            prefix,
            kms_key,
        })
    }

    /// A kube-rs client as the admin.
    pub async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        Client::try_from(config).expect("kube client")
    }

    /// Runs the built kubectl as the admin; stdin from `input`.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(text) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// `sidekey_injector_reviews_total`, all outcomes added up, from the
    /// injector's metrics endpoint (over TLS, with the API server's client
    /// certificate).
    pub fn reviews_total(&self) -> u64 {
        let pki = self.state.join("pki");
        let out = Command::new("curl")
            .arg("-fsS")
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("webhook-client.crt"))
            .arg("--key")
            .arg(pki.join("webhook-client.key"))
            .arg(format!("https://127.0.0.1:{}/metrics", self.injector_port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut total = 0;
        let mut seen = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("sidekey_injector_reviews_total{") {
                let n = rest.rsplit(' ').next().unwrap_or("");
                total += n.parse::<u64>().expect("counter value");
                seen = true;
            }
        }
        assert!(seen, "no sidekey_injector_reviews_total in: {text}");
        total
    }

    /// The injector's audit records so far.
    pub fn audit_records(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.state.join("injector-audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// `scripts/cluster injector-stop` or `injector-start`.
    pub fn injector(&self, action: &str) {
        assert!(
            self.try_injector(action),
            "scripts/cluster injector-{action} failed"
        );
    }

    /// [`Cluster::injector`] that reports failure instead of panicking (for
    /// `Drop`).
    pub fn try_injector(&self, action: &str) -> bool {
        Command::new(repo().join("scripts/cluster"))
            .arg(format!("injector-{action}"))
            .env("SIDEKEY_CLUSTER_DIR", &self.state)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The CA that signed every certificate of the cluster (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.state.join("pki/ca.crt")).expect("ca.crt")
    }

    /// A serving certificate for 127.0.0.1 signed by the cluster's CA,
    /// written as `NAME.crt` and `NAME.key` into `dir`.
    pub fn serving_cert(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let pki = self.state.join("pki");
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let csr = dir.join(format!("{name}.csr"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("ext");
        let ok = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success()
            && Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(pki.join("ca.crt"))
                .arg("-CAkey")
                .arg(pki.join("ca.key"))
                .arg("-CAserial")
                .arg(dir.join("ca.srl"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&crt)
                .stderr(Stdio::null())
                .status()
                .expect("openssl")
                .success();
        assert!(ok, "openssl could not make the {name} certificate");
        (crt, key)
    }
}

/// Creates namespace `name` with `labels` and waits until its `default`
/// service account exists (pods are refused before that).
pub async fn namespace(client: &Client, name: &str, labels: Value) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
    .expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    default_service_account(client, name).await;
}

/// Waits until `namespace` has its `default` service account.
pub async fn default_service_account(client: &Client, namespace: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    wait_until(
        &format!("service account {namespace}/default"),
        60,
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
}

/// Polls `check` every 200 ms until it gives `Some`, for at most `secs`
/// seconds (a bound for a hung cluster, not a timed assertion).
pub async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not reached after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pod as JSON, for assertions on what the API server stored.
pub fn to_json(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("pod JSON")
}

/// The names of a pod's init containers and containers.
pub fn container_names(pod: &Value) -> (Vec<String>, Vec<String>) {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    (names("initContainers"), names("containers"))
}

/// Whether the pod carries any sign of sidekey (annotation, container or
/// volume named sidekey-*).
pub fn touched_by_sidekey(pod: &Value) -> bool {
    let (init, main) = container_names(pod);
    pod["metadata"]["annotations"]["sidekey.io/injected"].is_string()
        || init
            .iter()
            .chain(main.iter())
            .any(|n| n.starts_with("sidekey-"))
        || pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"].as_str().unwrap_or("").starts_with("sidekey-"))
}

// ---------------------------------------------------------------------
// Helm (tests/cluster/tests/helm.rs): the chart installed with the real
// helm binary (scripts/helm), in place of the fixture's webhook.
// ---------------------------------------------------------------------

/// While alive, the fixture's MutatingWebhookConfiguration
/// `sidekey-injector` is gone (the chart's webhook configuration has the
/// same cluster-wide name); on drop, whatever holds that name is deleted
/// and the fixture's registration (`webhook.yaml` in the state directory)
/// is applied again.
#[derive(Debug)]
pub struct FixtureWebhookAway<'a>(&'a Cluster);

impl Drop for FixtureWebhookAway<'_> {
    fn drop(&mut self) {
        let c = self.0;
        let _ = c.kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                "sidekey-injector",
                "--ignore-not-found",
            ],
            None,
        );
        let file = c.state.join("webhook.yaml");
        let out = c.kubectl(&["apply", "-f", &file.to_string_lossy()], None);
        if !out.status.success() {
            eprintln!(
                "could not restore the fixture's webhook registration: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Cluster {
    /// Runs `scripts/helm ARGS` (helm at the pinned version, built from the
    /// Go module proxy on first use) against this API server as the admin.
    pub fn helm(&self, args: &[&str]) -> std::process::Output {
        Command::new(repo().join("scripts/helm"))
            .args(args)
            .current_dir(repo())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/helm")
    }

    /// Deletes the fixture's webhook configuration until the guard drops
    /// (see [`FixtureWebhookAway`]).
    ///
    /// # Panics
    /// When kubectl cannot delete it.
    pub fn without_fixture_webhook(&self) -> FixtureWebhookAway<'_> {
        let out = self.kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                "sidekey-injector",
                "--ignore-not-found",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "deleting the fixture's webhook configuration: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        FixtureWebhookAway(self)
    }

    /// Writes a kubeconfig for service account `namespace/name` to `path`:
    /// this API server and CA, and a token of that service account from the
    /// TokenRequest API (`kubectl create token`, one hour), so a process run
    /// with it has exactly that account's RBAC.
    ///
    /// # Panics
    /// When the token cannot be made or the admin kubeconfig read.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        let out = self.kubectl(
            &["-n", namespace, "create", "token", name, "--duration", "1h"],
            None,
        );
        assert!(
            out.status.success(),
            "kubectl create token {namespace}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).expect("token");
        let admin: Value = serde_norway::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("admin kubeconfig"),
        )
        .expect("admin kubeconfig YAML");
        let cluster = &admin["clusters"][0]["cluster"];
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token.trim()}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
            "current-context": "local",
        });
        std::fs::write(path, serde_norway::to_string(&config).expect("kubeconfig"))
            .expect("write the service account's kubeconfig");
    }
}

/// The fixture's injector restarted with more arguments and environment
/// (e.g. `--registry-lookup`), until dropped: then restarted as it was.
/// Same port, certificates and webhook registration.
#[derive(Debug)]
pub struct InjectorArgs<'a> {
    cluster: &'a Cluster,
    original: Vec<u8>,
}

impl Cluster {
    /// Restarts the injector with `env` (`NAME=VALUE`, e.g.
    /// `KUBECONFIG=...`: the injector then reads the API server as that
    /// user) and `args` added, until the returned guard drops.
    pub fn injector_with(&self, env: &[String], args: &[String]) -> InjectorArgs<'_> {
        let path = self.state.join("injector.argv");
        let original = std::fs::read(&path).expect("injector.argv");
        let mut argv: Vec<Vec<u8>> = original
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(
            argv.first().map(Vec::as_slice),
            Some(&b"env"[..]),
            "injector.argv"
        );
        for (i, e) in env.iter().enumerate() {
            argv.insert(1 + i, e.as_bytes().to_vec());
        }
        argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        let mut text = Vec::new();
        for a in argv {
            text.extend_from_slice(&a);
            text.push(0);
        }
        self.injector("stop");
        std::fs::write(&path, text).expect("injector.argv");
        self.injector("start");
        InjectorArgs {
            cluster: self,
            original,
        }
    }

    /// What the injector logged so far (its stdout and stderr).
    pub fn injector_log(&self) -> String {
        std::fs::read_to_string(self.state.join("logs/injector.log")).unwrap_or_default()
    }
}

impl Drop for InjectorArgs<'_> {
    fn drop(&mut self) {
        let c = self.cluster;
        c.try_injector("stop");
        let _ = std::fs::write(c.state.join("injector.argv"), &self.original);
        if !c.try_injector("start") {
            eprintln!("scripts/cluster injector-start failed after restoring its arguments");
        }
    }
}
