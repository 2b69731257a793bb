//! With `SIDEKEY_LOG=trace`, no value appears in the agent's stdout, stderr
//! or audit records: envelopes, native SecureStrings (whose plaintext is in
//! SSM's responses) and failures alike. Every other test ends with the same
//! check; this one exercises each mode and output on purpose.

mod common;

use common::{os, tmpfs_dir, Kind, World};
use sidekey_test_support::{Fault, FaultRule};

#[test]
fn trace_logs_and_audit_records_never_hold_a_value() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "ENVELOPED", b"enveloped-value-9f3a");
    w.secret(b"native-securestring-77c1");
    w.cli(
        &["put", "prod", "api", "NATIVE", "--native"],
        b"native-securestring-77c1",
    );
    w.put("prod", "web", "OTHER", b"other-value-51d0");

    // exec, audit on stdout (the app prints nothing).
    let mut env = w.agent_env("prod", "api,web", "PICK=web/OTHER@1");
    env.retain(|(k, _)| k != "SIDEKEY_AUDIT");
    env.push(("SIDEKEY_AUDIT".into(), "stdout".into()));
    let ran = w.agent(&[os("exec"), os("--"), os("/bin/true")], &env, false);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let stderr = ran.stderr_str();
    assert!(
        stderr.contains("DEBUG") && stderr.contains("GetParametersByPath"),
        "trace logging was not on: {stderr}"
    );
    let audit: serde_json::Value =
        serde_json::from_slice(ran.stdout.split(|b| *b == b'\n').next().expect("line"))
            .expect("an audit record on stdout");
    assert_eq!(audit["outcome"], "success");

    // init and the JSON format, audit on stderr with the logs.
    if let Some(tmp) = tmpfs_dir() {
        let mut env = env.clone();
        env.retain(|(k, _)| k != "SIDEKEY_AUDIT");
        env.push(("SIDEKEY_AUDIT".into(), "stderr".into()));
        env.push(("SIDEKEY_LOG_FORMAT".into(), "json".into()));
        let args = [
            os("init"),
            os("--dir"),
            tmp.path().as_os_str().to_owned(),
            os("--format"),
            os("json"),
        ];
        let ran = w.agent(&args, &env, false);
        assert_eq!(ran.status, 0, "{}", ran.stderr_str());
        assert!(ran.stderr_str().contains("\"event\":\"fetch\""));
    }

    // Failures: a KMS refusal and a throttled end, to the audit file.
    let env = w.agent_env("prod", "api,web", "");
    w.proxy()
        .inject(FaultRule::on("Decrypt", Fault::ServerError).times(1));
    w.proxy().inject(FaultRule::on(
        "Decrypt",
        Fault::Error {
            status: 400,
            type_name: "AccessDeniedException".into(),
            message: "denied".into(),
        },
    ));
    let ran = w.agent(&[os("exec"), os("--"), os("/bin/true")], &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    w.proxy().clear_faults();
    w.proxy()
        .inject(FaultRule::on("GetParametersByPath", Fault::Throttle));
    let mut env = env;
    env.push(("SIDEKEY_TIMEOUT".into(), "1s".into()));
    let ran = w.agent(&[os("exec"), os("--"), os("/bin/true")], &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    assert_eq!(w.audit_lines().len(), 2);
    w.assert_no_leaks();
}
