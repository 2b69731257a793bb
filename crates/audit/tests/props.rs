//! Property tests: any input is verified or rejected, never a panic; any
//! written stream verifies; any changed byte before the last line is found.

use proptest::prelude::*;
use sidekey_audit::{
    read_records, verify, ChainWriter, Component, Event, Outcome, Record, SecretRef,
};

/// Every `Component`: `Component::ALL` is generated with the enum from one
/// list, so a new variant is drawn here without a change to this file.
fn component() -> impl Strategy<Value = Component> {
    prop::sample::select(Component::ALL.to_vec())
}

/// Every `Outcome`, likewise.
fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

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
        outcome(),
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
        (component(), outcome()),
    )
        .prop_filter_map(
            "an extra field may not reuse a fixed name",
            |(
                (ts, seq, prev, event),
                (environment, namespace, pod, actor, reason),
                secrets,
                duration_ms,
                extra,
                (component, outcome),
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
                    component,
                    event,
                    environment,
                    namespace,
                    pod,
                    actor,
                    secrets: secrets
                        .into_iter()
                        .map(|(s, k, v)| SecretRef::new(s, k, v))
                        .collect(),
                    outcome,
                    reason,
                    duration_ms,
                    extra: extra.into_iter().collect(),
                })
            },
        )
}

/// A line's top-level keys in the order they are written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(InOrder)
    }
}

fn write_all(component: Component, events: Vec<Event>) -> Vec<u8> {
    let mut w = ChainWriter::new(component, Vec::new());
    for e in events {
        w.write(e).unwrap();
    }
    w.into_inner()
}

/// Every variant's name is the one serde writes and reads, and `FromStr`
/// reads it back; the lists hold each variant once.
#[test]
fn every_component_and_outcome_is_named_one_way() {
    for c in Component::ALL {
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        assert_eq!(
            serde_json::from_value::<Component>(c.as_str().into()).unwrap(),
            c
        );
        assert_eq!(c.as_str().parse::<Component>().unwrap(), c);
        assert_eq!(Component::ALL.iter().filter(|&&o| o == c).count(), 1);
    }
    for o in Outcome::ALL {
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        assert_eq!(
            serde_json::from_value::<Outcome>(o.as_str().into()).unwrap(),
            o
        );
        assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        assert_eq!(Outcome::ALL.iter().filter(|&&x| x == o).count(), 1);
    }
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
    fn any_written_stream_verifies_and_reads_back(
        component in component(),
        events in proptest::collection::vec(arb_event(), 0..8),
    ) {
        let n = events.len() as u64;
        let outcomes: Vec<Outcome> = events.iter().map(|e| e.outcome).collect();
        let bytes = write_all(component, events);
        prop_assert_eq!(verify(bytes.as_slice()).unwrap().records, n);
        let records = read_records(bytes.as_slice()).unwrap();
        prop_assert_eq!(records.len() as u64, n);
        prop_assert!(records.iter().all(|r| r.component == component));
        let read: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
        prop_assert_eq!(read, outcomes);
    }

    #[test]
    fn a_line_is_what_serde_writes(record in arb_record()) {
        let line = record.to_line().unwrap();
        prop_assert_eq!(&line, &serde_json::to_string(&record).unwrap());
        // Written in RECORD_FIELDS order, then the extras.
        let Keys(keys) = serde_json::from_str(&line).unwrap();
        prop_assert_eq!(&keys[..sidekey_audit::RECORD_FIELDS.len()], &sidekey_audit::RECORD_FIELDS[..]);
        prop_assert_eq!(keys.len(), sidekey_audit::RECORD_FIELDS.len() + record.extra.len());
        // Read back: the same fixed fields (extras' floats are read by
        // serde_json's fast, not exact, float parser: keys compared only).
        let mut back: Record = serde_json::from_str(&line).unwrap();
        prop_assert!(back.extra.keys().eq(record.extra.keys()));
        back.extra = record.extra.clone();
        prop_assert_eq!(back, record);
    }

    #[test]
    fn a_changed_byte_before_the_last_line_is_found(
        events in proptest::collection::vec(arb_event(), 2..6),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = write_all(Component::Agent, events);
        let last_start = bytes[..bytes.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let pos = pick.index(last_start);
        bytes[pos] ^= flip;
        prop_assert!(verify(bytes.as_slice()).is_err());
    }
}
