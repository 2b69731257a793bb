//! Self-managed TLS (`--self-managed-tls NAMESPACE/NAME`): the injector
//! keeps its own CA and serving certificate in a Secret it owns and puts
//! the CA into `caBundle` of its own MutatingWebhookConfiguration, so a
//! cluster without cert-manager needs no other input.
//!
//! At start and then every poll interval (and at each renewal point) one
//! [`SelfManaged::reconcile`] pass:
//!
//! 1. reads the Secret; [`decide`] says whether what it holds can be kept,
//!    needs a new serving certificate (past 2/3 of its life, other DNS
//!    names, longer-lived than the configured validity) or a new CA (same
//!    rules for the CA);
//! 2. writes a new Secret with compare-and-swap: `create` (on 409
//!    AlreadyExists another replica won: re-read and use its certificate)
//!    or `replace` with the `resourceVersion` read (on 409 Conflict,
//!    re-read). Two replicas never overwrite each other: the loser adopts
//!    the winner's certificate;
//! 3. patches `caBundle` of every webhook of the configuration when it
//!    differs (strategic merge by webhook name, with the `resourceVersion`
//!    read), BEFORE the certificate is served: a CA renewal keeps the
//!    previous CA in the bundle until it expires, so callers that still
//!    hold the old bundle and callers with the new one both verify;
//! 4. installs the certificate and key into the server's
//!    [`crate::tls::CertStore`] ([`CertStore::install_pem`]): they are
//!    held in memory only, never written to a file.
//!
//! A serving certificate is renewed under the same CA, so no caller needs
//! a new bundle; the CA itself is renewed at 2/3 of its (long) life.
//!
//! The Secret's annotations record the validity windows and DNS names
//! (no X.509 parsing is needed to decide):
//! `sidekey.io/ca-validity`, `sidekey.io/cert-validity` (`NOT_BEFORE-NOT_AFTER`
//! in Unix seconds), `sidekey.io/previous-ca-not-after`, `sidekey.io/dns-names`.
//! Data: `tls.crt`, `tls.key`, `ca.crt` (the current CA), `ca.key`,
//! `ca-bundle.crt` (current CA and, during an overlap, the previous one).
//! A Secret that cannot be read back (a key missing, a bad annotation) is
//! replaced as a whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use zeroize::Zeroizing;

use crate::tls::{CertStore, TlsError};

/// Default life of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default life of the serving certificate.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate's notBefore is backdated this much for clock skew between
/// the injector and the API servers (the recorded window starts at issue).
const BACKDATE: Duration = Duration::from_secs(300);

const ANN_CA: &str = "sidekey.io/ca-validity";
const ANN_CERT: &str = "sidekey.io/cert-validity";
const ANN_PREV: &str = "sidekey.io/previous-ca-not-after";
const ANN_DNS: &str = "sidekey.io/dns-names";
const CA_NAME: &str = "sidekey-injector self-managed CA";

/// How long certificates live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ca_validity: Duration,
    pub cert_validity: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ca_validity: CA_VALIDITY,
            cert_validity: CERT_VALIDITY,
        }
    }
}

/// A validity window in Unix seconds, as recorded (issue time to notAfter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub not_before: u64,
    pub not_after: u64,
}

impl Window {
    /// The moment a renewal is due: 2/3 of the life.
    pub fn renew_at(&self) -> u64 {
        let life = self.not_after.saturating_sub(self.not_before);
        self.not_before + life / 3 * 2 + (life % 3) * 2 / 3
    }

    fn parse(s: &str) -> Option<Window> {
        let (a, b) = s.split_once('-')?;
        let w = Window {
            not_before: a.trim().parse().ok()?,
            not_after: b.trim().parse().ok()?,
        };
        (w.not_before < w.not_after).then_some(w)
    }

    fn render(&self) -> String {
        format!("{}-{}", self.not_before, self.not_after)
    }
}

/// What the Secret holds, read back.
#[derive(Clone)]
pub struct Material {
    pub ca_cert_pem: String,
    pub ca_key_pem: Zeroizing<String>,
    /// The current CA followed by the previous one during an overlap.
    pub ca_bundle_pem: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    pub ca: Window,
    pub cert: Window,
    pub previous_ca_not_after: Option<u64>,
    pub dns_names: Vec<String>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("previous_ca_not_after", &self.previous_ca_not_after)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

/// What [`decide`] wants done with the Secret's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep it; look again at this Unix second at the latest.
    Keep { next_check: u64 },
    /// A new serving certificate under the same CA.
    NewCert,
    /// A new CA (the previous one stays in the bundle) and certificate.
    NewCa,
}

/// Why a Secret's content is replaced, or kept.
pub fn decide(stored: Option<&Material>, dns_names: &[String], now: u64, policy: Policy) -> Action {
    let Some(m) = stored else {
        return Action::NewCa;
    };
    let ca_max = now.saturating_add(policy.ca_validity.as_secs());
    if now >= m.ca.renew_at() || m.ca.not_after > ca_max {
        return Action::NewCa;
    }
    let cert_max = now.saturating_add(policy.cert_validity.as_secs());
    let mut want: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    want.sort_unstable();
    want.dedup();
    let mut have: Vec<&str> = m.dns_names.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    if now >= m.cert.renew_at()
        || m.cert.not_after > cert_max
        || m.cert.not_after > m.ca.not_after
        || want != have
    {
        return Action::NewCert;
    }
    let mut next = m.cert.renew_at().min(m.ca.renew_at());
    if let Some(prev) = m.previous_ca_not_after.filter(|p| *p > now) {
        // The previous CA leaves the bundle when it expires.
        next = next.min(prev);
    }
    Action::Keep { next_check: next }
}

/// A certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the stored CA key cannot be read: {0}")]
    CaKey(rcgen::Error),
}

/// A Unix second as rcgen's date type.
macro_rules! at {
    ($unix:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs($unix)
    };
}

fn ca_params(window: Window) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at!(window.not_before.saturating_sub(BACKDATE.as_secs()));
    params.not_after = at!(window.not_after);
    Ok(params)
}

/// Makes what [`decide`] asked for: `NewCa` makes a CA (ECDSA P-256) and a
/// serving certificate, keeping `previous`'s CA in the bundle while it is
/// valid; `NewCert` a serving certificate under `previous`'s CA.
pub fn issue(
    action: Action,
    previous: Option<&Material>,
    dns_names: &[String],
    now: u64,
    policy: Policy,
) -> Result<Option<Material>, CertError> {
    let (ca_cert_pem, ca_key_pem, ca, prev_pem, previous_ca_not_after) = match (action, previous) {
        (Action::Keep { .. }, _) => return Ok(None),
        (Action::NewCert, Some(p)) => (
            p.ca_cert_pem.clone(),
            p.ca_key_pem.clone(),
            p.ca,
            // Keep the bundle as it is (it may hold a previous CA).
            None,
            p.previous_ca_not_after,
        ),
        (_, previous) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let window = Window {
                not_before: now,
                not_after: now + policy.ca_validity.as_secs(),
            };
            let cert = ca_params(window)?.self_signed(&key)?;
            let keep_prev = previous.filter(|p| p.ca.not_after > now);
            (
                cert.pem(),
                Zeroizing::new(key.serialize_pem()),
                window,
                keep_prev.map(|p| p.ca_cert_pem.clone()),
                keep_prev.map(|p| p.ca.not_after),
            )
        }
    };
    let ca_bundle_pem = match (action, previous) {
        (Action::NewCert, Some(p)) => {
            // Drop an expired previous CA from the bundle.
            if p.previous_ca_not_after.is_some_and(|t| t <= now) {
                p.ca_cert_pem.clone()
            } else {
                p.ca_bundle_pem.clone()
            }
        }
        _ => match &prev_pem {
            Some(prev) => format!("{ca_cert_pem}{prev}"),
            None => ca_cert_pem.clone(),
        },
    };
    let previous_ca_not_after = previous_ca_not_after.filter(|t| *t > now);

    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(CertError::CaKey)?;
    let issuer = Issuer::new(ca_params(ca)?, ca_key);
    let cert = Window {
        not_before: now,
        not_after: (now + policy.cert_validity.as_secs()).min(ca.not_after),
    };
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().map_or("sidekey-injector", String::as_str),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = at!(cert.not_before.saturating_sub(BACKDATE.as_secs()));
    params.not_after = at!(cert.not_after);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = params.signed_by(&key, &issuer)?;
    Ok(Some(Material {
        ca_cert_pem,
        ca_key_pem,
        ca_bundle_pem,
        cert_pem: leaf.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
        ca,
        cert,
        previous_ca_not_after,
        dns_names: dns_names.to_vec(),
    }))
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

/// Reads the Secret's content; `None` when anything is missing or malformed.
pub fn from_secret(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let ann = secret.metadata.annotations.as_ref()?;
    Some(Material {
        ca_cert_pem: text(data, "ca.crt")?,
        ca_key_pem: Zeroizing::new(text(data, "ca.key")?),
        ca_bundle_pem: text(data, "ca-bundle.crt")?,
        cert_pem: text(data, "tls.crt")?,
        key_pem: Zeroizing::new(text(data, "tls.key")?),
        ca: Window::parse(ann.get(ANN_CA)?)?,
        cert: Window::parse(ann.get(ANN_CERT)?)?,
        previous_ca_not_after: match ann.get(ANN_PREV) {
            Some(v) => Some(v.parse().ok()?),
            None => None,
        },
        dns_names: ann
            .get(ANN_DNS)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// The Secret holding `m` (a `kubernetes.io/tls` Secret, so other tools
/// can read `tls.crt`/`tls.key`/`ca.crt`).
pub fn to_secret(
    m: &Material,
    namespace: &str,
    name: &str,
    resource_version: Option<String>,
) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
    };
    put("ca.crt", &m.ca_cert_pem);
    put("ca.key", &m.ca_key_pem);
    put("ca-bundle.crt", &m.ca_bundle_pem);
    put("tls.crt", &m.cert_pem);
    put("tls.key", &m.key_pem);
    let mut ann = BTreeMap::new();
    ann.insert(ANN_CA.to_owned(), m.ca.render());
    ann.insert(ANN_CERT.to_owned(), m.cert.render());
    ann.insert(ANN_DNS.to_owned(), m.dns_names.join(","));
    if let Some(p) = m.previous_ca_not_after {
        ann.insert(ANN_PREV.to_owned(), p.to_string());
    }
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "sidekey-injector".to_owned(),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            annotations: Some(ann),
            labels: Some(labels),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// A self-managed TLS pass failed (logged; retried at the next poll).
#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    Webhook {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("MutatingWebhookConfiguration {0} not found (is the chart installed?)")]
    WebhookMissing(String),
    #[error("Secret {namespace}/{name}: still contended after {tries} compare-and-swap attempts")]
    Contended {
        namespace: String,
        name: String,
        tries: u32,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("the certificate in Secret {namespace}/{name} cannot be served: {source}")]
    Install {
        namespace: String,
        name: String,
        #[source]
        source: TlsError,
    },
}

/// The command-line options of self-managed TLS (flattened into
/// [`crate::Args`]).
#[derive(Debug, Clone, clap::Args)]
pub struct SelfManagedArgs {
    /// Self-managed TLS: keep the CA and serving certificate in this Secret
    /// (`NAMESPACE/NAME`, created if absent, renewed at 2/3 of life with
    /// compare-and-swap so replicas agree) and put the CA into `caBundle`
    /// of `--webhook-configuration`, through the Kubernetes API (in-cluster
    /// service account or KUBECONFIG). The pair is served from memory
    /// (`--tls-cert` and `--tls-key` are not read); `/readyz` answers 200
    /// once the first one is in place, `/healthz` from the start.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_SELF_MANAGED_TLS",
        value_name = "NAMESPACE/NAME"
    )]
    pub self_managed_tls: Option<String>,

    /// With `--self-managed-tls`: the MutatingWebhookConfiguration whose
    /// webhooks get the CA bundle.
    #[arg(
        long,
        env = "SIDEKEY_INJECTOR_WEBHOOK_CONFIGURATION",
        default_value = "sidekey-injector",
        value_name = "NAME"
    )]
    pub webhook_configuration: String,

    /// With `--self-managed-tls`: a DNS name of the serving certificate
    /// (repeatable, or comma-separated in the variable), e.g.
    /// `sidekey-injector.sidekey.svc`; an IPv4 or IPv6 address (without
    /// brackets) becomes an IP address name of the certificate.
    #[arg(
        long = "dns-name",
        env = "SIDEKEY_INJECTOR_DNS_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub dns_names: Vec<String>,

    /// With `--self-managed-tls`: life of a new CA (renewed at 2/3).
    #[arg(long, env = "SIDEKEY_INJECTOR_CA_VALIDITY", default_value = "10y",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ca_validity: Duration,

    /// With `--self-managed-tls`: life of a serving certificate (renewed at 2/3).
    #[arg(long, env = "SIDEKEY_INJECTOR_CERT_VALIDITY", default_value = "1y",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub cert_validity: Duration,

    /// With `--self-managed-tls`: how often the Secret is read again (to
    /// pick up another replica's renewal).
    #[arg(long, env = "SIDEKEY_INJECTOR_SELF_MANAGED_POLL", default_value = "30s",
          value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub self_managed_poll: Duration,
}

/// A self-managed TLS option that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SelfManagedSettingsError {
    #[error(
        "--self-managed-tls {0:?}: must be NAMESPACE/NAME (a Kubernetes namespace and Secret name)"
    )]
    SecretName(String),
    #[error("--self-managed-tls needs at least one --dns-name (the Service's DNS name)")]
    NoDnsName,
    #[error("--dns-name {0:?}: neither a DNS name (lowercase letters, digits, '-' and '.') nor an IPv4 or IPv6 address")]
    BadDnsName(String),
    #[error(
        "--cert-validity ({cert:?}) must be shorter than --ca-validity ({ca:?}) and at least 3s"
    )]
    Validity { cert: Duration, ca: Duration },
}

/// `--self-managed-tls` and its options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfManagedSettings {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The certificate's names: DNS names as given, addresses in their
    /// canonical text (`::1` for `0:0::1`), so that a restart with the same
    /// address written otherwise does not renew the certificate.
    pub names: Vec<String>,
    /// Lifetimes.
    pub policy: Policy,
}

impl SelfManagedArgs {
    /// The checked settings, or `None` without `--self-managed-tls`.
    pub fn settings(&self) -> Result<Option<SelfManagedSettings>, SelfManagedSettingsError> {
        let Some(spec) = &self.self_managed_tls else {
            return Ok(None);
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let (ns, name) = spec
            .split_once('/')
            .filter(|(n, s)| valid(n) && valid(s) && !n.contains('.'))
            .ok_or_else(|| SelfManagedSettingsError::SecretName(spec.clone()))?;
        if self.dns_names.is_empty() {
            return Err(SelfManagedSettingsError::NoDnsName);
        }
        let mut names = Vec::with_capacity(self.dns_names.len());
        for name in &self.dns_names {
            if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                names.push(ip.to_string());
            } else if valid(name) {
                names.push(name.clone());
            } else {
                return Err(SelfManagedSettingsError::BadDnsName(name.clone()));
            }
        }
        if self.cert_validity >= self.ca_validity || self.cert_validity < Duration::from_secs(3) {
            return Err(SelfManagedSettingsError::Validity {
                cert: self.cert_validity,
                ca: self.ca_validity,
            });
        }
        Ok(Some(SelfManagedSettings {
            namespace: ns.to_owned(),
            secret: name.to_owned(),
            names,
            policy: Policy {
                ca_validity: self.ca_validity,
                cert_validity: self.cert_validity,
            },
        }))
    }
}

/// The self-managed TLS settings and the Kubernetes client.
pub struct SelfManaged {
    pub client: kube::Client,
    pub namespace: String,
    pub secret: String,
    pub webhook: String,
    pub dns_names: Vec<String>,
    pub policy: Policy,
    /// Where the certificate is served from (see [`CertStore::in_memory`]).
    pub store: Arc<CertStore>,
}

impl std::fmt::Debug for SelfManaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfManaged")
            .field("namespace", &self.namespace)
            .field("secret", &self.secret)
            .field("webhook", &self.webhook)
            .field("dns_names", &self.dns_names)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// This replica wrote the Secret (a new CA or certificate).
    pub wrote: bool,
    /// The webhook configuration's caBundle was patched.
    pub patched: bool,
    /// When the next renewal is due (Unix seconds).
    pub next_check: u64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl SelfManaged {
    /// One pass: the Secret checked (and renewed with compare-and-swap),
    /// the caBundle patched when it differs, the certificate installed.
    pub async fn reconcile(&self) -> Result<Pass, SelfManagedError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret_err = |source| SelfManagedError::Secret {
            namespace: self.namespace.clone(),
            name: self.secret.clone(),
            source,
        };
        const TRIES: u32 = 8;
        let mut wrote = false;
        let mut material = None;
        let mut owner = None;
        for _ in 0..TRIES {
            let current = secrets.get_opt(&self.secret).await.map_err(secret_err)?;
            let stored = current.as_ref().and_then(from_secret);
            let now = now_unix();
            let action = decide(stored.as_ref(), &self.dns_names, now, self.policy);
            let Some(new) = issue(action, stored.as_ref(), &self.dns_names, now, self.policy)?
            else {
                material = stored;
                break;
            };
            // The Secret belongs to the webhook configuration: deleting that
            // (`helm uninstall`) has the garbage collector delete the CA's
            // key with it.
            if owner.is_none() {
                owner = Some(self.webhook_owner().await?);
            }
            let result = match &current {
                None => {
                    let mut s = to_secret(&new, &self.namespace, &self.secret, None);
                    s.metadata.owner_references = owner.clone().map(|o| vec![o]);
                    secrets.create(&PostParams::default(), &s).await
                }
                Some(cur) => {
                    let mut s = to_secret(
                        &new,
                        &self.namespace,
                        &self.secret,
                        cur.metadata.resource_version.clone(),
                    );
                    s.metadata.owner_references = owner.clone().map(|o| vec![o]);
                    secrets
                        .replace(&self.secret, &PostParams::default(), &s)
                        .await
                }
            };
            match result {
                Ok(_) => {
                    tracing::info!(
                        secret = %format!("{}/{}", self.namespace, self.secret),
                        action = ?action,
                        "self-managed TLS: wrote a new certificate"
                    );
                    wrote = true;
                    material = Some(new);
                    break;
                }
                // Another replica wrote first: read its certificate.
                Err(e) if is_code(&e, 409) => continue,
                Err(e) => return Err(secret_err(e)),
            }
        }
        let Some(material) = material else {
            return Err(SelfManagedError::Contended {
                namespace: self.namespace.clone(),
                name: self.secret.clone(),
                tries: TRIES,
            });
        };
        let patched = self.ensure_ca_bundle(&material.ca_bundle_pem).await?;
        self.install(&material)?;
        let next_check = match decide(Some(&material), &self.dns_names, now_unix(), self.policy) {
            Action::Keep { next_check } => next_check,
            _ => now_unix(),
        };
        Ok(Pass {
            wrote,
            patched,
            next_check,
        })
    }

    /// The owner reference to the webhook configuration (no
    /// `blockOwnerDeletion`: that would need `delete` on it).
    async fn webhook_owner(&self) -> Result<OwnerReference, SelfManagedError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = api
            .get_opt(&self.webhook)
            .await
            .map_err(|source| SelfManagedError::Webhook {
                name: self.webhook.clone(),
                source,
            })?
            .ok_or_else(|| SelfManagedError::WebhookMissing(self.webhook.clone()))?;
        Ok(OwnerReference {
            api_version: "admissionregistration.k8s.io/v1".to_owned(),
            kind: "MutatingWebhookConfiguration".to_owned(),
            name: self.webhook.clone(),
            uid: config.metadata.uid.unwrap_or_default(),
            ..OwnerReference::default()
        })
    }

    /// Sets `caBundle` of every webhook of the configuration to `bundle`
    /// when it differs; true when it patched.
    async fn ensure_ca_bundle(&self, bundle: &str) -> Result<bool, SelfManagedError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let err = |source| SelfManagedError::Webhook {
            name: self.webhook.clone(),
            source,
        };
        for _ in 0..8 {
            let Some(config) = api.get_opt(&self.webhook).await.map_err(err)? else {
                return Err(SelfManagedError::WebhookMissing(self.webhook.clone()));
            };
            let stale: Vec<String> = config
                .webhooks
                .iter()
                .flatten()
                .filter(|w| {
                    w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice())
                        != Some(bundle.as_bytes())
                })
                .map(|w| w.name.clone())
                .collect();
            if stale.is_empty() {
                return Ok(false);
            }
            let encoded = base64_simd::STANDARD.encode_to_string(bundle.as_bytes());
            let webhooks: Vec<serde_json::Value> = stale
                .iter()
                .map(|n| serde_json::json!({"name": n, "clientConfig": {"caBundle": encoded}}))
                .collect();
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": config.metadata.resource_version},
                "webhooks": webhooks,
            });
            match api
                .patch(
                    &self.webhook,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(webhook = %self.webhook, webhooks = stale.len(), "self-managed TLS: caBundle patched");
                    return Ok(true);
                }
                Err(e) if is_code(&e, 409) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(SelfManagedError::Contended {
            namespace: String::new(),
            name: self.webhook.clone(),
            tries: 8,
        })
    }

    /// Serves the pair from the next handshake on (nothing is done when
    /// it is the one served already).
    fn install(&self, m: &Material) -> Result<(), SelfManagedError> {
        self.store
            .install_pem(m.cert_pem.as_bytes(), m.key_pem.as_bytes())
            .map(|_| ())
            .map_err(|source| SelfManagedError::Install {
                namespace: self.namespace.clone(),
                name: self.secret.clone(),
                source,
            })
    }

    /// Reconciles every `poll` and at each renewal point, for ever; errors
    /// are logged and retried at the next poll.
    pub async fn run(self, poll: Duration) {
        loop {
            let wait = match self.reconcile().await {
                Ok(pass) => {
                    let due = Duration::from_secs(pass.next_check.saturating_sub(now_unix()));
                    poll.min(due.max(Duration::from_secs(1)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "self-managed TLS: pass failed; serving the certificate already loaded");
                    poll
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    const T0: u64 = 1_800_000_000;
    const DNS: &str = "sidekey-injector.sidekey.svc";

    fn dns() -> Vec<String> {
        vec![
            DNS.to_owned(),
            "sidekey-injector.sidekey.svc.cluster.local".to_owned(),
        ]
    }

    fn short() -> Policy {
        Policy {
            ca_validity: Duration::from_secs(3000),
            cert_validity: Duration::from_secs(60),
        }
    }

    fn fresh(now: u64, policy: Policy) -> Material {
        issue(Action::NewCa, None, &dns(), now, policy)
            .unwrap()
            .unwrap()
    }

    /// Whether `leaf` verifies for `name` at `now` against the CAs of `bundle`.
    fn verifies(bundle: &str, leaf: &str, name: &str, now: u64) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(now)),
            )
            .map(|_| ())
    }

    #[test]
    fn nothing_stored_makes_a_ca() {
        assert_eq!(decide(None, &dns(), T0, Policy::default()), Action::NewCa);
    }

    #[test]
    fn renewal_points_are_two_thirds_of_life() {
        let w = Window {
            not_before: 0,
            not_after: 60,
        };
        assert_eq!(w.renew_at(), 40);
        let w = Window {
            not_before: 10,
            not_after: 11,
        };
        assert_eq!(w.renew_at(), 10);
        let w = Window {
            not_before: T0,
            not_after: T0 + 365 * 24 * 3600,
        };
        assert_eq!(w.renew_at(), T0 + 243 * 24 * 3600 + 8 * 3600);
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_its_renewal_point() {
        let m = fresh(T0, short());
        assert_eq!(
            m.cert,
            Window {
                not_before: T0,
                not_after: T0 + 60
            }
        );
        assert_eq!(
            decide(Some(&m), &dns(), T0, short()),
            Action::Keep {
                next_check: T0 + 40
            }
        );
        assert_eq!(
            decide(Some(&m), &dns(), T0 + 39, short()),
            Action::Keep {
                next_check: T0 + 40
            }
        );
        assert_eq!(decide(Some(&m), &dns(), T0 + 40, short()), Action::NewCert);
        assert_eq!(decide(Some(&m), &dns(), T0 + 100, short()), Action::NewCert);
    }

    #[test]
    fn other_dns_names_make_a_new_certificate_same_names_in_any_order_do_not() {
        let m = fresh(T0, short());
        let mut reordered = dns();
        reordered.reverse();
        reordered.push(DNS.to_owned());
        assert!(matches!(
            decide(Some(&m), &reordered, T0, short()),
            Action::Keep { .. }
        ));
        let other = vec!["other.sidekey.svc".to_owned()];
        assert_eq!(decide(Some(&m), &other, T0, short()), Action::NewCert);
        let fewer = vec![DNS.to_owned()];
        assert_eq!(decide(Some(&m), &fewer, T0, short()), Action::NewCert);
    }

    #[test]
    fn a_shorter_configured_validity_renews_longer_lived_certificates() {
        let m = fresh(T0, Policy::default());
        assert!(matches!(
            decide(Some(&m), &dns(), T0 + 1, Policy::default()),
            Action::Keep { .. }
        ));
        let shorter_cert = Policy {
            cert_validity: Duration::from_secs(60),
            ..Policy::default()
        };
        assert_eq!(
            decide(Some(&m), &dns(), T0 + 1, shorter_cert),
            Action::NewCert
        );
        assert_eq!(decide(Some(&m), &dns(), T0 + 1, short()), Action::NewCa);
    }

    #[test]
    fn the_serving_certificate_renews_under_the_same_ca() {
        let m = fresh(T0, short());
        verifies(&m.ca_bundle_pem, &m.cert_pem, DNS, T0).unwrap();
        let renewed = issue(Action::NewCert, Some(&m), &dns(), T0 + 40, short())
            .unwrap()
            .unwrap();
        assert_eq!(renewed.ca_cert_pem, m.ca_cert_pem);
        assert_eq!(renewed.ca_bundle_pem, m.ca_bundle_pem);
        assert_ne!(renewed.cert_pem, m.cert_pem);
        assert_eq!(
            renewed.cert,
            Window {
                not_before: T0 + 40,
                not_after: T0 + 100
            }
        );
        // The bundle callers already hold verifies the new certificate.
        verifies(&m.ca_bundle_pem, &renewed.cert_pem, DNS, T0 + 41).unwrap();
        // The old one is refused once expired (notAfter is enforced).
        assert!(verifies(&m.ca_bundle_pem, &m.cert_pem, DNS, T0 + 61).is_err());
        // A name not in the certificate is refused.
        assert!(verifies(&m.ca_bundle_pem, &m.cert_pem, "evil.example", T0).is_err());
    }

    #[test]
    fn a_serving_certificate_never_outlives_its_ca() {
        let policy = Policy {
            ca_validity: Duration::from_secs(90),
            cert_validity: Duration::from_secs(60),
        };
        let m = fresh(T0, policy);
        let renewed = issue(Action::NewCert, Some(&m), &dns(), T0 + 50, policy)
            .unwrap()
            .unwrap();
        assert_eq!(renewed.cert.not_after, T0 + 90);
    }

    #[test]
    fn a_ca_renewal_keeps_the_previous_ca_in_the_bundle_until_it_expires() {
        let m = fresh(T0, short());
        assert_eq!(decide(Some(&m), &dns(), T0 + 2000, short()), Action::NewCa);
        let rolled = issue(Action::NewCa, Some(&m), &dns(), T0 + 2000, short())
            .unwrap()
            .unwrap();
        assert_ne!(rolled.ca_cert_pem, m.ca_cert_pem);
        assert_eq!(
            rolled.ca_bundle_pem,
            format!("{}{}", rolled.ca_cert_pem, m.ca_cert_pem)
        );
        assert_eq!(rolled.previous_ca_not_after, Some(T0 + 3000));
        // Both the old certificate and the new one verify with the new bundle.
        verifies(&rolled.ca_bundle_pem, &m.cert_pem, DNS, T0 + 50).unwrap();
        verifies(&rolled.ca_bundle_pem, &rolled.cert_pem, DNS, T0 + 2001).unwrap();
        // The new certificate does not verify with the old bundle alone.
        assert!(verifies(&m.ca_bundle_pem, &rolled.cert_pem, DNS, T0 + 2001).is_err());
        // A check is due when the previous CA expires.
        assert_eq!(
            decide(Some(&rolled), &dns(), T0 + 2001, short()),
            Action::Keep {
                next_check: T0 + 2040
            }
        );
        let later = issue(Action::NewCert, Some(&rolled), &dns(), T0 + 3001, short())
            .unwrap()
            .unwrap();
        assert_eq!(later.ca_bundle_pem, rolled.ca_cert_pem);
        assert_eq!(later.previous_ca_not_after, None);
    }

    #[test]
    fn the_secret_reads_back_and_a_damaged_one_is_replaced() {
        let m = fresh(T0, short());
        let s = to_secret(&m, "sidekey", "sidekey-injector-tls", Some("7".to_owned()));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let back = from_secret(&s).unwrap();
        assert_eq!(back.cert, m.cert);
        assert_eq!(back.ca, m.ca);
        assert_eq!(back.dns_names, m.dns_names);
        assert_eq!(*back.key_pem, *m.key_pem);
        assert_eq!(
            decide(Some(&back), &dns(), T0, short()),
            decide(Some(&m), &dns(), T0, short())
        );

        let mut no_key = s.clone();
        no_key.data.as_mut().unwrap().remove("tls.key");
        assert!(from_secret(&no_key).is_none());
        let mut bad = s.clone();
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_CERT.to_owned(), "60-10".to_owned());
        assert!(from_secret(&bad).is_none());
        assert_eq!(
            decide(from_secret(&bad).as_ref(), &dns(), T0, short()),
            Action::NewCa
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let m = fresh(T0, short());
        let shown = format!("{m:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(m.key_pem.lines().nth(1).unwrap()));
    }

    fn args(names: &[&str]) -> SelfManagedArgs {
        SelfManagedArgs {
            self_managed_tls: Some("sidekey/sidekey-injector-tls".to_owned()),
            webhook_configuration: "sidekey-injector".to_owned(),
            dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
            ca_validity: CA_VALIDITY,
            cert_validity: CERT_VALIDITY,
            self_managed_poll: Duration::from_secs(30),
        }
    }

    #[test]
    fn addresses_are_names_too_in_their_canonical_text() {
        let s = args(&[DNS, "0:0::1", "192.0.2.7", "2001:DB8::5"])
            .settings()
            .unwrap()
            .unwrap();
        assert_eq!(s.names, [DNS, "::1", "192.0.2.7", "2001:db8::5"]);
        for bad in ["[::1]", "Sidekey.svc", "host:8443", "::1%eth0", ""] {
            let e = args(&[DNS, bad]).settings().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("nor an IPv4 or IPv6 address"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_certificate_for_addresses_verifies_for_them() {
        let names = args(&[DNS, "::1", "127.0.0.1"])
            .settings()
            .unwrap()
            .unwrap()
            .names;
        let m = issue(Action::NewCa, None, &names, T0, Policy::default())
            .unwrap()
            .unwrap();
        for name in [DNS, "::1", "127.0.0.1"] {
            verifies(&m.ca_bundle_pem, &m.cert_pem, name, T0 + 1).unwrap();
        }
        assert!(verifies(&m.ca_bundle_pem, &m.cert_pem, "::2", T0 + 1).is_err());
        assert!(verifies(&m.ca_bundle_pem, &m.cert_pem, "127.0.0.2", T0 + 1).is_err());
        assert!(matches!(
            decide(Some(&m), &names, T0 + 1, Policy::default()),
            Action::Keep { .. }
        ));
    }
}
