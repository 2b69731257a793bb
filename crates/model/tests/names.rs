//! Table tests for every name kind.

use rstest::rstest;
use sidekey_model::{
    parse_environments, parse_services, Environment, Key, Label, NameError, NameKind, Prefix,
    Service,
};

fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[rstest]
#[case("a")]
#[case("0")]
#[case("staging")]
#[case("pr-1234")]
#[case("a-b-c")]
#[case("9lives")]
#[case(&long('a', 63))]
fn environment_accepts(#[case] s: &str) {
    let env = Environment::parse(s).unwrap();
    assert_eq!(env.as_str(), s);
    assert_eq!(env.to_string(), s);
    assert_eq!(s.parse::<Environment>().unwrap(), env);
}

#[rstest]
#[case("", "empty")]
#[case(&long('a', 64), "at most 63")]
#[case(&long('a', 64), "64 characters long")]
#[case("Staging", "upper-case")]
#[case("Staging", "never lower-cased")]
#[case("Pr_1", "upper-case 'P' at position 1")]
#[case("pr_1", "character '_' at position 3")]
#[case("-abc", "first character '-'")]
#[case("abc-", "last character '-'")]
#[case("a.b", "character '.' at position 2")]
#[case("a b", "character ' ' at position 2")]
#[case("st\nage", "control character '\\n' at position 3")]
#[case("stagé", "non-ASCII character '\\u{e9}' at position 5")]
#[case("a/b", "'/'")]
fn environment_rejects(#[case] s: &str, #[case] rule: &str) {
    let err = Environment::parse(s).unwrap_err();
    assert_eq!(err.kind(), NameKind::Environment);
    let msg = err.to_string();
    assert!(msg.starts_with("invalid environment "), "{msg}");
    assert!(msg.contains("DNS-1123"), "{msg}");
    assert!(msg.contains(rule), "{msg:?} should contain {rule:?}");
    assert!(!msg.contains('\n'), "{msg:?}");
}

#[test]
fn environment_message_example() {
    let msg = Environment::parse("Pr_1").unwrap_err().to_string();
    assert_eq!(
        msg,
        "invalid environment \"Pr_1\": upper-case 'P' at position 1 is not allowed (names are \
         used as written, never lower-cased); it must be a DNS-1123 label (lower-case letters, \
         digits and '-', starting and ending with a letter or digit, at most 63 characters)"
    );
}

#[rstest]
#[case("api")]
#[case("a")]
#[case("api.v2")]
#[case("my_svc-1")]
#[case("svc.")]
#[case("0svc")]
#[case(&long('s', 63))]
fn service_accepts(#[case] s: &str) {
    assert_eq!(Service::parse(s).unwrap().as_str(), s);
}

#[rstest]
#[case("", "empty")]
#[case(&long('s', 64), "at most 63")]
#[case("Api", "upper-case")]
#[case("api/x", "character '/' at position 4")]
#[case(".", "first character '.'")]
#[case("..", "first character '.'")]
#[case("_svc", "first character '_'")]
#[case("-svc", "first character '-'")]
#[case("a..b", "must not contain \"..\"")]
#[case("api..", "must not contain \"..\"")]
#[case("api%2f", "character '%'")]
#[case("api\\x", "character '\\\\'")]
#[case("ａpi", "non-ASCII character '\\u{ff41}' at position 1")]
#[case("a\u{0}b", "control character '\\u{0}' at position 2")]
fn service_rejects(#[case] s: &str, #[case] rule: &str) {
    let err = Service::parse(s).unwrap_err();
    assert_eq!(err.kind(), NameKind::Service);
    let msg = err.to_string();
    assert!(msg.starts_with("invalid service "), "{msg}");
    assert!(msg.contains(rule), "{msg:?} should contain {rule:?}");
}

#[rstest]
#[case("DB_PASSWORD")]
#[case("db_password")]
#[case("MixedCase")]
#[case("_")]
#[case("_9")]
#[case("A1")]
#[case(&long('K', 128))]
fn key_accepts(#[case] s: &str) {
    let key = Key::parse(s).unwrap();
    assert_eq!(key.as_str(), s, "case is preserved");
}

#[rstest]
#[case("", "empty")]
#[case(&long('K', 129), "at most 128")]
#[case("1ABC", "first character '1'")]
#[case("DB-PASSWORD", "character '-' at position 3")]
#[case("DB.PASSWORD", "character '.' at position 3")]
#[case("DB PASSWORD", "character ' ' at position 3")]
#[case("DB=X", "character '='")]
#[case("ＫEY", "non-ASCII character '\\u{ff2b}' at position 1")]
#[case("K\tEY", "control character '\\t'")]
fn key_rejects(#[case] s: &str, #[case] rule: &str) {
    let err = Key::parse(s).unwrap_err();
    assert_eq!(err.kind(), NameKind::Key);
    let msg = err.to_string();
    assert!(msg.starts_with("invalid key "), "{msg}");
    assert!(msg.contains("environment variable name"), "{msg}");
    assert!(msg.contains(rule), "{msg:?} should contain {rule:?}");
}

#[rstest]
#[case("sidekey")]
#[case("a")]
#[case("team.secrets")]
#[case("my_prefix-2")]
#[case("as")]
#[case("sidekey-aws")]
#[case(&long('p', 64))]
fn prefix_accepts(#[case] s: &str) {
    assert_eq!(Prefix::parse(s).unwrap().as_str(), s);
}

#[rstest]
#[case("", "empty")]
#[case(&long('p', 65), "at most 64")]
#[case("/sidekey", "without slashes")]
#[case("side/key", "character '/' at position 5")]
#[case("Sidekey", "upper-case")]
#[case("aws", "must not start with \"aws\"")]
#[case("awsome", "must not start with \"aws\"")]
#[case("ssm-things", "must not start with \"ssm\"")]
#[case("-x", "first character '-'")]
#[case("x.", "last character '.'")]
#[case("x_", "last character '_'")]
fn prefix_rejects(#[case] s: &str, #[case] rule: &str) {
    let err = Prefix::parse(s).unwrap_err();
    assert_eq!(err.kind(), NameKind::Prefix);
    let msg = err.to_string();
    assert!(msg.starts_with("invalid prefix "), "{msg}");
    assert!(msg.contains(rule), "{msg:?} should contain {rule:?}");
}

#[test]
fn prefix_default_is_sidekey() {
    assert_eq!(Prefix::default().as_str(), "sidekey");
    assert_eq!(Prefix::default(), Prefix::parse(Prefix::DEFAULT).unwrap());
}

#[rstest]
#[case("prod")]
#[case("Prod")]
#[case("release-1.2_b")]
#[case(".hidden")]
#[case("_x")]
#[case("AW")]
#[case(&long('l', 100))]
fn label_accepts(#[case] s: &str) {
    assert_eq!(Label::parse(s).unwrap().as_str(), s);
}

#[rstest]
#[case("", "empty")]
#[case(&long('l', 101), "at most 100")]
#[case("1abc", "first character '1'")]
#[case("aws-x", "must not start with \"aws\"")]
#[case("AWSx", "must not start with \"aws\"")]
#[case("Ssm", "must not start with \"ssm\"")]
#[case("pr/od", "character '/'")]
#[case("pr:od", "character ':'")]
#[case("pr@od", "character '@'")]
fn label_rejects(#[case] s: &str, #[case] rule: &str) {
    let err = Label::parse(s).unwrap_err();
    assert_eq!(err.kind(), NameKind::Label);
    let msg = err.to_string();
    assert!(msg.starts_with("invalid label "), "{msg}");
    assert!(msg.contains(rule), "{msg:?} should contain {rule:?}");
}

#[test]
fn very_long_input_is_cut_in_message() {
    let input = long('x', 100_000);
    let msg = Service::parse(&input).unwrap_err().to_string();
    assert!(msg.len() < 1_000, "{}", msg.len());
    assert!(msg.contains("100000 characters"));
}

#[test]
fn traits_are_consistent() {
    let a = Service::parse("a").unwrap();
    let b: Service = "b".parse().unwrap();
    assert!(a < b);
    assert_eq!(AsRef::<str>::as_ref(&a), "a");
    assert_eq!(Service::try_from("a".to_owned()).unwrap(), a);
    assert_eq!(String::from(b.clone()), "b");
    assert_eq!(format!("{b:?}"), "Service(\"b\")");
}

#[rstest]
#[case("", &[])]
#[case("  ", &[])]
#[case("api", &["api"])]
#[case(" api , worker,db ", &["api", "worker", "db"])]
fn services_list(#[case] s: &str, #[case] want: &[&str]) {
    let got = parse_services(s).unwrap();
    let got: Vec<&str> = got.iter().map(Service::as_str).collect();
    assert_eq!(got, want);
}

#[rstest]
#[case("api,api", "duplicate service \"api\"")]
#[case("api, worker ,api", "duplicate service \"api\"")]
#[case("api,,db", "invalid service \"\": it is empty")]
#[case("api,", "invalid service \"\": it is empty")]
#[case("api,Db", "upper-case")]
fn services_list_rejects(#[case] s: &str, #[case] want: &str) {
    let msg = parse_services(s).unwrap_err().to_string();
    assert!(msg.contains(want), "{msg:?}");
}

#[test]
fn environments_list() {
    let got = parse_environments("staging, base").unwrap();
    assert_eq!(got[0].as_str(), "staging");
    assert_eq!(got[1].as_str(), "base");
    assert!(parse_environments("").unwrap().is_empty());
    let err = parse_environments("staging,staging").unwrap_err();
    assert_eq!(
        err,
        NameError::Duplicate {
            kind: NameKind::Environment,
            input: "staging".into()
        }
    );
    assert!(err
        .to_string()
        .contains("duplicate environment \"staging\""));
    assert!(parse_environments("Staging")
        .unwrap_err()
        .to_string()
        .contains("upper-case"));
}
