//! `sidekey export --format dotenv` read back by the programs that really
//! read dotenv files: a POSIX shell (`set -a; . FILE`, by bash and by dash),
//! python-dotenv and Node's dotenv. Every value comes back as exactly the
//! bytes written, and nothing in a value runs or expands: each value that
//! would run a command would create a marker file, and none may exist.
//!
//! The readers come from `scripts/venv` (python-dotenv in `.venv`, Node's
//! dotenv under `.venv/node`); a missing reader fails the test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Kind, World};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Values that a shell or a dotenv reader would run, expand or cut, each
/// with a marker path where `{m}` stands. All have an inert form.
const VALUES: &[(&str, &str)] = &[
    ("SUBST", "$(touch {m}subst)"),
    ("BACKTICK", "`touch {m}backtick`"),
    ("VAR", "$HOME and $PATH"),
    ("ARITH", "$((6*7))"),
    ("BANG", "hello!world !! !$"),
    ("SEMI", "a; touch {m}semi && b || c | d & e"),
    ("GLOB", "* ? [a-z] ~ ~root"),
    ("DQUOTE", "say \"hi\" \\\"x\\\""),
    ("APOS", "it's a 'quote' (no dollar)"),
    ("BACKSLASH", "C:\\path\\n\\t\\x41 end"),
    ("NEWLINES", "line one\nline two\n\n  indented\n"),
    ("TAB", "a\tb"),
    ("HASH", "#not a comment # either"),
    ("EQUALS", "=a=b=="),
    ("SPACES", "  leading and trailing  "),
    ("UNICODE", "ünïcödé ✓ \u{2028} value"),
    ("BRACE", "{a,b} $ { } $"),
    (
        "CONTROL",
        "bell\x07 vt\x0b ff\x0c nel\u{85} ls\u{2028} esc\x1b[31m",
    ),
    ("EXPORT", "export X=1"),
];

fn expected(marker: &Path) -> BTreeMap<String, String> {
    VALUES
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                v.replace("{m}", &format!("{}/", marker.display())),
            )
        })
        .collect()
}

/// Runs a reader and returns what it printed.
fn run(program: &Path, args: &[&str], cwd: &Path) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", cwd)
        .output()
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `NAME=value\0` pairs as `env -0` prints them, only the expected names.
fn env0(bytes: &[u8], names: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).expect("utf-8");
            let (k, v) = entry.split_once('=')?;
            names.contains_key(k).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn every_reader_gets_the_exact_bytes_and_runs_nothing() {
    let mut w = World::new(Kind::Local);
    let marker = w.dir.path().join("markers");
    std::fs::create_dir(&marker).expect("mkdir");
    let want = expected(&marker);
    for (k, v) in &want {
        w.secret(v.as_bytes());
        w.ok(&["put", "dev", "web", k], v.as_bytes());
    }
    let exported = w.sk_values(&["export", "dev", "web"], b"");
    assert_eq!(exported.status, 0, "{}", exported.stderr_str());
    let file = w.dir.path().join("secrets.env");
    std::fs::write(&file, &exported.stdout).expect("write");
    let file_arg = file.display().to_string();
    let cwd = w.dir.path().to_owned();

    // POSIX shells: bash (also as `sh`, its POSIX mode) and dash.
    let source = "set -a; . \"$1\"; exec env -0";
    for (shell, args) in [
        ("/bin/bash", vec!["-c", source, "bash", &file_arg]),
        ("/bin/bash", vec!["--posix", "-c", source, "sh", &file_arg]),
        ("/bin/dash", vec!["-c", source, "dash", &file_arg]),
    ] {
        let got = env0(&run(Path::new(shell), &args, &cwd), &want);
        assert_eq!(got, want, "{shell} {args:?}");
    }

    // python-dotenv, with its default variable expansion on.
    let python = repo().join(".venv/bin/python");
    let script = "import json, sys, dotenv; \
                  sys.stdout.write(json.dumps(dotenv.dotenv_values(sys.argv[1])))";
    let got: BTreeMap<String, String> =
        serde_json::from_slice(&run(&python, &["-c", script, &file_arg], &cwd))
            .expect("python-dotenv JSON");
    assert_eq!(got, want, "python-dotenv");

    // Node's dotenv.
    let module = repo().join(".venv/node/node_modules/dotenv");
    assert!(
        module.is_dir(),
        "{} is missing: run scripts/venv",
        module.display()
    );
    let script = format!(
        "const d = require({:?}); const fs = require('fs'); \
         process.stdout.write(JSON.stringify(d.parse(fs.readFileSync(process.argv[1]))))",
        module.display().to_string()
    );
    let got: BTreeMap<String, String> =
        serde_json::from_slice(&run(Path::new("node"), &["-e", &script, &file_arg], &cwd))
            .expect("node dotenv JSON");
    assert_eq!(got, want, "node dotenv");

    // `sidekey import` reads its own export back.
    w.ok(&["import", "dev", "copy", "--dotenv", &file_arg], b"");
    for (k, v) in &want {
        assert_eq!(w.reveal("dev", "copy", k, &[]).stdout, v.as_bytes(), "{k}");
    }

    let ran: Vec<_> = std::fs::read_dir(&marker).expect("list").collect();
    assert!(ran.is_empty(), "a value ran a command: {ran:?}");
    w.assert_no_leaks();
}

#[test]
fn a_value_with_no_inert_form_is_refused_and_nothing_is_printed() {
    for value in ["it's $(id)", "a ${HOME} b", "cr\rlf", "it's \"both\""] {
        let mut w = World::new(Kind::Local);
        w.put("dev", "web", "FINE", b"a-fine-value");
        w.put("dev", "web", "BAD", value.as_bytes());
        let out = w.sk_values(&["export", "dev", "web"], b"");
        assert_eq!(out.status, 1, "{value:?}: {}", out.stderr_str());
        assert!(
            out.stdout.is_empty(),
            "{value:?}: printed {:?}",
            out.stdout_str()
        );
        assert!(out.stderr_str().contains("/BAD"), "{}", out.stderr_str());
        assert!(out.stderr_str().contains("json"), "{}", out.stderr_str());
        // The failed export is on the audit trail as a failure.
        let last = w.audit_lines().pop().expect("a record");
        assert_eq!(last["event"], "export");
        assert_eq!(last["outcome"], "failure", "{last}");
        // JSON carries it.
        let json = w.sk_values(&["export", "dev", "web", "--format", "json"], b"");
        let object: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
        assert_eq!(object["BAD"], value);
        w.assert_no_leaks();
    }
}
