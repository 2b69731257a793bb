//! The agent test harness: secrets written with the real `sidekey` CLI
//! (straight to moto, or to a local store), the real `sidekey-agent` binary
//! run as a process with `SIDEKEY_LOG=trace` against moto through the
//! fault-injecting proxy (which counts its calls), and a check after every
//! test that no value it wrote appears in any stderr, non-value stdout or
//! audit record.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sidekey_test_support::{aws_env, create_kms_key, run, FaultProxy, Moto, Output};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Ssm,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A prefix no other test uses (they share one moto server).
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "a{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sidekey-agent"))
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A build command that does not inherit what `cargo test` set for this
/// test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...): build scripts watch such
/// variables and would rebuild everything.
pub fn clean_build_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
            || name == "OUT_DIR"
            || name.starts_with("RUST_TEST")
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(workspace_root());
    cmd
}

/// The `sidekey` CLI next to the agent binary, built on first use when
/// `cargo test -p sidekey-agent` alone did not build it.
pub fn cli_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = agent_bin().with_file_name("sidekey");
        if !path.is_file() {
            let status = clean_build_command(cargo())
                .args(["build", "-p", "sidekey-cli", "--bin", "sidekey"])
                .status()
                .expect("running cargo build -p sidekey-cli");
            assert!(status.success(), "cargo build -p sidekey-cli failed");
        }
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// A tiny statically linked program that reports what it was started
/// with: `probe EXIT [MARKER] [ARGS...]` prints its pid, every argument and
/// every environment variable (hex), creates MARKER if it is not empty,
/// and exits with EXIT.
pub fn probe_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = agent_bin()
            .parent()
            .expect("target dir")
            .join("agent-test-probe");
        std::fs::create_dir_all(&dir).expect("probe dir");
        let src = dir.join("probe.rs");
        std::fs::write(&src, PROBE_SOURCE).expect("probe source");
        let out = dir.join(format!("probe-{}", std::process::id()));
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
            ])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status()
            .expect("running rustc");
        assert!(status.success(), "compiling the probe failed");
        let path = dir.join("probe");
        std::fs::rename(&out, &path).expect("probe in place");
        path
    })
    .clone()
}

const PROBE_SOURCE: &str = r#"
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
fn hex(out: &mut Vec<u8>, b: &[u8]) {
    for x in b { out.extend_from_slice(format!("{x:02x}").as_bytes()); }
}
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut out = Vec::new();
    out.extend_from_slice(format!("pid {}\n", std::process::id()).as_bytes());
    for a in &args { out.extend_from_slice(b"arg "); hex(&mut out, a.as_bytes()); out.push(b'\n'); }
    for (k, v) in std::env::vars_os() {
        out.extend_from_slice(b"env "); hex(&mut out, k.as_bytes()); out.push(b' ');
        hex(&mut out, v.as_bytes()); out.push(b'\n');
    }
    std::io::stdout().write_all(&out).unwrap();
    if let Some(m) = args.get(2) { if !m.is_empty() { std::fs::write(m, b"the app ran").unwrap(); } }
    let code = args.get(1).and_then(|a| a.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
"#;

/// What the probe saw.
#[derive(Debug)]
pub struct Probe {
    pub pid: u32,
    pub args: Vec<Vec<u8>>,
    pub env: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl Probe {
    pub fn parse(stdout: &[u8]) -> Probe {
        let text = String::from_utf8_lossy(stdout);
        let mut probe = Probe {
            pid: 0,
            args: Vec::new(),
            env: BTreeMap::new(),
        };
        for line in text.lines() {
            let mut parts = line.split(' ');
            match parts.next() {
                Some("pid") => probe.pid = parts.next().expect("pid").parse().expect("pid"),
                Some("arg") => probe.args.push(unhex(parts.next().unwrap_or(""))),
                Some("env") => {
                    let k = unhex(parts.next().unwrap_or(""));
                    let v = unhex(parts.next().unwrap_or(""));
                    probe.env.insert(k, v);
                }
                _ => {}
            }
        }
        probe
    }
}

/// A process run by [`spawn`]: its pid, exit status, stdout and stderr.
#[derive(Debug)]
pub struct Ran {
    pub pid: u32,
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `program` with exactly `env` (nothing inherited) and byte-exact
/// arguments; records the pid it was started with.
pub fn spawn(program: &Path, args: &[OsString], env: &[(String, String)]) -> Ran {
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let pid = child.id();
    let out = child.wait_with_output().expect("waiting");
    Ran {
        pid,
        status: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

pub fn os(s: &str) -> OsString {
    OsString::from(s)
}

pub fn os_bytes(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// One test's world: a prefix of its own, a store, and (for SSM) a proxy
/// in front of the shared moto server that the agent talks through.
pub struct World {
    pub kind: Kind,
    /// The moto server the CLI writes to (and the proxy forwards to).
    pub moto_endpoint: String,
    pub dir: tempfile::TempDir,
    pub proxy: Option<FaultProxy>,
    pub kms_key: String,
    pub prefix: String,
    secrets: Vec<Vec<u8>>,
    watched: Vec<(String, Vec<u8>)>,
}

impl World {
    pub fn new(kind: Kind) -> World {
        match kind {
            Kind::Local => World::build(Kind::Local, String::new()),
            Kind::Ssm => World::on_moto(Moto::shared().endpoint()),
        }
    }

    /// An SSM world on a given moto server.
    pub fn on_moto(endpoint: &str) -> World {
        World::build(Kind::Ssm, endpoint.to_owned())
    }

    fn build(kind: Kind, moto_endpoint: String) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (proxy, kms_key) = match kind {
            Kind::Local => (None, String::new()),
            Kind::Ssm => {
                let proxy = FaultProxy::start(&moto_endpoint).expect("proxy");
                let key = runtime()
                    .block_on(create_kms_key(&moto_endpoint))
                    .expect("kms key");
                (Some(proxy), key)
            }
        };
        World {
            kind,
            moto_endpoint,
            dir,
            proxy,
            kms_key,
            prefix: unique(),
            secrets: Vec::new(),
            watched: Vec::new(),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("agent-audit.jsonl")
    }

    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("an SSM world has a proxy")
    }

    /// Registers a value that must never leak.
    pub fn secret(&mut self, value: &[u8]) {
        self.secrets.push(value.to_vec());
    }

    /// Watches output that must not hold a value.
    pub fn watch(&mut self, what: &str, bytes: &[u8]) {
        self.watched.push((what.to_owned(), bytes.to_vec()));
    }

    fn store_env(&self, endpoint: Option<String>) -> Vec<(String, String)> {
        let mut env = vec![("SIDEKEY_PREFIX".to_owned(), self.prefix.clone())];
        match self.kind {
            Kind::Local => env.push((
                "SIDEKEY_STORE".to_owned(),
                format!("file:{}", self.store_dir().display()),
            )),
            Kind::Ssm => {
                env.push(("SIDEKEY_STORE".to_owned(), "ssm".to_owned()));
                env.push(("SIDEKEY_KMS_KEY".to_owned(), self.kms_key.clone()));
                env.extend(aws_env(&endpoint.expect("endpoint")));
            }
        }
        env
    }

    /// The CLI's environment: it talks to moto directly, so the proxy
    /// counts the agent's calls only.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let endpoint = (self.kind == Kind::Ssm).then(|| self.moto_endpoint.clone());
        let mut env = self.store_env(endpoint);
        env.push((
            "SIDEKEY_AUDIT_LOG".to_owned(),
            self.dir
                .path()
                .join("cli-audit.jsonl")
                .display()
                .to_string(),
        ));
        env.push(("SIDEKEY_TIMEOUT".to_owned(), "30s".to_owned()));
        env.push(("SIDEKEY_ACTOR".to_owned(), "tester".to_owned()));
        env
    }

    /// Runs the CLI and asserts success.
    pub fn cli(&mut self, args: &[&str], stdin: &[u8]) -> Output {
        let out = run(&cli_bin(), args, &self.cli_env(), stdin).expect("sidekey runs");
        assert_eq!(
            out.status,
            0,
            "sidekey {args:?} failed: {}",
            out.stderr_str()
        );
        out
    }

    /// `sidekey put` with a registered value (from stdin, byte for byte).
    pub fn put(&mut self, env: &str, service: &str, key: &str, value: &[u8]) {
        self.secret(value);
        self.cli(&["put", env, service, key], value);
    }

    /// `sidekey import` of text values (one process, one data key).
    pub fn import(&mut self, env: &str, service: &str, items: &[(String, String)]) {
        let mut doc = String::new();
        for (k, v) in items {
            self.secret(v.as_bytes());
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            doc.push_str(&format!("{k}=\"{escaped}\"\n"));
        }
        self.cli(&["import", env, service, "--dotenv", "-"], doc.as_bytes());
    }

    /// The agent's environment for `env` with `services` and `picks`.
    pub fn agent_env(&self, env: &str, services: &str, picks: &str) -> Vec<(String, String)> {
        let endpoint = (self.kind == Kind::Ssm).then(|| self.proxy().endpoint());
        let mut vars = self.store_env(endpoint);
        vars.extend(
            [
                ("SIDEKEY_ENVIRONMENT", env),
                ("SIDEKEY_SERVICES", services),
                ("SIDEKEY_SECRETS", picks),
                ("SIDEKEY_LOG", "trace"),
                ("SIDEKEY_TIMEOUT", "20s"),
                ("SIDEKEY_POD", "app-7d9f-x2"),
                ("SIDEKEY_NAMESPACE", env),
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("HOME", "/nonexistent"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        vars.push((
            "SIDEKEY_AUDIT".to_owned(),
            format!("file:{}", self.audit_path().display()),
        ));
        vars
    }

    /// Runs the agent; stderr is watched, and stdout unless it holds values.
    pub fn agent(
        &mut self,
        args: &[OsString],
        env: &[(String, String)],
        values_on_stdout: bool,
    ) -> Ran {
        let ran = spawn(&agent_bin(), args, env);
        let what = format!("sidekey-agent {args:?}");
        self.watch(&format!("stderr of {what}"), &ran.stderr.clone());
        if !values_on_stdout {
            self.watch(&format!("stdout of {what}"), &ran.stdout.clone());
        }
        ran
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// The leak check every test ends with.
    pub fn assert_no_leaks(&self) {
        let needles: Vec<&[u8]> = self
            .secrets
            .iter()
            .filter(|s| s.len() >= 6)
            .map(Vec::as_slice)
            .collect();
        for (what, bytes) in &self.watched {
            sidekey_test_support::assert_no_secret(what, bytes, &needles);
        }
        if let Ok(audit) = std::fs::read(self.audit_path()) {
            sidekey_test_support::assert_no_secret("the agent's audit log", &audit, &needles);
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_leaks();
        }
    }
}

/// A fresh directory on a real tmpfs (/dev/shm), or `None` (with the
/// reason printed) where there is none.
pub fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if sidekey_agent::files::check_memory_fs(shm).is_err() {
        sidekey_test_support::skip("/dev/shm is not a tmpfs here");
        return None;
    }
    Some(
        tempfile::Builder::new()
            .prefix("sidekey-agent-test-")
            .tempdir_in(shm)
            .expect("tempdir on /dev/shm"),
    )
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
