//! The webhook over TLS on loopback, beside a bare hyper + rustls server
//! that returns a canned AdmissionReview answer, measured in the same run.
//!
//! ```text
//! cargo bench -p sidekey-injector --bench webhook
//! # the same against another build of the injector (a baseline commit):
//! SIDEKEY_BENCH_INJECTOR=/path/to/sidekey-injector cargo bench -p sidekey-injector --bench webhook
//! ```
//!
//! - The injector is the real binary (release-like `bench` profile) as its
//!   own process, audit records to /dev/null, logs at `warn`.
//! - The baseline runs in this process on its own 2-thread runtime: it
//!   reads the whole body and answers with the bytes the injector gave for
//!   the same review (same size), over the same TLS and HTTP/2 settings.
//! - Load: `h2load` (Debian package `nghttp2-client`, installed with
//!   apt-get when missing) over HTTP/2 with TLS and keep-alive, one
//!   typical opted-in pod review (about 2.5 KB) repeated:
//!   - fixed rate: 2,000 reviews/s (4 connections x 500/s) for
//!     `SIDEKEY_BENCH_SECONDS` (default 5) after 2 s of warm-up;
//!     p50/p99 from h2load's per-request log;
//!   - maximum: a sweep of the load's concurrency ([`LEVELS`]: 64 to
//!     1,024 reviews in flight, as connections x streams), as fast as
//!     each server answers, for the same time. A server's maximum is its
//!     best level: with few reviews in flight the client waits on answers
//!     and the CPUs idle (at 64 in flight both servers leave 10-15 % of
//!     the machine unused), so one fixed level measures latency as much
//!     as capacity, and the slower server more so;
//!   - at each level, the injector again with the same pod not opted in
//!     (the planner's skip path: what the server costs without a patch);
//!   - the injector's peak RSS (VmHWM) after all runs;
//!   - beside each run, the server process's CPU time (user + system,
//!     from /proc) per request over h2load's measured window: the
//!     baseline's is this process's (nothing else here runs meanwhile).
//!
//!   All runs are repeated `SIDEKEY_BENCH_ROUNDS` times (default 3),
//!   interleaved (at each level the baseline, the injector and the skip
//!   path back to back, in the reverse order every other round), and each
//!   figure is the median over the rounds: the machines are shared, and a
//!   burst of load from elsewhere then hits the baseline and the injector
//!   alike. Each round's own ratio (its best injector run over its best
//!   baseline run, whatever their levels) is printed too, with their
//!   median and lowest, beside the ratio of the medians, and so is every
//!   level's ratio.
//!
//!   h2load runs on the same two cores, so the throughput ratio includes
//!   the client's share of the machine; the servers' own cost is the CPU
//!   per review, printed beside it.
//!
//! Prints two tables (fixed rate; the sweep), the maxima and the ratios,
//! the fixed rate's p99, the RSS, and one JSON line (`BENCH_JSON {...}`).
//! Run without `--bench` (e.g. by `cargo test --benches`) it only says how
//! to run it.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Requests per second at the fixed rate, and how it is split.
const RATE: u32 = 2_000;
const RATE_CLIENTS: u32 = 4;
/// The maximum's concurrency sweep: (connections, streams per connection).
/// Streams stay below the servers' limit of 250 per connection.
const LEVELS: [(u32, u32); 4] = [(8, 8), (8, 32), (16, 32), (16, 64)];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "webhook benchmark: run it with `cargo bench -p sidekey-injector --bench webhook`"
        );
        return;
    }
    if let Err(e) = run() {
        eprintln!("webhook benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    ensure_h2load()?;
    let seconds: u32 = std::env::var("SIDEKEY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: u32 = std::env::var("SIDEKEY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(3);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (ca, leaf, cert, key) = common::write_certs(dir.path());
    let body_path = dir.path().join("review.json");
    let review = serde_json::to_vec(&common::injectable("bench-uid")).unwrap();
    std::fs::write(&body_path, &review).unwrap();
    // The same pod without the opt-in: the planner skips it.
    let skip_path = dir.path().join("review-skip.json");
    let skip = serde_json::to_vec(&common::review(
        "bench-skip",
        "team-a",
        "CREATE",
        common::pod(serde_json::json!({})),
    ))
    .unwrap();
    std::fs::write(&skip_path, &skip).unwrap();

    // The injector, as a process.
    let binary = std::env::var_os("SIDEKEY_BENCH_INJECTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sidekey-injector")));
    println!("webhook benchmark: injector {}", binary.display());
    let mut injector = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SIDEKEY_LOG", "warn,sidekey_injector::server=info")
        .env("POD_NAMESPACE", "sidekey")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the injector: {e}"))?;
    let injector_addr = read_listen_addr(&mut injector)?;
    let pid = injector.id();

    // One answer from the injector: the baseline serves the same bytes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let canned = runtime.block_on(async {
        let mut client = common::Client::connect(injector_addr, &[&ca.der], common::Alpn::H2)
            .await
            .map_err(|e| format!("connecting to the injector: {e}"))?;
        let a = client.send("POST", "/mutate", review.clone()).await?;
        if a.status != 200 || a.response().get("patch").is_none() {
            return Err(format!("the injector did not inject: {}", a.text()));
        }
        Ok::<_, String>(a.body)
    })?;
    let baseline_addr = runtime.block_on(start_baseline(&leaf, canned.clone()));
    let rss_idle = vm_kb(pid, "VmRSS").unwrap_or(0);

    println!(
        "webhook benchmark: review {} bytes, answer {} bytes, {rounds} rounds of {seconds} s runs (medians), HTTP/2 over TLS 1.3, loopback",
        review.len(),
        canned.len()
    );
    let (rate_clients, rate_each) = (RATE_CLIENTS.to_string(), (RATE / RATE_CLIENTS).to_string());
    let fixed_args = ["-c", &rate_clients, "-m", "1", "--rps", &rate_each];
    let baseline_url = format!("https://127.0.0.1:{}/mutate", baseline_addr.port());
    let injector_url = format!("https://127.0.0.1:{}/mutate", injector_addr.port());
    // The baseline serves from this process.
    let own_pid = std::process::id();
    // Each round runs the fixed rate on both servers, then each level on
    // the baseline, the injector and the skip path back to back, so a
    // burst of load from elsewhere hits both servers alike.
    let mut fixed: [Vec<Run>; 2] = Default::default();
    // sweep[level][0 baseline, 1 injector, 2 skip path]: one run per round.
    let mut sweep: Vec<[Vec<Run>; 3]> = vec![Default::default(); LEVELS.len()];
    for round in 1..=rounds {
        for (i, (label, url, server)) in [
            ("baseline", &baseline_url, own_pid),
            ("injector", &injector_url, pid),
        ]
        .into_iter()
        .enumerate()
        {
            let run = h2load(url, &body_path, dir.path(), &fixed_args, seconds, server)?;
            report(round, rounds, &format!("{label} {RATE}/s"), &run);
            fixed[i].push(run);
        }
        for (level, &(conns, streams)) in LEVELS.iter().enumerate() {
            let (conns_text, streams_text) = (conns.to_string(), streams.to_string());
            let args = ["-c", &conns_text, "-m", &streams_text];
            let mut order = [
                (0, "baseline", &baseline_url, &body_path, own_pid),
                (1, "injector", &injector_url, &body_path, pid),
                (2, "skip path", &injector_url, &skip_path, pid),
            ];
            // Every other round in the reverse order: no server always
            // follows the same one.
            if round % 2 == 0 {
                order.reverse();
            }
            for (i, label, url, body, server) in order {
                let run = h2load(url, body, dir.path(), &args, seconds, server)?;
                report(round, rounds, &format!("{label} {conns}x{streams}"), &run);
                sweep[level][i].push(run);
            }
        }
    }
    let [base_fixed, inj_fixed] = [0, 1].map(|i| Run::median(&fixed[i]));
    let medians: Vec<[Run; 3]> = sweep
        .iter()
        .map(|runs| [0, 1, 2].map(|i| Run::median(&runs[i])))
        .collect();
    // Each server's maximum: its best level (by median throughput).
    let best = |i: usize| {
        (0..LEVELS.len())
            .max_by(|&a, &b| medians[a][i].rps.total_cmp(&medians[b][i].rps))
            .unwrap()
    };
    let [base_level, inj_level, skip_level] = [0, 1, 2].map(best);
    let base_max = medians[base_level][0];
    let inj_max = medians[inj_level][1];
    let skip_max = medians[skip_level][2];
    let ratio = inj_max.rps / base_max.rps;
    // Each round's own ratio: its best injector run over its best baseline
    // run, whatever their levels (so up to about a minute and a half
    // apart). The best of four single runs picks up noise upwards, on the
    // baseline's plateau most, so this is the more conservative figure.
    let mut round_ratios: Vec<f64> = (0..rounds as usize)
        .map(|r| {
            let top = |i: usize| {
                sweep
                    .iter()
                    .map(|runs| runs[i][r].rps)
                    .fold(0.0_f64, f64::max)
            };
            top(1) / top(0)
        })
        .collect();
    let rounds_text = round_ratios
        .iter()
        .map(|r| format!("{:.1} %", r * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    let rounds_json = round_ratios.clone();
    round_ratios.sort_by(f64::total_cmp);
    let round_ratio_median = round_ratios[round_ratios.len() / 2];
    let round_ratio_lowest = round_ratios[0];
    let level_name = |l: usize| format!("{}x{}", LEVELS[l].0, LEVELS[l].1);
    let rss_peak = vm_kb(pid, "VmHWM").unwrap_or(0);

    println!();
    println!("Fixed rate, {RATE} reviews/s ({RATE_CLIENTS} connections, one stream each):");
    println!();
    println!("| server   | achieved req/s | p50 ms | p99 ms | server CPU us/req |");
    println!("|----------|----------------|--------|--------|-------------------|");
    for (name, run) in [("baseline", base_fixed), ("injector", inj_fixed)] {
        println!(
            "| {name:<8} | {:>14.0} | {:>6.3} | {:>6.3} | {:>17.1} |",
            run.rps, run.p50_ms, run.p99_ms, run.cpu_us
        );
    }
    println!();
    println!("As fast as each server answers, by reviews in flight (connections x streams):");
    println!();
    println!("| in flight | baseline req/s | CPU us/req | p99 ms | injector req/s | CPU us/req | p99 ms | injector/baseline | skip path req/s | CPU us/req |");
    println!("|-----------|----------------|------------|--------|----------------|------------|--------|-------------------|-----------------|------------|");
    for (l, [base, inj, skip]) in medians.iter().enumerate() {
        println!(
            "| {:>9} | {:>14.0} | {:>10.1} | {:>6.2} | {:>14.0} | {:>10.1} | {:>6.2} | {:>15.1} % | {:>15.0} | {:>10.1} |",
            level_name(l),
            base.rps,
            base.cpu_us,
            base.p99_ms,
            inj.rps,
            inj.cpu_us,
            inj.p99_ms,
            inj.rps / base.rps * 100.0,
            skip.rps,
            skip.cpu_us
        );
    }
    println!();
    println!(
        "maximum: baseline {:.0} req/s ({} in flight, {:.1} us CPU/req), injector {:.0} req/s ({}, {:.1} us), skip path {:.0} req/s ({})",
        base_max.rps,
        level_name(base_level),
        base_max.cpu_us,
        inj_max.rps,
        level_name(inj_level),
        inj_max.cpu_us,
        skip_max.rps,
        level_name(skip_level)
    );
    println!(
        "injector / baseline max throughput (target >= 70 %): median of the rounds {:.1} %, lowest {:.1} % (each round: {rounds_text}); ratio of the medians {:.1} %",
        round_ratio_median * 100.0,
        round_ratio_lowest * 100.0,
        ratio * 100.0
    );
    println!(
        "CPU per review at the maxima: baseline {:.1} us, injector {:.1} us ({:.0} %; h2load shares the two cores, so throughput differs less)",
        base_max.cpu_us,
        inj_max.cpu_us,
        base_max.cpu_us / inj_max.cpu_us * 100.0
    );
    println!(
        "injector p99 at {RATE} reviews/s: {:.3} ms (target < 1 ms; baseline {:.3} ms)",
        inj_fixed.p99_ms, base_fixed.p99_ms
    );
    println!(
        "injector RSS: {:.1} MB idle, {:.1} MB peak under load (VmHWM; target < 30 MB)",
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    let level_json = |l: usize, run: &Run| {
        serde_json::json!({"connections": LEVELS[l].0, "streams": LEVELS[l].1,
            "rps": run.rps, "p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "cpu_us_per_req": run.cpu_us})
    };
    let sweep_json: Vec<serde_json::Value> = medians
        .iter()
        .enumerate()
        .map(|(l, [base, inj, skip])| {
            serde_json::json!({"baseline": level_json(l, base), "injector": level_json(l, inj),
                "injector_skip_path": level_json(l, skip)})
        })
        .collect();
    println!(
        "BENCH_JSON {}",
        serde_json::json!({
            "review_bytes": review.len(),
            "seconds": seconds,
            "rounds": rounds,
            "fixed_rate": RATE,
            "baseline": {"fixed_rps": base_fixed.rps, "fixed_p50_ms": base_fixed.p50_ms, "fixed_p99_ms": base_fixed.p99_ms,
                          "max": level_json(base_level, &base_max)},
            "injector": {"fixed_rps": inj_fixed.rps, "fixed_p50_ms": inj_fixed.p50_ms, "fixed_p99_ms": inj_fixed.p99_ms,
                          "max": level_json(inj_level, &inj_max),
                          "rss_idle_kb": rss_idle, "rss_peak_kb": rss_peak},
            "injector_skip_path": {"max": level_json(skip_level, &skip_max)},
            "sweep": sweep_json,
            "max_ratio": ratio,
            "max_ratio_rounds_median": round_ratio_median,
            "max_ratio_rounds_lowest": round_ratio_lowest,
            "max_ratio_rounds": rounds_json,
        })
    );

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = injector.wait();
    Ok(())
}

fn ensure_h2load() -> Result<(), String> {
    let found = || {
        Command::new("h2load")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return Ok(());
    }
    eprintln!("h2load not found: installing nghttp2-client with apt-get");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "nghttp2-client"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed", args.join(" ")));
        }
    }
    if found() {
        Ok(())
    } else {
        Err("h2load is still missing after installing nghttp2-client".to_owned())
    }
}

fn read_listen_addr(child: &mut std::process::Child) -> Result<SocketAddr, String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.split("addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            let addr = addr
                .parse()
                .map_err(|_| format!("bad address in {line:?}"))?;
            // Keep draining stderr so the injector never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
    }
    Err("the injector exited before listening".to_owned())
}

/// A bare hyper + rustls server: reads the body, answers `canned`.
async fn start_baseline(leaf: &common::Leaf, canned: Bytes) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let builder = Arc::new(builder);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let canned = canned.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let canned = canned.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let mut r = Response::new(Full::new(canned));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

/// Prints one run's figures as it ends (stderr: progress, not results).
fn report(round: u32, rounds: u32, label: &str, run: &Run) {
    eprintln!(
        "round {round}/{rounds} {label:<20} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  server CPU {:.1} us/req",
        run.rps, run.p50_ms, run.p99_ms, run.cpu_us
    );
}

/// One h2load run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server process's CPU time (user + system) per request over the
    /// measured window, in microseconds: what a review costs the server,
    /// whatever else the machine is doing.
    cpu_us: f64,
}

impl Run {
    /// The median of each figure over `runs` (not empty).
    fn median(runs: &[Run]) -> Run {
        let med = |f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Run {
            rps: med(|r| r.rps),
            p50_ms: med(|r| r.p50_ms),
            p99_ms: med(|r| r.p99_ms),
            cpu_us: med(|r| r.cpu_us),
        }
    }
}

/// One h2load run against the server process `pid` (2 s of warm-up, then
/// `seconds` measured).
fn h2load(
    url: &str,
    body: &Path,
    dir: &Path,
    extra: &[&str],
    seconds: u32,
    pid: u32,
) -> Result<Run, String> {
    let log: PathBuf = dir.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    // The server's CPU time over h2load's measured window (after its
    // warm-up), read beside it.
    let cpu = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let before = cpu_ticks(pid)?;
        std::thread::sleep(std::time::Duration::from_secs(u64::from(seconds)));
        Some(cpu_ticks(pid)?.saturating_sub(before))
    });
    let out = Command::new("h2load")
        .args(extra)
        .args(["-t", "1", "--warm-up-time", "2", "-D", &seconds.to_string()])
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/json"])
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .output()
        .map_err(|e| format!("h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "requests: N total, N started, N done, N succeeded, 0 failed, 0 errored, 0 timeout"
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .ok_or_else(|| format!("no requests line in h2load output:\n{text}"))?;
    if !requests.contains(" 0 failed, 0 errored") {
        return Err(format!("h2load saw failures: {requests}"));
    }
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.trim_end_matches(" req/s").parse::<f64>().ok())
        .ok_or_else(|| format!("no req/s in h2load output:\n{text}"))?;
    let mut micros: Vec<u64> = std::fs::read_to_string(&log)
        .map_err(|e| format!("h2load log: {e}"))?
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let _start = cols.next()?;
            let status = cols.next()?;
            let took = cols.next()?.parse::<u64>().ok()?;
            (status == "200").then_some(took)
        })
        .collect();
    if micros.is_empty() {
        return Err("h2load logged no successful request".to_owned());
    }
    micros.sort_unstable();
    let pick = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    let ticks = cpu
        .join()
        .ok()
        .flatten()
        .ok_or("cannot read the server's CPU time")?;
    // /proc reports CPU time in USER_HZ ticks: 100 per second on Linux.
    let cpu_us = ticks as f64 * 10_000.0 / (rps * f64::from(seconds));
    Ok(Run {
        rps,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        cpu_us,
    })
}

/// User + system CPU time of process `pid`, all its threads, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*` line of /proc/PID/status, in kB.
fn vm_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
