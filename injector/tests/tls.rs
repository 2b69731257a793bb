//! The server over real TLS on loopback, in-process: ALPN, certificate
//! checks, certificate rotation without a restart, and a whole review whose
//! patch is applied.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use rustls::pki_types::CertificateDer;
use sidekey_injector::{serve, CertStore, Injector, ServeLimits};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    certs: Arc<CertStore>,
    injector: Injector,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sidekey_injector::ServeError>>,
    cert: PathBuf,
    key: PathBuf,
    ca: Ca,
    leaf: Leaf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on 127.0.0.1:0; `watch` polls the files every 50 ms.
    async fn start(watch: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (ca, leaf, cert, key) = write_certs(dir.path());
        let certs = CertStore::new(&cert, &key);
        certs.reload().unwrap();
        let injector = Injector::new(
            sidekey_patch::Config::default_for(Some("sidekey")),
            sidekey_injector::AuditSink::memory(),
            Some(certs.clone()),
            sidekey_injector::Limits::default(),
        );
        if watch {
            let m = injector.clone();
            tokio::spawn(certs.clone().watch(Duration::from_millis(50), move |ok| {
                m.metrics().certificate_reload(ok)
            }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            injector.clone(),
            certs.clone(),
            ServeLimits {
                grace: Duration::from_secs(5),
                ..ServeLimits::default()
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            certs,
            injector,
            stop: Some(stop),
            task,
            cert,
            key,
            ca,
            leaf,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_and_http11_with_a_checked_certificate() {
    let server = Server::start(false).await;
    for alpn in [Alpn::H2, Alpn::Http11] {
        let mut client = Client::connect(server.addr, &[&server.ca.der], alpn)
            .await
            .unwrap();
        let expected: &[u8] = if alpn == Alpn::H2 { b"h2" } else { b"http/1.1" };
        assert_eq!(client.alpn.as_deref(), Some(expected));
        assert_eq!(client.peer, server.leaf.der);
        let a = client.send("GET", "/healthz", Vec::new()).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        let a = client.send("GET", "/readyz", Vec::new()).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        // Keep-alive: several reviews on one connection.
        for i in 0..3 {
            let body = serde_json::to_vec(&injectable(&format!("uid-{i}"))).unwrap();
            let a = client.send("POST", "/mutate", body).await.unwrap();
            assert_eq!(a.response()["allowed"], true);
        }
    }
    // A client that trusts another CA refuses the server.
    let other = Ca::new("another CA");
    let err = Client::connect(server.addr, &[&other.der], Alpn::H2)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("handshake"), "{err}");
    assert_eq!(server.injector.metrics().injections("team-a"), 6);
    server.stop().await;
}

/// Connects (trusting `roots`) until the server presents `want`.
async fn wait_for_peer(
    addr: SocketAddr,
    roots: &[&CertificateDer<'static>],
    want: &CertificateDer<'static>,
) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = Client::connect(addr, roots, Alpn::H2).await {
            if client.peer == *want {
                return client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let server = Server::start(true).await;
    let mut old = Client::connect(server.addr, &[&server.ca.der], Alpn::H2)
        .await
        .unwrap();
    assert_eq!(old.peer, server.leaf.der);

    // Same CA, new serial and key.
    let second = server.ca.leaf(2);
    second.install(&server.cert, &server.key);
    let mut client = wait_for_peer(server.addr, &[&server.ca.der], &second.der).await;
    assert_eq!(
        client
            .send("GET", "/healthz", Vec::new())
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );

    // A new CA altogether (a re-issued cert-manager CA).
    let ca2 = Ca::new("rotated CA");
    let third = ca2.leaf(3);
    third.install(&server.cert, &server.key);
    let mut client = wait_for_peer(server.addr, &[&server.ca.der, &ca2.der], &third.der).await;
    let body = serde_json::to_vec(&injectable("after-rotation")).unwrap();
    assert_eq!(
        client
            .send("POST", "/mutate", body)
            .await
            .unwrap()
            .response()["allowed"],
        true
    );
    // Only the new CA is needed now; the old one is no longer enough.
    assert!(Client::connect(server.addr, &[&ca2.der], Alpn::Http11)
        .await
        .is_ok());
    assert!(
        Client::connect(server.addr, &[&server.ca.der], Alpn::Http11)
            .await
            .is_err()
    );

    // The connection opened before the rotations still works (keeps its cert).
    assert_eq!(
        old.send("GET", "/healthz", Vec::new())
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );

    let text = server.injector.metrics().render();
    assert!(
        text.contains("sidekey_injector_certificate_reloads_total{result=\"success\"} 2"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_keeps_the_previous_certificate() {
    let server = Server::start(false).await;
    let other = server.ca.leaf(9);
    // The new certificate with the old key: a half-finished rotation.
    std::fs::write(&server.cert, &other.cert_pem).unwrap();
    let err = server.certs.reload().unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let client = Client::connect(server.addr, &[&server.ca.der], Alpn::H2)
        .await
        .unwrap();
    assert_eq!(client.peer, server.leaf.der);

    // Not PEM at all.
    std::fs::write(&server.key, "not a key").unwrap();
    assert!(server.certs.reload().is_err());
    // A missing file.
    std::fs::remove_file(&server.key).unwrap();
    assert!(server.certs.reload().is_err());
    let client = Client::connect(server.addr, &[&server.ca.der], Alpn::H2)
        .await
        .unwrap();
    assert_eq!(client.peer, server.leaf.der);

    // The rotation completes: the pair loads.
    other.install(&server.cert, &server.key);
    assert_eq!(
        server.certs.reload().unwrap(),
        sidekey_injector::tls::Reload::Loaded
    );
    assert_eq!(
        server.certs.reload().unwrap(),
        sidekey_injector::tls::Reload::Unchanged
    );
    let client = Client::connect(server.addr, &[&server.ca.der], Alpn::H2)
        .await
        .unwrap();
    assert_eq!(client.peer, other.der);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_over_tls_yields_a_patch_that_adds_the_agent() {
    let server = Server::start(false).await;
    let mut client = Client::connect(server.addr, &[&server.ca.der], Alpn::H2)
        .await
        .unwrap();
    let review = injectable("e2e-uid");
    let a = client
        .send("POST", "/mutate", serde_json::to_vec(&review).unwrap())
        .await
        .unwrap();
    assert_eq!(a.content_type, "application/json");
    let response = a.response();
    assert_eq!(response["uid"], "e2e-uid");
    assert_eq!(response["allowed"], true);
    let patch = patch_of(&response).expect("a patch");
    let pod = sidekey_patch::apply(&review["request"]["object"], &patch).unwrap();

    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init[0]["name"], sidekey_patch::CONTAINER_INSTALL);
    assert_eq!(init[0]["image"], sidekey_patch::DEFAULT_AGENT_IMAGE);
    let app = &pod["spec"]["containers"][0];
    assert_eq!(app["command"][0], sidekey_patch::AGENT_INSTALLED);
    assert!(app["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "/app/api"));
    let env: Vec<&str> = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"SIDEKEY_ENVIRONMENT") && env.contains(&"LOG_LEVEL"),
        "{env:?}"
    );
    assert!(pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == sidekey_patch::VOLUME_BIN && v["emptyDir"]["medium"] == "Memory"));

    // The patched pod reviewed again: no second patch.
    let again = review_of(pod);
    let a = client
        .send("POST", "/mutate", serde_json::to_vec(&again).unwrap())
        .await
        .unwrap();
    assert!(a.response().get("patch").is_none());
    server.stop().await;
}

fn review_of(pod: serde_json::Value) -> serde_json::Value {
    review("e2e-uid-2", "team-a", "CREATE", pod)
}
