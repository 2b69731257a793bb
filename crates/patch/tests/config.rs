//! The injector configuration: the documented example, defaults, errors,
//! and namespace resolution.

use rstest::rstest;
use sidekey_patch::{
    Audit, Config, ConfigError, Delivery, FilesFormat, OnMissing, PullPolicy, Resolution, Store,
    DEFAULT_AGENT_IMAGE,
};

fn env(name: &str) -> sidekey_model::Environment {
    sidekey_model::Environment::parse(name).unwrap()
}

/// The YAML block of CONFIG.md.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFIG.md")).unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn the_documented_example_parses() {
    let c = Config::from_yaml(&documented_example()).unwrap();
    let s = c.settings();
    assert_eq!(s.prefix().as_str(), "sidekey");
    assert_eq!(s.store(), &Store::Ssm);
    assert_eq!(s.kms_key(), "alias/sidekey");
    assert_eq!(s.region(), Some("eu-west-1"));
    assert_eq!(s.agent_image(), "ghcr.io/sidekey/agent:0.1.0");
    assert_eq!(s.timeout_text(), "30s");
    assert_eq!(s.audit(), &Audit::Stdout);
    assert_eq!(c.environment_rules().len(), 4);
    let legacy = c.agent_policy("legacy-billing");
    assert!(legacy.allow_legacy_values);
    assert_eq!(legacy.allow_loader_env, ["NODE_OPTIONS".to_owned()]);
    assert_eq!(
        c.agent_policy("prod"),
        sidekey_patch::AgentPolicy::default()
    );
    assert_eq!(
        c.resolve("pr-42"),
        Resolution::Environment {
            environment: env("pr-42"),
            inherit: vec![env("staging")]
        }
    );
    assert_eq!(
        c.resolve("alice-dev"),
        Resolution::Environment {
            environment: env("dev-alice-dev"),
            inherit: vec![env("dev")]
        }
    );
    assert_eq!(
        c.resolve("prod"),
        Resolution::Environment {
            environment: env("production"),
            inherit: vec![]
        }
    );
    assert!(matches!(
        c.resolve("kube-system"),
        Resolution::Excluded { .. }
    ));
}

#[test]
fn defaults() {
    for c in [
        Config::default_for(None),
        Config::from_yaml("").unwrap(),
        Config::from_yaml("# only a comment\n").unwrap(),
    ] {
        let s = c.settings();
        assert_eq!(s.prefix().as_str(), "sidekey");
        assert_eq!(s.store().to_string(), "ssm");
        assert_eq!(s.kms_key(), "alias/sidekey");
        assert_eq!(s.region(), None);
        assert_eq!(s.agent_image(), DEFAULT_AGENT_IMAGE);
        assert!(DEFAULT_AGENT_IMAGE.starts_with("sidekey/agent:"));
        assert_eq!(s.image_pull_policy(), PullPolicy::IfNotPresent);
        assert_eq!(s.timeout_text(), "30s");
        assert_eq!(s.audit().to_string(), "stdout");
        assert_eq!(s.files_size_limit(), "1Mi");
        assert_eq!(s.resources().requests.cpu.as_deref(), Some("10m"));
        assert_eq!(s.resources().limits.memory.as_deref(), Some("64Mi"));
        assert_eq!(s.defaults().delivery, Delivery::Env);
        assert_eq!(s.defaults().files_format, FilesFormat::PerKey);
        assert_eq!(s.defaults().on_missing, OnMissing::Fail);
        assert_eq!(c.excluded_namespaces(), ["kube-system", "kube-public"]);
        assert_eq!(
            c.resolve("shop"),
            Resolution::Environment {
                environment: env("shop"),
                inherit: vec![]
            }
        );
    }
    let own = Config::default_for(Some("sidekey"));
    assert!(
        matches!(own.resolve("sidekey"), Resolution::Excluded { reason } if reason.contains("own namespace"))
    );
}

#[test]
fn resolution_rules() {
    let c = Config::from_yaml(
        r#"
environments:
  - namespaces: "pr-*"
    inherit: [staging, pr-7, staging-eu]
  - namespaces: "*"
    environment: "{namespace}"
    inherit: [base]
  - namespaces: "never"
    environment: never
"#,
    )
    .unwrap();
    // The environment itself is dropped from its bases.
    assert_eq!(
        c.resolve("pr-7"),
        Resolution::Environment {
            environment: env("pr-7"),
            inherit: vec![env("staging"), env("staging-eu")]
        }
    );
    // First match wins.
    assert_eq!(
        c.resolve("never"),
        Resolution::Environment {
            environment: env("never"),
            inherit: vec![env("base")]
        }
    );
    assert!(matches!(c.resolve("Bad_NS"), Resolution::Invalid { .. }));
    let long = Config::from_yaml(
        "environments: [{namespaces: '*', environment: 'x-{namespace}-{namespace}'}]",
    )
    .unwrap();
    let ns = "a".repeat(40);
    match long.resolve(&ns) {
        Resolution::Invalid { reason } => {
            assert!(reason.contains("environments[0]"), "{reason}");
            assert!(reason.contains("at most 63"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_settings() {
    let c = Config::from_yaml(
        r#"
prefix: acme
store: file:/var/lib/sidekey/store.redb
kmsKey: arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
imagePullPolicy: Never
timeout: 1m 30s
audit: file:/var/log/sidekey/audit.jsonl
resources: {requests: {cpu: "0.01"}, limits: {memory: 1Gi}}
filesSizeLimit: 512Ki
defaults: {delivery: both, filesFormat: json, onMissing: skip}
"#,
    )
    .unwrap();
    let s = c.settings();
    assert_eq!(s.store().to_string(), "file:/var/lib/sidekey/store.redb");
    assert_eq!(s.image_pull_policy().as_str(), "Never");
    assert_eq!(s.timeout().as_secs(), 90);
    assert_eq!(s.audit().to_string(), "file:/var/log/sidekey/audit.jsonl");
    assert_eq!(s.resources().requests.memory, None);
    assert_eq!(s.resources().limits.cpu, None);
    assert_eq!(s.defaults().delivery, Delivery::Both);
    assert_eq!(s.defaults().on_missing, OnMissing::Skip);
    assert_eq!(
        c.clone()
            .with_agent_image("bad image")
            .unwrap_err()
            .field_path(),
        Some("agentImage")
    );
}

#[rstest]
#[case::unknown_field("prefix: sidekey\nkmskey: alias/x\n", None, "unknown field `kmskey`")]
#[case::unknown_nested(
    "environments:\n  - namespaces: a\n    env: b\n",
    None,
    "unknown field `env`"
)]
#[case::wrong_type("timeout: [1]\n", None, "timeout")]
#[case::prefix(
    "prefix: /sidekey\n",
    Some("prefix"),
    "write the prefix without slashes"
)]
#[case::store("store: s3\n", Some("store"), "must be \"ssm\" or \"file:\"")]
#[case::store_relative("store: file:store.redb\n", Some("store"), "absolute path")]
#[case::kms_key("kmsKey: ''\n", Some("kmsKey"), "it is empty")]
#[case::region("region: EU West\n", Some("region"), "not an AWS region name")]
#[case::pull(
    "imagePullPolicy: always\n",
    Some("imagePullPolicy"),
    "Always, IfNotPresent, Never"
)]
#[case::timeout("timeout: soon\n", Some("timeout"), "not a duration")]
#[case::timeout_short("timeout: 10ms\n", Some("timeout"), "minimum of 1s")]
#[case::audit(
    "audit: syslog\n",
    Some("audit"),
    "\"stdout\", \"stderr\" or \"file:\""
)]
#[case::excluded(
    "excludedNamespaces: [Kube-System]\n",
    Some("excludedNamespaces[0]"),
    "lower-case letters"
)]
#[case::glob(
    "environments: [{namespaces: 'pr-?'}]\n",
    Some("environments[0].namespaces"),
    "'*'"
)]
#[case::template(
    "environments: [{namespaces: a, environment: 'Prod'}]\n",
    Some("environments[0].environment"),
    "environment template"
)]
#[case::inherit(
    "environments: [{namespaces: a, inherit: [Staging]}]\n",
    Some("environments[0].inherit[0]"),
    "upper-case"
)]
#[case::inherit_twice(
    "environments: [{namespaces: a, inherit: [s, s]}]\n",
    Some("environments[0].inherit[1]"),
    "listed twice"
)]
#[case::quantity(
    "resources: {requests: {cpu: lots}}\n",
    Some("resources.requests.cpu"),
    "not a Kubernetes quantity"
)]
#[case::request_above_limit(
    "resources: {requests: {memory: 1Gi}}\n",
    Some("resources.requests.memory"),
    "above the limit"
)]
#[case::size("filesSizeLimit: 0\n", Some("filesSizeLimit"), "positive")]
#[case::delivery(
    "defaults: {delivery: envs}\n",
    Some("defaults.delivery"),
    "one of env, files, both"
)]
fn bad_configuration(#[case] yaml: &str, #[case] field: Option<&str>, #[case] fragment: &str) {
    let e: ConfigError = Config::from_yaml(yaml).unwrap_err();
    assert_eq!(e.field_path(), field, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(fragment), "{msg}");
    assert!(msg.starts_with("invalid injector configuration: "), "{msg}");
    if field.is_none() {
        assert!(e.line().is_some(), "YAML errors carry a line: {msg}");
        assert!(msg.contains("line"), "{msg}");
    } else {
        assert!(msg.contains(field.unwrap()), "{msg}");
    }
}
