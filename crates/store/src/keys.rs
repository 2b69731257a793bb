//! Data keys: generated and unwrapped by AWS KMS, or by the local master
//! key, always under the encryption context of an (environment, service).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use sidekey_envelope::{DataKey, LocalMasterKey};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};
use crate::retry::Retry;

/// A freshly generated data key with its wrapped form.
#[derive(Debug)]
pub struct NewDataKey {
    pub key: DataKey,
    pub wrapped: Vec<u8>,
    /// The key id to record in envelopes (KMS: the key's ARN).
    pub key_id: String,
}

/// Who wraps and unwraps data keys.
#[derive(Debug)]
pub enum Keys {
    Kms { client: Client, key: String },
    Local(LocalMasterKey),
}

impl Keys {
    /// The configured key: an id, ARN or alias for KMS; the fingerprint of
    /// the local master key.
    pub fn configured(&self) -> String {
        match self {
            Keys::Kms { key, .. } => key.clone(),
            Keys::Local(master) => master.key_id(),
        }
    }

    /// A new data key under `context`.
    pub async fn generate(
        &self,
        context: &[(String, String)],
        target: &str,
        retry: &Retry,
    ) -> Result<NewDataKey> {
        match self {
            Keys::Kms { client, key } => {
                let mut out = retry
                    .run("kms:GenerateDataKey", target, || {
                        client
                            .generate_data_key()
                            .key_id(key)
                            .key_spec(DataKeySpec::Aes256)
                            .set_encryption_context(Some(context.iter().cloned().collect()))
                            .send()
                    })
                    .await?;
                let data_key = data_key(out.plaintext.take())?;
                let wrapped = out
                    .ciphertext_blob()
                    .ok_or_else(|| missing("CiphertextBlob"))?;
                Ok(NewDataKey {
                    key: data_key,
                    wrapped: wrapped.as_ref().to_vec(),
                    key_id: out.key_id().unwrap_or(key).to_owned(),
                })
            }
            Keys::Local(master) => {
                let rng = ring::rand::SystemRandom::new();
                let key =
                    DataKey::generate(&rng).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let wrapped = master
                    .wrap(&key, context, &rng)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                Ok(NewDataKey {
                    key,
                    wrapped,
                    key_id: master.key_id(),
                })
            }
        }
    }

    /// Unwraps a data key with the configured key only: the key id written
    /// in an envelope is never trusted (whoever can write to SSM could have
    /// wrapped a data key under a key of their own). `target` names the
    /// parameter in errors.
    pub async fn unwrap(
        &self,
        wrapped: &[u8],
        envelope_key_id: &str,
        context: &[(String, String)],
        target: &str,
        retry: &Retry,
    ) -> Result<DataKey> {
        match self {
            Keys::Kms { client, key } => {
                let mut out = retry
                    .run("kms:Decrypt", target, || {
                        client
                            .decrypt()
                            .key_id(key)
                            .ciphertext_blob(Blob::new(wrapped.to_vec()))
                            .set_encryption_context(Some(context.iter().cloned().collect()))
                            .send()
                    })
                    .await
                    .map_err(|e| match e.aws_code() {
                        Some(code @ ("InvalidCiphertextException" | "IncorrectKeyException")) => {
                            StoreError::KeyRefused {
                                name: target.to_owned(),
                                code: code.to_owned(),
                                reason: format!(
                                    "KMS refused the data key ({code}): the value was sealed for another environment or service, or under a key other than {key}"
                                ),
                            }
                        }
                        Some(code @ "AccessDeniedException") => StoreError::KeyRefused {
                            name: target.to_owned(),
                            code: code.to_owned(),
                            reason: format!(
                                "KMS denied decrypting the data key ({code}): this identity may not use {key} with this environment's encryption context, or the value was sealed under another key"
                            ),
                        },
                        _ => e,
                    })?;
                data_key(out.plaintext.take())
            }
            Keys::Local(master) => {
                if envelope_key_id != master.key_id() {
                    return Err(StoreError::Decrypt {
                        name: target.to_owned(),
                        reason: format!(
                            "sealed under local key {envelope_key_id}, but this store's key is {}",
                            master.key_id()
                        ),
                    });
                }
                master.unwrap(wrapped, context).map_err(|_| StoreError::Decrypt {
                    name: target.to_owned(),
                    reason: "the local master key refused the data key: the value was sealed for another environment or service".to_owned(),
                })
            }
        }
    }
}

/// The data key of a KMS answer's `Plaintext`, taken by value: the SDK's
/// copy is zeroized once the key is made.
fn data_key(plaintext: Option<Blob>) -> Result<DataKey> {
    let plaintext = Zeroizing::new(plaintext.ok_or_else(|| missing("Plaintext"))?.into_inner());
    DataKey::from_slice(&plaintext)
        .map_err(|e| StoreError::Invalid(format!("KMS returned an unusable data key: {e}")))
}

fn missing(field: &str) -> StoreError {
    StoreError::Invalid(format!("KMS answered without {field}"))
}
