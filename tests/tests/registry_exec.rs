//! Issue 18 end to end, with no cluster: a pod without a `command`
//! (deploy/examples/no-command.yaml) whose image is in a real registry
//! (Debian's docker-registry on loopback, TLS from a generated CA, htpasswd
//! auth; images built by umoci and pushed by skopeo) goes through the real
//! `sidekey-injector` over TLS with `--registry-lookup`, as the default
//! install runs it. The patch is applied by Python's jsonpatch and the pod
//! validated with kubernetes-validate, then the kubelet is played (see
//! `sidekey_e2e::Kubelet`; the played images carry the app's file but no
//! ENTRYPOINT, so only a command the injector wrote can start it) and the
//! real `sidekey-agent` fetches from moto and execs the app: a script that
//! prints its argv. The argv must be exactly what the container runtime
//! would have run without sidekey: the image's ENTRYPOINT and CMD, or the
//! ENTRYPOINT and the container's `args`.

use sidekey_e2e::support::{
    self, apply_and_validate, bin_dir, free_port, is_root, repo, walk, PutTo,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidekey_e2e::{pod_from_workload, Image, Kubelet};
use sidekey_test_support::registry::{ImageSpec, TestRegistry};
use sidekey_test_support::{assert_no_secret, aws_env, create_kms_key, Moto};

const AGENT_IMAGE: &str = "sidekey/agent:e2e";
/// Where the injector installs the agent (README: "rewrites each target
/// container's command to `/sidekey/bin/sidekey-agent exec -- <command>`").
const AGENT_INSTALLED: &str = "/sidekey/bin/sidekey-agent";
/// The app's path in its image: the ENTRYPOINT of the pushed images.
const APP: &str = "/app/show";

/// CMD of the pushed images: words a shell or a splitter would change.
const CMD: &[&str] = &[
    "serve",
    "two words",
    "*",
    "it's \"quoted\"",
    "ünïcödé",
    "--flag=a,b",
];
const ENTRYPOINT_AMD64: &[&str] = &[APP, "--arch=amd64"];
const ENTRYPOINT_ARM64: &[&str] = &[APP, "--arch=arm64"];
/// An image with no ENTRYPOINT: its CMD is the whole command.
const CMD_ONLY: &[&str] = &[APP, "--from-cmd", "x y"];

/// The registry and its images, shared by the tests of this file.
struct Images {
    registry: TestRegistry,
    dir: tempfile::TempDir,
    /// An image index: linux/amd64 and linux/arm64 with different
    /// ENTRYPOINTs, the same CMD.
    multi: String,
    /// One platform, no ENTRYPOINT, a CMD.
    cmd_only: String,
}

impl Images {
    /// A Docker config.json with the registry's credentials.
    fn auth_file(&self) -> PathBuf {
        let path = self.dir.path().join("config.json");
        if !path.exists() {
            std::fs::write(&path, self.registry.docker_config(self.registry.password()))
                .expect("write config.json");
        }
        path
    }
}

fn images() -> Option<&'static Images> {
    static I: OnceLock<Option<Images>> = OnceLock::new();
    I.get_or_init(|| {
        let missing = TestRegistry::tools_missing();
        if !missing.is_empty() {
            sidekey_test_support::skip(&format!(
                "registry tools missing: {} (apt-get install docker-registry skopeo umoci apache2-utils)",
                missing.join(", ")
            ));
            return None;
        }
        let registry = TestRegistry::start().expect("registry");
        let multi = registry
            .push_index(
                "apps/show:1",
                &[
                    ImageSpec {
                        arch: "amd64",
                        entrypoint: Some(ENTRYPOINT_AMD64),
                        cmd: Some(CMD),
                    },
                    ImageSpec {
                        arch: "arm64",
                        entrypoint: Some(ENTRYPOINT_ARM64),
                        cmd: Some(CMD),
                    },
                ],
            )
            .expect("push apps/show:1");
        let cmd_only = registry
            .push_image(
                "apps/cmd-only:1",
                &ImageSpec {
                    arch: "amd64",
                    entrypoint: None,
                    cmd: Some(CMD_ONLY),
                },
            )
            .expect("push apps/cmd-only:1");
        Some(Images {
            registry,
            dir: tempfile::tempdir().expect("tempdir"),
            multi,
            cmd_only,
        })
    })
    .as_ref()
}

/// One test's world: moto, a KMS key, a unique prefix, the injector with
/// the registry lookup on.
struct World {
    dir: tempfile::TempDir,
    prefix: String,
    kms_key: String,
    injector: Child,
    port: u16,
    /// Values written: never in the agent's output, never on disk.
    secrets: Vec<String>,
}

impl World {
    fn new(name: &str, images: &Images) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::shared();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let kms_key = rt
            .block_on(create_kms_key(moto.endpoint()))
            .expect("kms key");
        let prefix = format!("regexec{}{}", name.replace('_', ""), std::process::id());
        // The shipped ConfigMap's configuration, with this test's prefix,
        // key and agent image.
        let shipped =
            std::fs::read_to_string(repo().join("deploy/base/configmap.yaml")).expect("configmap");
        let cm: Value = serde_norway::from_str(&shipped).expect("configmap yaml");
        let mut config: Value =
            serde_norway::from_str(cm["data"]["config.yaml"].as_str().expect("config.yaml"))
                .expect("config");
        config["prefix"] = json!(prefix);
        config["kmsKey"] = json!(kms_key);
        config["agentImage"] = json!(AGENT_IMAGE);
        let config_path = dir.path().join("config.yaml");
        std::fs::write(
            &config_path,
            serde_norway::to_string(&config).expect("yaml"),
        )
        .expect("write");

        // The webhook's CA and serving certificate, made now.
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let sh = format!(
            "set -e; cd {0}; \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=e2e-ca -keyout ca.key -out ca.crt 2>/dev/null; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout tls.key -out tls.csr 2>/dev/null; \
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > ext; \
             openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt 2>/dev/null",
            tls.display()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(sh)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The injector as deploy/base runs it (--registry-lookup), plus
        // what this registry needs: its CA, its credentials and, where
        // the injector refuses loopback registries unless they are named,
        // its address. The budget is generous: the host is shared.
        let injector_bin = bin_dir().join("sidekey-injector");
        let help = Command::new(&injector_bin)
            .arg("--help")
            .output()
            .expect("sidekey-injector --help");
        let mut extra: Vec<String> = Vec::new();
        if String::from_utf8_lossy(&help.stdout).contains("--registry-allow") {
            extra.push("--registry-allow".into());
            extra.push(images.registry.host());
        }
        let port = free_port();
        let injector = Command::new(&injector_bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(tls.join("tls.crt"))
            .arg("--tls-key")
            .arg(tls.join("tls.key"))
            .arg("--config")
            .arg(&config_path)
            .arg("--registry-lookup")
            .arg("--registry-ca")
            .arg(images.registry.ca_file())
            .arg("--registry-auth")
            .arg(images.auth_file())
            .args(["--registry-budget", "4s"])
            .args(&extra)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("POD_NAMESPACE", "sidekey-system")
            .env("SIDEKEY_LOG", "debug")
            .env(
                "SIDEKEY_AUDIT",
                format!("file:{}", dir.path().join("injector-audit.jsonl").display()),
            )
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("injector.out")).expect("log"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("injector.err")).expect("log"),
            ))
            .spawn()
            .expect("sidekey-injector starts");
        let world = World {
            dir,
            prefix,
            kms_key,
            injector,
            port,
            secrets: Vec::new(),
        };
        world.wait_ready();
        world
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let out = self.curl(
                &["-fsS", &format!("https://127.0.0.1:{}/readyz", self.port)],
                None,
            );
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "injector never became ready: {}",
                std::fs::read_to_string(self.dir.path().join("injector.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn curl(&self, args: &[&str], body: Option<&Path>) -> std::process::Output {
        support::curl(self.dir.path(), args, body)
    }

    /// Writes a secret with the real CLI.
    fn put(&mut self, env: &str, service: &str, key: &str, value: &str) {
        self.secrets.push(value.to_owned());
        let to = PutTo {
            aws: aws_env(Moto::shared().endpoint()),
            prefix: &self.prefix,
            kms_key: &self.kms_key,
        };
        support::put_secret(self.dir.path(), to, [env, service, key], value);
    }

    /// Sends the pod through the injector as the API server would; the
    /// AdmissionReview's response.
    fn admit(&self, pod: &Value, namespace: &str) -> Value {
        support::admit(self.dir.path(), self.port, "regexec-0001", pod, namespace)
    }

    /// Admits the pod (it must be allowed), applies the patch with an
    /// independent JSON Patch implementation, validates the result and
    /// plays the kubelet on it.
    fn live(&self, pod: &Value) -> (Value, sidekey_e2e::PodRun) {
        let response = self.admit(pod, "staging");
        assert_eq!(response["allowed"], true, "{response}");
        let patched = apply_and_validate(self.dir.path(), pod, &response);
        let mut kubelet = Kubelet::new(self.dir.path()).expect("kubelet");
        kubelet.extra_env = aws_env(Moto::shared().endpoint());
        kubelet.image(
            AGENT_IMAGE,
            Image::default().with_file("/sidekey-agent", bin_dir().join("sidekey-agent"), 0o755),
        );
        let image = pod["spec"]["containers"][0]["image"]
            .as_str()
            .expect("image");
        kubelet.image(image, app_image(self.dir.path()));
        let run = kubelet.run(&patched).expect("pod runs");
        (patched, run)
    }

    /// No value in the agent's output (what the app printed before it
    /// started, and stderr) nor in any file of the test's directory.
    fn scan(&self, run: &sidekey_e2e::PodRun) {
        let needles: Vec<&[u8]> = self.secrets.iter().map(|s| s.as_bytes()).collect();
        for c in &run.containers {
            assert_no_secret(&format!("stderr of {}", c.name), &c.stderr, &needles);
            let stdout = c.stdout_str();
            let agent_part = match stdout.find("APP-STARTED") {
                Some(i) => &stdout[..i],
                None => &stdout[..],
            };
            assert_no_secret(
                &format!("agent output in {}", c.name),
                agent_part.as_bytes(),
                &needles,
            );
        }
        for entry in walk(self.dir.path()) {
            if let Ok(bytes) = std::fs::read(&entry) {
                assert_no_secret(&entry.display().to_string(), &bytes, &needles);
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.injector.kill();
        let _ = self.injector.wait();
    }
}

/// The app's image as the played kubelet sees it: the file at [`APP`] and
/// no ENTRYPOINT (the kubelet refuses a container with neither command nor
/// entrypoint, so only the command the injector wrote can start it). The
/// app prints each argument it got on a line of its own, then the
/// variables it was given.
fn app_image(dir: &Path) -> Image {
    let script = dir.join("show");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo APP-STARTED\n\
         for a in \"$0\" \"$@\"; do printf 'ARG<%s>\\n' \"$a\"; done\n\
         env | grep -E '^(WEB_|SIDEKEY_)' | sort | sed 's/^/ENV /'\n",
    )
    .expect("write app");
    Image::default().with_file(APP, &script, 0o755)
}

/// The argv the app printed, once it exited 0.
fn app_argv(run: &sidekey_e2e::PodRun) -> (Vec<String>, String) {
    let app = run.container("web").expect("web never ran");
    let out = app.stdout_str();
    assert_eq!(app.status, Some(0), "{}\n{out}", app.stderr_str());
    let argv = out
        .lines()
        .filter_map(|l| l.strip_prefix("ARG<")?.strip_suffix('>'))
        .map(str::to_owned)
        .collect();
    (argv, out)
}

/// The example's workload as a pod in `staging`, running `image`.
fn example_pod(image: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/examples/no-command.yaml"))
        .expect("deploy/examples/no-command.yaml");
    let workload: Value = serde_norway::from_str(&text).expect("yaml");
    let mut pod = pod_from_workload(&workload, "staging").expect("pod");
    let c = &mut pod["spec"]["containers"][0];
    assert!(
        c.get("command").is_none(),
        "the example must have no command"
    );
    c["image"] = json!(image);
    pod
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn wrapped(tail: &[&str]) -> Value {
    let mut v = vec![AGENT_INSTALLED, "exec", "--"];
    v.extend_from_slice(tail);
    json!(v)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            sidekey_test_support::skip(
                "playing the kubelet needs root (mount namespaces, tmpfs); CI runs as root",
            );
            return;
        }
    };
}

/// The example as shipped: `args` set and `kubernetes.io/arch: amd64`.
/// The runtime would run the amd64 ENTRYPOINT followed by the args (CMD
/// ignored); the agent execs exactly that, with the secret in the
/// environment.
#[test]
fn the_example_runs_the_entrypoint_of_its_platform_then_its_args() {
    require_root!();
    let Some(images) = images() else { return };
    let mut w = World::new("args", images);
    w.put("staging", "web", "WEB_TOKEN", "regexec-web-token-value-1");
    let pod = example_pod(&images.multi);
    let args = pod["spec"]["containers"][0]["args"].clone();
    assert_eq!(args, json!(["--port", "8080"]), "the example's args");

    let (patched, run) = w.live(&pod);
    let c = &patched["spec"]["containers"][0];
    assert_eq!(c["command"], wrapped(ENTRYPOINT_AMD64));
    assert_eq!(c["args"], args, "args are kept");

    let (argv, out) = app_argv(&run);
    let mut want = strings(ENTRYPOINT_AMD64);
    want.extend(strings(&["--port", "8080"]));
    assert_eq!(argv, want, "{out}");
    assert!(
        out.contains("ENV WEB_TOKEN=regexec-web-token-value-1\n"),
        "{out}"
    );
    assert!(!out.contains("ENV SIDEKEY_"), "{out}");
    w.scan(&run);
}

/// Without `args` the runtime runs ENTRYPOINT then CMD: the agent execs
/// exactly those words (spaces, quotes, `*`, non-ASCII untouched); on
/// arm64 nodes, the arm64 ENTRYPOINT. An image with only a CMD runs its
/// CMD.
#[test]
fn without_args_the_entrypoint_then_the_cmd_word_for_word() {
    require_root!();
    let Some(images) = images() else { return };
    let mut w = World::new("cmd", images);
    w.put("staging", "web", "WEB_TOKEN", "regexec-web-token-value-2");

    let mut pod = example_pod(&images.multi);
    pod["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("args");
    let (patched, run) = w.live(&pod);
    let mut want = strings(ENTRYPOINT_AMD64);
    want.extend(strings(CMD));
    let tail: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(patched["spec"]["containers"][0]["command"], wrapped(&tail));
    assert!(patched["spec"]["containers"][0].get("args").is_none());
    let (argv, out) = app_argv(&run);
    assert_eq!(argv, want, "{out}");
    assert!(
        out.contains("ENV WEB_TOKEN=regexec-web-token-value-2\n"),
        "{out}"
    );
    w.scan(&run);

    // The node selector picks the platform.
    pod["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"});
    let (_, run) = w.live(&pod);
    let mut want = strings(ENTRYPOINT_ARM64);
    want.extend(strings(CMD));
    let (argv, out) = app_argv(&run);
    assert_eq!(argv, want, "{out}");

    // No ENTRYPOINT: the CMD is the command.
    let pod = {
        let mut p = example_pod(&images.cmd_only);
        p["spec"]["containers"][0]
            .as_object_mut()
            .expect("container")
            .remove("args");
        p
    };
    let (patched, run) = w.live(&pod);
    assert_eq!(
        patched["spec"]["containers"][0]["command"],
        wrapped(CMD_ONLY)
    );
    let (argv, out) = app_argv(&run);
    assert_eq!(argv, strings(CMD_ONLY), "{out}");
    w.scan(&run);
}

/// What the example's comment promises when the lookup fails: the pod is
/// denied, and the message names the image, the registry's answer and the
/// fix.
#[test]
fn an_image_the_registry_does_not_have_is_denied_with_the_fix() {
    let Some(images) = images() else { return };
    let w = World::new("unknown", images);
    let image = format!("{}/apps/show:no-such-tag", images.registry.host());
    let response = w.admit(&example_pod(&image), "staging");
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().expect("message");
    for part in [image.as_str(), "sidekey.io/command.web"] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(
        message.to_lowercase().contains("manifest unknown") || message.contains("ManifestUnknown"),
        "the registry's answer in {message}"
    );
}

/// `$(VAR)` and `$$` in an image's ENTRYPOINT or CMD are not expanded by
/// the runtime, but the kubelet expands them in a container's `command`:
/// copied there, they are escaped (`$` as `$$`, ImageConfig::wrapped_tail)
/// so that the app gets the same words.
#[test]
fn dollar_signs_in_the_image_cmd_reach_the_app_unexpanded() {
    require_root!();
    let Some(images) = images() else { return };
    let cmd: &[&str] = &["$$", "$$(X)", "$(SIDEKEY_ENVIRONMENT)", "$(NOPE)", "a$b"];
    let image = images
        .registry
        .push_image(
            "apps/dollar:1",
            &ImageSpec {
                arch: "amd64",
                entrypoint: Some(&[APP]),
                cmd: Some(cmd),
            },
        )
        .expect("push apps/dollar:1");
    let mut w = World::new("dollar", images);
    w.put("staging", "web", "WEB_TOKEN", "regexec-web-token-value-3");
    let mut pod = example_pod(&image);
    pod["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("args");
    let (_, run) = w.live(&pod);
    let (argv, out) = app_argv(&run);
    let mut want = vec![APP.to_owned()];
    want.extend(strings(cmd));
    assert_eq!(argv, want, "{out}");
    w.scan(&run);
}
