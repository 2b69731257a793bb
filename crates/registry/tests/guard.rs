//! The guard (`Settings::guard`, the injector's `--registry-allow`) and
//! the pod's credentials against a real registry (Debian's docker-registry
//! on loopback, TLS from a generated CA, htpasswd auth; images from umoci
//! pushed by skopeo), and against small redirecting servers: which hosts
//! are contacted, through the checking proxy, and in which order
//! credentials are tried.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sidekey_registry::{
    Credentials, FailureReason, LazyCredentials, Need, Platform, PodCredentials, Registry, Settings,
};
use sidekey_test_support::registry::{ImageSpec, TestRegistry};

fn fixture() -> Option<&'static TestRegistry> {
    static F: OnceLock<Option<TestRegistry>> = OnceLock::new();
    F.get_or_init(|| {
        let missing = TestRegistry::tools_missing();
        if !missing.is_empty() {
            sidekey_test_support::skip(&format!("registry tools missing: {}", missing.join(", ")));
            return None;
        }
        let registry = TestRegistry::start().expect("registry");
        let spec = ImageSpec {
            arch: "amd64",
            entrypoint: Some(&["/bin/app", "--flag"]),
            cmd: Some(&["serve"]),
        };
        registry.push_image("team/app:1", &spec).expect("push");
        registry.push_image("team/secret:1", &spec).expect("push");
        registry.push_image("team/cached:1", &spec).expect("push");
        Some(registry)
    })
    .as_ref()
}

fn guarded(r: &TestRegistry, allow: &[&str], password: Option<&str>) -> Registry {
    let credentials = match password {
        Some(p) => Credentials::from_docker_config(r.docker_config(p).as_bytes(), "static file")
            .expect("config"),
        None => Credentials::none(),
    };
    Registry::new(Settings {
        ca_bundle: r.ca_pem().as_bytes().to_vec(),
        credentials,
        guard: true,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ..Settings::default()
    })
    .expect("settings")
}

fn lookup(
    r: &Registry,
    image: &str,
    pod: &LazyCredentials<'_>,
) -> Result<sidekey_registry::ImageConfig, sidekey_registry::LookupError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let needs = [Need {
        container: "app".into(),
        image: image.into(),
    }];
    rt.block_on(r.lookup_all_with(&needs, &Platform::default(), pod))
        .remove("app")
        .expect("answer")
}

#[test]
fn a_loopback_registry_is_refused_unless_its_exact_host_port_is_allowed() {
    let Some(f) = fixture() else { return };
    let image = format!("{}/team/app:1", f.host());
    let before = f.manifest_gets("team/app");
    for allow in [
        &[][..],
        &["127.0.0.1"][..],
        &["*.example.com", "127.0.0.1"][..],
    ] {
        let r = guarded(f, allow, Some(f.password()));
        let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
        assert_eq!(e.reason, FailureReason::Refused, "{allow:?}: {e}");
        let m = e.to_string();
        for part in [
            image.as_str(),
            &format!("{} is a loopback address", f.host()),
            "--registry-allow",
        ] {
            assert!(m.contains(part), "{allow:?}: {part:?} in {m}");
        }
        assert_eq!(r.stats().failures(FailureReason::Refused), 1);
    }
    assert_eq!(
        f.manifest_gets("team/app"),
        before,
        "the registry saw no request"
    );

    // Named exactly: read through the checking proxy.
    let r = guarded(f, &[&f.host()], Some(f.password()));
    let c = lookup(&r, &image, &LazyCredentials::none()).expect("allowed");
    assert_eq!(c.entrypoint, ["/bin/app", "--flag"]);
    assert!(f.manifest_gets("team/app") > before);
}

#[test]
fn an_allow_list_refuses_every_other_host_naming_the_rule() {
    let Some(f) = fixture() else { return };
    let r = guarded(f, &["ghcr.io", "*.corp.example"], Some(f.password()));
    let image = format!("{}/team/app:1", f.host());
    let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
    assert_eq!(e.reason, FailureReason::Refused);
    let m = e.to_string();
    assert!(
        m.contains(&image)
            && m.contains(&format!(
                "{} is not matched by --registry-allow (ghcr.io, *.corp.example)",
                f.host()
            )),
        "{m}"
    );
}

#[test]
fn a_name_is_checked_by_the_addresses_it_resolves_to() {
    let Some(f) = fixture() else { return };
    let port = f.host().rsplit_once(':').unwrap().1.to_owned();
    let image = format!("localhost:{port}/team/app:1");
    // The name is allowed (any port), not exempt: what it resolves to is
    // checked, and the exact 127.0.0.1:PORT exempts only that literal.
    let r = guarded(f, &["localhost", &f.host()], Some(f.password()));
    let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
    assert_eq!(e.reason, FailureReason::Refused);
    let m = e.to_string();
    assert!(
        m.contains(&format!("localhost:{port} resolves to")) && m.contains("loopback"),
        "{m}"
    );
    // Named exactly: allowed (the certificate names localhost too).
    let mut auth = Credentials::none();
    auth.extend(
        &Credentials::from_docker_config(
            format!(
                "{{\"auths\":{{\"localhost:{port}\":{{\"username\":\"sidekey\",\"password\":\"{}\"}}}}}}",
                f.password()
            )
            .as_bytes(),
            "t",
        )
        .unwrap(),
    );
    let r = Registry::new(Settings {
        ca_bundle: f.ca_pem().as_bytes().to_vec(),
        credentials: auth,
        guard: true,
        allow: vec![format!("localhost:{port}")],
        ..Settings::default()
    })
    .unwrap();
    lookup(&r, &image, &LazyCredentials::none()).expect("allowed by name");
}

/// A plain-HTTP server on loopback answering every request with a redirect
/// to `location`; counts requests.
fn redirector(location: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let c = Arc::clone(&c);
            let location = location.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        c.fetch_add(1, Ordering::SeqCst);
                        let answer = format!(
                            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                        );
                        if s.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (host, count)
}

/// A listener that counts connections (and answers none).
fn counter() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for s in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            keep.push(s);
        }
    });
    (host, count)
}

#[test]
fn redirects_are_checked_by_the_same_rules() {
    let (target, connections) = counter();
    for (location, expected) in [
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254:443 is a link-local address".to_owned(),
        ),
        (
            format!("https://{target}/v2/"),
            format!("{target} is a loopback address"),
        ),
        (
            format!("http://{target}/v2/"),
            format!("plain HTTP to {target} refused"),
        ),
    ] {
        let (registry, requests) = redirector(location.clone());
        let r = Registry::new(Settings {
            insecure: vec![registry.clone()],
            guard: true,
            ..Settings::default()
        })
        .unwrap();
        let image = format!("{registry}/team/app:1");
        let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
        assert!(
            requests.load(Ordering::SeqCst) > 0,
            "the registry was asked"
        );
        assert_eq!(e.reason, FailureReason::Refused, "{location}: {e}");
        let m = e.to_string();
        assert!(
            m.contains(&image) && m.contains(&expected),
            "{location}: {m}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no redirect target was connected to"
    );
}

#[test]
fn credentials_anonymous_then_pull_secrets_then_the_static_file() {
    let Some(f) = fixture() else { return };
    let image = format!("{}/team/secret:1", f.host());
    let right = Credentials::from_docker_config(
        f.docker_config(f.password()).as_bytes(),
        "pull secret team-a/regcred",
    )
    .unwrap();
    let other = Credentials::from_docker_config(
        br#"{"auths":{"ghcr.io":{"username":"u","password":"ghcr-pw-7d1"}}}"#,
        "pull secret team-a/ghcr",
    )
    .unwrap();

    // The pull secret is right, the static file wrong: accepted.
    let wrong = "wrong-static-pw-55a2";
    let r = guarded(f, &[&f.host()], Some(wrong));
    let mut pod = PodCredentials::new();
    pod.add("pull secret team-a/ghcr", other.clone());
    pod.add("pull secret team-a/regcred", right);
    let c = lookup(&r, &image, &LazyCredentials::ready(pod)).expect("pull secret");
    assert_eq!(c.cmd, ["serve"]);

    // No entry for the registry, a missing secret, and a wrong static
    // file: denied naming the secrets and the rules, no value shown.
    let r = guarded(f, &[&f.host()], Some(wrong));
    let mut pod = PodCredentials::new();
    pod.add("pull secret team-a/ghcr", other);
    pod.problem("pull secret team-a/gone: not found in namespace team-a");
    let e = lookup(&r, &image, &LazyCredentials::ready(pod)).unwrap_err();
    assert_eq!(e.reason, FailureReason::Credentials);
    let m = e.to_string();
    for part in [
        image.as_str(),
        "refused access anonymously and with 1 credential(s)",
        &format!(
            "pull secret team-a/ghcr has no entry for {} (it has: ghcr.io)",
            f.host()
        ),
        "pull secret team-a/gone: not found",
    ] {
        assert!(m.contains(part), "{part:?} in {m}");
    }
    for secret in [wrong, f.password(), "ghcr-pw-7d1"] {
        assert!(!m.contains(secret), "{m}");
    }
    assert_eq!(r.stats().failures(FailureReason::Credentials), 1);
}

#[test]
fn pull_secrets_are_read_only_when_anonymous_access_is_refused_and_scope_the_cache() {
    let Some(f) = fixture() else { return };
    let image = format!("{}/team/cached:1", f.host());
    let r = guarded(f, &[&f.host()], None);
    let reads = Arc::new(AtomicUsize::new(0));
    let pod = |reads: Arc<AtomicUsize>, password: &str| {
        let creds =
            Credentials::from_docker_config(f.docker_config(password).as_bytes(), "s").unwrap();
        LazyCredentials::new(Box::pin(async move {
            reads.fetch_add(1, Ordering::SeqCst);
            let mut p = PodCredentials::new();
            p.add("pull secret team-a/regcred", creds);
            p
        }))
    };
    let first = pod(Arc::clone(&reads), f.password());
    lookup(&r, &image, &first).expect("with the pull secret");
    assert!(first.was_read());
    assert_eq!(r.stats().fetches(), 1);

    // Another pod with the same credential is answered from the cache
    // (after the anonymous refusal), without reading the image again.
    let second = pod(Arc::clone(&reads), f.password());
    lookup(&r, &image, &second).expect("cached for the same credential");
    assert!(second.was_read(), "the cache entry is the credential's");
    assert_eq!(r.stats().cache_hits(), 1);

    // A pod of another namespace without credentials, or with wrong ones,
    // is not given what the first pod's secret read.
    let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
    assert_eq!(e.reason, FailureReason::Unauthorized, "{e}");
    let wrong = pod(Arc::clone(&reads), "wrong-pw-81c3");
    let e = lookup(&r, &image, &wrong).unwrap_err();
    assert_eq!(e.reason, FailureReason::Unauthorized, "{e}");
    assert!(!e.to_string().contains("wrong-pw-81c3"), "{e}");
    assert_eq!(r.stats().cache_hits(), 1);
    assert_eq!(reads.load(Ordering::SeqCst), 3);
}

#[test]
fn an_allowed_registry_that_is_down_is_unreachable_naming_the_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let r = Registry::new(Settings {
        guard: true,
        allow: vec![host.clone()],
        ..Settings::default()
    })
    .unwrap();
    let image = format!("{host}/team/app:1");
    let e = lookup(&r, &image, &LazyCredentials::none()).unwrap_err();
    assert_eq!(e.reason, FailureReason::Unreachable, "{e}");
    let m = e.to_string();
    assert!(
        m.contains(&image) && m.contains(&format!("cannot connect to {host}")),
        "{m}"
    );
}
