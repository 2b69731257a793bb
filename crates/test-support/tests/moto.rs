//! `Moto` against the real moto server: start, reset, ports, and that the child really dies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::ParameterType;
use sidekey_test_support::{ssm_client, Moto};

/// `GET path` with `Connection: close`; the status code, or `None` if nothing answers.
fn http_status(endpoint: &str, path: &str) -> Option<u16> {
    let authority = endpoint.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(authority).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn port(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// Whether the process is gone (or a zombie nobody reaped yet, which serves nothing).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn external_moto() -> bool {
    std::env::var_os("SIDEKEY_MOTO_URL").is_some()
}

#[tokio::test]
async fn start_serves_ssm_and_reset_wipes_it() {
    let moto = Moto::start().unwrap();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(http_status(moto.endpoint(), "/moto-api/"), Some(200));

    let ssm = ssm_client(moto.endpoint()).await;
    ssm.put_parameter()
        .name("/test-support/reset")
        .value("v1")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
    let got = ssm
        .get_parameter()
        .name("/test-support/reset")
        .send()
        .await
        .unwrap();
    assert_eq!(got.parameter().and_then(|p| p.value()), Some("v1"));

    moto.reset().unwrap();
    let err = ssm
        .get_parameter()
        .name("/test-support/reset")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ParameterNotFound"));
}

#[test]
fn second_start_gets_another_port_and_drop_kills_the_child() {
    if external_moto() {
        eprintln!("SIDEKEY_MOTO_URL is set: no child to check");
        return;
    }
    let first = Moto::start().unwrap();
    let second = Moto::start().unwrap();
    assert_ne!(port(first.endpoint()), port(second.endpoint()));
    let log = first.log_path().unwrap().to_path_buf();
    assert!(log.is_file(), "log {} exists while running", log.display());

    let endpoint = first.endpoint().to_owned();
    let pid = first.pid().unwrap();
    drop(first);
    // Drop waits for the child, so this holds at once, not eventually.
    assert!(process_gone(pid), "moto pid {pid} still running after drop");
    assert!(
        TcpStream::connect(endpoint.trim_start_matches("http://")).is_err(),
        "port of a dropped Moto still answers"
    );
    assert!(!log.exists(), "log directory removed after drop");
    assert_eq!(http_status(second.endpoint(), "/moto-api/"), Some(200));
}

#[test]
fn shared_is_started_once() {
    let a = Moto::shared();
    let b = Moto::shared();
    assert!(std::ptr::eq(a, b));
    assert_eq!(http_status(a.endpoint(), "/moto-api/"), Some(200));
}

/// Not a test on its own: run as a child process by
/// `shared_moto_dies_with_the_test_process`. Prints the shared server's pid, endpoint and log,
/// then lets the process exit without dropping anything.
#[test]
fn helper_start_shared_and_exit() {
    if std::env::var_os("SIDEKEY_TEST_SUPPORT_HELPER").is_none() {
        return;
    }
    let moto = Moto::shared();
    println!(
        "HELPER pid={} endpoint={} log={}",
        moto.pid().unwrap(),
        moto.endpoint(),
        moto.log_path().unwrap().display()
    );
}

#[test]
fn shared_moto_dies_with_the_test_process() {
    if external_moto() {
        eprintln!("SIDEKEY_MOTO_URL is set: no child to check");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_start_shared_and_exit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SIDEKEY_TEST_SUPPORT_HELPER", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("HELPER ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no HELPER line in {stdout}"));
    let field = |name: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    let pid: u32 = field("pid=").parse().unwrap();
    let endpoint = field("endpoint=");
    let log_dir = PathBuf::from(field("log=")).parent().unwrap().to_path_buf();

    // The helper process has exited: its lifeline closed, the wrapper kills moto.
    wait_until("moto of an exited test process to stop", || {
        process_gone(pid) && http_status(&endpoint, "/moto-api/").is_none()
    });
    wait_until("the shared server's log directory to be removed", || {
        !log_dir.exists()
    });
}

/// Not a test on its own: run as a child process by `start_errors_say_how_to_install_moto`.
#[test]
fn helper_print_start_error() {
    if std::env::var_os("SIDEKEY_TEST_SUPPORT_HELPER").is_none() {
        return;
    }
    match Moto::start() {
        Ok(moto) => println!("HELPER started {} pid={:?}", moto.endpoint(), moto.pid()),
        Err(e) => println!("HELPER error {}", format!("{e:#}").replace('\n', " | ")),
    }
}

/// Runs `helper_print_start_error` in a child test process with `var`=`value`; its HELPER line.
fn start_in_child(var: &str, value: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_print_start_error", "--nocapture"])
        .env("SIDEKEY_TEST_SUPPORT_HELPER", "1")
        .env_remove("SIDEKEY_MOTO_URL")
        .env_remove("SIDEKEY_MOTO_SERVER")
        .env(var, value)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.split_once("HELPER ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no HELPER line in {stdout}"))
}

fn start_error_with(moto_server: &str) -> String {
    let line = start_in_child("SIDEKEY_MOTO_SERVER", moto_server);
    line.strip_prefix("error ")
        .unwrap_or_else(|| panic!("expected an error, got {line}"))
        .to_owned()
}

#[test]
fn moto_url_attaches_to_a_running_server() {
    let shared = Moto::shared().endpoint();
    let line = start_in_child("SIDEKEY_MOTO_URL", &format!("{shared}/"));
    assert_eq!(line, format!("started {shared} pid=None"));
}

#[test]
fn start_errors_say_how_to_install_moto() {
    let missing = start_error_with("/nonexistent/moto_server");
    assert!(missing.contains("/nonexistent/moto_server"), "{missing}");
    assert!(
        missing.contains("python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5'"),
        "{missing}"
    );

    // A program that exits at once: the error names its log, which is kept.
    let exits = start_error_with("/bin/false");
    assert!(exits.contains("exited early"), "{exits}");
    assert!(exits.contains("pip install"), "{exits}");
    let log = exits
        .split("log: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no log path in {exits}"));
    assert!(Path::new(log).is_file(), "log {log} kept for reading");
    std::fs::remove_dir_all(Path::new(log).parent().unwrap()).unwrap();
}
