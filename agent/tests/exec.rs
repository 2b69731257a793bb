//! `exec`: the app gets exactly its secrets, byte for byte, no `SIDEKEY_*`
//! variable, the agent's PID and arguments, and its exit code is the
//! agent's.

mod common;

use std::collections::BTreeMap;

use common::{os, os_bytes, probe_bin, Kind, Probe, World};

fn exec_args(extra: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let mut args = vec![os("exec"), os("--"), probe_bin().into_os_string()];
    args.extend_from_slice(extra);
    args
}

#[test]
fn exec_gives_the_app_exactly_its_secrets_its_pid_and_its_arguments() {
    let mut w = World::new(Kind::Ssm);
    // Values that break naive handling: quotes, newlines, '=', UTF-8,
    // bytes that are not UTF-8, leading and trailing spaces.
    let binary: &[u8] = b"\xff\xfe raw-binary-value \x01\x7f";
    w.put("staging", "api", "BINARY", binary);
    w.put("staging", "api", "MULTI", b"line one\nline \"two\"\n");
    w.put("staging", "api", "EQUALS", b"a=b=c  ");
    w.put("staging", "api", "UNICODE", "pässwörd-✓".as_bytes());
    w.put("staging", "api", "SHADOWED", b"from-staging-api");
    w.put("staging", "web", "SHADOWED", b"from-staging-web");
    w.put("pr-7", "api", "OWN", b"pr-7-only-value");
    w.put("pr-7", "web", "HOME", b"secret-home-value");

    let mut env = w.agent_env("pr-7", "api,web", "PICKED=api/MULTI");
    env.retain(|(k, _)| k != "SIDEKEY_NAMESPACE");
    env.push(("SIDEKEY_NAMESPACE".into(), "pr-7".into()));
    env.push(("SIDEKEY_INHERIT".into(), "staging".into()));
    env.push(("UNRELATED".into(), "kept as is".into()));
    let args = exec_args(&[
        os("7"),
        os(""),
        os("--"),
        os("-x"),
        os("two words"),
        os_bytes(b"\xc3\x28 not utf-8"),
        os(""),
    ]);
    let ran = w.agent(&args, &env, true);
    assert_eq!(ran.status, 7, "the app's exit code: {}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe.pid, ran.pid,
        "the app must be the process the test started"
    );

    // Arguments byte for byte, argv[0] as given.
    let expected_args: Vec<Vec<u8>> = args[2..]
        .iter()
        .map(|a| a.as_encoded_bytes().to_vec())
        .collect();
    assert_eq!(probe.args, expected_args);

    // The environment: the agent's without SIDEKEY_*, plus the secrets (a
    // secret wins over an inherited variable of the same name).
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("SIDEKEY_"))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in [
        ("BINARY", binary),
        ("MULTI", b"line one\nline \"two\"\n".as_slice()),
        ("EQUALS", b"a=b=c  "),
        ("UNICODE", "pässwörd-✓".as_bytes()),
        ("SHADOWED", b"from-staging-web"),
        ("OWN", b"pr-7-only-value"),
        ("HOME", b"secret-home-value"),
        ("PICKED", b"line one\nline \"two\"\n"),
    ] {
        expected.insert(k.as_bytes().to_vec(), v.to_vec());
    }
    assert_eq!(probe.env, expected);
    assert!(probe.env.keys().all(|k| !k.starts_with(b"SIDEKEY_")));

    // One audit record, written before the exec, without values.
    let audit = w.audit_lines();
    assert_eq!(audit.len(), 1);
    let rec = &audit[0];
    assert_eq!(rec["component"], "agent");
    assert_eq!(rec["event"], "fetch");
    assert_eq!(rec["outcome"], "success");
    assert_eq!(rec["environment"], "pr-7");
    assert_eq!(rec["namespace"], "pr-7");
    assert_eq!(rec["pod"], "app-7d9f-x2");
    assert_eq!(rec["kms_key"], w.kms_key.as_str());
    assert!(rec["duration_ms"].is_u64());
    let secrets = rec["secrets"].as_array().expect("secrets");
    assert!(secrets
        .iter()
        .all(|s| s["version"] == 1 && s["service"].is_string()));
    let names: Vec<&str> = rec["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&format!("/{}/staging/web/SHADOWED", w.prefix).as_str()));
    assert!(names.contains(&format!("/{}/pr-7/web/HOME", w.prefix).as_str()));
}

#[test]
fn the_app_exit_code_and_a_missing_program() {
    let mut w = World::new(Kind::Local);
    w.put("dev", "api", "TOKEN", b"dev-token-value");
    let env = w.agent_env("dev", "api", "");
    for code in [0, 1, 42, 255] {
        let ran = w.agent(&exec_args(&[os(&code.to_string())]), &env, true);
        assert_eq!(ran.status, code, "{}", ran.stderr_str());
    }
    let ran = w.agent(
        &[os("exec"), os("--"), os("no-such-program-here")],
        &env,
        false,
    );
    assert_eq!(ran.status, 127);
    let err = ran.stderr_str();
    assert!(
        err.contains("no-such-program-here: not found in PATH /usr/local/bin:/usr/bin:/bin"),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("sidekey-agent:"))
            .count(),
        1
    );
}

#[test]
fn a_value_with_a_nul_byte_is_refused_naming_the_key() {
    let mut w = World::new(Kind::Local);
    w.put("dev", "api", "WITH_NUL", b"before\0after-nul-value");
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let env = w.agent_env("dev", "api", "");
    let ran = w.agent(
        &exec_args(&[os("0"), marker.clone().into_os_string()]),
        &env,
        false,
    );
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    assert!(ran.stderr_str().contains(&format!(
        "/{}/dev/api/WITH_NUL: the value of WITH_NUL contains a NUL byte",
        w.prefix
    )));
    assert!(!marker.exists(), "the app must not run");
    assert_eq!(w.audit_lines()[0]["outcome"], "failure");
}

#[test]
fn the_local_store_needs_its_master_key_to_exist() {
    let mut w = World::new(Kind::Local);
    let env = w.agent_env("dev", "api", "");
    let ran = w.agent(&exec_args(&[os("0")]), &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    assert!(
        ran.stderr_str().contains("no master key"),
        "{}",
        ran.stderr_str()
    );
    assert!(
        !w.store_dir().join("master.key").exists(),
        "the agent must not create a key"
    );
}

#[test]
fn picks_by_version_and_label_resolve_from_the_highest_layer_that_has_them() {
    let mut w = World::new(Kind::Local);
    w.secret(b"first-staging-value");
    w.cli(
        &["put", "staging", "api", "KEY", "--label", "stable"],
        b"first-staging-value",
    );
    w.put("staging", "api", "KEY", b"second-staging-value");
    w.put("pr-9", "web", "KEY", b"pr-9-web-value");
    let mut env = w.agent_env(
        "pr-9",
        "",
        "S=api/KEY@stable,V=api/KEY@2,L=api/KEY,W=web/KEY",
    );
    env.push(("SIDEKEY_INHERIT".into(), "staging".into()));
    let ran = w.agent(&exec_args(&[os("0")]), &env, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    let get = |k: &str| probe.env.get(k.as_bytes()).cloned().unwrap_or_default();
    assert_eq!(get("S"), b"first-staging-value");
    assert_eq!(get("V"), b"second-staging-value");
    assert_eq!(get("L"), b"second-staging-value");
    assert_eq!(get("W"), b"pr-9-web-value");
    assert!(!probe.env.contains_key(b"KEY".as_slice()), "picks only");
}
