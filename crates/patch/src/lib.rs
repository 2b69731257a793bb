//! The sidekey patch planner: given a pod under admission review, the
//! namespace it is created in and the injector's configuration, decide
//! whether to skip, deny or inject it, and build the RFC 6902 JSON Patch
//! that adds the agent.
//!
//! This crate is pure: no tokio, no HTTP, no AWS, no I/O. The injector
//! (`sidekey-injector`) and the offline `sidekey inject` command call
//! [`plan()`] with a [`PodView`]: the parts of the pod a decision depends on,
//! borrowed from the pod's JSON text (the API server has validated the pod;
//! the planner does not need a typed copy of all of it). The patch comes
//! back as its JSON text ([`PatchJson`]), written in one pass from borrowed
//! structs, ready for `AdmissionResponse.patch`.
//!
//! # Scoping
//!
//! The environment belongs to the namespace, never to the pod:
//! [`Config::resolve`] maps a namespace to an environment (and its bases);
//! annotations only name services and keys inside it. Annotations that try
//! to choose an environment, prefix, store or KMS key, unknown
//! `sidekey.io/` annotations, and picks that could leave the environment are
//! denied with a message that names the annotation and the rule.
//!
//! # Configuration (YAML)
//!
//! Every field is optional; unknown fields are errors. `CONFIG.md` beside
//! this crate's `Cargo.toml` has the full reference.
//!
//! ```yaml
//! prefix: sidekey                      # SIDEKEY_PREFIX
//! store: ssm                           # or file:/PATH (tests, demos)
//! kmsKey: alias/sidekey                # SIDEKEY_KMS_KEY
//! region: eu-west-1                    # AWS_REGION in injected containers (default: unset)
//! agentImage: ghcr.io/sidekey/agent:0.1.0   # default sidekey/agent:<this release>
//! imagePullPolicy: IfNotPresent
//! timeout: 30s                         # SIDEKEY_TIMEOUT
//! audit: stdout                        # SIDEKEY_AUDIT: stdout, stderr or file:/PATH
//! excludedNamespaces: [kube-system, kube-public]  # globs; the injector's own is always added
//! environments:                        # first match wins; no match = the namespace name
//!   - namespaces: "pr-*"               # glob: '*' only, whole-name match
//!     environment: ""                  # empty/absent = the namespace name; may use {namespace}
//!     inherit: [staging]
//!   - namespaces: prod
//!     environment: production
//!     allowLegacyValues: false         # SIDEKEY_ALLOW_LEGACY (migrations)
//!     allowLoaderEnv: []               # SIDEKEY_ALLOW_LOADER_ENV, e.g. [NODE_OPTIONS]
//! resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 200m, memory: 64Mi}}
//! filesSizeLimit: 1Mi                  # sizeLimit of the sidekey-secrets volume
//! defaults: {delivery: env, filesFormat: per-key, onMissing: fail}
//! ```
//!
//! # What a patch adds
//!
//! - the annotation `sidekey.io/injected: "true"`; a pod that has it is
//!   skipped when the injector's parts are there and are what this
//!   configuration makes for it (a reinvocation yields no patch), and
//!   denied otherwise (the marker alone is only a claim; see `verify.rs`);
//! - env (or both) delivery: volume [`VOLUME_BIN`] (memory `emptyDir`,
//!   64Mi), init container [`CONTAINER_INSTALL`] first among the init
//!   containers (`/sidekey-agent install /sidekey/bin`); each target
//!   container's command becomes `/sidekey/bin/sidekey-agent exec --
//!   <original command>` (args unchanged), with the volume mounted read-only
//!   at `/sidekey/bin` and the `SIDEKEY_*` settings appended to its env;
//! - files (or both) delivery: volume [`VOLUME_SECRETS`] (memory `emptyDir`,
//!   `filesSizeLimit`), the init container [`CONTAINER_INIT`]
//!   (`/sidekey-agent init --dir PATH --format FMT`) or, with
//!   `sidekey.io/refresh`, the native sidecar [`CONTAINER_SIDECAR`]
//!   (`restartPolicy: Always`, `--refresh` in humantime form such as `5m`
//!   or `1m 30s`, startup probe `/sidekey-agent ready --dir PATH` every
//!   second, failure threshold 120 or the timeout plus 10 s if longer),
//!   placed right after `sidekey-install` and before the pod's own init
//!   containers (so they run before any mesh sidecar intercepts traffic);
//!   targets mount the volume read-only at PATH;
//! - files (or both) delivery, when the pod has no `fsGroup` and its app
//!   user is not known to be the agent's: `spec.securityContext.fsGroup`
//!   [`FILES_GROUP`] when the pod's volumes allow it (see "File
//!   ownership");
//! - every injected container: the configured resources, `runAsNonRoot`,
//!   read-only root filesystem, no privilege escalation, all capabilities
//!   dropped, seccomp `RuntimeDefault`, `terminationMessagePolicy:
//!   FallbackToLogsOnError`.
//!
//! The agent's settings are names only, never secret values, in this
//! order: `SIDEKEY_ENVIRONMENT`, `SIDEKEY_INHERIT`, `SIDEKEY_SERVICES`,
//! `SIDEKEY_SECRETS`, `SIDEKEY_ON_MISSING`, `SIDEKEY_ALLOW_LEGACY`,
//! `SIDEKEY_ALLOW_LOADER_ENV`, `SIDEKEY_PREFIX`, `SIDEKEY_STORE`,
//! `SIDEKEY_KMS_KEY`, `SIDEKEY_TIMEOUT`, `SIDEKEY_AUDIT`, `SIDEKEY_POD` and
//! `SIDEKEY_NAMESPACE` (downward API), `SIDEKEY_CA_FILE`, `SIDEKEY_LOG`,
//! `SIDEKEY_LOG_FORMAT`, `SIDEKEY_AUDIT_LOG`, `SIDEKEY_ACTOR`, then `AWS_REGION`
//! when configured (not added to an app container that sets its own). The
//! agent's own containers also get the first target's AWS credential
//! variables and token mounts ([`AWS_CREDENTIAL_VARS`],
//! [`AWS_CREDENTIAL_MOUNTS`]: IRSA, EKS Pod Identity), whichever webhook
//! ran first. Every variable the agent reads is always set, empty when
//! there is nothing (no bases, no picks; `SIDEKEY_CA_FILE`, `SIDEKEY_LOG`,
//! `SIDEKEY_LOG_FORMAT`, `SIDEKEY_AUDIT_LOG`, `SIDEKEY_ACTOR`), with
//! `SIDEKEY_ALLOW_LEGACY` and `SIDEKEY_ALLOW_LOADER_ENV` from the
//! namespace's `environments` rule, so a ConfigMap pulled in with `envFrom`
//! can never supply one: `env` wins over `envFrom`.
//!
//! # File ownership
//!
//! The agent's init container or sidecar runs as the first target
//! container's effective `runAsUser`/`runAsGroup` (container
//! securityContext, else the pod's; a root user is replaced by
//! [`FALLBACK_UID`]: the agent always runs non-root; none known: the agent
//! image's numeric non-root `USER`) and writes the files mode 0400, or
//! 0440 with `--group GID`:
//!
//! - the pod has an `fsGroup`: the kubelet makes it a supplementary group
//!   of every container; the agent gets `--group <fsGroup>`;
//! - every target runs as the same known user and the agent runs as it:
//!   the files are theirs, nothing more;
//! - otherwise (the image's own user, root, or targets with different
//!   users) the injector sets `fsGroup` [`FILES_GROUP`] and `--group` with
//!   it, when every volume of the pod is an `emptyDir`, `configMap`,
//!   `downwardAPI` or `projected` one (fsGroup changes the group and adds
//!   group read access to the volumes: harmless for those, not for a
//!   `secret` volume holding an SSH or TLS key or a persistent volume);
//!   with another volume it changes nothing and warns.

//! # Targets
//!
//! `sidekey.io/containers` or every app container; never init or ephemeral
//! containers. With env delivery, each target's command is wrapped; for a
//! target whose spec has none, what the runtime would run comes from, in
//! this order, `sidekey.io/command.<container>`, `sidekey.io/command`
//! (JSON arrays; `[]`: the image has no ENTRYPOINT, the container's `args`
//! are the command) or the image's config when the caller has it
//! ([`plan_with_images`], [`ImageConfig`]: ENTRYPOINT, then CMD unless the
//! container sets `args`); else the pod is denied. A pod is denied when it already uses one of the reserved names,
//! sets a `SIDEKEY_*` variable in any container's env (init containers
//! included), takes variables with an `envFrom` prefix that can make a
//! `SIDEKEY_*` name, mounts (or uses as a device) one of the injector's
//! volumes in any container, or mounts something at, inside or around
//! `/sidekey/bin` or the files path in a target.

mod annotations;
mod config;
mod patch_writer;
mod plan;
mod pod;
mod quote;
mod verify;

pub use annotations::{
    is_injected, parse_annotations, wants_injection, Annotations, Denial, AGENT_ROOT, MIN_REFRESH,
};
pub use config::{
    AgentPolicy, Audit, Config, ConfigError, Defaults, EnvironmentRule, PullPolicy, Resolution,
    ResourceList, Resources, Settings, Store, DEFAULT_AGENT_IMAGE, DEFAULT_EXCLUDED,
};
pub use plan::{
    apply, image_lookups, plan, plan_with_images, Decision, ImageConfig, ImageConfigs, ImageLookup,
    PatchError, PatchJson, Plan, Request, AGENT_INSTALLED, AGENT_IN_IMAGE, AWS_CREDENTIAL_MOUNTS,
    AWS_CREDENTIAL_VARS, BIN_DIR, BIN_SIZE_LIMIT, CONTAINER_INIT, CONTAINER_INSTALL,
    CONTAINER_SIDECAR, FALLBACK_UID, FILES_GROUP, RESERVED_CONTAINERS, RESERVED_VOLUMES,
    VOLUME_BIN, VOLUME_SECRETS,
};
pub use sidekey_model::annotations::{Delivery, FilesFormat, OnMissing};

pub use pod::{
    describe_json_error, AnnotationMap, ContainerView, DeviceView, EmptyDirView, EnvFromView,
    EnvVarView, MetaView, MountView, Named, OsView, PodError, PodSecurityView, PodView, RefView,
    SecurityView, SpecView, Text, VolumeView,
};

/// Re-exported so callers name the same `json_patch` version as
/// [`PatchJson::operations`].
pub use json_patch;
