//! What only SSM + KMS can show: KMS call counts, values bound to their
//! names, throttling, native SecureStrings, unreachable endpoints.

mod common;

use common::{runtime, Kind, World};
use sidekey_test_support::{create_kms_key, sdk_config, Fault, FaultRule, Moto};

#[test]
fn ten_keys_written_then_read_cost_at_most_two_kms_calls() {
    let mut w = World::new(Kind::Ssm);
    let mut doc = String::new();
    for i in 0..10 {
        let value = format!("value-number-{i}-of-ten");
        w.secret(value.as_bytes());
        doc.push_str(&format!("KEY_{i}=\"{value}\"\n"));
    }
    w.proxy().reset_counts();
    w.ok(&["import", "prod", "api", "--dotenv", "-"], doc.as_bytes());
    let exported = w.sk_values(&["export", "prod", "api"], b"");
    assert_eq!(exported.status, 0, "{}", exported.stderr_str());
    assert_eq!(exported.stdout_str().lines().count(), 10);
    let kms = w.proxy().total_for_service("TrentService");
    let counts = w.proxy().counts();
    eprintln!("calls for 10 writes + 1 export: {counts:?}");
    assert!(kms <= 2, "{kms} KMS calls: {counts:?}");
    assert_eq!(w.proxy().count("GenerateDataKey"), 1);
    assert_eq!(w.proxy().count("Decrypt"), 1);
    assert_eq!(w.proxy().count("PutParameter"), 10);
    // 10 keys in pages of 10 (moto may add an empty last page).
    assert!(w.proxy().count("GetParametersByPath") <= 3, "{counts:?}");

    // A later single write reuses the service's data key: one Decrypt, no GenerateDataKey.
    w.proxy().reset_counts();
    w.put("prod", "api", "KEY_10", b"value-number-10-late");
    assert_eq!(w.proxy().count("GenerateDataKey"), 0);
    assert_eq!(w.proxy().count("Decrypt"), 1);
}

#[test]
fn a_value_copied_to_another_name_does_not_decrypt() {
    let mut w = World::new(Kind::Ssm);
    w.put(
        "staging",
        "api",
        "DB_PASSWORD",
        b"staging-database-password",
    );
    // Put something legitimate in the target service so its data key exists.
    w.put("prod", "api", "OTHER", b"unrelated-prod-value");
    let rt = runtime();
    let ssm = rt
        .block_on(async { aws_sdk_ssm::Client::new(&sdk_config(Moto::shared().endpoint()).await) });
    let source = format!("/{}/staging/api/DB_PASSWORD", w.prefix);
    let raw = rt
        .block_on(ssm.get_parameter().name(&source).send())
        .expect("raw read")
        .parameter()
        .and_then(|p| p.value())
        .expect("value")
        .to_owned();
    assert!(raw.starts_with("sk2."));
    for (env, service, key) in [
        ("prod", "api", "DB_PASSWORD"),
        ("staging", "web", "DB_PASSWORD"),
        ("staging", "api", "OTHER_NAME"),
    ] {
        let target = format!("/{}/{env}/{service}/{key}", w.prefix);
        rt.block_on(
            ssm.put_parameter()
                .name(&target)
                .value(&raw)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send(),
        )
        .expect("raw copy");
        let out = w.reveal(env, service, key, &[]);
        assert_eq!(out.status, 1, "a copy at {target} decrypted");
        assert!(out.stdout.is_empty());
        let err = out.stderr_str();
        assert!(err.contains(&format!("cannot decrypt {target}")), "{err}");
        // A different service or environment: KMS refuses the data key. A
        // different key name: the envelope's own authentication fails.
        assert!(
            err.contains("InvalidCiphertextException") || err.contains("authentication failed"),
            "{err}"
        );
    }
}

#[test]
fn throttling_is_retried_and_a_stuck_throttle_fails_with_its_code() {
    let mut w = World::new(Kind::Ssm);
    w.put("dev", "api", "TOKEN", b"token-value-under-throttle");
    w.proxy().reset_counts();
    w.proxy()
        .inject(FaultRule::on("GetParameter", Fault::Throttle).times(2));
    let out = w.reveal("dev", "api", "TOKEN", &[]);
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_eq!(out.stdout, b"token-value-under-throttle");
    assert_eq!(w.proxy().count("GetParameter"), 3);

    w.proxy().clear_faults();
    w.proxy()
        .inject(FaultRule::on("GetParameter", Fault::Throttle));
    w.proxy().reset_counts();
    let out = w.run_with(
        &["get", "dev", "api", "TOKEN", "--reveal"],
        b"",
        &[("SIDEKEY_TIMEOUT", "2s")],
        true,
    );
    assert_eq!(out.status, 1);
    let err = out.stderr_str();
    assert!(
        err.contains("ThrottlingException") && err.contains("gave up after"),
        "{err}"
    );
    assert!(w.proxy().count("GetParameter") >= 3);

    // Throttled writes are retried as well.
    w.proxy().clear_faults();
    w.proxy()
        .inject(FaultRule::on("PutParameter", Fault::Throttle).times(2));
    w.put("dev", "api", "SECOND", b"second-value-under-throttle");
    w.proxy()
        .inject(FaultRule::on("PutParameter", Fault::ServerError).times(1));
    w.put("dev", "api", "THIRD", b"third-value-after-a-500");
}

#[test]
fn unknown_kms_key_and_unreachable_endpoint_fail_cleanly() {
    let mut w = World::new(Kind::Ssm);
    let out = w.run_with(
        &["put", "dev", "api", "K"],
        b"value-for-an-unknown-key",
        &[("SIDEKEY_KMS_KEY", "alias/does-not-exist")],
        false,
    );
    w.secret(b"value-for-an-unknown-key");
    assert_eq!(out.status, 1);
    let err = out.stderr_str();
    assert!(
        err.contains("kms:GenerateDataKey") && err.contains("NotFoundException"),
        "{err}"
    );
    assert_eq!(w.proxy().count("PutParameter"), 0, "nothing may be written");

    // A closed port: connection refused until the deadline.
    let out = w.run_with(
        &["put", "dev", "api", "K"],
        b"value-for-an-unknown-key",
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("SIDEKEY_TIMEOUT", "2s"),
        ],
        false,
    );
    assert_eq!(out.status, 1);
    let err = out.stderr_str();
    assert!(err.contains("ConnectionError"), "{err}");
    let list = w.ok(&["list", "dev", "--output", "json"], b"");
    assert_eq!(list.stdout_str().trim(), "[]");

    // A key that exists but is not the one a value was sealed under.
    w.put("dev", "api", "SEALED", b"sealed-under-the-first-key");
    let other = runtime()
        .block_on(create_kms_key(Moto::shared().endpoint()))
        .expect("key");
    let out = w.run_with(
        &["get", "dev", "api", "SEALED", "--reveal"],
        b"",
        &[("SIDEKEY_KMS_KEY", &other)],
        true,
    );
    assert_eq!(out.status, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str().contains("cannot decrypt"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn native_securestrings_are_read_as_they_are_and_written_for_other_tools() {
    let mut w = World::new(Kind::Ssm);
    let rt = runtime();
    let ssm = rt
        .block_on(async { aws_sdk_ssm::Client::new(&sdk_config(Moto::shared().endpoint()).await) });
    // Written by another tool (as aws-cli or chamber would).
    let name = format!("/{}/dev/legacy/API_KEY", w.prefix);
    w.secret(b"written-by-another-tool");
    rt.block_on(
        ssm.put_parameter()
            .name(&name)
            .value("written-by-another-tool")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send(),
    )
    .expect("native put");
    assert_eq!(
        w.reveal("dev", "legacy", "API_KEY", &[]).stdout,
        b"written-by-another-tool"
    );
    let meta = w.ok(&["get", "dev", "legacy", "API_KEY"], b"").stdout_str();
    assert!(meta.contains("native"), "{meta}");

    // sidekey put --native: readable by other tools with decryption.
    w.secret(b"native-value-from-sidekey");
    w.ok(
        &["put", "dev", "legacy", "NATIVE", "--native"],
        b"native-value-from-sidekey",
    );
    let raw = rt
        .block_on(
            ssm.get_parameter()
                .name(format!("/{}/dev/legacy/NATIVE", w.prefix))
                .with_decryption(true)
                .send(),
        )
        .expect("read");
    let p = raw.parameter().expect("parameter");
    assert_eq!(
        p.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert_eq!(p.value(), Some("native-value-from-sidekey"));
    // exec merges both kinds.
    let out = w.run_with(
        &[
            "exec",
            "dev",
            "legacy",
            "--",
            "sh",
            "-c",
            "printf %s \"$API_KEY/$NATIVE\"",
        ],
        b"",
        &[],
        true,
    );
    assert_eq!(
        out.stdout_str(),
        "written-by-another-tool/native-value-from-sidekey"
    );
}
