//! Fail closed: a secret that cannot be had ends the agent with exit 69 and
//! one line naming the environment, the parameter and the AWS error code,
//! and the app never runs (it would create a marker file). Configuration
//! errors exit 64 naming the variable. Throttling that stops is retried.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{os, probe_bin, runtime, Kind, Ran, World};
use rstest::rstest;
use sidekey_test_support::{sdk_config, Fault, FaultRule, Moto};

struct App {
    _dir: tempfile::TempDir,
    marker: PathBuf,
}

impl App {
    fn new() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("app-ran");
        App { _dir: dir, marker }
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            os("exec"),
            os("--"),
            probe_bin().into_os_string(),
            os("0"),
            self.marker.clone().into_os_string(),
        ]
    }

    fn ran(&self) -> bool {
        self.marker.exists()
    }
}

/// The one `sidekey-agent:` line of a failed run: the last line of stderr.
fn error_line(ran: &Ran) -> String {
    let err = ran.stderr_str();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("sidekey-agent:"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line expected: {err}");
    assert_eq!(err.lines().last(), Some(lines[0]), "{err}");
    lines[0].to_owned()
}

fn assert_fails_closed(w: &mut World, env: &[(String, String)], expected_line: &str) -> Ran {
    let app = App::new();
    let ran = w.agent(&app.args(), env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.starts_with(expected_line),
        "{line:?} does not start with {expected_line:?}"
    );
    assert!(!app.ran(), "the app ran without its secrets");
    let audit = w.audit_lines();
    let last = audit.last().expect("a failure is audited");
    assert_eq!(last["outcome"], "failure");
    assert_eq!(last["reason"], line.trim_start_matches("sidekey-agent: "));
    ran
}

#[test]
fn a_missing_parameter_or_service_fails_with_its_name_and_code() {
    let mut w = World::new(Kind::Ssm);
    w.put("staging", "api", "TOKEN", b"staging-token-value");
    let p = w.prefix.clone();
    let env = w.agent_env("staging", "api", "PW=api/DB_PASSWORD");
    assert_fails_closed(
        &mut w,
        &env,
        &format!(
            "sidekey-agent: environment staging: /{p}/staging/api/DB_PASSWORD: ParameterNotFound"
        ),
    );
    let env = w.agent_env("staging", "api,payments", "");
    assert_fails_closed(
        &mut w,
        &env,
        &format!("sidekey-agent: environment staging: /{p}/staging/payments/: ParameterNotFound"),
    );
    let env = w.agent_env("staging", "", "T=api/TOKEN@4");
    assert_fails_closed(
        &mut w,
        &env,
        &format!(
            "sidekey-agent: environment staging: /{p}/staging/api/TOKEN:4: ParameterVersionNotFound"
        ),
    );
}

#[test]
fn on_missing_skip_starts_without_the_key_and_audits_it() {
    let mut w = World::new(Kind::Ssm);
    w.put("staging", "api", "TOKEN", b"staging-token-value");
    let mut env = w.agent_env("staging", "api,payments", "PW=api/DB_PASSWORD");
    env.push(("SIDEKEY_ON_MISSING".into(), "skip".into()));
    let app = App::new();
    let ran = w.agent(&app.args(), &env, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    assert!(app.ran());
    let probe = common::Probe::parse(&ran.stdout);
    assert!(probe.env.contains_key(b"TOKEN".as_slice()));
    assert!(!probe.env.contains_key(b"PW".as_slice()));
    let rec = &w.audit_lines()[0];
    assert_eq!(rec["outcome"], "skipped");
    let skipped: Vec<String> = rec["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| format!("{} {}", s["parameter"], s["code"]))
        .collect();
    let p = &w.prefix;
    assert_eq!(
        skipped,
        [
            format!("\"/{p}/staging/payments/\" \"ParameterNotFound\""),
            format!("\"/{p}/staging/api/DB_PASSWORD\" \"ParameterNotFound\""),
        ]
    );
}

#[test]
fn a_kms_refusal_fails_with_its_code() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "DB_PASSWORD", b"prod-db-password-value");
    let p = w.prefix.clone();
    w.proxy().inject(FaultRule::on(
        "Decrypt",
        Fault::Error {
            status: 400,
            type_name: "AccessDeniedException".into(),
            message: "User is not authorized to perform kms:Decrypt".into(),
        },
    ));
    let env = w.agent_env("prod", "api", "");
    assert_fails_closed(
        &mut w,
        &env,
        &format!(
            "sidekey-agent: environment prod: /{p}/prod/api/DB_PASSWORD: AccessDeniedException"
        ),
    );
    assert_eq!(w.proxy().count("Decrypt"), 1, "a refusal is not retried");
}

#[test]
fn a_value_copied_to_another_environment_is_refused_by_kms() {
    let mut w = World::new(Kind::Ssm);
    w.put("staging", "api", "DB_PASSWORD", b"staging-password-value");
    let p = w.prefix.clone();
    let rt = runtime();
    let ssm = rt
        .block_on(async { aws_sdk_ssm::Client::new(&sdk_config(Moto::shared().endpoint()).await) });
    let raw = rt
        .block_on(
            ssm.get_parameter()
                .name(format!("/{p}/staging/api/DB_PASSWORD"))
                .send(),
        )
        .expect("raw read")
        .parameter()
        .and_then(|x| x.value())
        .expect("value")
        .to_owned();
    rt.block_on(
        ssm.put_parameter()
            .name(format!("/{p}/prod/api/DB_PASSWORD"))
            .value(raw)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send(),
    )
    .expect("raw copy");
    let env = w.agent_env("prod", "api", "");
    assert_fails_closed(
        &mut w,
        &env,
        &format!(
            "sidekey-agent: environment prod: /{p}/prod/api/DB_PASSWORD: InvalidCiphertextException"
        ),
    );
}

#[test]
fn throttling_that_never_stops_fails_at_the_deadline() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "TOKEN", b"prod-token-throttled");
    let p = w.prefix.clone();
    w.proxy()
        .inject(FaultRule::on("GetParametersByPath", Fault::Throttle));
    let mut env = w.agent_env("prod", "api", "");
    env.retain(|(k, _)| k != "SIDEKEY_TIMEOUT");
    env.push(("SIDEKEY_TIMEOUT".into(), "2s".into()));
    let ran = assert_fails_closed(
        &mut w,
        &env,
        &format!("sidekey-agent: environment prod: /{p}/prod/api/: ThrottlingException"),
    );
    assert!(
        error_line(&ran).contains("gave up after"),
        "{}",
        error_line(&ran)
    );
    assert!(w.proxy().count("GetParametersByPath") >= 3);
}

#[test]
fn throttling_on_the_first_two_calls_is_retried_to_success() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "TOKEN", b"prod-token-after-throttle");
    w.proxy()
        .inject(FaultRule::on("GetParametersByPath", Fault::Throttle).times(2));
    w.proxy()
        .inject(FaultRule::on("Decrypt", Fault::Throttle).times(2));
    let env = w.agent_env("prod", "api", "");
    let app = App::new();
    let ran = w.agent(&app.args(), &env, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    assert!(app.ran());
    let probe = common::Probe::parse(&ran.stdout);
    assert_eq!(
        probe.env.get(b"TOKEN".as_slice()).map(Vec::as_slice),
        Some(b"prod-token-after-throttle".as_slice())
    );
    assert_eq!(w.proxy().count("GetParametersByPath"), 3);
    assert_eq!(w.proxy().count("Decrypt"), 3);
}

#[test]
fn moto_stopped_mid_run_fails_closed() {
    let moto = Moto::start().expect("a moto server of this test's own");
    let mut w = World::on_moto(moto.endpoint());
    w.put("prod", "api", "TOKEN", b"prod-token-moto-dies");
    // Hold the agent in its KMS call, then take the whole AWS side away.
    w.proxy().inject(FaultRule::on(
        "Decrypt",
        Fault::Delay(Duration::from_secs(30)),
    ));
    let mut env = w.agent_env("prod", "api", "");
    env.retain(|(k, _)| k != "SIDEKEY_TIMEOUT");
    env.push(("SIDEKEY_TIMEOUT".into(), "4s".into()));
    let app = App::new();
    let args = app.args();
    let agent = std::thread::spawn({
        let env = env.clone();
        move || common::spawn(&common::agent_bin(), &args, &env)
    });
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while w.proxy().count("Decrypt") == 0 {
        assert!(
            std::time::Instant::now() < give_up,
            "the agent never called KMS"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.proxy().count("GetParametersByPath"), 1);
    drop(moto);
    w.proxy = None; // stops the proxy and closes the agent's connection
    let ran = agent.join().expect("agent thread");
    w.watch("stderr of the agent", &ran.stderr);
    w.watch("stdout of the agent", &ran.stdout);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    let p = &w.prefix;
    let expected = format!("sidekey-agent: environment prod: /{p}/prod/api/TOKEN: ");
    assert!(line.starts_with(&expected), "{line}");
    assert!(
        ["ConnectionError", "ResponseError", "Timeout"]
            .iter()
            .any(|code| line[expected.len()..].starts_with(code)),
        "{line}"
    );
    assert!(!app.ran());
}

#[rstest]
#[case::no_environment(&[("SIDEKEY_ENVIRONMENT", "")], "sidekey-agent: SIDEKEY_ENVIRONMENT: is required")]
#[case::bad_environment(&[("SIDEKEY_ENVIRONMENT", "Staging_1")], "sidekey-agent: SIDEKEY_ENVIRONMENT: invalid environment")]
#[case::nothing_to_fetch(&[("SIDEKEY_SERVICES", " ")], "sidekey-agent: SIDEKEY_SERVICES: names no service")]
#[case::bad_service(&[("SIDEKEY_SERVICES", "api,,web")], "sidekey-agent: SIDEKEY_SERVICES: ")]
#[case::pick_leaves_the_environment(&[("SIDEKEY_SECRETS", "X=../prod/api/KEY")], "sidekey-agent: SIDEKEY_SECRETS: invalid pick")]
#[case::bad_inherit(&[("SIDEKEY_INHERIT", "UPPER")], "sidekey-agent: SIDEKEY_INHERIT: ")]
#[case::bad_on_missing(&[("SIDEKEY_ON_MISSING", "ignore")], "sidekey-agent: SIDEKEY_ON_MISSING: \"ignore\" is neither")]
#[case::bad_timeout(&[("SIDEKEY_TIMEOUT", "soon")], "sidekey-agent: SIDEKEY_TIMEOUT: invalid timeout")]
#[case::bad_store(&[("SIDEKEY_STORE", "s3")], "sidekey-agent: SIDEKEY_STORE: unknown store")]
#[case::bad_audit(&[("SIDEKEY_AUDIT", "syslog")], "sidekey-agent: SIDEKEY_AUDIT: \"syslog\" is not")]
#[case::bad_prefix(&[("SIDEKEY_PREFIX", "/x")], "sidekey-agent: SIDEKEY_PREFIX: ")]
#[case::bad_log_format(&[("SIDEKEY_LOG_FORMAT", "xml")], "sidekey-agent: SIDEKEY_LOG_FORMAT: ")]
#[case::missing_ca_file(&[("SIDEKEY_STORE", "ssm"), ("SIDEKEY_CA_FILE", "/nonexistent/ca.pem")], "sidekey-agent: SIDEKEY_CA_FILE: cannot read /nonexistent/ca.pem")]
fn configuration_errors_exit_64_naming_the_variable(
    #[case] set: &[(&str, &str)],
    #[case] expected: &str,
) {
    let mut w = World::new(Kind::Local);
    let mut env = w.agent_env("dev", "api", "");
    for (k, v) in set {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let app = App::new();
    let ran = w.agent(&app.args(), &env, false);
    assert_eq!(ran.status, 64, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(line.starts_with(expected), "{line:?} vs {expected:?}");
    assert!(!app.ran());
}

#[test]
fn usage_errors_exit_64() {
    let mut w = World::new(Kind::Local);
    let env = w.agent_env("dev", "api", "");
    for args in [
        vec![os("frobnicate")],
        vec![os("exec")],
        vec![os("init")],
        vec![
            os("sidecar"),
            os("--dir"),
            os("/dev/shm"),
            os("--refresh"),
            os("0s"),
        ],
    ] {
        let ran = w.agent(&args, &env, false);
        assert_eq!(ran.status, 64, "{args:?}: {}", ran.stderr_str());
        error_line(&ran);
    }
    let ran = w.agent(&[os("--help")], &env, false);
    assert_eq!(ran.status, 0);
}
