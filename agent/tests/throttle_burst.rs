//! The burst benchmark (issue 19), run by `scripts/bench-burst`: N agents
//! started at the same instant, each for the pod shape (services
//! `api` and `web`, base environment `staging` under `pr-1`, 20 keys),
//! against moto behind the proxy's token bucket for SSM reads at a given
//! rate. Prints one row per (rate, N) and writes them as CSV for the plot.
//! Ignored by `cargo test`: it prints numbers and asserts no time.
//!
//! Knobs: `SIDEKEY_BURST_N` (default `50,200,500`), `SIDEKEY_BURST_RATES`
//! (SSM reads per second, default `40,100`), `SIDEKEY_BENCH_AGENT` (the
//! agent binary, default the test build), `SIDEKEY_BURST_CSV` (where the
//! rows go), `SIDEKEY_BURST_TIMEOUT` (the agents' SIDEKEY_TIMEOUT, default
//! unset: the agent's default).

mod common;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kind, World};

/// SSM calls one pod of this shape needs at least: one walk per (layer,
/// service), 5 keys each, one page.
const MIN_SSM_PER_POD: u64 = 4;
/// KMS calls one pod needs at least: one per distinct data key.
const MIN_KMS_PER_POD: u64 = 4;

fn list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: {s:?} is not a number"))
        })
        .collect()
}

fn shaped_world() -> World {
    let mut w = World::new(Kind::Ssm);
    for env in ["staging", "pr-1"] {
        for service in ["api", "web"] {
            let items: Vec<(String, String)> = (0..5)
                .map(|i| {
                    (
                        format!(
                            "{}_{}_{i}",
                            service.to_uppercase(),
                            env.replace('-', "_").to_uppercase()
                        ),
                        format!("value-{env}-{service}-{i}-secret"),
                    )
                })
                .collect();
            w.import(env, service, &items);
        }
    }
    w
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug)]
struct Row {
    rate: f64,
    n: usize,
    started: usize,
    failed_69: usize,
    failed_other: usize,
    last: Duration,
    ideal: Duration,
    ssm_calls: u64,
    kms_calls: u64,
    amplification: f64,
    p50: Duration,
    p99: Duration,
    first_failure: Option<String>,
}

fn run(w: &World, agent: &PathBuf, rate: f64, n: usize, timeout: Option<&str>) -> Row {
    let proxy = w.proxy();
    proxy.clear_limits();
    proxy.reset_counts();
    // AWS's bucket: `rate` per second, a second's worth at once.
    proxy.limit_ssm_reads(rate, rate.max(1.0) as u32);
    let mut env = w.agent_env("pr-1", "api,web", "");
    env.retain(|(k, _)| k != "SIDEKEY_TIMEOUT" && k != "SIDEKEY_LOG");
    if let Some(t) = timeout {
        env.push(("SIDEKEY_TIMEOUT".into(), t.to_owned()));
    }
    env.push(("SIDEKEY_INHERIT".into(), "staging".into()));
    env.push(("SIDEKEY_LOG".into(), "error".into()));
    let errors_path = w.dir.path().join(format!("burst-{rate}-{n}.stderr"));
    let errors = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&errors_path)
        .expect("stderr file");
    let start = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let child = Command::new(agent)
            .args(["exec", "--", "/bin/true"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors.try_clone().expect("stderr file"))
            .spawn()
            .expect("spawn the agent");
        children.push(Some(child));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let (mut failed_69, mut failed_other) = (0, 0);
    let mut left = n;
    // SIDEKEY_BURST_TRACE: each second's SSM calls and throttled answers.
    let trace = std::env::var_os("SIDEKEY_BURST_TRACE").is_some();
    let mut next_trace = Duration::from_secs(1);
    let (mut last_ssm, mut last_throttled) = (0, 0);
    while left > 0 {
        if trace && start.elapsed() >= next_trace {
            let ssm = proxy.total_for_service("AmazonSSM");
            let throttled = proxy.throttled("ssm-get");
            eprintln!(
                "trace rate={rate} n={n} t={:>2}s ssm/s={:>4} throttled/s={:>4} running={left}",
                next_trace.as_secs(),
                ssm - last_ssm,
                throttled - last_throttled
            );
            (last_ssm, last_throttled) = (ssm, throttled);
            next_trace += Duration::from_secs(1);
        }
        for slot in children.iter_mut() {
            let Some(child) = slot.as_mut() else { continue };
            if let Some(status) = child.try_wait().expect("wait") {
                let at = start.elapsed();
                match status.code() {
                    Some(0) => latencies.push(at),
                    Some(69) => failed_69 += 1,
                    _ => failed_other += 1,
                }
                *slot = None;
                left -= 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    latencies.sort();
    let ssm_calls = proxy.total_for_service("AmazonSSM");
    let kms_calls = proxy.total_for_service("TrentService");
    let min_ssm = MIN_SSM_PER_POD * n as u64;
    let first_failure = std::fs::read_to_string(&errors_path).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("sidekey-agent:"))
            .map(str::to_owned)
    });
    Row {
        rate,
        n,
        started: latencies.len(),
        failed_69,
        failed_other,
        last: latencies.last().copied().unwrap_or_default(),
        ideal: Duration::from_secs_f64(min_ssm as f64 / rate),
        ssm_calls,
        kms_calls,
        amplification: (ssm_calls + kms_calls) as f64
            / ((MIN_SSM_PER_POD + MIN_KMS_PER_POD) * n as u64) as f64,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        first_failure,
    }
}

#[test]
#[ignore = "a benchmark: scripts/bench-burst runs it"]
fn burst() {
    let ns: Vec<usize> = list("SIDEKEY_BURST_N", "50,200,500");
    let rates: Vec<f64> = list("SIDEKEY_BURST_RATES", "40,100");
    let agent = std::env::var_os("SIDEKEY_BENCH_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(common::agent_bin);
    let timeout = std::env::var("SIDEKEY_BURST_TIMEOUT").ok();
    let w = shaped_world();
    let mut rows = Vec::new();
    for &rate in &rates {
        for &n in &ns {
            let row = run(&w, &agent, rate, n, timeout.as_deref());
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    println!(
        "| SSM reads/s | pods | started | failed (69) | failed (other) | last app started (s) | ideal (s) | last/ideal | SSM calls | KMS calls | amplification | p50 (s) | p99 (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut csv = String::from(
        "rate,pods,started,failed_69,failed_other,last_s,ideal_s,ssm_calls,kms_calls,amplification,p50_s,p99_s\n",
    );
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} | {} | {} |",
            r.rate,
            r.n,
            r.started,
            r.failed_69,
            r.failed_other,
            secs(r.last),
            secs(r.ideal),
            r.last.as_secs_f64() / r.ideal.as_secs_f64(),
            r.ssm_calls,
            r.kms_calls,
            r.amplification,
            secs(r.p50),
            secs(r.p99),
        );
        csv.push_str(&format!(
            "{},{},{},{},{},{:.3},{:.3},{},{},{:.3},{:.3},{:.3}\n",
            r.rate,
            r.n,
            r.started,
            r.failed_69,
            r.failed_other,
            r.last.as_secs_f64(),
            r.ideal.as_secs_f64(),
            r.ssm_calls,
            r.kms_calls,
            r.amplification,
            r.p50.as_secs_f64(),
            r.p99.as_secs_f64(),
        ));
    }
    for r in rows.iter().filter(|r| r.first_failure.is_some()) {
        println!(
            "first failure at {}/s, {} pods: {}",
            r.rate,
            r.n,
            r.first_failure.as_deref().unwrap_or("")
        );
    }
    if let Ok(path) = std::env::var("SIDEKEY_BURST_CSV") {
        std::fs::write(&path, csv).expect("write the CSV");
    }
}
