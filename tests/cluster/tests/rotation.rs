//! `sidekey status`, `sidekey restart` and `sidekey rotate --restart`
//! against the real control plane of `scripts/cluster`: Deployments whose
//! pods the injector admitted (pr-* inherits staging in the shipped
//! configuration), kwok reporting them Running, the real Deployment
//! controller rolling them. The store is the `file:` local store written by
//! the `sidekey` binary itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sidekey_cluster_tests::{bin_dir, block_on, cluster, namespace, wait_until, Cluster};

/// The `sidekey` CLI with a local store and the cluster's kubeconfig.
struct Cli {
    store: PathBuf,
    audit: PathBuf,
    kubeconfig: PathBuf,
    /// Values written: none may appear in any output.
    values: Vec<String>,
}

impl Cli {
    fn new(dir: &Path, c: &Cluster) -> Cli {
        Cli {
            store: dir.join("store"),
            audit: dir.join("audit.jsonl"),
            kubeconfig: c.kubeconfig.clone(),
            values: Vec::new(),
        }
    }

    fn run_with_kubeconfig(&self, kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
        let out = Command::new(bin_dir().join("sidekey"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("KUBECONFIG", kubeconfig)
            .env("SIDEKEY_STORE", format!("file:{}", self.store.display()))
            .env("SIDEKEY_AUDIT_LOG", &self.audit)
            .env("SIDEKEY_ACTOR", "rotation-test")
            .stdin(Stdio::null())
            .output()
            .expect("run sidekey");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for v in &self.values {
            assert!(!text.contains(v.as_str()), "a value leaked in: {text}");
        }
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        let home = self.store.parent().expect("dir").to_owned();
        self.run_with_kubeconfig(&self.kubeconfig.clone(), &home, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sidekey {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a generated value and remembers it (read back with --reveal).
    fn put(&mut self, env: &str, service: &str, key: &str) {
        self.ok(&["put", env, service, key, "--generate", "24"]);
        self.remember(env, service, key);
    }

    fn remember(&mut self, env: &str, service: &str, key: &str) {
        let v = self.ok(&["get", env, service, key, "--reveal"]);
        self.values.push(v);
    }

    fn status(&self, env: &str) -> Value {
        let out = self.ok(&["--output", "json", "status", env]);
        serde_json::from_str(&out).expect("status JSON")
    }

    fn audit_records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit JSON line"))
            .collect()
    }
}

/// A Deployment of one pod opted in for `services`.
fn deployment(name: &str, services: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"sidekey.io/inject": "true", "sidekey.io/services": services},
                },
                "spec": {
                    "containers": [{
                        "name": "app",
                        "image": "ghcr.io/example/app:1.0",
                        "command": ["/app/run"],
                    }],
                },
            },
        },
    }))
    .expect("a Deployment")
}

async fn create(client: &Client, ns: &str, name: &str, services: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &deployment(name, services))
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
}

/// Waits until the Deployment's rollout is complete (every replica updated
/// and available, old ones gone).
async fn rolled_out(client: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_until(&format!("{ns}/{name} rolled out"), 180, || async {
        let d = api.get(name).await.ok()?;
        let st = d.status.clone()?;
        let done = st.observed_generation >= d.metadata.generation
            && st.updated_replicas == Some(1)
            && st.available_replicas == Some(1)
            && st.replicas == Some(1);
        done.then_some(d)
    })
    .await
}

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("restart.sidekey.io/versions-hash")
        .cloned()
}

/// The pods of a status answer in this test's namespaces (the other test
/// of this binary has its own, under another service).
fn ours(status: &Value) -> Vec<&Value> {
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["namespace"] == "pr-1" || p["namespace"] == "pr-2")
        .collect()
}

/// The stale pods of a status answer: (namespace, workload name, keys).
fn stale(status: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = ours(status)
        .into_iter()
        .filter(|p| !p["stale"].as_array().expect("stale").is_empty())
        .map(|p| {
            (
                p["namespace"].as_str().unwrap().to_owned(),
                p["workload"]["name"].as_str().unwrap().to_owned(),
                p["stale"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        format!(
                            "{}/{}/{}",
                            s["environment"].as_str().unwrap(),
                            s["service"].as_str().unwrap(),
                            s["key"].as_str().unwrap()
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rotate_restart_rolls_exactly_the_workloads_that_use_the_rotated_key() {
    let (c, _serial) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cli = Cli::new(dir.path(), c);
    // staging: api/TOKEN, api/OTHER, web/COLOR; pr-1 overrides api/TOKEN.
    cli.put("staging", "api", "TOKEN");
    cli.put("staging", "api", "OTHER");
    cli.put("staging", "web", "COLOR");
    cli.put("pr-1", "api", "TOKEN");
    // Pod start times are whole seconds: the pods start in a later second
    // than these versions were written (ordering, not a timed assertion).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    block_on(async {
        let client = c.client().await;
        namespace(&client, "pr-1", json!({})).await;
        namespace(&client, "pr-2", json!({})).await;
        create(&client, "pr-1", "api", "api").await;
        create(&client, "pr-2", "api", "api").await;
        create(&client, "pr-2", "web", "web").await;
        for (ns, name) in [("pr-1", "api"), ("pr-2", "api"), ("pr-2", "web")] {
            rolled_out(&client, ns, name).await;
        }
    });

    // Nothing rotated since the pods started.
    let before = cli.status("staging");
    assert_eq!(ours(&before).len(), 3, "{before}");
    assert_eq!(stale(&before), vec![], "{before}");

    // A rotation without --restart: only the pod that resolves
    // staging/api/TOKEN (pr-2's api; pr-1 overrides TOKEN) is stale.
    let out = cli.run(&["rotate", "staging", "api", "TOKEN", "--generate", "24"]);
    assert!(out.status.success(), "{out:?}");
    cli.remember("staging", "api", "TOKEN");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 running pods still use the previous version")
            && stderr.contains("sidekey restart staging api"),
        "{stderr}"
    );
    let now = cli.status("staging");
    assert_eq!(
        stale(&now),
        vec![(
            "pr-2".to_owned(),
            "api".to_owned(),
            vec!["staging/api/TOKEN".to_owned()]
        )],
        "{now}"
    );
    let text = cli.ok(&["status", "staging", "api"]);
    assert!(
        text.contains("pr-2/api-") && text.contains("staging/api/TOKEN v2"),
        "{text}"
    );
    assert!(
        text.contains("1 of 2 pods run values rotated since they started"),
        "{text}"
    );

    // --dry-run lists pr-2/api and patches nothing.
    let generations = |client: Client| async move {
        let mut g = Vec::new();
        for (ns, name) in [("pr-1", "api"), ("pr-2", "api"), ("pr-2", "web")] {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .expect("get deployment");
            g.push((d.metadata.generation, template_hash(&d)));
        }
        g
    };
    let gen_before = block_on(async { generations(c.client().await).await });
    let dry = cli.ok(&["restart", "staging", "--dry-run"]);
    assert!(dry.contains("pr-2/Deployment/api  would roll"), "{dry}");
    assert!(dry.contains("pr-1/Deployment/api  current"), "{dry}");
    assert!(dry.contains("pr-2/Deployment/web  current"), "{dry}");
    assert_eq!(
        block_on(async { generations(c.client().await).await }),
        gen_before
    );

    // rotate --restart: a new version, then pr-2/api alone rolls.
    let rolled = cli.ok(&[
        "--timeout",
        "180s",
        "rotate",
        "staging",
        "api",
        "TOKEN",
        "--generate",
        "24",
        "--restart",
        "--wait",
    ]);
    cli.remember("staging", "api", "TOKEN");
    assert!(rolled.contains("pr-2/Deployment/api  rolling"), "{rolled}");
    assert!(rolled.contains("(complete)"), "{rolled}");
    let after = block_on(async { generations(c.client().await).await });
    assert_eq!(
        after[0], gen_before[0],
        "pr-1/api overrides TOKEN: untouched"
    );
    assert_eq!(
        after[2], gen_before[2],
        "pr-2/web does not use api: untouched"
    );
    assert_ne!(after[1].0, gen_before[1].0, "pr-2/api rolled");
    let hash = after[1].1.clone().expect("pr-2/api has the versions hash");
    assert!(hash.starts_with("sha256-"), "{hash}");

    // The rollout is complete: no stale pod is left.
    block_on(async { rolled_out(&c.client().await, "pr-2", "api").await });
    let done = cli.status("staging");
    assert_eq!(stale(&done), vec![], "{done}");
    assert_eq!(ours(&done).len(), 3, "{done}");

    // A second restart for the same versions changes nothing.
    let again = cli.ok(&["restart", "staging"]);
    assert!(again.contains("nothing to roll"), "{again}");
    assert_eq!(
        block_on(async { generations(c.client().await).await }),
        after
    );

    // One audit record per decision, in the CLI's chain.
    let records = cli.audit_records();
    let restarts: Vec<&Value> = records.iter().filter(|r| r["event"] == "restart").collect();
    let rolled_records: Vec<&&Value> = restarts
        .iter()
        .filter(|r| r["decision"] == "roll" && r["dry_run"] == false)
        .collect();
    assert_eq!(rolled_records.len(), 1, "{restarts:?}");
    assert_eq!(rolled_records[0]["namespace"], "pr-2");
    assert_eq!(rolled_records[0]["workload"], "Deployment/api");
    assert_eq!(rolled_records[0]["versions_hash"], hash.as_str());
    assert!(restarts
        .iter()
        .any(|r| r["decision"] == "roll" && r["dry_run"] == true));
    let verify = cli.ok(&["audit", "verify", &cli.audit.display().to_string()]);
    assert!(verify.contains("chain intact"), "{verify}");
}

#[test]
fn env_copy_restart_rolls_the_workloads_of_the_environment_written() {
    let (c, _serial) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cli = Cli::new(dir.path(), c);
    // pr-31 has its own db/PASSWORD; pr-32 resolves staging's. Copying
    // qa-src into pr-31 gives every key of pr-31 a new version.
    cli.put("qa-src", "db", "PASSWORD");
    cli.put("pr-31", "db", "PASSWORD");
    cli.put("staging", "db", "PASSWORD");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let generation = |ns: &'static str| async move {
        Api::<Deployment>::namespaced(c.client().await, ns)
            .get("db")
            .await
            .expect("get deployment")
            .metadata
            .generation
    };
    block_on(async {
        let client = c.client().await;
        namespace(&client, "pr-31", json!({})).await;
        namespace(&client, "pr-32", json!({})).await;
        create(&client, "pr-31", "db", "db").await;
        create(&client, "pr-32", "db", "db").await;
        rolled_out(&client, "pr-31", "db").await;
        rolled_out(&client, "pr-32", "db").await;
    });
    let before = block_on(async { (generation("pr-31").await, generation("pr-32").await) });

    let out = cli.ok(&[
        "--timeout",
        "180s",
        "env",
        "copy",
        "qa-src",
        "pr-31",
        "--overwrite",
        "--restart",
        "--wait",
    ]);
    // (pr-31's new value is qa-src's, already remembered.)
    assert!(out.contains("pr-31/Deployment/db  rolling"), "{out}");
    assert!(out.contains("(complete)"), "{out}");
    let after = block_on(async { (generation("pr-31").await, generation("pr-32").await) });
    assert_ne!(after.0, before.0, "pr-31/db rolled");
    assert_eq!(after.1, before.1, "pr-32 does not use pr-31: untouched");
    block_on(async { rolled_out(&c.client().await, "pr-31", "db").await });
    assert_eq!(stale(&cli.status("pr-31")), vec![]);
    let records = std::fs::read_to_string(&cli.audit).unwrap_or_default();
    for v in &cli.values {
        assert!(!out.contains(v.as_str()) && !records.contains(v.as_str()));
    }
}

/// A client certificate for `user` signed by the cluster's CA, and a
/// kubeconfig using it.
fn user_kubeconfig(c: &Cluster, dir: &Path, user: &str) -> PathBuf {
    let pki = c.state.join("pki");
    let (key, csr, crt, ext) = (
        dir.join(format!("{user}.key")),
        dir.join(format!("{user}.csr")),
        dir.join(format!("{user}.crt")),
        dir.join(format!("{user}.ext")),
    );
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
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
            "-nodes",
        ])
        .args(["-subj", &format!("/CN={user}"), "-keyout"])
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
    assert!(ok, "openssl could not make the {user} certificate");
    let admin: Value =
        serde_norway::from_str(&std::fs::read_to_string(&c.kubeconfig).expect("admin kubeconfig"))
            .expect("kubeconfig YAML");
    let server = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server");
    let path = dir.join(format!("{user}.kubeconfig"));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": pki.join("ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": crt, "client-key": key}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    });
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).expect("kubeconfig");
    path
}

fn failure(out: &Output) -> (i32, String) {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_name_the_missing_config_the_unreachable_server_the_refused_verb_and_the_stuck_rollout() {
    let (c, _serial) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cli = Cli::new(dir.path(), c);
    cli.put("staging", "billing", "TOKEN");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();

    // No kubeconfig at all.
    let (code, err) = failure(&cli.run_with_kubeconfig(
        &dir.path().join("missing.kubeconfig"),
        &home,
        &["status", "staging"],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no Kubernetes configuration"), "{err}");
    // Rotate without --restart and without a kubeconfig: no word about pods.
    let out = cli.run_with_kubeconfig(
        &dir.path().join("missing.kubeconfig"),
        &home,
        &["rotate", "staging", "billing", "TOKEN", "--generate", "24"],
    );
    assert!(out.status.success(), "{out:?}");
    cli.remember("staging", "billing", "TOKEN");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("pods"),
        "{out:?}"
    );

    // The API server down (nothing listens on the kubeconfig's port).
    let admin = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let down = dir.path().join("down.kubeconfig");
    let server_line = admin
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .expect("server line")
        .to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    std::fs::write(
        &down,
        admin.replace(
            &server_line,
            &format!("      server: https://127.0.0.1:{port}"),
        ),
    )
    .unwrap();
    let (code, err) = failure(&cli.run_with_kubeconfig(&down, &home, &["restart", "staging"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cannot list pods (all namespaces): the Kubernetes API server is not reachable"
        ),
        "{err}"
    );

    // A user the API server knows but RBAC grants nothing.
    let nobody = user_kubeconfig(c, dir.path(), "sidekey-test-nobody");
    let (code, err) = failure(&cli.run_with_kubeconfig(&nobody, &home, &["status", "staging"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused to list pods (all namespaces) (Forbidden)")
            && err.contains("sidekey-test-nobody")
            && err.contains("deploy/rbac/"),
        "{err}"
    );

    // A rollout that never completes: every node cordoned, the new pod
    // stays Pending; --wait --timeout ends with exit status 3.
    block_on(async {
        let client = c.client().await;
        namespace(&client, "pr-stuck", json!({})).await;
        create(&client, "pr-stuck", "billing", "billing").await;
        rolled_out(&client, "pr-stuck", "billing").await;
    });
    let rotate = cli.run(&["rotate", "staging", "billing", "TOKEN", "--generate", "24"]);
    assert!(rotate.status.success(), "{rotate:?}");
    cli.remember("staging", "billing", "TOKEN");
    let nodes = c.kubectl(&["get", "nodes", "-o", "name"], None);
    let nodes: Vec<String> = String::from_utf8_lossy(&nodes.stdout)
        .lines()
        .map(|l| l.trim_start_matches("node/").to_owned())
        .collect();
    assert!(!nodes.is_empty());
    for n in &nodes {
        assert!(c.kubectl(&["cordon", n], None).status.success());
    }
    let out = cli.run(&["--timeout", "5s", "restart", "staging", "billing", "--wait"]);
    for n in &nodes {
        c.kubectl(&["uncordon", n], None);
    }
    let (code, err) = failure(&out);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(
            "the rollout of pr-stuck/Deployment/billing did not complete within --timeout"
        ),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pr-stuck/Deployment/billing  rolling"),
        "{stdout}"
    );
}

/// Benchmark (prints figures, asserts none of them): `sidekey status`
/// over 500 injected pods in 100 namespaces (pr-bench-0..99, one
/// Deployment of 5 replicas each, all inheriting staging).
/// `cargo test -p sidekey-cluster-tests --test rotation -- --ignored --nocapture bench`
#[test]
#[ignore = "benchmark: creates 500 pods; run by hand"]
fn bench_status_over_500_pods_in_100_namespaces() {
    let (c, _serial) = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cli = Cli::new(dir.path(), c);
    cli.put("staging", "bench", "TOKEN");
    let started = std::time::Instant::now();
    block_on(async {
        let client = c.client().await;
        for i in 0..100 {
            let ns = format!("pr-bench-{i}");
            namespace(&client, &ns, json!({})).await;
            let mut d = deployment("bench", "bench");
            d.spec.as_mut().unwrap().replicas = Some(5);
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &d)
                .await
                .expect("create");
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
        wait_until("500 bench pods Running", 1800, || async {
            let list = pods.list(&Default::default()).await.ok()?;
            let n = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|n| n.starts_with("pr-bench-"))
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .count();
            (n >= 500).then_some(())
        })
        .await;
    });
    eprintln!(
        "bench: 500 pods in 100 namespaces created and Running in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cli.ok(&["rotate", "staging", "bench", "TOKEN", "--generate", "24"]);
    for run in 1..=3 {
        let t = std::time::Instant::now();
        let out = cli.ok(&["--output", "json", "status", "staging", "bench"]);
        let wall = t.elapsed();
        let v: Value = serde_json::from_str(&out).expect("status JSON");
        eprintln!(
            "bench: status staging bench, run {run}: {:.0} ms wall (process start to exit), {} pods, {} stale, API calls {}, store lists {}",
            wall.as_secs_f64() * 1000.0,
            v["pods"].as_array().map_or(0, Vec::len),
            v["stale_pods"],
            v["api_calls"],
            v["store_lists"],
        );
    }
    let t = std::time::Instant::now();
    let out = cli.ok(&[
        "--output",
        "json",
        "status",
        "staging",
        "bench",
        "-n",
        "pr-bench-7",
    ]);
    let v: Value = serde_json::from_str(&out).expect("status JSON");
    eprintln!(
        "bench: status staging bench -n pr-bench-7: {:.0} ms wall, {} pods, API calls {}",
        t.elapsed().as_secs_f64() * 1000.0,
        v["pods"].as_array().map_or(0, Vec::len),
        v["api_calls"]
    );
}
