//! A fault-injecting HTTP/1.1 proxy for AWS JSON-protocol calls (SSM, KMS) in front of moto.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, CONTENT_TYPE};
use hyper::http::request;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

use crate::http1;

/// The operation name of requests without an `X-Amz-Target` header.
const OTHER: &str = "other";
const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer HTTP 400 `{"__type":"ThrottlingException","message":"Rate exceeded"}`.
    Throttle,
    /// Answer HTTP 500 `{"__type":"InternalServerError","message":"injected"}`.
    ServerError,
    /// Wait, then forward.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Forward (the call takes effect upstream), then close the connection
    /// without answering: a lost answer.
    DropAnswer,
    /// Answer `status` with `{"__type":type_name,"message":message}`, e.g.
    /// 400 `AccessDeniedException`.
    Error {
        status: u16,
        type_name: String,
        message: String,
    },
}

/// A fault for some operation, some number of times.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// `None`: every request. `Some(op)`: requests whose operation (the `X-Amz-Target` part after
    /// the last `.`, or `"other"` without the header) or whole target equals `op`.
    pub operation: Option<String>,
    pub fault: Fault,
    /// How many more requests this rule fires for; `None`: forever.
    pub times: Option<u32>,
}

impl FaultRule {
    /// `fault` on every call of `operation`, forever (narrow it with [`FaultRule::times`]).
    pub fn on(operation: &str, fault: Fault) -> FaultRule {
        FaultRule {
            operation: Some(operation.to_owned()),
            fault,
            times: None,
        }
    }

    /// `fault` on every request, forever.
    pub fn any(fault: Fault) -> FaultRule {
        FaultRule {
            operation: None,
            fault,
            times: None,
        }
    }

    /// Limits the rule to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = Some(n);
        self
    }

    fn matches(&self, operation: &str, target: Option<&str>) -> bool {
        match &self.operation {
            None => true,
            Some(op) => op == operation || Some(op.as_str()) == target,
        }
    }
}

/// A token bucket for a family of operations: AWS's per-account request
/// rate. A request of the family takes a token; with none left it is
/// answered HTTP 400 `{"__type":"ThrottlingException","message":"Rate
/// exceeded"}` (what SSM and KMS answer) and never reaches moto.
#[derive(Debug, Clone)]
struct RateLimit {
    /// A name for the family (counts of throttled calls are kept by it).
    family: String,
    /// The operations it covers (as [`FaultRule::on`] matches them).
    operations: Vec<String>,
    /// Tokens added per second.
    rate: f64,
    /// Tokens the bucket holds at most (and starts with).
    burst: f64,
}

impl RateLimit {
    /// `rate` requests per second with a burst of `burst`, for `operations`.
    fn new(family: &str, operations: &[&str], rate: f64, burst: u32) -> RateLimit {
        RateLimit {
            family: family.to_owned(),
            operations: operations.iter().map(|o| (*o).to_owned()).collect(),
            rate,
            burst: f64::from(burst),
        }
    }

    /// SSM's reads: `GetParametersByPath`, `GetParameters`, `GetParameter`.
    fn ssm_reads(rate: f64, burst: u32) -> RateLimit {
        RateLimit::new(
            "ssm-get",
            &["GetParametersByPath", "GetParameters", "GetParameter"],
            rate,
            burst,
        )
    }

    /// KMS's cryptographic operations the agent and CLI use.
    fn kms_crypto(rate: f64, burst: u32) -> RateLimit {
        RateLimit::new(
            "kms-crypto",
            &["Decrypt", "GenerateDataKey", "Encrypt"],
            rate,
            burst,
        )
    }

    fn covers(&self, operation: &str, target: Option<&str>) -> bool {
        self.operations
            .iter()
            .any(|op| op == operation || Some(op.as_str()) == target)
    }
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    fn new(limit: RateLimit, now: std::time::Instant) -> Bucket {
        Bucket {
            tokens: limit.burst,
            limit,
            last: now,
        }
    }

    /// Refills for the time since the last call, then takes a token if
    /// there is one.
    fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Calls per operation (after the last '.'), faulted ones included.
    operations: BTreeMap<String, u64>,
    /// Calls per whole `X-Amz-Target` value.
    targets: BTreeMap<String, u64>,
    rules: Vec<FaultRule>,
    /// Token buckets, tried after the rules.
    buckets: Vec<Bucket>,
    /// Calls answered `ThrottlingException` by a bucket, per family.
    throttled: BTreeMap<String, u64>,
}

impl State {
    /// Counts the call and picks the fault for it, spending the rule's budget.
    fn record(&mut self, operation: &str, target: Option<&str>) -> Option<Fault> {
        self.record_at(operation, target, std::time::Instant::now())
    }

    fn record_at(
        &mut self,
        operation: &str,
        target: Option<&str>,
        now: std::time::Instant,
    ) -> Option<Fault> {
        *self.operations.entry(operation.to_owned()).or_default() += 1;
        if let Some(target) = target {
            *self.targets.entry(target.to_owned()).or_default() += 1;
        }
        let Some(rule) = self
            .rules
            .iter_mut()
            .find(|r| r.times != Some(0) && r.matches(operation, target))
        else {
            for bucket in &mut self.buckets {
                if bucket.limit.covers(operation, target) && !bucket.take(now) {
                    *self
                        .throttled
                        .entry(bucket.limit.family.clone())
                        .or_default() += 1;
                    return Some(Fault::Throttle);
                }
            }
            return None;
        };
        if let Some(n) = rule.times.as_mut() {
            *n -= 1;
        }
        Some(rule.fault.clone())
    }
}

/// A fault-injecting HTTP/1.1 proxy on `127.0.0.1` in front of `upstream` (moto).
///
/// It runs on its own thread with its own tokio runtime, so it works from sync tests, async
/// tests and benchmarks alike. It forwards every request as it came (method, path and query,
/// headers including `Host`, body; only hop-by-hop headers such as `Connection` and
/// `Transfer-Encoding` are dropped, as any proxy does) and counts calls per operation: the
/// `X-Amz-Target` value after the last `.` (`TrentService.Decrypt` counts as `Decrypt`,
/// `AmazonSSM.GetParameter` as `GetParameter`), `"other"` without the header.
///
/// Rules added with [`FaultProxy::inject`] are tried in insertion order; the first one that
/// matches and has budget left fires. Dropping the proxy stops its thread and closes every
/// connection.
#[derive(Debug)]
pub struct FaultProxy {
    endpoint: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Ctx {
    upstream: String,
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        http1::authority(upstream).context("fault proxy upstream")?;
        let upstream = upstream.trim_end_matches('/').to_owned();
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the fault proxy on loopback")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("sidekey-fault-proxy".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(anyhow::Error::new(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = started_tx.send(Err(anyhow::Error::new(e)));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    let ctx = Arc::new(Ctx {
                        upstream,
                        state: thread_state,
                        client: Client::builder(TokioExecutor::new()).build_http(),
                    });
                    serve(listener, ctx, shutdown_rx).await;
                });
            })
            .context("spawning the fault proxy thread")?;
        started_rx
            .recv()
            .context("the fault proxy thread died while starting")?
            .context("starting the fault proxy runtime")?;
        Ok(FaultProxy {
            endpoint,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Calls of `operation` seen so far, faulted ones included.
    pub fn count(&self, operation: &str) -> u64 {
        self.state().operations.get(operation).copied().unwrap_or(0)
    }

    /// Calls per operation seen so far, faulted ones included.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state().operations.clone()
    }

    /// Calls whose whole `X-Amz-Target` starts with `prefix`: `"TrentService"` for KMS,
    /// `"AmazonSSM"` for SSM.
    pub fn total_for_service(&self, prefix: &str) -> u64 {
        self.state()
            .targets
            .iter()
            .filter(|(target, _)| target.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Sets every count back to zero.
    pub fn reset_counts(&self) {
        let mut state = self.state();
        state.operations.clear();
        state.targets.clear();
        state.throttled.clear();
    }

    /// Adds a token bucket named `family` for `operations` (as
    /// [`FaultRule::on`] matches them): `rate` requests per second, at most
    /// `burst` at once (it starts full). A request with no token left is
    /// answered HTTP 400 `{"__type":"ThrottlingException","message":"Rate
    /// exceeded"}`, as SSM and KMS answer, and never reaches moto. A
    /// request takes a token from every bucket covering it, and is
    /// throttled by the first one that is empty. Rules added with
    /// [`FaultProxy::inject`] are tried first; a request a rule fires for
    /// takes no token.
    pub fn limit(&self, family: &str, operations: &[&str], rate: f64, burst: u32) {
        self.add_bucket(RateLimit::new(family, operations, rate, burst));
    }

    /// A bucket `"ssm-get"` for SSM's reads (`GetParametersByPath`,
    /// `GetParameters`, `GetParameter`).
    pub fn limit_ssm_reads(&self, rate: f64, burst: u32) {
        self.add_bucket(RateLimit::ssm_reads(rate, burst));
    }

    /// A bucket `"kms-crypto"` for KMS `Decrypt`, `GenerateDataKey` and
    /// `Encrypt`.
    pub fn limit_kms(&self, rate: f64, burst: u32) {
        self.add_bucket(RateLimit::kms_crypto(rate, burst));
    }

    fn add_bucket(&self, limit: RateLimit) {
        let now = std::time::Instant::now();
        self.state().buckets.push(Bucket::new(limit, now));
    }

    /// Removes every token bucket.
    pub fn clear_limits(&self) {
        self.state().buckets.clear();
    }

    /// Calls a bucket of `family` answered `ThrottlingException`.
    pub fn throttled(&self, family: &str) -> u64 {
        self.state().throttled.get(family).copied().unwrap_or(0)
    }

    /// Adds a rule after the existing ones.
    pub fn inject(&self, rule: FaultRule) {
        self.state().rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear_faults(&self) {
        self.state().rules.clear();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counts half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, Arc::clone(&ctx)));
                    // An error here is a dropped connection: injected, or the client's doing.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let target = req
        .headers()
        .get("x-amz-target")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let operation = match target.as_deref() {
        Some(t) => t.rsplit('.').next().unwrap_or(t).to_owned(),
        None => OTHER.to_owned(),
    };
    let fault = ctx
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(&operation, target.as_deref());
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    match fault {
        None => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Throttle) => {
            return Ok(json_error(400, "ThrottlingException", "Rate exceeded"));
        }
        Some(Fault::ServerError) => return Ok(json_error(500, "InternalServerError", "injected")),
        Some(Fault::Error {
            status,
            type_name,
            message,
        }) => return Ok(json_error(status, &type_name, &message)),
        // Returning an error makes hyper close the connection without writing a response.
        Some(Fault::Drop) => return Err(std::io::Error::other("injected connection drop")),
        Some(Fault::DropAnswer) => {
            drop(forward(parts, body, &ctx).await);
            return Err(std::io::Error::other("injected lost answer"));
        }
    }
    Ok(forward(parts, body, &ctx).await)
}

fn json_error(status: u16, type_name: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "__type": type_name, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, AMZ_JSON.parse().expect("static header value"));
    headers.insert(
        "x-amzn-requestid",
        "sidekey-fault-proxy".parse().expect("static header value"),
    );
    response
}

async fn forward(parts: request::Parts, body: Bytes, ctx: &Ctx) -> Response<Full<Bytes>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{path}", ctx.upstream).parse() {
        Ok(uri) => uri,
        Err(e) => return json_error(502, "ProxyError", &format!("bad upstream uri: {e}")),
    };
    let mut upstream_req = Request::new(Full::new(body));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    // Host is kept: the legacy client only adds one when it is missing.
    *upstream_req.headers_mut() = end_to_end(parts.headers);
    let response = match ctx.client.request(upstream_req).await {
        Ok(response) => response,
        Err(e) => return json_error(502, "ProxyError", &format!("upstream: {e}")),
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return json_error(502, "ProxyError", &format!("upstream body: {e}")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = end_to_end(parts.headers);
    response
}

/// The headers without the hop-by-hop ones (RFC 9110 section 7.6.1).
fn end_to_end(headers: HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ];
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut current: Option<HeaderName> = None;
    for (name, value) in headers {
        if let Some(name) = name {
            current = Some(name);
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        if HOP_BY_HOP.contains(&name.as_str()) || name.as_str() == "upgrade" {
            continue;
        }
        out.append(name.clone(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_with_budget_fires_in_insertion_order() {
        let mut state = State::default();
        state
            .rules
            .push(FaultRule::on("Decrypt", Fault::Throttle).times(1));
        state
            .rules
            .push(FaultRule::any(Fault::ServerError).times(2));
        let target = Some("TrentService.Decrypt");
        assert!(matches!(
            state.record("Decrypt", target),
            Some(Fault::Throttle)
        ));
        assert!(matches!(
            state.record("Decrypt", target),
            Some(Fault::ServerError)
        ));
        assert!(matches!(
            state.record(OTHER, None),
            Some(Fault::ServerError)
        ));
        assert!(state.record("Decrypt", target).is_none());
        assert_eq!(state.operations["Decrypt"], 3);
        assert_eq!(state.operations[OTHER], 1);
        assert_eq!(state.targets["TrentService.Decrypt"], 3);
    }

    #[test]
    fn a_bucket_throttles_past_its_burst_and_refills_at_its_rate() {
        let start = std::time::Instant::now();
        let mut state = State::default();
        state
            .buckets
            .push(Bucket::new(RateLimit::ssm_reads(10.0, 3), start));
        let by_path = Some("AmazonSSM.GetParametersByPath");
        // The burst: three calls pass, the fourth is throttled.
        for _ in 0..3 {
            assert!(state
                .record_at("GetParametersByPath", by_path, start)
                .is_none());
        }
        assert!(matches!(
            state.record_at("GetParameters", Some("AmazonSSM.GetParameters"), start),
            Some(Fault::Throttle)
        ));
        // Other operations are not covered.
        assert!(state
            .record_at("Decrypt", Some("TrentService.Decrypt"), start)
            .is_none());
        // 10/s: a token every 100 ms, never more than the burst.
        let later = start + Duration::from_millis(150);
        assert!(state
            .record_at("GetParametersByPath", by_path, later)
            .is_none());
        assert!(matches!(
            state.record_at("GetParametersByPath", by_path, later),
            Some(Fault::Throttle)
        ));
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(state
                .record_at("GetParametersByPath", by_path, much_later)
                .is_none());
        }
        assert!(state
            .record_at("GetParametersByPath", by_path, much_later)
            .is_some());
        assert_eq!(state.throttled["ssm-get"], 3);
        // Throttled calls are counted as calls.
        assert_eq!(state.operations["GetParametersByPath"], 9);
    }

    #[test]
    fn rules_fire_before_buckets_and_take_no_token() {
        let now = std::time::Instant::now();
        let mut state = State::default();
        state
            .buckets
            .push(Bucket::new(RateLimit::kms_crypto(1.0, 1), now));
        state
            .rules
            .push(FaultRule::on("Decrypt", Fault::ServerError).times(1));
        let t = Some("TrentService.Decrypt");
        assert!(matches!(
            state.record_at("Decrypt", t, now),
            Some(Fault::ServerError)
        ));
        assert!(state.record_at("Decrypt", t, now).is_none());
        assert!(matches!(
            state.record_at("Decrypt", t, now),
            Some(Fault::Throttle)
        ));
    }

    #[test]
    fn rules_match_the_operation_or_the_whole_target() {
        let rule = FaultRule::on("AmazonSSM.GetParameter", Fault::Drop);
        assert!(rule.matches("GetParameter", Some("AmazonSSM.GetParameter")));
        assert!(!rule.matches("GetParameter", Some("Other.GetParameter")));
        let rule = FaultRule::on("GetParameter", Fault::Drop);
        assert!(rule.matches("GetParameter", Some("AmazonSSM.GetParameter")));
        assert!(!rule.matches("GetParameters", Some("AmazonSSM.GetParameters")));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:1".parse().unwrap());
        headers.insert("connection", "keep-alive".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let out = end_to_end(headers);
        assert_eq!(out["host"], "127.0.0.1:1");
        assert!(out.get("connection").is_none());
        assert!(out.get("transfer-encoding").is_none());
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }
}
