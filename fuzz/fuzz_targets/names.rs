//! Names, picks, parameter paths and annotations (`sidekey-model`, and the
//! planner's annotation reader). Every parser runs on the same input.
//! Checked besides no panic:
//!
//! - a name that parses is kept exactly as given, and parses again;
//! - a pick (and a pick list) written back in its annotation syntax parses
//!   to an equal pick; the parameter it reads is under the environment and
//!   parses back to the same path; a parameter name that parses is written
//!   back as given;
//! - every error message is one line without control characters (they
//!   quote the input escaped);
//! - annotations: the input's lines are `key=value` (a key without `/`
//!   gets the `sidekey.io/` prefix); reading them never panics, and a
//!   refusal gives at least one reason, each one line.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sidekey_fuzz::one_line;
use sidekey_model::annotations::{Delivery, FilesFormat, OnMissing};
use sidekey_model::{
    parse_environments, parse_pick, parse_picks, parse_services, Environment, Key, Label,
    ParamPath, Prefix, Service,
};
use sidekey_patch::{is_injected, parse_annotations, wants_injection};

macro_rules! name {
    ($t:ty, $s:expr) => {
        match <$t>::parse($s) {
            Ok(n) => {
                assert_eq!(n.as_str(), $s, "a name is kept as given");
                assert_eq!(<$t>::parse(n.as_str()).as_ref(), Ok(&n));
            }
            Err(e) => one_line(&e),
        }
    };
}

macro_rules! choice {
    ($t:ty, $s:expr) => {
        match <$t>::parse($s) {
            Ok(c) => assert_eq!(<$t>::parse(c.as_str()), Ok(c)),
            Err(e) => one_line(&e),
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    name!(Prefix, s);
    name!(Environment, s);
    name!(Service, s);
    name!(Key, s);
    name!(Label, s);
    choice!(Delivery, s);
    choice!(FilesFormat, s);
    choice!(OnMissing, s);

    match parse_services(s) {
        Ok(list) => {
            let joined: Vec<&str> = list.iter().map(Service::as_str).collect();
            assert_eq!(parse_services(&joined.join(",")), Ok(list));
        }
        Err(e) => one_line(&e),
    }
    match parse_environments(s) {
        Ok(list) => {
            let joined: Vec<&str> = list.iter().map(Environment::as_str).collect();
            assert_eq!(parse_environments(&joined.join(",")), Ok(list));
        }
        Err(e) => one_line(&e),
    }

    let prefix = Prefix::default();
    let environment = Environment::parse("staging").expect("a valid environment");
    match parse_pick(s) {
        Ok(pick) => {
            let text = pick.to_string();
            assert_eq!(parse_pick(&text).as_ref(), Ok(&pick), "{text:?}");
            let path = pick.param_path(&prefix, &environment);
            assert_eq!(path.environment(), &environment);
            let written = path.to_string();
            assert!(written.starts_with("/sidekey/staging/"), "{written:?}");
            assert_eq!(ParamPath::parse(&prefix, &written).as_ref(), Ok(&path));
            let _ = path.with_selector(&pick.selector);
        }
        Err(e) => one_line(&e),
    }
    match parse_picks(s) {
        Ok(picks) => {
            let text: Vec<String> = picks.iter().map(ToString::to_string).collect();
            assert_eq!(parse_picks(&text.join(",")).as_ref(), Ok(&picks));
        }
        Err(e) => one_line(&e),
    }
    match ParamPath::parse(&prefix, s) {
        Ok(path) => assert_eq!(path.to_string(), s),
        Err(e) => one_line(&e),
    }

    let mut annotations = BTreeMap::new();
    for line in s.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = if key.contains('/') {
            key.to_owned()
        } else {
            format!("sidekey.io/{key}")
        };
        annotations.insert(key, value.to_owned());
    }
    let _ = (wants_injection(&annotations), is_injected(&annotations));
    let defaults = sidekey_fuzz::config().settings().defaults();
    match parse_annotations(&annotations, defaults) {
        Ok(a) => {
            let _ = format!("{a:?}");
        }
        Err(denials) => {
            assert!(!denials.is_empty(), "a refusal without a reason");
            for d in &denials {
                one_line(d);
            }
        }
    }
});
