//! The real `sidekey-injector` binary as a process: graceful shutdown with
//! reviews in flight, no secret in its output at trace level, readiness,
//! and bad configuration.

mod common;

use std::time::Duration;

use common::*;
use hyper::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A request body the test feeds by hand: the review stays in flight (its
/// headers read, its body not yet whole) until the test sends the rest.
struct Fed(tokio::sync::mpsc::Receiver<bytes::Bytes>, u64);

impl hyper::body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.1)
    }
}

/// Sends `body` as a review on `sender`'s connection: the first half at
/// once; the rest once `rest` fires. The answer's status and body.
async fn fed_review<F>(
    send: F,
    body: Vec<u8>,
    rest: tokio::sync::watch::Receiver<bool>,
) -> Result<(StatusCode, bytes::Bytes), String>
where
    F: FnOnce(
        hyper::Request<Fed>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>
                + Send,
        >,
    >,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let half = body.len() / 2;
    let req = hyper::Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Fed(rx, body.len() as u64))
        .unwrap();
    let body = bytes::Bytes::from(body);
    tx.send(body.slice(..half))
        .await
        .map_err(|e| e.to_string())?;
    let feeder = tokio::spawn(async move {
        let mut rest = rest;
        let _ = rest.wait_for(|go| *go).await;
        let _ = tx.send(body.slice(half..)).await;
    });
    let resp = send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let answer = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    feeder.await.map_err(|e| e.to_string())?;
    Ok((status, answer))
}

/// The value of an unlabelled metric on the plain listener.
async fn metric(probes: std::net::SocketAddr, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(probes).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_reviews_are_in_flight_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let mut process = Process::start(
        &cert,
        &key,
        &["--metrics-listen", "127.0.0.1:0", "--read-timeout", "60s"],
        &[("SIDEKEY_LOG", "info,sidekey_injector=trace")],
    );
    let addr = process.addr;
    let line = tokio::task::block_in_place(|| process.wait_for_stderr("probes_addr=", WAIT));
    let probes: std::net::SocketAddr = line
        .split("probes_addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();

    // 4 HTTP/1.1 connections with one review each, and one HTTP/2
    // connection with 4 concurrent streams; every body half sent.
    let (go, rest) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut reserved = 0u64;
    for i in 0..4 {
        let tls = tls_connect(addr, &[&ca.der], Alpn::Http11, None)
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let body = serde_json::to_vec(&injectable(&format!("h1-{i}"))).unwrap();
        reserved += body.len() as u64;
        let rest = rest.clone();
        tasks.push(tokio::spawn(async move {
            fed_review(
                move |req| Box::pin(async move { sender.send_request(req).await }),
                body,
                rest,
            )
            .await
        }));
    }
    let tls = tls_connect(addr, &[&ca.der], Alpn::H2, None).await.unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for i in 0..4 {
        let mut sender = h2.clone();
        let body = serde_json::to_vec(&injectable(&format!("h2-{i}"))).unwrap();
        reserved += body.len() as u64;
        let rest = rest.clone();
        tasks.push(tokio::spawn(async move {
            fed_review(
                move |req| Box::pin(async move { sender.send_request(req).await }),
                body,
                rest,
            )
            .await
        }));
    }

    // All 8 requests have arrived (their bodies are reserved from the
    // budget when their headers are read) and none is whole: in flight.
    let deadline = std::time::Instant::now() + WAIT;
    while metric(probes, "sidekey_injector_body_bytes_reserved").await != reserved {
        assert!(
            std::time::Instant::now() < deadline,
            "the 8 reviews never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!process.stderr_text().contains("review received"));
    process.terminate();
    tokio::task::block_in_place(|| process.wait_for_stderr("shutting down", WAIT));

    // The listener is closed: a new connection is refused.
    assert!(
        Client::connect(addr, &[&ca.der], Alpn::H2).await.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    // The rest of every body: each review is answered in full.
    go.send_replace(true);
    for task in tasks {
        let (status, body) = task.await.unwrap().expect("an in-flight review was lost");
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"]["patch"].is_string());
    }
    let (code, stdout, stderr) = tokio::task::block_in_place(|| process.wait(WAIT));
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    // One audit record per review, on stdout.
    let audit = String::from_utf8_lossy(&stdout);
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"event\":\"review\""))
            .count(),
        8,
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trace_logs_a_pod_env_marker_never_reaches_output_or_audit() {
    const MARKER: &str = "sk-MARKER-7f3a9c1e5b";
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let audit_file = dir.path().join("audit.log");
    let audit_target = format!("file:{}", audit_file.display());
    let mut outputs = Vec::new();
    for audit in ["stdout", audit_target.as_str()] {
        let process = Process::start(
            &cert,
            &key,
            &[],
            &[("SIDEKEY_LOG", "trace"), ("SIDEKEY_AUDIT", audit)],
        );
        let mut client = Client::connect(process.addr, &[&ca.der], Alpn::H2)
            .await
            .unwrap();
        let with_marker = |annotations: serde_json::Value| {
            let mut p = pod(annotations);
            p["spec"]["containers"][0]["env"] = json!([
                {"name": "DB_PASSWORD", "value": MARKER},
                {"name": "LOG_LEVEL", "value": "info"}
            ]);
            p
        };
        // Injected.
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&review(
                    "m1",
                    "team-a",
                    "CREATE",
                    with_marker(opted_in("api")),
                ))
                .unwrap(),
            )
            .await
            .unwrap();
        assert!(a.response()["patch"].is_string());
        // Denied.
        let denied =
            with_marker(json!({"sidekey.io/inject": "true", "sidekey.io/services": "../prod"}));
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&review("m2", "team-a", "CREATE", denied)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(a.response()["allowed"], false);
        // Invalid: the marker where a number belongs (serde would quote it).
        let mut bad = with_marker(opted_in("api"));
        bad["spec"]["securityContext"]["runAsUser"] = json!(MARKER);
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&review("m3", "team-a", "CREATE", bad)).unwrap(),
            )
            .await
            .unwrap();
        let r = a.response();
        assert_eq!(r["allowed"], false);
        assert!(!a.text().contains(MARKER), "the answer quotes the value");
        // Not JSON, with the marker inside.
        let a = client
            .send(
                "POST",
                "/mutate",
                format!("{{\"kind\": \"{MARKER}\" oops").into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(!a.text().contains(MARKER));
        // Skipped: not opted in.
        let a = client
            .send(
                "POST",
                "/mutate",
                serde_json::to_vec(&review("m5", "team-a", "CREATE", with_marker(json!({}))))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(a.response()["allowed"], true);

        process.terminate();
        let (code, stdout, stderr) = tokio::task::block_in_place(|| process.wait(WAIT));
        assert_eq!(code, 0);
        outputs.push((audit.to_owned(), stdout, stderr));
    }
    let file = std::fs::read(&audit_file).unwrap();
    for (audit, stdout, stderr) in &outputs {
        sidekey_test_support::assert_no_secret(
            &format!("stdout ({audit})"),
            stdout,
            &[MARKER.as_bytes()],
        );
        sidekey_test_support::assert_no_secret(
            &format!("stderr ({audit})"),
            stderr,
            &[MARKER.as_bytes()],
        );
        // Trace logging was really on.
        assert!(
            String::from_utf8_lossy(stderr).contains("TRACE"),
            "no trace lines"
        );
    }
    sidekey_test_support::assert_no_secret("audit file", &file, &[MARKER.as_bytes()]);
    // The audit records are there: 4 decisions (m1, m2, m3, m5) each way.
    let count = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| l.contains("\"event\":\"review\""))
            .count()
    };
    assert_eq!(count(&outputs[0].1), 4);
    assert_eq!(count(&file), 4);
    sidekey_audit::verify_file(&audit_file).expect("the audit file's chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_a_certificate_and_becomes_ready_when_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let mut process = Process::start(&cert, &key, &["--reload-interval", "100ms"], &[]);
    tokio::task::block_in_place(|| process.wait_for_stderr("no serving certificate yet", WAIT));
    let ca = Ca::new("late CA");
    let leaf = ca.leaf(5);
    leaf.install(&cert, &key);
    tokio::task::block_in_place(|| process.wait_for_stderr("serving certificate reloaded", WAIT));
    let mut client = Client::connect(process.addr, &[&ca.der], Alpn::Http11)
        .await
        .unwrap();
    assert_eq!(client.peer, leaf.der);
    let a = client.send("GET", "/readyz", Vec::new()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    process.terminate();
    let (code, _, _) = tokio::task::block_in_place(|| process.wait(WAIT));
    assert_eq!(code, 0);
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, cert, key) = write_certs(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "prefix: sidekey\nnoSuchField: 1\n").unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidekey-injector"));
    let cert = cert.to_str().unwrap();
    let key = key.to_str().unwrap();
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];

    let mut args = base.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    let out = sidekey_test_support::run(bin, &args, &[], b"").unwrap();
    assert_eq!(out.status, 64, "{}", out.stderr_str());
    let stderr = out.stderr_str();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("config.yaml"), "{stderr}");

    let missing = dir.path().join("missing.yaml");
    let mut args = base.to_vec();
    args.extend(["--config", missing.to_str().unwrap()]);
    let out = sidekey_test_support::run(bin, &args, &[], b"").unwrap();
    assert_eq!(out.status, 64);
    assert!(out.stderr_str().contains("missing.yaml"));

    let out = sidekey_test_support::run(
        bin,
        &base,
        &[("SIDEKEY_AUDIT".into(), "syslog".into())],
        b"",
    )
    .unwrap();
    assert_eq!(out.status, 64);
    assert!(
        out.stderr_str().contains("SIDEKEY_AUDIT"),
        "{}",
        out.stderr_str()
    );

    let mut args = base.to_vec();
    args.extend(["--agent-image", "bad image"]);
    let out = sidekey_test_support::run(bin, &args, &[], b"").unwrap();
    assert_eq!(out.status, 64, "{}", out.stderr_str());

    let out = sidekey_test_support::run(bin, &["--tls-cert", cert], &[], b"").unwrap();
    assert_eq!(out.status, 64, "a usage error: {}", out.stderr_str());

    // The same options from the environment.
    let env = [
        (
            "SIDEKEY_INJECTOR_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("SIDEKEY_INJECTOR_TLS_CERT".to_owned(), cert.to_owned()),
        ("SIDEKEY_INJECTOR_TLS_KEY".to_owned(), key.to_owned()),
        (
            "SIDEKEY_INJECTOR_CONFIG".to_owned(),
            config.to_str().unwrap().to_owned(),
        ),
    ];
    let out = sidekey_test_support::run(bin, &[], &env, b"").unwrap();
    assert_eq!(out.status, 64, "{}", out.stderr_str());
    assert!(out.stderr_str().contains("config.yaml"));
}
