//! Reading, filtering and printing for `sidekey audit`.

use std::time::{Duration, SystemTime};

use sidekey_audit::{
    parse_since, read_records, render_json, render_table, AuditError, ChainWriter, Component,
    Event, Filter, Outcome, Record, SecretRef,
};

fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

/// Three records:
/// 1. 10:00 cli put staging web/DB_PASSWORD@3, success
/// 2. 11:00 agent fetch pr-42 pod web-1 web/API_KEY@1 + worker/DB_PASSWORD@2, failure
/// 3. 12:00 injector review pr-42 pod web-2, denied, no secrets
fn records() -> Vec<Record> {
    let mut out = Vec::new();
    let mut w = ChainWriter::new(Component::Cli, Vec::new());
    let mut e = Event::new("put");
    e.environment = Some("staging".to_owned());
    e.actor = Some("alice".to_owned());
    e.secrets = vec![SecretRef::new("web", "DB_PASSWORD", Some(3))];
    out.push(w.write_at(e, at("2026-11-26T10:00:00Z")).unwrap());

    let mut w = ChainWriter::new(Component::Agent, Vec::new());
    let mut e = Event::new("fetch");
    e.environment = Some("pr-42".to_owned());
    e.namespace = Some("pr-42".to_owned());
    e.pod = Some("web-1".to_owned());
    e.secrets = vec![
        SecretRef::new("web", "API_KEY", Some(1)),
        SecretRef::new("worker", "DB_PASSWORD", Some(2)),
    ];
    e.outcome = Outcome::Failure;
    e.reason = Some("kms: access denied".to_owned());
    e.duration_ms = Some(35);
    out.push(w.write_at(e, at("2026-11-26T11:00:00Z")).unwrap());

    let mut w = ChainWriter::new(Component::Injector, Vec::new());
    let mut e = Event::new("review");
    e.environment = Some("pr-42".to_owned());
    e.pod = Some("web-2".to_owned());
    e.actor = Some("system:serviceaccount:ci:deployer".to_owned());
    e.outcome = Outcome::Denied;
    e.reason =
        Some("environment pr-42 may not read service `billing`; add it to the policy".to_owned());
    out.push(w.write_at(e, at("2026-11-26T12:00:00Z")).unwrap());
    out
}

fn seqs_matching(f: &Filter) -> Vec<String> {
    records()
        .iter()
        .filter(|r| f.matches(r))
        .map(|r| r.event.clone())
        .collect()
}

#[test]
fn an_empty_filter_matches_everything() {
    assert_eq!(
        seqs_matching(&Filter::default()),
        ["put", "fetch", "review"]
    );
}

#[test]
fn filter_by_environment() {
    let f = Filter {
        environment: Some("pr-42".to_owned()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&f), ["fetch", "review"]);
    let f = Filter {
        environment: Some("pr-4".to_owned()),
        ..Filter::default()
    };
    assert!(seqs_matching(&f).is_empty());
}

#[test]
fn filter_by_service_and_key() {
    let service = |s: &str| Filter {
        service: Some(s.to_owned()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&service("web")), ["put", "fetch"]);
    assert_eq!(seqs_matching(&service("worker")), ["fetch"]);
    assert!(seqs_matching(&service("billing")).is_empty());

    let key = |k: &str| Filter {
        key: Some(k.to_owned()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&key("DB_PASSWORD")), ["put", "fetch"]);
    assert_eq!(seqs_matching(&key("API_KEY")), ["fetch"]);

    // Both must hold for the same reference.
    let both = |s: &str, k: &str| Filter {
        service: Some(s.to_owned()),
        key: Some(k.to_owned()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&both("web", "DB_PASSWORD")), ["put"]);
    assert_eq!(seqs_matching(&both("worker", "DB_PASSWORD")), ["fetch"]);
    assert!(seqs_matching(&both("worker", "API_KEY")).is_empty());
}

#[test]
fn filter_by_pod() {
    let f = Filter {
        pod: Some("web-2".to_owned()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&f), ["review"]);
}

#[test]
fn filter_by_outcome() {
    let f = |o: Outcome| Filter {
        outcome: Some(o),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&f(Outcome::Success)), ["put"]);
    assert_eq!(seqs_matching(&f(Outcome::Failure)), ["fetch"]);
    assert_eq!(seqs_matching(&f(Outcome::Denied)), ["review"]);
    assert!(seqs_matching(&f(Outcome::Skipped)).is_empty());
}

#[test]
fn filter_fields_combine() {
    let f = Filter {
        environment: Some("pr-42".to_owned()),
        outcome: Some(Outcome::Denied),
        pod: Some("web-1".to_owned()),
        ..Filter::default()
    };
    assert!(seqs_matching(&f).is_empty());
}

#[test]
fn filter_since_a_time() {
    let now = at("2026-11-27T00:00:00Z");
    let f = Filter {
        since: Some(parse_since("2026-11-26T11:00:00Z", now).unwrap()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&f), ["fetch", "review"]);
    let f = Filter {
        since: Some(parse_since("2026-11-26T11:00:00.001Z", now).unwrap()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&f), ["review"]);
}

#[test]
fn filter_since_a_duration() {
    let now = at("2026-11-26T12:30:00Z");
    let since = |s: &str| Filter {
        since: Some(parse_since(s, now).unwrap()),
        ..Filter::default()
    };
    assert_eq!(seqs_matching(&since("15m")), Vec::<String>::new());
    assert_eq!(seqs_matching(&since("45m")), ["review"]);
    assert_eq!(seqs_matching(&since("2h")), ["fetch", "review"]);
    assert_eq!(seqs_matching(&since("7d")), ["put", "fetch", "review"]);
}

#[test]
fn since_skips_a_record_without_a_valid_time() {
    let mut r = records().remove(0);
    r.ts = "yesterday".to_owned();
    let f = Filter {
        since: Some(at("2020-01-01T00:00:00Z")),
        ..Filter::default()
    };
    assert!(!f.matches(&r));
    assert!(Filter::default().matches(&r));
}

#[test]
fn parse_since_forms() {
    let now = at("2026-11-26T12:00:00Z");
    assert_eq!(
        parse_since("2026-11-26T10:00:00Z", now).unwrap(),
        at("2026-11-26T10:00:00Z")
    );
    assert_eq!(
        parse_since("2026-11-26 10:00:00", now).unwrap(),
        at("2026-11-26T10:00:00Z")
    );
    assert_eq!(
        parse_since("2026-11-26T10:00:00.250Z", now).unwrap(),
        at("2026-11-26T10:00:00Z") + Duration::from_millis(250)
    );
    assert_eq!(parse_since("15m", now).unwrap(), at("2026-11-26T11:45:00Z"));
    assert_eq!(parse_since("2h", now).unwrap(), at("2026-11-26T10:00:00Z"));
    assert_eq!(parse_since("7d", now).unwrap(), at("2026-11-19T12:00:00Z"));
    assert_eq!(
        parse_since(" 1h 30m ", now).unwrap(),
        at("2026-11-26T10:30:00Z")
    );
    assert_eq!(parse_since("100000y", now).unwrap(), std::time::UNIX_EPOCH);
}

#[test]
fn parse_since_errors_name_the_input_and_the_rule() {
    let now = at("2026-11-26T12:00:00Z");
    for (input, detail) in [
        ("", "empty"),
        ("yesterday", "neither a time nor a duration"),
        ("15", "neither a time nor a duration"),
        ("2026-11-26", "not a valid RFC 3339 UTC time"),
        ("2026-13-01T00:00:00Z", "not a valid RFC 3339 UTC time"),
        ("2026-11-26T10:00:00+02:00", "not a valid RFC 3339 UTC time"),
    ] {
        let err = parse_since(input, now).unwrap_err();
        assert!(matches!(err, AuditError::Since { .. }), "{input}: {err}");
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "since `{input}`: {detail}; expected an RFC 3339 UTC time such as \
                 2026-11-26T10:00:00Z or a duration back from now such as 15m, 2h or 7d"
            )
        );
    }
}

#[test]
fn render_table_has_a_header_and_a_row_per_record() {
    let records = records();
    let table = render_table(&records);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TIME",
            "COMPONENT",
            "EVENT",
            "ENV",
            "POD",
            "ACTOR",
            "SECRETS",
            "OUTCOME",
            "REASON"
        ]
    );
    assert!(
        lines[1].starts_with("2026-11-26T10:00:00.000Z  cli "),
        "{table}"
    );
    assert!(lines[1].contains(" web/DB_PASSWORD@3 "), "{table}");
    assert!(
        lines[2].contains(" web/API_KEY@1,worker/DB_PASSWORD@2 "),
        "{table}"
    );
    // The reason is the last column, whole.
    assert!(
        lines[3].ends_with(
            " denied   environment pr-42 may not read service `billing`; add it to the policy"
        ),
        "{table}"
    );
    // Columns line up: each header word starts where its cells start.
    for word in [
        "COMPONENT",
        "EVENT",
        "ENV",
        "POD",
        "SECRETS",
        "OUTCOME",
        "REASON",
    ] {
        let col = lines[0].find(word).unwrap();
        for row in &lines[1..] {
            assert_eq!(&row[col - 2..col], "  ", "{word} in {row:?}");
            assert_ne!(&row[col..col + 1], " ", "{word} in {row:?}");
        }
    }
    // '-' stands for none.
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "2026-11-26T10:00:00.000Z",
            "cli",
            "put",
            "staging",
            "-",
            "alice",
            "web/DB_PASSWORD@3",
            "success",
            "-"
        ]
    );
    assert!(table.lines().all(|l| l == l.trim_end()));
}

#[test]
fn render_table_escapes_control_characters() {
    let mut r = records().remove(1);
    r.reason = Some("line one\nline two\x1b[31m".to_owned());
    let table = render_table(&[r]);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("line one\\nline two\\u{1b}[31m"), "{table}");
}

#[test]
fn render_table_of_nothing_is_the_header() {
    assert_eq!(
        render_table(&[]),
        "TIME  COMPONENT  EVENT  ENV  POD  ACTOR  SECRETS  OUTCOME  REASON\n"
    );
}

#[test]
fn render_json_is_one_record_a_line_as_written() {
    let mut w = ChainWriter::new(Component::Cli, Vec::new());
    let mut written = Vec::new();
    for name in ["put", "rotate"] {
        let mut e = Event::new(name);
        e.extra.insert("kms_key".to_owned(), "alias/sidekey".into());
        written.push(w.write(e).unwrap());
    }
    let raw = String::from_utf8(w.into_inner()).unwrap();
    assert_eq!(render_json(&written), raw);
    assert_eq!(read_records(raw.as_bytes()).unwrap(), written);
}

#[test]
fn read_records_names_the_bad_line() {
    let json = render_json(&records());
    let mut lines: Vec<&str> = json.lines().collect();
    lines.insert(1, "");
    lines.insert(3, "{\"ts\": 5, \"secret\": \"s3cr3t\"}");
    let text = lines.join("\n");
    let err = read_records(text.as_bytes()).unwrap_err();
    assert!(matches!(err, AuditError::Parse { line: 4, .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("line 4: not a valid audit record: "),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"), "{err}");

    // Blank lines are skipped.
    lines.remove(3);
    let text = lines.join("\n");
    assert_eq!(read_records(text.as_bytes()).unwrap().len(), 3);
}

/// `--outcome retried`: agent starts whose `aws` counts show retries or
/// throttled calls, whatever their outcome; records without counts never.
#[test]
fn filter_retried_starts() {
    let start = |pod: &str, aws: Option<serde_json::Value>, outcome: Outcome| {
        let mut w = ChainWriter::new(Component::Agent, Vec::new());
        let mut e = Event::new("fetch");
        e.pod = Some(pod.to_owned());
        e.outcome = outcome;
        if let Some(aws) = aws {
            e.extra.insert("aws".to_owned(), aws);
        }
        w.write_at(e, at("2026-11-26T11:00:00Z")).unwrap()
    };
    let all = [
        start(
            "calm",
            Some(serde_json::json!({"calls": 2, "ssm": 1, "kms": 1, "throttled": 0, "retries": 0})),
            Outcome::Success,
        ),
        start(
            "retried",
            Some(serde_json::json!({"calls": 5, "ssm": 4, "kms": 1, "throttled": 3, "retries": 3})),
            Outcome::Success,
        ),
        start(
            "gave-up",
            Some(serde_json::json!({"calls": 9, "ssm": 9, "kms": 0, "throttled": 9, "retries": 8})),
            Outcome::Failure,
        ),
        start("old-agent", None, Outcome::Success),
    ];
    let pods = |f: &Filter| -> Vec<String> {
        all.iter()
            .filter(|r| f.matches(r))
            .map(|r| r.pod.clone().unwrap())
            .collect()
    };
    let retried = Filter {
        retried: true,
        ..Filter::default()
    };
    assert_eq!(pods(&retried), ["retried", "gave-up"]);
    let retried_but_started = Filter {
        retried: true,
        outcome: Some(Outcome::Success),
        ..Filter::default()
    };
    assert_eq!(pods(&retried_but_started), ["retried"]);
    assert_eq!(pods(&Filter::default()).len(), 4);
    // The records read back from their JSON lines keep the counts.
    let text: String = all.iter().map(|r| r.to_line().unwrap() + "\n").collect();
    let back = read_records(text.as_bytes()).unwrap();
    assert_eq!(back.iter().filter(|r| retried.matches(r)).count(), 2);
}
