//! `sidekey audit FILE... --html OUT`: the review page is built from audit
//! records only, escapes everything a record file holds, flags a broken
//! chain, and works in a real browser (Debian's chromium through
//! playwright-core) without a network request.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{Kind, World};
use sidekey_audit::{ChainWriter, Component, Event, Outcome, SecretRef};

const ATTACK_REASON: &str = "<script>alert(1)</script> not allowed";
const ATTACK_POD: &str = "\"><img src=x onerror=alert(2)>";
const VALUE_1: &[u8] = b"first-value-9f3a1c";
const VALUE_2: &[u8] = b"rotated-value-5d7e2b";

fn event(
    name: &str,
    env: &str,
    pod: Option<&str>,
    actor: Option<&str>,
    version: u64,
    outcome: Outcome,
    reason: Option<&str>,
) -> Event {
    Event {
        event: name.to_owned(),
        environment: Some(env.to_owned()),
        namespace: Some("apps".to_owned()),
        pod: pod.map(str::to_owned),
        actor: actor.map(str::to_owned),
        secrets: vec![SecretRef::new("web", "TOKEN", Some(version))],
        outcome,
        reason: reason.map(str::to_owned),
        ..Event::default()
    }
}

fn write_log(path: &Path, component: Component, events: Vec<Event>) {
    let mut w = ChainWriter::new(component, Vec::new());
    let start = SystemTime::now();
    for (i, e) in events.into_iter().enumerate() {
        w.write_at(e, start + Duration::from_secs(60 * (i as u64 + 1)))
            .expect("record");
    }
    std::fs::write(path, w.into_inner()).expect("write log");
}

/// A world with real CLI records (put, rotate of dev/web/TOKEN), agent
/// fetches before and after the rotation, injector decisions (one denied,
/// with markup in its fields) and a tampered log; returns the page path.
fn review_page(w: &mut World) -> (PathBuf, String) {
    w.put("dev", "web", "TOKEN", VALUE_1);
    w.secret(VALUE_2);
    w.ok(&["rotate", "dev", "web", "TOKEN"], VALUE_2);
    assert_eq!(w.reveal("dev", "web", "TOKEN", &[]).stdout, VALUE_2);
    let dir = w.dir.path().to_owned();
    let agent = dir.join("agent.jsonl");
    write_log(
        &agent,
        Component::Agent,
        vec![
            event(
                "fetch",
                "dev",
                Some("web-old"),
                None,
                1,
                Outcome::Success,
                None,
            ),
            event(
                "fetch",
                "dev",
                Some("web-old"),
                None,
                1,
                Outcome::Success,
                None,
            ),
            event(
                "fetch",
                "dev",
                Some("web-new"),
                None,
                2,
                Outcome::Success,
                None,
            ),
            event(
                "fetch",
                "dev",
                Some("web-stale"),
                None,
                1,
                Outcome::Failure,
                Some("kms:Decrypt AccessDeniedException"),
            ),
        ],
    );
    let injector = dir.join("injector.jsonl");
    let user = "system:serviceaccount:kube-system:replicaset-controller";
    write_log(
        &injector,
        Component::Injector,
        vec![
            event(
                "review",
                "dev",
                Some("web-new"),
                Some(user),
                2,
                Outcome::Success,
                None,
            ),
            event(
                "review",
                "dev",
                Some(ATTACK_POD),
                Some("mallory"),
                2,
                Outcome::Denied,
                Some(ATTACK_REASON),
            ),
        ],
    );
    let tampered = dir.join("tampered.jsonl");
    write_log(
        &tampered,
        Component::Agent,
        (0..3)
            .map(|i| {
                let pod = format!("batch-{i}");
                event(
                    "fetch",
                    "staging",
                    Some(&pod),
                    None,
                    1,
                    Outcome::Success,
                    None,
                )
            })
            .collect(),
    );
    let text = std::fs::read_to_string(&tampered).expect("read");
    std::fs::write(&tampered, text.replacen("batch-1", "batch-X", 1)).expect("tamper");

    let page = dir.join("review.html");
    let files = [w.audit_path(), agent, injector, tampered];
    let mut args = vec!["audit".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.push("--html".to_owned());
    args.push(page.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.ok(&args, b"");
    assert!(
        out.stderr_str().contains("1 broken chain(s) flagged"),
        "{}",
        out.stderr_str()
    );
    let html = std::fs::read_to_string(&page).expect("page written");
    (page, html)
}

#[test]
fn the_page_is_escaped_self_contained_and_holds_no_value() {
    let mut w = World::new(Kind::Local);
    let (_, html) = review_page(&mut w);
    assert!(html.contains(
        "content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    ));
    // One script, the page's own; record markup arrives as text.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<img"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; not allowed"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    for external in ["<link", "<iframe", "src=\"http", "href=\"http", "url("] {
        assert!(!html.contains(external), "the page holds {external}");
    }
    // Chains: three intact, the tampered one broken at its edited line's
    // successor.
    assert_eq!(html.matches("chain intact").count(), 3);
    assert!(
        html.contains("CHAIN BROKEN, first broken line 3"),
        "no broken banner"
    );
    // Never a value.
    for value in [VALUE_1, VALUE_2] {
        let value = std::str::from_utf8(value).expect("utf-8");
        assert!(!html.contains(value), "the page holds a secret value");
    }
    // Writes by the real CLI, with who wrote them.
    assert!(html.contains("<td>2</td><td>rotate</td><td>tester</td>"));
    assert!(html.contains("<td>1</td><td>put</td><td>tester</td>"));
    // The CLI's read, by its actor; an injector review is not a fetch.
    assert!(html.contains("<td>reveal by tester</td>"));
    w.assert_no_leaks();
}

#[test]
fn a_bad_output_path_is_a_clear_error() {
    let mut w = World::new(Kind::Local);
    w.put("dev", "web", "TOKEN", VALUE_1);
    let audit = w.audit_path().display().to_string();
    let out = w.sk(&["audit", &audit, "--html", "/nonexistent-dir/x.html"], b"");
    assert_ne!(out.status, 0);
    assert!(
        out.stderr_str()
            .contains("cannot write /nonexistent-dir/x.html"),
        "{}",
        out.stderr_str()
    );
    w.assert_no_leaks();
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Opens the page in headless chromium and checks what a reviewer sees.
/// Screenshots go to target/tmp/audit-html/; with SIDEKEY_UPDATE_DOCS=1
/// the first also replaces docs/audit-page.png (the README's picture).
#[test]
fn a_reviewer_sees_it_in_a_real_browser() {
    let modules = repo().join(".venv/node/node_modules");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return sidekey_test_support::skip("no chromium (apt-get install chromium)");
    }
    if !modules.join("playwright-core/package.json").exists() {
        return sidekey_test_support::skip("no playwright-core in .venv/node (run scripts/venv)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        return sidekey_test_support::skip("no node");
    }
    let mut w = World::new(Kind::Local);
    let (page, _) = review_page(&mut w);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-html");
    std::fs::create_dir_all(&shots).expect("shots dir");
    let out = Command::new("node")
        .arg(repo().join("tests/browser/audit_page.mjs"))
        .arg(&page)
        .arg(&shots)
        .arg("web-new")
        .env("SIDEKEY_NODE_MODULES", &modules)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser driver failed: {stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("driver JSON");
    let strings = |k: &str| -> Vec<String> {
        seen[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} missing"))
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    // The tampered log's banner.
    let broken = strings("banners_broken");
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("tampered.jsonl") && broken[0].contains("first broken line 3"));
    assert_eq!(strings("banners_ok").len(), 3);
    // The denial rows, markup shown as text (not run: no page error).
    let denials = seen["denial_rows"].as_array().expect("denials");
    assert!(
        denials.iter().any(|r| r[7] == "denied"
            && r[5] == "mallory"
            && r[4] == ATTACK_POD
            && r[8] == ATTACK_REASON),
        "{denials:?}"
    );
    assert!(denials
        .iter()
        .any(|r| r[7] == "failure" && r[4] == "web-stale"));
    assert!(seen["errors"].as_array().expect("errors").is_empty());
    assert_eq!(seen["scripts"], 1);
    // Versions fetched per pod after the rotation.
    let fetched: Vec<(String, String, String)> = seen["fetched"]
        .as_array()
        .expect("fetched")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_owned(),
                r[1].as_str().unwrap_or_default().to_owned(),
                r[4].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for want in [
        ("web-old", "1", "2"),
        ("web-new", "2", "1"),
        ("web-stale", "1", "1"),
    ] {
        let want = (want.0.to_owned(), want.1.to_owned(), want.2.to_owned());
        assert!(fetched.contains(&want), "{want:?} not in {fetched:?}");
    }
    // The filter narrows the rows; the outcome filter too; keyboard focus
    // starts at the filter box; sorting flips the order.
    let before = seen["rows_before"].as_u64().expect("rows");
    let after = seen["rows_after"].as_u64().expect("rows");
    assert!(after > 0 && after < before, "{after} of {before}");
    let denied = seen["rows_denied"].as_u64().expect("rows");
    assert!(denied > 0 && denied < before, "{denied} of {before}");
    assert_eq!(seen["focused"], "q");
    assert_ne!(seen["sorted_asc_first"], seen["sorted_desc_first"]);
    assert_eq!(seen["controls_printed"], false);
    // No network: the browser's request log holds the page alone, and no
    // content-security rule fired.
    assert_eq!(strings("requests"), vec![seen["url"].to_string()]);
    assert!(seen["failed"].as_array().expect("failed").is_empty());
    assert!(seen["violations"]
        .as_array()
        .expect("violations")
        .is_empty());
    let shot = shots.join("audit-page.png");
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 1000);
    if std::env::var_os("SIDEKEY_UPDATE_DOCS").is_some() {
        std::fs::copy(&shot, repo().join("docs/audit-page.png")).expect("docs/audit-page.png");
    }
    eprintln!("screenshots in {}", shots.display());
    w.assert_no_leaks();
}
