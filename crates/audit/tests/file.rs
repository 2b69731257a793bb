//! Appending to a shared file under a lock, and verifying files.

use std::io::Write;
use std::path::Path;

use sidekey_audit::{
    append_to_file, line_hash, read_records, verify_file, AuditError, Component, Event, Outcome,
    SecretRef, VerifyError, TAIL_WINDOW,
};

fn event(name: &str, n: usize) -> Event {
    let mut e = Event::new(name);
    e.environment = Some("dev-alice".to_owned());
    e.actor = Some(format!("worker-{n}"));
    e.secrets = vec![SecretRef::new("api", "TOKEN", Some(n as u64))];
    e
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn four_threads_append_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::thread::scope(|s| {
        for t in 0..4 {
            let path = &path;
            s.spawn(move || {
                for i in 0..25 {
                    append_to_file(path, Component::Cli, event("put", t * 100 + i)).unwrap();
                }
            });
        }
    });
    let summary = verify_file(&path).unwrap();
    assert_eq!(summary.records, 100);
    let all = lines(&path);
    assert_eq!(all.len(), 100);
    assert_eq!(summary.last_hash, line_hash(&all[99]));
    let records = read_records(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let mut actors: Vec<_> = records.iter().map(|r| r.actor.clone().unwrap()).collect();
    actors.sort();
    actors.dedup();
    assert_eq!(actors.len(), 100, "every event written once");
}

#[test]
fn appending_resumes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    for i in 0..3 {
        let r = append_to_file(&path, Component::Cli, event("put", i)).unwrap();
        assert_eq!(r.seq, i as u64 + 1);
    }
    for i in 3..5 {
        let r = append_to_file(&path, Component::Agent, event("fetch", i)).unwrap();
        assert_eq!(r.seq, i as u64 + 1);
    }
    assert_eq!(verify_file(&path).unwrap().records, 5);
    let records = read_records(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(records[4].component, Component::Agent);
    assert_eq!(records[0].outcome, Outcome::Success);
}

#[cfg(unix)]
#[test]
fn a_new_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    append_to_file(&path, Component::Cli, event("put", 0)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_long_last_line_within_the_window_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    append_to_file(&path, Component::Cli, event("put", 0)).unwrap();
    // Grow the line to exactly TAIL_WINDOW bytes.
    let base = append_to_file(&path, Component::Cli, event("put", 1)).unwrap();
    let len = base.to_line().unwrap().len() + ",\"pad\":\"\"".len();
    let mut e = event("put", 2);
    e.extra.insert(
        "pad".to_owned(),
        "p".repeat(TAIL_WINDOW as usize - len).into(),
    );
    let r = append_to_file(&path, Component::Cli, e).unwrap();
    assert_eq!(r.to_line().unwrap().len() as u64, TAIL_WINDOW);
    append_to_file(&path, Component::Cli, event("put", 3)).unwrap();
    assert_eq!(verify_file(&path).unwrap().records, 4);

    // One byte more, and lines of 100 KiB and 300 KiB (several windows):
    // the next append still finds the last line and continues the chain.
    for (i, pad) in [
        TAIL_WINDOW as usize - len + 1,
        100 * 1024,
        300 * 1024 + 7,
        2 * TAIL_WINDOW as usize,
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event("put", 10 + i);
        e.extra.insert("pad".to_owned(), "p".repeat(pad).into());
        append_to_file(&path, Component::Cli, e).unwrap();
        let r = append_to_file(&path, Component::Cli, event("put", 20 + i)).unwrap();
        assert_eq!(r.seq, 6 + 2 * i as u64);
    }
    assert_eq!(verify_file(&path).unwrap().records, 12);
}

#[test]
fn a_file_whose_only_line_is_long_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut e = event("put", 0);
    e.extra
        .insert("pad".to_owned(), "p".repeat(100 * 1024).into());
    append_to_file(&path, Component::Cli, e).unwrap();
    let r = append_to_file(&path, Component::Injector, event("review", 1)).unwrap();
    assert_eq!(r.seq, 2);
    let summary = verify_file(&path).unwrap();
    assert_eq!(summary.records, 2);
}

#[test]
fn a_broken_tail_is_refused_not_forked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    append_to_file(&path, Component::Cli, event("put", 0)).unwrap();

    // An interrupted write: no trailing newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"ts\":\"2026")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = append_to_file(&path, Component::Cli, event("put", 1)).unwrap_err();
    assert!(matches!(err, AuditError::Tail { .. }), "{err}");
    assert!(
        err.to_string().contains("does not end with a newline"),
        "{err}"
    );
    assert!(err.to_string().contains("audit.log"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");

    // A last line that is not a record.
    std::fs::write(&path, "password=s3cr3t\n").unwrap();
    let err = append_to_file(&path, Component::Cli, event("put", 1)).unwrap_err();
    assert!(
        err.to_string().contains("not a valid audit record"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn an_unopenable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("audit.log");
    let err = append_to_file(&path, Component::Cli, event("put", 0)).unwrap_err();
    assert!(matches!(err, AuditError::Open { .. }));
    assert!(
        err.to_string().starts_with("cannot open audit log "),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());

    let err = verify_file(&path).unwrap_err();
    assert!(matches!(err, VerifyError::Open { .. }));
    assert_eq!(err.line(), None);
}
