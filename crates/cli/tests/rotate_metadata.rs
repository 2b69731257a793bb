//! `rotate` checks that the key exists from its metadata only: against SSM
//! (moto, through the fault proxy that counts calls) it makes no
//! GetParameter call, so a native SecureString's current value is never
//! decrypted for the check; a missing key is still refused by name.

mod common;

use common::{Kind, World};

#[test]
fn rotate_checks_existence_without_reading_the_value() {
    let mut w = World::new(Kind::Ssm);
    let first = b"first-native-value-1".to_vec();
    w.secret(&first);
    w.ok(&["put", "staging", "api", "TOKEN", "--native"], &first);

    w.proxy().reset_counts();
    let second = b"second-value-after-rotate".to_vec();
    w.secret(&second);
    let out = w.ok(&["rotate", "staging", "api", "TOKEN"], &second);
    assert_eq!(out.stdout_str().trim(), "staging/api/TOKEN version 2");
    let counts = w.proxy().counts();
    assert_eq!(counts.get("GetParameter"), None, "{counts:?}");
    assert_eq!(counts.get("DescribeParameters"), Some(&1), "{counts:?}");
    assert_eq!(
        w.reveal("staging", "api", "TOKEN", &[]).stdout,
        second,
        "the rotated value"
    );

    let out = w.sk(&["rotate", "staging", "api", "MISSING"], b"some-value-here");
    assert_ne!(out.status, 0);
    assert!(
        out.stderr_str().contains(
            "staging/api/MISSING does not exist: rotate adds a version to an existing secret"
        ),
        "{}",
        out.stderr_str()
    );
    w.assert_no_leaks();
}
