//! A container registry on loopback: Debian's `docker-registry` (the
//! distribution registry server) with TLS from a generated CA and htpasswd
//! auth; images built by `umoci` (no rootfs: only a config) and pushed by
//! `skopeo`. Also [`HangingServer`]: a TCP listener that accepts and never
//! answers.
//!
//! Tools: `docker-registry`, `skopeo`, `umoci` and `htpasswd` (Debian
//! packages `docker-registry`, `skopeo`, `umoci`, `apache2-utils`; CI
//! installs them). [`TestRegistry::tools_missing`] says which are absent.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The user the registry accepts.
pub const REGISTRY_USER: &str = "sidekey";

/// Same lifeline trick as the moto wrapper: the registry is killed when the
/// test process goes, however it goes.
const WRAPPER: &str = r#"exec 3<&0
(
  read -r _lifeline <&3
  kill "$$" 2>/dev/null
) &
exec docker-registry serve "$1" 0</dev/null 3<&-
"#;

/// The tools a registry test needs.
pub const REGISTRY_TOOLS: [&str; 4] = ["docker-registry", "skopeo", "umoci", "htpasswd"];

/// A registry on `127.0.0.1` with TLS and htpasswd auth; stopped on drop.
#[derive(Debug)]
pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Child,
    _lifeline: ChildStdin,
    addr: SocketAddr,
    password: String,
    ca_pem: String,
}

/// One platform of an image: architecture, ENTRYPOINT, CMD (`None`: unset).
#[derive(Debug, Clone)]
pub struct ImageSpec<'a> {
    /// `amd64`, `arm64`, ...
    pub arch: &'a str,
    /// The image's ENTRYPOINT.
    pub entrypoint: Option<&'a [&'a str]>,
    /// The image's CMD.
    pub cmd: Option<&'a [&'a str]>,
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

impl TestRegistry {
    /// The tools not on `PATH` (empty when a registry can run).
    pub fn tools_missing() -> Vec<&'static str> {
        REGISTRY_TOOLS.into_iter().filter(|t| !which(t)).collect()
    }

    /// Starts a registry on a free loopback port and waits until it accepts
    /// connections.
    pub fn start() -> anyhow::Result<TestRegistry> {
        let missing = Self::tools_missing();
        if !missing.is_empty() {
            bail!(
                "missing {}: apt-get install docker-registry skopeo umoci apache2-utils",
                missing.join(", ")
            );
        }
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        // CA and server certificate for 127.0.0.1 / localhost.
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sidekey test registry CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let cert = params.signed_by(&key, &issuer)?;
        let ca_pem = ca.pem();
        fs::write(d.join("ca.pem"), &ca_pem)?;
        fs::create_dir_all(d.join("certs"))?;
        fs::write(d.join("certs/ca.crt"), &ca_pem)?;
        fs::write(d.join("cert.pem"), cert.pem())?;
        fs::write(d.join("key.pem"), key.serialize_pem())?;
        // htpasswd (bcrypt) with a random password.
        let password = format!("pw-{:016x}", rand_u64());
        let line = run(Command::new("htpasswd").args(["-Bbn", REGISTRY_USER, &password]))?;
        fs::write(d.join("htpasswd"), line.trim())?;

        let mut last = None;
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  tls:\n    certificate: {cert}\n    key: {key}\nauth:\n  htpasswd:\n    realm: sidekey-test\n    path: {htpasswd}\n",
                root = d.join("data").display(),
                cert = d.join("cert.pem").display(),
                key = d.join("key.pem").display(),
                htpasswd = d.join("htpasswd").display(),
            );
            fs::write(d.join("config.yml"), config)?;
            let log = fs::File::create(d.join("registry.log"))?;
            let mut child = Command::new("sh")
                .args(["-c", WRAPPER, "registry"])
                .arg(d.join("config.yml"))
                .env("OTEL_TRACES_EXPORTER", "none")
                .stdin(Stdio::piped())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start docker-registry")?;
            let lifeline = child.stdin.take().context("no stdin")?;
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait()? {
                    last = Some(format!(
                        "docker-registry exited ({status}): {}",
                        fs::read_to_string(d.join("registry.log")).unwrap_or_default()
                    ));
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    return Ok(TestRegistry {
                        dir,
                        child,
                        _lifeline: lifeline,
                        addr,
                        password,
                        ca_pem,
                    });
                }
                if started.elapsed() > READY_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("docker-registry did not listen on {addr} within {READY_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("{}", last.unwrap_or_default())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The CA certificate (PEM) that signed the registry's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding [`TestRegistry::ca_pem`].
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The password of [`REGISTRY_USER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A Docker `config.json` with the registry's credentials (`password`
    /// given: e.g. a wrong one).
    pub fn docker_config(&self, password: &str) -> String {
        let auth = base64_std(format!("{REGISTRY_USER}:{password}").as_bytes());
        serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string()
    }

    /// Everything the registry logged (its access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of `GET`s of manifests in `repo` that were answered
    /// 200 (the requests a lookup makes per image).
    pub fn manifest_gets(&self, repo: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/manifests/");
        self.log()
            .lines()
            .filter(|l| {
                l.contains(&needle) && l.contains("HTTP/1.1\" 200")
                    || l.contains(&needle) && l.contains("HTTP/2.0\" 200")
            })
            .count()
    }

    /// Builds a one-platform image and pushes it as `repo:tag`; returns the
    /// reference `127.0.0.1:PORT/repo:tag`.
    pub fn push_image(&self, repo_tag: &str, spec: &ImageSpec<'_>) -> anyhow::Result<String> {
        self.push_index(repo_tag, std::slice::from_ref(spec))
    }

    /// Builds an image per spec and pushes them as `repo:tag`: one spec
    /// gives an image manifest, several an image index (one entry per
    /// spec, `linux/<arch>`).
    pub fn push_index(&self, repo_tag: &str, specs: &[ImageSpec<'_>]) -> anyhow::Result<String> {
        let work = tempfile::tempdir_in(self.dir.path())?;
        let layout = work.path().join("oci");
        let layout_s = layout.display().to_string();
        run(Command::new("umoci").args(["init", "--layout", &layout_s]))?;
        for (i, s) in specs.iter().enumerate() {
            let image = format!("{layout_s}:p{i}");
            run(Command::new("umoci").args(["new", "--image", &image]))?;
            let mut c = Command::new("umoci");
            c.args([
                "config",
                "--image",
                &image,
                "--os",
                "linux",
                "--architecture",
                s.arch,
            ]);
            match s.entrypoint {
                Some([]) => {
                    c.args(["--clear", "config.entrypoint"]);
                }
                Some(e) => {
                    for a in e {
                        c.arg(format!("--config.entrypoint={a}"));
                    }
                }
                None => {}
            }
            match s.cmd {
                Some([]) => {
                    c.args(["--clear", "config.cmd"]);
                }
                Some(e) => {
                    for a in e {
                        c.arg(format!("--config.cmd={a}"));
                    }
                }
                None => {}
            }
            run(&mut c)?;
        }
        let tag = "push";
        if specs.len() == 1 {
            run(Command::new("umoci").args(["tag", "--image", &format!("{layout_s}:p0"), tag]))?;
        } else {
            // An image index over the per-platform manifests (umoci makes
            // none): written into the layout as a blob, tagged in index.json.
            let index_path = layout.join("index.json");
            let mut index: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&index_path)?)?;
            let manifests = index["manifests"].as_array().context("index.json")?.clone();
            let mut entries = Vec::new();
            for (i, s) in specs.iter().enumerate() {
                let name = format!("p{i}");
                let m = manifests
                    .iter()
                    .find(|m| {
                        m["annotations"]["org.opencontainers.image.ref.name"] == name.as_str()
                    })
                    .context("tag in index.json")?;
                entries.push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": m["digest"],
                    "size": m["size"],
                    "platform": {"os": "linux", "architecture": s.arch},
                }));
            }
            let blob = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": entries,
            })
            .to_string();
            let tmp = work.path().join("index-blob");
            fs::write(&tmp, &blob)?;
            let digest = sha256_file(&tmp)?;
            fs::rename(&tmp, layout.join("blobs/sha256").join(&digest))?;
            index["manifests"]
                .as_array_mut()
                .context("index.json")?
                .push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": format!("sha256:{digest}"),
                    "size": blob.len(),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }));
            fs::write(&index_path, index.to_string())?;
        }
        let dest = format!("{}/{repo_tag}", self.host());
        run(Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-cert-dir",
            &self.dir.path().join("certs").display().to_string(),
            "--dest-creds",
            &format!("{REGISTRY_USER}:{}", self.password),
            &format!("oci:{layout_s}:{tag}"),
            &format!("docker://{dest}"),
        ]))?;
        Ok(dest)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn base64_std(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A TCP listener on loopback that accepts connections and never answers
/// (holds them open until dropped): a registry that hangs.
#[derive(Debug)]
pub struct HangingServer {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangingServer {
    /// Listens on a free port.
    pub fn start() -> anyhow::Result<HangingServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        });
        Ok(HangingServer { addr, accepted })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
