//! The parts of a pod the planner reads, borrowed from the pod's JSON text.
//!
//! The API server has validated the pod before it calls a webhook, so the
//! planner does not need a typed copy of all of it: [`PodView`] reads the
//! names, annotations, commands, env names, mounts and user ids that a
//! decision depends on, borrows every string it can from the input, and
//! skips everything else without building it. Parsing a typical pod this
//! way costs a fraction of a full `k8s_openapi` parse (the benchmark in
//! `benches/plan.rs` prints both).
//!
//! A parse error ([`PodError`]) says where and what kind of error it is,
//! never which value: serde's own messages can quote input, and env values
//! in a pod spec may be secrets.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::annotations::wants_injection;

/// A string from the input: borrowed when it has no escapes, owned when it
/// had to be unescaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'a> Text<'a> {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// A pod's annotations.
pub type AnnotationMap<'a> = BTreeMap<Text<'a>, Text<'a>>;

/// The parts of a Pod the planner reads.
///
/// The spec is read only for a pod that opts in (injected or not: the
/// marker counts only once the injector's own parts are checked): the
/// planner skips every other pod on its annotations alone, so a pod that
/// is not sidekey's business is never refused over its spec.
#[derive(Debug, Default)]
pub struct PodView<'a> {
    /// `metadata` (absent or null: empty).
    pub metadata: MetaView<'a>,
    /// `spec`, when the pod is to be planned and has one.
    pub spec: Option<SpecView<'a>>,
}

/// One pass over the pod's JSON: `metadata` is read; `spec` is read when
/// the metadata (which the API server writes first) opts in, skipped when
/// it does not, and kept as text to decide at the
/// end when it comes before the metadata. Every other member is skipped.
impl<'de: 'a, 'a> Deserialize<'de> for PodView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PodVisitor;
        impl<'de> Visitor<'de> for PodVisitor {
            type Value = PodView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Pod object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<PodView<'de>, M::Error> {
                let mut metadata: Option<MetaView<'de>> = None;
                let mut spec = None;
                let mut early_spec: Option<&'de RawValue> = None;
                let mut seen_spec = false;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.as_str() {
                        // Go's decoder (the API server, the kubelet) takes
                        // the last of a key given twice; this view would
                        // read the first: a pod with one is refused.
                        "metadata" if metadata.is_some() => {
                            return Err(M::Error::duplicate_field("metadata"))
                        }
                        "spec" if seen_spec => return Err(M::Error::duplicate_field("spec")),
                        "metadata" => {
                            metadata = Some(
                                map.next_value::<Option<MetaView<'de>>>()?
                                    .unwrap_or_default(),
                            );
                        }
                        "spec" => {
                            seen_spec = true;
                            match &metadata {
                                Some(m) if m.is_planned() => spec = map.next_value()?,
                                Some(_) => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                                None => early_spec = map.next_value()?,
                            }
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let metadata = metadata.unwrap_or_default();
                if let (Some(raw), true) = (early_spec, metadata.is_planned()) {
                    spec = serde_json::from_str(raw.get()).map_err(|e| {
                        M::Error::custom(format_args!("spec: {}", describe_json_error(&e)))
                    })?;
                }
                Ok(PodView { metadata, spec })
            }
        }
        d.deserialize_map(PodVisitor)
    }
}

/// `metadata`: names and annotations.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    /// `metadata.name`.
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    /// `metadata.generateName`.
    #[serde(borrow, default)]
    pub generate_name: Option<Text<'a>>,
    /// `metadata.namespace`.
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    /// `metadata.annotations`.
    #[serde(borrow, default, deserialize_with = "unique_annotations")]
    pub annotations: Option<AnnotationMap<'a>>,
}

impl MetaView<'_> {
    /// Whether the planner reads this pod's spec: it opts in.
    fn is_planned(&self) -> bool {
        self.annotations.as_ref().is_some_and(wants_injection)
    }
}

/// `spec`: containers, volumes and the pod's security context.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    /// `spec.containers` (app containers).
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub containers: Vec<ContainerView<'a>>,
    /// `spec.initContainers`.
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.ephemeralContainers`, names only.
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<Named<'a>>>,
    /// `spec.volumes`: names, and the definition of `emptyDir` ones.
    #[serde(borrow, default)]
    pub volumes: Option<Vec<VolumeView<'a>>>,
    /// `spec.securityContext`.
    #[serde(default)]
    pub security_context: Option<PodSecurityView>,
    /// `spec.os`.
    #[serde(borrow, default)]
    pub os: Option<OsView<'a>>,
    /// `spec.nodeSelector`.
    #[serde(borrow, default, deserialize_with = "unique_node_selector")]
    pub node_selector: Option<BTreeMap<Text<'a>, Text<'a>>>,
}

/// `spec.os`.
#[derive(Debug, Default, Deserialize)]
pub struct OsView<'a> {
    /// `name`: `linux` or `windows`.
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
}

impl SpecView<'_> {
    /// Why the pod runs on Windows, when it does: `spec.os.name: windows`,
    /// or a node selector `kubernetes.io/os` (or the older
    /// `beta.kubernetes.io/os`) of `windows`.
    pub fn windows(&self) -> Option<&'static str> {
        if self.os.as_ref().and_then(|o| o.name.as_deref()) == Some("windows") {
            return Some("spec.os.name is windows");
        }
        let selector = self.node_selector.as_ref()?;
        if selector.get("kubernetes.io/os").map(|v| v.as_str()) == Some("windows") {
            return Some("its nodeSelector kubernetes.io/os is windows");
        }
        if selector.get("beta.kubernetes.io/os").map(|v| v.as_str()) == Some("windows") {
            return Some("its nodeSelector beta.kubernetes.io/os is windows");
        }
        None
    }
}

/// Anything with a `name`: a volume, an init or ephemeral container.
#[derive(Debug, Default, Deserialize)]
pub struct Named<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
}

impl SpecView<'_> {
    /// Every app and init container, app containers first.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerView<'_>> {
        self.containers
            .iter()
            .chain(self.init_containers.iter().flatten())
    }
}

/// A volume: its name and, for an `emptyDir`, its definition; the names of
/// any other members (sources) it has.
#[derive(Debug, Default)]
pub struct VolumeView<'a> {
    /// `name`.
    pub name: Text<'a>,
    /// `emptyDir`, when it has one.
    pub empty_dir: Option<EmptyDirView<'a>>,
    /// The other members (other volume sources), by name.
    pub others: Vec<Text<'a>>,
    /// A `projected` volume with a `secret` source.
    pub projects_a_secret: bool,
}

/// A `projected` volume source: whether a source is a `secret`.
#[derive(Deserialize)]
struct ProjectedView {
    #[serde(default)]
    sources: Option<Vec<ProjectionView>>,
}

#[derive(Deserialize)]
struct ProjectionView {
    #[serde(default)]
    secret: Option<IgnoredAny>,
}

/// An `emptyDir` volume source.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirView<'a> {
    /// `medium`.
    #[serde(borrow, default)]
    pub medium: Option<Text<'a>>,
    /// `sizeLimit`, a quantity (a string; a number is read as its text).
    #[serde(default, deserialize_with = "quantity")]
    pub size_limit: Option<String>,
}

fn quantity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        S(String),
        N(serde_json::Number),
    }
    Ok(Option::<Q>::deserialize(d)?.map(|q| match q {
        Q::S(s) => s,
        Q::N(n) => n.to_string(),
    }))
}

impl<'de: 'a, 'a> Deserialize<'de> for VolumeView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VolumeVisitor;
        impl<'de> Visitor<'de> for VolumeVisitor {
            type Value = VolumeView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a volume")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<VolumeView<'de>, M::Error> {
                let mut name = None;
                let mut v = VolumeView::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if v.others.contains(&key)
                        || (key.as_str() == "name" && name.is_some())
                        || (key.as_str() == "emptyDir" && v.empty_dir.is_some())
                    {
                        return Err(M::Error::custom(format_args!(
                            "duplicate field `{}`",
                            if matches!(key.as_str(), "name" | "emptyDir") {
                                key.as_str()
                            } else {
                                "volume source"
                            }
                        )));
                    }
                    match key.as_str() {
                        "name" => name = Some(map.next_value::<Text<'de>>()?),
                        "emptyDir" => v.empty_dir = map.next_value()?,
                        "projected" => {
                            let p: Option<ProjectedView> = map.next_value()?;
                            v.projects_a_secret = p
                                .and_then(|p| p.sources)
                                .into_iter()
                                .flatten()
                                .any(|s| s.secret.is_some());
                            v.others.push(key);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            v.others.push(key);
                        }
                    }
                }
                v.name = name.ok_or_else(|| M::Error::missing_field("name"))?;
                Ok(v)
            }
        }
        d.deserialize_map(VolumeVisitor)
    }
}

/// A container (app or init).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `image`.
    #[serde(borrow, default)]
    pub image: Option<Text<'a>>,
    /// `command`.
    #[serde(borrow, default)]
    pub command: Option<Vec<Text<'a>>>,
    /// `args`.
    #[serde(borrow, default)]
    pub args: Option<Vec<Text<'a>>>,
    /// `env`.
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvVarView<'a>>>,
    /// `envFrom`.
    #[serde(borrow, default)]
    pub env_from: Option<Vec<EnvFromView<'a>>>,
    /// `volumeMounts`.
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
    /// `volumeDevices`.
    #[serde(borrow, default)]
    pub volume_devices: Option<Vec<DeviceView<'a>>>,
    /// `restartPolicy` (init containers: `Always` makes a native sidecar).
    #[serde(borrow, default)]
    pub restart_policy: Option<Text<'a>>,
    /// `securityContext`.
    #[serde(default)]
    pub security_context: Option<SecurityView>,
}

/// One `envFrom` entry: its prefix and its source (the names only).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromView<'a> {
    /// `prefix`.
    #[serde(borrow, default)]
    pub prefix: Option<Text<'a>>,
    /// `configMapRef`.
    #[serde(borrow, default)]
    pub config_map_ref: Option<RefView<'a>>,
    /// `secretRef`.
    #[serde(borrow, default)]
    pub secret_ref: Option<RefView<'a>>,
}

impl EnvFromView<'_> {
    /// What it reads, e.g. `ConfigMap "x"`, for messages.
    pub fn source(&self) -> String {
        let name = |r: &RefView<'_>| {
            r.name
                .as_deref()
                .map(|n| crate::quote::Q(n).to_string())
                .unwrap_or_default()
        };
        match (&self.config_map_ref, &self.secret_ref) {
            (Some(r), _) => format!("ConfigMap {}", name(r)),
            (None, Some(r)) => format!("Secret {}", name(r)),
            (None, None) => "an unnamed source".to_owned(),
        }
    }
}

/// A `configMapRef` or `secretRef`.
#[derive(Debug, Default, Deserialize)]
pub struct RefView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
}

/// One `volumeDevices` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `devicePath`.
    #[serde(borrow, default)]
    pub device_path: Option<Text<'a>>,
}

impl ContainerView<'_> {
    /// Whether the spec gives no command (absent or empty).
    pub fn has_no_command(&self) -> bool {
        self.command.as_ref().is_none_or(Vec::is_empty)
    }

    /// The env entries (none when absent).
    pub fn env(&self) -> &[EnvVarView<'_>] {
        self.env.as_deref().unwrap_or_default()
    }

    /// The volume mounts (none when absent).
    pub fn mounts(&self) -> &[MountView<'_>] {
        self.volume_mounts.as_deref().unwrap_or_default()
    }

    /// The `envFrom` entries (none when absent).
    pub fn env_from(&self) -> &[EnvFromView<'_>] {
        self.env_from.as_deref().unwrap_or_default()
    }

    /// The volume devices (none when absent).
    pub fn devices(&self) -> &[DeviceView<'_>] {
        self.volume_devices.as_deref().unwrap_or_default()
    }

    /// The args (none when absent).
    pub fn args(&self) -> &[Text<'_>] {
        self.args.as_deref().unwrap_or_default()
    }
}

/// One `env` entry. The planner reads the names; only the entries it
/// copies into the agent's own containers (AWS credential settings) are
/// written back, as they were.
///
/// Its `Debug` shows the name only: an env value in a pod spec may be a
/// secret.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarView<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `value`.
    #[serde(borrow, default)]
    pub value: Option<Text<'a>>,
    /// `valueFrom`, as its JSON text.
    #[serde(borrow, default)]
    pub value_from: Option<&'a RawValue>,
}

impl fmt::Debug for EnvVarView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVarView")
            .field("name", &self.name.as_str())
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("value_from", &self.value_from.map(|_| "<redacted>"))
            .finish()
    }
}

/// One `volumeMounts` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `mountPath`.
    #[serde(borrow)]
    pub mount_path: Text<'a>,
    /// `readOnly`.
    #[serde(default)]
    pub read_only: Option<bool>,
    /// `subPath`.
    #[serde(borrow, default)]
    pub sub_path: Option<Text<'a>>,
    /// `subPathExpr`.
    #[serde(borrow, default)]
    pub sub_path_expr: Option<Text<'a>>,
    /// `mountPropagation`.
    #[serde(borrow, default)]
    pub mount_propagation: Option<Text<'a>>,
    /// `recursiveReadOnly`.
    #[serde(borrow, default)]
    pub recursive_read_only: Option<Text<'a>>,
}

/// A container's `securityContext`: who it runs as.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityView {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    #[serde(default)]
    pub run_as_group: Option<i64>,
}

/// The pod's `securityContext`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityView {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// `fsGroup`.
    #[serde(default)]
    pub fs_group: Option<i64>,
}

fn unique_annotations<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<AnnotationMap<'a>>, D::Error> {
    unique_map(d, "annotations")
}

fn unique_node_selector<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<AnnotationMap<'a>>, D::Error> {
    unique_map(d, "nodeSelector")
}

/// A string map (null: `None`) that has no key twice: Go's decoder keeps
/// the last value of a repeated key, a `BTreeMap` too, but a map with one
/// is refused rather than read either way. The key is not quoted.
fn unique_map<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<Option<AnnotationMap<'a>>, D::Error> {
    struct MapVisitor(&'static str);
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = Option<AnnotationMap<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<Text<'de>, Text<'de>>()? {
                if out.insert(k, v).is_some() {
                    return Err(M::Error::custom(format_args!(
                        "duplicate key in `{}`",
                        self.0
                    )));
                }
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(MapVisitor(what))
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A pod that cannot be read: where, and what kind of problem, never the
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodError(String);

impl PodError {
    /// What a serde_json error says, without any part of the input.
    pub fn from_json(e: &serde_json::Error) -> PodError {
        PodError(describe_json_error(e))
    }
}

impl<'a> PodView<'a> {
    /// Reads a pod from its JSON text, borrowing from it; the spec only
    /// when the annotations opt in and the marker is absent.
    pub fn from_json(text: &'a str) -> Result<PodView<'a>, PodError> {
        serde_json::from_str(text).map_err(|e| PodError::from_json(&e))
    }

    /// The annotations (empty when absent).
    pub fn annotations(&self) -> &AnnotationMap<'a> {
        static EMPTY: AnnotationMap<'static> = BTreeMap::new();
        self.metadata.annotations.as_ref().unwrap_or(&EMPTY)
    }

    /// `metadata.name`, else `metadata.generateName`, when not empty.
    pub fn name(&self) -> Option<&str> {
        self.metadata
            .name
            .as_deref()
            .or(self.metadata.generate_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// What a serde_json error says, without any part of the input (its kind
/// and position; a missing or duplicate field by its schema name): the one
/// description, in `sidekey_wire::json`.
pub use sidekey_wire::json::describe_json_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let text = r#"{"metadata":{"name":"web","generateName":"w\u0065b-",
            "annotations":{"sidekey.io/inject":"true","sidekey.io/services":"api"}},
            "spec":{"containers":[{"name":"app","command":["/app"],
            "env":[{"name":"A","value":"1"},{"name":"B","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}],
            "volumeMounts":[{"name":"v","mountPath":"/v","readOnly":true}],
            "securityContext":{"runAsUser":1000}}],
            "volumes":[{"name":"v","emptyDir":{}}],
            "securityContext":{"fsGroup":2000}}}"#;
        let pod = PodView::from_json(text).unwrap();
        assert!(matches!(
            pod.metadata.name.as_ref().unwrap().0,
            Cow::Borrowed("web")
        ));
        assert!(matches!(
            pod.metadata.generate_name.as_ref().unwrap().0,
            Cow::Owned(ref s) if s == "web-"
        ));
        assert_eq!(
            pod.annotations().get("sidekey.io/inject").unwrap().as_str(),
            "true"
        );
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(
            c.env()[1].value_from.unwrap().get(),
            r#"{"fieldRef":{"fieldPath":"metadata.name"}}"#
        );
        assert_eq!(c.mounts()[0].mount_path.as_str(), "/v");
        assert_eq!(c.security_context.unwrap().run_as_user, Some(1000));
        assert_eq!(spec.security_context.unwrap().fs_group, Some(2000));
        assert_eq!(spec.volumes.as_ref().unwrap()[0].name.as_str(), "v");
    }

    const OPTED_IN: &str = r#""metadata":{"annotations":{"sidekey.io/inject":"true"}}"#;

    #[test]
    fn debug_output_never_shows_env_values() {
        let text = format!(
            r#"{{{OPTED_IN},"spec":{{"containers":[{{"name":"app","env":[
            {{"name":"DB_PASSWORD","value":"hunter2-secret"}},
            {{"name":"TOKEN","valueFrom":{{"secretKeyRef":{{"name":"hunter2-secret","key":"k"}}}}}}]}}]}}}}"#
        );
        let shown = format!("{:?}", PodView::from_json(&text).unwrap());
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
    }

    #[test]
    fn nulls_and_absences_read_as_empty() {
        let text = format!(r#"{{{OPTED_IN},"spec":{{"containers":null}}}}"#);
        assert!(PodView::from_json(&text)
            .unwrap()
            .spec
            .unwrap()
            .containers
            .is_empty());
        let pod = PodView::from_json(r#"{"metadata":null,"spec":null}"#).unwrap();
        assert!(pod.annotations().is_empty());
        assert!(pod.spec.is_none());
        assert!(PodView::from_json("{}").unwrap().spec.is_none());
    }

    #[test]
    fn the_spec_is_read_only_for_pods_to_plan() {
        let broken = r#""spec":{"containers":"not a list"}"#;
        for metadata in [
            r#""metadata":{}"#,
            r#""metadata":{"annotations":{"sidekey.io/inject":"false"}}"#,
            r#""metadata":{"annotations":{"sidekey.io/injected":"true"}}"#,
        ] {
            let text = format!("{{{metadata},{broken}}}");
            let pod = PodView::from_json(&text).unwrap();
            assert!(pod.spec.is_none(), "{metadata}");
        }
        let e = PodView::from_json(&format!("{{{OPTED_IN},{broken}}}")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a field has the wrong type or value at line 1 column"),
            "{e}"
        );
    }

    #[test]
    fn errors_never_quote_the_input() {
        const SECRET: &str = "hunter2-secret";
        for text in [
            format!(
                r#"{{{OPTED_IN},"spec":{{"containers":[{{"name":"a","env":[{{"name":"X","value":{SECRET}}}]}}]}}}}"#
            ),
            format!(r#"{{{OPTED_IN},"spec":{{"securityContext":{{"runAsUser":"{SECRET}"}}}}}}"#),
            format!(r#"{{"metadata":{{"annotations":{{"a":["{SECRET}"]}}}}}}"#),
            format!(r#"{{{OPTED_IN},"spec":{{"containers":[{{"name":"{SECRET}"#),
        ] {
            let e = PodView::from_json(&text).unwrap_err();
            assert!(!e.to_string().contains(SECRET), "{e}");
        }
        let text = format!(r#"{{{OPTED_IN},"spec":{{"containers":[{{"command":[]}}]}}}}"#);
        let e = PodView::from_json(&text).unwrap_err();
        assert!(e.to_string().starts_with("missing field `name`"), "{e}");
        // A spec before the metadata is kept as text and read at the end.
        let text = format!(r#"{{"spec":{{"containers":[{{"name":"app"}}]}},{OPTED_IN}}}"#);
        assert_eq!(
            PodView::from_json(&text).unwrap().spec.unwrap().containers[0]
                .name
                .as_str(),
            "app"
        );
        let text = r#"{"spec":{"containers":[{"name":"app"}]},"metadata":{}}"#;
        assert!(PodView::from_json(text).unwrap().spec.is_none());
    }
}
