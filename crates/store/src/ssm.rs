//! SSM Parameter Store through aws-sdk-ssm. Every call goes through the
//! crate's retry loop (the SDK's own retries are off).

use std::future::Future;
use std::time::SystemTime;

use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType as SdkType};
use aws_sdk_ssm::Client;
use sidekey_envelope::Secret;

use crate::error::{Result, StoreError};
use crate::params::{HistoryEntry, ParamInfo, ParamType, PutRequest, StoredParam, BATCH};
use crate::retry::Retry;

/// SSM Parameter Store.
#[derive(Debug, Clone)]
pub struct SsmParams {
    client: Client,
}

impl SsmParams {
    /// Wraps a configured client.
    pub fn new(client: Client) -> SsmParams {
        SsmParams { client }
    }

    pub(crate) async fn put(&self, req: &PutRequest<'_>, retry: &Retry) -> Result<u64> {
        let value = std::str::from_utf8(req.value).map_err(|_| {
            StoreError::Invalid(format!(
                "value for {} is not valid UTF-8: SSM stores text only (sidekey's envelope format stores any bytes)",
                req.name
            ))
        })?;
        // A lost answer (a timeout, a dropped connection, a 5xx after the
        // write) must not make a second version: before sending again, the
        // current version is compared with what was sent.
        let version = retry
            .run_checked(
                "PutParameter",
                req.name,
                || {
                    let mut call = self
                        .client
                        .put_parameter()
                        .name(req.name)
                        .value(value)
                        .r#type(sdk_type(req.param_type))
                        .tier(ParameterTier::IntelligentTiering)
                        .overwrite(req.overwrite);
                    if let Some(key) = req.kms_key {
                        call = call.key_id(key);
                    }
                    async move { call.send().await.map(|out| out.version().max(0) as u64) }
                },
                || self.landed(req, retry),
            )
            .await
            .map_err(|e| scrub(e, req.value))?;
        Ok(version)
    }

    /// Whether `req` is what the parameter holds now: its version if so.
    ///
    /// For an envelope this proves that the write landed: every envelope is
    /// sealed with a fresh random nonce for the version it will become, so
    /// no other write stores the same text. A native value equal to the
    /// current one (written before, by anyone) counts as landed too: the
    /// parameter holds what was asked, and no second version is made.
    async fn landed(&self, req: &PutRequest<'_>, retry: &Retry) -> Result<Option<u64>> {
        match self.get_one(req.name, retry).await {
            Ok(current) => Ok((current.param_type == req.param_type
                && current.value.expose() == req.value)
                .then_some(current.version)),
            Err(e) if e.aws_code() == Some("ParameterNotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn label(
        &self,
        name: &str,
        version: u64,
        label: &str,
        retry: &Retry,
    ) -> Result<()> {
        let out = retry
            .run("LabelParameterVersion", name, || {
                self.client
                    .label_parameter_version()
                    .name(name)
                    .parameter_version(version as i64)
                    .labels(label)
                    .send()
            })
            .await?;
        if !out.invalid_labels().is_empty() {
            return Err(StoreError::Invalid(format!(
                "SSM refused label {label:?} for {name}: labels are 1-100 letters, digits, '.', '-' or '_', and must not start with a digit, \"aws\" or \"ssm\""
            )));
        }
        Ok(())
    }

    pub(crate) async fn get(
        &self,
        name: &str,
        selector: Option<&str>,
        retry: &Retry,
    ) -> Result<StoredParam> {
        let full = format!("{name}{}", selector.unwrap_or(""));
        match self.get_one(&full, retry).await {
            Ok(p) => Ok(p),
            // SSM answers ParameterNotFound for an unknown label of an
            // existing parameter: tell the two apart.
            Err(err) if selector.is_some() && err.aws_code() == Some("ParameterNotFound") => {
                match self.get_one(name, retry).await {
                    Ok(_) => Err(StoreError::VersionNotFound {
                        name: name.to_owned(),
                        selector: selector.unwrap_or("").trim_start_matches(':').to_owned(),
                    }),
                    Err(_) => Err(StoreError::NotFound {
                        name: name.to_owned(),
                    }),
                }
            }
            Err(err) => Err(not_found(err, name, selector)),
        }
    }

    async fn get_one(&self, full: &str, retry: &Retry) -> Result<StoredParam> {
        let mut out = retry
            .run("GetParameter", full, || {
                self.client
                    .get_parameter()
                    .name(full)
                    .with_decryption(true)
                    .send()
            })
            .await?;
        out.parameter
            .take()
            .map(stored)
            .ok_or_else(|| StoreError::NotFound {
                name: full.to_owned(),
            })
    }

    pub(crate) async fn get_many(
        &self,
        names: &[String],
        retry: &Retry,
    ) -> Result<(Vec<StoredParam>, Vec<String>)> {
        let mut found = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for chunk in names.chunks(BATCH) {
            let target = chunk.join(",");
            let mut out = retry
                .run("GetParameters", &target, || {
                    self.client
                        .get_parameters()
                        .set_names(Some(chunk.to_vec()))
                        .with_decryption(true)
                        .send()
                })
                .await?;
            found.extend(out.parameters.take().into_iter().flatten().map(stored));
            missing.extend(out.invalid_parameters().iter().cloned());
        }
        Ok((found, missing))
    }

    pub(crate) async fn get_by_path(&self, path: &str, retry: &Retry) -> Result<Vec<StoredParam>> {
        pages(|token| async move {
            let mut out = retry
                .run("GetParametersByPath", path, || {
                    self.client
                        .get_parameters_by_path()
                        .path(path)
                        .recursive(false)
                        .with_decryption(true)
                        .max_results(BATCH as i32)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            let found = out
                .parameters
                .take()
                .into_iter()
                .flatten()
                .map(stored)
                .collect();
            Ok((found, out.next_token().map(str::to_owned)))
        })
        .await
    }

    pub(crate) async fn describe(&self, path: &str, retry: &Retry) -> Result<Vec<ParamInfo>> {
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("Recursive")
            .values(path.trim_end_matches('/'))
            .build()
            .map_err(|e| StoreError::Invalid(format!("path filter {path}: {e}")))?;
        let filter = &filter;
        let mut found = pages(|token| async move {
            let out = retry
                .run("DescribeParameters", path, || {
                    self.client
                        .describe_parameters()
                        .parameter_filters(filter.clone())
                        .max_results(50)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            let infos = out.parameters().iter().filter_map(info_of).collect();
            Ok((infos, out.next_token().map(str::to_owned)))
        })
        .await?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// DescribeParameters for one name: metadata only, no value (SSM may
    /// answer empty pages with a token before the one that holds it).
    pub(crate) async fn info(&self, name: &str, retry: &Retry) -> Result<ParamInfo> {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(name)
            .build()
            .map_err(|e| StoreError::Invalid(format!("name filter {name}: {e}")))?;
        let filter = &filter;
        let found = pages(|token| async move {
            let out = retry
                .run("DescribeParameters", name, || {
                    self.client
                        .describe_parameters()
                        .parameter_filters(filter.clone())
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            let infos: Vec<ParamInfo> = out
                .parameters()
                .iter()
                .filter_map(info_of)
                .filter(|i| i.name == name)
                .collect();
            let next = if infos.is_empty() {
                out.next_token().map(str::to_owned)
            } else {
                None
            };
            Ok((infos, next))
        })
        .await?;
        found
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound {
                name: name.to_owned(),
            })
    }

    pub(crate) async fn history(&self, name: &str, retry: &Retry) -> Result<Vec<HistoryEntry>> {
        let mut entries = pages(|token| async move {
            let out = retry
                .run("GetParameterHistory", name, || {
                    self.client
                        .get_parameter_history()
                        .name(name)
                        .with_decryption(false)
                        .max_results(50)
                        .set_next_token(token.clone())
                        .send()
                })
                .await
                .map_err(|e| not_found(e, name, None))?;
            let entries = out
                .parameters()
                .iter()
                .map(|h| HistoryEntry {
                    version: h.version().max(0) as u64,
                    param_type: our_type(h.r#type()),
                    last_modified: h.last_modified_date().and_then(system_time),
                    last_modified_user: h.last_modified_user().map(str::to_owned),
                    labels: h.labels().to_vec(),
                })
                .collect();
            Ok((entries, out.next_token().map(str::to_owned)))
        })
        .await?;
        entries.sort_by_key(|e| e.version);
        Ok(entries)
    }

    pub(crate) async fn delete(&self, names: &[String], retry: &Retry) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for chunk in names.chunks(BATCH) {
            let target = chunk.join(",");
            let out = retry
                .run("DeleteParameters", &target, || {
                    self.client
                        .delete_parameters()
                        .set_names(Some(chunk.to_vec()))
                        .send()
                })
                .await?;
            missing.extend(out.invalid_parameters().iter().cloned());
        }
        Ok(missing)
    }
}

/// Collects every page of a paged SSM call. `fetch` gets the previous
/// page's token and returns its items and the next token. Pages can be
/// empty with a token (moto's are): loop on the token, not on the size.
async fn pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let (items, next) = fetch(token.take()).await?;
        all.extend(items);
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(all),
        }
    }
}

fn sdk_type(t: ParamType) -> SdkType {
    match t {
        ParamType::String => SdkType::String,
        ParamType::SecureString => SdkType::SecureString,
    }
}

fn our_type(t: Option<&SdkType>) -> ParamType {
    match t {
        Some(SdkType::SecureString) => ParamType::SecureString,
        _ => ParamType::String,
    }
}

fn info_of(meta: &aws_sdk_ssm::types::ParameterMetadata) -> Option<ParamInfo> {
    Some(ParamInfo {
        name: meta.name()?.to_owned(),
        version: meta.version().max(0) as u64,
        param_type: our_type(meta.r#type()),
        last_modified: meta.last_modified_date().and_then(system_time),
        last_modified_user: meta.last_modified_user().map(str::to_owned),
    })
}

fn system_time(t: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// A parameter as read, taken by value: its value (a native SecureString's
/// is plaintext) moves into the [`Secret`] without a copy.
fn stored(mut p: aws_sdk_ssm::types::Parameter) -> StoredParam {
    StoredParam {
        name: p.name().unwrap_or_default().to_owned(),
        value: Secret::from(p.value.take().unwrap_or_default()),
        version: p.version().max(0) as u64,
        param_type: our_type(p.r#type()),
        last_modified: p.last_modified_date().and_then(system_time),
    }
}

/// Maps SSM's not-found codes to the store's own errors.
fn not_found(err: StoreError, name: &str, selector: Option<&str>) -> StoreError {
    match err.aws_code() {
        Some("ParameterNotFound") => StoreError::NotFound {
            name: name.to_owned(),
        },
        Some("ParameterVersionNotFound") => StoreError::VersionNotFound {
            name: name.to_owned(),
            selector: selector.unwrap_or("").trim_start_matches(':').to_owned(),
        },
        _ => err,
    }
}

/// An error message from a write must not echo the value (a native
/// SecureString write sends plaintext; some services quote their input).
fn scrub(err: StoreError, value: &[u8]) -> StoreError {
    match err {
        StoreError::Aws {
            operation,
            target,
            code,
            message,
            transient,
            attempts,
        } => {
            let message = match std::str::from_utf8(value) {
                Ok(v) if !v.is_empty() && message.contains(v) => message.replace(v, "<redacted>"),
                _ => message,
            };
            StoreError::Aws {
                operation,
                target,
                code,
                message,
                transient,
                attempts,
            }
        }
        other => other,
    }
}
