//! Runs in any image: the statically linked agent `exec`s an app inside a
//! chroot that holds only the agent, the app and an `/etc/resolv.conf`, and
//! reaches moto through a host name answered by a DNS server this test
//! starts on loopback: no C library, no NSS, no CA files.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{is_root, os, probe_bin, workspace_root, Kind, Probe, World};

const HOST: &str = "moto.test";

/// The release agent built with `+crt-static` (what images ship), by
/// `scripts/build-agent-static` (a no-op when it is fresh).
fn static_agent() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = common::clean_build_command(workspace_root().join("scripts/build-agent-static"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/build-agent-static");
        assert!(out.status.success(), "building the static agent failed");
        let text = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(text.lines().last().expect("the path").trim())
    })
    .clone()
}

/// A DNS server for one name: A queries for [`HOST`] get 127.0.0.1, any
/// other name NXDOMAIN, other types an empty answer. Counts the queries.
struct Dns {
    addr: String,
    queries: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    fn start() -> Dns {
        // resolv.conf has no port: it must be 53, on an address of our own.
        let addr = "127.83.1.1";
        let socket = UdpSocket::bind((addr, 53)).expect("binding 127.83.1.1:53");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let queries = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (queries, stop) = (queries.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(answer) = answer(&buf[..n]) {
                        queries.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&answer, peer);
                    }
                }
            }
        });
        Dns {
            addr: addr.to_owned(),
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to one query (RFC 1035 section 4), or `None` for garbage.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    query.get(..question_end)?;
    let ours = labels.join(".") == HOST;
    let a_record = ours && qtype == 1;
    let mut out = Vec::with_capacity(question_end + 16);
    out.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 1;
    out.push(0x80 | 0x04 | rd); // response, authoritative, RD copied
    out.push(0x80 | if ours { 0 } else { 3 }); // RA, NOERROR or NXDOMAIN
    out.extend_from_slice(&[0, 1, 0, u8::from(a_record), 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..question_end]);
    if a_record {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

fn copy_exe(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).expect("copy");
}

#[test]
fn the_static_agent_runs_in_an_empty_chroot_with_dns_from_resolv_conf() {
    if !is_root() {
        sidekey_test_support::skip(
            "chroot and a DNS server on port 53 need root (CI runs as root)",
        );
        return;
    }
    let agent = static_agent();
    // `file` is installed by .ci/run; without it the linking is unchecked.
    let file = Command::new("file").arg(&agent).output();
    if file.is_err() {
        sidekey_test_support::skip("`file` is not installed: the static linking is not checked");
    }
    if let Ok(out) = file {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{text}");
        assert!(
            text.contains("statically linked") || text.contains("static-pie linked"),
            "{text}"
        );
    }

    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "DB_PASSWORD", b"chroot-db-password");
    w.put("prod", "api", "API_KEY", b"chroot-api-key-value");
    let dns = Dns::start();

    let root = tempfile::tempdir().expect("chroot dir");
    copy_exe(&agent, &root.path().join("sidekey/bin/sidekey-agent"));
    copy_exe(&probe_bin(), &root.path().join("app/probe"));
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        format!(
            "nameserver {}\noptions ndots:1 timeout:2 attempts:2\n",
            dns.addr
        ),
    )
    .expect("resolv.conf");
    let everything: Vec<String> = walk(root.path());
    assert_eq!(
        everything,
        ["app/probe", "etc/resolv.conf", "sidekey/bin/sidekey-agent"],
        "the chroot holds only the agent, the app and resolv.conf"
    );

    let port = w
        .proxy()
        .endpoint()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let mut env = w.agent_env("prod", "api", "");
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "AWS_ENDPOINT_URL" => *v = format!("http://{HOST}:{port}"),
            "PATH" => *v = "/app".to_owned(),
            "SIDEKEY_AUDIT" => *v = "stdout".to_owned(),
            _ => {}
        }
    }
    w.proxy().reset_counts();
    let ran = w.agent_in_chroot(root.path(), &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let stdout = String::from_utf8_lossy(&ran.stdout).into_owned();
    let (audit, app) = stdout
        .split_once('\n')
        .expect("an audit line, then the app");
    let audit: serde_json::Value = serde_json::from_str(audit).expect("audit record");
    assert_eq!(audit["outcome"], "success");
    let probe = Probe::parse(app.as_bytes());
    assert_eq!(probe.pid, ran.pid);
    assert_eq!(
        probe.env.get(b"DB_PASSWORD".as_slice()).map(Vec::as_slice),
        Some(b"chroot-db-password".as_slice())
    );
    assert_eq!(
        probe.env.get(b"API_KEY".as_slice()).map(Vec::as_slice),
        Some(b"chroot-api-key-value".as_slice())
    );
    assert!(
        dns.queries.load(Ordering::Relaxed) >= 1,
        "the name was resolved by our DNS server"
    );
    assert_eq!(w.proxy().count("GetParametersByPath"), 1);
    assert_eq!(w.proxy().count("Decrypt"), 1);
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .expect("inside")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

trait InChroot {
    fn agent_in_chroot(&mut self, root: &Path, env: &[(String, String)]) -> common::Ran;
}

impl InChroot for World {
    fn agent_in_chroot(&mut self, root: &Path, env: &[(String, String)]) -> common::Ran {
        let args = [
            root.as_os_str().to_owned(),
            os("/sidekey/bin/sidekey-agent"),
            os("exec"),
            os("--"),
            os("probe"),
            os("0"),
        ];
        let chroot = [
            "/usr/sbin/chroot",
            "/usr/bin/chroot",
            "/sbin/chroot",
            "/bin/chroot",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("chroot(1) from coreutils");
        let ran = common::spawn(chroot, &args, env);
        self.watch("stderr of the agent in the chroot", &ran.stderr.clone());
        ran
    }
}
