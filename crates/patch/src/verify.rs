//! Checking a pod that arrives with the marker `sidekey.io/injected`.
//!
//! The marker is only a claim: a pod author can write it, with an agent
//! container and `SIDEKEY_*` settings of their own. It counts when the
//! injector's parts are there and are what this injector makes for this
//! pod, compared field by field:
//!
//! - volumes `sidekey-bin` / `sidekey-secrets`: exactly those the delivery
//!   needs, each a memory `emptyDir` of the configured size and nothing
//!   else;
//! - init containers `sidekey-install`, `sidekey-init` / `sidekey-sidecar`:
//!   exactly those the delivery needs, with this injector's image, command
//!   (`--group` with the pod's fsGroup when it has one, its own or the one
//!   the injector added), no args, no `envFrom`, the agent's `SIDEKEY_*` settings (each once,
//!   each with this injector's value), exactly the mounts of the injector's
//!   volumes it makes, and `restartPolicy: Always` for the sidecar only;
//! - targets: the containers that carry any of the injector's parts (a
//!   `SIDEKEY_*` variable, a mount of its volumes, the wrapped command) are
//!   exactly `sidekey.io/containers` when given (else at least one app
//!   container), each with the wrapped command (env delivery; `exec --`
//!   alone only when the container has args), the same
//!   settings and exactly the mounts the injector makes;
//! - every other container: no `SIDEKEY_*` variable, no mount or device of
//!   the injector's volumes; no container's `envFrom` prefix can make a
//!   `SIDEKEY_*` name.
//!
//! What other webhooks and the API server add after the injector ran is
//! allowed: other variables (the IRSA webhook's `AWS_*`), other mounts
//! (the service account token), other containers, fields the API server
//! defaults. So a reinvocation (`reinvocationPolicy: IfNeeded`) yields no
//! patch, and a pod re-created from an injected one is accepted as long as
//! this injector would make the same parts.

use serde_json::Value as Json;
use sidekey_model::annotations::{self as names};

use crate::annotations::{Annotations, Denial};
use crate::config::{parse_quantity, Settings};
use crate::patch_writer::{EnvVar, Json as JsonText};
use crate::plan::{
    check_container_parts, files_command, AGENT_INSTALLED, AGENT_IN_IMAGE, BIN_DIR, BIN_SIZE_LIMIT,
    CONTAINER_INIT, CONTAINER_INSTALL, CONTAINER_SIDECAR, RESERVED_CONTAINERS, RESERVED_VOLUMES,
    VOLUME_BIN, VOLUME_SECRETS,
};
use crate::pod::{ContainerView, EnvVarView, MountView, SpecView};
use crate::quote::{Name, Q};

/// An `env` entry as compared: name, value (absent = empty: the API server
/// drops an empty value) and `valueFrom`.
type EnvEntry = (String, String, Option<Json>);

fn rendered(e: &EnvVar<'_>) -> EnvEntry {
    let mut j = JsonText::default();
    e.write(&mut j);
    let v: Json = serde_json::from_str(&j.into_string()).unwrap_or_default();
    (
        v["name"].as_str().unwrap_or_default().to_owned(),
        v["value"].as_str().unwrap_or_default().to_owned(),
        v.get("valueFrom").cloned(),
    )
}

fn entry(e: &EnvVarView<'_>) -> EnvEntry {
    (
        e.name.to_string(),
        e.value.as_deref().unwrap_or_default().to_owned(),
        e.value_from
            .and_then(|raw| serde_json::from_str(raw.get()).ok()),
    )
}

/// One mount the injector makes: volume, path, read-only.
type Expected<'a> = (&'a str, &'a str, bool);

struct Checker<'a> {
    denials: &'a mut Vec<Denial>,
}

impl Checker<'_> {
    fn deny(&mut self, problem: String) {
        self.denials.push(Denial::annotation(
            names::INJECTED,
            format!(
                "the pod carries {} but {problem}: the marker counts only when the injector's \
                 containers and volumes are as this injector makes them (image, command, args, \
                 env, volumes); remove the marker and the sidekey parts, and let the injector \
                 add them",
                names::INJECTED
            ),
        ));
    }

    /// The `SIDEKEY_*` entries of `c` are exactly `expected`.
    fn settings(&mut self, c: &ContainerView<'_>, expected: &[EnvEntry]) {
        let theirs: Vec<EnvEntry> = c
            .env()
            .iter()
            .filter(|e| e.name.starts_with("SIDEKEY_"))
            .map(entry)
            .collect();
        for want in expected {
            let found: Vec<&EnvEntry> = theirs.iter().filter(|e| e.0 == want.0).collect();
            match found.as_slice() {
                [] => self.deny(format!(
                    "container {} lacks the agent setting {}",
                    Q(&c.name),
                    want.0
                )),
                [one] if *one == want => {}
                [_] => self.deny(format!(
                    "container {} has the agent setting {} with another value than this \
                     injector sets",
                    Q(&c.name),
                    want.0
                )),
                _ => self.deny(format!(
                    "container {} sets the agent setting {} more than once",
                    Q(&c.name),
                    want.0
                )),
            }
        }
        let mut extra: Vec<&str> = theirs
            .iter()
            .map(|e| e.0.as_str())
            .filter(|n| !expected.iter().any(|w| w.0 == *n))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let shown: Vec<String> = extra.iter().map(|n| Name(n).to_string()).collect();
            self.deny(format!(
                "container {} sets {}, which this injector does not set",
                Q(&c.name),
                shown.join(", ")
            ));
        }
    }

    /// The mounts (and devices) of the injector's volumes in `c` are
    /// exactly `expected`.
    fn mounts(&mut self, c: &ContainerView<'_>, expected: &[Expected<'_>]) {
        let ours: Vec<&MountView<'_>> = c
            .mounts()
            .iter()
            .filter(|m| RESERVED_VOLUMES.contains(&m.name.as_str()))
            .collect();
        let same = |m: &MountView<'_>, (name, path, read_only): &Expected<'_>| {
            *m.name == **name
                && *m.mount_path == **path
                && m.read_only.unwrap_or(false) == *read_only
                && m.sub_path.as_deref().is_none_or(str::is_empty)
                && m.sub_path_expr.as_deref().is_none_or(str::is_empty)
        };
        let exact = ours.len() == expected.len()
            && expected
                .iter()
                .all(|want| ours.iter().filter(|m| same(m, want)).count() == 1);
        if !exact {
            let want: Vec<String> = expected
                .iter()
                .map(|(n, p, ro)| format!("{n} at {p}{}", if *ro { " read-only" } else { "" }))
                .collect();
            self.deny(format!(
                "container {} mounts the injector's volumes otherwise than it does (expected: \
                 {})",
                Q(&c.name),
                if want.is_empty() {
                    "none".to_owned()
                } else {
                    want.join(", ")
                }
            ));
        }
        for d in c.devices() {
            if RESERVED_VOLUMES.contains(&d.name.as_str()) {
                self.deny(format!(
                    "container {} uses the volume {} as a device",
                    Q(&c.name),
                    d.name
                ));
            }
        }
    }
}

/// Whether `c` carries any of the injector's parts.
fn carries_ours(c: &ContainerView<'_>) -> bool {
    c.env().iter().any(|e| e.name.starts_with("SIDEKEY_"))
        || c.mounts()
            .iter()
            .any(|m| RESERVED_VOLUMES.contains(&m.name.as_str()))
        || c.devices()
            .iter()
            .any(|d| RESERVED_VOLUMES.contains(&d.name.as_str()))
        || c.command
            .as_ref()
            .and_then(|cmd| cmd.first())
            .is_some_and(|first| **first == *AGENT_INSTALLED)
}

/// Checks an already-injected pod (see the module documentation); every
/// problem is a denial about `sidekey.io/injected`. `targets` are the
/// containers `sidekey.io/containers` selects (every app container when it
/// is absent); `expected` the agent's settings for this pod.
pub(crate) fn check_injected(
    spec: &SpecView<'_>,
    a: &Annotations,
    targets: &[usize],
    settings: &Settings,
    expected: &[EnvVar<'_>],
    denials: &mut Vec<Denial>,
) {
    let expected: Vec<EnvEntry> = expected.iter().map(rendered).collect();
    let mut k = Checker { denials };

    // Volumes.
    let mut wanted_volumes: Vec<(&str, &str)> = Vec::with_capacity(2);
    if a.delivery.env() {
        wanted_volumes.push((VOLUME_BIN, BIN_SIZE_LIMIT));
    }
    if a.delivery.files() {
        wanted_volumes.push((VOLUME_SECRETS, settings.files_size_limit()));
    }
    for name in RESERVED_VOLUMES {
        let found: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| *v.name == *name)
            .collect();
        let want = wanted_volumes.iter().find(|(n, _)| *n == name);
        match (found.as_slice(), want) {
            ([], None) => {}
            ([], Some(_)) => k.deny(format!("the volume {name} is missing")),
            (_, None) => k.deny(format!(
                "it has the volume {name}, which this injector does not add for delivery {}",
                a.delivery
            )),
            ([v], Some((_, size))) => {
                let ok = v.others.is_empty()
                    && v.empty_dir.as_ref().is_some_and(|e| {
                        e.medium.as_deref() == Some("Memory")
                            && e.size_limit.as_deref().and_then(parse_quantity)
                                == parse_quantity(size)
                    });
                if !ok {
                    k.deny(format!(
                        "the volume {name} is not the memory emptyDir of {size} this injector \
                         adds"
                    ));
                }
            }
            (_, Some(_)) => k.deny(format!("the volume {name} is defined more than once")),
        }
    }

    // The injector's own containers.
    let every = a
        .refresh
        .map(|r| humantime::format_duration(r).to_string())
        .unwrap_or_default();
    let dir = a.files_path.as_str();
    let format = a.files_format.as_str();
    // The pod's fsGroup (its own, or the one the injector added).
    let gid = spec
        .security_context
        .as_ref()
        .and_then(|p| p.fs_group)
        .map(|g| g.to_string())
        .unwrap_or_default();
    type Own<'s> = (&'static str, Vec<&'s str>, bool, Vec<Expected<'s>>, bool);
    let mut wanted: Vec<Own<'_>> = Vec::with_capacity(2);
    if a.delivery.env() {
        wanted.push((
            CONTAINER_INSTALL,
            vec![AGENT_IN_IMAGE, "install", BIN_DIR],
            false,
            vec![(VOLUME_BIN, BIN_DIR, false)],
            false,
        ));
    }
    if a.delivery.files() {
        wanted.push(match a.refresh {
            None => (
                CONTAINER_INIT,
                files_command(AGENT_IN_IMAGE, "init", dir, None, format, &gid),
                true,
                vec![(VOLUME_SECRETS, dir, false)],
                false,
            ),
            Some(_) => (
                CONTAINER_SIDECAR,
                files_command(AGENT_IN_IMAGE, "sidecar", dir, Some(&every), format, &gid),
                true,
                vec![(VOLUME_SECRETS, dir, false)],
                true,
            ),
        });
    }
    for c in spec
        .containers
        .iter()
        .filter(|c| RESERVED_CONTAINERS.contains(&c.name.as_str()))
    {
        k.deny(format!(
            "{} is an app container, and the injector adds it as an init container",
            c.name
        ));
    }
    for c in spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter(|c| RESERVED_CONTAINERS.contains(&c.name.as_str()))
    {
        k.deny(format!("{} is an ephemeral container", c.name));
    }
    let inits: &[ContainerView<'_>] = spec.init_containers.as_deref().unwrap_or_default();
    for name in RESERVED_CONTAINERS {
        let found: Vec<&ContainerView<'_>> = inits.iter().filter(|c| *c.name == *name).collect();
        let want = wanted.iter().find(|w| w.0 == name);
        let (c, (_, command, with_settings, mounts, sidecar)) = match (found.as_slice(), want) {
            ([], None) => continue,
            ([], Some(_)) => {
                k.deny(format!("the init container {name} is missing"));
                continue;
            }
            (_, None) => {
                k.deny(format!(
                    "it has the init container {name}, which this injector does not add for \
                     this pod's annotations"
                ));
                continue;
            }
            ([c], Some(w)) => (*c, w),
            (_, Some(_)) => {
                k.deny(format!("the init container {name} appears more than once"));
                continue;
            }
        };
        if c.image.as_deref() != Some(settings.agent_image()) {
            k.deny(format!(
                "the init container {name} runs another image than this injector's agent image"
            ));
        }
        let same_command = c
            .command
            .as_ref()
            .is_some_and(|cmd| cmd.iter().map(|t| t.as_str()).eq(command.iter().copied()));
        if !same_command {
            k.deny(format!(
                "the init container {name} runs another command than this injector gives it"
            ));
        }
        if !c.args().is_empty() {
            k.deny(format!("the init container {name} has args"));
        }
        if !c.env_from().is_empty() {
            k.deny(format!("the init container {name} has envFrom"));
        }
        if *with_settings {
            k.settings(c, &expected);
        } else {
            k.settings(c, &[]);
        }
        k.mounts(c, mounts);
        let restart = c.restart_policy.as_deref().filter(|p| !p.is_empty());
        let want_restart = sidecar.then_some("Always");
        if restart != want_restart {
            k.deny(format!(
                "the init container {name} has another restartPolicy than this injector gives it"
            ));
        }
    }

    // Targets: the app containers that carry the injector's parts.
    let carrying: Vec<usize> = (0..spec.containers.len())
        .filter(|&i| carries_ours(&spec.containers[i]))
        .collect();
    if a.containers.is_some() {
        for &i in targets {
            if !carrying.contains(&i) {
                k.deny(format!(
                    "container {} is named in {} and has not been injected",
                    Q(&spec.containers[i].name),
                    names::CONTAINERS
                ));
            }
        }
    } else if carrying.is_empty() {
        k.deny("no app container has been injected".to_owned());
    }
    let mut target_mounts: Vec<Expected<'_>> = Vec::with_capacity(2);
    if a.delivery.env() {
        target_mounts.push((VOLUME_BIN, BIN_DIR, true));
    }
    if a.delivery.files() {
        target_mounts.push((VOLUME_SECRETS, dir, true));
    }
    for &i in &carrying {
        let c = &spec.containers[i];
        if !targets.contains(&i) {
            k.deny(format!(
                "container {} carries the injector's parts and is not named in {}",
                Q(&c.name),
                names::CONTAINERS
            ));
            continue;
        }
        if a.delivery.env() {
            // `exec --` alone when the args are the command (an image
            // without ENTRYPOINT, `sidekey.io/command: []`).
            let wrapped = c.command.as_deref().is_some_and(|cmd| {
                (cmd.len() > 3 || (cmd.len() == 3 && !c.args().is_empty()))
                    && cmd[..3]
                        .iter()
                        .map(|t| t.as_str())
                        .eq([AGENT_INSTALLED, "exec", "--"])
            });
            if !wrapped {
                k.deny(format!(
                    "container {} does not start its command with {AGENT_INSTALLED} exec --",
                    Q(&c.name)
                ));
            }
            k.settings(c, &expected);
        } else {
            k.settings(c, &[]);
        }
        k.mounts(c, &target_mounts);
        check_container_parts(c, false, k.denials);
    }

    // Every other container: none of the injector's parts.
    for c in spec
        .containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| (!carrying.contains(&i)).then_some(c))
    {
        check_container_parts(c, true, k.denials);
    }
    for c in inits {
        if RESERVED_CONTAINERS.contains(&c.name.as_str()) {
            // envFrom is refused whole above.
            continue;
        }
        check_container_parts(c, true, k.denials);
    }
}
