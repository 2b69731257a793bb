//! Property tests: any input is verified or rejected, never a panic; any
//! written stream verifies; any changed byte before the last line is found.

use proptest::prelude::*;
use sidekey_audit::{read_records, verify, ChainWriter, Component, Event, Outcome, SecretRef};

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
