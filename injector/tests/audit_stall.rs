//! The real `sidekey-injector` binary with its audit output (stdout) a pipe
//! that nobody reads: once the pipe is full, the audit writer thread stalls.
//! The probes keep answering (plain and over TLS), reviews fail cleanly with
//! 503 (their record not written in time, or the audit queue full) instead
//! of hanging the runtime, and once the test drains the pipe every queued
//! record is written, reviews are answered again, and the whole stream is
//! one unbroken hash chain.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A guard against hangs (a hang is the failure this test looks for).
const HANG: Duration = Duration::from_secs(60);
/// Records that may wait for the stalled writer.
const QUEUE: usize = 4;

const TIMED_OUT: &str = "not written within the request timeout";
const FULL: &str = "the audit log is not keeping up: 4 records are waiting to be written";

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => into.lock().unwrap().extend_from_slice(&line),
            }
        }
    })
}

fn text(bytes: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.lock().unwrap()).into_owned()
}

/// Waits until `bytes` holds a line containing each of `needles`.
fn wait_for_all(bytes: &Mutex<Vec<u8>>, needles: &[String], what: &str) -> String {
    let deadline = Instant::now() + HANG;
    loop {
        let t = text(bytes);
        if needles.iter().all(|n| t.contains(n.as_str())) {
            return t;
        }
        assert!(Instant::now() < deadline, "no {what} within {HANG:?}:\n{t}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on the plain probes listener; the whole answer.
async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let get = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(HANG, get)
        .await
        .unwrap_or_else(|_| panic!("GET {path} hung while the audit output was stalled"))
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_pipe_fails_reviews_cleanly_keeps_probes_up_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidekey-injector"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--read-timeout", "2s", "--audit-queue", &QUEUE.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SIDEKEY_LOG", "info")
        .env("POD_NAMESPACE", "sidekey")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sidekey-injector");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    // Not read until the test drains it.
    let stdout = child.stdout.take().unwrap();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr_reader = collect(child.stderr.take().unwrap(), stderr.clone());
    let mut child = Kill(child);
    let started = tokio::task::block_in_place(|| {
        wait_for_all(
            &stderr,
            &["addr=".to_owned(), "probes_addr=".to_owned()],
            "listening lines",
        )
    });
    let after = |key: &str| -> SocketAddr {
        started
            .split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let addr = after(" addr=");
    let probes = after("probes_addr=");

    // Fill the pipe: reviews one after another until one is not answered
    // with its patch.
    let mut client = Client::connect(addr, &[&ca.der], Alpn::H2).await.unwrap();
    let mut answered = Vec::new();
    let mut timed_out = Vec::new();
    for i in 0..10_000 {
        let uid = format!("fill-{i:05}");
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&injectable(&uid)).unwrap(),
            )
            .await
            .unwrap();
        if a.status == StatusCode::OK {
            assert!(a.response()["patch"].is_string(), "{}", a.text());
            answered.push(uid);
            continue;
        }
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
        assert!(a.text().contains(TIMED_OUT), "{}", a.text());
        timed_out.push(uid);
        break;
    }
    assert_eq!(timed_out.len(), 1, "the pipe never filled");
    assert!(!answered.is_empty());

    // The writer is stuck in its write: a burst of reviews fills the queue,
    // and the rest are refused at once.
    let mut burst = Vec::new();
    for j in 0..(3 * QUEUE) {
        let uid = format!("burst-{j:02}");
        let mut sender = client.h2().unwrap();
        let body = serde_json::to_vec(&injectable(&uid)).unwrap();
        burst.push((
            uid,
            tokio::spawn(async move {
                let req = hyper::Request::post("https://localhost/mutate")
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }),
        ));
    }
    // Meanwhile the probes answer: plain, and over a new TLS connection.
    let health = plain_get(probes, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = plain_get(probes, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let tls_health = tokio::time::timeout(HANG, async {
        let mut c = Client::connect(addr, &[&ca.der], Alpn::Http11)
            .await
            .unwrap();
        c.send("GET", "/healthz", Vec::new()).await.unwrap()
    })
    .await
    .expect("/healthz over TLS hung while the audit output was stalled");
    assert_eq!(tls_health.status, StatusCode::OK);

    let mut full = Vec::new();
    for (uid, task) in burst {
        let (status, body) = tokio::time::timeout(HANG, task)
            .await
            .expect("a review hung while the audit output was stalled")
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uid}: {body}");
        if body.contains(FULL) {
            full.push(uid);
        } else {
            assert!(body.contains(TIMED_OUT), "{uid}: {body}");
            timed_out.push(uid);
        }
    }
    // At most QUEUE records wait; the others were refused.
    assert!(timed_out.len() <= 1 + QUEUE, "{timed_out:?}");
    assert!(full.len() >= 2 * QUEUE, "{full:?}");
    let metrics = plain_get(probes, "/metrics").await;
    assert_eq!(
        metric(&metrics, "sidekey_injector_audit_queue_full_total"),
        full.len() as u64
    );
    assert_eq!(
        metric(&metrics, "sidekey_injector_audit_timeouts_total"),
        timed_out.len() as u64
    );
    assert_eq!(metric(&metrics, "sidekey_injector_audit_failures_total"), 0);
    let health = plain_get(probes, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // Drain the pipe: the records that waited are written, then reviews
    // are answered again.
    let audit = Arc::new(Mutex::new(Vec::new()));
    let audit_reader = collect(stdout, audit.clone());
    let quoted: Vec<String> = timed_out.iter().map(|u| format!("\"{u}\"")).collect();
    tokio::task::block_in_place(|| {
        wait_for_all(&audit, &quoted, "records of the timed-out reviews")
    });
    for k in 0..3 {
        let uid = format!("after-{k}");
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&injectable(&uid)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert!(a.response()["patch"].is_string(), "{}", a.text());
        answered.push(uid);
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s.code();
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    audit_reader.join().unwrap();
    stderr_reader.join().unwrap();
    let log = text(&stderr);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("review refused: the audit log is stalled"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // One unbroken chain: every answered and every timed-out review has
    // exactly one record, the refused ones none.
    let all = audit.lock().unwrap().clone();
    let summary = sidekey_audit::verify(&all[..]).expect("the audit chain is broken");
    assert_eq!(summary.records as usize, answered.len() + timed_out.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8(all).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen
            .entry(v["uid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for uid in answered.iter().chain(&timed_out) {
        assert_eq!(seen.get(uid), Some(&1), "{uid}");
    }
    for uid in &full {
        assert_eq!(seen.get(uid), None, "{uid} was refused but has a record");
    }
}

/// The audit sink on a pipe that a slow reader drains a page at a time:
/// reviews write their lines at once while the pipe takes them, a full
/// pipe (often in the middle of a batch of several lines, and of a line)
/// hands the rest to the writer thread, and writes come back to the
/// reviews once it has drained. Every accepted record arrives whole, once,
/// in one unbroken chain, each submitter's records in its order.
#[test]
fn records_stay_whole_and_in_order_when_the_pipe_fills_mid_batch() {
    use sidekey_injector::{AuditSink, SubmitError};
    use std::io::Read as _;

    const THREADS: usize = 4;
    const EACH: usize = 150;
    let (mut reader, writer) = std::io::pipe().unwrap();
    let sink = Arc::new(AuditSink::descriptor(writer.into(), 16));
    assert!(sink.writes_directly());
    // Reads a page, then rests: the pipe keeps filling up and draining.
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut page = [0u8; 4096];
        loop {
            match reader.read(&mut page) {
                Ok(0) => break all,
                Ok(n) => all.extend_from_slice(&page[..n]),
                Err(e) => panic!("reading the pipe: {e}"),
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let (mut at_once, mut later, mut refused) = (0, 0, 0);
                let mut pending = Vec::new();
                for i in 0..EACH {
                    let mut e = sidekey_audit::Event::new("review");
                    e.pod = Some(format!("pod-{t}-{i:03}"));
                    // 1 to 6 KB: batches and lines longer than a page.
                    e.extra
                        .insert("pad".to_owned(), "x".repeat(1000 + 997 * (i % 6)).into());
                    let p = loop {
                        match sink.submit(&e) {
                            Ok(p) => break p,
                            Err(SubmitError::Full { .. }) => {
                                refused += 1;
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    if p.is_done() {
                        at_once += 1;
                    } else {
                        later += 1;
                    }
                    pending.push(p);
                    if i % 10 == 9 {
                        for p in pending.drain(..) {
                            p.wait().unwrap();
                        }
                    }
                }
                for p in pending {
                    p.wait().unwrap();
                }
                (at_once, later, refused)
            })
        })
        .collect();
    let mut counts = (0, 0, 0);
    for s in submitters {
        let (a, l, r) = s.join().unwrap();
        counts = (counts.0 + a, counts.1 + l, counts.2 + r);
    }
    // Both ways were taken: written by the submitting review, and by
    // another's write or the writer thread after a full pipe.
    assert_eq!(counts.0 + counts.1, THREADS * EACH);
    assert!(counts.0 > 0 && counts.1 > 0, "{counts:?}");
    drop(sink);
    let all = drain.join().unwrap();
    let summary = sidekey_audit::verify(&all[..]).expect("the audit chain is broken");
    assert_eq!(summary.records as usize, THREADS * EACH);
    let mut next = [0usize; THREADS];
    for line in String::from_utf8(all).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let pod = v["pod"].as_str().unwrap();
        let (t, i) = pod
            .strip_prefix("pod-")
            .and_then(|r| r.split_once('-'))
            .unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "{pod} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [EACH; THREADS]);
    eprintln!(
        "{} records: {} written by their own review, {} by another's write or the writer thread, {} submits refused while the pipe was full",
        THREADS * EACH,
        counts.0,
        counts.1,
        counts.2
    );
}
