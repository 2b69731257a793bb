//! The `sk2.` format (and the legacy `sk1.`), and sealing and opening
//! values in them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeError, Engine as _};
use ring::rand::SecureRandom;

use crate::{aead, DataKey, EnvelopeError, Secret};

/// What a legacy (`sk1.`) envelope value starts with.
pub const PREFIX: &str = "sk1.";
/// The version byte of the legacy `sk1.` format.
pub const VERSION: u8 = 0x01;
/// What a current envelope value starts with: the format this build writes.
pub const PREFIX_SK2: &str = "sk2.";
/// The version byte of the `sk2.` format.
pub const VERSION_SK2: u8 = 0x02;
/// Bytes the `sk2.` header adds to the `sk1.` one: the bound parameter
/// version and the write time, two big-endian u64.
pub const BOUND_LEN: usize = 16;
/// AES-256-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-256-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// KMS encryption-context key holding the environment.
pub const CONTEXT_ENVIRONMENT: &str = "sidekey:environment";
/// KMS encryption-context key holding the service.
pub const CONTEXT_SERVICE: &str = "sidekey:service";

/// Domain separation for the associated data.
const AAD_DOMAIN: &[u8] = b"sidekey sk1\0";
/// Domain separation for the associated data of `sk2.`.
const AAD_DOMAIN_SK2: &[u8] = b"sidekey sk2\0";
/// Largest length a u16 prefix can carry.
const MAX_FIELD: usize = u16::MAX as usize;

/// What a value is bound to: the environment and service (also the KMS
/// encryption context of its data key) and the key name (associated data
/// only).
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The environment, e.g. `staging` or `pr-1234`.
    pub environment: &'a str,
    /// The service, e.g. `billing`.
    pub service: &'a str,
    /// The key name inside the service, e.g. `DATABASE_URL`.
    pub key: &'a str,
}

impl Binding<'_> {
    /// The KMS encryption context for the data key:
    /// `[("sidekey:environment", environment), ("sidekey:service", service)]`,
    /// in that order. The key name is not part of it (one data key serves a
    /// whole service).
    pub fn kms_context(&self) -> Vec<(String, String)> {
        vec![
            (CONTEXT_ENVIRONMENT.to_owned(), self.environment.to_owned()),
            (CONTEXT_SERVICE.to_owned(), self.service.to_owned()),
        ]
    }
}

/// What an `sk2.` envelope is bound to besides its name: the SSM parameter
/// version it was sealed for and when it was sealed. Both are in the
/// header and so in the associated data: a reader that checks them against
/// the parameter's own `Version` and `LastModifiedDate` refuses a value
/// copied over a later version (rollback) or replayed into a re-created
/// parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The parameter version this value was written as (1 for a new one).
    pub version: u64,
    /// When it was sealed: seconds since the Unix epoch, writer's clock.
    pub written: u64,
}

/// A decoded `sk2.` (or legacy `sk1.`) value. See the crate docs for the
/// layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `Some` for `sk2.` (the version and write time it is bound to),
    /// `None` for the legacy `sk1.` format, which binds neither.
    pub bound: Option<Bound>,
    /// The KMS key id (ARN) or `local:<fingerprint>` the data key was wrapped
    /// under. Informational: readers decrypt with their configured key.
    pub key_id: String,
    /// The wrapped data key (KMS `CiphertextBlob` or local wrap output).
    pub wrapped_key: Vec<u8>,
    /// The AES-256-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

/// Whether a stored value claims to be an envelope (starts with `sk2.` or
/// the legacy `sk1.`). Says nothing about whether it is well formed.
pub fn is_envelope(stored: &str) -> bool {
    stored.starts_with(PREFIX) || stored.starts_with(PREFIX_SK2)
}

fn put_field(out: &mut Vec<u8>, field: &'static str, bytes: &[u8]) -> Result<(), EnvelopeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EnvelopeError::FieldTooLong {
        field,
        len: bytes.len(),
        max: MAX_FIELD,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Version through nonce, with room reserved for `extra` more bytes.
fn header(
    bound: Option<Bound>,
    key_id: &str,
    wrapped_key: &[u8],
    nonce: &[u8; NONCE_LEN],
    extra: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(
        1 + BOUND_LEN + 2 + key_id.len() + 2 + wrapped_key.len() + NONCE_LEN + extra,
    );
    match bound {
        None => out.push(VERSION),
        Some(b) => {
            out.push(VERSION_SK2);
            out.extend_from_slice(&b.version.to_be_bytes());
            out.extend_from_slice(&b.written.to_be_bytes());
        }
    }
    put_field(&mut out, "key id", key_id.as_bytes())?;
    put_field(&mut out, "wrapped data key", wrapped_key)?;
    out.extend_from_slice(nonce);
    Ok(out)
}

fn associated_data(
    bound: Option<Bound>,
    header: &[u8],
    binding: &Binding<'_>,
) -> Result<Vec<u8>, EnvelopeError> {
    let domain = if bound.is_some() {
        AAD_DOMAIN_SK2
    } else {
        AAD_DOMAIN
    };
    let mut aad = Vec::with_capacity(
        domain.len()
            + header.len()
            + 6
            + binding.environment.len()
            + binding.service.len()
            + binding.key.len(),
    );
    aad.extend_from_slice(domain);
    aad.extend_from_slice(header);
    put_field(&mut aad, "environment", binding.environment.as_bytes())?;
    put_field(&mut aad, "service", binding.service.as_bytes())?;
    put_field(&mut aad, "key name", binding.key.as_bytes())?;
    Ok(aad)
}

fn describe_base64(err: DecodeError) -> String {
    // Offsets count from the start of the stored value, prefix included.
    // The offending character itself is not echoed.
    match err {
        DecodeError::InvalidByte(offset, b'=') => format!(
            "padding ('=') at offset {} is not allowed",
            offset + PREFIX.len()
        ),
        DecodeError::InvalidByte(offset, _) => format!(
            "character at offset {} is not in the base64url alphabet",
            offset + PREFIX.len()
        ),
        DecodeError::InvalidLength(len) => {
            format!("{len} base64url characters is not a possible encoded length")
        }
        DecodeError::InvalidLastSymbol(offset, _) => format!(
            "non-canonical base64url: the last character (offset {}) has unused bits set",
            offset + PREFIX.len()
        ),
        DecodeError::InvalidPadding => "padding ('=') is not allowed".to_owned(),
    }
}

/// A cursor over the decoded bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EnvelopeError> {
        if self.rest.len() < n {
            return Err(EnvelopeError::Format(format!(
                "truncated: {what} needs {n} bytes, only {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn field(&mut self, what: &str) -> Result<&'a [u8], EnvelopeError> {
        let len = self.take(2, &format!("the length of the {what}"))?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.take(len, what)
    }
}

impl Envelope {
    /// `sk2.` (or `sk1.` when [`Envelope::bound`] is `None`) followed by
    /// the unpadded base64url encoding of the binary layout.
    ///
    /// Encodes faithfully whatever the fields hold (even values
    /// [`Envelope::decode`] would reject, which is useful in tests).
    ///
    /// # Panics
    ///
    /// If `key_id` or `wrapped_key` is longer than 65535 bytes, which no
    /// envelope from [`seal`] or [`Envelope::decode`] is. Use
    /// [`Envelope::try_encode`] for envelopes built by hand from untrusted
    /// lengths.
    pub fn encode(&self) -> String {
        match self.try_encode() {
            Ok(text) => text,
            Err(err) => panic!("cannot encode envelope: {err}"),
        }
    }

    /// Like [`Envelope::encode`], but fails with
    /// [`EnvelopeError::FieldTooLong`] instead of panicking.
    pub fn try_encode(&self) -> Result<String, EnvelopeError> {
        let mut bin = header(
            self.bound,
            &self.key_id,
            &self.wrapped_key,
            &self.nonce,
            self.ciphertext.len(),
        )?;
        bin.extend_from_slice(&self.ciphertext);
        let prefix = if self.bound.is_some() {
            PREFIX_SK2
        } else {
            PREFIX
        };
        let mut out = String::with_capacity(prefix.len() + base64_len(bin.len()));
        out.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(&bin, &mut out);
        Ok(out)
    }

    /// Parses a stored value strictly. Rejects: a missing or different
    /// prefix; padding, whitespace or any character outside base64url;
    /// non-canonical base64; an unknown version; truncated fields; an empty
    /// or non-UTF-8 key id; an empty wrapped key; a ciphertext shorter than
    /// the tag. Never touches a key.
    ///
    /// The prefix and the version byte must agree: `sk1.` holds version
    /// 0x01, `sk2.` version 0x02.
    pub fn decode(stored: &str) -> Result<Envelope, EnvelopeError> {
        let (prefix, expected, body) = if let Some(body) = stored.strip_prefix(PREFIX_SK2) {
            (PREFIX_SK2, VERSION_SK2, body)
        } else if let Some(body) = stored.strip_prefix(PREFIX) {
            (PREFIX, VERSION, body)
        } else {
            return Err(EnvelopeError::Format(format!(
                "value does not start with {PREFIX_SK2:?} or {PREFIX:?}"
            )));
        };
        if body.is_empty() {
            return Err(EnvelopeError::Format(format!("nothing after {prefix:?}")));
        }
        let bin = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| EnvelopeError::Format(describe_base64(e)))?;

        let mut r = Reader { rest: &bin };
        let version = r.take(1, "the version byte")?[0];
        if version != expected {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let bound = if version == VERSION_SK2 {
            let version = r.take(8, "the bound parameter version")?;
            let written = r.take(8, "the write time")?;
            Some(Bound {
                version: u64::from_be_bytes(version.try_into().unwrap_or([0; 8])),
                written: u64::from_be_bytes(written.try_into().unwrap_or([0; 8])),
            })
        } else {
            None
        };
        let key_id = r.field("key id")?;
        if key_id.is_empty() {
            return Err(EnvelopeError::Format("the key id is empty".to_owned()));
        }
        let key_id = std::str::from_utf8(key_id)
            .map_err(|_| EnvelopeError::Format("the key id is not valid UTF-8".to_owned()))?;
        let wrapped_key = r.field("wrapped data key")?;
        if wrapped_key.is_empty() {
            return Err(EnvelopeError::Format(
                "the wrapped data key is empty".to_owned(),
            ));
        }
        let nonce = r.take(NONCE_LEN, "the nonce")?;
        let ciphertext = r.rest;
        if ciphertext.len() < TAG_LEN {
            return Err(EnvelopeError::Format(format!(
                "the ciphertext is {} bytes, shorter than the {TAG_LEN}-byte authentication tag",
                ciphertext.len()
            )));
        }
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        Ok(Envelope {
            bound,
            key_id: key_id.to_owned(),
            wrapped_key: wrapped_key.to_vec(),
            nonce: n,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// The exact length of [`Envelope::encode`]'s output for a plaintext of
    /// `plaintext_len` bytes, a key id of `key_id_len` bytes and a wrapped
    /// key of `wrapped_len` bytes, so a caller can check SSM's limit (4096
    /// bytes for a standard parameter, 8192 for an advanced one) before it
    /// calls KMS. Saturates instead of overflowing.
    pub fn encoded_len(plaintext_len: usize, key_id_len: usize, wrapped_len: usize) -> usize {
        let bin = [
            1 + 2,
            key_id_len,
            2,
            wrapped_len,
            NONCE_LEN,
            plaintext_len,
            TAG_LEN,
        ]
        .into_iter()
        .fold(0usize, usize::saturating_add);
        PREFIX.len().saturating_add(base64_len(bin))
    }

    /// [`Envelope::encoded_len`] for an `sk2.` value (16 header bytes more).
    pub fn encoded_len_sk2(plaintext_len: usize, key_id_len: usize, wrapped_len: usize) -> usize {
        let bin = [
            1 + BOUND_LEN + 2,
            key_id_len,
            2,
            wrapped_len,
            NONCE_LEN,
            plaintext_len,
            TAG_LEN,
        ]
        .into_iter()
        .fold(0usize, usize::saturating_add);
        PREFIX_SK2.len().saturating_add(base64_len(bin))
    }
}

/// Length of unpadded base64 for `n` bytes.
fn base64_len(n: usize) -> usize {
    let tail = match n % 3 {
        0 => 0,
        1 => 2,
        _ => 3,
    };
    (n / 3).saturating_mul(4).saturating_add(tail)
}

/// Seals `plaintext` as a legacy `sk1.` value (no version or time
/// binding) under `key` with a random 96-bit nonce from `rng`. Writers use
/// [`seal_bound`]; this stays for tests and tools that must produce the old
/// format.
///
/// `key_id` and `wrapped_key` are what the data key was wrapped under and the
/// wrapped data key itself; both are stored in the header and authenticated.
/// Both must be non-empty and at most 65535 bytes, and each binding field at
/// most 65535 bytes.
///
/// Random nonces are safe for up to 2^32 values per data key; `sidekey
/// rekey` rolls data keys long before that.
pub fn seal(
    key: &DataKey,
    key_id: &str,
    wrapped_key: &[u8],
    binding: Binding<'_>,
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Envelope, EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
    seal_inner(key, key_id, wrapped_key, binding, None, plaintext, nonce)
}

/// Seals `plaintext` as an `sk2.` value bound to `bound` (the parameter
/// version it will be stored as, and the write time) besides `binding`,
/// under `key` with a random 96-bit nonce from `rng`. Same field rules as
/// [`seal`].
pub fn seal_bound(
    key: &DataKey,
    key_id: &str,
    wrapped_key: &[u8],
    binding: Binding<'_>,
    bound: Bound,
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Envelope, EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
    seal_inner(
        key,
        key_id,
        wrapped_key,
        binding,
        Some(bound),
        plaintext,
        nonce,
    )
}

/// [`seal_bound`] with a caller-chosen nonce, for known-answer tests only
/// (not part of the crate's interface: a caller-chosen nonce is how nonces
/// get reused).
#[cfg(test)]
pub(crate) fn seal_bound_with_nonce(
    key: &DataKey,
    key_id: &str,
    wrapped_key: &[u8],
    binding: Binding<'_>,
    bound: Bound,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Envelope, EnvelopeError> {
    seal_inner(
        key,
        key_id,
        wrapped_key,
        binding,
        Some(bound),
        plaintext,
        nonce,
    )
}

/// [`seal`] with a caller-chosen nonce, for known-answer tests only. Reusing
/// a nonce under one data key destroys confidentiality and integrity, so
/// this is not part of the crate's interface.
#[cfg(test)]
pub(crate) fn seal_with_nonce(
    key: &DataKey,
    key_id: &str,
    wrapped_key: &[u8],
    binding: Binding<'_>,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Envelope, EnvelopeError> {
    seal_inner(key, key_id, wrapped_key, binding, None, plaintext, nonce)
}

fn seal_inner(
    key: &DataKey,
    key_id: &str,
    wrapped_key: &[u8],
    binding: Binding<'_>,
    bound: Option<Bound>,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Envelope, EnvelopeError> {
    if key_id.is_empty() {
        return Err(EnvelopeError::EmptyField("key id"));
    }
    if wrapped_key.is_empty() {
        return Err(EnvelopeError::EmptyField("wrapped data key"));
    }
    let header = header(bound, key_id, wrapped_key, &nonce, 0)?;
    let aad = associated_data(bound, &header, &binding)?;
    let ciphertext = aead::seal(key.expose(), nonce, &aad, plaintext)?;
    Ok(Envelope {
        bound,
        key_id: key_id.to_owned(),
        wrapped_key: wrapped_key.to_vec(),
        nonce,
        ciphertext,
    })
}

/// Opens an envelope with its (already unwrapped) data key, checking that it
/// was sealed for `binding`. The plaintext is decrypted in place in a
/// zeroizing buffer and handed over as a [`Secret`] without a copy.
///
/// Fails with [`EnvelopeError::Decrypt`] if anything was altered or the
/// binding or data key differ. For `sk2.` the bound version and write time
/// are authenticated here too; comparing them with the parameter's own
/// version and modification time is the caller's job (the store's).
pub fn open(
    envelope: &Envelope,
    key: &DataKey,
    binding: Binding<'_>,
) -> Result<Secret, EnvelopeError> {
    let header = header(
        envelope.bound,
        &envelope.key_id,
        &envelope.wrapped_key,
        &envelope.nonce,
        0,
    )?;
    let aad = associated_data(envelope.bound, &header, &binding)?;
    let mut plaintext = aead::open(key.expose(), envelope.nonce, &aad, &envelope.ciphertext)
        .ok_or(EnvelopeError::Decrypt)?;
    Ok(Secret::new(std::mem::take(&mut *plaintext)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_len_matches_engine() {
        for n in 0..64 {
            assert_eq!(base64_len(n), URL_SAFE_NO_PAD.encode(vec![0u8; n]).len());
        }
    }

    #[test]
    fn encoded_len_saturates() {
        assert_eq!(
            Envelope::encoded_len(usize::MAX, usize::MAX, usize::MAX),
            usize::MAX
        );
    }
}
