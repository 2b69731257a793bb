//! `sidekey inject`: the injector's planner, offline. Reads manifests the way
//! Kubernetes does (YAML 1.1 scalars, merge keys: see the `yaml11` module),
//! plans the pod template of every workload (Pod, Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, and the items
//! of a `List`, recursively) exactly as the webhook would for `--namespace`,
//! and prints the mutated manifests; other kinds pass through unchanged.
//!
//! All or nothing: when any document has a problem (a denial, an annotation
//! that is not a string, a template that is not a pod template) every
//! problem of every document is listed on standard error, nothing is
//! printed on standard output, and the exit status is 1.

use std::path::Path;

use serde_json::Value;
use sidekey_patch::{Config, Decision, ImageConfigs, Request};
use sidekey_registry::{Credentials, Need, Platform, Registry};

use crate::{yaml11, Failure};

/// Where a kind keeps its pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// How `inject` prints what it injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A YAML stream, one document per input document.
    Yaml,
    /// JSON: the object itself for one document; a `v1` `List` holding
    /// them, in order, for several.
    Json,
}

/// `--registry-lookup`: read what images run from their registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryLookup {
    /// `--registry-auth` (else `~/.docker/config.json` when it exists).
    pub auth: Option<std::path::PathBuf>,
    /// `--registry-ca`.
    pub ca: Option<std::path::PathBuf>,
}

/// The lookup's budget for one manifest's pod template (offline: generous).
const LOOKUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

fn registry(lookup: &RegistryLookup) -> Result<Registry, Failure> {
    let auth = lookup.auth.clone().or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".docker/config.json");
        p.is_file().then_some(p)
    });
    let credentials = match &auth {
        Some(p) => Credentials::from_file(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => Credentials::none(),
    };
    let ca_bundle = match &lookup.ca {
        Some(p) => std::fs::read(p)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", p.display())))?,
        None => Vec::new(),
    };
    Registry::new(sidekey_registry::Settings {
        budget: LOOKUP_BUDGET,
        ca_bundle,
        credentials,
        ..sidekey_registry::Settings::default()
    })
    .map_err(|e| Failure::usage(format!("--registry-ca: {e}")))
}

/// Runs `sidekey inject`.
pub fn run(
    file: &Path,
    namespace: Option<&str>,
    config: Option<&Path>,
    format: Format,
    lookup: Option<&RegistryLookup>,
) -> Result<(), Failure> {
    let registry = lookup.map(registry).transpose()?;
    let config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())))?;
            Config::from_yaml(&text)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => Config::default_for(None),
    };
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?
    };
    let shown = if file.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let docs = yaml11::read(&text).map_err(|e| Failure::usage(format!("{shown}: {e}")))?;
    let mut run = Run {
        namespace,
        registry: registry.as_ref(),
        config: &config,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut out = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let at = format!("{shown} document {}", index + 1);
        out.push(run.object(doc, &at));
    }
    if !run.problems.is_empty() {
        for p in &run.problems {
            eprintln!("sidekey: {p}");
        }
        return Err(Failure::failed(format!(
            "{} problem{} in {shown}; nothing printed (inject prints all documents or none)",
            run.problems.len(),
            if run.problems.len() == 1 { "" } else { "s" }
        )));
    }
    for note in &run.notes {
        eprintln!("sidekey: {note}");
    }
    let printed = match format {
        Format::Yaml => yaml11::write(&out),
        Format::Json => {
            let value = if out.len() == 1 {
                out.pop().unwrap_or(Value::Null)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": out})
            };
            let mut s =
                serde_json::to_string_pretty(&value).map_err(|e| Failure::failed(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    std::io::Write::write_all(&mut std::io::stdout(), printed.as_bytes())
        .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))?;
    Ok(())
}

struct Run<'a> {
    namespace: Option<&'a str>,
    registry: Option<&'a Registry>,
    config: &'a Config,
    /// Every problem found, in document order.
    problems: Vec<String>,
    /// Lines printed on standard error when the run succeeds.
    notes: Vec<String>,
}

/// A value's type as a user reads it in YAML.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `Kind name`, the name being `metadata.name`, else `generateName*`.
fn title(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("object");
    let meta = &doc["metadata"];
    let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(g)) if !g.is_empty() => format!("{g}*"),
        _ => "(no name)".to_owned(),
    };
    format!("{kind} {name}")
}

/// What the user may have written instead of the value shown.
fn hint(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => {
            " (or the word as written: YAML 1.1 reads unquoted yes/no/on/off/y/n as booleans)"
        }
        Value::Number(_) => {
            " (or the digits as written: YAML 1.1 reads an unquoted 0755 as the octal 493)"
        }
        _ => "",
    }
}

/// A scalar as text (what to put between quotes).
fn plain_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// " at line N column M" of the internal JSON rendering is no use to a
/// reader of the YAML file: cut it.
fn without_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl Run<'_> {
    /// With `--registry-lookup`: the image configs of the containers
    /// without a command, read from their registries (`None` after a
    /// failure, recorded as a problem).
    fn images(
        &mut self,
        pod: &sidekey_patch::PodView<'_>,
        request: &Request<'_>,
        at: &str,
        title: &str,
    ) -> Option<ImageConfigs> {
        let Some(registry) = self.registry else {
            return Some(ImageConfigs::new());
        };
        let needs: Vec<Need> = sidekey_patch::image_lookups(pod, request, self.config)
            .into_iter()
            .filter_map(|l| {
                Some(Need {
                    container: l.container.to_owned(),
                    image: l.image?.to_owned(),
                })
            })
            .collect();
        if needs.is_empty() {
            return Some(ImageConfigs::new());
        }
        let platform = Platform::from_node_selector(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_selector.as_ref())
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // `inject` runs inside the CLI's runtime: the lookup gets its own,
        // on a thread of its own.
        let looked = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                Some(rt.block_on(registry.lookup_all(&needs, &platform, &Credentials::none())))
            })
            .join()
            .ok()
            .flatten()
        });
        let Some(looked) = looked else {
            self.problems
                .push(format!("{at}: {title}: the registry lookup could not run"));
            return None;
        };
        let mut images = ImageConfigs::new();
        let mut ok = true;
        for (container, r) in looked {
            match r {
                Ok(c) => {
                    images.insert(container, c);
                }
                Err(e) => {
                    ok = false;
                    self.problems.push(format!(
                        "{at}: {title}: container {container} sets no command, and the ENTRYPOINT and CMD of its image {} cannot be read from its registry: {}; set its command, or sidekey.io/command.{container}",
                        e.image, e.answer
                    ));
                }
            }
        }
        ok.then_some(images)
    }

    fn object(&mut self, mut doc: Value, at: &str) -> Value {
        let kind = doc["kind"].as_str().unwrap_or("").to_owned();
        if kind == "List" || kind.ends_with("List") && doc["items"].is_array() {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                for (i, item) in items.iter_mut().enumerate() {
                    let taken = std::mem::take(item);
                    *item = self.object(taken, &format!("{at} item {}", i + 1));
                }
            }
            return doc;
        }
        let Some(pointer) = template_pointer(&kind) else {
            return doc;
        };
        let title = title(&doc);
        let mut ok = self.strings_only(&doc["metadata"], at, &title, "");
        let Some(template) = doc.pointer(pointer).cloned() else {
            self.problems
                .push(format!("{at}: {title}: has no pod template at {pointer}"));
            return doc;
        };
        if !pointer.is_empty() {
            ok &= self.strings_only(&template["metadata"], at, &title, "pod template ");
        }
        ok &= self.container_types(&template["spec"], at, &title);
        if !ok {
            return doc;
        }
        let namespace = self
            .namespace
            .or(doc["metadata"]["namespace"].as_str())
            .unwrap_or("default")
            .to_owned();
        let pod_json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        });
        let pod_text = match serde_json::to_string(&pod_json) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(format!("{at}: {title}: {e}"));
                return doc;
            }
        };
        let pod = match sidekey_patch::PodView::from_json(&pod_text) {
            Ok(p) => p,
            Err(e) => {
                self.problems.push(format!(
                    "{at}: {title}: not a valid pod template: {}",
                    without_position(&e.to_string())
                ));
                return doc;
            }
        };
        let request = Request {
            namespace: &namespace,
            user: None,
        };
        let Some(images) = self.images(&pod, &request, at, &title) else {
            return doc;
        };
        match sidekey_patch::plan_with_images(&pod, &request, self.config, &images) {
            Decision::Skip { reason } => {
                self.notes
                    .push(format!("{at}: {title}: unchanged ({reason})"));
                doc
            }
            Decision::Deny(denials) => {
                for d in &denials {
                    let annotation = d
                        .annotation
                        .as_deref()
                        .map(|a| format!(" [{a}]"))
                        .unwrap_or_default();
                    self.problems.push(format!(
                        "{at}: {title}: denied in namespace {namespace}{annotation}: {d}"
                    ));
                }
                doc
            }
            Decision::Inject(plan) => {
                for w in &plan.warnings {
                    self.notes.push(format!("warning: {at}: {title}: {w}"));
                }
                let patched = plan
                    .patch
                    .operations()
                    .map_err(|e| e.to_string())
                    .and_then(|ops| {
                        sidekey_patch::apply(&pod_json, &ops).map_err(|e| e.to_string())
                    });
                let patched = match patched {
                    Ok(p) => p,
                    Err(e) => {
                        self.problems
                            .push(format!("{at}: {title}: the patch does not apply: {e}"));
                        return doc;
                    }
                };
                self.notes.push(format!(
                    "{at}: {title}: injected (environment {}, containers {})",
                    plan.environment,
                    plan.containers.join(",")
                ));
                if pointer.is_empty() {
                    // A Pod: the patched pod, without the namespace the
                    // planner needed when the manifest had none.
                    let mut pod = patched;
                    if doc["metadata"]["namespace"].is_null() {
                        if let Some(m) = pod["metadata"].as_object_mut() {
                            m.remove("namespace");
                        }
                    }
                    for key in ["metadata", "spec"] {
                        doc[key] = pod[key].take();
                    }
                    return doc;
                }
                if let Some(slot) = doc.pointer_mut(pointer) {
                    if !slot.is_object() {
                        *slot = serde_json::json!({});
                    }
                    let mut patched = patched;
                    slot["metadata"] = patched["metadata"].take();
                    slot["spec"] = patched["spec"].take();
                }
                doc
            }
        }
    }

    /// The container fields YAML 1.1 most often turns into something else
    /// (`command`/`args` items, `env` values: `yes`, `8080`, `0755` written
    /// plain) must be strings: one problem for each that is not, naming the
    /// container and the field, with the fix.
    fn container_types(&mut self, spec: &Value, at: &str, title: &str) -> bool {
        let mut ok = true;
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let Some(containers) = spec[list].as_array() else {
                if !spec[list].is_null() {
                    self.problems.push(format!(
                        "{at}: {title}: spec.{list} is {}, not a list of containers",
                        type_name(&spec[list])
                    ));
                    ok = false;
                }
                continue;
            };
            for (i, c) in containers.iter().enumerate() {
                let name = c["name"]
                    .as_str()
                    .map(|n| format!("container {n:?}"))
                    .unwrap_or_else(|| format!("{list}[{i}]"));
                if !c.is_object() {
                    self.problems.push(format!(
                        "{at}: {title}: spec.{list}[{i}] is {}, not a container",
                        type_name(c)
                    ));
                    ok = false;
                    continue;
                }
                for field in ["command", "args"] {
                    for (j, item) in c[field].as_array().into_iter().flatten().enumerate() {
                        if !item.is_string() {
                            ok = false;
                            self.problems.push(format!(
                                "{at}: {title}: {name} {field}[{j}] is {} ({item}), but {field} must be strings; quote it: \"{}\"{}",
                                type_name(item),
                                plain_text(item),
                                hint(item)
                            ));
                        }
                    }
                }
                for e in c["env"].as_array().into_iter().flatten() {
                    let value = &e["value"];
                    if value.is_null() || value.is_string() {
                        continue;
                    }
                    ok = false;
                    let var = e["name"].as_str().unwrap_or("?");
                    self.problems.push(format!(
                        "{at}: {title}: {name} env {var} value is {} ({value}), but env values must be strings; quote it: value: \"{}\"{}",
                        type_name(value),
                        plain_text(value),
                        hint(value)
                    ));
                }
            }
        }
        ok
    }

    /// Annotations and labels must be strings (the API refuses anything
    /// else): one problem for each that is not, with the fix.
    fn strings_only(&mut self, meta: &Value, at: &str, title: &str, whose: &str) -> bool {
        let mut ok = true;
        for field in ["annotations", "labels"] {
            let Some(map) = meta[field].as_object() else {
                if !meta[field].is_null() {
                    self.problems.push(format!(
                        "{at}: {title}: {whose}metadata.{field} is {}, not a mapping of strings",
                        type_name(&meta[field])
                    ));
                    ok = false;
                }
                continue;
            };
            for (key, value) in map {
                if value.is_string() {
                    continue;
                }
                ok = false;
                let fix = match value {
                    Value::Bool(_) | Value::Number(_) | Value::Null => format!(
                        "; quote it: {key}: {}",
                        serde_json::to_string(&match value {
                            Value::Null => String::new(),
                            v => v.to_string(),
                        })
                        .unwrap_or_default()
                    ),
                    _ => String::new(),
                };
                let fix = format!("{fix}{}", hint(value));
                let singular = field.trim_end_matches('s');
                self.problems.push(format!(
                    "{at}: {title}: {whose}{singular} {key} is {} ({}), but {field} must be strings{fix}",
                    type_name(value),
                    if value.is_object() || value.is_array() {
                        "not a scalar".to_owned()
                    } else {
                        value.to_string()
                    }
                ));
            }
        }
        ok
    }
}
