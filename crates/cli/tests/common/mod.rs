//! The CLI test harness: runs the real `sidekey` binary against the
//! embedded local store or against moto (through the fault-injecting
//! proxy), with `SIDEKEY_LOG=trace`, and checks after every test that no
//! value it wrote appears in any stderr, non-value stdout, audit record or
//! file of the local store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sidekey_test_support::{aws_env, create_kms_key, run, FaultProxy, Moto, Output};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Ssm,
}

/// One test's world.
pub struct World {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub proxy: Option<FaultProxy>,
    pub kms_key: String,
    pub prefix: String,
    /// Values this test wrote: they must never leak.
    secrets: Vec<Vec<u8>>,
    /// Everything that must not hold a value.
    watched: Vec<(String, Vec<u8>)>,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

impl World {
    pub fn new(kind: Kind) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (proxy, kms_key) = match kind {
            Kind::Local => (None, String::new()),
            Kind::Ssm => {
                let moto = Moto::shared();
                let proxy = FaultProxy::start(moto.endpoint()).expect("proxy");
                let key = runtime()
                    .block_on(create_kms_key(moto.endpoint()))
                    .expect("kms key");
                (Some(proxy), key)
            }
        };
        World {
            kind,
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
        self.dir.path().join("audit.jsonl")
    }

    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("an SSM world has a proxy")
    }

    /// The AWS endpoint children use (the proxy in front of moto).
    pub fn endpoint(&self) -> String {
        self.proxy().endpoint()
    }

    /// Registers a value that must never leak.
    pub fn secret(&mut self, value: &[u8]) {
        self.secrets.push(value.to_vec());
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SIDEKEY_PREFIX".to_owned(), self.prefix.clone()),
            ("SIDEKEY_LOG".to_owned(), "trace".to_owned()),
            (
                "SIDEKEY_AUDIT_LOG".to_owned(),
                self.audit_path().display().to_string(),
            ),
            ("SIDEKEY_TIMEOUT".to_owned(), "20s".to_owned()),
            ("SIDEKEY_ACTOR".to_owned(), "tester".to_owned()),
        ];
        match self.kind {
            Kind::Local => env.push((
                "SIDEKEY_STORE".to_owned(),
                format!("file:{}", self.store_dir().display()),
            )),
            Kind::Ssm => {
                env.push(("SIDEKEY_STORE".to_owned(), "ssm".to_owned()));
                env.push(("SIDEKEY_KMS_KEY".to_owned(), self.kms_key.clone()));
                env.extend(aws_env(&self.endpoint()));
            }
        }
        env
    }

    /// Runs sidekey; its stderr (and stdout unless `values_on_stdout`) is
    /// watched for leaks.
    pub fn run_with(
        &mut self,
        args: &[&str],
        stdin: &[u8],
        extra_env: &[(&str, &str)],
        values_on_stdout: bool,
    ) -> Output {
        let mut env = self.env();
        for (k, v) in extra_env {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let out =
            run(Path::new(env!("CARGO_BIN_EXE_sidekey")), args, &env, stdin).expect("sidekey runs");
        let what = format!("sidekey {}", args.join(" "));
        self.watched
            .push((format!("stderr of {what}"), out.stderr.clone()));
        if !values_on_stdout {
            self.watched
                .push((format!("stdout of {what}"), out.stdout.clone()));
        }
        out
    }

    /// Runs sidekey whose stdout holds no value.
    pub fn sk(&mut self, args: &[&str], stdin: &[u8]) -> Output {
        self.run_with(args, stdin, &[], false)
    }

    /// Runs sidekey whose stdout is a value (get --reveal, export, exec).
    pub fn sk_values(&mut self, args: &[&str], stdin: &[u8]) -> Output {
        self.run_with(args, stdin, &[], true)
    }

    /// Runs and asserts success.
    pub fn ok(&mut self, args: &[&str], stdin: &[u8]) -> Output {
        let out = self.sk(args, stdin);
        assert_eq!(
            out.status,
            0,
            "sidekey {args:?} failed: {}",
            out.stderr_str()
        );
        out
    }

    /// `put` with a registered secret value.
    pub fn put(&mut self, env: &str, service: &str, key: &str, value: &[u8]) -> Output {
        self.secret(value);
        self.ok(&["put", env, service, key], value)
    }

    /// `get --reveal`.
    pub fn reveal(&mut self, env: &str, service: &str, key: &str, extra: &[&str]) -> Output {
        let mut args = vec!["get", env, service, key, "--reveal"];
        args.extend_from_slice(extra);
        self.sk_values(&args, b"")
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
            sidekey_test_support::assert_no_secret("the audit log", &audit, &needles);
        }
        // The local store holds envelopes only: no plaintext on disk.
        if let Ok(entries) = std::fs::read_dir(self.store_dir()) {
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                sidekey_test_support::assert_no_secret(
                    &entry.path().display().to_string(),
                    &bytes,
                    &needles,
                );
            }
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
