//! The lookup against a real registry (Debian's docker-registry on loopback,
//! TLS from a generated CA, htpasswd auth), images built by umoci and pushed
//! by skopeo.

use std::sync::OnceLock;
use std::time::Duration;

use sidekey_registry::{Credentials, FailureReason, ImageConfig, Platform, Registry, Settings};
use sidekey_test_support::registry::{HangingServer, ImageSpec, TestRegistry};

struct Fixture {
    registry: TestRegistry,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let missing = TestRegistry::tools_missing();
        if !missing.is_empty() {
            sidekey_test_support::skip(&format!("registry tools missing: {}", missing.join(", ")));
            return None;
        }
        let registry = TestRegistry::start().expect("registry");
        let amd = ImageSpec {
            arch: "amd64",
            entrypoint: Some(&["/bin/app", "--flag"]),
            cmd: Some(&["serve", "--port=8080"]),
        };
        registry.push_image("team/app:1", &amd).expect("push app");
        registry
            .push_image(
                "team/cmdonly:1",
                &ImageSpec {
                    arch: "amd64",
                    entrypoint: None,
                    cmd: Some(&["/usr/bin/worker", "run"]),
                },
            )
            .expect("push cmdonly");
        let arm_same = ImageSpec {
            arch: "arm64",
            ..amd.clone()
        };
        registry
            .push_index("team/multi:same", &[amd.clone(), arm_same])
            .expect("push multi:same");
        let arm_diff = ImageSpec {
            arch: "arm64",
            entrypoint: Some(&["/bin/app-arm64"]),
            cmd: Some(&["serve"]),
        };
        registry
            .push_index("team/multi:diff", &[amd, arm_diff])
            .expect("push multi:diff");
        Some(Fixture { registry })
    })
    .as_ref()
}

fn settings(f: &Fixture, password: Option<&str>) -> Settings {
    let credentials = match password {
        Some(p) => Credentials::from_docker_config(f.registry.docker_config(p).as_bytes(), "test")
            .expect("config"),
        None => Credentials::none(),
    };
    Settings {
        ca_bundle: f.registry.ca_pem().as_bytes().to_vec(),
        credentials,
        ..Settings::default()
    }
}

fn lookup_one(
    r: &Registry,
    image: &str,
    platform: &Platform,
) -> Result<ImageConfig, sidekey_registry::LookupError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let needs = [sidekey_registry::Need {
        container: "app".into(),
        image: image.into(),
    }];
    rt.block_on(r.lookup_all(&needs, platform, &Credentials::none()))
        .remove("app")
        .expect("answer for app")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn entrypoint_and_cmd_come_from_a_private_registry_over_tls() {
    let Some(f) = fixture() else { return };
    let r = Registry::new(settings(f, Some(f.registry.password()))).unwrap();
    let image = format!("{}/team/app:1", f.registry.host());
    let c = lookup_one(&r, &image, &Platform::default()).expect("lookup");
    assert_eq!(c.entrypoint, strings(&["/bin/app", "--flag"]));
    assert_eq!(c.cmd, strings(&["serve", "--port=8080"]));

    let image = format!("{}/team/cmdonly:1", f.registry.host());
    let c = lookup_one(&r, &image, &Platform::default()).expect("lookup");
    assert!(c.entrypoint.is_empty(), "{c:?}");
    assert_eq!(c.cmd, strings(&["/usr/bin/worker", "run"]));
    assert_eq!(r.stats().lookups(), 2);
    assert_eq!(r.stats().fetches(), 2);
}

#[test]
fn an_index_is_read_for_the_pods_platform_or_all_platforms_must_agree() {
    let Some(f) = fixture() else { return };
    let r = Registry::new(settings(f, Some(f.registry.password()))).unwrap();
    let host = f.registry.host();
    let same = lookup_one(&r, &format!("{host}/team/multi:same"), &Platform::default())
        .expect("platforms agree");
    assert_eq!(same.entrypoint, strings(&["/bin/app", "--flag"]));

    let e = lookup_one(&r, &format!("{host}/team/multi:diff"), &Platform::default())
        .expect_err("platforms disagree");
    assert_eq!(e.reason, FailureReason::Platform);
    let m = e.to_string();
    assert!(m.contains("team/multi:diff"), "{m}");
    assert!(
        m.contains("linux/amd64") && m.contains("linux/arm64"),
        "{m}"
    );
    assert!(
        m.contains("/bin/app-arm64") && m.contains("kubernetes.io/arch"),
        "{m}"
    );

    let arm = Platform::from_node_selector([("kubernetes.io/arch", "arm64")]);
    let c = lookup_one(&r, &format!("{host}/team/multi:diff"), &arm).expect("arm64");
    assert_eq!(c.entrypoint, strings(&["/bin/app-arm64"]));
    assert_eq!(c.cmd, strings(&["serve"]));
    let amd = Platform::from_node_selector([("kubernetes.io/arch", "amd64")]);
    let c = lookup_one(&r, &format!("{host}/team/multi:diff"), &amd).expect("amd64");
    assert_eq!(c.entrypoint, strings(&["/bin/app", "--flag"]));

    let s390 = Platform::from_node_selector([("kubernetes.io/arch", "s390x")]);
    let e = lookup_one(&r, &format!("{host}/team/multi:diff"), &s390).expect_err("s390x");
    assert_eq!(e.reason, FailureReason::Platform);
    assert!(e.to_string().contains("no linux/s390x image"), "{e}");
}

#[test]
fn an_unknown_tag_is_not_found_naming_the_image() {
    let Some(f) = fixture() else { return };
    let r = Registry::new(settings(f, Some(f.registry.password()))).unwrap();
    let image = format!("{}/team/app:nope", f.registry.host());
    let e = lookup_one(&r, &image, &Platform::default()).expect_err("unknown tag");
    assert_eq!(e.reason, FailureReason::NotFound, "{e}");
    assert!(e.to_string().contains(&image), "{e}");
    assert!(
        e.answer.contains("MANIFEST_UNKNOWN")
            || e.answer.contains("ManifestUnknown")
            || e.answer.contains("manifest unknown"),
        "{e}"
    );
    assert_eq!(r.stats().failures(FailureReason::NotFound), 1);
}

#[test]
fn a_wrong_or_missing_password_is_unauthorized_and_never_shown() {
    let Some(f) = fixture() else { return };
    let image = format!("{}/team/app:1", f.registry.host());
    let wrong = "wrong-password-4c1d";
    let r = Registry::new(settings(f, Some(wrong))).unwrap();
    let e = lookup_one(&r, &image, &Platform::default()).expect_err("wrong password");
    assert_eq!(e.reason, FailureReason::Unauthorized, "{e}");
    let m = e.to_string();
    assert!(m.contains(&image) && m.contains("1 credential"), "{m}");
    assert!(
        !m.contains(wrong) && !m.contains(f.registry.password()),
        "{m}"
    );

    let r = Registry::new(settings(f, None)).unwrap();
    let e = lookup_one(&r, &image, &Platform::default()).expect_err("anonymous");
    assert_eq!(e.reason, FailureReason::Unauthorized, "{e}");
    assert!(
        e.to_string().contains("no credentials are configured"),
        "{e}"
    );
}

#[test]
fn the_registry_must_present_a_certificate_from_a_trusted_ca() {
    let Some(f) = fixture() else { return };
    let mut s = settings(f, Some(f.registry.password()));
    s.ca_bundle.clear();
    let r = Registry::new(s).unwrap();
    let image = format!("{}/team/app:1", f.registry.host());
    let e = lookup_one(&r, &image, &Platform::default()).expect_err("untrusted CA");
    assert_eq!(e.reason, FailureReason::Unreachable, "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn a_second_lookup_is_served_from_the_cache_and_a_tag_expires() {
    let Some(f) = fixture() else { return };
    let r = Registry::new(settings(f, Some(f.registry.password()))).unwrap();
    let image = format!("{}/team/app:1", f.registry.host());
    // Other tests read team/app too: count this test's requests by the
    // registry's answers to ours alone, via a fresh repository tag.
    let image2 = format!("{}/team/app:1", f.registry.host());
    let before = f.registry.manifest_gets("team/app");
    lookup_one(&r, &image, &Platform::default()).expect("cold");
    let after_cold = f.registry.manifest_gets("team/app");
    assert!(after_cold > before, "the cold lookup reached the registry");
    let c = lookup_one(&r, &image2, &Platform::default()).expect("cached");
    assert_eq!(c.entrypoint, strings(&["/bin/app", "--flag"]));
    assert_eq!(r.stats().cache_hits(), 1);
    assert_eq!(r.stats().fetches(), 1);

    // A TTL of zero: the tag is resolved again.
    let mut s = settings(f, Some(f.registry.password()));
    s.tag_ttl = Duration::ZERO;
    let r = Registry::new(s).unwrap();
    lookup_one(&r, &image, &Platform::default()).expect("cold");
    lookup_one(&r, &image, &Platform::default()).expect("again");
    assert_eq!(r.stats().cache_hits(), 0);
    assert_eq!(r.stats().fetches(), 2);
}

#[test]
fn the_cache_is_bounded() {
    let Some(f) = fixture() else { return };
    let mut s = settings(f, Some(f.registry.password()));
    s.cache_entries = 1;
    let r = Registry::new(s).unwrap();
    let host = f.registry.host();
    lookup_one(&r, &format!("{host}/team/app:1"), &Platform::default()).unwrap();
    lookup_one(&r, &format!("{host}/team/cmdonly:1"), &Platform::default()).unwrap();
    assert_eq!(r.cached_entries(), 1);
    lookup_one(&r, &format!("{host}/team/app:1"), &Platform::default()).unwrap();
    assert_eq!(r.stats().cache_hits(), 0, "app:1 was evicted");
    assert_eq!(r.stats().fetches(), 3);
}

#[test]
fn a_registry_that_hangs_is_cut_off_at_the_budget() {
    let hang = HangingServer::start().unwrap();
    let r = Registry::new(Settings {
        budget: Duration::from_millis(300),
        ..Settings::default()
    })
    .unwrap();
    let image = format!("{}/team/app:1", hang.host());
    let e = lookup_one(&r, &image, &Platform::default()).expect_err("hangs");
    assert_eq!(e.reason, FailureReason::Timeout, "{e}");
    let m = e.to_string();
    assert!(m.contains(&image) && m.contains("budget of 300ms"), "{m}");
    assert_eq!(r.stats().failures(FailureReason::Timeout), 1);
}
