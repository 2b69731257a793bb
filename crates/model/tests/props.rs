//! Property tests: parsers never panic, errors are one line, names
//! round-trip.

use proptest::prelude::*;
use sidekey_model::{
    parse_environments, parse_pick, parse_picks, parse_services, Environment, Key, Label,
    ParamPath, Prefix, Service,
};

fn one_line(msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.contains('\n') && !msg.contains('\r'), "{:?}", msg);
    prop_assert!(msg.is_ascii(), "{:?}", msg);
    Ok(())
}

/// Arbitrary unicode, plus strings built from the characters that matter.
fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        "[ -~\\t\\n\\r\\u{0}\\u{a0}\\u{ff2b}]{0,40}",
        "[a-zA-Z0-9_./@%=,: \\\\-]{0,40}",
        "[A-Z_]{1,5} ?= ?[a-z.]{0,5}/[A-Za-z_]{0,5}(@[a-z0-9]{0,4})?",
    ]
}

macro_rules! check_name {
    ($ty:ty, $s:expr) => {{
        match <$ty>::parse($s) {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), $s);
                prop_assert_eq!(name.to_string().parse::<$ty>().unwrap(), name);
            }
            Err(e) => one_line(&e.to_string())?,
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(s in input()) {
        check_name!(Prefix, &s);
        check_name!(Environment, &s);
        check_name!(Service, &s);
        check_name!(Key, &s);
        check_name!(Label, &s);
        if let Err(e) = parse_services(&s) { one_line(&e.to_string())?; }
        if let Err(e) = parse_environments(&s) { one_line(&e.to_string())?; }
        match parse_pick(&s) {
            Ok(pick) => prop_assert_eq!(parse_pick(&pick.to_string()).unwrap(), pick),
            Err(e) => one_line(&e.to_string())?,
        }
        if let Err(e) = parse_picks(&s) { one_line(&e.to_string())?; }
        if let Err(e) = ParamPath::parse(&Prefix::default(), &s) { one_line(&e.to_string())?; }
    }

    #[test]
    fn valid_names_round_trip(
        p in "[a-z0-9][a-z0-9_.-]{0,62}[a-z0-9]",
        e in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
        s in "[a-z0-9][a-z0-9._-]{0,62}",
        k in "[A-Za-z_][A-Za-z0-9_]{0,127}",
        l in "[A-Za-z._-][A-Za-z0-9._-]{0,99}",
    ) {
        check_name!(Prefix, &p);
        check_name!(Environment, &e);
        check_name!(Service, &s);
        check_name!(Key, &k);
        check_name!(Label, &l);
        prop_assert!(Environment::parse(&e).is_ok());
        prop_assert!(Key::parse(&k).is_ok());
    }

    #[test]
    fn param_path_round_trips(
        p in "[a-z0-9][a-z0-9_.-]{0,20}[a-z0-9]",
        e in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
        s in "[a-z0-9][a-z0-9._-]{0,62}",
        k in "[A-Za-z_][A-Za-z0-9_]{0,127}",
    ) {
        let (Ok(p), Ok(s)) = (Prefix::parse(&p), Service::parse(&s)) else {
            // "aws…"/"ssm…" prefixes and services with ".." are rejected
            return Ok(());
        };
        let e = Environment::parse(&e).unwrap();
        let k = Key::parse(&k).unwrap();
        let path = ParamPath::new(&p, &e, &s, &k);
        prop_assert_eq!(ParamPath::parse(&p, &path.to_string()).unwrap(), path);
    }
}
