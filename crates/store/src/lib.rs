//! sidekey's stores: where secrets live and who holds their keys.
//!
//! Two backends behind one [`Store`]: AWS SSM Parameter Store with KMS
//! (production) and an embedded local store with a local master key
//! (laptops, the quick start, fast tests). Both store sidekey's `sk2.`
//! envelopes; SSM also serves native SecureStrings written by other tools.
//!
//! # What a read trusts
//!
//! - A native SecureString: SSM decrypted it with KMS, so its writer had
//!   KMS rights. Read as it is.
//! - An `sk2.` envelope: opened with the configured key, then its bound
//!   version must equal the parameter's `Version` and its write time must
//!   be within [`WRITE_TIME_TOLERANCE`] of the parameter's
//!   `LastModifiedDate`; otherwise [`StoreError::Refused`] ("sealed for
//!   version 3 but stored as version 5"). A value copied over a later
//!   version, or replayed into a deleted and re-created parameter, fails.
//! - A legacy `sk1.` envelope or a plain String parameter: refused unless
//!   the store allows legacy values ([`Store::with_allow_legacy`]; the
//!   CLI's `--allow-legacy`, the agent's `SIDEKEY_ALLOW_LEGACY=true`), for
//!   migrations. `sidekey rekey --allow-legacy` re-seals them as `sk2.`.
//!
//! # What a write does
//!
//! It reads the service's parameters (their versions, and the data key to
//! reuse), seals each value for the version it will become (current + 1)
//! and writes it; when SSM answers another version (a concurrent writer),
//! it seals for the next one and writes again, a few times at most. A
//! PutParameter whose answer is lost (a timeout, a dropped connection, a
//! 5xx) is not simply sent again: the parameter is read first, and if it
//! holds the envelope sent (unique: a fresh nonce each), that version is
//! the write's ([`Retry::run_checked`]). The
//! data key reused is the one of the service's newest authenticated `sk2.`
//! envelope: one that opens and matches its own parameter's version and
//! time (never an `sk1.`, a plain or a mismatched value), so a replayed
//! pre-rekey envelope cannot bring an old data key back.
//!
//! This is the I/O edge: it depends on the pure crates (`sidekey-model`,
//! `sidekey-envelope`) and on tokio and the AWS SDK; no pure crate depends
//! on it. Values are [`Secret`]s from the moment they are read; no error or
//! log line here carries one.

mod aws_config;
mod calls;
mod config;
mod error;
mod http;
mod keys;
mod local;
mod params;
mod retry;
mod ssm;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sidekey_envelope::{Binding, Bound, DataKey, Envelope, Secret};
use sidekey_model::{Environment, Key, ParamPath, Prefix, Selector, Service};
use sidekey_wire::rfc3339::unix_seconds_text as rfc3339;
use tokio::time::Instant;

pub use aws_config::AwsSettings;
pub use calls::{AwsCallCounter, AwsCalls};
pub use config::{parse_timeout, Backend};
pub use error::{Result, StoreError};
pub use http::{bundled_roots_pem, read_ca_file, CaFileError, StoreHttp};
pub use keys::{Keys, NewDataKey};
pub use local::{load_master_key, LocalParams};
pub use params::{
    HistoryEntry, ParamInfo, ParamType, Params, PutRequest, StoredParam, BATCH, MAX_VALUE_BYTES,
};
pub use retry::{Retry, Throttle};
pub use ssm::SsmParams;

/// How far apart an `sk2.` envelope's write time and its parameter's
/// `LastModifiedDate` may be: the writer seals just before SSM stamps the
/// write, so this covers clock skew between the writer and AWS and a slow
/// write. A value replayed into a parameter that was deleted and re-created
/// (its version numbers start again) carries its old write time and is
/// refused once it is older than this; within it, a replay is possible
/// only for someone who may delete and write the parameter again.
pub const WRITE_TIME_TOLERANCE: Duration = Duration::from_secs(15 * 60);

/// How often a write seals again when SSM answers another version than the
/// one it sealed for (concurrent writers).
pub const MAX_WRITE_ATTEMPTS: u32 = 5;

/// How a value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// sidekey's `sk2.` envelope, checked against its parameter.
    Envelope,
    /// A legacy `sk1.` envelope (read only with the legacy opt-in).
    LegacyEnvelope,
    /// A native SecureString (SSM decrypts it).
    Native,
    /// A plain String parameter written by another tool (read only with
    /// the legacy opt-in).
    Plain,
}

impl ValueKind {
    /// Short name for listings and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Envelope => "envelope",
            ValueKind::LegacyEnvelope => "sk1",
            ValueKind::Native => "native",
            ValueKind::Plain => "plain",
        }
    }
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    pub prefix: Prefix,
    /// KMS key id, ARN or alias (ignored by the local store).
    pub kms_key: String,
    pub aws: AwsSettings,
    /// The overall deadline of one command or fetch, retries included.
    pub timeout: Duration,
    /// Recorded as the author of local writes.
    pub actor: String,
    /// Read plain String parameters and legacy `sk1.` envelopes (for a
    /// migration); see [`Store::with_allow_legacy`].
    pub allow_legacy: bool,
}

/// What [`Store::open_with`] does when the local store has no master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKey {
    /// Create one (the CLI: the first write makes the store).
    CreateIfMissing,
    /// Fail with [`StoreError::NoMasterKey`] (the agent only reads).
    MustExist,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Write a native SecureString instead of an envelope.
    pub native: bool,
    /// Move this label to the new version.
    pub label: Option<String>,
}

/// A value read and decrypted.
#[derive(Debug)]
pub struct Revealed {
    pub path: ParamPath,
    pub value: Secret,
    pub version: u64,
    pub kind: ValueKind,
    pub last_modified: Option<SystemTime>,
}

/// Metadata of one key of an environment: never a value.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub path: ParamPath,
    pub version: u64,
    pub last_modified: Option<SystemTime>,
    pub last_modified_user: Option<String>,
}

/// A written version.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: ParamPath,
    pub version: u64,
}

/// The data key a service's writes use.
#[derive(Debug)]
struct WriteKey {
    key: Arc<DataKey>,
    wrapped: Vec<u8>,
    key_id: String,
}

type ReadCacheKey = (Vec<u8>, String, String);
/// One unwrapped data key, filled once: concurrent readers of the same key
/// wait for the one KMS call in flight instead of making their own.
type ReadKeySlot = Arc<tokio::sync::OnceCell<Arc<DataKey>>>;

/// The secrets store: envelopes over a parameter backend and a key backend.
#[derive(Debug)]
pub struct Store {
    params: Params,
    keys: Keys,
    prefix: Prefix,
    timeout: Duration,
    deadline: Mutex<Instant>,
    throttle: Arc<Throttle>,
    key_throttle: Arc<Throttle>,
    write_keys: Mutex<HashMap<(String, String), Arc<WriteKey>>>,
    read_keys: Mutex<HashMap<ReadCacheKey, ReadKeySlot>>,
    rng: ring::rand::SystemRandom,
    allow_legacy: bool,
}

impl Store {
    /// Opens the configured store over the SDK's default HTTPS client. The
    /// local store's master key is created on first use; SSM needs nothing
    /// up front (no call is made here).
    pub async fn open(config: &StoreConfig) -> Result<Store> {
        Store::open_with(config, &StoreHttp::default(), MasterKey::CreateIfMissing).await
    }

    /// Opens the configured store: SSM and KMS through the HTTP client
    /// `http` describes (the one place their clients are made), or the
    /// local store, whose master key is created or must exist as `master`
    /// says. No AWS call is made here; an SSM store without a region is
    /// [`StoreError::NoRegion`].
    pub async fn open_with(
        config: &StoreConfig,
        http: &StoreHttp,
        master: MasterKey,
    ) -> Result<Store> {
        let (params, keys) = match &config.backend {
            Backend::Ssm => {
                let sdk = aws_config::sdk_config(&config.aws, http).await?;
                if sdk.region().is_none() {
                    return Err(StoreError::NoRegion);
                }
                (
                    Params::Ssm(SsmParams::new(aws_sdk_ssm::Client::new(&sdk))),
                    Keys::Kms {
                        client: aws_sdk_kms::Client::new(&sdk),
                        key: config.kms_key.clone(),
                    },
                )
            }
            Backend::File(dir) => {
                let create = matches!(master, MasterKey::CreateIfMissing);
                let master = load_master_key(dir, create)?
                    .ok_or_else(|| StoreError::NoMasterKey { dir: dir.clone() })?;
                (
                    Params::Local(LocalParams::new(dir.clone(), config.actor.clone())),
                    Keys::Local(master),
                )
            }
        };
        Ok(
            Store::from_parts(params, keys, config.prefix.clone(), config.timeout)
                .with_allow_legacy(config.allow_legacy),
        )
    }

    /// A store over given backends.
    pub fn from_parts(params: Params, keys: Keys, prefix: Prefix, timeout: Duration) -> Store {
        Store {
            params,
            keys,
            prefix,
            timeout,
            deadline: Mutex::new(Instant::now() + timeout),
            throttle: Arc::default(),
            key_throttle: Arc::default(),
            write_keys: Mutex::new(HashMap::new()),
            read_keys: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
            allow_legacy: false,
        }
    }

    /// Whether reads accept plain String parameters and legacy `sk1.`
    /// envelopes. Off by default: a plain String can be written by anyone
    /// with `ssm:PutParameter` (no KMS rights needed), and an `sk1.` value
    /// binds no version, so a rolled-back copy cannot be told apart. Turn it
    /// on only to migrate (`sidekey rekey` re-seals every key as `sk2.`).
    pub fn with_allow_legacy(mut self, allow: bool) -> Store {
        self.allow_legacy = allow;
        self
    }

    /// Whether legacy values are read (see [`Store::with_allow_legacy`]).
    pub fn allows_legacy(&self) -> bool {
        self.allow_legacy
    }

    /// The parameter prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The configured key (KMS key id, ARN or alias; local fingerprint).
    pub fn key_id(&self) -> String {
        self.keys.configured()
    }

    /// The parameter backend, for callers that plan their own reads.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Starts a new overall deadline (a long-running agent calls this
    /// before each refresh), and a new round of calls: the first call to
    /// each service goes alone again (see [`Throttle::reopen`]).
    pub fn restart_deadline(&self) {
        *lock(&self.deadline) = Instant::now() + self.timeout;
        self.throttle.reopen();
        self.key_throttle.reopen();
    }

    /// The retry policy of parameter calls for the current deadline,
    /// sharing what this store's parameter calls learn about throttling.
    pub fn retry(&self) -> Retry {
        Retry::until(*lock(&self.deadline)).sharing(Arc::clone(&self.throttle))
    }

    /// The same for key calls: KMS throttles on its own quotas, so an
    /// answer from it says nothing about Parameter Store's, and the other
    /// way round.
    fn key_retry(&self) -> Retry {
        Retry::until(*lock(&self.deadline)).sharing(Arc::clone(&self.key_throttle))
    }

    fn path(&self, env: &Environment, service: &Service, key: &Key) -> ParamPath {
        ParamPath::new(&self.prefix, env, service, key)
    }

    /// Writes `value` as a new version of ENV/SERVICE/KEY.
    pub async fn put(
        &self,
        env: &Environment,
        service: &Service,
        key: &Key,
        value: &Secret,
        options: &PutOptions,
    ) -> Result<Written> {
        let mut written = self
            .put_many(env, service, &[(key.clone(), value)], options)
            .await?;
        written
            .pop()
            .ok_or_else(|| StoreError::Invalid("nothing was written".to_owned()))
    }

    /// Writes several keys of one service with one data key. Every value is
    /// checked (empty, size) before anything is written.
    pub async fn put_many(
        &self,
        env: &Environment,
        service: &Service,
        items: &[(Key, &Secret)],
        options: &PutOptions,
    ) -> Result<Vec<Written>> {
        for (key, value) in items {
            check_not_empty(&self.path(env, service, key), value)?;
        }
        if options.native {
            return self.put_native(env, service, items, options).await;
        }
        // The service as it is: each key's current version (the next one is
        // what a value is sealed for) and the data key to reuse.
        let service_path = sidekey_model::service_path(&self.prefix, env, service);
        let current = self.params.get_by_path(&service_path, self.retry()).await?;
        let versions: HashMap<String, u64> = current
            .iter()
            .map(|p| (p.name.clone(), p.version))
            .collect();
        let write_key = self.write_key(env, service, &current).await?;
        drop(current);
        let (kid, wrapped) = (write_key.key_id.len(), write_key.wrapped.len());
        for (key, value) in items {
            let path = self.path(env, service, key);
            let size = Envelope::encoded_len_sk2(value.len(), kid, wrapped);
            if size > MAX_VALUE_BYTES {
                let max_value = (0..MAX_VALUE_BYTES)
                    .rev()
                    .find(|&n| Envelope::encoded_len_sk2(n, kid, wrapped) <= MAX_VALUE_BYTES)
                    .unwrap_or(0);
                check_size(&path, value.len(), size, max_value)?;
            }
        }
        let mut written = Vec::with_capacity(items.len());
        for (key, value) in items {
            let path = self.path(env, service, key);
            let name = path.to_string();
            let binding = Binding {
                environment: env.as_str(),
                service: service.as_str(),
                key: key.as_str(),
            };
            let mut expected = versions.get(&name).copied().unwrap_or(0) + 1;
            let mut attempt = 1;
            let version = loop {
                let bound = Bound {
                    version: expected,
                    written: unix_seconds(SystemTime::now()),
                };
                let envelope = sidekey_envelope::seal_bound(
                    &write_key.key,
                    &write_key.key_id,
                    &write_key.wrapped,
                    binding,
                    bound,
                    value.expose(),
                    &self.rng,
                )
                .map_err(|e| StoreError::Invalid(format!("cannot seal {path}: {e}")))?;
                let bytes = envelope.encode().into_bytes();
                let request = PutRequest {
                    name: &name,
                    value: &bytes,
                    param_type: ParamType::String,
                    kms_key: None,
                    overwrite: true,
                };
                let got = self
                    .params
                    .put(&request, self.retry())
                    .await
                    .map_err(|e| partial(e, &written))?;
                if got == expected {
                    break got;
                }
                if attempt >= MAX_WRITE_ATTEMPTS {
                    return Err(partial(
                        StoreError::Invalid(format!(
                            "{name}: sealed for version {expected} but SSM stored it as version {got} \
                             (another writer is writing the same key); gave up after {attempt} attempts: \
                             version {got} will be refused on read, write the value again"
                        )),
                        &written,
                    ));
                }
                tracing::warn!(parameter = %name, sealed_for = expected, stored_as = got,
                    "another writer wrote this key at the same time: sealing for the next version");
                expected = got + 1;
                attempt += 1;
            };
            if let Some(label) = &options.label {
                self.params
                    .label(&name, version, label, self.retry())
                    .await?;
            }
            tracing::debug!(parameter = %name, version, "written");
            written.push(Written { path, version });
        }
        Ok(written)
    }

    /// Writes native SecureStrings: SSM encrypts them with the configured
    /// KMS key, so their writer needs KMS rights; they bind no version.
    async fn put_native(
        &self,
        env: &Environment,
        service: &Service,
        items: &[(Key, &Secret)],
        options: &PutOptions,
    ) -> Result<Vec<Written>> {
        let mut stored: Vec<(ParamPath, Vec<u8>)> = Vec::with_capacity(items.len());
        for (key, value) in items {
            let path = self.path(env, service, key);
            check_size(&path, value.len(), value.len(), MAX_VALUE_BYTES)?;
            if std::str::from_utf8(value.expose()).is_err() {
                return Err(StoreError::Invalid(format!(
                    "value for {path} is not valid UTF-8: a native SecureString holds text only (drop --native to store any bytes)"
                )));
            }
            stored.push((path, value.expose().to_vec()));
        }
        let kms_key = self.key_id();
        let mut written = Vec::with_capacity(stored.len());
        for (path, bytes) in &stored {
            let name = path.to_string();
            let request = PutRequest {
                name: &name,
                value: bytes,
                param_type: ParamType::SecureString,
                kms_key: Some(kms_key.as_str()),
                overwrite: true,
            };
            let version = self
                .params
                .put(&request, self.retry())
                .await
                .map_err(|e| partial(e, &written))?;
            if let Some(label) = &options.label {
                self.params
                    .label(&name, version, label, self.retry())
                    .await?;
            }
            tracing::debug!(parameter = %name, version, "written");
            written.push(Written {
                path: path.clone(),
                version,
            });
        }
        Ok(written)
    }

    /// The data key new writes to (env, service) use: the key of the
    /// service's newest authenticated `sk2.` envelope (one KMS Decrypt),
    /// else a new one (one KMS GenerateDataKey). Cached for the life of
    /// this store.
    ///
    /// "Authenticated": the envelope's bound version equals its parameter's
    /// version, its write time is within [`WRITE_TIME_TOLERANCE`] of the
    /// parameter's modification time, and it opens under the configured
    /// key. Among those, the newest write time wins. A legacy `sk1.` value,
    /// a plain value, or an envelope replayed over a later version is never
    /// a source: it could carry a data key from before a rekey.
    async fn write_key(
        &self,
        env: &Environment,
        service: &Service,
        current: &[StoredParam],
    ) -> Result<Arc<WriteKey>> {
        let cache_key = (env.as_str().to_owned(), service.as_str().to_owned());
        if let Some(k) = lock(&self.write_keys).get(&cache_key) {
            return Ok(k.clone());
        }
        let mut candidates: Vec<(ParamPath, Envelope, Bound)> = current
            .iter()
            .filter_map(|p| {
                let envelope = as_envelope(p)?;
                let bound = envelope.bound?;
                check_bound(&p.name, bound, p.version, p.last_modified).ok()?;
                let path = ParamPath::parse(&self.prefix, &p.name).ok()?;
                (path.environment() == env && path.service() == service)
                    .then_some((path, envelope, bound))
            })
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.2.written));
        let mut chosen = None;
        for (path, envelope, _) in candidates {
            let name = path.to_string();
            let binding = Binding {
                environment: env.as_str(),
                service: service.as_str(),
                key: path.key().as_str(),
            };
            let key = match self.read_key(&envelope, binding, &name).await {
                Ok(key) => key,
                Err(e @ (StoreError::Decrypt { .. } | StoreError::KeyRefused { .. })) => {
                    tracing::warn!(parameter = %name, error = %e, "not a data key source: its data key does not unwrap");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if sidekey_envelope::open(&envelope, &key, binding).is_err() {
                tracing::warn!(parameter = %name, "not a data key source: it does not authenticate");
                continue;
            }
            chosen = Some(WriteKey {
                key,
                wrapped: envelope.wrapped_key,
                key_id: envelope.key_id,
            });
            break;
        }
        let write_key = match chosen {
            Some(k) => k,
            None => {
                let binding = Binding {
                    environment: env.as_str(),
                    service: service.as_str(),
                    key: "",
                };
                let target = sidekey_model::service_path(&self.prefix, env, service);
                let new = self
                    .keys
                    .generate(&binding.kms_context(), &target, &self.key_retry())
                    .await?;
                WriteKey {
                    key: Arc::new(new.key),
                    wrapped: new.wrapped,
                    key_id: new.key_id,
                }
            }
        };
        let write_key = Arc::new(write_key);
        lock(&self.write_keys).insert(cache_key, write_key.clone());
        Ok(write_key)
    }

    /// Reads and decrypts one key, at a version or label if given.
    pub async fn get(
        &self,
        env: &Environment,
        service: &Service,
        key: &Key,
        selector: &Selector,
    ) -> Result<Revealed> {
        let path = self.path(env, service, key);
        let name = path.to_string();
        let suffix = selector.ssm_suffix();
        let stored = self
            .params
            .get(&name, suffix.as_deref(), self.retry())
            .await?;
        self.reveal(path, stored).await
    }

    /// Decrypts a parameter read from `path`. The envelope is bound to the
    /// name it was read from: a value copied elsewhere fails here.
    ///
    /// What is trusted is in the crate docs: a native SecureString; an
    /// `sk2.` envelope that matches its parameter's version and time; a
    /// plain String or `sk1.` value only when legacy values are allowed.
    pub async fn reveal(&self, path: ParamPath, stored: StoredParam) -> Result<Revealed> {
        let name = path.to_string();
        let (value, kind) = match stored.param_type {
            ParamType::SecureString => (stored.value, ValueKind::Native),
            ParamType::String => {
                let claims_envelope = std::str::from_utf8(stored.value.expose())
                    .is_ok_and(sidekey_envelope::is_envelope);
                if !claims_envelope {
                    if !self.allow_legacy {
                        return Err(StoreError::Refused {
                            name,
                            rule: "a plain String parameter is not an sk2. envelope, and anyone \
                                   with ssm:PutParameter can write one (no KMS rights needed): \
                                   write it with `sidekey put` (or as a SecureString); to read \
                                   it once for a migration, allow legacy values (sidekey \
                                   --allow-legacy, agent SIDEKEY_ALLOW_LEGACY=true)"
                                .to_owned(),
                        });
                    }
                    (stored.value, ValueKind::Plain)
                } else {
                    let Some(envelope) = as_envelope(&stored) else {
                        let reason = match std::str::from_utf8(stored.value.expose())
                            .map(Envelope::decode)
                        {
                            Ok(Err(e)) => e.to_string(),
                            _ => "not a well-formed envelope".to_owned(),
                        };
                        return Err(StoreError::Decrypt { name, reason });
                    };
                    if envelope.bound.is_none() && !self.allow_legacy {
                        return Err(StoreError::Refused {
                            name,
                            rule: "a legacy sk1. envelope binds no parameter version, so a \
                                   rolled-back copy cannot be told apart: re-seal the service \
                                   as sk2. with `sidekey --allow-legacy rekey ENV SERVICE` \
                                   (until then reads need --allow-legacy, agent \
                                   SIDEKEY_ALLOW_LEGACY=true)"
                                .to_owned(),
                        });
                    }
                    let binding = Binding {
                        environment: path.environment().as_str(),
                        service: path.service().as_str(),
                        key: path.key().as_str(),
                    };
                    let key = self.read_key(&envelope, binding, &name).await?;
                    let value = sidekey_envelope::open(&envelope, &key, binding).map_err(|e| {
                        StoreError::Decrypt {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    match envelope.bound {
                        Some(bound) => {
                            check_bound(&name, bound, stored.version, stored.last_modified)?;
                            (value, ValueKind::Envelope)
                        }
                        None => (value, ValueKind::LegacyEnvelope),
                    }
                }
            }
        };
        Ok(Revealed {
            path,
            value,
            version: stored.version,
            kind,
            last_modified: stored.last_modified,
        })
    }

    /// The data key of an envelope, unwrapped once per (wrapped key,
    /// environment, service) for the life of this store. Concurrent callers
    /// for the same key share one KMS call; after a failure the next caller
    /// tries again.
    async fn read_key(
        &self,
        envelope: &Envelope,
        binding: Binding<'_>,
        name: &str,
    ) -> Result<Arc<DataKey>> {
        let cache_key = (
            envelope.wrapped_key.clone(),
            binding.environment.to_owned(),
            binding.service.to_owned(),
        );
        let slot = lock(&self.read_keys).entry(cache_key).or_default().clone();
        let key = slot
            .get_or_try_init(|| async {
                let key = self
                    .keys
                    .unwrap(
                        &envelope.wrapped_key,
                        &envelope.key_id,
                        &binding.kms_context(),
                        name,
                        &self.key_retry(),
                    )
                    .await?;
                Ok::<_, StoreError>(Arc::new(key))
            })
            .await?;
        Ok(key.clone())
    }

    /// Reads and decrypts the current value of every key of a service, in
    /// key order.
    pub async fn read_service(
        &self,
        env: &Environment,
        service: &Service,
    ) -> Result<Vec<Revealed>> {
        let path = sidekey_model::service_path(&self.prefix, env, service);
        let stored = self.params.get_by_path(&path, self.retry()).await?;
        let mut out = Vec::with_capacity(stored.len());
        for p in stored {
            let Ok(param_path) = ParamPath::parse(&self.prefix, &p.name) else {
                tracing::warn!(parameter = %p.name, "skipping a parameter whose name does not follow sidekey's layout");
                continue;
            };
            out.push(self.reveal(param_path, p).await?);
        }
        out.sort_by(|a, b| a.path.key().cmp(b.path.key()));
        Ok(out)
    }

    /// Metadata of every key of an environment (or one service of it).
    pub async fn list(&self, env: &Environment, service: Option<&Service>) -> Result<Vec<KeyInfo>> {
        let path = match service {
            Some(s) => sidekey_model::service_path(&self.prefix, env, s),
            None => sidekey_model::environment_path(&self.prefix, env),
        };
        let infos = self.params.describe(&path, self.retry()).await?;
        Ok(infos
            .into_iter()
            .filter_map(|i| {
                let path = ParamPath::parse(&self.prefix, &i.name).ok()?;
                Some(KeyInfo {
                    path,
                    version: i.version,
                    last_modified: i.last_modified,
                    last_modified_user: i.last_modified_user,
                })
            })
            .collect())
    }

    /// Every version of a key, oldest first.
    pub async fn history(
        &self,
        env: &Environment,
        service: &Service,
        key: &Key,
    ) -> Result<Vec<HistoryEntry>> {
        let name = self.path(env, service, key).to_string();
        self.params.history(&name, self.retry()).await
    }

    /// Deletes a key and all its versions.
    pub async fn delete(
        &self,
        env: &Environment,
        service: &Service,
        key: &Key,
    ) -> Result<ParamPath> {
        let path = self.path(env, service, key);
        let name = path.to_string();
        let missing = self
            .params
            .delete(std::slice::from_ref(&name), self.retry())
            .await?;
        if !missing.is_empty() {
            return Err(StoreError::NotFound { name });
        }
        Ok(path)
    }

    /// The environments that hold at least one parameter.
    pub async fn environments(&self) -> Result<Vec<Environment>> {
        let root = sidekey_model::prefix_path(&self.prefix);
        let infos = self.params.describe(&root, self.retry()).await?;
        let names: BTreeSet<Environment> = infos
            .iter()
            .filter_map(|i| ParamPath::parse(&self.prefix, &i.name).ok())
            .map(|p| p.environment().clone())
            .collect();
        Ok(names.into_iter().collect())
    }

    /// The services of an environment, from its keys.
    pub async fn services(&self, env: &Environment) -> Result<Vec<Service>> {
        let keys = self.list(env, None).await?;
        let names: BTreeSet<Service> = keys.iter().map(|k| k.path.service().clone()).collect();
        Ok(names.into_iter().collect())
    }

    /// Copies every key of `from` into `to`, re-encrypted under `to`'s
    /// context. Everything is read and decrypted before anything is written.
    pub async fn copy_environment(
        &self,
        from: &Environment,
        to: &Environment,
    ) -> Result<Vec<Written>> {
        let mut plan: Vec<(Service, Vec<Revealed>)> = Vec::new();
        for service in self.services(from).await? {
            let values = self.read_service(from, &service).await?;
            plan.push((service, values));
        }
        let mut written = Vec::new();
        for (service, values) in &plan {
            let items: Vec<(Key, &Secret)> = values
                .iter()
                .map(|r| (r.path.key().clone(), &r.value))
                .collect();
            let done = self
                .put_many(to, service, &items, &PutOptions::default())
                .await
                .map_err(|e| partial(e, &written))?;
            written.extend(done);
        }
        Ok(written)
    }

    /// Deletes every parameter of an environment; returns their paths.
    pub async fn destroy_environment(&self, env: &Environment) -> Result<Vec<ParamPath>> {
        let keys = self.list(env, None).await?;
        let names: Vec<String> = keys.iter().map(|k| k.path.to_string()).collect();
        self.params.delete(&names, self.retry()).await?;
        Ok(keys.into_iter().map(|k| k.path).collect())
    }

    /// Rolls a service's data key: a new one from KMS, and every current
    /// value re-encrypted under it as a new version.
    pub async fn rekey(&self, env: &Environment, service: &Service) -> Result<Vec<Written>> {
        let values = self.read_service(env, service).await?;
        if values.is_empty() {
            return Err(StoreError::NotFound {
                name: sidekey_model::service_path(&self.prefix, env, service),
            });
        }
        let binding = Binding {
            environment: env.as_str(),
            service: service.as_str(),
            key: "",
        };
        let target = sidekey_model::service_path(&self.prefix, env, service);
        let new = self
            .keys
            .generate(&binding.kms_context(), &target, &self.key_retry())
            .await?;
        lock(&self.write_keys).insert(
            (env.as_str().to_owned(), service.as_str().to_owned()),
            Arc::new(WriteKey {
                key: Arc::new(new.key),
                wrapped: new.wrapped,
                key_id: new.key_id,
            }),
        );
        let items: Vec<(Key, &Secret)> = values
            .iter()
            .map(|r| (r.path.key().clone(), &r.value))
            .collect();
        self.put_many(env, service, &items, &PutOptions::default())
            .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seconds since the Unix epoch (0 before it).
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The rollback rule: an `sk2.` envelope must have been sealed for the
/// version its parameter holds it as, and at about the time the parameter
/// was written.
fn check_bound(
    name: &str,
    bound: Bound,
    version: u64,
    last_modified: Option<SystemTime>,
) -> Result<()> {
    if bound.version != version {
        return Err(StoreError::Refused {
            name: name.to_owned(),
            rule: format!(
                "envelope sealed for version {} but stored as version {version}: a replayed or \
                 rolled-back value (write the current value again with `sidekey put`)",
                bound.version
            ),
        });
    }
    let Some(modified) = last_modified else {
        return Err(StoreError::Refused {
            name: name.to_owned(),
            rule: "the parameter came without a LastModifiedDate: the envelope's write time \
                   cannot be checked"
                .to_owned(),
        });
    };
    let modified = unix_seconds(modified);
    let apart = modified.abs_diff(bound.written);
    if apart > WRITE_TIME_TOLERANCE.as_secs() {
        return Err(StoreError::Refused {
            name: name.to_owned(),
            rule: format!(
                "envelope sealed at {} but the parameter was written at {} ({apart} s apart, \
                 more than the {} s allowed): a value replayed into a deleted and re-created \
                 parameter, or a clock far off (write the current value again with `sidekey put`)",
                rfc3339(bound.written),
                rfc3339(modified),
                WRITE_TIME_TOLERANCE.as_secs()
            ),
        });
    }
    Ok(())
}

fn as_envelope(p: &StoredParam) -> Option<Envelope> {
    if p.param_type != ParamType::String {
        return None;
    }
    let text = std::str::from_utf8(p.value.expose()).ok()?;
    if !sidekey_envelope::is_envelope(text) {
        return None;
    }
    Envelope::decode(text).ok()
}

fn check_not_empty(path: &ParamPath, value: &Secret) -> Result<()> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!(
            "value for {path} is empty: SSM does not store empty values"
        )));
    }
    Ok(())
}

fn check_size(path: &ParamPath, value: usize, stored: usize, max_value: usize) -> Result<()> {
    if stored > MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge {
            name: path.to_string(),
            value,
            stored,
            limit: MAX_VALUE_BYTES,
            max_value,
        });
    }
    Ok(())
}

/// Adds to an error what was already written when a multi-key write stops.
fn partial(err: StoreError, written: &[Written]) -> StoreError {
    if written.is_empty() {
        return err;
    }
    let done: Vec<String> = written
        .iter()
        .map(|w| format!("{} v{}", w.path, w.version))
        .collect();
    StoreError::Invalid(format!(
        "{err}; already written before the failure: {}",
        done.join(", ")
    ))
}
