//! Parameter names.

use rstest::rstest;
use sidekey_model::{
    environment_path, prefix_path, service_path, Environment, Key, ParamPath, PathError, Prefix,
    Selector, Service,
};

fn parts() -> (Prefix, Environment, Service, Key) {
    (
        Prefix::default(),
        Environment::parse("staging").unwrap(),
        Service::parse("api").unwrap(),
        Key::parse("DB_PASSWORD").unwrap(),
    )
}

#[test]
fn builds_and_parses() {
    let (p, e, s, k) = parts();
    let path = ParamPath::new(&p, &e, &s, &k);
    assert_eq!(path.to_string(), "/sidekey/staging/api/DB_PASSWORD");
    assert_eq!(
        ParamPath::parse(&p, "/sidekey/staging/api/DB_PASSWORD"),
        Ok(path.clone())
    );
    assert_eq!(path.prefix(), &p);
    assert_eq!(path.environment(), &e);
    assert_eq!(path.service(), &s);
    assert_eq!(path.key(), &k);
    assert_eq!(prefix_path(&p), "/sidekey/");
    assert_eq!(environment_path(&p, &e), "/sidekey/staging/");
    assert_eq!(service_path(&p, &e, &s), "/sidekey/staging/api/");
    assert_eq!(
        path.with_selector(&Selector::Latest),
        "/sidekey/staging/api/DB_PASSWORD"
    );
    assert_eq!(
        path.with_selector(&Selector::Version(3)),
        "/sidekey/staging/api/DB_PASSWORD:3"
    );
}

#[rstest]
#[case("", "must start with '/'")]
#[case("sidekey/staging/api/K", "must start with '/'")]
#[case("/", "must not end with '/'")]
#[case("/sidekey/staging/api/K/", "must not end with '/'")]
#[case("/sidekey//api/K", "segment 2 is empty")]
#[case("//sidekey/staging/api/K", "segment 1 is empty")]
#[case("/other/staging/api/K", "not under the prefix \"/sidekey/\"")]
#[case("/sidekeyx/staging/api/K", "not under the prefix")]
#[case("/sidekey/staging/api", "2 segments after the prefix, exactly 3")]
#[case("/sidekey/staging/api/K/L", "4 segments after the prefix")]
#[case("/sidekey", "0 segments")]
#[case("/sidekey/Staging/api/K", "invalid environment \"Staging\"")]
#[case("/sidekey/staging/a..b/K", "invalid service")]
#[case("/sidekey/staging/api/K-1", "invalid key")]
fn parse_rejects(#[case] name: &str, #[case] want: &str) {
    let err = ParamPath::parse(&Prefix::default(), name).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("invalid parameter name "), "{msg}");
    assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    if !matches!(err, PathError::Name { .. }) {
        assert!(
            msg.contains("/{prefix}/{environment}/{service}/{key}"),
            "{msg}"
        );
    }
}

#[test]
fn other_prefix() {
    let p = Prefix::parse("team").unwrap();
    let path = ParamPath::parse(&p, "/team/dev/web/TOKEN").unwrap();
    assert_eq!(path.prefix().as_str(), "team");
    assert!(ParamPath::parse(&Prefix::default(), "/team/dev/web/TOKEN").is_err());
}
