//! `init` on a real tmpfs: the right bytes, modes and formats; anything but
//! tmpfs or ramfs is refused; a whole set is swapped in at once.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{is_root, os, tmpfs_dir, Kind, World};
use sidekey_agent::files::{self, AtomicDir, Format};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

fn init(w: &mut World, dir: &Path, extra: &[&str], env: &[(String, String)]) -> common::Ran {
    let mut args = vec![os("init"), os("--dir"), dir.as_os_str().to_owned()];
    args.extend(extra.iter().map(|a| os(a)));
    w.agent(&args, env, false)
}

fn setup(w: &mut World) {
    w.put("dev", "api", "DB_PASSWORD", b"db-pass \"quoted\"\nline2");
    w.put("dev", "api", "BINARY", b"\x00\xffbinary-bytes\x01");
    w.put("dev", "web", "TOKEN", "tökén-value-✓".as_bytes());
}

#[test]
fn per_key_files_hold_the_exact_bytes_with_modes_0400_and_0500() {
    let Some(tmp) = tmpfs_dir() else { return };
    let mut w = World::new(Kind::Ssm);
    setup(&mut w);
    let env = w.agent_env("dev", "api,web", "ALIAS=web/TOKEN");
    let ran = init(&mut w, tmp.path(), &[], &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let dir = tmp.path();
    let expected: BTreeMap<&str, &[u8]> = [
        ("ALIAS", "tökén-value-✓".as_bytes()),
        ("BINARY", b"\x00\xffbinary-bytes\x01".as_slice()),
        ("DB_PASSWORD", b"db-pass \"quoted\"\nline2".as_slice()),
        ("TOKEN", "tökén-value-✓".as_bytes()),
    ]
    .into_iter()
    .collect();
    for (name, bytes) in &expected {
        assert_eq!(
            std::fs::read(dir.join(name)).expect("read"),
            *bytes,
            "{name}"
        );
        let link = std::fs::read_link(dir.join(name)).expect("a symlink");
        assert_eq!(link, Path::new("..data").join(name));
        assert_eq!(mode(&dir.join("..data").join(name)), 0o400, "{name}");
    }
    let generation = std::fs::read_link(dir.join("..data")).expect("..data");
    assert!(generation.to_string_lossy().starts_with(".."));
    assert_eq!(mode(&dir.join(&generation)), 0o500);
    let listed: Vec<String> = std::fs::read_dir(dir.join("..data"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    assert!(files::is_ready(dir));
    assert_eq!(w.audit_lines()[0]["mode"], "init");
    assert_eq!(w.audit_lines()[0]["outcome"], "success");

    // `ready` is the startup probe.
    let ready = w.agent(
        &[os("ready"), os("--dir"), dir.as_os_str().to_owned()],
        &env,
        false,
    );
    assert_eq!(ready.status, 0);
    let not_yet = tmpfs_dir().expect("tmpfs");
    let ready = w.agent(
        &[
            os("ready"),
            os("--dir"),
            not_yet.path().as_os_str().to_owned(),
        ],
        &env,
        false,
    );
    assert_eq!(ready.status, 1);

    // Again, with a key gone: the set is replaced whole, the stale name and
    // the old generation are removed.
    let env = w.agent_env("dev", "api,web", "");
    let ran = init(&mut w, dir, &[], &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    assert!(std::fs::symlink_metadata(dir.join("ALIAS")).is_err());
    assert!(!dir.join(&generation).exists());
    let hidden: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".."))
        .collect();
    assert_eq!(hidden.len(), 3, "{hidden:?}"); // ..data, ..ready, one generation
}

#[test]
fn dotenv_and_json_formats() {
    let Some(tmp) = tmpfs_dir() else { return };
    let mut w = World::new(Kind::Local);
    w.put(
        "dev",
        "api",
        "DB_PASSWORD",
        b"db-pass \"quoted\"\nline2\\end",
    );
    w.put("dev", "api", "PLAIN", b"plain-value-123");
    let env = w.agent_env("dev", "api", "");

    let dotenv_dir = tmp.path().join("dotenv");
    std::fs::create_dir(&dotenv_dir).expect("mkdir");
    let ran = init(&mut w, &dotenv_dir, &["--format", "dotenv"], &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let text = std::fs::read(dotenv_dir.join("secrets.env")).expect("dotenv");
    // Single quotes: literal in a shell and in every dotenv reader.
    assert_eq!(
        text,
        b"DB_PASSWORD='db-pass \"quoted\"\nline2\\end'\nPLAIN='plain-value-123'\n"
    );
    assert_eq!(mode(&dotenv_dir.join("..data/secrets.env")), 0o400);
    // Differential: the CLI's own dotenv reader (`sidekey import`) reads
    // the agent's file back to the very bytes that were stored.
    w.cli(&["import", "dev-copy", "api", "--dotenv", "-"], &text);
    for (key, value) in [
        ("DB_PASSWORD", &b"db-pass \"quoted\"\nline2\\end"[..]),
        ("PLAIN", b"plain-value-123"),
    ] {
        let got = w.cli(&["get", "dev-copy", "api", key, "--reveal"], b"");
        assert_eq!(got.stdout, value, "{key}");
    }

    let json_dir = tmp.path().join("json");
    std::fs::create_dir(&json_dir).expect("mkdir");
    let ran = init(&mut w, &json_dir, &["--format", "json"], &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let json: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(json_dir.join("secrets.json")).expect("json"))
            .expect("valid JSON");
    assert_eq!(json["DB_PASSWORD"], "db-pass \"quoted\"\nline2\\end");
    assert_eq!(json["PLAIN"], "plain-value-123");
    assert_eq!(json.len(), 2);

    // A value that is not text cannot go into a text format.
    w.put("dev", "bin", "RAW", b"\xff\xfe-not-utf8-bytes");
    let env = w.agent_env("dev", "bin", "");
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir(&bad_dir).expect("mkdir");
    let ran = init(&mut w, &bad_dir, &["--format", "json"], &env);
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    assert!(ran.stderr_str().contains("RAW is not valid UTF-8"));

    // A value that no dotenv quoting carries inertly is refused, named by
    // its parameter and the rule; nothing is written.
    w.put("dev", "mixed", "MIXED", b"it's $(touch pwned) mixed");
    let env = w.agent_env("dev", "mixed", "");
    let mixed_dir = tmp.path().join("mixed");
    std::fs::create_dir(&mixed_dir).expect("mkdir");
    let ran = init(&mut w, &mixed_dir, &["--format", "dotenv"], &env);
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    assert!(
        ran.stderr_str()
            .contains("MIXED cannot be written as dotenv"),
        "{}",
        ran.stderr_str()
    );
    assert!(!mixed_dir.join("secrets.env").exists());
    assert!(!files::is_ready(&bad_dir));
}

#[test]
fn a_group_gets_read_access_0440_and_0550() {
    let Some(tmp) = tmpfs_dir() else { return };
    if !is_root() {
        sidekey_test_support::skip("chown to another group needs root");
        return;
    }
    let mut w = World::new(Kind::Local);
    w.put("dev", "api", "TOKEN", b"group-readable-token");
    let env = w.agent_env("dev", "api", "");
    let ran = init(&mut w, tmp.path(), &["--group", "4242"], &env);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let file = tmp.path().join("..data/TOKEN");
    assert_eq!(mode(&file), 0o440);
    assert_eq!(std::fs::metadata(&file).expect("meta").gid(), 4242);
    let generation = tmp
        .path()
        .join(std::fs::read_link(tmp.path().join("..data")).expect("link"));
    assert_eq!(mode(&generation), 0o550);
    assert_eq!(std::fs::metadata(&generation).expect("meta").gid(), 4242);
}

#[test]
fn a_directory_not_on_tmpfs_is_refused_before_any_fetch() {
    let mut w = World::new(Kind::Ssm);
    w.put("dev", "api", "TOKEN", b"never-on-disk-token");
    // Under the target directory: on the build machine's disk.
    let disk = tempfile::Builder::new()
        .prefix("agent-not-tmpfs-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    if files::check_memory_fs(disk.path()).is_ok() {
        eprintln!("skipped: the target directory is itself on a memory filesystem");
        return;
    }
    w.proxy().reset_counts();
    let env = w.agent_env("dev", "api", "");
    let ran = init(&mut w, disk.path(), &[], &env);
    assert_eq!(ran.status, 64, "{}", ran.stderr_str());
    let err = ran.stderr_str();
    assert!(
        err.contains(&format!(
            "--dir {}: the directory is on ",
            disk.path().display()
        )) && err.contains("not tmpfs or ramfs"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(disk.path()).expect("list").count(), 0);
    assert_eq!(w.proxy().total_for_service("AmazonSSM"), 0);
}

/// Many swaps while readers loop: a reader that opens `..data/` once per
/// round reads a whole set of one generation every time, and the JSON file
/// is always a whole document of one generation.
#[test]
fn readers_never_see_a_partial_or_mixed_set_during_swaps() {
    let Some(tmp) = tmpfs_dir() else { return };
    let keys = ["ALPHA", "BRAVO", "CHARLIE", "DELTA"];
    let value = |key: &str, g: u32| format!("{key}:{g:06}:{}", "x".repeat(3000));
    let render = |g: u32, format: Format| {
        let mut rendered: files::Rendered = Vec::new();
        match format {
            Format::PerKey => {
                for k in keys {
                    rendered.push((
                        k.to_owned(),
                        zeroize::Zeroizing::new(value(k, g).into_bytes()),
                    ));
                }
            }
            _ => {
                let doc: BTreeMap<&str, String> = keys.iter().map(|k| (*k, value(k, g))).collect();
                rendered.push((
                    "secrets.json".to_owned(),
                    zeroize::Zeroizing::new(serde_json::to_vec(&doc).expect("json")),
                ));
            }
        }
        rendered
    };
    for format in [Format::PerKey, Format::Json] {
        let root = tmp.path().join(format!("{format:?}"));
        std::fs::create_dir(&root).expect("mkdir");
        let mut dir = AtomicDir::open(&root, None).expect("open");
        dir.write(&render(0, format)).expect("first set");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let root = root.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut whole, mut vanished) = (0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    let values: std::io::Result<Vec<(String, String)>> = match format {
                        Format::PerKey => std::fs::read_link(root.join("..data")).and_then(|g| {
                            keys.iter()
                                .map(|k| {
                                    std::fs::read_to_string(root.join(&g).join(k))
                                        .map(|v| ((*k).to_owned(), v))
                                })
                                .collect()
                        }),
                        _ => std::fs::read(root.join("secrets.json")).map(|b| {
                            let doc: BTreeMap<String, String> =
                                serde_json::from_slice(&b).expect("a whole JSON document");
                            doc.into_iter().collect()
                        }),
                    };
                    let values = match values {
                        Ok(v) => v,
                        // The generation was removed between readlink and
                        // open: nothing was read, try again.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            vanished += 1;
                            continue;
                        }
                        Err(e) => panic!("read: {e}"),
                    };
                    assert_eq!(values.len(), keys.len(), "a partial set");
                    let generation: u32 = values[0]
                        .1
                        .split(':')
                        .nth(1)
                        .expect("generation")
                        .parse()
                        .expect("number");
                    for (k, v) in &values {
                        assert!(
                            *v == value(k, generation),
                            "a mixed or partial set: {k} is not of generation {generation}"
                        );
                    }
                    whole += 1;
                }
                (whole, vanished)
            })
        };
        for g in 1..=300 {
            dir.write(&render(g, format)).expect("swap");
        }
        stop.store(true, Ordering::Relaxed);
        let (whole, vanished) = reader.join().expect("reader");
        eprintln!("{format:?}: {whole} whole sets read, {vanished} retries, 300 swaps");
        assert!(whole > 0);
    }
}

/// Whoever else can write the directory points `..data` at a path outside
/// it: the agent replaces the link and removes nothing but its own
/// generations (it used to remove whatever `..data` named).
#[test]
fn a_foreign_data_link_is_never_followed_when_the_old_set_is_removed() {
    let Some(tmp) = tmpfs_dir() else { return };
    let mut w = World::new(Kind::Local);
    w.put("dev", "api", "TOKEN", b"token-value-for-the-swap");
    let env = w.agent_env("dev", "api", "");
    let dir = tmp.path().join("secrets");
    std::fs::create_dir(&dir).expect("mkdir");
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).expect("mkdir");
    std::fs::write(victim.join("keep"), b"must survive").expect("write");
    for target in ["../victim", "..1.2.3.4/../../victim"] {
        let link = dir.join("..data");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink");
        let ran = init(&mut w, &dir, &[], &env);
        assert_eq!(ran.status, 0, "{target}: {}", ran.stderr_str());
        assert_eq!(
            std::fs::read(victim.join("keep")).expect("the victim survives"),
            b"must survive",
            "{target}"
        );
        let now = std::fs::read_link(&link).expect("..data");
        assert!(
            now.to_str()
                .is_some_and(|t| t.starts_with("..") && !t.contains('/')),
            "{now:?}"
        );
        assert_eq!(
            std::fs::read(dir.join("TOKEN")).expect("read"),
            b"token-value-for-the-swap"
        );
    }
}
