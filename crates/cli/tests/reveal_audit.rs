//! A value is shown only once its reveal is on the audit trail: when the
//! audit record cannot be written, `get --reveal` and `export` print
//! nothing and fail.

mod common;

use common::{Kind, World};

#[test]
fn no_audit_record_no_value() {
    let mut w = World::new(Kind::Local);
    w.put("dev", "web", "TOKEN", b"reveal-me-only-if-audited");
    // The audit log's path is a directory: appending to it fails.
    let blocked = w.dir.path().join("audit-is-a-directory");
    std::fs::create_dir(&blocked).expect("mkdir");
    let blocked = blocked.display().to_string();
    for args in [
        vec!["get", "dev", "web", "TOKEN", "--reveal"],
        vec!["export", "dev", "web"],
        vec!["export", "dev", "web", "--format", "json"],
    ] {
        let out = w.run_with(&args, b"", &[("SIDEKEY_AUDIT_LOG", &blocked)], false);
        assert_ne!(out.status, 0, "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            out.stdout_str()
        );
        assert!(
            out.stderr_str().contains("cannot write the audit record"),
            "{args:?}: {}",
            out.stderr_str()
        );
    }
    // With the audit log writable, the same commands print, and each is
    // recorded.
    let before = w.audit_lines().len();
    let out = w.reveal("dev", "web", "TOKEN", &[]);
    assert_eq!(out.stdout, b"reveal-me-only-if-audited");
    let lines = w.audit_lines();
    assert_eq!(lines.len(), before + 1);
    assert_eq!(lines[before]["event"], "reveal");
    w.assert_no_leaks();
}
