//! Lookup latency against the local registry (Debian's docker-registry on
//! loopback, TLS, htpasswd): cold (a new lookup each time: TLS handshake,
//! the 401 then Basic-auth round, manifest, config blob) and cached; then
//! cold and re-resolved again with the guard (the injector's: every
//! connection through the checking proxy), against the unguarded run as
//! the baseline.
//! Prints numbers; `cargo bench -p sidekey-registry --bench lookup`.

use std::time::{Duration, Instant};

use sidekey_registry::{Credentials, Need, Platform, Registry, Settings};
use sidekey_test_support::registry::{ImageSpec, TestRegistry};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<28} n={:<6} p50={:>10.3?} p90={:>10.3?} p99={:>10.3?} max={:>10.3?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

fn main() {
    let missing = TestRegistry::tools_missing();
    if !missing.is_empty() {
        eprintln!("skipped: missing {}", missing.join(", "));
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let spec = ImageSpec {
        arch: "amd64",
        entrypoint: Some(&["/bin/app"]),
        cmd: Some(&["serve"]),
    };
    registry.push_image("bench/app:1", &spec).expect("push");
    let arm = ImageSpec {
        arch: "arm64",
        ..spec.clone()
    };
    registry
        .push_index("bench/multi:1", &[spec, arm])
        .expect("push index");
    let settings = || Settings {
        ca_bundle: registry.ca_pem().as_bytes().to_vec(),
        credentials: Credentials::from_docker_config(
            registry.docker_config(registry.password()).as_bytes(),
            "bench",
        )
        .expect("config"),
        ..Settings::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, repo) in [
        ("image", "bench/app:1"),
        ("index (2 platforms)", "bench/multi:1"),
    ] {
        let needs = [Need {
            container: "app".into(),
            image: format!("{}/{repo}", registry.host()),
        }];
        let platform = Platform::default();
        let none = Credentials::none();
        let mut cold = Vec::new();
        for _ in 0..30 {
            let r = Registry::new(settings()).expect("registry");
            let t = Instant::now();
            let out = rt.block_on(r.lookup_all(&needs, &platform, &none));
            cold.push(t.elapsed());
            out["app"].as_ref().expect("lookup");
        }
        report(&format!("cold {name}"), cold);
        // A tag past its TTL on a warm lookup: the registry is asked again
        // over the kept client (connections, tokens).
        let r = Registry::new(Settings {
            tag_ttl: Duration::ZERO,
            ..settings()
        })
        .expect("registry");
        let mut refetch = Vec::new();
        for _ in 0..31 {
            let t = Instant::now();
            let out = rt.block_on(r.lookup_all(&needs, &platform, &none));
            refetch.push(t.elapsed());
            out["app"].as_ref().expect("lookup");
        }
        refetch.remove(0);
        report(&format!("re-resolved {name}"), refetch);
        let r = Registry::new(settings()).expect("registry");
        rt.block_on(r.lookup_all(&needs, &platform, &none))["app"]
            .as_ref()
            .expect("lookup");
        let mut cached = Vec::new();
        for _ in 0..10_000 {
            let t = Instant::now();
            let out = rt.block_on(r.lookup_all(&needs, &platform, &none));
            cached.push(t.elapsed());
            assert!(out["app"].is_ok());
        }
        report(&format!("cached {name}"), cached);
    }
    // The guard's cost: the same cold and re-resolved lookups, unguarded
    // and guarded, interleaved in one run.
    let needs = [Need {
        container: "app".into(),
        image: format!("{}/bench/app:1", registry.host()),
    }];
    let platform = Platform::default();
    let none = Credentials::none();
    let guarded = |on: bool, ttl: Duration| Settings {
        guard: on,
        allow: vec![registry.host()],
        tag_ttl: ttl,
        ..settings()
    };
    let (mut cold_off, mut cold_on) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        for on in [false, true] {
            let r = Registry::new(guarded(on, Duration::from_secs(300))).expect("registry");
            let t = Instant::now();
            let out = rt.block_on(r.lookup_all(&needs, &platform, &none));
            let took = t.elapsed();
            out["app"].as_ref().expect("lookup");
            if on {
                cold_on.push(took)
            } else {
                cold_off.push(took)
            }
        }
    }
    report("cold image, no guard", cold_off);
    report("cold image, guard", cold_on);
    let off = Registry::new(guarded(false, Duration::ZERO)).expect("registry");
    let on = Registry::new(guarded(true, Duration::ZERO)).expect("registry");
    let (mut re_off, mut re_on) = (Vec::new(), Vec::new());
    for i in 0..31 {
        for (r, v) in [(&off, &mut re_off), (&on, &mut re_on)] {
            let t = Instant::now();
            let out = rt.block_on(r.lookup_all(&needs, &platform, &none));
            let took = t.elapsed();
            out["app"].as_ref().expect("lookup");
            if i > 0 {
                v.push(took);
            }
        }
    }
    report("re-resolved image, no guard", re_off);
    report("re-resolved image, guard", re_on);
}
