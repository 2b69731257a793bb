//! What a start costs: SSM calls by page and batch, KMS calls by distinct
//! data key, counted by the proxy in front of moto.

mod common;

use common::{os, probe_bin, Kind, Probe, World};

fn items(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}_{i:02}"),
                format!("value-{prefix}-{i:02}-secret"),
            )
        })
        .collect()
}

fn exec_probe(w: &mut World, env: &[(String, String)]) -> Probe {
    let args = [os("exec"), os("--"), probe_bin().into_os_string(), os("0")];
    let ran = w.agent(&args, env, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    Probe::parse(&ran.stdout)
}

#[test]
fn n_secrets_in_one_path_take_ceil_n_over_10_ssm_calls_and_one_kms_call() {
    let mut w = World::new(Kind::Ssm);
    for (service, n) in [("one", 7usize), ("many", 25)] {
        w.import("prod", service, &items(&service.to_uppercase(), n));
        w.proxy().reset_counts();
        let env = w.agent_env("prod", service, "");
        let probe = exec_probe(&mut w, &env);
        let counts = w.proxy().counts();
        eprintln!("{n} secrets in one path: {counts:?}");
        assert_eq!(
            w.proxy().count("GetParametersByPath"),
            n.div_ceil(10) as u64,
            "{counts:?}"
        );
        assert_eq!(
            w.proxy().total_for_service("AmazonSSM"),
            n.div_ceil(10) as u64
        );
        // One data key per service (the CLI's writes share it).
        assert_eq!(w.proxy().count("Decrypt"), 1, "{counts:?}");
        assert_eq!(w.proxy().total_for_service("TrentService"), 1);
        let delivered = probe
            .env
            .keys()
            .filter(|k| k.starts_with(service.to_uppercase().as_bytes()))
            .count();
        assert_eq!(delivered, n);
    }
}

#[test]
fn fifty_secrets_in_two_services_and_picks_batched_by_ten() {
    let mut w = World::new(Kind::Ssm);
    w.import("prod", "api", &items("API", 25));
    w.import("prod", "web", &items("WEB", 25));
    w.put("prod", "jobs", "EXTRA", b"extra-jobs-value");
    w.proxy().reset_counts();
    // Picks: three latest-version picks of a listed service cost nothing,
    // twelve with a version selector take two GetParameters calls (10 + 2),
    // and one of another service rides along in the same batches.
    let mut picks: Vec<String> = (0..3).map(|i| format!("P{i}=api/API_{i:02}")).collect();
    picks.extend((0..12).map(|i| format!("V{i}=web/WEB_{i:02}@1")));
    picks.push("J=jobs/EXTRA".to_owned());
    let env = w.agent_env("prod", "api,web", &picks.join(","));
    let probe = exec_probe(&mut w, &env);
    let counts = w.proxy().counts();
    eprintln!("50 secrets in 2 services + 16 picks: {counts:?}");
    assert_eq!(w.proxy().count("GetParametersByPath"), 6, "{counts:?}");
    assert_eq!(w.proxy().count("GetParameters"), 2, "{counts:?}");
    assert_eq!(w.proxy().total_for_service("AmazonSSM"), 8);
    // Three services, three data keys, three Decrypt calls at most, even
    // though picks and walks of one service decrypt in parallel.
    assert_eq!(w.proxy().count("Decrypt"), 3, "{counts:?}");
    let secrets = probe
        .env
        .keys()
        .filter(|k| !env.iter().any(|(name, _)| name.as_bytes() == k.as_slice()))
        .count();
    assert_eq!(secrets, 50 + 16);
    assert_eq!(
        probe.env.get(b"V11".as_slice()).map(Vec::as_slice),
        Some(b"value-WEB-11-secret".as_slice())
    );
}
