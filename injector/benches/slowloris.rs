//! What callers who hold the injector's resources cost it: the release
//! binary's memory under withheld bodies, and how long an idle connection
//! stays open.
//!
//! ```text
//! cargo bench -p sidekey-injector --bench slowloris
//! ```
//!
//! - The injector is the real binary (release-like `bench` profile) as its
//!   own process with its default limits (`--body-budget 16Mi`,
//!   `--max-connections 256`, `--read-timeout 10s`, `--idle-timeout 20s`),
//!   audit records to /dev/null. No `--client-ca`: the attacker reaches
//!   HTTP (with `--client-ca` it would not get past the handshake).
//! - Withheld bodies: `SIDEKEY_BENCH_CONNECTIONS` (default 30) connections
//!   each send a review's headers with `Content-Length: 3145728` (the
//!   3 MiB body limit) and then 3 MiB minus one byte of body, and hold it.
//!   Once nothing moves any more, VmRSS is read; then each connection that
//!   the server closes (a 503 over the budget, a 408 at the read timeout)
//!   is opened again at once, for `SIDEKEY_BENCH_SECONDS` (default 30),
//!   VmRSS sampled every 100 ms. Run over HTTP/1.1 and over HTTP/2 (one
//!   stream per connection). Printed: VmRSS before, when the first wave
//!   is held, the highest sample, and VmHWM (the peak) at the end; how
//!   many bodies were refused 503, cut 408, and whether a normal review
//!   sent during the attack was answered.
//! - Idle connections: an HTTP/2 connection after one request, an
//!   HTTP/1.1 keep-alive connection after one request, and a TLS
//!   connection that never sends a byte; the time from the last answer
//!   (or the handshake) to the server's close (or "open after 60 s").
//! - `SIDEKEY_BENCH_INJECTOR=PATH` runs another build of the injector
//!   instead (an older release, for a baseline; it gets only `--listen`,
//!   `--tls-cert` and `--tls-key`). `SIDEKEY_INJECTOR_*` and `MIMALLOC_*`
//!   variables are passed on to it (e.g. `SIDEKEY_INJECTOR_BODY_BUDGET=16Mi`).
//!
//! Prints one line per figure and one JSON line (`BENCH_JSON {...}`). Run
//! without `--bench` (e.g. by `cargo test --benches`) it only says how to
//! run it.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: usize = 3 * 1024 * 1024;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("slowloris: run with `cargo bench -p sidekey-injector --bench slowloris`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("slowloris benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

struct Injector {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Injector {
    fn start(cert: &std::path::Path, key: &std::path::Path) -> Result<Injector, String> {
        let bin = std::env::var_os("SIDEKEY_BENCH_INJECTOR")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_sidekey-injector").into());
        let mut child =
            Command::new(bin)
                .args(["--listen", "127.0.0.1:0", "--tls-cert"])
                .arg(cert)
                .arg("--tls-key")
                .arg(key)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("SIDEKEY_LOG", "warn,sidekey_injector::server=info")
                .env("SIDEKEY_AUDIT", "file:/dev/null")
                .env("POD_NAMESPACE", "sidekey")
                // Settings to try (e.g. SIDEKEY_INJECTOR_BODY_BUDGET) and the
                // allocator's options pass through.
                .envs(std::env::vars().filter(|(k, _)| {
                    k.starts_with("SIDEKEY_INJECTOR_") || k.starts_with("MIMALLOC_")
                }))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting the injector: {e}"))?;
        let addr = read_listen_addr(&mut child)?;
        Ok(Injector { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Counts {
    refused_503: AtomicU64,
    cut_408: AtomicU64,
    other: AtomicU64,
    /// Body bytes sent, all connections (progress).
    sent: AtomicU64,
}

async fn run() -> Result<(), String> {
    let connections = env_or("SIDEKEY_BENCH_CONNECTIONS", 30);
    let seconds = env_or("SIDEKEY_BENCH_SECONDS", 30);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (ca, _, cert, key) = common::write_certs(dir.path());
    let ca = Arc::new(ca);
    let mut json = serde_json::Map::new();
    println!("slowloris: {connections} connections x 3 MiB - 1 byte withheld, {seconds} s each way; default limits");

    for alpn in [common::Alpn::Http11, common::Alpn::H2] {
        let label = if alpn == common::Alpn::H2 {
            "h2"
        } else {
            "http1"
        };
        let injector = Injector::start(&cert, &key)?;
        let pid = injector.pid();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = vm_kb(pid, "VmRSS:").unwrap_or(0);

        let counts = Arc::new(Counts::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (ca, counts, stop) = (ca.clone(), counts.clone(), stop.clone());
            let addr = injector.addr;
            tasks.push(tokio::spawn(async move {
                loop {
                    let attack = hold_one(addr, &ca, alpn, &counts);
                    tokio::select! {
                        () = attack => {}
                        () = stop.notified() => return,
                    }
                    if Instant::now() > deadline {
                        return;
                    }
                }
            }));
        }
        // The first wave: until no body byte has moved for 1 s.
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = counts.sent.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        let held = vm_kb(pid, "VmRSS:").unwrap_or(0);
        // A normal review in the middle of it.
        let normal = normal_review(injector.addr, &ca).await;
        // The persistent attack.
        let mut highest = held;
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            highest = highest.max(vm_kb(pid, "VmRSS:").unwrap_or(0));
        }
        let peak = vm_kb(pid, "VmHWM:").unwrap_or(0);
        stop.notify_waiters();
        for t in tasks {
            t.abort();
        }
        let r503 = counts.refused_503.load(Ordering::Relaxed);
        let r408 = counts.cut_408.load(Ordering::Relaxed);
        let other = counts.other.load(Ordering::Relaxed);
        println!(
            "{label}: VmRSS before {:.1} MiB, first wave held {:.1} MiB, highest {:.1} MiB; VmHWM {:.1} MiB; \
             bodies refused 503: {r503}, cut 408: {r408}, closed before an answer was read: {other}; a normal review during the attack: {normal}",
            mb(before),
            mb(held),
            mb(highest),
            mb(peak)
        );
        json.insert(
            label.to_owned(),
            serde_json::json!({
                "rss_before_kb": before, "rss_held_kb": held, "rss_highest_kb": highest,
                "hwm_kb": peak, "refused_503": r503, "cut_408": r408, "other": other,
                "normal_review": normal,
            }),
        );
    }

    // Idle connections, default timeouts.
    let injector = Injector::start(&cert, &key)?;
    let (h2, h1, silent) = tokio::join!(
        idle_h2(injector.addr, &ca),
        idle_h1(injector.addr, &ca),
        idle_silent(injector.addr, &ca)
    );
    let (h2, h1, silent) = (h2?, h1?, silent?);
    let show = |d: Option<Duration>| match d {
        Some(d) => format!("closed in {:.1} s", d.as_secs_f64()),
        None => format!("open after {} s", IDLE_WAIT.as_secs()),
    };
    println!(
        "idle: HTTP/2 after a request {}; HTTP/1.1 keep-alive {}; TLS without a byte {}",
        show(h2),
        show(h1),
        show(silent)
    );
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    json.insert(
        "idle_close_s".to_owned(),
        serde_json::json!({"h2": secs(h2), "http1": secs(h1), "tls_silent": secs(silent)}),
    );
    println!("BENCH_JSON {}", serde_json::Value::Object(json));
    Ok(())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// One connection: a 3 MiB review announced, all but one byte sent, held
/// until the server ends it.
async fn hold_one(addr: SocketAddr, ca: &common::Ca, alpn: common::Alpn, counts: &Counts) {
    let Ok(tls) = common::tls_connect(addr, &[&ca.der], alpn, None).await else {
        counts.other.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    let status = if alpn == common::Alpn::H2 {
        hold_h2(tls, counts).await
    } else {
        hold_h1(tls, counts).await
    };
    match status {
        Some(503) => counts.refused_503.fetch_add(1, Ordering::Relaxed),
        Some(408) => counts.cut_408.fetch_add(1, Ordering::Relaxed),
        _ => counts.other.fetch_add(1, Ordering::Relaxed),
    };
}

async fn hold_h1(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    counts: &Counts,
) -> Option<u16> {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = async {
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await.ok()?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = BODY - 1;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await.ok()?;
            counts.sent.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
        }
        wr.flush().await.ok()?;
        std::future::pending::<Option<()>>().await
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.len() >= 12 {
                break;
            }
        }
        std::str::from_utf8(got.get(9..12)?).ok()?.parse().ok()
    };
    tokio::select! {
        status = reader => status,
        _ = writer => None,
    }
}

/// A body of 3 MiB - 1 byte that then never ends.
struct Withheld {
    left: usize,
    counts_sent: Arc<AtomicU64>,
}

impl hyper::body::Body for Withheld {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Pending;
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        self.counts_sent.fetch_add(n as u64, Ordering::Relaxed);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![
            b' ';
            n
        ])))))
    }
}

async fn hold_h2(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    counts: &Counts,
) -> Option<u16> {
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .ok()?;
    let conn = tokio::spawn(conn);
    let sent = Arc::new(AtomicU64::new(0));
    let req = hyper::Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .header("content-length", BODY.to_string())
        .body(Withheld {
            left: BODY - 1,
            counts_sent: sent.clone(),
        })
        .ok()?;
    let progress = async {
        let mut seen = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sent.load(Ordering::Relaxed);
            counts.sent.fetch_add(now - seen, Ordering::Relaxed);
            seen = now;
        }
    };
    let status = tokio::select! {
        r = sender.send_request(req) => r.ok().map(|r| r.status().as_u16()),
        () = progress => None,
    };
    conn.abort();
    status
}

async fn normal_review(addr: SocketAddr, ca: &common::Ca) -> String {
    let body = serde_json::to_vec(&common::injectable("normal")).unwrap();
    match common::Client::connect(addr, &[&ca.der], common::Alpn::H2).await {
        Ok(mut c) => match c.send("POST", "/mutate", body).await {
            Ok(a) => format!("HTTP {}", a.status.as_u16()),
            Err(e) => format!("failed ({e})"),
        },
        Err(e) => format!("no connection ({e})"),
    }
}

/// Longest wait for an idle connection to be closed.
const IDLE_WAIT: Duration = Duration::from_secs(60);

async fn idle_h2(addr: SocketAddr, ca: &common::Ca) -> Result<Option<Duration>, String> {
    let tls = common::tls_connect(addr, &[&ca.der], common::Alpn::H2, None).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.map_err(|e| e.to_string())?;
    let since = Instant::now();
    match tokio::time::timeout(IDLE_WAIT, conn).await {
        Err(_) => Ok(None),
        Ok(r) => {
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            Ok(Some(since.elapsed()))
        }
    }
}

async fn idle_h1(addr: SocketAddr, ca: &common::Ca) -> Result<Option<Duration>, String> {
    let mut tls = common::tls_connect(addr, &[&ca.der], common::Alpn::Http11, None).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("no answer".to_owned());
    }
    let since = Instant::now();
    closed_within(&mut tls, since).await
}

async fn idle_silent(addr: SocketAddr, ca: &common::Ca) -> Result<Option<Duration>, String> {
    let mut tls = common::tls_connect(addr, &[&ca.der], common::Alpn::H2, None).await?;
    let since = Instant::now();
    closed_within(&mut tls, since).await
}

async fn closed_within(
    stream: &mut (impl AsyncReadExt + Unpin),
    since: Instant,
) -> Result<Option<Duration>, String> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::from_std(since + IDLE_WAIT);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Some(since.elapsed())),
            Ok(Ok(_)) => {}
        }
    }
}

fn read_listen_addr(child: &mut std::process::Child) -> Result<SocketAddr, String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.split("addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            let addr = addr
                .parse()
                .map_err(|_| format!("bad address in {line:?}"))?;
            // Keep draining stderr so the injector never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
    }
    Err("the injector exited before listening".to_owned())
}

/// A `Vm*` line of /proc/PID/status, in kB.
fn vm_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
