//! Throttling as AWS does it (the proxy's token buckets and throttle rules
//! in front of moto): the agent's audit record carries the AWS calls it
//! made and how many were throttled and retried; a deadline that passes
//! while throttled ends the agent with exit 69 naming ThrottlingException
//! and the attempt count. Counts, not times.

mod common;

use common::{os, probe_bin, Kind, Probe, World};
use sidekey_test_support::{Fault, FaultRule};

/// The pod shape: services `api` and `web`, each with 5 keys in the
/// base environment `staging` and 5 in `pr-1` (20 keys).
fn shaped_world() -> World {
    let mut w = World::new(Kind::Ssm);
    for env in ["staging", "pr-1"] {
        for service in ["api", "web"] {
            let items: Vec<(String, String)> = (0..5)
                .map(|i| {
                    (
                        format!(
                            "{}_{env_}_{i}",
                            service.to_uppercase(),
                            env_ = env.replace('-', "_").to_uppercase()
                        ),
                        format!("value-{env}-{service}-{i}-secret"),
                    )
                })
                .collect();
            w.import(env, service, &items);
        }
    }
    w.proxy().reset_counts();
    w
}

fn shaped_env(w: &World) -> Vec<(String, String)> {
    let mut env = w.agent_env("pr-1", "api,web", "");
    env.push(("SIDEKEY_INHERIT".into(), "staging".into()));
    env
}

fn exec_args() -> Vec<std::ffi::OsString> {
    vec![os("exec"), os("--"), probe_bin().into_os_string(), os("0")]
}

/// The `aws` object of the last audit record.
fn aws_counts(w: &World) -> serde_json::Value {
    let audit = w.audit_lines();
    let last = audit.last().expect("an audit record");
    last["aws"].clone()
}

#[test]
fn an_unthrottled_start_of_two_services_and_a_base_takes_one_walk_per_service_and_layer() {
    let mut w = shaped_world();
    let ran = w.agent(&exec_args(), &shaped_env(&w), true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe
            .env
            .keys()
            .filter(|k| k.starts_with(b"API_") || k.starts_with(b"WEB_"))
            .count(),
        20
    );
    let counts = w.proxy().counts();
    eprintln!("2 services x 2 layers, 20 keys: {counts:?}");
    // One GetParametersByPath per (layer, service), nothing else from SSM.
    assert_eq!(w.proxy().count("GetParametersByPath"), 4, "{counts:?}");
    assert_eq!(w.proxy().total_for_service("AmazonSSM"), 4, "{counts:?}");
    // One Decrypt per distinct data key: one per import (layer, service).
    assert_eq!(w.proxy().count("Decrypt"), 4, "{counts:?}");
    assert_eq!(w.proxy().total_for_service("TrentService"), 4, "{counts:?}");
    let aws = aws_counts(&w);
    assert_eq!(aws["ssm"], 4, "{aws}");
    assert_eq!(aws["kms"], 4, "{aws}");
    assert_eq!(aws["calls"], 8, "{aws}");
    assert_eq!(aws["throttled"], 0, "{aws}");
    assert_eq!(aws["retries"], 0, "{aws}");
}

#[test]
fn a_throttled_start_that_succeeds_records_its_calls_and_retries() {
    let mut w = shaped_world();
    w.proxy()
        .inject(FaultRule::on("GetParametersByPath", Fault::Throttle).times(3));
    w.proxy()
        .inject(FaultRule::on("Decrypt", Fault::Throttle).times(2));
    let ran = w.agent(&exec_args(), &shaped_env(&w), true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let audit = w.audit_lines();
    let rec = audit.last().expect("an audit record");
    assert_eq!(rec["outcome"], "success");
    let aws = &rec["aws"];
    eprintln!("throttled start: {aws} (proxy {:?})", w.proxy().counts());
    assert_eq!(aws["ssm"], 4 + 3, "{aws}");
    assert_eq!(aws["kms"], 4 + 2, "{aws}");
    assert_eq!(aws["calls"], 13, "{aws}");
    assert_eq!(aws["throttled"], 5, "{aws}");
    assert_eq!(aws["retries"], 5, "{aws}");
    // The record counts what the proxy saw.
    assert_eq!(aws["ssm"], w.proxy().total_for_service("AmazonSSM"));
    assert_eq!(aws["kms"], w.proxy().total_for_service("TrentService"));
}

#[test]
fn a_start_under_token_buckets_records_what_the_proxy_counted() {
    let mut w = shaped_world();
    // Two calls at once, then one every half second, per family.
    w.proxy().limit_ssm_reads(2.0, 2);
    w.proxy().limit_kms(2.0, 2);
    let ran = w.agent(&exec_args(), &shaped_env(&w), true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let aws = aws_counts(&w);
    let throttled = w.proxy().throttled("ssm-get") + w.proxy().throttled("kms-crypto");
    eprintln!(
        "under buckets: {aws} (proxy {:?}, {throttled} throttled)",
        w.proxy().counts()
    );
    assert_eq!(aws["ssm"], w.proxy().total_for_service("AmazonSSM"));
    assert_eq!(aws["kms"], w.proxy().total_for_service("TrentService"));
    assert_eq!(aws["throttled"], throttled, "{aws}");
    assert_eq!(aws["retries"], throttled, "{aws}");
    // Every call that was not throttled was needed: 4 walks, 4 data keys.
    assert_eq!(
        w.proxy().total_for_service("AmazonSSM") - w.proxy().throttled("ssm-get"),
        4
    );
    assert_eq!(
        w.proxy().total_for_service("TrentService") - w.proxy().throttled("kms-crypto"),
        4
    );
}

#[test]
fn a_deadline_passing_while_throttled_exits_69_naming_throttling_and_the_attempts() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "TOKEN", b"prod-token-never-served");
    w.proxy().reset_counts();
    // An empty bucket that never refills: every read is throttled.
    w.proxy().limit_ssm_reads(0.0, 0);
    let mut env = w.agent_env("prod", "api", "");
    env.retain(|(k, _)| k != "SIDEKEY_TIMEOUT");
    env.push(("SIDEKEY_TIMEOUT".into(), "2s".into()));
    let ran = w.agent(&exec_args(), &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let err = ran.stderr_str();
    let line = err
        .lines()
        .rfind(|l| l.starts_with("sidekey-agent:"))
        .expect("an error line")
        .to_owned();
    let attempts = w.proxy().count("GetParametersByPath");
    assert!(attempts >= 2, "{attempts} attempts");
    assert_eq!(w.proxy().throttled("ssm-get"), attempts);
    let p = &w.prefix;
    assert!(
        line.starts_with(&format!(
            "sidekey-agent: environment prod: /{p}/prod/api/: ThrottlingException: Rate exceeded"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("gave up after {attempts} attempts")),
        "{line} (the proxy saw {attempts})"
    );
    // No KMS call: nothing was read.
    assert_eq!(w.proxy().total_for_service("TrentService"), 0);
    let audit = w.audit_lines();
    let rec = audit.last().expect("a failure is audited");
    assert_eq!(rec["outcome"], "failure");
    assert_eq!(rec["aws"]["ssm"], attempts);
    assert_eq!(rec["aws"]["throttled"], attempts);
}
