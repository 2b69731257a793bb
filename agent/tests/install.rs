//! `install DIR`: the init container's copy of the agent into a shared
//! volume: the same bytes, mode 0555, in place atomically.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{agent_bin, os, spawn};

#[test]
fn install_copies_this_binary_with_mode_0555() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = spawn(
        &agent_bin(),
        &[os("install"), dir.path().as_os_str().to_owned()],
        &[],
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let installed = dir.path().join("sidekey-agent");
    assert_eq!(
        std::fs::read(&installed).expect("installed"),
        std::fs::read(agent_bin()).expect("original")
    );
    let mode = std::fs::metadata(&installed)
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o555);
    // Nothing else is left behind, and the copy runs.
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    let ran = spawn(&installed, &[os("--version")], &[]);
    assert_eq!(ran.status, 0);
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("sidekey-agent "));

    // Again over the first copy (a restarted init container).
    let ran = spawn(
        &agent_bin(),
        &[os("install"), dir.path().as_os_str().to_owned()],
        &[],
    );
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());

    let missing = dir.path().join("missing");
    let ran = spawn(
        &agent_bin(),
        &[os("install"), missing.as_os_str().to_owned()],
        &[],
    );
    assert_eq!(ran.status, 73);
    assert!(
        ran.stderr_str().starts_with("sidekey-agent: cannot create"),
        "{}",
        ran.stderr_str()
    );
}
