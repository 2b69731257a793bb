//! What an image runs: its `Entrypoint` and `Cmd`, read from its registry
//! the way a container runtime would (OCI distribution API: the manifest,
//! the image index entry for the node's platform, then the config blob),
//! for containers that set no `command`.
//!
//! - Client: `oci-client` (reqwest on rustls, ring as the process's crypto
//!   provider). TLS is always verified, against the system roots plus a
//!   configured CA bundle; the only way around it is an explicit list of
//!   insecure (plain HTTP) registries, which must be on loopback (tests).
//! - Credentials: anonymous first, then those the caller passes (the
//!   pod's `imagePullSecrets` and its service account's, read through
//!   [`LazyCredentials`] only once anonymous access is refused), then the
//!   configured Docker `config.json`, while the registry answers 401. A
//!   failure names the pull secrets that could not be used and why
//!   (missing, wrong type, no entry for the registry), never a value.
//! - Guard (`Settings::guard`, the injector): an allow list, no loopback,
//!   private, link-local, unspecified or multicast addresses unless named
//!   exactly, every connection (redirects and token realms included)
//!   through a checking proxy in the process that connects only to the
//!   addresses it checked (no DNS rebinding); see the `guard` module.
//! - Platform: the pod's `kubernetes.io/arch` (and `kubernetes.io/os`) node
//!   selector when set; otherwise every Linux entry of an image index must
//!   agree, else the lookup fails listing them.
//! - Cache: by reference and platform; a tag is re-resolved after a TTL, a
//!   digest never; bounded (least recently used out).
//! - Budget: [`Registry::lookup_all`] never takes longer than the
//!   configured budget (a `tokio::time::timeout` around all of it).

mod guard;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{ImageIndexEntry, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
pub use sidekey_patch::ImageConfig;

/// Default lookup budget for one review (the webhook's own timeout is 5 s).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// Default time a tag's answer is reused before it is resolved again.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(300);
/// Default number of cached answers.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// The node platform a pod asks for (its node selector), if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `kubernetes.io/os` (only `linux` images are ever chosen otherwise).
    pub os: Option<String>,
    /// `kubernetes.io/arch`, e.g. `amd64`, `arm64`.
    pub arch: Option<String>,
}

impl Platform {
    /// From a pod's `nodeSelector` entries.
    pub fn from_node_selector<'a>(selector: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut p = Platform::default();
        for (k, v) in selector {
            match k {
                "kubernetes.io/os" => p.os = Some(v.to_owned()),
                "kubernetes.io/arch" => p.arch = Some(v.to_owned()),
                _ => {}
            }
        }
        p
    }

    fn os(&self) -> &str {
        self.os.as_deref().unwrap_or("linux")
    }
}

/// A username and password for one registry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials by registry host (`host[:port]`; Docker Hub is `docker.io`),
/// as a Docker `config.json` (or a `kubernetes.io/dockerconfigjson`
/// Secret's `.dockerconfigjson`) holds them.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_registry: BTreeMap<String, Vec<Credential>>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Not readable.
    #[error("cannot read the registry credentials file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a Docker config.
    #[error("{what} is not a Docker config.json ({{\"auths\": {{HOST: {{\"auth\": BASE64(user:password)}}}}}}): {reason}")]
    Invalid {
        /// The file or secret.
        what: String,
        /// Why (never a credential).
        reason: String,
    },
}

/// The type of a Secret holding a Docker `config.json`.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The type of a Secret holding a legacy `.dockercfg`.
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// The registry key of a `config.json` entry: `https://index.docker.io/v1/`
/// and friends are Docker Hub; a scheme and path are dropped.
fn registry_key(entry: &str) -> String {
    let host = entry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        h => h.to_ascii_lowercase(),
    }
}

impl Credentials {
    /// None.
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Reads a Docker `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Credentials::from_docker_config(&text, &path.display().to_string())
    }

    /// Parses a Docker `config.json`; `what` names it in errors.
    pub fn from_docker_config(json: &[u8], what: &str) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            what: what.to_owned(),
            reason,
        };
        let config: DockerConfig = serde_json::from_slice(json).map_err(|e| {
            // serde_json's message may quote a value: keep only where.
            invalid(format!(
                "invalid JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        Credentials::from_auths(config.auths, what)
    }

    /// Parses a legacy `.dockercfg` (`{HOST: {"auth": ...}}`, no `auths`
    /// wrapper); `what` names it in errors.
    pub fn from_dockercfg(json: &[u8], what: &str) -> Result<Self, CredentialsError> {
        let auths: BTreeMap<String, DockerAuth> =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Invalid {
                what: what.to_owned(),
                reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
            })?;
        Credentials::from_auths(auths, what)
    }

    /// From a pull secret's `type` and `data` (decoded): a
    /// `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`, or a
    /// legacy `kubernetes.io/dockercfg` Secret's `.dockercfg`. The error
    /// names `what` and the rule, never a value.
    pub fn from_pull_secret(
        secret_type: Option<&str>,
        data: &BTreeMap<String, Vec<u8>>,
        what: &str,
    ) -> Result<Self, String> {
        let (key, legacy) = match secret_type {
            Some(DOCKER_CONFIG_JSON) => (".dockerconfigjson", false),
            Some(DOCKER_CFG) => (".dockercfg", true),
            other => {
                return Err(format!(
                    "{what} is of type {}, not {DOCKER_CONFIG_JSON} (or the legacy {DOCKER_CFG})",
                    other.unwrap_or("(none)")
                ))
            }
        };
        let Some(bytes) = data.get(key) else {
            return Err(format!("{what} has no {key} key"));
        };
        let parsed = if legacy {
            Credentials::from_dockercfg(bytes, what)
        } else {
            Credentials::from_docker_config(bytes, what)
        };
        parsed.map_err(|e| e.to_string())
    }

    fn from_auths(
        auths: BTreeMap<String, DockerAuth>,
        what: &str,
    ) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            what: what.to_owned(),
            reason,
        };
        let mut out = Credentials::default();
        for (registry, a) in auths {
            let credential = match (a.auth, a.username, a.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| invalid(format!("the auth of {registry} is not base64")))?;
                    let decoded = String::from_utf8(decoded).map_err(|_| {
                        invalid(format!("the auth of {registry} is not UTF-8 once decoded"))
                    })?;
                    let Some((u, p)) = decoded.split_once(':') else {
                        return Err(invalid(format!(
                            "the auth of {registry} is not base64 of user:password"
                        )));
                    };
                    Credential {
                        username: u.to_owned(),
                        password: p.to_owned(),
                    }
                }
                (_, Some(username), Some(password)) => Credential { username, password },
                _ => continue,
            };
            out.add(&registry, credential);
        }
        Ok(out)
    }

    /// The registries it has credentials for.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }

    /// Adds one credential for `registry` (a `config.json` key).
    pub fn add(&mut self, registry: &str, credential: Credential) {
        let list = self.by_registry.entry(registry_key(registry)).or_default();
        if !list.contains(&credential) {
            list.push(credential);
        }
    }

    /// Adds all of `other`'s, after this one's.
    pub fn extend(&mut self, other: &Credentials) {
        for (r, list) in &other.by_registry {
            for c in list {
                self.add(r, c.clone());
            }
        }
    }

    /// Those for `registry` (as a reference names it, resolved).
    pub fn for_registry(&self, registry: &str) -> &[Credential] {
        self.by_registry
            .get(&registry_key(registry))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_registry.is_empty()
    }
}

/// How the lookup is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The most one [`Registry::lookup_all`] may take.
    pub budget: Duration,
    /// How long a tag's answer is reused.
    pub tag_ttl: Duration,
    /// The most answers cached.
    pub cache_entries: usize,
    /// PEM CA certificates trusted besides the system's.
    pub ca_bundle: Vec<u8>,
    /// Registries (`host:port`) spoken to over plain HTTP: loopback only.
    pub insecure: Vec<String>,
    /// Static credentials (a Docker `config.json`), tried after the
    /// pod's pull secrets.
    pub credentials: Credentials,
    /// Guard every connection (the injector: the pod's author picks the
    /// registry): see [`Settings::allow`]; loopback, private, link-local,
    /// unspecified and multicast addresses are refused unless that exact
    /// `host:port` is in `allow` or `insecure`; every connection (redirects
    /// and token realms included) goes through a checking proxy in the
    /// process. Off: the lookup connects wherever a reference says (the
    /// CLI on the operator's machine).
    pub guard: bool,
    /// With `guard`: when not empty, only registries matching one of these
    /// are contacted (`host`, `host:port`, `*.example.com`).
    pub allow: Vec<String>,
    /// The caller passes the pod's pull-secret credentials to
    /// [`Registry::lookup_all_with`] (the injector's
    /// `--registry-pull-secrets`).
    pub pod_pull_secrets: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            budget: DEFAULT_BUDGET,
            tag_ttl: DEFAULT_TAG_TTL,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            ca_bundle: Vec::new(),
            insecure: Vec::new(),
            credentials: Credentials::none(),
            guard: false,
            allow: Vec::new(),
            pod_pull_secrets: false,
        }
    }
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// An insecure registry that is not on loopback.
    #[error("insecure registry {0} refused: only loopback registries (127.0.0.1:PORT, [::1]:PORT, localhost:PORT) may be spoken to without TLS")]
    InsecureNotLoopback(String),
    /// The CA bundle holds no certificate.
    #[error("the registry CA bundle holds no PEM certificate")]
    EmptyCaBundle,
    /// An allow pattern that cannot be used.
    #[error("--registry-allow {pattern:?}: {reason}")]
    Allow {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
}

fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a lookup failed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The image reference cannot be parsed.
    InvalidReference,
    /// No such repository, tag or digest.
    NotFound,
    /// 401/403 with every credential tried.
    Unauthorized,
    /// The budget ran out.
    Timeout,
    /// No image for the platform, or platforms that disagree.
    Platform,
    /// Cannot connect, TLS failure, or another transport error.
    Unreachable,
    /// The registry answered something that is not an image.
    Invalid,
    /// The registry rules refused the host (`--registry-allow`, or a
    /// loopback/private/link-local/... address).
    Refused,
    /// The pod's pull secrets cannot be read or used (missing, wrong type,
    /// no entry for the registry), and no other credential was accepted.
    Credentials,
}

impl FailureReason {
    /// All, in order (for metrics).
    pub const ALL: [FailureReason; 9] = [
        FailureReason::InvalidReference,
        FailureReason::NotFound,
        FailureReason::Unauthorized,
        FailureReason::Timeout,
        FailureReason::Platform,
        FailureReason::Unreachable,
        FailureReason::Invalid,
        FailureReason::Refused,
        FailureReason::Credentials,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::InvalidReference => "invalid_reference",
            FailureReason::NotFound => "not_found",
            FailureReason::Unauthorized => "unauthorized",
            FailureReason::Timeout => "timeout",
            FailureReason::Platform => "platform",
            FailureReason::Unreachable => "unreachable",
            FailureReason::Invalid => "invalid",
            FailureReason::Refused => "refused",
            FailureReason::Credentials => "credentials",
        }
    }
}

/// A failed lookup: the image, the registry's answer, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// The image as the pod names it.
    pub image: String,
    /// For metrics.
    pub reason: FailureReason,
    /// What the registry answered (or why there is no answer).
    pub answer: String,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read the ENTRYPOINT and CMD of image {} from its registry: {}",
            self.image, self.answer
        )
    }
}

impl std::error::Error for LookupError {}

/// The latency histogram's bucket bounds, seconds.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Counters (read by the injector's `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    failures: [AtomicU64; 9],
    /// Per bucket of [`LATENCY_BUCKETS`], then +Inf.
    latency: [AtomicU64; 11],
    latency_micros: AtomicU64,
    requests: AtomicU64,
}

impl Stats {
    /// Image lookups asked for (one per container image).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
    /// Those answered from the cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }
    /// Failures for `reason`.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures[reason as usize].load(Ordering::Relaxed)
    }
    /// Registry lookups that went to the network (cache misses).
    pub fn fetches(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Cumulative histogram counts (per [`LATENCY_BUCKETS`], then +Inf),
    /// the sum in seconds, and the count, of fetch latencies.
    pub fn latency(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(11);
        for b in &self.latency {
            acc += b.load(Ordering::Relaxed);
            out.push(acc);
        }
        let sum = self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (out, sum, acc)
    }
    fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reference: String,
    platform: Platform,
    /// `None`: read anonymously or with the injector's own credentials
    /// (`--registry-auth`), so any pod may be answered from it. `Some`: read
    /// with a pod's pull secret; only a pod that brings the same credential
    /// is answered from it (a keyed hash of the credential, never the
    /// credential).
    scope: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    config: ImageConfig,
    /// None: a digest reference (never expires).
    expires: Option<Instant>,
    used: u64,
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    clock: u64,
}

/// Most registry clients kept (one per registry and credential: each
/// keeps its connections and tokens); past it they are all dropped.
const MAX_CLIENTS: usize = 64;

/// Clients by registry and credential (`Debug` shows the count only: the
/// keys hold passwords).
#[derive(Default)]
struct Clients(HashMap<ClientKey, (Client, Option<u64>)>);

/// A registry and, for basic auth, the user and password.
type ClientKey = (String, Option<(String, String)>);

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clients({})", self.0.len())
    }
}

/// The lookup: settings, cache, counters. Share it (`Arc`).
#[derive(Debug)]
pub struct Registry {
    settings: Settings,
    certificates: Vec<Certificate>,
    cache: Mutex<Cache>,
    clients: Mutex<Clients>,
    stats: Stats,
    guard: Option<Arc<guard::Guard>>,
    /// Keys the hash that scopes cache entries read with a pod's pull
    /// secret (random per process).
    scopes: std::hash::RandomState,
}

/// One container's image to look up.
#[derive(Debug, Clone)]
pub struct Need {
    /// The container's name.
    pub container: String,
    /// Its `image`.
    pub image: String,
}

/// Installs ring as rustls's process-wide crypto provider if none is (the
/// registry client is built without one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Registry {
    /// A lookup with `settings` (checked).
    pub fn new(settings: Settings) -> Result<Registry, SettingsError> {
        install_crypto_provider();
        if let Some(bad) = settings.insecure.iter().find(|h| !is_loopback(h)) {
            return Err(SettingsError::InsecureNotLoopback(bad.clone()));
        }
        let guard = if settings.guard {
            let g = guard::Guard::new(&settings.allow, &settings.insecure)
                .map_err(|(pattern, reason)| SettingsError::Allow { pattern, reason })?;
            Some(Arc::new(g))
        } else {
            None
        };
        let mut certificates = Vec::new();
        if !settings.ca_bundle.is_empty() {
            let text = String::from_utf8_lossy(&settings.ca_bundle);
            let mut current = String::new();
            for line in text.lines() {
                if line.starts_with("-----BEGIN CERTIFICATE-----") {
                    current.clear();
                }
                current.push_str(line);
                current.push('\n');
                if line.starts_with("-----END CERTIFICATE-----") {
                    certificates.push(Certificate {
                        encoding: CertificateEncoding::Pem,
                        data: std::mem::take(&mut current).into_bytes(),
                    });
                }
            }
            if certificates.is_empty() {
                return Err(SettingsError::EmptyCaBundle);
            }
        }
        Ok(Registry {
            settings,
            certificates,
            cache: Mutex::new(Cache::default()),
            clients: Mutex::new(Clients::default()),
            stats: Stats::default(),
            guard,
            scopes: std::hash::RandomState::new(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The client for `registry` with `auth` (built once: its connections
    /// and tokens are reused).
    /// With the guard, the client's proxy user (to read its refusals).
    fn client_for(&self, registry: &str, auth: &RegistryAuth) -> (Client, Option<u64>) {
        let who = match auth {
            RegistryAuth::Basic(u, p) => Some((u.clone(), p.clone())),
            _ => None,
        };
        let key = (registry.to_owned(), who);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.0.get(&key) {
            return c.clone();
        }
        if clients.0.len() >= MAX_CLIENTS {
            clients.0.clear();
        }
        let c = self.client();
        clients.0.insert(key, c.clone());
        c
    }

    fn client(&self) -> (Client, Option<u64>) {
        let protocol = if self.settings.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.settings.insecure.clone())
        };
        let (proxy, user) = match &self.guard {
            Some(g) => {
                let (url, user) = g.proxy_for_client();
                (Some(url), Some(user))
            }
            None => (None, None),
        };
        let client = Client::new(ClientConfig {
            https_proxy: proxy.clone(),
            http_proxy: proxy,
            no_proxy: None,
            protocol,
            extra_root_certificates: self.certificates.clone(),
            platform_resolver: None,
            connect_timeout: Some(self.settings.budget),
            read_timeout: Some(self.settings.budget),
            user_agent: concat!("sidekey-registry/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        (client, user)
    }

    /// Looks up every container's image, within the budget, concurrently.
    /// `extra`: credentials besides the configured ones, tried before them.
    /// Per container: its config or why not.
    pub async fn lookup_all(
        &self,
        needs: &[Need],
        platform: &Platform,
        extra: &Credentials,
    ) -> BTreeMap<String, Result<ImageConfig, LookupError>> {
        let lazy = LazyCredentials::ready(PodCredentials::from_credentials(extra.clone()));
        self.lookup_all_with(needs, platform, &lazy).await
    }

    /// [`Registry::lookup_all`] with the pod's pull-secret credentials,
    /// read only when a registry refuses anonymous access (and at most
    /// once for all the pod's images).
    pub async fn lookup_all_with(
        &self,
        needs: &[Need],
        platform: &Platform,
        pod: &LazyCredentials<'_>,
    ) -> BTreeMap<String, Result<ImageConfig, LookupError>> {
        let lookups = needs.iter().map(|n| async move {
            (
                n.container.clone(),
                self.lookup_with(&n.image, platform, pod).await,
            )
        });
        let all = futures_util::future::join_all(lookups);
        match tokio::time::timeout(self.settings.budget, all).await {
            Ok(done) => done.into_iter().collect(),
            Err(_) => needs
                .iter()
                .map(|n| {
                    let e = self.timed_out(&n.image);
                    (n.container.clone(), Err(e))
                })
                .collect(),
        }
    }

    fn timed_out(&self, image: &str) -> LookupError {
        self.stats.failures[FailureReason::Timeout as usize].fetch_add(1, Ordering::Relaxed);
        LookupError {
            image: image.to_owned(),
            reason: FailureReason::Timeout,
            answer: format!(
                "no answer within the lookup budget of {} (registry slow or unreachable)",
                humanize(self.settings.budget)
            ),
        }
    }

    /// Looks up one image (no budget of its own: see [`Registry::lookup_all`]).
    pub async fn lookup(
        &self,
        image: &str,
        platform: &Platform,
        extra: &Credentials,
    ) -> Result<ImageConfig, LookupError> {
        let lazy = LazyCredentials::ready(PodCredentials::from_credentials(extra.clone()));
        self.lookup_with(image, platform, &lazy).await
    }

    /// [`Registry::lookup`] with the pod's pull-secret credentials (read
    /// only if anonymous access is refused).
    pub async fn lookup_with(
        &self,
        image: &str,
        platform: &Platform,
        extra: &LazyCredentials<'_>,
    ) -> Result<ImageConfig, LookupError> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let fail = |reason: FailureReason, answer: String| {
            self.stats.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
            LookupError {
                image: image.to_owned(),
                reason,
                answer,
            }
        };
        let reference: Reference = image.parse().map_err(|e| {
            fail(
                FailureReason::InvalidReference,
                format!("not a valid image reference ({e})"),
            )
        })?;
        let key = Key {
            reference: reference.whole(),
            platform: platform.clone(),
            scope: None,
        };
        if let Some(hit) = self.cached(&key) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.fetch(&reference, platform, extra, &key).await;
        self.stats.observe(started.elapsed());
        match result.map_err(|(reason, answer)| fail(reason, answer))? {
            Fetched::Cached(config) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Ok(config)
            }
            Fetched::Read(config, scope) => {
                self.store(Key { scope, ..key }, &reference, config.clone());
                Ok(config)
            }
        }
    }

    /// The cache scope of an answer read with a pod's `credential`.
    fn scope_of(&self, credential: &Credential) -> u64 {
        use std::hash::BuildHasher;
        self.scopes
            .hash_one((credential.username.as_str(), credential.password.as_str()))
    }

    fn cached(&self, key: &Key) -> Option<ImageConfig> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let now = Instant::now();
        let clock = cache.clock;
        match cache.entries.get_mut(key) {
            Some(e) if e.expires.is_none_or(|t| now < t) => {
                e.used = clock;
                Some(e.config.clone())
            }
            Some(_) => {
                cache.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn store(&self, key: Key, reference: &Reference, config: ImageConfig) {
        if self.settings.cache_entries == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let now = Instant::now();
        let expires = reference
            .digest()
            .is_none()
            .then(|| now + self.settings.tag_ttl);
        while cache.entries.len() >= self.settings.cache_entries {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            cache.entries.remove(&oldest);
        }
        let used = cache.clock;
        cache.entries.insert(
            key,
            Entry {
                config,
                expires,
                used,
            },
        );
    }

    /// Number of cached answers.
    pub fn cached_entries(&self) -> usize {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.entries.len()
    }

    async fn fetch(
        &self,
        reference: &Reference,
        platform: &Platform,
        extra: &LazyCredentials<'_>,
        key: &Key,
    ) -> Result<Fetched, (FailureReason, String)> {
        let registry = reference.resolve_registry().to_owned();
        if let Some(g) = &self.guard {
            let default_port = if self.settings.insecure.iter().any(|h| h == &registry) {
                80
            } else {
                443
            };
            let Some((host, port)) = guard::split_host_port(&registry, default_port) else {
                return Err((
                    FailureReason::InvalidReference,
                    format!("{registry} is not a registry host"),
                ));
            };
            match g.check(&host, port).await {
                Ok(_) => {}
                Err(guard::Denied::Refused(m)) => {
                    return Err((FailureReason::Refused, format!("registry refused: {m}")))
                }
                Err(guard::Denied::Unresolved(m)) => {
                    return Err((FailureReason::Unreachable, m));
                }
            }
        }
        let mut tried = 0usize;
        let anonymous = RegistryAuth::Anonymous;
        let mut last = match self
            .try_auth(&registry, &anonymous, reference, platform)
            .await
        {
            Ok(c) => return Ok(Fetched::Read(c, None)),
            Err(Failure::Unauthorized(answer)) => answer,
            Err(Failure::Other(reason, answer)) => return Err((reason, answer)),
        };
        // Then the pod's pull secrets, then the static file.
        let pod = extra.get().await;
        let mut notes: Vec<String> = pod.problems.clone();
        let mut auths = Vec::new();
        for (what, creds) in &pod.sources {
            let list = creds.for_registry(&registry);
            if list.is_empty() {
                if let Some(what) = what {
                    let has: Vec<&str> = creds.registries().collect();
                    notes.push(format!(
                        "{what} has no entry for {registry} (it has: {})",
                        if has.is_empty() {
                            "none".to_owned()
                        } else {
                            has.join(", ")
                        }
                    ));
                }
            }
            auths.extend(list.iter().map(|c| (c.clone(), true)));
        }
        auths.extend(
            self.settings
                .credentials
                .for_registry(&registry)
                .iter()
                .map(|c| (c.clone(), false)),
        );
        let mut seen = Vec::new();
        for (c, from_pod) in auths {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c.clone());
            // What a pod's pull secret read is kept for that credential
            // only: another namespace's pod must not get a private image's
            // command without credentials of its own.
            let scope = from_pod.then(|| self.scope_of(&c));
            if scope.is_some() {
                let scoped = Key {
                    scope,
                    ..key.clone()
                };
                if let Some(hit) = self.cached(&scoped) {
                    return Ok(Fetched::Cached(hit));
                }
            }
            tried += 1;
            let auth = RegistryAuth::Basic(c.username, c.password);
            match self.try_auth(&registry, &auth, reference, platform).await {
                Ok(config) => return Ok(Fetched::Read(config, scope)),
                Err(Failure::Unauthorized(answer)) => last = answer,
                Err(Failure::Other(reason, answer)) => return Err((reason, answer)),
            }
        }
        let tried = if tried == 0 {
            "anonymously (no credentials are configured for this registry)".to_owned()
        } else {
            format!("anonymously and with {tried} credential(s)")
        };
        let (reason, notes) = if notes.is_empty() {
            (FailureReason::Unauthorized, String::new())
        } else {
            (
                FailureReason::Credentials,
                format!("; pull secrets: {}", notes.join("; ")),
            )
        };
        Err((
            reason,
            format!("{registry} refused access {tried}: {last}{notes}"),
        ))
    }

    /// One attempt with `auth`; a connection the guard refused is
    /// reported as such, whatever the client made of it.
    async fn try_auth(
        &self,
        registry: &str,
        auth: &RegistryAuth,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ImageConfig, Failure> {
        let (client, user) = self.client_for(registry, auth);
        let started = Instant::now();
        let result = fetch_with(&client, auth, reference, platform).await;
        if result.is_err() {
            if let (Some(g), Some(user)) = (&self.guard, user) {
                match g.take_refusal(user, started) {
                    Some(guard::Refusal::Refused(m)) => {
                        return Err(Failure::Other(
                            FailureReason::Refused,
                            format!("a connection of the lookup was refused: {m}"),
                        ));
                    }
                    Some(guard::Refusal::Unreachable(m)) => {
                        return Err(Failure::Other(FailureReason::Unreachable, m));
                    }
                    None => {}
                }
            }
        }
        result
    }
}

/// What [`Registry::fetch`] got: an answer read from the registry (with
/// the cache scope it may be kept under), or one found in the cache under
/// the scope of a pod's credential.
enum Fetched {
    Read(ImageConfig, Option<u64>),
    Cached(ImageConfig),
}

/// Credentials from the pod (its pull secrets and its service account's),
/// each with where it came from, and the problems met reading them (a
/// missing secret, a wrong type: never a value).
#[derive(Debug, Clone, Default)]
pub struct PodCredentials {
    sources: Vec<(Option<String>, Credentials)>,
    problems: Vec<String>,
}

impl PodCredentials {
    /// None.
    pub fn new() -> Self {
        PodCredentials::default()
    }

    /// Unnamed credentials (no "no entry" note when they have none for a
    /// registry).
    pub fn from_credentials(c: Credentials) -> Self {
        PodCredentials {
            sources: vec![(None, c)],
            problems: Vec::new(),
        }
    }

    /// Those of one pull secret; `what` names it (e.g. `pull secret
    /// team-a/regcred`) in errors.
    pub fn add(&mut self, what: impl Into<String>, c: Credentials) {
        self.sources.push((Some(what.into()), c));
    }

    /// A problem to report if no credential is accepted (names the secret
    /// and the rule, never a value).
    pub fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// The problems so far.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The number of credential sources.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

/// A future giving the pod's credentials.
pub type PodCredentialsFuture<'a> = Pin<Box<dyn Future<Output = PodCredentials> + Send + 'a>>;

/// The pod's credentials, read at most once and only when first needed
/// (a registry refused anonymous access).
pub struct LazyCredentials<'a> {
    cell: tokio::sync::OnceCell<PodCredentials>,
    make: Mutex<Option<PodCredentialsFuture<'a>>>,
}

impl fmt::Debug for LazyCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyCredentials(read: {})", self.cell.initialized())
    }
}

impl<'a> LazyCredentials<'a> {
    /// Read by `make` when first needed.
    pub fn new(make: PodCredentialsFuture<'a>) -> Self {
        LazyCredentials {
            cell: tokio::sync::OnceCell::new(),
            make: Mutex::new(Some(make)),
        }
    }

    /// Already known.
    pub fn ready(c: PodCredentials) -> Self {
        LazyCredentials {
            cell: tokio::sync::OnceCell::new_with(Some(c)),
            make: Mutex::new(None),
        }
    }

    /// None.
    pub fn none() -> Self {
        LazyCredentials::ready(PodCredentials::new())
    }

    /// Whether they were read.
    pub fn was_read(&self) -> bool {
        self.cell.initialized()
    }

    /// The credentials (read now if not yet).
    pub async fn get(&self) -> &PodCredentials {
        self.cell
            .get_or_init(|| async {
                let make = self.make.lock().unwrap_or_else(|p| p.into_inner()).take();
                match make {
                    Some(f) => f.await,
                    None => PodCredentials::new(),
                }
            })
            .await
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

enum Failure {
    Unauthorized(String),
    Other(FailureReason, String),
}

/// The registry's answer, as words for a user.
fn classify(e: OciDistributionError) -> Failure {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { url } => {
            Failure::Unauthorized(format!("401 Unauthorized for {url}"))
        }
        E::AuthenticationFailure(m) => Failure::Unauthorized(format!("authentication failed: {m}")),
        E::ImageManifestNotFoundError(m) => {
            Failure::Other(FailureReason::NotFound, format!("manifest unknown: {m}"))
        }
        E::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            let text = codes.join("; ");
            let reason = if text.contains("Unknown") {
                FailureReason::NotFound
            } else if text.contains("Unauthorized") || text.contains("Denied") {
                return Failure::Unauthorized(format!("{text} ({url})"));
            } else {
                FailureReason::Invalid
            };
            Failure::Other(reason, format!("{text} ({url})"))
        }
        E::ServerError { code, url, message } => {
            let reason = match code {
                401 | 403 => {
                    return Failure::Unauthorized(format!("HTTP {code} for {url}: {message}"))
                }
                404 => FailureReason::NotFound,
                _ => FailureReason::Invalid,
            };
            Failure::Other(
                reason,
                format!("HTTP {code} for {url}: {}", first_line(&message)),
            )
        }
        E::RequestError(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            let reason = if e.is_timeout() {
                FailureReason::Timeout
            } else {
                FailureReason::Unreachable
            };
            Failure::Other(reason, text)
        }
        other => Failure::Other(FailureReason::Invalid, other.to_string()),
    }
}

fn first_line(s: &str) -> &str {
    let l = s.lines().next().unwrap_or("");
    &l[..l.len().min(300)]
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ConfigSection>,
}

#[derive(Deserialize)]
struct ConfigSection {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

async fn config_of(
    client: &Client,
    reference: &Reference,
    manifest: &oci_client::manifest::OciImageManifest,
) -> Result<ImageConfig, Failure> {
    let mut blob = Vec::new();
    client
        .pull_blob(reference, &manifest.config, &mut blob)
        .await
        .map_err(classify)?;
    let file: ConfigFile = serde_json::from_slice(&blob).map_err(|e| {
        Failure::Other(
            FailureReason::Invalid,
            format!(
                "the image config blob {} is not an image config: {e}",
                manifest.config.digest
            ),
        )
    })?;
    let section = file.config.unwrap_or(ConfigSection {
        entrypoint: None,
        cmd: None,
    });
    Ok(ImageConfig {
        entrypoint: section.entrypoint.unwrap_or_default(),
        cmd: section.cmd.unwrap_or_default(),
    })
}

fn describe(c: &ImageConfig) -> String {
    format!(
        "ENTRYPOINT {} CMD {}",
        serde_json::to_string(&c.entrypoint).unwrap_or_default(),
        serde_json::to_string(&c.cmd).unwrap_or_default()
    )
}

fn platform_name(e: &ImageIndexEntry) -> String {
    match &e.platform {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => "unknown".to_owned(),
    }
}

async fn fetch_with(
    client: &Client,
    auth: &RegistryAuth,
    reference: &Reference,
    platform: &Platform,
) -> Result<ImageConfig, Failure> {
    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    let (manifest, _digest) = client
        .pull_manifest(reference, auth)
        .await
        .map_err(classify)?;
    let index = match manifest {
        OciManifest::Image(m) => return config_of(client, reference, &m).await,
        OciManifest::ImageIndex(index) => index,
    };
    let os = platform.os();
    let candidates: Vec<&ImageIndexEntry> = index
        .manifests
        .iter()
        .filter(|e| {
            e.platform.as_ref().is_some_and(|p| {
                p.os.to_string() == os
                    && platform
                        .arch
                        .as_deref()
                        .is_none_or(|a| p.architecture.to_string() == a)
            })
        })
        .collect();
    if candidates.is_empty() {
        let have: Vec<String> = index.manifests.iter().map(platform_name).collect();
        let want = match &platform.arch {
            Some(a) => format!("{os}/{a} image (the pod's node selector kubernetes.io/arch)"),
            None => format!("{os} image"),
        };
        return Err(Failure::Other(
            FailureReason::Platform,
            format!("the image index has no {want}; it has: {}", have.join(", ")),
        ));
    }
    let mut configs = Vec::new();
    for entry in &candidates {
        let by_digest = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            entry.digest.clone(),
        );
        let (m, _) = client
            .pull_manifest(&by_digest, auth)
            .await
            .map_err(classify)?;
        let OciManifest::Image(m) = m else {
            return Err(Failure::Other(
                FailureReason::Invalid,
                format!("the index entry {} is itself an index", entry.digest),
            ));
        };
        configs.push((
            platform_name(entry),
            config_of(client, &by_digest, &m).await?,
        ));
    }
    let first = configs[0].1.clone();
    if configs.iter().all(|(_, c)| *c == first) {
        return Ok(first);
    }
    let listed: Vec<String> = configs
        .iter()
        .map(|(p, c)| format!("{p}: {}", describe(c)))
        .collect();
    Err(Failure::Other(
        FailureReason::Platform,
        format!(
            "the image's platforms run different commands ({}), and the pod does not pick one with the node selector kubernetes.io/arch",
            listed.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_parses_auth_and_username_password() {
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},"127.0.0.1:5000":{"username":"u","password":"p"}}}"#;
        let c = Credentials::from_docker_config(json, "test").unwrap();
        assert_eq!(c.for_registry("docker.io")[0].username, "user");
        assert_eq!(c.for_registry("docker.io")[0].password, "pa:ss");
        assert_eq!(c.for_registry("127.0.0.1:5000")[0].password, "p");
        assert!(c.for_registry("ghcr.io").is_empty());
    }

    #[test]
    fn docker_config_errors_name_the_file_and_never_the_value() {
        let json = br#"{"auths":{"r.example":{"auth":"not base64 s3cr3t!"}}}"#;
        let e = Credentials::from_docker_config(json, "/x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/x/config.json") && e.contains("r.example"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = Credentials::from_docker_config(br#"{"auths": "s3cr3t"}"#, "f")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn pull_secrets_of_both_types_and_errors_naming_the_secret_and_the_rule() {
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_owned(),
            br#"{"auths":{"r.example:5000":{"username":"u","password":"s3cr3t"}}}"#.to_vec(),
        );
        let c = Credentials::from_pull_secret(Some(DOCKER_CONFIG_JSON), &data, "pull secret a/b")
            .unwrap();
        assert_eq!(c.for_registry("r.example:5000")[0].password, "s3cr3t");
        let mut legacy = BTreeMap::new();
        legacy.insert(
            ".dockercfg".to_owned(),
            br#"{"https://index.docker.io/v1/":{"auth":"dXNlcjpzM2NyM3Q="}}"#.to_vec(),
        );
        let c =
            Credentials::from_pull_secret(Some(DOCKER_CFG), &legacy, "pull secret a/old").unwrap();
        assert_eq!(c.for_registry("docker.io")[0].username, "user");
        let e =
            Credentials::from_pull_secret(Some("Opaque"), &data, "pull secret a/b").unwrap_err();
        assert!(
            e.contains("pull secret a/b is of type Opaque, not kubernetes.io/dockerconfigjson"),
            "{e}"
        );
        let e =
            Credentials::from_pull_secret(Some(DOCKER_CFG), &data, "pull secret a/b").unwrap_err();
        assert!(e.contains("pull secret a/b has no .dockercfg key"), "{e}");
        data.insert(
            ".dockerconfigjson".to_owned(),
            b"{\"auths\": s3cr3t".to_vec(),
        );
        let e = Credentials::from_pull_secret(Some(DOCKER_CONFIG_JSON), &data, "pull secret a/b")
            .unwrap_err();
        assert!(
            e.contains("pull secret a/b") && !e.contains("s3cr3t"),
            "{e}"
        );
    }

    #[test]
    fn credential_debug_hides_the_password() {
        let c = Credential {
            username: "u".into(),
            password: "s3cr3t".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn insecure_registries_must_be_loopback() {
        for ok in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000"] {
            let s = Settings {
                insecure: vec![ok.into()],
                ..Settings::default()
            };
            assert!(Registry::new(s).is_ok(), "{ok}");
        }
        for bad in ["registry.example:5000", "10.0.0.1:5000", "docker.io"] {
            let s = Settings {
                insecure: vec![bad.into()],
                ..Settings::default()
            };
            let e = Registry::new(s).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("loopback"), "{e}");
        }
    }

    #[test]
    fn platform_from_node_selector() {
        let p = Platform::from_node_selector([("kubernetes.io/arch", "arm64"), ("disk", "ssd")]);
        assert_eq!(p.arch.as_deref(), Some("arm64"));
        assert_eq!(p.os(), "linux");
    }

    #[tokio::test]
    async fn invalid_reference_is_refused_naming_the_image() {
        let r = Registry::new(Settings::default()).unwrap();
        let e = r
            .lookup("UPPER/Case:tag", &Platform::default(), &Credentials::none())
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::InvalidReference);
        assert!(e.to_string().contains("UPPER/Case:tag"), "{e}");
        assert_eq!(r.stats().failures(FailureReason::InvalidReference), 1);
    }
}
