//! What every plan reuses, rendered once per configuration: the JSON text
//! of an injected container's fixed members and of the `SIDEKEY_*` env
//! entries that do not depend on the pod.

use serde_json::json;

use super::Settings;

/// What every plan reuses, computed once per configuration.
#[derive(Debug, Clone, Default)]
pub(super) struct Cache {
    pub(super) timeout_text: String,
    /// `"image":…,"imagePullPolicy":…,["resources":…,]"terminationMessagePolicy":…`
    pub(super) container_base: String,
    /// The JSON text of each `SIDEKEY_*` env entry that does not depend on
    /// the pod, in order.
    pub(super) fixed_env: Vec<String>,
}

impl Settings {
    /// Renders the cache from the settings; call after every change.
    pub(super) fn rebuild(&mut self) {
        let timeout_text = humantime::format_duration(self.timeout).to_string();
        // serde_json renders (and escapes) what comes from the
        // configuration, once.
        let text = |v: serde_json::Value| v.to_string();
        let mut base = format!(
            "\"image\":{},\"imagePullPolicy\":{}",
            text(json!(self.agent_image)),
            text(json!(self.image_pull_policy.as_str()))
        );
        if let Some(r) = self.resources.to_json() {
            base.push_str(",\"resources\":");
            base.push_str(&text(r));
        }
        base.push_str(",\"terminationMessagePolicy\":\"FallbackToLogsOnError\"");
        let value = |name: &str, value: &str| text(json!({"name": name, "value": value}));
        let field = |name: &str, path: &str| {
            text(
                json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}),
            )
        };
        let fixed_env = vec![
            value("SIDEKEY_PREFIX", self.prefix.as_str()),
            value("SIDEKEY_STORE", &self.store.to_string()),
            value("SIDEKEY_KMS_KEY", &self.kms_key),
            value("SIDEKEY_TIMEOUT", &timeout_text),
            value("SIDEKEY_AUDIT", &self.audit.to_string()),
            field("SIDEKEY_POD", "metadata.name"),
            field("SIDEKEY_NAMESPACE", "metadata.namespace"),
            // Read by the agent, never chosen by a pod: set empty (the
            // agent's defaults: the bundled CA roots only, log level warn,
            // plain format), so no envFrom source can supply them.
            value("SIDEKEY_CA_FILE", ""),
            value("SIDEKEY_LOG", ""),
            value("SIDEKEY_LOG_FORMAT", ""),
            value("SIDEKEY_AUDIT_LOG", ""),
            value("SIDEKEY_ACTOR", ""),
        ];
        self.cache = Cache {
            timeout_text,
            container_base: base,
            fixed_env,
        };
    }

    /// The JSON text of an injected container's image, pull policy,
    /// resources and termination message policy (object members, no
    /// braces).
    pub(crate) fn container_base(&self) -> &str {
        &self.cache.container_base
    }

    /// The `SIDEKEY_*` env entries that do not depend on the pod, as JSON
    /// text, in order.
    pub(crate) fn fixed_env(&self) -> &[String] {
        &self.cache.fixed_env
    }
}
