//! `sidekey audit --outcome retried`: the agent starts that AWS throttled
//! or that retried calls, read from the `aws` counts of their records.

use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use sidekey_audit::{ChainWriter, Component, Event, Outcome};

fn start(w: &mut ChainWriter<Vec<u8>>, pod: &str, aws: Option<serde_json::Value>, ok: bool) {
    let mut e = Event::new("fetch");
    e.environment = Some("pr-7".to_owned());
    e.pod = Some(pod.to_owned());
    e.outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if let Some(aws) = aws {
        e.extra.insert("aws".to_owned(), aws);
    }
    let at = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    w.write_at(e, at).expect("write record");
}

fn audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run sidekey");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn outcome_retried_keeps_the_throttled_starts_whatever_their_outcome() {
    let mut w = ChainWriter::new(Component::Agent, Vec::new());
    let counts = |throttled: u64, retries: u64| {
        Some(
            serde_json::json!({"calls": 2 + retries, "ssm": 1 + retries, "kms": 1,
            "throttled": throttled, "retries": retries}),
        )
    };
    start(&mut w, "web-calm", counts(0, 0), true);
    start(&mut w, "web-retried", counts(3, 3), true);
    start(&mut w, "web-gave-up", counts(9, 8), false);
    start(&mut w, "web-old-agent", None, true);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.jsonl");
    std::fs::write(&file, w.into_inner()).expect("write audit file");
    let file = file.display().to_string();

    let pods = |stdout: &str| -> Vec<String> {
        ["web-calm", "web-retried", "web-gave-up", "web-old-agent"]
            .into_iter()
            .filter(|p| stdout.contains(p))
            .map(str::to_owned)
            .collect()
    };
    let (status, stdout, stderr) = audit(&["audit", &file, "--outcome", "retried"]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(pods(&stdout), ["web-retried", "web-gave-up"], "{stdout}");

    let (status, stdout, stderr) = audit(&["audit", &file, "--outcome", "success"]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        pods(&stdout),
        ["web-calm", "web-retried", "web-old-agent"],
        "{stdout}"
    );

    let (status, _, stderr) = audit(&["audit", &file, "--outcome", "slow"]);
    assert_eq!(status, 2, "{stderr}");
    assert!(
        stderr.contains("--outcome \"slow\": use success, denied, failure, skipped or retried"),
        "{stderr}"
    );
}
