//! The HTTPS listener: TLS (rustls, ring) with ALPN `h2` and `http/1.1`,
//! hyper's automatic HTTP/1.1-or-HTTP/2 connections, timeouts, and
//! graceful shutdown.
//!
//! - TLS handshake timeout and HTTP/1.1 header read timeout: 10 s each;
//!   the whole request (body read included) is bounded by
//!   [`crate::Limits::request_timeout`].
//! - HTTP/2: keep-alive pings every 20 s (the API server keeps its
//!   connections open), at most 250 concurrent streams per connection.
//! - Shutdown (SIGTERM or SIGINT, see [`shutdown_signal`]): the listener
//!   is closed at once, HTTP/2 connections get GOAWAY, HTTP/1.1 ones close
//!   after their current response, and in-flight reviews run to the end
//!   within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::args::Settings;
use crate::audit::AuditSink;
use crate::service::{Injector, Limits};
use crate::tls::CertStore;

/// Longest TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// Runs the injector with `settings` until `shutdown` completes, then shuts
/// down gracefully.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let certs = CertStore::new(&settings.tls_cert, &settings.tls_key);
    match certs.reload() {
        Ok(_) => tracing::info!(cert = %settings.tls_cert.display(), "serving certificate loaded"),
        Err(e) => {
            tracing::error!(error = %e, "no serving certificate yet; not ready until one loads")
        }
    }
    let tls = certs.server_config()?;
    let injector = Injector::new(
        settings.config,
        AuditSink::new(&settings.audit),
        Some(certs.clone()),
        Limits {
            test_delay: settings.test_delay,
            ..Limits::default()
        },
    );
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

    let metrics_handle = injector.clone();
    let watcher = tokio::spawn(certs.watch(settings.reload_interval, move |ok| {
        metrics_handle.metrics().certificate_reload(ok)
    }));
    let result = serve(listener, injector, tls, shutdown, settings.shutdown_grace).await;
    watcher.abort();
    result
}

/// Serves `injector` over TLS on `listener` until `shutdown` completes;
/// then stops accepting and waits up to `grace` for open connections to
/// finish their requests.
pub async fn serve(
    listener: TcpListener,
    injector: Injector,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        builder.clone(),
                        injector.clone(),
                        graceful.watcher(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "shutting down: listener closed, finishing in-flight reviews"
    );
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing the remaining connections");
            Err(ServeError::GraceExceeded(open))
        }
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(250);
    builder
}

/// One accepted connection: the TLS handshake, then HTTP until the peer or
/// a graceful shutdown closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    injector: Injector,
    watcher: Watcher,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The review's future is boxed: hyper spawns a task per HTTP/2 stream,
    // and a task is created by moving its future, so a small one (a
    // pointer) is cheaper to spawn than the whole review's state.
    let service = service_fn(move |req| {
        let injector = injector.clone();
        async move { Ok::<_, Infallible>(Box::pin(injector.handle(req)).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(tls), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
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
