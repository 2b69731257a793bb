//! The chain: writing, record shape and verification of tampered streams.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use sidekey_audit::{
    line_hash, verify, AuditError, Chain, ChainWriter, Component, Event, EventText, Outcome,
    Record, SecretRef, VerifyError, GENESIS,
};

fn t0() -> SystemTime {
    humantime::parse_rfc3339("2026-11-26T10:00:00Z").unwrap()
}

fn event(i: usize) -> Event {
    Event {
        event: ["put", "rotate", "delete", "fetch", "review"][i % 5].to_owned(),
        environment: Some("staging".to_owned()),
        namespace: Some("staging".to_owned()),
        pod: Some(format!("web-{i}")),
        actor: Some("alice".to_owned()),
        secrets: vec![SecretRef::new("web", "DB_PASSWORD", Some(i as u64 + 1))],
        outcome: Outcome::Success,
        reason: None,
        duration_ms: Some(12),
        extra: serde_json::Map::new(),
    }
}

/// `n` lines of one stream, without their newlines.
fn chain(n: usize) -> Vec<String> {
    let mut w = ChainWriter::new(Component::Cli, Vec::new());
    for i in 0..n {
        w.write_at(event(i), t0() + Duration::from_millis(i as u64 * 1001))
            .unwrap();
    }
    let text = String::from_utf8(w.into_inner()).unwrap();
    assert!(text.ends_with('\n'));
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn check(lines: &[String]) -> Result<sidekey_audit::VerifySummary, VerifyError> {
    verify(join(lines).as_bytes())
}

#[test]
fn a_written_chain_verifies() {
    let lines = chain(5);
    assert_eq!(lines.len(), 5);
    let summary = check(&lines).unwrap();
    assert_eq!(summary.records, 5);
    assert_eq!(summary.last_hash, line_hash(&lines[4]));

    let records: Vec<Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0].prev, GENESIS);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.component, Component::Cli);
        if i > 0 {
            assert_eq!(r.prev, line_hash(&lines[i - 1]));
        }
    }
}

#[test]
fn an_empty_stream_verifies() {
    let summary = verify(&b""[..]).unwrap();
    assert_eq!(summary.records, 0);
    assert_eq!(summary.last_hash, GENESIS);
}

#[test]
fn write_returns_the_record_it_wrote() {
    let mut w = ChainWriter::new(Component::Agent, Vec::new());
    let r1 = w.write(event(0)).unwrap();
    let r2 = w.write(event(1)).unwrap();
    let text = String::from_utf8(w.into_inner()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(serde_json::from_str::<Record>(lines[0]).unwrap(), r1);
    assert_eq!(serde_json::from_str::<Record>(lines[1]).unwrap(), r2);
    assert_eq!(r2.prev, line_hash(lines[0]));
}

#[test]
fn line_hash_ignores_one_trailing_newline() {
    assert_eq!(line_hash("abc\n"), line_hash("abc"));
    assert_eq!(
        line_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(GENESIS.len(), 64);
}

#[test]
fn removing_a_line_is_found_at_that_line() {
    let lines = chain(5);
    for removed in 0..5 {
        let mut tampered = lines.clone();
        tampered.remove(removed);
        match check(&tampered) {
            Err(e) => assert_eq!(e.line(), Some(removed as u64 + 1), "removed {removed}: {e}"),
            // A chain cannot show that its last line is gone; last_hash can.
            Ok(summary) => {
                assert_eq!(removed, 4, "removing line {} passed", removed + 1);
                assert_eq!(summary.records, 4);
                assert_ne!(summary.last_hash, line_hash(&lines[4]));
            }
        }
    }
}

#[test]
fn removing_a_middle_line_names_the_seq_gap() {
    let mut lines = chain(5);
    lines.remove(2);
    let e = check(&lines).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: seq 4 follows seq 2 (line(s) removed or reordered)"
    );
}

#[test]
fn removing_the_first_line_names_the_start_rule() {
    let mut lines = chain(5);
    lines.remove(0);
    let e = check(&lines).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: a stream must start with seq 1 and a zero prev"
    );
}

#[test]
fn editing_the_event_name_is_found_at_the_next_line() {
    let lines = chain(5);
    for edited in 0..5 {
        let mut tampered = lines.clone();
        let before = tampered[edited].clone();
        tampered[edited] = before.replacen("\"event\":\"", "\"event\":\"x", 1);
        assert_ne!(before, tampered[edited]);
        match check(&tampered) {
            Err(e) => {
                assert_eq!(e.line(), Some(edited as u64 + 2), "{e}");
                assert_eq!(
                    e.to_string(),
                    format!(
                        "line {}: prev does not match the hash of line {} \
                         (a line was edited, removed or inserted)",
                        edited + 2,
                        edited + 1
                    )
                );
            }
            Ok(summary) => {
                assert_eq!(edited, 4);
                assert_ne!(summary.last_hash, line_hash(&lines[4]));
            }
        }
    }
}

#[test]
fn changing_any_byte_of_any_line_is_found() {
    let lines = chain(5);
    for (i, line) in lines.iter().enumerate() {
        for pos in 0..line.len() {
            let mut bytes = line.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'x' { b'y' } else { b'x' };
            let mut text = Vec::new();
            for (j, l) in lines.iter().enumerate() {
                text.extend_from_slice(if i == j { &bytes } else { l.as_bytes() });
                text.push(b'\n');
            }
            match verify(&text[..]) {
                Err(e) => {
                    let at = e.line().unwrap();
                    assert!(
                        at == i as u64 + 1 || at == i as u64 + 2,
                        "line {} byte {pos}: error at line {at}: {e}",
                        i + 1
                    );
                }
                Ok(summary) => {
                    assert_eq!(i, 4, "line {} byte {pos} passed", i + 1);
                    assert_ne!(summary.last_hash, line_hash(&lines[4]));
                }
            }
        }
    }
}

#[test]
fn swapping_two_lines_fails() {
    let lines = chain(5);
    for a in 0..5 {
        for b in a + 1..5 {
            let mut tampered = lines.clone();
            tampered.swap(a, b);
            let e = check(&tampered).unwrap_err();
            assert_eq!(e.line(), Some(a as u64 + 1), "swap {a} {b}: {e}");
        }
    }
}

#[test]
fn inserting_a_line_fails() {
    let lines = chain(5);
    let other = chain(3);
    for at in 0..=5 {
        let mut tampered = lines.clone();
        tampered.insert(at, other[1].clone());
        assert!(check(&tampered).is_err(), "insert at {at}");
    }
}

#[test]
fn appending_a_line_from_another_stream_fails() {
    let lines = chain(5);

    // Another stream's first line.
    let mut tampered = lines.clone();
    tampered.push(chain(1).remove(0));
    let e = check(&tampered).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Seq {
                line: 6,
                seq: 1,
                previous: 5
            }
        ),
        "{e}"
    );

    // Another stream's sixth line: the seq fits, the prev does not.
    let mut other = ChainWriter::new(Component::Agent, Vec::new());
    for i in 0..6 {
        other.write_at(event(i), t0()).unwrap();
    }
    let other = String::from_utf8(other.into_inner()).unwrap();
    let mut tampered = lines.clone();
    tampered.push(other.lines().nth(5).unwrap().to_owned());
    let e = check(&tampered).unwrap_err();
    assert!(matches!(e, VerifyError::Prev { line: 6 }), "{e}");
}

#[test]
fn an_invalid_line_is_named_without_its_content() {
    let mut lines = chain(3);
    lines[1] = lines[1].replace("\"outcome\":\"success\"", "\"outcome\":\"hunter2\"");
    let e = check(&lines).unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with("line 2: not a valid audit record: "),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let e = verify(&b"{\"ts\":\"a\"}\n"[..]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("line 1: not a valid audit record: "),
        "{e}"
    );

    let e = verify(&b"not json at all: s3cr3t\n"[..]).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");

    let e = verify(&b"\xff\xfe\n"[..]).unwrap_err();
    assert_eq!(e.to_string(), "line 1: not a valid audit record: not UTF-8");

    let mut lines = chain(2);
    lines.insert(1, String::new());
    let e = check(&lines).unwrap_err();
    assert_eq!(e.line(), Some(2));
}

#[test]
fn a_missing_field_is_named() {
    let line = chain(1).remove(0);
    let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
    value.as_object_mut().unwrap().remove("seq");
    let e = verify(format!("{value}\n").as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: not a valid audit record: missing field `seq`"
    );
}

#[test]
fn crlf_line_endings_fail() {
    let lines = chain(3);
    let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    let e = verify(text.as_bytes()).unwrap_err();
    assert_eq!(e.line(), Some(2));
}

/// Collects a JSON object's keys in order.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

#[test]
fn record_json_has_every_key_in_order() {
    let mut e = Event::new("fetch");
    e.extra.insert("kms_key".to_owned(), "alias/sidekey".into());
    e.extra.insert("user".to_owned(), "bob".into());
    let mut w = ChainWriter::new(Component::Agent, Vec::new());
    let record = w.write_at(e, t0()).unwrap();
    let line = String::from_utf8(w.into_inner()).unwrap();
    let Keys(keys) = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(
        keys,
        [
            "ts",
            "seq",
            "prev",
            "component",
            "event",
            "environment",
            "namespace",
            "pod",
            "actor",
            "secrets",
            "outcome",
            "reason",
            "duration_ms",
            "kms_key",
            "user"
        ]
    );
    assert_eq!(keys[..13], sidekey_audit::RECORD_FIELDS);
    // Empty fields are written as null, every time.
    assert!(line.contains("\"environment\":null,\"namespace\":null,\"pod\":null,\"actor\":null,\"secrets\":[],\"outcome\":\"success\",\"reason\":null,\"duration_ms\":null,"));
    assert_eq!(record.to_line().unwrap(), line.trim_end());
}

#[test]
fn record_json_is_exact() {
    let ts = t0() + Duration::from_millis(123);
    let mut w = ChainWriter::new(Component::Injector, Vec::new());
    let e = Event {
        event: "review".to_owned(),
        environment: Some("pr-42".to_owned()),
        namespace: Some("pr-42".to_owned()),
        pod: Some("web-1".to_owned()),
        actor: Some("system:serviceaccount:ci:deployer".to_owned()),
        secrets: vec![
            SecretRef::new("web", "DB_PASSWORD", None),
            SecretRef::new("web", "API_KEY", Some(3)),
        ],
        outcome: Outcome::Denied,
        reason: Some("service `web` is not allowed in namespace pr-42".to_owned()),
        duration_ms: Some(4),
        extra: serde_json::Map::new(),
    };
    let record = w.write_at(e, ts).unwrap();
    assert_eq!(record.ts, "2026-11-26T10:00:00.123Z");
    let line = String::from_utf8(w.into_inner()).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"ts":"2026-11-26T10:00:00.123Z","seq":1,"#,
            r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""component":"injector","event":"review","environment":"pr-42","namespace":"pr-42","#,
            r#""pod":"web-1","actor":"system:serviceaccount:ci:deployer","#,
            r#""secrets":[{"service":"web","key":"DB_PASSWORD"},{"service":"web","key":"API_KEY","version":3}],"#,
            r#""outcome":"denied","reason":"service `web` is not allowed in namespace pr-42","duration_ms":4}"#,
            "\n"
        )
    );
    let back: Record = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(back, record);
}

#[test]
fn an_extra_field_may_not_reuse_a_record_field() {
    let mut w = ChainWriter::new(Component::Cli, Vec::new());
    let mut e = Event::new("put");
    e.extra.insert("seq".to_owned(), 99.into());
    let err = w.write(e).unwrap_err();
    assert!(
        matches!(err, AuditError::ReservedField(ref f) if f == "seq"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "extra field `seq` has the name of a fixed audit record field"
    );
    assert!(w.get_ref().is_empty());
    assert_eq!(w.next_seq(), 1);
}

#[test]
fn a_time_outside_the_rfc3339_range_is_refused() {
    let mut w = ChainWriter::new(Component::Cli, Vec::new());
    let before = UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(
        w.write_at(Event::new("put"), before),
        Err(AuditError::TimeOutOfRange)
    ));
    let after = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(matches!(
        w.write_at(Event::new("put"), after),
        Err(AuditError::TimeOutOfRange)
    ));
    let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    let r = w.write_at(Event::new("put"), last).unwrap();
    assert_eq!(r.ts, "9999-12-31T23:59:59.999Z");
    assert_eq!(r.seq, 1);
}

#[test]
fn resume_continues_after_a_last_line() {
    let lines = chain(3);
    let mut w = ChainWriter::resume(Component::Cli, Vec::new(), Some(&lines[2])).unwrap();
    assert_eq!(w.next_seq(), 4);
    assert_eq!(w.prev(), line_hash(&lines[2]));
    w.write_at(event(3), t0()).unwrap();
    w.write_at(event(4), t0()).unwrap();
    let mut all = join(&lines);
    all.push_str(std::str::from_utf8(w.get_ref()).unwrap());
    assert_eq!(verify(all.as_bytes()).unwrap().records, 5);

    // With a trailing newline, the same.
    let w =
        ChainWriter::resume(Component::Cli, Vec::new(), Some(&format!("{}\n", lines[2]))).unwrap();
    assert_eq!(w.prev(), line_hash(&lines[2]));

    let w = ChainWriter::resume(Component::Cli, Vec::new(), None).unwrap();
    assert_eq!((w.next_seq(), w.prev()), (1, GENESIS));

    let err = ChainWriter::resume(Component::Cli, Vec::new(), Some("password=s3cr3t")).unwrap_err();
    assert!(matches!(err, AuditError::Resume { .. }));
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_does_not_advance_the_chain() {
    let mut w = ChainWriter::new(Component::Cli, Broken);
    let err = w.write(Event::new("put")).unwrap_err();
    assert!(matches!(err, AuditError::Write(_)));
    assert_eq!(err.to_string(), "cannot write an audit record");
    assert_eq!((w.next_seq(), w.prev()), (1, GENESIS));
}

#[test]
fn outcome_and_component_names() {
    for o in [
        Outcome::Success,
        Outcome::Denied,
        Outcome::Failure,
        Outcome::Skipped,
    ] {
        assert_eq!(o.to_string().parse::<Outcome>().unwrap(), o);
        assert_eq!(serde_json::to_value(o).unwrap(), o.to_string());
    }
    assert_eq!(Outcome::default(), Outcome::Success);
    let err = "ok".parse::<Outcome>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown outcome `ok`: expected success, denied, failure or skipped"
    );
    for c in [Component::Injector, Component::Agent, Component::Cli] {
        assert_eq!(c.to_string().parse::<Component>().unwrap(), c);
        assert_eq!(serde_json::to_value(c).unwrap(), c.to_string());
    }
    assert_eq!(SecretRef::new("web", "K", Some(2)).to_string(), "web/K@2");
    assert_eq!(SecretRef::new("web", "K", None).to_string(), "web/K");
}

#[test]
fn a_chain_stamps_event_texts_as_the_writer_writes_records() {
    // The same events at the same times: the same bytes, whether written
    // by a ChainWriter or stamped by a Chain from texts built beforehand.
    let mut w = ChainWriter::new(Component::Injector, Vec::new());
    let mut c = Chain::new();
    let mut out = Vec::new();
    for i in 0..6 {
        let mut e = event(i);
        e.extra.insert("uid".to_owned(), format!("u-{i}").into());
        e.extra
            .insert("containers".to_owned(), serde_json::json!(["a", "b\"c"]));
        e.reason = (i % 2 == 0).then(|| "line\nbreak \u{1}".to_owned());
        let ts = t0() + Duration::from_millis(i as u64 * 7);
        let text = EventText::new(Component::Injector, &e).unwrap();
        assert!(text.as_str().starts_with(",\"component\":\"injector\""));
        c.append(&text, ts, &mut out).unwrap();
        w.write_at(e, ts).unwrap();
        assert_eq!((c.next_seq(), c.prev()), (w.next_seq(), w.prev()));
    }
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        String::from_utf8(w.into_inner()).unwrap()
    );
    assert_eq!(verify(&out[..]).unwrap().records, 6);

    // Resumed after its last line, a chain continues it.
    let text = String::from_utf8(out.clone()).unwrap();
    let last = text.lines().last().unwrap();
    let mut c = Chain::resume(Some(last)).unwrap();
    assert_eq!(c.next_seq(), 7);
    c.append(
        &EventText::new(Component::Injector, &event(7)).unwrap(),
        t0(),
        &mut out,
    )
    .unwrap();
    assert_eq!(verify(&out[..]).unwrap().records, 7);
}

#[test]
fn a_chain_refuses_what_the_writer_refuses_and_stays_put() {
    let mut e = Event::new("review");
    e.extra.insert("prev".to_owned(), "x".into());
    assert!(matches!(
        EventText::new(Component::Injector, &e),
        Err(AuditError::ReservedField(ref f)) if f == "prev"
    ));
    let mut c = Chain::new();
    let mut out = b"kept".to_vec();
    let text = EventText::new(Component::Injector, &Event::new("review")).unwrap();
    assert!(matches!(
        c.append(&text, UNIX_EPOCH - Duration::from_secs(1), &mut out),
        Err(AuditError::TimeOutOfRange)
    ));
    assert_eq!(out, b"kept");
    assert_eq!((c.next_seq(), c.prev()), (1, GENESIS));
    assert!(matches!(
        Chain::resume(Some("token=s3cr3t")),
        Err(AuditError::Resume { .. })
    ));
}
