//! The `sk2.` envelope (and the legacy `sk1.`): how sidekey encrypts a
//! secret value before it is stored in SSM Parameter Store, and the types
//! that hold plaintext and keys in memory. `docs/envelope.md` in the
//! repository gives the whole rule, including what readers check.
//!
//! # What is here
//!
//! - [`Secret`]: plaintext bytes. Zeroized on drop, not `Clone`, not
//!   `Serialize`, `Debug` prints `Secret(<redacted>)`.
//! - [`DataKey`]: a 256-bit AES data key, with the same guarantees.
//! - [`Envelope`]: a decoded value, with a strict [`Envelope::decode`]
//!   and [`Envelope::encode`], and [`Envelope::encoded_len_sk2`] so callers
//!   can enforce SSM's size limits before they call KMS.
//! - [`seal_bound`] (`sk2.`, what writers use), [`seal`] (legacy `sk1.`)
//!   and [`open`]: AES-256-GCM (ring) with associated data that binds the
//!   value to its [`Binding`] (environment, service, key name) and, for
//!   `sk2.`, to its [`Bound`] (parameter version and write time).
//! - [`LocalMasterKey`]: the stand-in for KMS on laptops, in the quick start
//!   and in tests. It wraps data keys with AES-256-GCM and treats the
//!   encryption context like KMS does.
//!
//! # The byte format
//!
//! A stored value is `sk2.` followed by the unpadded base64url (RFC 4648 §5)
//! encoding of:
//!
//! | field | size |
//! |---|---|
//! | version | 1 byte, `0x02` |
//! | bound parameter version | u64, big-endian: the SSM version this value was written as |
//! | write time | u64, big-endian: seconds since the Unix epoch, writer's clock |
//! | key id length | u16, big-endian |
//! | key id | UTF-8, non-empty (the KMS key ARN, or `local:<fingerprint>`) |
//! | wrapped data key length | u16, big-endian |
//! | wrapped data key | non-empty (the KMS `CiphertextBlob`, or a [`LocalMasterKey::wrap`] output) |
//! | nonce | 12 bytes, random per value |
//! | ciphertext and tag | AES-256-GCM output, the 16-byte tag last; everything up to the end |
//!
//! The legacy `sk1.` layout is the same without the two u64 fields and
//! with version byte `0x01`. The prefix and the version byte must agree.
//!
//! Everything from the version byte to the end of the nonce is the *header*.
//! The AEAD associated data is
//!
//! ```text
//! b"sidekey sk2\0" || header || u16 BE len || environment || u16 BE len || service || u16 BE len || key
//! ```
//!
//! (`b"sidekey sk1\0"` for `sk1.`), so a value fails to open if anything in
//! it was altered (including the key id, the wrapped key, the bound version
//! and the write time) or if it was copied to another environment, service
//! or key name. Opening does not compare the bound version and time with
//! anything: the store checks them against the parameter's own `Version`
//! and `LastModifiedDate`, so a value copied over a later version of its
//! own parameter (a rollback) is refused. The KMS encryption context of the
//! data key is
//! `{"sidekey:environment": E, "sidekey:service": S}` ([`Binding::kms_context`]),
//! so KMS itself refuses to unwrap a data key for another environment or
//! service.
//!
//! Decoding is strict: a wrong prefix, padding, characters outside the
//! base64url alphabet, non-canonical base64, an unknown version, truncated
//! fields, an empty or non-UTF-8 key id, an empty wrapped key or a ciphertext
//! shorter than the tag are all rejected before any key is touched. Bytes
//! appended after a valid value become part of the ciphertext and fail
//! authentication in [`open`].
//!
//! # Trust
//!
//! The key id inside an envelope is not trusted: readers decrypt the wrapped
//! key with the key they are configured with, passed explicitly to KMS. This
//! crate never chooses a key from the envelope.
//!
//! # What this crate must not depend on
//!
//! It is pure: no tokio, no AWS SDK, no HTTP, no file or network I/O, no
//! `serde` (so neither [`Secret`] nor any key type can ever be serialized),
//! and no other sidekey crate. It takes plain `&str` names; validating them
//! is the model crate's job. Randomness comes from the caller as a
//! [`ring::rand::SecureRandom`].
//!
//! # Secret type guarantees
//!
//! ```compile_fail
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<sidekey_envelope::Secret>();
//! ```
//!
//! ```compile_fail
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<sidekey_envelope::DataKey>();
//! ```
//!
//! ```compile_fail
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<sidekey_envelope::LocalMasterKey>();
//! ```
//!
//! (The same check compiles for a type that is `Clone`:)
//!
//! ```
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<sidekey_envelope::Envelope>();
//! ```

mod aead;
mod envelope;
mod error;
#[cfg(test)]
mod kat_tests;
mod keys;
mod local;
mod secret;

pub use envelope::{
    is_envelope, open, seal, seal_bound, Binding, Bound, Envelope, BOUND_LEN, CONTEXT_ENVIRONMENT,
    CONTEXT_SERVICE, NONCE_LEN, PREFIX, PREFIX_SK2, TAG_LEN, VERSION, VERSION_SK2,
};
#[cfg(test)]
pub(crate) use envelope::{seal_bound_with_nonce, seal_with_nonce};
pub use error::EnvelopeError;
pub use keys::{DataKey, DATA_KEY_LEN};
pub use local::{LocalMasterKey, LOCAL_KEY_FILE_HEADER, LOCAL_KEY_ID_PREFIX, LOCAL_WRAPPED_LEN};
pub use secret::Secret;
