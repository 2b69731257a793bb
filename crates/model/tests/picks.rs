//! Explicit picks.

use rstest::rstest;
use sidekey_model::{parse_pick, parse_picks, Environment, Label, PickError, Prefix, Selector};

#[rstest]
#[case("DB=api/DB_PASSWORD", "DB", "api", "DB_PASSWORD", Selector::Latest)]
#[case(
    "DB=api/DB_PASSWORD@3",
    "DB",
    "api",
    "DB_PASSWORD",
    Selector::Version(3)
)]
#[case(
    "DB=api/DB_PASSWORD@03",
    "DB",
    "api",
    "DB_PASSWORD",
    Selector::Version(3)
)]
#[case(
    "DB=api/DB_PASSWORD@prod",
    "DB",
    "api",
    "DB_PASSWORD",
    Selector::Label(Label::parse("prod").unwrap())
)]
#[case(
    "DB=api/K@v1.2-rc_3",
    "DB",
    "api",
    "K",
    Selector::Label(Label::parse("v1.2-rc_3").unwrap())
)]
#[case("  DB = api/K  ", "DB", "api", "K", Selector::Latest)]
#[case(
    "\tdb_url=\tweb.v2/url@18446744073709551615 ",
    "db_url",
    "web.v2",
    "url",
    Selector::Version(u64::MAX)
)]
#[case("_X=s-1/_Y", "_X", "s-1", "_Y", Selector::Latest)]
fn good(
    #[case] s: &str,
    #[case] var: &str,
    #[case] service: &str,
    #[case] key: &str,
    #[case] selector: Selector,
) {
    let pick = parse_pick(s).unwrap();
    assert_eq!(pick.var.as_str(), var);
    assert_eq!(pick.service.as_str(), service);
    assert_eq!(pick.key.as_str(), key);
    assert_eq!(pick.selector, selector);
    assert_eq!(parse_pick(&pick.to_string()).unwrap(), pick);
}

#[rstest]
#[case("/abs/path", "invalid pick \"/abs/path\": there is no '='")]
#[case("A=/sidekey/prod/api/K", "leaves the environment: absolute")]
#[case("a=../x/K", "leaves the environment: \"..\"")]
#[case("A=svc/../K", "leaves the environment: \"..\"")]
#[case("A=./K", "leaves the environment")]
#[case("A=svc/..@3", "leaves the environment")]
#[case("A=svc%2fK", "leave the environment: percent-encoding")]
#[case("A=svc/K%00", "percent-encoding")]
#[case("A=svc\\K", "leave the environment: a backslash")]
#[case("A=other-env/svc/K", "leaves the environment: only service/KEY")]
#[case("A=sidekey/prod/svc/K", "another environment or prefix")]
#[case(
    "A=svc/ＫEY",
    "leave the environment: non-ASCII character '\\u{ff2b}' at position 7"
)]
#[case("A=svc/K\u{a0}", "non-ASCII")]
#[case("A=svc/K@0", "version 0 does not exist")]
#[case("A=svc/K@00", "version 0 does not exist")]
#[case("A=svc/K@18446744073709551616", "too large")]
#[case("A=svc/K@", "the version or label after '@' is empty")]
#[case(
    "A=svc/K@aws-x",
    "bad label: invalid label \"aws-x\": it must not start with \"aws\""
)]
#[case("A=svc/K@ssm", "must not start with \"ssm\"")]
#[case("A=svc/K@1x", "first character '1'")]
#[case("A=svc/K@a@b", "character '@'")]
#[case("=svc/K", "the variable name is empty")]
#[case("  = svc/K", "the variable name is empty")]
#[case("A=", "the parameter is empty")]
#[case("A=svc", "no '/' between service and key")]
#[case("A=svc/", "the key is empty")]
#[case("A=svc/@3", "the key is empty")]
#[case("A", "no '='")]
#[case("", "it is empty")]
#[case("1A=svc/K", "bad variable name: invalid key \"1A\"")]
#[case("A-B=svc/K", "bad variable name")]
#[case("A=Svc/K", "bad service: invalid service \"Svc\": upper-case")]
#[case("A=a..b/K", "must not contain \"..\"")]
#[case("A=svc/K-1", "bad key: invalid key \"K-1\"")]
#[case("A=svc /K", "bad service")]
#[case("A=svc/K=x", "bad key")]
#[case("A=svc/K\nB=svc/L", "control character '\\n' at position 8")]
#[case("A\u{0}=svc/K", "control character '\\u{0}' at position 2")]
fn bad(#[case] s: &str, #[case] want: &str) {
    let err = parse_pick(s).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    assert!(msg.starts_with("invalid pick "), "{msg}");
    assert!(!msg.contains('\n'), "{msg:?}");
    assert!(msg.is_ascii(), "{msg:?}");
    if !matches!(err, PickError::Name { .. }) {
        assert!(msg.contains("ENV_NAME=service/KEY"), "{msg}");
    }
}

#[test]
fn names_the_pick_quoted() {
    let msg = parse_pick(" A=svc/../K ").unwrap_err().to_string();
    assert!(msg.starts_with("invalid pick \"A=svc/../K\": "), "{msg}");
}

#[rstest]
#[case("", 0)]
#[case("   ", 0)]
#[case("A=svc/K", 1)]
#[case("A=svc/K, B=svc/K@2 ,C=other/K@prod", 3)]
fn lists(#[case] s: &str, #[case] n: usize) {
    assert_eq!(parse_picks(s).unwrap().len(), n);
}

#[rstest]
#[case(
    "A=svc/K,A=svc/L",
    "variable \"A\" is set twice, by \"A=svc/K\" and by \"A=svc/L\""
)]
#[case("A=svc/K, B=x/y, A = svc/K", "variable \"A\" is set twice")]
#[case("A=svc/K,", "item 2 is empty")]
#[case(",A=svc/K", "item 1 is empty")]
#[case("A=svc/K,,B=svc/L", "item 2 is empty")]
#[case("A=svc/K, ,B=svc/L", "item 2 is empty")]
#[case("A=svc/K,B=../K", "invalid pick \"B=../K\"")]
fn list_rejects(#[case] s: &str, #[case] want: &str) {
    let msg = parse_picks(s).unwrap_err().to_string();
    assert!(msg.contains(want), "{msg:?} should contain {want:?}");
}

#[test]
fn variables_differing_in_case_are_distinct() {
    let picks = parse_picks("a=svc/K,A=svc/K").unwrap();
    assert_eq!(picks.len(), 2);
}

#[test]
fn selector_suffix_and_path() {
    assert_eq!(Selector::Latest.ssm_suffix(), None);
    assert_eq!(Selector::Version(3).ssm_suffix().as_deref(), Some(":3"));
    let prod = Selector::Label(Label::parse("prod").unwrap());
    assert_eq!(prod.ssm_suffix().as_deref(), Some(":prod"));
    assert!(Selector::default().is_latest());

    let pick = parse_pick("DB=api/DB_PASSWORD@prod").unwrap();
    let path = pick.param_path(&Prefix::default(), &Environment::parse("pr-7").unwrap());
    assert_eq!(path.to_string(), "/sidekey/pr-7/api/DB_PASSWORD");
    assert_eq!(
        path.with_selector(&pick.selector),
        "/sidekey/pr-7/api/DB_PASSWORD:prod"
    );
}

#[rstest]
#[case("A=svc/K\nB=svc/L")]
#[case("A=svc/K\u{0}")]
#[case("A=s\tvc/K")]
fn control_characters(#[case] s: &str) {
    assert!(matches!(
        parse_pick(s),
        Err(PickError::ControlCharacter { .. })
    ));
}
