//! `plan(pod, request, config)`: the decision and the JSON Patch.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;
use sidekey_model::annotations::{self as names, Delivery, OnMissing};
use sidekey_model::{Environment, Pick, Service};

use crate::annotations::{is_injected, parse_annotations, wants_injection, Annotations, Denial};
use crate::config::{AgentPolicy, Config, Resolution, Settings};
use crate::patch_writer::{Container, EnvVar, Mount, PatchWriter, Probe, Volume};
use crate::pod::{AnnotationMap, ContainerView, PodView, SpecView};
use crate::quote::{Name, Q};

/// Volume holding the installed agent binary (env delivery).
pub const VOLUME_BIN: &str = "sidekey-bin";
/// Volume holding the delivered files (files delivery).
pub const VOLUME_SECRETS: &str = "sidekey-secrets";
/// Init container that copies the agent into [`VOLUME_BIN`].
pub const CONTAINER_INSTALL: &str = "sidekey-install";
/// Init container that writes the files once.
pub const CONTAINER_INIT: &str = "sidekey-init";
/// Native sidecar that writes the files and refreshes them.
pub const CONTAINER_SIDECAR: &str = "sidekey-sidecar";
/// Every volume name the injector adds.
pub const RESERVED_VOLUMES: [&str; 2] = [VOLUME_BIN, VOLUME_SECRETS];
/// Every container name the injector adds.
pub const RESERVED_CONTAINERS: [&str; 3] = [CONTAINER_INSTALL, CONTAINER_INIT, CONTAINER_SIDECAR];
/// Where [`VOLUME_BIN`] is mounted.
pub const BIN_DIR: &str = "/sidekey/bin";
/// The agent inside its own image.
pub const AGENT_IN_IMAGE: &str = "/sidekey-agent";
/// The agent as installed into app containers.
pub const AGENT_INSTALLED: &str = "/sidekey/bin/sidekey-agent";
/// `sizeLimit` of [`VOLUME_BIN`].
pub const BIN_SIZE_LIMIT: &str = "64Mi";
/// The user injected containers run as when the app's user is root (they
/// always have `runAsNonRoot: true`): the distroless "nonroot" user.
pub const FALLBACK_UID: i64 = 65532;
/// The `fsGroup` the injector sets for files delivery when the pod has
/// none and the app's user is not known to be the agent's (see
/// "File ownership" in the crate documentation): the distroless "nonroot"
/// group.
pub const FILES_GROUP: i64 = 65532;
/// Volume sources the kubelet makes afresh for each pod, whose ownership
/// an added `fsGroup` may change: only the group, and group read access.
const PER_POD_SOURCES: [&str; 3] = ["configMap", "downwardAPI", "projected"];
/// Environment variables (names only) and volume mounts copied from the
/// first target container into the agent's own containers, so they get the
/// pod's AWS credentials (IRSA, EKS Pod Identity) whichever webhook ran first.
pub const AWS_CREDENTIAL_VARS: [&str; 7] = [
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];
/// See [`AWS_CREDENTIAL_VARS`].
pub const AWS_CREDENTIAL_MOUNTS: [&str; 2] = ["aws-iam-token", "eks-pod-identity-token"];

/// Who asks: the namespace from the AdmissionRequest (authoritative: the pod
/// object often has none) and the requesting user, for audit records.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The AdmissionRequest's namespace.
    pub namespace: &'a str,
    /// The AdmissionRequest's `userInfo.username`.
    pub user: Option<&'a str>,
}

/// What an image runs when a container sets no `command`: the
/// `Entrypoint` and `Cmd` of its OCI image config (`docker image inspect
/// IMAGE --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}'`).
///
/// The kubelet's rule (the container runtime applies it): a container with
/// a `command` runs `command` + `args` and the image's config is not used;
/// a container without one runs the image's ENTRYPOINT followed by the
/// container's `args` when it sets any, else by the image's CMD. An
/// ENTRYPOINT of `[""]` counts as none (as containerd reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Config.Entrypoint` (empty when the image has none).
    pub entrypoint: Vec<String>,
    /// `Config.Cmd` (empty when the image has none).
    pub cmd: Vec<String>,
}

impl ImageConfig {
    /// What goes after `sidekey-agent exec --` in the `command` of a
    /// container that has none, so that the runtime, which then appends
    /// the container's `args`, runs what it ran before: the ENTRYPOINT,
    /// then, when the container sets no `args`, the CMD (a container with
    /// a `command` makes the runtime ignore CMD, so it must be written
    /// out). Empty when the runtime would run the `args` alone.
    ///
    /// Each `$` is written `$$`: the kubelet expands `$(VAR)` and `$$` in
    /// a container's `command`, never in the image's own ENTRYPOINT and
    /// CMD, so the words must reach the app exactly as the image has them.
    pub fn wrapped_tail(&self, container_has_args: bool) -> Vec<Cow<'_, str>> {
        let entrypoint: &[String] = match self.entrypoint.as_slice() {
            [only] if only.is_empty() => &[],
            e => e,
        };
        let cmd: &[String] = if container_has_args { &[] } else { &self.cmd };
        entrypoint
            .iter()
            .chain(cmd)
            .map(|word| escape_expansion(word))
            .collect()
    }
}

/// `word` with each `$` doubled, so that the kubelet's expansion of a
/// container's command (`$$` to `$`, `$(VAR)` to VAR's value) gives back
/// `word` itself.
fn escape_expansion(word: &str) -> Cow<'_, str> {
    if word.contains('$') {
        Cow::Owned(word.replace('$', "$$"))
    } else {
        Cow::Borrowed(word)
    }
}

/// Image configs by container name, for [`plan_with_images`]: those of
/// the containers that set no `command` (others are not read).
pub type ImageConfigs = BTreeMap<String, ImageConfig>;

/// A container whose image config [`plan_with_images`] would read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLookup<'a> {
    /// The container's name (the key in [`ImageConfigs`]).
    pub container: &'a str,
    /// Its `image` (absent in a pod the API server would refuse).
    pub image: Option<&'a str>,
}

/// The containers whose image config [`plan_with_images`] would use: for
/// a pod that opts in, is not yet injected and is in a namespace the
/// injector serves, with env (or both) delivery, the targets without a
/// `command` that no `sidekey.io/command.<container>` or
/// `sidekey.io/command` covers, in pod order. Empty when nothing is
/// needed, or when the annotations are refused anyway (the plan denies the
/// pod without looking at images).
pub fn image_lookups<'p>(
    pod: &'p PodView<'_>,
    request: &Request<'_>,
    config: &Config,
) -> Vec<ImageLookup<'p>> {
    let ann = pod.annotations();
    if !wants_injection(ann) || is_injected(ann) {
        return Vec::new();
    }
    if let Resolution::Excluded { .. } = config.resolve(request.namespace) {
        return Vec::new();
    }
    let (Some(spec), Ok(a)) = (
        pod.spec.as_ref(),
        parse_annotations(ann, config.settings().defaults()),
    ) else {
        return Vec::new();
    };
    if !a.delivery.env() || a.command.is_some() {
        return Vec::new();
    }
    let Ok(targets) = select_targets(spec, &a) else {
        return Vec::new();
    };
    targets
        .into_iter()
        .map(|i| &spec.containers[i])
        .filter(|c| c.has_no_command() && !a.commands.contains_key(c.name.as_str()))
        .map(|c| ImageLookup {
            container: c.name.as_str(),
            image: c.image.as_deref(),
        })
        .collect()
}

/// What the injector answers.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Allowed, unchanged: not opted in, excluded namespace, already injected.
    Skip {
        /// Why, for logs and audit.
        reason: String,
    },
    /// Allowed with this patch.
    Inject(Plan),
    /// Refused, with every reason.
    Deny(Vec<Denial>),
}

/// A successful plan: the patch and what it means.
#[derive(Debug, Clone)]
pub struct Plan {
    /// RFC 6902 operations against the pod as reviewed.
    pub patch: PatchJson,
    /// Non-fatal notes for the user (AdmissionResponse warnings).
    pub warnings: Vec<String>,
    /// The namespace's environment.
    pub environment: Environment,
    /// Its bases, lowest precedence first.
    pub inherit: Vec<Environment>,
    /// Requested services.
    pub services: Vec<Service>,
    /// Requested explicit picks.
    pub picks: Vec<Pick>,
    /// Names of the containers that receive secrets, in pod order.
    pub containers: Vec<String>,
    /// How they receive them.
    pub delivery: Delivery,
    /// The agent accepts plain `String` parameters and old envelopes
    /// (`environments[].allowLegacyValues`).
    pub allow_legacy_values: bool,
    /// Loader variables the agent may set (`environments[].allowLoaderEnv`).
    pub allow_loader_env: Vec<String>,
}

/// A JSON Patch (RFC 6902) as the JSON text the API server receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchJson(String);

impl PatchJson {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text as bytes (what `AdmissionResponse.patch` holds).
    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_bytes()
    }

    /// The operations, parsed (for applying the patch offline and in tests).
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// A patch that does not apply to the document.
#[derive(Debug, thiserror::Error)]
#[error("the patch does not apply to the pod: {0}")]
pub struct PatchError(#[from] pub json_patch::PatchError);

/// Applies `patch` (e.g. [`PatchJson::operations`]) to a copy of `pod`
/// (JSON). For `sidekey inject` and tests.
pub fn apply(pod: &Json, patch: &json_patch::Patch) -> Result<Json, PatchError> {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch)?;
    Ok(out)
}

/// Decides what to do with `pod`, reviewed in `request.namespace`.
///
/// A pod that arrives with the marker `sidekey.io/injected` is skipped only
/// when the injector's own parts are there and are what this injector
/// makes for it (see the `verify` module): a reinvocation after another
/// webhook, or a pod re-created from an injected one. Otherwise the marker
/// is a pod author's claim, and the pod is denied.
///
/// Without image configs: a target without `command` needs
/// `sidekey.io/command.<container>` or `sidekey.io/command`; see
/// [`plan_with_images`].
pub fn plan(pod: &PodView<'_>, request: &Request<'_>, config: &Config) -> Decision {
    plan_with_images(pod, request, config, &ImageConfigs::new())
}

/// [`plan`], with the image configs of containers that set no `command`
/// (keyed by container name; e.g. looked up in their registry).
///
/// With env delivery each target's command is wrapped as
/// `/sidekey/bin/sidekey-agent exec -- <what the runtime would run>`; the
/// container's `args` are left as they are, so the runtime appends them.
/// What is wrapped, first found wins:
///
/// 1. the container's own `command` (not empty);
/// 2. `sidekey.io/command.<container>` (a JSON array);
/// 3. `sidekey.io/command` (a JSON array, for every target without one);
/// 4. the container's entry in `images`: ENTRYPOINT, then CMD when the
///    container sets no `args` ([`ImageConfig::wrapped_tail`]);
/// 5. else the pod is denied, with what to set.
///
/// An annotation of `[]` says the image has no ENTRYPOINT: the
/// container's `args` are the whole command (a container without `args`
/// is then denied).
pub fn plan_with_images(
    pod: &PodView<'_>,
    request: &Request<'_>,
    config: &Config,
    images: &ImageConfigs,
) -> Decision {
    let ann = pod.annotations();
    if !wants_injection(ann) {
        let reason = match ann.get(names::INJECT) {
            Some(v) => format!(
                "the pod does not opt in: {} is {} rather than \"true\"",
                names::INJECT,
                Q(v)
            ),
            None => format!("the pod does not opt in: {} is absent", names::INJECT),
        };
        return Decision::Skip { reason };
    }
    let injected = is_injected(ann);
    let mut denials = Vec::new();
    let scope = match config.resolve(request.namespace) {
        Resolution::Excluded { reason } => return Decision::Skip { reason },
        Resolution::Invalid { reason } => {
            denials.push(Denial::pod(reason));
            None
        }
        Resolution::Environment {
            environment,
            inherit,
        } => Some((environment, inherit)),
    };
    let policy = config.agent_policy(request.namespace);
    let settings = config.settings();
    let parsed = parse_annotations(ann, settings.defaults()).map_err(|d| denials.extend(d));
    let Some(spec) = pod.spec.as_ref() else {
        denials.push(Denial::pod("the pod has no spec"));
        return Decision::Deny(denials);
    };
    if let Some(why) = spec.windows() {
        denials.push(Denial::pod(format!(
            "the pod runs on Windows ({why}): sidekey's agent and what the injector adds (a \
             Linux binary, runAsNonRoot, seccomp, memory volumes) are Linux-only, and sidekey \
             does not support Windows pods; remove {} from this pod, or run it on Linux nodes",
            names::INJECT
        )));
    }
    if !injected {
        check_reserved_names(spec, &mut denials);
        check_pod_parts(spec, &mut denials);
    }
    let Ok(a) = parsed else {
        return Decision::Deny(denials);
    };
    let targets = match select_targets(spec, &a) {
        Ok(t) => t,
        Err(d) => {
            denials.push(d);
            return Decision::Deny(denials);
        }
    };
    check_command_annotations(spec, &a, &targets, &mut denials);
    if !injected {
        check_targets(spec, &a, &targets, images, &mut denials);
    }
    let Some((environment, inherit)) = scope else {
        return Decision::Deny(denials);
    };
    if injected {
        let lists = env_lists(&a, &inherit, &policy);
        let expected = sidekey_env(settings, &a, &environment, &lists, &policy);
        crate::verify::check_injected(spec, &a, &targets, settings, &expected, &mut denials);
        if !denials.is_empty() {
            return Decision::Deny(denials);
        }
        return Decision::Skip {
            reason: format!(
                "the pod is already injected ({} is present, and the injector's containers, \
                 volumes and settings are as this injector makes them)",
                names::INJECTED
            ),
        };
    }
    if !denials.is_empty() {
        return Decision::Deny(denials);
    }
    let warnings = warnings(ann, spec, &a, &targets);
    let patch = build_patch(
        spec,
        &a,
        &targets,
        images,
        settings,
        &environment,
        &inherit,
        &policy,
    );
    Decision::Inject(Plan {
        patch,
        warnings,
        environment,
        inherit,
        containers: targets
            .iter()
            .map(|&i| spec.containers[i].name.to_string())
            .collect(),
        services: a.services,
        picks: a.picks,
        delivery: a.delivery,
        allow_legacy_values: policy.allow_legacy_values,
        allow_loader_env: policy.allow_loader_env.to_vec(),
    })
}

/// Whether an `envFrom` prefix can make a `SIDEKEY_*` name: it starts with
/// `SIDEKEY_`, or is a start of it (`S`, `SIDE`, `SIDEKEY`), so that a key
/// of the source completes it.
pub(crate) fn prefix_reaches_sidekey(prefix: &str) -> bool {
    !prefix.is_empty() && (prefix.starts_with("SIDEKEY_") || "SIDEKEY_".starts_with(prefix))
}

/// What a pod may not bring in any container (app or init), whatever the
/// delivery and whichever containers are targets:
///
/// - a `SIDEKEY_*` variable in `env`: the agent's settings are the
///   injector's alone;
/// - an `envFrom` whose `prefix` can make a `SIDEKEY_*` name. An `envFrom`
///   without a prefix (a ConfigMap or Secret whose keys may be anything) is
///   allowed: the injector sets every variable the agent reads in the
///   agent's `env`, and Kubernetes gives `env` precedence over `envFrom`,
///   so such a source can add only names the agent does not read (it warns
///   about them and ignores them). A prefix aimed at `SIDEKEY_` has no use
///   but that, and would reach a variable a later agent reads before the
///   injector sets it: refused;
/// - a `volumeMounts` or `volumeDevices` entry naming one of the
///   injector's volumes: only the injector mounts them (an app's own mount
///   could be read-write, in a container that is not a target, or in an
///   init container that replaces the agent binary before the app runs).
pub(crate) fn check_pod_parts(spec: &SpecView<'_>, denials: &mut Vec<Denial>) {
    for c in spec.all_containers() {
        check_container_parts(c, true, denials);
    }
}

/// [`check_pod_parts`] for one container. `foreign`: the container is
/// the pod's own (its `SIDEKEY_*` variables and mounts of the injector's
/// volumes are refused); `false` for the injector's containers and targets
/// of an injected pod, which [`crate::verify`] compares with what the
/// injector makes (only the `envFrom` rule applies here).
pub(crate) fn check_container_parts(
    c: &ContainerView<'_>,
    foreign: bool,
    denials: &mut Vec<Denial>,
) {
    if foreign {
        let mut own: Vec<&str> = c
            .env()
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| n.starts_with("SIDEKEY_"))
            .collect();
        own.sort_unstable();
        own.dedup();
        if !own.is_empty() {
            let shown: Vec<String> = own.iter().map(|n| Name(n).to_string()).collect();
            denials.push(Denial::pod(format!(
                "container {} sets {} in its env: SIDEKEY_* variables are set by the \
                 injector only (a pod cannot choose its environment or store, nor steer the \
                 agent); remove them",
                Q(&c.name),
                shown.join(", ")
            )));
        }
    }
    for e in c.env_from() {
        if let Some(prefix) = e.prefix.as_deref().filter(|p| prefix_reaches_sidekey(p)) {
            denials.push(Denial::pod(format!(
                "container {} takes variables from {} with the prefix {}, which can make \
                 SIDEKEY_* names: the agent's settings are set by the injector only; use \
                 another prefix",
                Q(&c.name),
                e.source(),
                Q(prefix)
            )));
        }
    }
    if !foreign {
        return;
    }
    for m in c.mounts() {
        if RESERVED_VOLUMES.contains(&m.name.as_str()) {
            denials.push(Denial::pod(format!(
                "container {} mounts the volume {} at {}: the injector's volumes ({}) are \
                 mounted by the injector only; remove that mount",
                Q(&c.name),
                m.name,
                Q(&m.mount_path),
                RESERVED_VOLUMES.join(", ")
            )));
        }
    }
    for d in c.devices() {
        if RESERVED_VOLUMES.contains(&d.name.as_str()) {
            denials.push(Denial::pod(format!(
                "container {} uses the volume {} as a device: the injector's volumes ({}) \
                 are mounted by the injector only; remove that device",
                Q(&c.name),
                d.name,
                RESERVED_VOLUMES.join(", ")
            )));
        }
    }
}

fn check_reserved_names(spec: &SpecView<'_>, denials: &mut Vec<Denial>) {
    let reserved = || {
        format!(
            "sidekey reserves the volume names {} and the container names {}; rename it",
            RESERVED_VOLUMES.join(", "),
            RESERVED_CONTAINERS.join(", ")
        )
    };
    for v in spec.volumes.iter().flatten() {
        if RESERVED_VOLUMES.contains(&v.name.as_str()) {
            denials.push(Denial::pod(format!(
                "the pod already has a volume named {}: {}",
                v.name,
                reserved()
            )));
        }
    }
    let names = spec
        .containers
        .iter()
        .map(|c| &c.name)
        .chain(spec.init_containers.iter().flatten().map(|c| &c.name))
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| &c.name));
    for name in names {
        if RESERVED_CONTAINERS.contains(&name.as_str()) {
            denials.push(Denial::pod(format!(
                "the pod already has a container named {name}: {}",
                reserved()
            )));
        }
    }
}

/// Indices into `spec.containers`, in pod order.
fn select_targets(spec: &SpecView<'_>, a: &Annotations) -> Result<Vec<usize>, Denial> {
    let Some(wanted) = &a.containers else {
        if spec.containers.is_empty() {
            return Err(Denial::pod("the pod has no containers"));
        }
        return Ok((0..spec.containers.len()).collect());
    };
    let mut found = Vec::with_capacity(wanted.len());
    let mut problems = Vec::new();
    for name in wanted {
        match spec.containers.iter().position(|c| *c.name == **name) {
            Some(i) => found.push(i),
            None => {
                let init = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| *c.name == **name);
                problems.push(if init {
                    format!(
                        "{} is an init container (sidekey delivers only to app containers)",
                        Q(name)
                    )
                } else {
                    format!("{} is not a container of this pod", Q(name))
                });
            }
        }
    }
    if !problems.is_empty() {
        let app: Vec<String> = spec
            .containers
            .iter()
            .map(|c| Name(&c.name).to_string())
            .collect();
        return Err(Denial::annotation(
            names::CONTAINERS,
            format!(
                "annotation {}: {}; the pod's app containers are {}",
                names::CONTAINERS,
                problems.join("; "),
                app.join(", ")
            ),
        ));
    }
    found.sort_unstable();
    Ok(found)
}

/// Each `sidekey.io/command.<container>` names a target: an app container
/// of this pod that `sidekey.io/containers` selects.
fn check_command_annotations(
    spec: &SpecView<'_>,
    a: &Annotations,
    targets: &[usize],
    denials: &mut Vec<Denial>,
) {
    for name in a.commands.keys() {
        let key = format!("{}{name}", names::COMMAND_FOR);
        let problem = match spec.containers.iter().position(|c| *c.name == **name) {
            Some(i) if targets.contains(&i) => continue,
            Some(_) => format!(
                "container {} is not a target: {} does not name it, so its command is not \
                 wrapped; add it to {} or remove {key}",
                Q(name),
                names::CONTAINERS,
                names::CONTAINERS
            ),
            None => {
                let init = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| *c.name == **name);
                let app: Vec<String> = spec
                    .containers
                    .iter()
                    .map(|c| Name(&c.name).to_string())
                    .collect();
                format!(
                    "{} {}; the key names the app container whose command it gives, and the \
                     pod's app containers are {}",
                    Q(name),
                    if init {
                        "is an init container (sidekey wraps only app containers)"
                    } else {
                        "is not a container of this pod"
                    },
                    app.join(", ")
                )
            }
        };
        denials.push(Denial::annotation(
            &key,
            format!("annotation {key}: {problem}"),
        ));
    }
}

fn trim_slash(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// How `ours` relates to an existing mount path, if they collide.
fn collision(ours: &str, theirs: &str) -> Option<&'static str> {
    let theirs = trim_slash(theirs);
    if ours == theirs {
        Some("at the same path")
    } else if theirs.len() > ours.len()
        && theirs.starts_with(ours)
        && theirs.as_bytes()[ours.len()] == b'/'
    {
        Some("inside it")
    } else if theirs == "/"
        || (ours.len() > theirs.len()
            && ours.starts_with(theirs)
            && ours.as_bytes()[theirs.len()] == b'/')
    {
        Some("around it")
    } else {
        None
    }
}

fn check_targets(
    spec: &SpecView<'_>,
    a: &Annotations,
    targets: &[usize],
    images: &ImageConfigs,
    denials: &mut Vec<Denial>,
) {
    for &i in targets {
        let c = &spec.containers[i];
        if a.delivery.env() {
            if let Err(d) = wrapped_tail(c, a, images) {
                denials.push(d);
            }
            for m in c.mounts() {
                if let Some(how) = collision(BIN_DIR, &m.mount_path) {
                    denials.push(Denial::pod(format!(
                        "container {} mounts volume {} at {}, which collides with the agent's \
                         directory {BIN_DIR} ({how}); move that mount",
                        Q(&c.name),
                        Q(&m.name),
                        Q(&m.mount_path)
                    )));
                }
            }
        }
        if a.delivery.files() {
            for m in c.mounts() {
                if let Some(how) = collision(&a.files_path, &m.mount_path) {
                    denials.push(Denial::annotation(
                        names::FILES_PATH,
                        format!(
                            "annotation {} {}: container {} already mounts volume {} at {} \
                             ({how}); choose a path that neither contains nor lies inside an \
                             existing mount",
                            names::FILES_PATH,
                            Q(&a.files_path),
                            Q(&c.name),
                            Q(&m.name),
                            Q(&m.mount_path)
                        ),
                    ));
                }
            }
        }
    }
}

/// What follows `sidekey-agent exec --` in the wrapped command of target
/// `c` (see [`plan_with_images`] for the order), or why there is none.
fn wrapped_tail<'s>(
    c: &'s ContainerView<'_>,
    a: &'s Annotations,
    images: &'s ImageConfigs,
) -> Result<Vec<Cow<'s, str>>, Denial> {
    // The container's own command and the annotations are pod-spec words:
    // the kubelet expands them as it did before (they are copied as is).
    if let Some(cmd) = c.command.as_deref().filter(|c| !c.is_empty()) {
        return Ok(cmd.iter().map(|t| Cow::Borrowed(t.as_str())).collect());
    }
    let has_args = !c.args().is_empty();
    let own = a.commands.get(c.name.as_str());
    if let Some(cmd) = own.or(a.command.as_ref()) {
        if cmd.is_empty() && !has_args {
            let key = match own {
                Some(_) => format!("{}{}", names::COMMAND_FOR, c.name),
                None => names::COMMAND.to_owned(),
            };
            return Err(Denial::annotation(
                &key,
                format!(
                    "annotation {key} is [] (the image has no ENTRYPOINT: the container's args \
                     are the command), but container {} sets no args, so there would be nothing \
                     to run; set {key} to the image's CMD as a JSON array, or give the \
                     container args",
                    Q(&c.name)
                ),
            ));
        }
        return Ok(cmd.iter().map(|t| Cow::Borrowed(t.as_str())).collect());
    }
    if let Some(image) = images.get(c.name.as_str()) {
        let tail = image.wrapped_tail(has_args);
        if tail.is_empty() && !has_args {
            return Err(Denial::pod(format!(
                "container {} sets neither command nor args, and its image has neither \
                 ENTRYPOINT nor CMD: there is nothing to run; set the container's command",
                Q(&c.name)
            )));
        }
        return Ok(tail);
    }
    Err(no_command(c))
}

/// The denial for a target without a command and nothing to stand in.
fn no_command(c: &ContainerView<'_>) -> Denial {
    let what = if c.args().is_empty() {
        "this container sets no args, so that is the image's ENTRYPOINT followed by its CMD"
    } else {
        "this container sets args, so that is the image's ENTRYPOINT alone (the runtime appends \
         the args)"
    };
    Denial::annotation(
        names::COMMAND,
        format!(
            "container {} has no command in the pod spec: sidekey starts the app through its \
             agent ({AGENT_INSTALLED} exec -- COMMAND) and must know what the image runs: the \
             image's ENTRYPOINT followed by its CMD (unless the container sets args); {what}; \
             set the container's command to it, or give it as a JSON array in the annotation \
             {}{} (this container) or {} (every target without a command), e.g. \
             [\"/app/server\",\"--port\",\"8080\"], or [] when the image has no ENTRYPOINT and \
             the container's args are the command; `docker image inspect IMAGE --format \
             '{{{{json .Config.Entrypoint}}}} {{{{json .Config.Cmd}}}}'` shows both",
            Q(&c.name),
            names::COMMAND_FOR,
            c.name,
            names::COMMAND
        ),
    )
}

/// Who the secret files are for (files delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilesGroup {
    /// The pod's own `fsGroup`: the agent gets `--group` with it.
    Pod(i64),
    /// No group: the agent runs as the user of the first target, and
    /// every target runs as that user (files 0400 are theirs).
    NotNeeded,
    /// The injector sets `fsGroup` [`FILES_GROUP`] and passes `--group`.
    Added(i64),
    /// A group is needed but setting `fsGroup` is not safe: this volume
    /// is not one of [`PER_POD_SOURCES`] or an `emptyDir`.
    Unsafe(String),
}

impl FilesGroup {
    /// The agent's `--group`.
    pub(crate) fn gid(&self) -> Option<i64> {
        match self {
            FilesGroup::Pod(g) | FilesGroup::Added(g) => Some(*g),
            _ => None,
        }
    }
}

/// The agent's user in its files container: the first target's, a root
/// one replaced by [`FALLBACK_UID`]; `None`: the agent image's user.
fn agent_uid(spec: &SpecView<'_>, targets: &[usize]) -> Option<i64> {
    let pod_uid = spec.security_context.as_ref().and_then(|p| p.run_as_user);
    match (run_as(spec, &spec.containers[targets[0]]).0, pod_uid) {
        (Some(0), _) | (None, Some(0)) => Some(FALLBACK_UID),
        (Some(u), _) => Some(u),
        (None, _) => None,
    }
}

/// How the secret files are made readable to every target (files and
/// both delivery). The agent writes them as its own user, mode 0400, or
/// 0440 with `--group`:
///
/// - the pod has an `fsGroup`: the kubelet makes it a supplementary group
///   of every container and the group of the volume; the agent gives the
///   files that group (`--group`);
/// - every target runs as a known user, the same, and the agent runs as
///   it: nothing more is needed;
/// - otherwise (most real pods: the image's own user, root or a fixed
///   non-root user the injector cannot know; or targets with different
///   users) the injector sets `fsGroup` [`FILES_GROUP`] when every volume
///   of the pod is an `emptyDir`, `configMap`, `downwardAPI` or `projected`
///   volume without a `secret` source (the kubelet makes them afresh for
///   the pod; fsGroup only adds group read access to them). A `secret`
///   volume or projection (an SSH or TLS key that its program refuses
///   once group-readable), a persistent volume (whose
///   ownership fsGroup would change for good) or any other source makes it
///   unsafe: the injector leaves the pod as it is and warns.
pub(crate) fn files_group(spec: &SpecView<'_>, targets: &[usize]) -> FilesGroup {
    if let Some(g) = spec.security_context.as_ref().and_then(|p| p.fs_group) {
        return FilesGroup::Pod(g);
    }
    let agent = agent_uid(spec, targets);
    let all_agents = agent.is_some()
        && targets
            .iter()
            .all(|&i| run_as(spec, &spec.containers[i]).0 == agent);
    if all_agents {
        return FilesGroup::NotNeeded;
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(source) = v
            .others
            .iter()
            .find(|k| !PER_POD_SOURCES.contains(&k.as_str()))
        {
            return FilesGroup::Unsafe(format!("{} ({source})", Name(&v.name)));
        }
        if v.projects_a_secret {
            return FilesGroup::Unsafe(format!(
                "{} (projected, with a secret source)",
                Name(&v.name)
            ));
        }
    }
    FilesGroup::Added(FILES_GROUP)
}

/// The effective (user, group) of a container: its own securityContext,
/// else the pod's.
fn run_as(spec: &SpecView<'_>, c: &ContainerView<'_>) -> (Option<i64>, Option<i64>) {
    let own = c.security_context.as_ref();
    let pod = spec.security_context.as_ref();
    (
        own.and_then(|s| s.run_as_user)
            .or_else(|| pod.and_then(|p| p.run_as_user)),
        own.and_then(|s| s.run_as_group)
            .or_else(|| pod.and_then(|p| p.run_as_group)),
    )
}

fn warnings(
    ann: &AnnotationMap<'_>,
    spec: &SpecView<'_>,
    a: &Annotations,
    targets: &[usize],
) -> Vec<String> {
    let mut w = Vec::new();
    if a.on_missing == OnMissing::Skip {
        w.push(format!(
            "{} is skip: keys that do not exist leave their variables unset instead of stopping \
             the pod",
            names::ON_MISSING
        ));
    }
    for &i in targets {
        let c = &spec.containers[i];
        if run_as(spec, c).0 == Some(0) {
            w.push(format!(
                "container {} runs as root (runAsUser 0): every process in it can read its \
                 secrets; prefer a non-root user",
                Q(&c.name)
            ));
        }
    }
    if a.delivery.files() {
        if let FilesGroup::Unsafe(volume) = files_group(spec, targets) {
            let who = match agent_uid(spec, targets) {
                Some(u) => format!("user {u}"),
                None => "the agent image's user".to_owned(),
            };
            w.push(format!(
                "the pod has no fsGroup and not every target runs as a known user that the \
                 agent can run as (no runAsUser, root, or different users): sidekey sets fsGroup \
                 {FILES_GROUP} to share the secret files with the app only when every volume is \
                 an emptyDir, configMap, downwardAPI or projected volume, and volume {volume} \
                 is not (fsGroup would change its ownership and modes); the files will be owned \
                 by {who} with mode 0400, readable by the app only if it runs as that user; set \
                 runAsUser, or fsGroup"
            ));
        }
    } else {
        for key in [names::FILES_PATH, names::FILES_FORMAT] {
            if ann.contains_key(key) {
                w.push(format!(
                    "annotation {key} is ignored: {} is env",
                    names::DELIVERY
                ));
            }
        }
    }
    for name in a.commands.keys() {
        let key = format!("{}{name}", names::COMMAND_FOR);
        let Some(c) = spec.containers.iter().find(|c| *c.name == **name) else {
            continue; // denied by check_command_annotations
        };
        if !a.delivery.env() {
            w.push(format!(
                "annotation {key} is ignored: {} is files (no command is wrapped)",
                names::DELIVERY
            ));
        } else if !c.has_no_command() {
            w.push(format!(
                "annotation {key} is ignored: container {} has its own command, which sidekey \
                 wraps",
                Q(name)
            ));
        }
    }
    if a.command.is_some() {
        let used = a.delivery.env()
            && targets.iter().any(|&i| {
                let c = &spec.containers[i];
                c.has_no_command() && !a.commands.contains_key(c.name.as_str())
            });
        if !used {
            w.push(format!(
                "annotation {} is ignored: it applies only to containers without a command \
                 and without a {}<container> annotation, with env or both delivery",
                names::COMMAND,
                names::COMMAND_FOR
            ));
        }
    }
    w
}

fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{item}");
    }
    out
}

/// The comma lists of the agent's settings: bases, services, picks and
/// the loader variables it may set.
pub(crate) fn env_lists(
    a: &Annotations,
    inherit: &[Environment],
    policy: &AgentPolicy<'_>,
) -> [String; 4] {
    [
        comma_list(inherit),
        comma_list(&a.services),
        comma_list(&a.picks),
        comma_list(policy.allow_loader_env),
    ]
}

/// The agent's `SIDEKEY_*` settings, in order. Every variable the agent
/// reads is always set (empty when there is nothing: the agent reads an
/// empty one as unset), so nothing from `envFrom` can stand in for one:
/// `env` wins over `envFrom`.
pub(crate) fn sidekey_env<'a>(
    settings: &'a Settings,
    a: &'a Annotations,
    environment: &'a Environment,
    lists: &'a [String; 4],
    policy: &AgentPolicy<'_>,
) -> Vec<EnvVar<'a>> {
    let mut env = Vec::with_capacity(20);
    let [inherit, services, secrets, loader] = lists;
    for (name, value) in [
        ("SIDEKEY_ENVIRONMENT", environment.as_str()),
        ("SIDEKEY_INHERIT", inherit),
        ("SIDEKEY_SERVICES", services),
        ("SIDEKEY_SECRETS", secrets),
        ("SIDEKEY_ON_MISSING", a.on_missing.as_str()),
        (
            "SIDEKEY_ALLOW_LEGACY",
            if policy.allow_legacy_values {
                "true"
            } else {
                "false"
            },
        ),
        ("SIDEKEY_ALLOW_LOADER_ENV", loader),
    ] {
        env.push(EnvVar::Value { name, value });
    }
    env.extend(settings.fixed_env().iter().map(|e| EnvVar::Rendered(e)));
    env
}

/// The command of the files init container or sidecar: `--group GID`
/// last when `gid` is not empty.
pub(crate) fn files_command<'s>(
    agent: &'s str,
    what: &'s str,
    dir: &'s str,
    refresh: Option<&'s str>,
    format: &'s str,
    gid: &'s str,
) -> Vec<&'s str> {
    let mut c = vec![agent, what, "--dir", dir];
    if let Some(every) = refresh {
        c.extend(["--refresh", every]);
    }
    c.extend(["--format", format]);
    if !gid.is_empty() {
        c.extend(["--group", gid]);
    }
    c
}

/// An injected container with the common fields.
fn agent_container<'a>(
    settings: &'a Settings,
    name: &'static str,
    command: Vec<&'a str>,
    env: Option<Vec<EnvVar<'a>>>,
    volume_mounts: Vec<Mount<'a>>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
) -> Container<'a> {
    Container {
        name,
        base: settings.container_base(),
        command,
        env,
        run_as_user,
        run_as_group,
        volume_mounts,
        restart_policy: None,
        startup_probe: None,
    }
}

/// Where the marker annotation goes: `names::INJECTED` as a JSON Pointer
/// token (a test checks it).
pub(crate) const INJECTED_POINTER: &str = "/metadata/annotations/sidekey.io~1injected";

// One call site; the arguments are the plan's parts.
#[allow(clippy::too_many_arguments)]
fn build_patch(
    spec: &SpecView<'_>,
    a: &Annotations,
    targets: &[usize],
    images: &ImageConfigs,
    settings: &Settings,
    environment: &Environment,
    inherit: &[Environment],
    policy: &AgentPolicy<'_>,
) -> PatchJson {
    let lists = env_lists(a, inherit, policy);
    let base_env = sidekey_env(settings, a, environment, &lists, policy);
    let every = a
        .refresh
        .map(|r| humantime::format_duration(r).to_string())
        .unwrap_or_default();
    let mut w = PatchWriter::new();
    // The marker needs the annotations map, which exists: the pod opted in
    // through it.
    w.op_at("add", INJECTED_POINTER, |j| {
        j.str("true");
    });

    // Volumes.
    let mut volumes = Vec::with_capacity(2);
    if a.delivery.env() {
        volumes.push(Volume {
            name: VOLUME_BIN,
            size_limit: BIN_SIZE_LIMIT,
        });
    }
    if a.delivery.files() {
        volumes.push(Volume {
            name: VOLUME_SECRETS,
            size_limit: settings.files_size_limit(),
        });
    }
    w.append(
        format_args!("/spec/volumes"),
        spec.volumes.as_ref().is_some_and(|v| !v.is_empty()),
        &volumes,
        |j, v| v.write(j),
    );

    let first = &spec.containers[targets[0]];
    let pod_uid = spec.security_context.as_ref().and_then(|p| p.run_as_user);
    let group = if a.delivery.files() {
        files_group(spec, targets)
    } else {
        FilesGroup::NotNeeded
    };
    if let FilesGroup::Added(g) = group {
        if spec.security_context.is_some() {
            w.op("add", format_args!("/spec/securityContext/fsGroup"), |j| {
                j.int(g);
            });
        } else {
            w.op("add", format_args!("/spec/securityContext"), |j| {
                j.raw("{\"fsGroup\":").int(g).raw("}");
            });
        }
    }
    let gid_arg = group.gid().map(|g| g.to_string()).unwrap_or_default();

    // Init containers, ours first.
    let mut inits = Vec::with_capacity(2);
    if a.delivery.env() {
        inits.push(agent_container(
            settings,
            CONTAINER_INSTALL,
            vec![AGENT_IN_IMAGE, "install", BIN_DIR],
            None,
            vec![Mount {
                name: VOLUME_BIN,
                mount_path: BIN_DIR,
                ..Mount::default()
            }],
            (pod_uid == Some(0)).then_some(FALLBACK_UID),
            None,
        ));
    }
    if a.delivery.files() {
        let gid = run_as(spec, first).1;
        let uid = agent_uid(spec, targets);
        let mut env = base_env.clone();
        if let Some(region) = settings.region() {
            env.push(EnvVar::Value {
                name: "AWS_REGION",
                value: region,
            });
        }
        for e in first.env() {
            let name = e.name.as_str();
            let taken = env.iter().any(|v| v.name() == Some(name));
            if AWS_CREDENTIAL_VARS.contains(&name) && !taken {
                env.push(EnvVar::Copied {
                    name,
                    value: e.value.as_deref(),
                    value_from: e.value_from.map(|v| v.get()),
                });
            }
        }
        let mut mounts = vec![Mount {
            name: VOLUME_SECRETS,
            mount_path: &a.files_path,
            ..Mount::default()
        }];
        let has_volume = |name: &str| spec.volumes.iter().flatten().any(|v| *v.name == *name);
        for m in first.mounts() {
            if AWS_CREDENTIAL_MOUNTS.contains(&m.name.as_str()) && has_volume(&m.name) {
                mounts.push(Mount {
                    name: &m.name,
                    mount_path: &m.mount_path,
                    read_only: true,
                    sub_path: m.sub_path.as_deref(),
                    sub_path_expr: m.sub_path_expr.as_deref(),
                    mount_propagation: m.mount_propagation.as_deref(),
                    recursive_read_only: m.recursive_read_only.as_deref(),
                });
            }
        }
        let format = a.files_format.as_str();
        let dir = a.files_path.as_str();
        let c = match a.refresh {
            None => agent_container(
                settings,
                CONTAINER_INIT,
                files_command(AGENT_IN_IMAGE, "init", dir, None, format, &gid_arg),
                Some(env),
                mounts,
                uid,
                gid,
            ),
            Some(_) => {
                let mut c = agent_container(
                    settings,
                    CONTAINER_SIDECAR,
                    files_command(
                        AGENT_IN_IMAGE,
                        "sidecar",
                        dir,
                        Some(&every),
                        format,
                        &gid_arg,
                    ),
                    Some(env),
                    mounts,
                    uid,
                    gid,
                );
                c.restart_policy = Some("Always");
                c.startup_probe = Some(Probe {
                    command: vec![AGENT_IN_IMAGE, "ready", "--dir", dir],
                    failure_threshold: 120u64.max(settings.timeout().as_secs() + 10),
                });
                c
            }
        };
        inits.push(c);
    }
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        for (i, c) in inits.iter().enumerate() {
            w.op("add", format_args!("/spec/initContainers/{i}"), |j| {
                c.write(j)
            });
        }
    } else {
        w.op("add", format_args!("/spec/initContainers"), |j| {
            j.array(&inits, |j, c| c.write(j));
        });
    }

    // Target containers.
    for &i in targets {
        let c = &spec.containers[i];
        if a.delivery.env() {
            // check_targets denied every target without one.
            let original = wrapped_tail(c, a, images).unwrap_or_default();
            let op = if c.command.is_some() {
                "replace"
            } else {
                "add"
            };
            w.op(op, format_args!("/spec/containers/{i}/command"), |j| {
                j.strs(
                    [AGENT_INSTALLED, "exec", "--"]
                        .into_iter()
                        .chain(original.iter().map(|w| w.as_ref())),
                );
            });
            let mut env = base_env.clone();
            if let Some(region) = settings.region() {
                if !c.env().iter().any(|e| *e.name == *"AWS_REGION") {
                    env.push(EnvVar::Value {
                        name: "AWS_REGION",
                        value: region,
                    });
                }
            }
            w.append(
                format_args!("/spec/containers/{i}/env"),
                !c.env().is_empty(),
                &env,
                |j, e| e.write(j),
            );
        }
        let mut mounts = Vec::with_capacity(2);
        if a.delivery.env() {
            mounts.push(Mount {
                name: VOLUME_BIN,
                mount_path: BIN_DIR,
                read_only: true,
                ..Mount::default()
            });
        }
        if a.delivery.files() {
            mounts.push(Mount {
                name: VOLUME_SECRETS,
                mount_path: &a.files_path,
                read_only: true,
                ..Mount::default()
            });
        }
        w.append(
            format_args!("/spec/containers/{i}/volumeMounts"),
            !c.mounts().is_empty(),
            &mounts,
            |j, m| m.write(j),
        );
    }
    PatchJson(w.finish())
}
