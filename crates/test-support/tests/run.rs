//! `run`, `aws_env` and `assert_no_secret`.

use std::path::Path;
use std::time::Duration;

use sidekey_test_support::{assert_no_secret, aws_env, run, run_with_timeout};

const SH: &str = "/bin/sh";

#[test]
fn captures_exit_code_stdout_and_stderr() {
    let out = run(
        Path::new(SH),
        &["-c", "echo out; echo err >&2; exit 3"],
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
}

#[test]
fn feeds_stdin_without_deadlocking_on_large_output() {
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = run(
        Path::new(SH),
        &["-c", "cat; cat >&2 </dev/null"],
        &[],
        &input,
    )
    .unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input);
}

#[test]
fn signal_death_is_minus_one() {
    let out = run(Path::new(SH), &["-c", "kill -9 $$"], &[], b"").unwrap();
    assert_eq!(out.status, -1);
}

#[test]
fn environment_is_clean() {
    let env = vec![("SIDEKEY_X".to_owned(), "1".to_owned())];
    let out = run(Path::new("/usr/bin/env"), &[], &env, b"").unwrap();
    assert_eq!(out.status, 0);
    let mut names: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["HOME", "LANG", "PATH", "SIDEKEY_X"]);
    assert!(out.stdout_str().contains("LANG=C\n"));
    let home_line = out
        .stdout_str()
        .lines()
        .find(|l| l.starts_with("HOME="))
        .unwrap()
        .to_owned();
    assert_ne!(Some(&home_line[5..]), std::env::var("HOME").ok().as_deref());
    // The temporary HOME is gone afterwards.
    assert!(!Path::new(&home_line[5..]).exists());
}

#[test]
fn home_is_a_writable_directory() {
    let out = run(
        Path::new(SH),
        &["-c", "touch \"$HOME/x\" && test -d \"$HOME\""],
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(out.status, 0, "{}", out.stderr_str());
}

#[test]
fn timeout_kills_and_fails() {
    let err = run_with_timeout(
        Path::new(SH),
        &["-c", "exec sleep 30"],
        &[],
        b"",
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err:#}");
}

#[test]
fn missing_program_is_an_error() {
    assert!(run(Path::new("/nonexistent/sidekey-bin"), &[], &[], b"").is_err());
}

#[test]
fn aws_env_points_children_at_the_endpoint_only() {
    let env = aws_env("http://127.0.0.1:5000");
    let get = |k: &str| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("AWS_EC2_METADATA_DISABLED"), Some("true"));
    assert_eq!(get("AWS_REGION"), Some("us-east-1"));
    assert_eq!(get("AWS_DEFAULT_REGION"), Some("us-east-1"));
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("testing"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("testing"));
    assert_eq!(get("AWS_ENDPOINT_URL"), Some("http://127.0.0.1:5000"));
    assert_eq!(get("AWS_CONFIG_FILE"), Some("/dev/null"));
    assert_eq!(get("AWS_SHARED_CREDENTIALS_FILE"), Some("/dev/null"));

    let out = run(
        Path::new(SH),
        &[
            "-c",
            "echo \"$AWS_ENDPOINT_URL $AWS_EC2_METADATA_DISABLED\"",
        ],
        &env,
        b"",
    )
    .unwrap();
    assert_eq!(out.stdout_str(), "http://127.0.0.1:5000 true\n");
}

#[test]
fn assert_no_secret_passes_when_absent() {
    assert_no_secret("log", b"nothing to see", &[b"s3cr3t", b"hunter2"]);
    assert_no_secret("empty haystack", b"", &[b"s3cr3t"]);
}

#[test]
fn assert_no_secret_names_the_index_never_the_value() {
    let panic = std::panic::catch_unwind(|| {
        assert_no_secret("stderr", b"oops: hunter2 leaked", &[b"s3cr3t", b"hunter2"]);
    })
    .unwrap_err();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| panic.downcast_ref::<&str>().unwrap().to_string());
    assert!(message.contains("secret #1"), "{message}");
    assert!(message.contains("stderr"), "{message}");
    assert!(!message.contains("hunter2"), "message leaks the secret");
}
