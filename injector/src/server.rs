//! The HTTPS listener: TLS (rustls, ring) with ALPN `h2` and `http/1.1`,
//! hyper's automatic HTTP/1.1-or-HTTP/2 connections, what protects the
//! process from its callers, and graceful shutdown.
//!
//! Whoever reaches the port, memory stays bounded ([`ServeLimits`]):
//!
//! - Client certificates (`--client-ca`, see [`crate::tls`]): without one
//!   that chains to the bundle, the handshake fails and nothing is read.
//! - At most `max_connections` open connections (handshakes included). At
//!   the cap, a new connection takes the place of the oldest one still in
//!   its TLS handshake (so silent connections cannot lock the API server
//!   out); when every connection has completed its handshake, the new one is
//!   accepted and closed at once.
//! - A global budget of review body bytes in flight (default 16 MiB): a
//!   `POST` reserves its Content-Length (the 3 MiB body limit without one)
//!   before any of its body is read, and is answered 503 when that does
//!   not fit. The body is
//!   copied as it arrives into one buffer of that size (`Gathered`), so
//!   what it holds in memory is its length. The body limit itself (413) and
//!   the body read are [`crate::service`]'s.
//! - `read_timeout` (default 10 s) bounds the TLS handshake, the wait for a
//!   request's headers (HTTP/1.1: idle keep-alive connections included) and
//!   the whole request, body read included (408).
//! - `idle_timeout` (default 20 s): a connection with no request in flight
//!   for that long is shut down gracefully (HTTP/2: GOAWAY; a connection
//!   still open `read_timeout` later is dropped).
//! - HTTP/1.1: at most 64 KiB buffered per connection (headers included);
//!   HTTP/2: 16 KiB of headers, flow-control windows of 512 KiB per
//!   connection and 256 KiB per stream, keep-alive
//!   pings every 20 s (the API server keeps its connections open), at most
//!   250 concurrent streams per connection.
//! - Shutdown (SIGTERM or SIGINT, see [`shutdown_signal`]): the listener
//!   is closed at once, HTTP/2 connections get GOAWAY, HTTP/1.1 ones close
//!   after their current response, and in-flight reviews run to the end
//!   within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::args::Settings;
use crate::audit::AuditSink;
use crate::service::{HttpResponse, Injector, Limits, BODY_LIMIT};
use crate::tls::CertStore;

/// Default longest TLS handshake, header wait and request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time after which a connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default most open connections.
pub const MAX_CONNECTIONS: usize = 256;
/// Default budget of review body bytes in flight: 16 MiB (5 bodies of the
/// 3 MiB limit, or hundreds of typical reviews of a few KiB). Measured with
/// `benches/slowloris.rs`: under 30 withheld 3 MiB bodies and reconnecting
/// callers the release binary peaks near 50 MB (32 MiB peaked at 80 MB:
/// the allocator keeps freed pages for a while as bodies come and go).
pub const BODY_BUDGET: usize = 16 * 1024 * 1024;
/// Most bytes an HTTP/1.1 connection buffers (a request's headers must fit).
pub const HTTP1_BUFFER: usize = 64 * 1024;
/// HTTP/2 flow-control windows: at most this much of a connection's (a
/// stream's) data is buffered before it is read.
pub const H2_CONNECTION_WINDOW: u32 = 512 * 1024;
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;

/// The server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0} connection(s) were still open when the shutdown grace period ended")]
    GraceExceeded(usize),
    #[error("no serving certificate: give --tls-cert and --tls-key, or --self-managed-tls")]
    NoCertificate,
}

/// What bounds the server's work and memory, whatever its callers do.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most open connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Most review body bytes reserved at once (at least [`BODY_LIMIT`]).
    pub body_budget: usize,
    /// Longest TLS handshake and wait for a request's headers.
    pub read_timeout: Duration,
    /// A connection without a request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How long in-flight reviews may take to finish after shutdown.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: MAX_CONNECTIONS,
            body_budget: BODY_BUDGET,
            read_timeout: READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            grace: Duration::from_secs(25),
        }
    }
}

/// Runs the injector with `settings` until `shutdown` completes, then shuts
/// down gracefully.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    run_with_store(settings, None, shutdown).await
}

/// [`run`], serving the certificates of `store` when given (self-managed
/// TLS installs them in memory: see [`CertStore::in_memory`]) instead of
/// the `--tls-cert`/`--tls-key` files. `/healthz` answers from the start;
/// `/readyz` once the store holds a certificate.
pub async fn run_with_store(
    settings: Settings,
    store: Option<Arc<CertStore>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let certs = match store {
        Some(store) => {
            tracing::info!("serving the certificate installed in memory by self-managed TLS; not ready until it is");
            if let Err(e) = store.reload() {
                tracing::error!(error = %e, "the client CA cannot be loaded yet");
            }
            store
        }
        None => {
            let Some((cert, key)) = &settings.tls_files else {
                return Err(ServeError::NoCertificate);
            };
            let certs = CertStore::with_client_ca(cert, key, settings.client_ca.clone());
            match certs.reload() {
                Ok(_) => {
                    tracing::info!(cert = %cert.display(), "serving certificate loaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "no serving certificate yet; not ready until one loads")
                }
            }
            certs
        }
    };
    match &settings.client_ca {
        Some(ca) => tracing::info!(
            client_ca = %ca.display(),
            "client certificates required: only callers with a certificate from this CA bundle can submit reviews"
        ),
        None => tracing::warn!(
            "no --client-ca: any caller that reaches the port can submit reviews (and have them audited under any user name); give the API server a client certificate and set --client-ca"
        ),
    }
    let injector = Injector::new(
        settings.config,
        AuditSink::with_capacity(&settings.audit, settings.audit_queue),
        Some(certs.clone()),
        Limits {
            request_timeout: settings.read_timeout,
            ..Limits::default()
        },
    )
    .with_registry(settings.registry.clone());
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: settings.listen,
        source,
    })?;
    tracing::info!(addr = %local, audit = %settings.audit, "listening");
    let plain = match settings.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            tracing::info!(probes_addr = %bound, "serving /healthz, /readyz and /metrics over plain HTTP");
            Some(tokio::spawn(serve_plain(
                listener,
                injector.clone(),
                settings.read_timeout,
            )))
        }
        None => None,
    };

    let metrics_handle = injector.clone();
    let watcher = tokio::spawn(certs.clone().watch(settings.reload_interval, move |ok| {
        metrics_handle.metrics().certificate_reload(ok)
    }));
    let limits = ServeLimits {
        max_connections: settings.max_connections,
        body_budget: settings.body_budget,
        read_timeout: settings.read_timeout,
        idle_timeout: settings.idle_timeout,
        grace: settings.shutdown_grace,
    };
    let result = serve(listener, injector, certs, limits, shutdown).await;
    watcher.abort();
    if let Some(plain) = plain {
        plain.abort();
    }
    result
}

/// Most connections to the plain probes-and-metrics listener.
pub const PLAIN_MAX_CONNECTIONS: usize = 32;

/// Serves `GET`/`HEAD` `/healthz`, `/readyz` and `/metrics` over plain
/// HTTP/1.1 on `listener` (`--metrics-listen`): the kubelet's probes and
/// Prometheus reach them without a client certificate. Any other path is
/// 404, `/mutate` included; no request body is ever read. At most
/// [`PLAIN_MAX_CONNECTIONS`] connections, the oldest closed to make room for
/// a new one (so callers who hold connections cannot starve the kubelet's
/// probes); `read_timeout` bounds the wait for a request's headers, idle
/// keep-alive included.
pub async fn serve_plain(listener: TcpListener, injector: Injector, read_timeout: Duration) {
    let connections = Arc::new(Semaphore::new(PLAIN_MAX_CONNECTIONS));
    let unproven = Arc::new(Unproven::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection (probes and metrics)");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = admit(&connections, &unproven, &injector).await else {
            drop(stream);
            continue;
        };
        let injector = injector.clone();
        let builder = builder.clone();
        // Every connection here can be evicted, the oldest first.
        let (guard, evict) = unproven.enter();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let service = service_fn(move |req: Request<Incoming>| {
                let injector = injector.clone();
                async move {
                    let r = match req.uri().path() {
                        "/healthz" | "/readyz" | "/metrics" => injector.handle(req).await,
                        _ => {
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(b"not found\n")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            // Bounded: a request in flight is a GET answered at once, and
            // the header read timeout closes idle connections.
            tokio::select! {
                r = builder.serve_connection(TokioIo::new(stream), service) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "probes connection ended with an error");
                    }
                }
                () = evict.notified() => {
                    tracing::debug!(%peer, "probes connection closed to make room");
                }
            }
        });
    }
}

/// What every connection task shares.
struct Shared {
    injector: Injector,
    certs: Arc<CertStore>,
    builder: auto::Builder<TokioExecutor>,
    budget: Arc<Semaphore>,
    unproven: Arc<Unproven>,
    limits: ServeLimits,
    stop: watch::Receiver<bool>,
}

/// Serves `injector` over TLS (the certificate, and the client CA if any,
/// from `certs`, read at each handshake) on `listener` until `shutdown`
/// completes; then stops accepting and waits up to `limits.grace` for open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    injector: Injector,
    certs: Arc<CertStore>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // Both are counted in u32 permits; the settings keep them far below.
    let max_connections = limits.max_connections.clamp(1, u32::MAX as usize);
    let connections = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        injector: injector.clone(),
        certs,
        builder: http_builder(limits.read_timeout),
        budget: Arc::new(Semaphore::new(limits.body_budget.max(BODY_LIMIT))),
        unproven: Arc::new(Unproven::default()),
        limits,
        stop,
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match admit(&connections, &shared.unproven, &injector).await {
                    Some(permit) => {
                        // Until its handshake completes, the connection may
                        // be closed to make room for a new one (the oldest
                        // such goes first). Registered here, before its task
                        // first runs, so that it can be found at once.
                        let unproven = shared.unproven.enter();
                        tokio::spawn(connection(shared.clone(), stream, peer, permit, unproven));
                    }
                    None => {
                        tracing::debug!(%peer, max = max_connections, "too many connections; closing the new one");
                        drop(stream);
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let open = max_connections - connections.available_permits();
    tracing::info!(
        connections = open,
        "shutting down: listener closed, finishing in-flight reviews"
    );
    stop_tx.send_replace(true);
    // Every connection holds one permit: all of them back means all closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        () = tokio::time::sleep(limits.grace) => {
            tracing::warn!(grace = ?limits.grace, "shutdown grace period over; closing the remaining connections");
            Err(ServeError::GraceExceeded(max_connections - connections.available_permits()))
        }
    }
}

fn http_builder(read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(HTTP1_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(16 * 1024)
        // What a peer may send that is not read yet: a refused stream's
        // data waits in these windows until the stream is dropped.
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .max_concurrent_streams(250);
    builder
}

/// Counts a connection as open while it lives.
struct Open(Injector);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().connection(false);
    }
}

/// One accepted connection: the TLS handshake, then HTTP until the peer,
/// the idle timeout or a graceful shutdown closes it.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    (unproven, evict): (UnprovenGuard, Arc<Notify>),
) {
    let metrics_of = shared.injector.clone();
    metrics_of.metrics().connection(true);
    let _open = Open(metrics_of.clone());
    let metrics = metrics_of.metrics();
    let limits = shared.limits;
    let mut stop = shared.stop.clone();
    let _ = stream.set_nodelay(true);
    let Some(config) = shared.certs.current_config() else {
        tracing::debug!(%peer, "the client CA is not loaded yet; closing the connection");
        metrics.handshake_failed(false);
        return;
    };
    let handshake = tokio::time::timeout(
        limits.read_timeout,
        TlsAcceptor::from(config).accept(stream),
    );
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                metrics.handshake_failed(false);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.handshake_failed(true);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
        () = evict.notified() => {
            tracing::debug!(%peer, "TLS handshake cut short to make room for a new connection");
            return;
        }
    };
    drop(unproven);
    let activity = Arc::new(Activity::new());
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let busy = activity.begin();
            // The review's future is boxed: hyper spawns a task per HTTP/2
            // stream, and a task is created by moving its future, so a small
            // one (a pointer) is cheaper to spawn than the whole review's
            // state.
            async move {
                let _busy = busy;
                let Ok(reserved) = reserve(&shared, &req) else {
                    shared.injector.metrics().body_budget_refused();
                    tracing::info!(
                        budget = shared.limits.body_budget,
                        "review refused: the body budget is spent"
                    );
                    return Ok::<_, Infallible>(over_budget());
                };
                let gather = reserved.as_ref().map(|r| r.bytes);
                let req = req.map(|body| Gathered::new(body, gather));
                let answer = Box::pin(shared.injector.handle(req)).await;
                drop(reserved);
                Ok(answer)
            }
        })
    };
    let conn = shared
        .builder
        .serve_connection(TokioIo::new(tls), service)
        .into_owned();
    tokio::pin!(conn);
    let idle = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        () = activity.idle(limits.idle_timeout) => true,
        _ = stop.wait_for(|s| *s) => false,
    };
    conn.as_mut().graceful_shutdown();
    if idle {
        metrics.idle_closed();
        tracing::debug!(%peer, "closing an idle connection");
        if tokio::time::timeout(limits.read_timeout, conn.as_mut())
            .await
            .is_err()
        {
            tracing::debug!(%peer, "an idle connection did not close; dropped");
        }
    } else if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Connections that have proven nothing yet (a TLS handshake in progress;
/// on the plain listener, every connection), oldest first. When the
/// connection cap is reached, the oldest of them is closed to make room, so
/// callers who open connections and stay silent cannot lock the API server
/// out: they would have to open them faster than it completes a handshake.
#[derive(Default)]
struct Unproven {
    next: AtomicU64,
    waiting: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<Notify>>>,
}

/// A connection's place in [`Unproven`], given up when dropped.
struct UnprovenGuard {
    id: u64,
    set: Arc<Unproven>,
}

impl Unproven {
    /// Registers a connection; the `Notify` fires when it must close.
    fn enter(self: &Arc<Self>) -> (UnprovenGuard, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock().insert(id, notify.clone());
        let guard = UnprovenGuard {
            id,
            set: self.clone(),
        };
        (guard, notify)
    }

    /// Tells the oldest registered connection to close; `false` if none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_first() {
            Some((_, notify)) => {
                // Stored if the connection is not waiting yet.
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for UnprovenGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

/// A slot for a new connection: a free one, else the one an unproven
/// connection gives up (waiting at most 1 s for it; the accept loop waits
/// meanwhile). `None` (counted as refused) when every slot holds a proven
/// connection.
async fn admit(
    connections: &Arc<Semaphore>,
    unproven: &Unproven,
    injector: &Injector,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = connections.clone().try_acquire_owned() {
        return Some(permit);
    }
    if unproven.evict_oldest() {
        injector.metrics().connection_evicted();
        let freed =
            tokio::time::timeout(Duration::from_secs(1), connections.clone().acquire_owned());
        if let Ok(Ok(permit)) = freed.await {
            return Some(permit);
        }
    }
    injector.metrics().connection_refused();
    None
}

/// Reserves a `POST`'s body from the budget before any of it is read: its
/// Content-Length, or the body limit without one. `Err` when it does not
/// fit. A declared length over the limit reserves nothing (the service
/// answers 413 without reading).
fn reserve(shared: &Shared, req: &Request<Incoming>) -> Result<Option<Reserved>, ()> {
    if req.method() != Method::POST {
        return Ok(None);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let need = match declared {
        Some(n) if n > BODY_LIMIT as u64 => return Ok(None),
        Some(0) => return Ok(None),
        Some(n) => n,
        None => BODY_LIMIT as u64,
    };
    let permits = u32::try_from(need).map_err(|_| ())?;
    let permit = shared
        .budget
        .clone()
        .try_acquire_many_owned(permits)
        .map_err(|_| ())?;
    shared.injector.metrics().body_reserved(need, true);
    Ok(Some(Reserved {
        _permit: permit,
        bytes: permits as usize,
        injector: shared.injector.clone(),
    }))
}

/// Body bytes reserved from the budget, given back when dropped (once the
/// answer is built: the body has been read and dropped by then).
struct Reserved {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    injector: Injector,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.injector
            .metrics()
            .body_reserved(self.bytes as u64, false);
    }
}

/// A request body copied, as it arrives, into one buffer no larger than its
/// reservation, and handed on as one frame at its end. The frames (and the
/// connection buffers they share an allocation with) are let go at once,
/// and HTTP/2 flow control gets their room back, so a review's body holds
/// its own length in memory, no more. Without a reservation, or once more
/// than it arrives (a body without Content-Length past the limit: the
/// service's limit answers 413), frames are passed on as they come.
struct Gathered {
    inner: Incoming,
    buf: Vec<u8>,
    /// Most bytes gathered; `None`: pass frames on.
    capacity: Option<usize>,
    /// A frame to hand on before reading more.
    pending: Option<Bytes>,
    ended: bool,
}

impl Gathered {
    fn new(inner: Incoming, capacity: Option<usize>) -> Gathered {
        Gathered {
            inner,
            buf: Vec::new(),
            capacity,
            pending: None,
            ended: false,
        }
    }
}

impl hyper::body::Body for Gathered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(data) = this.pending.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let Some(capacity) = this.capacity else {
            return std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        };
        loop {
            let frame = match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    let all = Bytes::from(std::mem::take(&mut this.buf));
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(all))));
                }
            };
            // Trailers are not part of a review.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = this.buf.len() + data.len();
            if len > capacity {
                // More than reserved: pass everything on from here.
                this.capacity = None;
                if this.buf.is_empty() {
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
                }
                this.pending = Some(data);
                let held = Bytes::from(std::mem::take(&mut this.buf));
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(held))));
            }
            if this.buf.capacity() < len {
                // Exactly the reservation when the length was declared;
                // otherwise doubling, never past the reservation.
                let want = len
                    .max(this.buf.capacity() * 2)
                    .max(16 * 1024)
                    .min(capacity);
                this.buf.reserve_exact(want - this.buf.len());
            }
            this.buf.extend_from_slice(&data);
        }
    }
}

fn over_budget() -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(
        b"too many review bodies in flight; try again\n",
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = r.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `born` to the last request's start or end.
    last: AtomicU64,
}

/// A request in flight (see [`Activity::begin`]).
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Since when no request has been in flight; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.born + Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wake = match self.idle_since() {
                Some(since) => {
                    let at = since + timeout;
                    if Instant::now() >= at {
                        return;
                    }
                    at
                }
                None => Instant::now() + timeout,
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT received"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        },
    }
}
