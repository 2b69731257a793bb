//! Planning a typical pod (the env-basic golden case) against the baseline
//! of deserializing the same pod into `k8s_openapi`'s typed `Pod` with
//! serde_json, in the same run. Target: the plan well under 20 µs.
//!
//! - `read + plan`: what the injector does per review: read the pod's JSON
//!   text into a [`PodView`], decide, and write the patch's JSON text;
//! - `plan`: the decision and the patch text from an already-read view;
//! - `baseline`: a full typed parse of the same text, no planning.
//!
//! `cargo bench -p sidekey-patch --bench plan -- --quick` for a quick figure.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use sidekey_patch::{plan, Config, Decision, PodView, Request};

fn fixture() -> (String, String) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/env-basic/review.json"
    );
    let review: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pod_json = serde_json::to_string(&review["request"]["object"]).unwrap();
    let ns = review["request"]["namespace"].as_str().unwrap().to_owned();
    (pod_json, ns)
}

fn bench(c: &mut Criterion) {
    let (pod_json, namespace) = fixture();
    let config = Config::default_for(Some("sidekey-system"));
    let request = Request {
        namespace: &namespace,
        user: Some("system:serviceaccount:kube-system:replicaset-controller"),
    };
    let pod = PodView::from_json(&pod_json).unwrap();
    assert!(matches!(plan(&pod, &request, &config), Decision::Inject(_)));

    let mut group = c.benchmark_group("env-basic");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("read + plan (the injector's work per review)", |b| {
        b.iter(|| {
            let pod = PodView::from_json(black_box(&pod_json)).unwrap();
            plan(&pod, black_box(&request), black_box(&config))
        })
    });
    group.bench_function("plan (from a read pod)", |b| {
        b.iter(|| plan(black_box(&pod), black_box(&request), black_box(&config)))
    });
    group.bench_function("baseline: serde_json parse into k8s_openapi Pod", |b| {
        b.iter(|| serde_json::from_str::<Pod>(black_box(&pod_json)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
