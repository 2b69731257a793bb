//! The `sidekey` CLI end to end, one suite against both backends: the
//! embedded local store and SSM + KMS on moto (through the fault proxy).

mod common;

use common::{Kind, World};
use rstest::rstest;

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn put_get_rotate_history_list(#[case] kind: Kind) {
    let mut w = World::new(kind);
    let binary: Vec<u8> = (0u8..=255).rev().chain(0u8..=255).collect();
    let utf8 = "pässwörd ✓ \"quoted\" = # and a trailing newline\n".as_bytes();
    w.secret(&binary);
    let out = w.put("staging", "api", "BLOB", &binary);
    assert!(
        out.stdout_str().starts_with("staging/api/BLOB version "),
        "{}",
        out.stdout_str()
    );
    w.put("staging", "api", "DB_PASSWORD", utf8);

    let got = w.reveal("staging", "api", "BLOB", &[]);
    assert_eq!(got.status, 0, "{}", got.stderr_str());
    assert_eq!(got.stdout, binary);
    let got = w.reveal("staging", "api", "DB_PASSWORD", &[]);
    assert_eq!(got.stdout, utf8);

    // rotate adds a version; the old one stays readable.
    let new_value = b"second-value-of-the-password".to_vec();
    w.secret(&new_value);
    let out = w.ok(&["rotate", "staging", "api", "DB_PASSWORD"], &new_value);
    assert_eq!(out.stdout_str().trim(), "staging/api/DB_PASSWORD version 2");
    assert_eq!(
        w.reveal("staging", "api", "DB_PASSWORD", &[]).stdout,
        new_value
    );
    assert_eq!(
        w.reveal("staging", "api", "DB_PASSWORD", &["--version", "1"])
            .stdout,
        utf8
    );

    let history = w.ok(
        &[
            "history",
            "staging",
            "api",
            "DB_PASSWORD",
            "--output",
            "json",
        ],
        b"",
    );
    let rows: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["version"], (i + 1) as u64);
        assert!(
            row["modified"]
                .as_str()
                .is_some_and(|t| t.starts_with("20")),
            "{row}"
        );
        assert!(
            row["modified_by"].as_str().is_some_and(|u| !u.is_empty()),
            "{row}"
        );
    }
    let text = w
        .ok(&["history", "staging", "api", "DB_PASSWORD"], b"")
        .stdout_str();
    assert!(text.starts_with("VERSION"), "{text}");

    // list shows keys and versions, never values (checked by the leak scan).
    let list = w.ok(&["list", "staging"], b"").stdout_str();
    assert!(
        list.contains("api/DB_PASSWORD") && list.contains("api/BLOB"),
        "{list}"
    );
    let list = w.ok(&["list", "staging", "api", "--output", "json"], b"");
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(2));

    // get without --reveal prints metadata only.
    let meta = w
        .ok(&["get", "staging", "api", "DB_PASSWORD"], b"")
        .stdout_str();
    assert!(
        meta.contains("version 2") && meta.contains("envelope"),
        "{meta}"
    );

    // a label moves with --label and selects a version.
    let labelled = b"labelled-value-for-release".to_vec();
    w.secret(&labelled);
    w.ok(
        &["put", "staging", "api", "DB_PASSWORD", "--label", "release"],
        &labelled,
    );
    assert_eq!(
        w.reveal("staging", "api", "DB_PASSWORD", &["--label", "release"])
            .stdout,
        labelled
    );
    let missing = w.reveal("staging", "api", "DB_PASSWORD", &["--label", "nolabel"]);
    assert_eq!(missing.status, 1);
    assert!(
        missing.stderr_str().contains("ParameterVersionNotFound"),
        "{}",
        missing.stderr_str()
    );
}

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn every_write_is_audited_and_the_chain_verifies(#[case] kind: Kind) {
    let mut w = World::new(kind);
    w.put("dev", "api", "ONE", b"first-secret-value");
    w.put("dev", "api", "TWO", b"second-secret-value");
    w.ok(&["rotate", "dev", "api", "ONE", "--generate", "32"], b"");
    w.ok(&["delete", "dev", "api", "TWO"], b"");
    let lines = w.audit_lines();
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events, ["put", "put", "rotate", "delete"]);
    assert_eq!(lines[0]["secrets"][0]["key"], "ONE");
    assert_eq!(lines[0]["secrets"][0]["version"], 1);
    assert_eq!(lines[2]["secrets"][0]["version"], 2);
    assert_eq!(lines[0]["actor"], "tester");
    assert_eq!(lines[0]["component"], "cli");

    let audit = w.audit_path().display().to_string();
    let ok = w.ok(&["audit", "verify", &audit], b"");
    assert!(
        ok.stdout_str().contains("4 records, chain intact"),
        "{}",
        ok.stdout_str()
    );

    // The table and the filters.
    let table = w.ok(&["audit", &audit, "--key", "ONE"], b"").stdout_str();
    assert_eq!(table.lines().count(), 3, "{table}");

    // Removing or editing any line but the last is caught, naming the line.
    let original = std::fs::read_to_string(w.audit_path()).expect("audit");
    let lines: Vec<&str> = original.lines().collect();
    let broken = w.dir.path().join("broken.jsonl");
    let broken_arg = broken.display().to_string();
    for i in 0..lines.len() - 1 {
        let mut removed = lines.clone();
        removed.remove(i);
        std::fs::write(&broken, removed.join("\n") + "\n").expect("write");
        let out = w.sk(&["audit", "verify", &broken_arg], b"");
        assert_eq!(out.status, 1, "removing line {} went unnoticed", i + 1);
        assert!(
            out.stderr_str().contains(&format!("line {}", i + 1)),
            "{}",
            out.stderr_str()
        );

        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[i] = edited[i].replace("\"outcome\":\"success\"", "\"outcome\":\"failure\"");
        std::fs::write(&broken, edited.join("\n") + "\n").expect("write");
        let out = w.sk(&["audit", "verify", &broken_arg], b"");
        assert_eq!(out.status, 1, "editing line {} went unnoticed", i + 1);
        assert!(
            out.stderr_str().contains(&format!("line {}", i + 2)),
            "{}",
            out.stderr_str()
        );
    }
}

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn import_export_dotenv_round_trip(#[case] kind: Kind) {
    let mut w = World::new(kind);
    let values = [
        ("QUOTES", "say \"quoted\" twice"),
        ("APOSTROPHE", "it's here"),
        ("EQUALS", "a=b=c==d"),
        ("HASH", "value # not a comment"),
        ("NEWLINES", "line one\nline two\n\nend"),
        ("BACKSLASH", "C:\\path\\n"),
        ("UNICODE", "ünïcödé ✓ value"),
    ];
    let mut doc = String::from("# a comment\n\n");
    for (k, v) in values {
        w.secret(v.as_bytes());
        let mut line = Vec::new();
        line.extend_from_slice(k.as_bytes());
        line.extend_from_slice(b"=\"");
        for c in v.chars() {
            match c {
                '"' => line.extend_from_slice(b"\\\""),
                '\\' => line.extend_from_slice(b"\\\\"),
                '\n' => line.extend_from_slice(b"\\n"),
                c => line.extend_from_slice(c.to_string().as_bytes()),
            }
        }
        line.extend_from_slice(b"\"\n");
        doc.push_str(std::str::from_utf8(&line).expect("utf-8"));
    }
    let out = w.ok(&["import", "dev", "web", "--dotenv", "-"], doc.as_bytes());
    assert!(
        out.stdout_str().contains("7 secrets imported"),
        "{}",
        out.stdout_str()
    );
    for (k, v) in values {
        assert_eq!(w.reveal("dev", "web", k, &[]).stdout, v.as_bytes(), "{k}");
    }
    let exported = w.sk_values(&["export", "dev", "web"], b"");
    assert_eq!(exported.status, 0, "{}", exported.stderr_str());
    // Importing the export into another service gives the same values.
    let text = exported.stdout_str();
    w.ok(&["import", "dev", "web2", "--dotenv", "-"], text.as_bytes());
    for (k, v) in values {
        assert_eq!(w.reveal("dev", "web2", k, &[]).stdout, v.as_bytes(), "{k}");
    }
    let json = w.sk_values(&["export", "dev", "web", "--format", "json"], b"");
    let object: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    for (k, v) in values {
        assert_eq!(object[k], v);
    }
}

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn env_copy_destroy_and_rekey(#[case] kind: Kind) {
    let mut w = World::new(kind);
    w.put("staging", "api", "A_KEY", b"value-of-a-in-staging");
    w.put("staging", "worker", "B_KEY", b"value-of-b-in-staging");
    w.put("other", "api", "A_KEY", b"value-of-a-in-other");

    let out = w.ok(&["env", "copy", "staging", "pr-1"], b"");
    assert!(
        out.stdout_str().contains("2 secrets copied"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(
        w.reveal("pr-1", "api", "A_KEY", &[]).stdout,
        b"value-of-a-in-staging"
    );
    assert_eq!(
        w.reveal("pr-1", "worker", "B_KEY", &[]).stdout,
        b"value-of-b-in-staging"
    );
    // Copying again onto a non-empty environment needs --overwrite.
    let again = w.sk(&["env", "copy", "staging", "pr-1"], b"");
    assert_eq!(again.status, 1);
    assert!(
        again.stderr_str().contains("--overwrite"),
        "{}",
        again.stderr_str()
    );

    let envs = w.ok(&["env", "list"], b"").stdout_str();
    assert_eq!(
        envs.lines().collect::<Vec<_>>(),
        ["other", "pr-1", "staging"]
    );

    // destroy needs --yes, and removes that environment only.
    let refused = w.sk(&["env", "destroy", "pr-1"], b"");
    assert_eq!(refused.status, 2);
    w.ok(&["env", "destroy", "pr-1", "--yes"], b"");
    let envs = w.ok(&["env", "list"], b"").stdout_str();
    assert_eq!(envs.lines().collect::<Vec<_>>(), ["other", "staging"]);
    assert_eq!(
        w.reveal("other", "api", "A_KEY", &[]).stdout,
        b"value-of-a-in-other"
    );
    assert_eq!(
        w.reveal("staging", "api", "A_KEY", &[]).stdout,
        b"value-of-a-in-staging"
    );
    let gone = w.reveal("pr-1", "api", "A_KEY", &[]);
    assert_eq!(gone.status, 1);

    // rekey: every value gets a new version and still reads.
    let out = w.ok(&["rekey", "staging", "api"], b"");
    assert!(
        out.stdout_str().contains("1 values re-encrypted"),
        "{}",
        out.stdout_str()
    );
    let meta = w.ok(&["get", "staging", "api", "A_KEY"], b"").stdout_str();
    assert!(meta.contains("version 2"), "{meta}");
    assert_eq!(
        w.reveal("staging", "api", "A_KEY", &[]).stdout,
        b"value-of-a-in-staging"
    );
    assert_eq!(
        w.reveal("staging", "api", "A_KEY", &["--version", "1"])
            .stdout,
        b"value-of-a-in-staging"
    );
}

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn exec_hands_secrets_to_the_child_later_services_win(#[case] kind: Kind) {
    let mut w = World::new(kind);
    w.put("dev", "base", "SHARED", b"from-the-base-service");
    w.put("dev", "base", "ONLY_BASE", b"only-in-the-base-service");
    w.put("dev", "app", "SHARED", b"from-the-app-service");
    let out = w.run_with(
        &[
            "exec",
            "dev",
            "base,app",
            "--",
            "sh",
            "-c",
            "printf '%s|%s|%s' \"$SHARED\" \"$ONLY_BASE\" \"${SIDEKEY_PREFIX-none}\"",
        ],
        b"",
        &[],
        true,
    );
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_eq!(
        out.stdout_str(),
        "from-the-app-service|only-in-the-base-service|none"
    );
    // The child's exit status is sidekey's.
    let out = w.run_with(
        &["exec", "dev", "app", "--", "sh", "-c", "exit 7"],
        b"",
        &[],
        true,
    );
    assert_eq!(out.status, 7);
    let lines = w.audit_lines();
    assert!(lines.iter().any(|l| l["event"] == "exec"));
}

#[rstest]
#[case::local(Kind::Local)]
#[case::ssm(Kind::Ssm)]
fn bad_input_is_refused_and_nothing_is_written(#[case] kind: Kind) {
    let mut w = World::new(kind);
    for (args, needle) in [
        (vec!["put", "Staging", "api", "K"], "invalid environment"),
        (vec!["put", "staging", "API", "K"], "invalid service"),
        (vec!["put", "staging", "api", "1K"], "invalid key"),
        (vec!["put", "staging", "api", "K-EY"], "invalid key"),
        (vec!["put", "../x", "api", "K"], "invalid environment"),
        (
            vec!["put", "staging", "api", "K", "--label", "1abc"],
            "invalid label",
        ),
        (
            vec!["put", "staging", "api", "K", "--generate", "0"],
            "--generate",
        ),
        (
            vec!["get", "staging", "api", "K", "--version", "x"],
            "--version",
        ),
    ] {
        let out = w.sk(&args, b"value-for-a-bad-input");
        assert_eq!(out.status, 2, "{args:?}: {}", out.stderr_str());
        assert!(
            out.stderr_str().contains(needle),
            "{args:?}: {}",
            out.stderr_str()
        );
        assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.stderr_str());
    }
    let empty = w.sk(&["put", "staging", "api", "EMPTY"], b"");
    assert_eq!(empty.status, 1);
    assert!(
        empty.stderr_str().contains("empty"),
        "{}",
        empty.stderr_str()
    );
    let big = vec![b'x'; 9000];
    let big_out = w.sk(&["put", "staging", "api", "BIG"], &big);
    assert_eq!(big_out.status, 1);
    assert!(
        big_out.stderr_str().contains("too large") && big_out.stderr_str().contains("bytes fit"),
        "{}",
        big_out.stderr_str()
    );
    // A value just under the limit fits (the envelope adds its overhead).
    let fits = vec![b'y'; 5500];
    w.secret(&fits);
    w.ok(&["put", "staging", "api", "FITS"], &fits);
    assert_eq!(w.reveal("staging", "api", "FITS", &[]).stdout, fits);
    // Nothing half-written: only FITS exists.
    let list = w.ok(&["list", "staging", "--output", "json"], b"");
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let keys: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(keys, ["FITS"]);
    // rotate of a key that does not exist says to use put.
    let rot = w.sk(
        &["rotate", "staging", "api", "NOPE", "--generate", "8"],
        b"",
    );
    assert_eq!(rot.status, 1);
    assert!(
        rot.stderr_str().contains("sidekey put"),
        "{}",
        rot.stderr_str()
    );
    // a bad dotenv line names the line and writes nothing.
    let bad = w.sk(
        &["import", "staging", "web", "--dotenv", "-"],
        b"GOOD=value-one-ok\nnot a pair\n",
    );
    assert_eq!(bad.status, 2);
    assert!(bad.stderr_str().contains("line 2"), "{}", bad.stderr_str());
    let web = w.ok(&["list", "staging", "web", "--output", "json"], b"");
    assert_eq!(web.stdout_str().trim(), "[]");
}

#[test]
fn policy_is_limited_to_the_environment_and_passes_parliament() {
    let mut w = World::new(Kind::Local);
    let out = w.ok(
        &[
            "policy",
            "pr-42",
            "--inherit",
            "staging",
            "--account",
            "123456789012",
            "--region",
            "eu-west-1",
            "--kms-key-arn",
            KEY_ARN,
        ],
        b"",
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = doc.to_string();
    let p = w.prefix.clone();
    assert!(
        text.contains(&format!("parameter/{p}/pr-42/*"))
            && text.contains(&format!("parameter/{p}/staging/*")),
        "{text}"
    );
    // Only those two environments' paths are named.
    let resources = doc["Statement"][0]["Resource"].as_array().expect("array");
    assert_eq!(resources.len(), 2);
    assert_eq!(
        doc["Statement"][1]["Condition"]["StringEquals"]
            ["kms:EncryptionContext:sidekey:environment"],
        serde_json::json!(["pr-42", "staging"])
    );
    parliament(&out.stdout);

    let native = w.ok(
        &[
            "policy",
            "dev",
            "--native",
            "--account",
            "123456789012",
            "--kms-key-arn",
            KEY_ARN,
        ],
        b"",
    );
    parliament(&native.stdout);

    let pod = w.ok(
        &[
            "policy",
            "--pod-identity",
            "--inherit",
            "staging",
            "--account",
            "123456789012",
            "--kms-key-arn",
            KEY_ARN,
        ],
        b"",
    );
    let text = pod.stdout_str();
    assert!(
        text.contains(&format!(
            "parameter/{p}/${{aws:PrincipalTag/kubernetes-namespace}}/*"
        )),
        "{text}"
    );
    // parliament splits ARNs on ':' and so misreads the policy variable
    // `${aws:PrincipalTag/...}`; lint the same document with a concrete
    // namespace in its place.
    parliament(
        text.replace("${aws:PrincipalTag/kubernetes-namespace}", "team-a")
            .as_bytes(),
    );

    let bad = w.sk(
        &["policy", "dev", "--account", "12", "--kms-key-arn", KEY_ARN],
        b"",
    );
    assert_eq!(bad.status, 2);
}

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// Runs the parliament IAM linter: a clean policy prints nothing, exits 0.
fn parliament(policy: &[u8]) {
    let bin = std::env::var("SIDEKEY_PARLIAMENT")
        .unwrap_or_else(|_| format!("{}/../../.venv/bin/parliament", env!("CARGO_MANIFEST_DIR")));
    let policy = std::str::from_utf8(policy).expect("utf-8");
    let out = std::process::Command::new(&bin)
        .arg("--string")
        .arg(policy)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run parliament at {bin}: {e} (run scripts/test, which installs it)")
        });
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "parliament findings:\n{}{}\npolicy:\n{policy}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
