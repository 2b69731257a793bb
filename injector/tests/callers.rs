//! What a caller who reaches the port can do, tried as an attacker would,
//! over real TLS: without a client certificate from `--client-ca` nothing
//! is read or audited; memory stays bounded (connection cap, body budget,
//! read, header and idle timeouts). The limits are tried against the real
//! binary; the client CA both in-process (reload) and as a process.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hyper::StatusCode;
use sidekey_injector::{serve, CertStore, Injector, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Longest wait for something the server must do (a guard against a hung
/// test, never an assertion about time).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- in-process

struct Server {
    addr: SocketAddr,
    injector: Injector,
    ca: Ca,
    client_ca: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sidekey_injector::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server that requires client certificates from `client_ca` (PEM),
    /// the files polled every 50 ms.
    async fn start(client_ca_pem: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, cert, key) = write_certs(dir.path());
        let client_ca = dir.path().join("client-ca.crt");
        std::fs::write(&client_ca, client_ca_pem).unwrap();
        let certs = CertStore::with_client_ca(&cert, &key, Some(client_ca.clone()));
        certs.reload().unwrap();
        let injector = Injector::new(
            sidekey_patch::Config::default_for(Some("sidekey")),
            sidekey_injector::AuditSink::memory(),
            Some(certs.clone()),
            sidekey_injector::Limits::default(),
        );
        let m = injector.clone();
        tokio::spawn(certs.clone().watch(Duration::from_millis(50), move |ok| {
            m.metrics().certificate_reload(ok)
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            injector.clone(),
            certs,
            ServeLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            injector,
            ca,
            client_ca,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Connects presenting `identity` and posts one review.
    async fn review_as(
        &self,
        identity: Option<&Leaf>,
        alpn: Alpn,
        uid: &str,
    ) -> Result<Answer, String> {
        let mut client = Client::connect_as(self.addr, &[&self.ca.der], alpn, identity).await?;
        let body = serde_json::to_vec(&injectable(uid)).unwrap();
        client.send("POST", "/mutate", body).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_from_the_ca_nothing_is_read_or_audited() {
    let apiserver_ca = Ca::new("API server client CA");
    let server = Server::start(&apiserver_ca.pem).await;
    let good = apiserver_ca.client("kube-apiserver");
    let other_ca = Ca::new("an attacker's CA");
    let forged = other_ca.client("kube-apiserver");
    // A certificate from the right CA but for serving, not for a client.
    let serving = apiserver_ca.leaf(77);

    for alpn in [Alpn::H2, Alpn::Http11] {
        for (what, identity) in [
            ("no certificate", None),
            ("a certificate from another CA", Some(&forged)),
            ("a serving (not client) certificate", Some(&serving)),
        ] {
            let err = server
                .review_as(identity, alpn, "forged")
                .await
                .expect_err(what);
            assert!(!err.is_empty(), "{what}");
        }
    }
    assert!(
        server.injector.audit().lines().is_empty(),
        "a refused caller was audited: {:?}",
        server.injector.audit().lines()
    );
    assert_eq!(
        server
            .injector
            .metrics()
            .reviews(sidekey_injector::ReviewOutcome::Injected),
        0
    );
    // The server counts each refusal once its side of the handshake ends.
    let deadline = Instant::now() + WAIT;
    while server.injector.metrics().handshake_failures() < 6 {
        assert!(
            Instant::now() < deadline,
            "the refused handshakes were not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (i, alpn) in [Alpn::H2, Alpn::Http11].into_iter().enumerate() {
        let a = server
            .review_as(Some(&good), alpn, &format!("real-{i}"))
            .await
            .unwrap();
        assert_eq!(a.response()["allowed"], true);
    }
    assert_eq!(audit_records(&server.injector).len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_ca_on_disk_applies_to_the_next_handshake() {
    let first = Ca::new("first client CA");
    let server = Server::start(&first.pem).await;
    let old = first.client("kube-apiserver");
    server
        .review_as(Some(&old), Alpn::H2, "before")
        .await
        .unwrap();

    let second = Ca::new("second client CA");
    let new = second.client("kube-apiserver");
    let tmp = server.client_ca.with_file_name(".ca.new");
    std::fs::write(&tmp, &second.pem).unwrap();
    std::fs::rename(&tmp, &server.client_ca).unwrap();
    let deadline = Instant::now() + WAIT;
    while server
        .review_as(Some(&new), Alpn::H2, "after")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the new client CA never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The old CA no longer lets anyone in.
    assert!(server.review_as(Some(&old), Alpn::H2, "old").await.is_err());
    assert!(server
        .review_as(Some(&old), Alpn::Http11, "old")
        .await
        .is_err());

    // A broken bundle keeps the current one.
    std::fs::write(&server.client_ca, "not a certificate").unwrap();
    let deadline = Instant::now() + WAIT;
    while !server
        .injector
        .metrics()
        .render()
        .contains("sidekey_injector_certificate_reloads_total{result=\"failure\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "the broken bundle was never tried"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server
        .review_as(Some(&new), Alpn::Http11, "kept")
        .await
        .unwrap();
    assert!(server.review_as(Some(&old), Alpn::H2, "old").await.is_err());
    server.stop().await;
}

// ---------------------------------------------------------------- the binary

/// Reads from `stream` until the server closes it; returns what came.
/// Panics if it is still open after [`WAIT`].
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server never closed the connection; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

async fn metrics_of(addr: SocketAddr, ca: &Ca, identity: Option<&Leaf>) -> String {
    let mut c = Client::connect_as(addr, &[&ca.der], Alpn::Http11, identity)
        .await
        .unwrap();
    c.send("GET", "/metrics", Vec::new()).await.unwrap().text()
}

/// Polls /metrics until `name` reads `want`.
async fn wait_metric(addr: SocketAddr, ca: &Ca, name: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics_of(addr, ca, None).await;
        if metric(&text, name) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_client_ca_refuses_callers_without_a_certificate_and_audits_none() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let apiserver_ca = Ca::new("API server client CA");
    let bundle = write_pem(dir.path(), "client-ca.crt", &apiserver_ca.pem);
    let mut process = Process::start(
        &cert,
        &key,
        &["--client-ca", &bundle, "--metrics-listen", "127.0.0.1:0"],
        &[],
    );
    assert!(process
        .stderr_text()
        .contains("client certificates required"));
    assert!(!process.stderr_text().contains("no --client-ca"));

    // Probes and metrics without a certificate, over plain HTTP; /mutate is
    // not served there.
    let line = tokio::task::block_in_place(|| process.wait_for_stderr("probes_addr=", WAIT));
    let plain: SocketAddr = line
        .split("probes_addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let get = |request: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&read_until_closed(&mut tcp).await).into_owned()
    };
    let ready = get("GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into()).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = get("GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into()).await;
    assert!(
        metrics.contains("sidekey_injector_reviews_total"),
        "{metrics}"
    );
    let body = serde_json::to_string(&review(
        "plain-uid",
        "team-a",
        "CREATE",
        pod(opted_in("api")),
    ))
    .unwrap();
    let mutate = get(format!(
        "POST /mutate HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(mutate.starts_with("HTTP/1.1 404"), "{mutate}");

    let forged = review("forged-uid", "team-a", "CREATE", pod(opted_in("api")));
    for alpn in [Alpn::H2, Alpn::Http11] {
        let attempt = async {
            let mut c = Client::connect_as(process.addr, &[&ca.der], alpn, None).await?;
            c.send("POST", "/mutate", serde_json::to_vec(&forged).unwrap())
                .await
        };
        assert!(
            attempt.await.is_err(),
            "answered without a client certificate"
        );
    }
    let good = apiserver_ca.client("kube-apiserver");
    let mut c = Client::connect_as(process.addr, &[&ca.der], Alpn::H2, Some(&good))
        .await
        .unwrap();
    let a = c
        .send(
            "POST",
            "/mutate",
            serde_json::to_vec(&review(
                "real-uid",
                "team-a",
                "CREATE",
                pod(opted_in("api")),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(a.response()["allowed"], true);
    let metrics = c.send("GET", "/metrics", Vec::new()).await.unwrap().text();
    assert!(
        metric(
            &metrics,
            "sidekey_injector_tls_handshake_failures_total{reason=\"error\"}"
        ) >= 2,
        "{metrics}"
    );
    process.terminate();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| process.wait(WAIT));
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
    let audit = String::from_utf8_lossy(&stdout);
    assert!(
        !audit.contains("forged-uid") && !audit.contains("plain-uid"),
        "{audit}"
    );
    assert_eq!(audit.matches("real-uid").count(), 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_ca_the_binary_warns_that_anyone_can_submit_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &[], &[]);
    let stderr = process.stderr_text();
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains("no --client-ca: any caller that reaches the port can submit reviews"),
        "{stderr}"
    );
}

#[test]
fn a_bad_client_ca_or_limit_exits_64_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (_, leaf, cert, key) = write_certs(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_sidekey-injector"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let empty = write_pem(dir.path(), "empty.pem", "");
    let not_pem = write_pem(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnope\n",
    );
    let key_only = write_pem(dir.path(), "key.pem", &leaf.key_pem);
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
    for file in [&empty, &not_pem, &key_only, &missing] {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--client-ca",
            file,
        ];
        let out = sidekey_test_support::run(bin, &args, &[], b"").unwrap();
        let stderr = out.stderr_str();
        assert_eq!(out.status, 64, "{file}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("--client-ca") && stderr.contains(file.as_str()),
            "{stderr}"
        );
    }
    // The same from the environment.
    let env = [
        (
            "SIDEKEY_INJECTOR_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("SIDEKEY_INJECTOR_TLS_CERT".to_owned(), cert.to_owned()),
        ("SIDEKEY_INJECTOR_TLS_KEY".to_owned(), key.to_owned()),
        ("SIDEKEY_INJECTOR_CLIENT_CA".to_owned(), empty.clone()),
    ];
    let out = sidekey_test_support::run(bin, &[], &env, b"").unwrap();
    assert_eq!(out.status, 64);
    assert!(
        out.stderr_str().contains("--client-ca"),
        "{}",
        out.stderr_str()
    );

    for (flag, value, needle) in [
        ("--body-budget", "1Mi", "--body-budget must be at least"),
        ("--body-budget", "lots", "byte count"),
        ("--max-connections", "0", "--max-connections"),
        ("--read-timeout", "0s", "--read-timeout"),
        ("--idle-timeout", "0s", "--idle-timeout"),
    ] {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            flag,
            value,
        ];
        let out = sidekey_test_support::run(bin, &args, &[], b"").unwrap();
        assert_eq!(out.status, 64, "{flag} {value}: {}", out.stderr_str());
        assert!(
            out.stderr_str().contains(needle),
            "{flag} {value}: {}",
            out.stderr_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_is_answered_408_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &["--read-timeout", "1s"], &[]);

    // HTTP/1.1: the headers promise 1000 bytes, 999 come.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&[b' '; 999]).await.unwrap();
    tls.flush().await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // HTTP/1.1: headers that never end; the connection is closed.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    read_until_closed(&mut tls).await;

    // A TLS handshake that never starts: closed.
    let mut tcp = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    read_until_closed(&mut tcp).await;

    // HTTP/2: a stream whose body never ends is answered 408.
    let tls = tls_connect(process.addr, &[&ca.der], Alpn::H2, None)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tx.send(Bytes::from_static(b"{\"kind\":")).await.unwrap();
    let body = ChannelBody(rx);
    let req = hyper::Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);

    let metrics = metrics_of(process.addr, &ca, None).await;
    assert!(
        metric(
            &metrics,
            "sidekey_injector_tls_handshake_failures_total{reason=\"timeout\"}"
        ) >= 1,
        "{metrics}"
    );
    // Nothing was audited: no review was ever complete.
    process.terminate();
    let (code, stdout, _) = tokio::task::block_in_place(|| process.wait(WAIT));
    assert_eq!(code, 0);
    assert!(stdout.is_empty(), "{}", String::from_utf8_lossy(&stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    // The read timeout is long: what closes these is the idle timeout.
    let process = Process::start(
        &cert,
        &key,
        &["--idle-timeout", "1s", "--read-timeout", "30s"],
        &[],
    );

    // HTTP/2 after one request: GOAWAY, then the connection ends.
    let tls = tls_connect(process.addr, &[&ca.der], Alpn::H2, None)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        sender.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("the idle HTTP/2 connection was never closed")
        .unwrap()
        .unwrap();

    // HTTP/1.1 keep-alive after one request.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // TLS done, then not a byte.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::H2, None)
        .await
        .unwrap();
    read_until_closed(&mut tls).await;

    let metrics = metrics_of(process.addr, &ca, None).await;
    assert!(
        metric(&metrics, "sidekey_injector_idle_connections_closed_total") >= 3,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_body_budget_a_review_gets_503_and_later_ones_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &["--body-budget", "3Mi"], &[]);
    const BIG: u64 = 3 * 1024 * 1024;

    // One caller announces a 3 MiB body and withholds most of it.
    let mut hog = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    hog.write_all(
        format!("POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {BIG}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    hog.write_all(&[b' '; 1000]).await.unwrap();
    hog.flush().await.unwrap();
    wait_metric(
        process.addr,
        &ca,
        "sidekey_injector_body_bytes_reserved",
        BIG,
    )
    .await;

    // Every other review is refused before its body is read.
    for alpn in [Alpn::H2, Alpn::Http11] {
        let mut c = Client::connect(process.addr, &[&ca.der], alpn)
            .await
            .unwrap();
        let body = serde_json::to_vec(&injectable("squeezed")).unwrap();
        let a = c.send("POST", "/mutate", body).await.unwrap();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
        assert!(a.text().contains("too many review bodies in flight"));
    }
    let metrics = metrics_of(process.addr, &ca, None).await;
    assert_eq!(
        metric(&metrics, "sidekey_injector_body_budget_refusals_total"),
        2,
        "{metrics}"
    );

    // The caller goes away: its reservation is given back.
    drop(hog);
    wait_metric(process.addr, &ca, "sidekey_injector_body_bytes_reserved", 0).await;
    for (i, alpn) in [Alpn::H2, Alpn::Http11].into_iter().enumerate() {
        let mut c = Client::connect(process.addr, &[&ca.der], alpn)
            .await
            .unwrap();
        let body = serde_json::to_vec(&injectable(&format!("after-{i}"))).unwrap();
        let a = c.send("POST", "/mutate", body).await.unwrap();
        assert_eq!(a.response()["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &["--max-connections", "2"], &[]);
    let mut held = Vec::new();
    for alpn in [Alpn::H2, Alpn::Http11] {
        let mut c = Client::connect(process.addr, &[&ca.der], alpn)
            .await
            .unwrap();
        assert_eq!(
            c.send("GET", "/healthz", Vec::new()).await.unwrap().status,
            StatusCode::OK
        );
        held.push(c);
    }
    for alpn in [Alpn::H2, Alpn::Http11] {
        let third = async {
            let mut c = Client::connect(process.addr, &[&ca.der], alpn).await?;
            c.send("GET", "/healthz", Vec::new()).await
        };
        assert!(third.await.is_err(), "a third connection was served");
    }
    // One goes away: there is room again.
    held.pop();
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let attempt = async {
            let mut c = Client::connect(process.addr, &[&ca.der], Alpn::H2).await?;
            c.send("GET", "/metrics", Vec::new()).await
        };
        if let Ok(a) = attempt.await {
            break a.text();
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metric(&text, "sidekey_injector_connections_refused_total") >= 2,
        "{text}"
    );
    assert_eq!(
        metric(&text, "sidekey_injector_connections_open"),
        2,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_a_real_caller_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &["--max-connections", "3"], &[]);
    // Every slot taken by connections that never start their handshake.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(process.addr).await.unwrap());
    }
    // A caller that completes its handshake still gets in: it takes the
    // place of the oldest silent connection. Each round another silent one
    // comes in (taking the place of the next oldest silent one).
    let mut callers = Vec::new();
    for i in 0..3 {
        let mut c = Client::connect(process.addr, &[&ca.der], Alpn::H2)
            .await
            .unwrap_or_else(|e| panic!("caller {i} locked out: {e}"));
        let body = serde_json::to_vec(&injectable(&format!("through-{i}"))).unwrap();
        assert_eq!(
            c.send("POST", "/mutate", body).await.unwrap().response()["allowed"],
            true
        );
        callers.push(c);
        silent.push(tokio::net::TcpStream::connect(process.addr).await.unwrap());
    }
    // Every silent connection was closed: five to make room, and the last
    // one refused once every slot held a caller that had completed its
    // handshake.
    for s in silent.iter_mut() {
        read_until_closed(s).await;
    }
    let metrics = callers[0]
        .send("GET", "/metrics", Vec::new())
        .await
        .unwrap()
        .text();
    assert_eq!(
        metric(&metrics, "sidekey_injector_connections_evicted_total"),
        5,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sidekey_injector_connections_refused_total"),
        1,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_without_a_content_length_are_read_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &[], &[]);
    let review = serde_json::to_vec(&injectable("chunked")).unwrap();

    // HTTP/1.1 chunked, in small chunks: answered.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    let mut req = b"POST /mutate HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for chunk in review.chunks(100) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    tls.write_all(&req).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("\"allowed\":true"), "{got}");

    // HTTP/1.1 chunked past 3 MiB: 413.
    let mut tls = tls_connect(process.addr, &[&ca.der], Alpn::Http11, None)
        .await
        .unwrap();
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..60 {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if wr.write_all(&piece).await.is_err() {
                break;
            }
        }
    });
    let got = String::from_utf8_lossy(&read_until_closed(&mut rd).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    writer.abort();

    // HTTP/2 without content-length, in pieces: answered.
    let tls = tls_connect(process.addr, &[&ca.der], Alpn::H2, None)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    for chunk in review.chunks(500) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let req = hyper::Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .body(ChannelBody(rx))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true);
}

/// A request body fed from a channel: it ends only when the sender is
/// dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
