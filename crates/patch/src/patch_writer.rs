//! Writing the JSON Patch text directly.
//!
//! The injector answers every opted-in pod with a patch of a few KB, most
//! of it the same for every pod (the agent's image, resources, security
//! context, the fixed `SIDEKEY_*` settings). Building a `serde_json::Value`
//! tree or serialising structs with serde spends its time escaping and
//! copying those constants again for every review; here the constants are
//! rendered once per configuration ([`crate::Settings`] keeps them) and a
//! patch is written by appending them, escaping only what comes from the
//! pod or the annotations ([`Json::str`]).
//!
//! What is written is checked where it matters: the golden tests compare
//! every patch with its expected JSON value, the property tests apply
//! patches of generated pods with `json_patch`, and `kubernetes-validate`
//! validates the patched pods.

use std::fmt::{self, Write as _};

use sidekey_wire::json::write_str;

/// A JSON text being written.
#[derive(Debug, Default)]
pub(crate) struct Json {
    buf: String,
}

impl Json {
    /// The text written.
    pub fn into_string(self) -> String {
        self.buf
    }

    /// Appends trusted JSON text (rendered by serde_json, or a constant).
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.buf.push_str(text);
        self
    }

    /// Appends `s` as a JSON string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        write_str(&mut self.buf, s);
        self
    }

    /// Appends an integer.
    pub fn int(&mut self, n: i64) -> &mut Self {
        let _ = write!(self.buf, "{n}");
        self
    }

    /// Appends `["a","b",...]`.
    pub fn strs<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.buf.push('[');
        for (i, s) in items.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            write_str(&mut self.buf, s);
        }
        self.buf.push(']');
        self
    }

    /// Appends `[item,item,...]`, each written by `write`.
    pub fn array<T>(&mut self, items: &[T], write: impl Fn(&mut Json, &T)) -> &mut Self {
        self.buf.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            write(self, item);
        }
        self.buf.push(']');
        self
    }
}

/// A JSON Patch being written: `[{"op":...,"path":...,"value":...},...]`.
#[derive(Debug)]
pub(crate) struct PatchWriter {
    json: Json,
    ops: usize,
}

impl PatchWriter {
    pub fn new() -> Self {
        let mut json = Json {
            buf: String::with_capacity(4096),
        };
        json.raw("[");
        PatchWriter { json, ops: 0 }
    }

    /// One operation. `path` is a JSON Pointer whose tokens are already
    /// escaped (RFC 6901) and need no JSON escaping: sidekey's own names and
    /// array indices.
    pub fn op(&mut self, op: &str, path: fmt::Arguments<'_>, value: impl FnOnce(&mut Json)) {
        self.start(op);
        self.path(path);
        self.value(value);
    }

    fn path(&mut self, path: fmt::Arguments<'_>) {
        match path.as_str() {
            Some(constant) => self.json.buf.push_str(constant),
            None => {
                let _ = self.json.buf.write_fmt(path);
            }
        }
    }

    /// [`Self::op`] with a path already written out.
    pub fn op_at(&mut self, op: &str, path: &str, value: impl FnOnce(&mut Json)) {
        self.start(op);
        self.json.buf.push_str(path);
        self.value(value);
    }

    fn start(&mut self, op: &str) {
        if self.ops > 0 {
            self.json.raw(",");
        }
        self.ops += 1;
        self.json.raw("{\"op\":\"").raw(op).raw("\",\"path\":\"");
    }

    fn value(&mut self, value: impl FnOnce(&mut Json)) {
        self.json.raw("\",\"value\":");
        value(&mut self.json);
        self.json.raw("}");
    }

    /// Appends `items` to the array at `path`: one `add .../-` each when the
    /// array exists and is not empty, else one `add` of the whole array.
    pub fn append<T>(
        &mut self,
        path: fmt::Arguments<'_>,
        exists: bool,
        items: &[T],
        write: impl Fn(&mut Json, &T),
    ) {
        if items.is_empty() {
            return;
        }
        if exists {
            // The path is formatted once, into the first operation; the
            // others copy it from there.
            self.start("add");
            let from = self.json.buf.len();
            self.path(path);
            self.json.buf.push_str("/-");
            let to = self.json.buf.len();
            self.value(|j| write(j, &items[0]));
            for item in &items[1..] {
                self.start("add");
                self.json.buf.extend_from_within(from..to);
                self.value(|j| write(j, item));
            }
        } else {
            self.op("add", path, |j| {
                j.array(items, &write);
            });
        }
    }

    /// The patch text.
    pub fn finish(mut self) -> String {
        self.json.raw("]");
        self.json.buf
    }
}

/// `token` escaped for a JSON Pointer (RFC 6901): `~` as `~0`, `/` as `~1`.
#[cfg(test)]
pub(crate) fn pointer_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1").into()
    } else {
        token.into()
    }
}

/// An `env` entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EnvVar<'a> {
    /// `{"name":…,"value":…}`.
    Value { name: &'a str, value: &'a str },
    /// Rendered JSON text of a whole entry (the fixed settings), or an
    /// entry copied from the pod: its name, optional value and the JSON
    /// text of its `valueFrom`.
    Rendered(&'a str),
    Copied {
        name: &'a str,
        value: Option<&'a str>,
        value_from: Option<&'a str>,
    },
}

impl EnvVar<'_> {
    pub fn name(&self) -> Option<&str> {
        match self {
            EnvVar::Value { name, .. } | EnvVar::Copied { name, .. } => Some(name),
            EnvVar::Rendered(_) => None,
        }
    }

    pub fn write(&self, j: &mut Json) {
        match *self {
            EnvVar::Value { name, value } => {
                j.raw("{\"name\":")
                    .str(name)
                    .raw(",\"value\":")
                    .str(value)
                    .raw("}");
            }
            EnvVar::Rendered(text) => {
                j.raw(text);
            }
            EnvVar::Copied {
                name,
                value,
                value_from,
            } => {
                j.raw("{\"name\":").str(name);
                if let Some(v) = value {
                    j.raw(",\"value\":").str(v);
                }
                if let Some(v) = value_from {
                    j.raw(",\"valueFrom\":").raw(v);
                }
                j.raw("}");
            }
        }
    }
}

/// A `volumeMounts` entry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mount<'a> {
    pub name: &'a str,
    pub mount_path: &'a str,
    pub read_only: bool,
    pub sub_path: Option<&'a str>,
    pub sub_path_expr: Option<&'a str>,
    pub mount_propagation: Option<&'a str>,
    pub recursive_read_only: Option<&'a str>,
}

impl Mount<'_> {
    pub fn write(&self, j: &mut Json) {
        j.raw("{\"name\":")
            .str(self.name)
            .raw(",\"mountPath\":")
            .str(self.mount_path);
        if self.read_only {
            j.raw(",\"readOnly\":true");
        }
        for (key, value) in [
            ("subPath", self.sub_path),
            ("subPathExpr", self.sub_path_expr),
            ("mountPropagation", self.mount_propagation),
            ("recursiveReadOnly", self.recursive_read_only),
        ] {
            if let Some(v) = value {
                j.raw(",\"").raw(key).raw("\":").str(v);
            }
        }
        j.raw("}");
    }
}

/// A memory `emptyDir` volume.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Volume<'a> {
    pub name: &'a str,
    pub size_limit: &'a str,
}

impl Volume<'_> {
    pub fn write(&self, j: &mut Json) {
        j.raw("{\"name\":")
            .str(self.name)
            .raw(",\"emptyDir\":{\"medium\":\"Memory\",\"sizeLimit\":")
            .str(self.size_limit)
            .raw("}}");
    }
}

/// The sidecar's startup probe.
#[derive(Debug, Clone)]
pub(crate) struct Probe<'a> {
    pub command: Vec<&'a str>,
    pub failure_threshold: u64,
}

/// An injected container (install, init or sidecar).
#[derive(Debug, Clone)]
pub(crate) struct Container<'a> {
    pub name: &'a str,
    /// `"image":…,"imagePullPolicy":…,"resources":…,"terminationMessagePolicy":…`,
    /// rendered once per configuration.
    pub base: &'a str,
    pub command: Vec<&'a str>,
    pub env: Option<Vec<EnvVar<'a>>>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub volume_mounts: Vec<Mount<'a>>,
    pub restart_policy: Option<&'a str>,
    pub startup_probe: Option<Probe<'a>>,
}

/// The hardened `securityContext` of every injected container, up to the
/// user and group: no privilege escalation, every capability dropped,
/// read-only root, non-root, seccomp `RuntimeDefault`.
const HARDENED: &str = "{\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":[\"ALL\"]},\
\"readOnlyRootFilesystem\":true,\"runAsNonRoot\":true,\"seccompProfile\":{\"type\":\"RuntimeDefault\"}";

impl Container<'_> {
    pub fn write(&self, j: &mut Json) {
        j.raw("{\"name\":").str(self.name).raw(",").raw(self.base);
        j.raw(",\"command\":").strs(self.command.iter().copied());
        if let Some(env) = &self.env {
            j.raw(",\"env\":").array(env, |j, e| e.write(j));
        }
        j.raw(",\"securityContext\":").raw(HARDENED);
        if let Some(u) = self.run_as_user {
            j.raw(",\"runAsUser\":").int(u);
        }
        if let Some(g) = self.run_as_group {
            j.raw(",\"runAsGroup\":").int(g);
        }
        j.raw("}");
        j.raw(",\"volumeMounts\":")
            .array(&self.volume_mounts, |j, m| m.write(j));
        if let Some(policy) = self.restart_policy {
            j.raw(",\"restartPolicy\":").str(policy);
        }
        if let Some(p) = &self.startup_probe {
            j.raw(",\"startupProbe\":{\"exec\":{\"command\":")
                .strs(p.command.iter().copied())
                .raw("},\"periodSeconds\":1,\"failureThreshold\":");
            let _ = write!(j.buf, "{}", p.failure_threshold);
            j.raw("}");
        }
        j.raw("}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(pointer_token("sidekey.io/injected"), "sidekey.io~1injected");
        assert_eq!(pointer_token("a~/b"), "a~0~1b");
        assert_eq!(pointer_token("plain"), "plain");
        assert_eq!(
            format!(
                "/metadata/annotations/{}",
                pointer_token(sidekey_model::annotations::INJECTED)
            ),
            crate::plan::INJECTED_POINTER
        );
    }

    #[test]
    fn operations_are_rfc6902() {
        let mut w = PatchWriter::new();
        w.op("add", format_args!("/a"), |j| {
            j.str("x");
        });
        w.op("replace", format_args!("/b/{}", 3), |j| {
            j.strs(["1", "2"]);
        });
        w.append(
            format_args!("/c"),
            true,
            &[EnvVar::Value {
                name: "N",
                value: "",
            }],
            |j, e| e.write(j),
        );
        w.append(format_args!("/d"), false, &[1, 2], |j, n| {
            j.int(*n);
        });
        assert_eq!(
            w.finish(),
            r#"[{"op":"add","path":"/a","value":"x"},{"op":"replace","path":"/b/3","value":["1","2"]},{"op":"add","path":"/c/-","value":{"name":"N","value":""}},{"op":"add","path":"/d","value":[1,2]}]"#
        );
        assert_eq!(PatchWriter::new().finish(), "[]");
    }

    #[test]
    fn the_hardened_context_is_json() {
        let mut j = Json::default();
        j.raw(HARDENED).raw("}");
        let v: serde_json::Value = serde_json::from_str(&j.buf).unwrap();
        assert_eq!(v["capabilities"]["drop"][0], "ALL");
    }
}
