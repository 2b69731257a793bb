//! Property tests: any annotations and any pod either plan or are refused,
//! never a panic; every patch applies to the pod it was planned for, and
//! the patched pod is skipped on a second review.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use sidekey_patch::{
    apply, parse_annotations, plan_with_images, Config, Decision, Defaults, ImageConfig,
    ImageConfigs, PodView, Request,
};
use support::semantic_problems;

const KEYS: [&str; 22] = [
    "sidekey.io/services",
    "sidekey.io/secrets",
    "sidekey.io/delivery",
    "sidekey.io/containers",
    "sidekey.io/files-path",
    "sidekey.io/files-format",
    "sidekey.io/refresh",
    "sidekey.io/command",
    "sidekey.io/on-missing",
    "sidekey.io/command.app",
    "sidekey.io/command.worker",
    "sidekey.io/inject",
    "sidekey.io/injected",
    "sidekey.io/environment",
    "sidekey.io/prefix",
    "sidekey.io/",
    "sidekey.io/Inject",
    "sidekey.io/servics",
    "example.com/other",
    "app",
    "sidekey.io/inject/extra",
    "sidekey.io/\u{0130}nject",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("true".to_owned()),
        Just("api,shared".to_owned()),
        Just("DB=db/PASSWORD@3".to_owned()),
        Just("env".to_owned()),
        Just("files".to_owned()),
        Just("both".to_owned()),
        Just("app,sidecar".to_owned()),
        Just("/run/secrets/x".to_owned()),
        Just("json".to_owned()),
        Just("30s".to_owned()),
        Just("[\"/bin/app\"]".to_owned()),
        Just("skip".to_owned()),
        "[a-z,/ =@.%\\\\-]{0,24}",
    ]
}

/// Plausible values for `KEYS[i]`, `i < 11`.
const GOOD: [&[&str]; 11] = [
    &["api", "api,shared", "web"],
    &["DB=db/PASSWORD", "A=x/B@3,C=y/D@prod"],
    &["env", "files", "both"],
    &["app", "app,worker", "sidecar"],
    &["/run/secrets/x", "/etc/app/secrets", "/data/s"],
    &["per-key", "dotenv", "json"],
    &["30s", "5m"],
    &["[\"/bin/app\"]", "[\"/x\",\"y\"]", "[]"],
    &["fail", "skip"],
    &["[\"/bin/app\"]", "[]"],
    &["[\"/bin/worker\",\"-v\"]", "[]"],
];

fn entry() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        6 => (0..11usize).prop_flat_map(|i| {
            (Just(KEYS[i].to_owned()), prop::sample::select(GOOD[i].to_vec()).prop_map(str::to_owned))
        }),
        2 => (prop::sample::select(KEYS[..11].to_vec()).prop_map(str::to_owned), value()),
        1 => (prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), value()),
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let known = prop::collection::vec(entry(), 0..4);
    let anything = prop::collection::btree_map(any::<String>(), any::<String>(), 0..2);
    (any::<u8>(), known, anything).prop_map(|(base, known, anything)| {
        let mut m = BTreeMap::new();
        // Most generated pods opt in with a valid request, so planning goes deep.
        if base % 8 != 0 {
            m.insert("sidekey.io/inject".to_owned(), "true".to_owned());
            m.insert("sidekey.io/services".to_owned(), "api".to_owned());
        }
        m.extend(known);
        if base % 16 == 1 {
            m.extend(anything);
        }
        m
    })
}

fn opt<T: Strategy>(s: T) -> impl Strategy<Value = Option<T::Value>> {
    prop::option::of(s)
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            4 => prop::collection::vec("/[a-z/]{0,8}", 1..3).prop_map(Some),
            1 => Just(None),
            1 => prop::collection::vec("[a-z/]{0,8}", 0..3).prop_map(Some),
        ],
        opt(prop::collection::vec(("[A-Z_]{1,12}", "[ -~]{0,8}"), 0..3)),
        opt(prop::collection::vec(
            (
                // A mount of the injector's volume is always refused:
                // rare, so that most pods get planned deep.
                prop_oneof![
                    12 => prop::sample::select(vec!["v0", "v1", "aws-iam-token"]),
                    1 => Just("sidekey-bin"),
                ],
                prop::sample::select(vec![
                    "/run/secrets/sidekey",
                    "/run/secrets",
                    "/sidekey",
                    "/data",
                    "/",
                    "/var/run/secrets/eks.amazonaws.com/serviceaccount",
                ]),
            ),
            0..3,
        )),
        opt(opt(-1i64..3)),
        opt(prop::collection::vec("[a-z/]{0,4}", 0..3)),
    )
        .prop_map(move |(command, env, mounts, uid, args)| {
            let mut c = json!({"name": name, "image": "img"});
            if let Some(cmd) = command {
                c["command"] = json!(cmd);
            }
            if let Some(args) = args {
                c["args"] = json!(args);
            }
            if let Some(env) = env {
                c["env"] = json!(env
                    .into_iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect::<Vec<_>>());
            }
            if let Some(m) = mounts {
                c["volumeMounts"] = json!(m
                    .into_iter()
                    .map(|(n, p)| json!({"name": n, "mountPath": p}))
                    .collect::<Vec<_>>());
            }
            if let Some(uid) = uid {
                c["securityContext"] = match uid {
                    Some(u) => json!({"runAsUser": u * 1000}),
                    None => json!({}),
                };
            }
            c
        })
}

fn pod() -> impl Strategy<Value = Value> {
    let names = (
        prop::sample::subsequence(vec!["app", "sidecar", "worker", "log"], 1..4),
        prop::bool::weighted(0.04),
    )
        .prop_map(|(mut ns, reserved)| {
            if reserved {
                ns.push("sidekey-init");
            }
            ns
        });
    (
        annotations(),
        names.prop_flat_map(|ns| {
            ns.into_iter()
                .map(|n| container(n.to_owned()))
                .collect::<Vec<_>>()
        }),
        opt(prop::collection::vec(container("init".into()), 0..2)),
        opt((
            prop::sample::subsequence(vec!["v0", "v1", "aws-iam-token"], 0..4),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(mut v, ours)| {
                if ours {
                    v.push("sidekey-secrets");
                }
                v
            })),
        opt((opt(0i64..2), opt(0i64..2), opt(0i64..2))),
    )
        .prop_map(|(ann, containers, init, volumes, psc)| {
            let mut p = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "p-", "annotations": ann},
                "spec": {"containers": containers},
            });
            if let Some(init) = init {
                p["spec"]["initContainers"] = json!(init);
            }
            if let Some(v) = volumes {
                p["spec"]["volumes"] = json!(v
                    .into_iter()
                    // v1 is a secret volume: the injector may not add an
                    // fsGroup with it.
                    .map(|n| match n {
                        "v1" => json!({"name": n, "secret": {"secretName": "s"}}),
                        _ => json!({"name": n, "emptyDir": {}}),
                    })
                    .collect::<Vec<_>>());
            }
            if let Some((u, g, f)) = psc {
                let mut sc = json!({});
                if let Some(u) = u {
                    sc["runAsUser"] = json!(u * 1000);
                }
                if let Some(g) = g {
                    sc["runAsGroup"] = json!(g * 1000);
                }
                if let Some(f) = f {
                    sc["fsGroup"] = json!(f * 1000);
                }
                p["spec"]["securityContext"] = sc;
            }
            p
        })
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "apiVersion",
                        "kind",
                        "metadata",
                        "spec",
                        "annotations",
                        "containers",
                        "name",
                        "command",
                        "env",
                        "initContainers",
                        "volumes",
                        "volumeMounts",
                    ])
                    .prop_map(str::to_owned),
                    any::<String>()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn config() -> Config {
    Config::from_yaml("environments: [{namespaces: 'pr-*', inherit: [staging]}]\n")
        .unwrap()
        .with_injector_namespace("sidekey")
}

/// What happened, so the generators can be checked to reach injection.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Unparsed,
    Skip,
    Deny,
    Inject,
}

fn check(pod_json: &Value, namespace: &str, config: &Config) -> Seen {
    let text = serde_json::to_string(pod_json).unwrap();
    let Ok(pod) = PodView::from_json(&text) else {
        return Seen::Unparsed;
    };
    let request = Request {
        namespace,
        user: None,
    };
    // Image configs for two of the generated names: one with an
    // ENTRYPOINT, one with only a CMD (`app` and `sidecar` have none).
    let images: ImageConfigs = [
        (
            "worker".to_owned(),
            ImageConfig {
                entrypoint: vec!["/entry".into()],
                cmd: vec!["serve".into()],
            },
        ),
        (
            "log".to_owned(),
            ImageConfig {
                entrypoint: Vec::new(),
                cmd: vec!["/bin/log".into(), "-f".into()],
            },
        ),
    ]
    .into_iter()
    .collect();
    match plan_with_images(&pod, &request, config, &images) {
        Decision::Skip { reason } => {
            assert!(!reason.is_empty());
            Seen::Skip
        }
        Decision::Deny(denials) => {
            assert!(!denials.is_empty());
            for d in denials {
                assert!(!d.message.contains('\n'), "{d}");
            }
            Seen::Deny
        }
        Decision::Inject(p) => {
            let patched = apply(pod_json, &p.patch.operations().unwrap())
                .expect("a plan's patch applies to its pod");
            // The patch adds no problem the pod did not already have.
            let before = semantic_problems(pod_json);
            let added: Vec<_> = semantic_problems(&patched)
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            assert!(added.is_empty(), "{added:?}\n{patched:#}");
            let again = serde_json::to_string(&patched).unwrap();
            assert!(matches!(
                plan_with_images(
                    &PodView::from_json(&again).unwrap(),
                    &request,
                    config,
                    &images
                ),
                Decision::Skip { .. }
            ));
            Seen::Inject
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn annotations_never_panic(ann in annotations()) {
        let _ = parse_annotations(&ann, &Defaults::default());
    }

    #[test]
    fn arbitrary_json_never_panics(v in arbitrary_json(), ann in annotations()) {
        let _ = check(&v, "shop", &config());
        // The same JSON as a pod's spec, with annotations that opt in.
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"annotations": ann}, "spec": v});
        let _ = check(&pod, "shop", &config());
    }
}

#[test]
fn structured_pods_never_panic() {
    const CASES: u32 = 512;
    let namespace = prop_oneof![
        6 => Just("shop"), 3 => Just("pr-1"), 1 => Just("kube-system"), 1 => Just("sidekey"),
        1 => Just("Bad"), 1 => Just("")
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    });
    let seen = std::cell::RefCell::new(BTreeMap::new());
    let config = config();
    runner
        .run(&(pod(), namespace), |(pod, ns)| {
            let outcome = check(&pod, ns, &config);
            *seen
                .borrow_mut()
                .entry(format!("{outcome:?}"))
                .or_insert(0u32) += 1;
            Ok(())
        })
        .unwrap();
    // The generator must reach every outcome, injection often.
    let seen = seen.into_inner();
    let inject = seen.get("Inject").copied().unwrap_or(0);
    assert!(inject >= CASES / 8, "too few injections: {seen:?}");
    assert!(
        seen.contains_key("Deny") && seen.contains_key("Skip"),
        "{seen:?}"
    );
}
