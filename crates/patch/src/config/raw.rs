//! The YAML document's shape, as serde reads it: every field optional,
//! unknown fields rejected, nothing checked beyond the types (that is
//! `validate.rs`'s job).

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) prefix: Option<String>,
    pub(super) store: Option<String>,
    pub(super) kms_key: Option<String>,
    pub(super) region: Option<String>,
    pub(super) agent_image: Option<String>,
    pub(super) image_pull_policy: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) audit: Option<String>,
    pub(super) excluded_namespaces: Option<Vec<String>>,
    pub(super) environments: Option<Vec<RawRule>>,
    pub(super) resources: Option<RawResources>,
    pub(super) files_size_limit: Option<String>,
    pub(super) defaults: Option<RawDefaults>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) namespaces: String,
    pub(super) environment: Option<String>,
    pub(super) inherit: Option<Vec<String>>,
    pub(super) allow_legacy_values: Option<bool>,
    pub(super) allow_loader_env: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawResources {
    pub(super) requests: Option<RawList>,
    pub(super) limits: Option<RawList>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawList {
    pub(super) cpu: Option<String>,
    pub(super) memory: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) delivery: Option<String>,
    pub(super) files_format: Option<String>,
    pub(super) on_missing: Option<String>,
}
