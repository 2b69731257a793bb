//! Property tests: any input is verified or rejected, never a panic; any
//! written stream verifies; any changed byte before the last line is found.

use proptest::prelude::*;
use sidekey_audit::{
    read_records, verify, ChainWriter, Component, Event, Outcome, Record, SecretRef,
};

fn arb_event() -> impl Strategy<Value = Event> {
    (
        "\\PC{0,12}",
        proptest::option::of("\\PC{0,12}"),
        proptest::option::of(".{0,12}"),
        proptest::collection::vec(
            (
                "[a-z]{1,6}",
                "[A-Z_]{1,8}",
                proptest::option::of(any::<u64>()),
            ),
            0..3,
        ),
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Denied),
            Just(Outcome::Failure),
            Just(Outcome::Skipped)
        ],
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(event, environment, reason, secrets, outcome, duration_ms)| Event {
                event,
                environment,
                reason,
                secrets: secrets
                    .into_iter()
                    .map(|(s, k, v)| SecretRef::new(s, k, v))
                    .collect(),
                outcome,
                duration_ms,
                ..Event::default()
            },
        )
}

/// Any characters, control characters included (`any::<String>()` leaves
/// them out).
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

/// Any strings in any field, extras of any JSON shape.
fn arb_record() -> impl Strategy<Value = Record> {
    let opt = || proptest::option::of(text());
    let leaf = prop_oneof![
        text().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    // Extras of any shape: arrays and objects nested in each other.
    let extra_value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (
        (text(), any::<u64>(), text(), text()),
        (opt(), opt(), opt(), opt(), opt()),
        proptest::collection::vec((text(), text(), proptest::option::of(any::<u64>())), 0..3),
        proptest::option::of(any::<u64>()),
        proptest::collection::btree_map("[a-z_]{1,8}|\\PC{0,6}", extra_value, 0..3),
    )
        .prop_filter_map(
            "an extra field may not reuse a fixed name",
            |(
                (ts, seq, prev, event),
                (environment, namespace, pod, actor, reason),
                secrets,
                duration_ms,
                extra,
            )| {
                if extra
                    .keys()
                    .any(|k| sidekey_audit::RECORD_FIELDS.contains(&k.as_str()))
                {
                    return None;
                }
                Some(Record {
                    ts,
                    seq,
                    prev,
                    component: Component::Injector,
                    event,
                    environment,
                    namespace,
                    pod,
                    actor,
                    secrets: secrets
                        .into_iter()
                        .map(|(s, k, v)| SecretRef::new(s, k, v))
                        .collect(),
                    outcome: Outcome::Denied,
                    reason,
                    duration_ms,
                    extra: extra.into_iter().collect(),
                })
            },
        )
}

fn write_all(events: Vec<Event>) -> Vec<u8> {
    let mut w = ChainWriter::new(Component::Agent, Vec::new());
    for e in events {
        w.write(e).unwrap();
    }
    w.into_inner()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = verify(bytes.as_slice());
        let _ = read_records(bytes.as_slice());
    }

    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..8)) {
        let text = lines.join("\n");
        let _ = verify(text.as_bytes());
        let _ = read_records(text.as_bytes());
    }

    #[test]
    fn any_written_stream_verifies_and_reads_back(events in proptest::collection::vec(arb_event(), 0..8)) {
        let n = events.len() as u64;
        let bytes = write_all(events);
        prop_assert_eq!(verify(bytes.as_slice()).unwrap().records, n);
        prop_assert_eq!(read_records(bytes.as_slice()).unwrap().len() as u64, n);
    }

    #[test]
    fn a_line_is_what_serde_writes(record in arb_record()) {
        prop_assert_eq!(record.to_line().unwrap(), serde_json::to_string(&record).unwrap());
    }

    #[test]
    fn a_changed_byte_before_the_last_line_is_found(
        events in proptest::collection::vec(arb_event(), 2..6),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = write_all(events);
        let last_start = bytes[..bytes.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let pos = pick.index(last_start);
        bytes[pos] ^= flip;
        prop_assert!(verify(bytes.as_slice()).is_err());
    }
}
