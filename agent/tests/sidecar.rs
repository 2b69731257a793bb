//! `sidecar`: writes once, marks itself ready, then swaps in new versions
//! after `sidekey rotate` within two refreshes, whole sets only, and exits
//! 0 on SIGTERM.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{agent_bin, tmpfs_dir, Kind, World};
use sidekey_agent::files;

const PAD: usize = 512;

fn value(key: &str, version: u32) -> String {
    format!("{key}-v{version:04}-{}", "p".repeat(PAD))
}

fn version_of(v: &str) -> u32 {
    v.split('-').nth(1).expect("version part")[1..]
        .parse()
        .expect("version")
}

fn rotate(w: &mut World, key: &str, version: u32) {
    let v = value(key, version);
    w.secret(v.as_bytes());
    let file = w.dir.path().join(format!("{key}.value"));
    std::fs::write(&file, &v).expect("value file");
    let path = file.display().to_string();
    w.cli(&["rotate", "dev", "api", key, "--from-file", &path], b"");
}

/// Reads A and B through one resolution of `..data`.
fn read_set(dir: &Path) -> Option<(String, String)> {
    let generation = std::fs::read_link(dir.join("..data")).ok()?;
    let a = std::fs::read_to_string(dir.join(&generation).join("A")).ok()?;
    let b = std::fs::read_to_string(dir.join(&generation).join("B")).ok()?;
    Some((a, b))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sidecar_swaps_rotations_in_whole_within_two_refreshes() {
    let Some(tmp) = tmpfs_dir() else { return };
    let dir = tmp.path().to_owned();
    let mut w = World::new(Kind::Ssm);
    for key in ["A", "B"] {
        let v = value(key, 1);
        w.put("dev", "api", key, v.as_bytes());
    }
    let env = w.agent_env("dev", "api", "");
    let stdout = w.dir.path().join("sidecar.out");
    let stderr = w.dir.path().join("sidecar.err");
    let mut child = Command::new(agent_bin())
        .args(["sidecar", "--refresh", "250ms", "--dir"])
        .arg(&dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("stdout file"))
        .stderr(File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("sidecar");

    wait_for("the ready marker", || files::is_ready(&dir));
    assert_eq!(
        read_set(&dir),
        Some((value("A", 1), value("B", 1))),
        "the first set"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("A")).expect("A"),
        value("A", 1)
    );
    assert_eq!(w.proxy().count("Decrypt"), 1);

    // A rotation shows within two refreshes (counted as the by-path calls
    // the sidecar starts after the rotation, one per refresh here).
    rotate(&mut w, "A", 2);
    let walks_before = w.proxy().count("GetParametersByPath");
    wait_for("the rotated value", || {
        std::fs::read_to_string(dir.join("A")).is_ok_and(|a| a == value("A", 2))
    });
    let refreshes = w.proxy().count("GetParametersByPath") - walks_before;
    assert!(refreshes <= 2, "the change took {refreshes} refreshes");

    // Many rotations of A then B while a reader loops over the files: every
    // set it reads is one the sidecar published whole.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<BTreeSet<(u32, u32)>>> = Arc::default();
    let reader = {
        let (dir, stop, seen) = (dir.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some((a, b)) = read_set(&dir) {
                    assert_eq!(a.len(), value("A", 1).len(), "a partial value");
                    assert_eq!(b.len(), value("B", 1).len(), "a partial value");
                    seen.lock()
                        .expect("lock")
                        .insert((version_of(&a), version_of(&b)));
                    reads += 1;
                }
            }
            reads
        })
    };
    rotate(&mut w, "B", 2);
    for version in 3..=8 {
        rotate(&mut w, "A", version);
        rotate(&mut w, "B", version);
    }
    wait_for("the last rotation", || {
        read_set(&dir) == Some((value("A", 8), value("B", 8)))
    });
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");

    // Unchanged values are never decrypted again; a rotation reuses the
    // service's data key, so the sidecar made one KMS call in all.
    assert_eq!(w.proxy().count("Decrypt"), 1);

    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = child.wait().expect("sidecar exit");
    assert_eq!(status.code(), Some(0), "SIGTERM ends the sidecar with 0");

    // Every published set is one audit record (outcome success, versions).
    let mut published: BTreeSet<(u32, u32)> = BTreeSet::new();
    for rec in w.audit_lines() {
        assert_eq!(rec["outcome"], "success", "{rec}");
        assert_eq!(rec["mode"], "sidecar");
        let versions: BTreeMap<String, u32> = rec["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["var"].as_str().expect("var").to_owned(),
                    u32::try_from(p["version"].as_u64().expect("version")).expect("small"),
                )
            })
            .collect();
        published.insert((versions["A"], versions["B"]));
    }
    let seen = seen.lock().expect("lock").clone();
    eprintln!("{reads} reads saw {seen:?}; published {published:?}");
    assert!(
        seen.is_subset(&published),
        "a reader saw a set that was never published whole: {:?}",
        seen.difference(&published).collect::<Vec<_>>()
    );
    assert!(published.contains(&(8, 8)));
    w.watch("sidecar stdout", &std::fs::read(&stdout).expect("stdout"));
    w.watch("sidecar stderr", &std::fs::read(&stderr).expect("stderr"));
}
