//! Planning a typical pod (the env-basic golden case, pre-parsed) against
//! the baseline of deserializing the same pod from JSON with serde_json,
//! in the same run. Target: the plan well under 20 µs.
//!
//! `cargo bench -p sidekey-patch --bench plan -- --quick` for a quick figure.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use sidekey_patch::{plan, Config, Decision, Request};

fn fixture() -> (String, Pod, String) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/env-basic/review.json"
    );
    let review: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pod_json = serde_json::to_string(&review["request"]["object"]).unwrap();
    let pod: Pod = serde_json::from_str(&pod_json).unwrap();
    let ns = review["request"]["namespace"].as_str().unwrap().to_owned();
    (pod_json, pod, ns)
}

fn bench(c: &mut Criterion) {
    let (pod_json, pod, namespace) = fixture();
    let config = Config::default_for(Some("sidekey-system"));
    let request = Request {
        namespace: &namespace,
        user: Some("system:serviceaccount:kube-system:replicaset-controller"),
    };
    assert!(matches!(plan(&pod, &request, &config), Decision::Inject(_)));

    let mut group = c.benchmark_group("env-basic");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("plan", |b| {
        b.iter(|| plan(black_box(&pod), black_box(&request), black_box(&config)))
    });
    group.bench_function("baseline: serde_json pod parse", |b| {
        b.iter(|| serde_json::from_str::<Pod>(black_box(&pod_json)).unwrap())
    });
    group.bench_function("plan + patch to JSON", |b| {
        b.iter(|| match plan(black_box(&pod), &request, &config) {
            Decision::Inject(p) => serde_json::to_vec(&p.patch).unwrap(),
            _ => unreachable!(),
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
