//! Shared test helpers: review fixtures, certificates made by rcgen at test
//! time (no key is committed), a TLS client that checks the server's
//! certificate against the test CA and reports it, and the injector binary
//! run as a process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use sidekey_injector::{AuditSink, Injector, Limits};
use sidekey_patch::Config;
use tokio_rustls::TlsConnector;

mod fixtures;
pub use fixtures::*;

// ---------------------------------------------------------------- handler

/// An injector with the default configuration (own namespace `sidekey`)
/// and an in-memory audit sink; always ready.
pub fn injector() -> Injector {
    Injector::new(
        Config::default_for(Some("sidekey")),
        AuditSink::memory(),
        None,
        Limits::default(),
    )
}

/// The decoded answer of the handler.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `response` of an AdmissionReview answer.
    pub fn response(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        let v = self.json();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        v["response"].clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Calls the handler directly (no socket).
pub async fn call(injector: &Injector, method: &str, path: &str, body: impl Into<Bytes>) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("request");
    let resp = injector.handle(req).await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

/// Posts `review` to `/mutate` through the handler.
pub async fn mutate(injector: &Injector, review: &Value) -> Answer {
    call(
        injector,
        "POST",
        "/mutate",
        serde_json::to_vec(review).unwrap(),
    )
    .await
}

/// The patch of an answer, decoded from base64, as a `json_patch::Patch`.
pub fn patch_of(response: &Value) -> Option<sidekey_patch::json_patch::Patch> {
    use base64::Engine as _;
    let text = response
        .get("patch")?
        .as_str()
        .expect("patch is base64 text");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 patch");
    Some(serde_json::from_slice(&bytes).expect("patch is JSON Patch"))
}

/// The audit records written so far, parsed.
pub fn audit_records(injector: &Injector) -> Vec<Value> {
    injector
        .audit()
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

// ---------------------------------------------------------------- certificates

/// A test certificate authority.
pub struct Ca {
    pub der: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for `localhost` and 127.0.0.1 with `serial`.
    pub fn leaf(&self, serial: u64) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sidekey-injector");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Ca {
    /// A client certificate (extended key usage `clientAuth`) for `name`,
    /// as the API server's webhook client certificate is.
    pub fn client(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes the pair the way a rotation does: new files renamed over the
    /// old ones.
    pub fn install(&self, cert: &Path, key: &Path) {
        let tmp_cert = cert.with_file_name(".cert.new");
        let tmp_key = key.with_file_name(".key.new");
        std::fs::write(&tmp_cert, &self.cert_pem).unwrap();
        std::fs::write(&tmp_key, &self.key_pem).unwrap();
        std::fs::rename(&tmp_key, key).unwrap();
        std::fs::rename(&tmp_cert, cert).unwrap();
    }
}

// ---------------------------------------------------------------- TLS client

/// Which HTTP version to ask for with ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
}

/// One TLS connection to the server, checked against the given CAs.
pub struct Client {
    /// The server's leaf certificate.
    pub peer: CertificateDer<'static>,
    /// The ALPN protocol agreed.
    pub alpn: Option<Vec<u8>>,
    sender: Sender,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    /// Connects to `addr` as `localhost`, trusting only `roots`.
    pub async fn connect(
        addr: SocketAddr,
        roots: &[&CertificateDer<'static>],
        alpn: Alpn,
    ) -> Result<Client, String> {
        Client::connect_as(addr, roots, alpn, None).await
    }

    /// [`Client::connect`], presenting `identity` as the client certificate.
    pub async fn connect_as(
        addr: SocketAddr,
        roots: &[&CertificateDer<'static>],
        alpn: Alpn,
        identity: Option<&Leaf>,
    ) -> Result<Client, String> {
        let tls = tls_connect(addr, roots, alpn, identity).await?;
        Client::over(tls).await
    }

    /// HTTP over an established TLS connection.
    pub async fn over(
        tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> Result<Client, String> {
        let (_, session) = tls.get_ref();
        let peer = session
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no peer certificate")?;
        let agreed = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if agreed.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Client {
            peer,
            alpn: agreed,
            sender,
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// An HTTP/2 sender that can be cloned for concurrent streams.
    pub fn h2(&self) -> Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>> {
        match &self.sender {
            Sender::H2(s) => Some(s.clone()),
            Sender::H1(_) => None,
        }
    }
}

/// A TLS connection to `addr` as `localhost`, trusting only `roots`,
/// presenting `identity` as the client certificate when given.
pub async fn tls_connect(
    addr: SocketAddr,
    roots: &[&CertificateDer<'static>],
    alpn: Alpn,
    identity: Option<&Leaf>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(store);
    let mut config = match identity {
        None => config.with_no_client_auth(),
        Some(leaf) => {
            use rustls::pki_types::pem::PemObject as _;
            let chain = vec![leaf.der.clone()];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .map_err(|e| e.to_string())?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
    };
    config.alpn_protocols = match alpn {
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::Http11 => vec![b"http/1.1".to_vec()],
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

// ---------------------------------------------------------------- the binary

/// The injector binary, running.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    /// Starts `sidekey-injector` on 127.0.0.1:0 with the certificate files
    /// and `env` (the environment is otherwise empty but for PATH), and
    /// waits for its "listening" line.
    pub fn start(cert: &Path, key: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sidekey-injector"));
        command
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SIDEKEY_LOG", "info")
            .env("POD_NAMESPACE", "sidekey")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start sidekey-injector");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stderr.take().unwrap(), stderr.clone()),
            pump(child.stdout.take().unwrap(), stdout.clone()),
        ];
        let mut p = Process {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
            stdout,
            readers,
        };
        let line = p.wait_for_stderr("listening", Duration::from_secs(30));
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no addr in {line:?}"));
        p.addr = addr.parse().expect("listen address");
        p
    }

    /// Waits until a stderr line contains `needle`; returns it.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_count(needle, 1, timeout)
    }

    /// Waits until `count` stderr lines contain `needle`; returns the last.
    pub fn wait_for_count(&mut self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr_text();
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if hits.len() >= count {
                return hits[count - 1].to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sidekey-injector exited ({status}) before {needle:?}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "no {count} stderr line(s) with {needle:?} within {timeout:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit (at most `timeout`, then kills); returns the exit
    /// code, stdout and stderr.
    pub fn wait(mut self, timeout: Duration) -> (i32, Vec<u8>, Vec<u8>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sidekey-injector did not exit within {timeout:?}:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pump(
    pipe: impl std::io::Read + Send + 'static,
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

/// A fresh CA and serving certificate written to `dir` (cert.pem, key.pem).
pub fn write_certs(dir: &Path) -> (Ca, Leaf, std::path::PathBuf, std::path::PathBuf) {
    let ca = Ca::new("sidekey test CA");
    let leaf = ca.leaf(1);
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    leaf.install(&cert, &key);
    (ca, leaf, cert, key)
}
