//! The borrowed pod view against `k8s_openapi`'s typed `Pod`: on generated
//! pods (any strings, escapes included; metadata before or after the
//! spec), every field the planner reads is what the typed parse reads.
//! And a pod with a key twice where the view reads it is refused with a
//! clear error (Go's decoder would take the last, serde's the first).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapProjection, ConfigMapVolumeSource, Container,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, EphemeralContainer,
    HostPathVolumeSource, ObjectFieldSelector, Pod, PodOS, PodSecurityContext, PodSpec,
    ProjectedVolumeSource, SecretEnvSource, SecretProjection, SecretVolumeSource, SecurityContext,
    Volume, VolumeDevice, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use sidekey_patch::{wants_injection, ContainerView, PodView, SpecView, Text};

/// Any text: plain names, and strings that need escapes in JSON (quotes,
/// backslashes, control characters, non-ASCII).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{1,10}",
        2 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => Just("a\"b\\c\u{1}d\u{e9}\u{1f600}".to_owned()),
    ]
}

fn opt<T: Strategy>(s: T) -> impl Strategy<Value = Option<T::Value>> {
    prop::option::of(s)
}

fn strings(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..max)
}

fn env_var() -> impl Strategy<Value = EnvVar> {
    (text(), opt(text()), any::<bool>()).prop_map(|(name, value, from)| EnvVar {
        name,
        value,
        value_from: from.then(|| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

fn env_from() -> impl Strategy<Value = EnvFromSource> {
    (opt(text()), 0..3u8, text()).prop_map(|(prefix, kind, name)| EnvFromSource {
        prefix,
        config_map_ref: (kind == 1).then(|| ConfigMapEnvSource {
            name: name.clone(),
            optional: None,
        }),
        secret_ref: (kind == 2).then_some(SecretEnvSource {
            name,
            optional: None,
        }),
    })
}

fn mount() -> impl Strategy<Value = VolumeMount> {
    (
        text(),
        text(),
        opt(any::<bool>()),
        opt(text()),
        opt(text()),
        opt(prop::sample::select(vec!["None", "HostToContainer"])),
        opt(prop::sample::select(vec!["Disabled", "IfPossible"])),
    )
        .prop_map(|(name, path, ro, sub, expr, prop, rro)| VolumeMount {
            name,
            mount_path: path,
            read_only: ro,
            sub_path: sub,
            sub_path_expr: expr,
            mount_propagation: prop.map(str::to_owned),
            recursive_read_only: rro.map(str::to_owned),
        })
}

fn container() -> impl Strategy<Value = Container> {
    (
        (text(), opt(text()), opt(strings(3)), opt(strings(3))),
        (
            opt(prop::collection::vec(env_var(), 0..3)),
            opt(prop::collection::vec(env_from(), 0..2)),
            opt(prop::collection::vec(mount(), 0..3)),
            opt(prop::collection::vec((text(), text()), 0..2)),
        ),
        opt(prop::sample::select(vec!["Always", "Never"])),
        opt((opt(any::<i64>()), opt(any::<i64>()))),
    )
        .prop_map(
            |((name, image, command, args), (env, env_from, mounts, devices), restart, sc)| {
                Container {
                    name,
                    image,
                    command,
                    args,
                    env,
                    env_from,
                    volume_mounts: mounts,
                    volume_devices: devices.map(|d| {
                        d.into_iter()
                            .map(|(name, device_path)| VolumeDevice { name, device_path })
                            .collect()
                    }),
                    restart_policy: restart.map(str::to_owned),
                    security_context: sc.map(|(u, g)| SecurityContext {
                        run_as_user: u,
                        run_as_group: g,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            },
        )
}

fn volume() -> impl Strategy<Value = Volume> {
    (
        text(),
        0..6u8,
        opt(prop::sample::select(vec!["", "Memory"])),
        opt(prop::sample::select(vec!["1Gi", "64Mi", "0"])),
        any::<bool>(),
    )
        .prop_map(|(name, kind, medium, size, secret)| {
            let mut v = Volume {
                name,
                ..Default::default()
            };
            match kind {
                0 => {
                    v.empty_dir = Some(EmptyDirVolumeSource {
                        medium: medium.map(str::to_owned),
                        size_limit: size.map(|s| Quantity(s.to_owned())),
                    })
                }
                1 => {
                    v.secret = Some(SecretVolumeSource {
                        secret_name: Some("s".to_owned()),
                        ..Default::default()
                    })
                }
                2 => {
                    v.config_map = Some(ConfigMapVolumeSource {
                        name: "c".to_owned(),
                        ..Default::default()
                    })
                }
                3 => {
                    v.host_path = Some(HostPathVolumeSource {
                        path: "/data".to_owned(),
                        type_: None,
                    })
                }
                4 => {
                    let source = if secret {
                        VolumeProjection {
                            secret: Some(SecretProjection {
                                name: "s".to_owned(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                    } else {
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "c".to_owned(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                    };
                    v.projected = Some(ProjectedVolumeSource {
                        sources: Some(vec![source]),
                        ..Default::default()
                    })
                }
                // No source at all.
                _ => {}
            }
            v
        })
}

fn annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    (
        prop::collection::btree_map(text(), text(), 0..4),
        0..4u8,
        any::<bool>(),
    )
        .prop_map(|(mut m, opt_in, absent)| {
            // Most pods opt in, so that the spec is read.
            if opt_in != 0 {
                m.insert("sidekey.io/inject".to_owned(), "true".to_owned());
            }
            (!absent || !m.is_empty()).then_some(m)
        })
}

fn pod() -> impl Strategy<Value = Pod> {
    let meta = (opt(text()), opt(text()), opt(text()), annotations()).prop_map(
        |(name, generate_name, namespace, annotations)| ObjectMeta {
            name,
            generate_name,
            namespace,
            annotations,
            ..Default::default()
        },
    );
    let spec = (
        prop::collection::vec(container(), 0..3),
        opt(prop::collection::vec(container(), 0..2)),
        opt(prop::collection::vec(text(), 0..2)),
        opt(prop::collection::vec(volume(), 0..4)),
        opt((opt(any::<i64>()), opt(any::<i64>()), opt(any::<i64>()))),
        opt(prop::sample::select(vec!["linux", "windows"])),
        opt(prop::collection::btree_map(text(), text(), 0..3)),
    )
        .prop_map(
            |(containers, init, ephemeral, volumes, psc, os, node_selector)| PodSpec {
                containers,
                init_containers: init,
                ephemeral_containers: ephemeral.map(|names| {
                    names
                        .into_iter()
                        .map(|name| EphemeralContainer {
                            name,
                            ..Default::default()
                        })
                        .collect()
                }),
                volumes,
                security_context: psc.map(|(u, g, f)| PodSecurityContext {
                    run_as_user: u,
                    run_as_group: g,
                    fs_group: f,
                    ..Default::default()
                }),
                os: os.map(|name| PodOS {
                    name: name.to_owned(),
                }),
                node_selector,
                ..Default::default()
            },
        );
    (meta, opt(spec)).prop_map(|(metadata, spec)| Pod {
        metadata,
        spec,
        status: None,
    })
}

/// The pod's JSON text as the API server writes it (metadata first), or
/// with the spec first.
fn json_text(pod: &Pod, spec_first: bool) -> String {
    let meta = serde_json::to_string(&pod.metadata).unwrap();
    let mut members = vec![format!("\"metadata\":{meta}")];
    if let Some(spec) = &pod.spec {
        let spec = format!("\"spec\":{}", serde_json::to_string(spec).unwrap());
        if spec_first {
            members.insert(0, spec);
        } else {
            members.push(spec);
        }
    }
    format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",{}}}",
        members.join(",")
    )
}

fn strs(v: &[Text<'_>]) -> Vec<String> {
    v.iter().map(|t| t.as_str().to_owned()).collect()
}

fn map(m: &BTreeMap<Text<'_>, Text<'_>>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect()
}

fn same_container(view: &ContainerView<'_>, typed: &Container) {
    assert_eq!(view.name.as_str(), typed.name);
    assert_eq!(view.image.as_deref(), typed.image.as_deref());
    assert_eq!(view.command.as_deref().map(strs), typed.command);
    assert_eq!(view.args.as_deref().map(strs), typed.args);
    assert_eq!(view.env.is_some(), typed.env.is_some());
    let env = typed.env.as_deref().unwrap_or_default();
    assert_eq!(view.env().len(), env.len());
    for (v, t) in view.env().iter().zip(env) {
        assert_eq!(v.name.as_str(), t.name);
        assert_eq!(v.value.as_deref(), t.value.as_deref());
        assert_eq!(v.value_from.is_some(), t.value_from.is_some());
        if let (Some(raw), Some(from)) = (v.value_from, &t.value_from) {
            let back: EnvVarSource = serde_json::from_str(raw.get()).unwrap();
            assert_eq!(&back, from);
        }
    }
    let env_from = typed.env_from.as_deref().unwrap_or_default();
    assert_eq!(view.env_from().len(), env_from.len());
    for (v, t) in view.env_from().iter().zip(env_from) {
        assert_eq!(v.prefix.as_deref(), t.prefix.as_deref());
        let name = |r: &Option<sidekey_patch::RefView<'_>>| {
            r.as_ref().map(|r| r.name.as_deref().map(str::to_owned))
        };
        assert_eq!(
            name(&v.config_map_ref),
            t.config_map_ref.as_ref().map(|r| Some(r.name.clone()))
        );
        assert_eq!(
            name(&v.secret_ref),
            t.secret_ref.as_ref().map(|r| Some(r.name.clone()))
        );
    }
    let mounts = typed.volume_mounts.as_deref().unwrap_or_default();
    assert_eq!(view.mounts().len(), mounts.len());
    for (v, t) in view.mounts().iter().zip(mounts) {
        assert_eq!(v.name.as_str(), t.name);
        assert_eq!(v.mount_path.as_str(), t.mount_path);
        assert_eq!(v.read_only, t.read_only);
        assert_eq!(v.sub_path.as_deref(), t.sub_path.as_deref());
        assert_eq!(v.sub_path_expr.as_deref(), t.sub_path_expr.as_deref());
        assert_eq!(
            v.mount_propagation.as_deref(),
            t.mount_propagation.as_deref()
        );
        assert_eq!(
            v.recursive_read_only.as_deref(),
            t.recursive_read_only.as_deref()
        );
    }
    let devices = typed.volume_devices.as_deref().unwrap_or_default();
    assert_eq!(view.devices().len(), devices.len());
    for (v, t) in view.devices().iter().zip(devices) {
        assert_eq!(v.name.as_str(), t.name);
        assert_eq!(v.device_path.as_deref(), Some(t.device_path.as_str()));
    }
    assert_eq!(
        view.restart_policy.as_deref(),
        typed.restart_policy.as_deref()
    );
    let sc = typed.security_context.as_ref();
    assert_eq!(view.security_context.is_some(), sc.is_some());
    if let (Some(v), Some(t)) = (view.security_context, sc) {
        assert_eq!(
            (v.run_as_user, v.run_as_group),
            (t.run_as_user, t.run_as_group)
        );
    }
}

fn same_spec(view: &SpecView<'_>, typed: &PodSpec) {
    assert_eq!(view.containers.len(), typed.containers.len());
    for (v, t) in view.containers.iter().zip(&typed.containers) {
        same_container(v, t);
    }
    assert_eq!(
        view.init_containers.as_ref().map(Vec::len),
        typed.init_containers.as_ref().map(Vec::len)
    );
    for (v, t) in view
        .init_containers
        .iter()
        .flatten()
        .zip(typed.init_containers.iter().flatten())
    {
        same_container(v, t);
    }
    assert_eq!(
        view.ephemeral_containers.as_ref().map(|e| e
            .iter()
            .map(|n| n.name.as_str().to_owned())
            .collect::<Vec<_>>()),
        typed
            .ephemeral_containers
            .as_ref()
            .map(|e| e.iter().map(|c| c.name.clone()).collect())
    );
    assert_eq!(
        view.volumes.as_ref().map(Vec::len),
        typed.volumes.as_ref().map(Vec::len)
    );
    for (v, t) in view
        .volumes
        .iter()
        .flatten()
        .zip(typed.volumes.iter().flatten())
    {
        assert_eq!(v.name.as_str(), t.name);
        assert_eq!(v.empty_dir.is_some(), t.empty_dir.is_some());
        if let (Some(ve), Some(te)) = (&v.empty_dir, &t.empty_dir) {
            assert_eq!(ve.medium.as_deref(), te.medium.as_deref());
            assert_eq!(
                ve.size_limit.as_deref(),
                te.size_limit.as_ref().map(|q| q.0.as_str())
            );
        }
        // The other sources, by their JSON names.
        let typed_json = serde_json::to_value(t).unwrap();
        let mut others: Vec<&str> = typed_json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "name" | "emptyDir"))
            .collect();
        others.sort_unstable();
        let mut view_others: Vec<&str> = v.others.iter().map(|k| k.as_str()).collect();
        view_others.sort_unstable();
        assert_eq!(view_others, others);
        let secret = t
            .projected
            .as_ref()
            .is_some_and(|p| p.sources.iter().flatten().any(|s| s.secret.is_some()));
        assert_eq!(v.projects_a_secret, secret);
    }
    let sc = typed.security_context.as_ref();
    assert_eq!(view.security_context.is_some(), sc.is_some());
    if let (Some(v), Some(t)) = (view.security_context, sc) {
        assert_eq!(
            (v.run_as_user, v.run_as_group, v.fs_group),
            (t.run_as_user, t.run_as_group, t.fs_group)
        );
    }
    assert_eq!(
        view.os.as_ref().and_then(|o| o.name.as_deref()),
        typed.os.as_ref().map(|o| o.name.as_str())
    );
    assert_eq!(view.node_selector.as_ref().map(map), typed.node_selector);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_view_reads_what_the_typed_pod_holds(pod in pod(), spec_first in any::<bool>()) {
        let text = json_text(&pod, spec_first);
        // The text is a pod as k8s-openapi reads it, and reads back equal.
        let typed: Pod = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&typed, &pod);
        let view = PodView::from_json(&text).unwrap();

        let meta = &view.metadata;
        prop_assert_eq!(meta.name.as_deref(), typed.metadata.name.as_deref());
        prop_assert_eq!(meta.generate_name.as_deref(), typed.metadata.generate_name.as_deref());
        prop_assert_eq!(meta.namespace.as_deref(), typed.metadata.namespace.as_deref());
        prop_assert_eq!(meta.annotations.as_ref().map(map), typed.metadata.annotations.clone());

        // The spec is read exactly when the pod opts in.
        let planned = typed.metadata.annotations.as_ref().is_some_and(wants_injection);
        match (&view.spec, &typed.spec) {
            (Some(v), Some(t)) => {
                prop_assert!(planned);
                same_spec(v, t);
            }
            (None, Some(_)) => prop_assert!(!planned),
            (Some(_), None) => prop_assert!(false, "a spec out of nothing"),
            (None, None) => {}
        }
    }
}

/// A pod whose spec is read (it opts in) with `inner` spliced in.
fn planned_pod(meta_extra: &str, spec: &str, tail: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"p","annotations":{{"sidekey.io/inject":"true","sidekey.io/services":"api"}}{meta_extra}}},"spec":{spec}{tail}}}"#
    )
}

#[test]
fn a_key_given_twice_is_refused_with_its_name() {
    const SECRET: &str = "s3cr3t-marker-value";
    let containers = format!(
        r#"{{"containers":[{{"name":"app","command":["/app"],"env":[{{"name":"A","value":"{SECRET}"}}]}}]}}"#
    );
    let cases: Vec<(String, &str)> = vec![
        (
            planned_pod("", &containers, r#","metadata":{"name":"q"}"#),
            "duplicate field `metadata`",
        ),
        (
            planned_pod("", &containers, &format!(r#","spec":{containers}"#)),
            "duplicate field `spec`",
        ),
        (
            planned_pod(r#","name":"again""#, &containers, ""),
            "duplicate field `name`",
        ),
        (
            format!(
                r#"{{"metadata":{{"annotations":{{"sidekey.io/inject":"true","sidekey.io/services":"api","sidekey.io/services":"{SECRET}"}}}}}}"#
            ),
            "a key appears twice in `annotations`",
        ),
        (
            planned_pod(
                "",
                &format!(
                    r#"{{"containers":[{{"name":"app","command":["/app"],"command":["/{SECRET}"]}}]}}"#
                ),
                "",
            ),
            "duplicate field `command`",
        ),
        (
            planned_pod(
                "",
                &format!(
                    r#"{{"containers":[{{"name":"app","command":["/app"],"env":[{{"name":"A","value":"x","value":"{SECRET}"}}]}}]}}"#
                ),
                "",
            ),
            "duplicate field `value`",
        ),
        (
            planned_pod(
                "",
                r#"{"containers":[{"name":"app","command":["/app"]}],"volumes":[{"name":"v","name":"w","emptyDir":{}}]}"#,
                "",
            ),
            "duplicate field `name`",
        ),
        (
            planned_pod(
                "",
                r#"{"containers":[{"name":"app","command":["/app"]}],"volumes":[{"name":"v","emptyDir":{},"emptyDir":{"medium":"Memory"}}]}"#,
                "",
            ),
            "duplicate field `emptyDir`",
        ),
        (
            planned_pod(
                "",
                r#"{"containers":[{"name":"app","command":["/app"]}],"volumes":[{"name":"v","secret":{},"secret":{}}]}"#,
                "",
            ),
            "duplicate field `volume source`",
        ),
        (
            planned_pod(
                "",
                r#"{"containers":[{"name":"app","command":["/app"]}],"nodeSelector":{"kubernetes.io/os":"linux","kubernetes.io/os":"windows"}}"#,
                "",
            ),
            "a key appears twice in `nodeSelector`",
        ),
        (
            planned_pod(
                "",
                r#"{"containers":[{"name":"app","command":["/app"]}],"securityContext":{"fsGroup":1,"fsGroup":2}}"#,
                "",
            ),
            "duplicate field `fsGroup`",
        ),
    ];
    for (text, expected) in &cases {
        // Each is valid JSON: only the repeated key is wrong.
        serde_json::from_str::<serde_json::Value>(text).unwrap();
        let e = PodView::from_json(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}\n=> {e}");
        assert!(e.contains("line 1 column"), "{e}");
        assert!(e.contains("a key may appear once"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
    }
    // The same pods without the repeat are read.
    let fine = planned_pod("", &containers, "");
    assert!(PodView::from_json(&fine).unwrap().spec.is_some());
}
