//! Start-to-exec benchmark of the agent, beside aws-cli fetching the same
//! parameters in the same run. Run it with `scripts/bench-agent`, which
//! builds the static release agent and installs aws-cli (PyPI) into
//! `target/bench-venv` first.
//!
//! Against a moto server of its own, behind the counting proxy: 50 secrets
//! in 2 services (25 each, sidekey envelopes). Each round runs, in turn,
//! `sidekey-agent exec -- /bin/true`, `aws ssm get-parameters-by-path
//! --recursive --with-decryption` for the same 50 parameters, and plain
//! `/bin/true` (the cost of starting any process), and one fetch by the
//! in-process floor: `boto3_floor.py` beside this file, one Python process
//! kept running with warm boto3 clients that makes the agent's calls (the
//! same pages, one KMS `Decrypt` per data key) and opens every envelope,
//! timed inside the process (no process start, no interpreter start).
//! Prints medians, the ratios, SSM and KMS calls per start, peak RSS (from
//! getrusage of each child), the binary's size and `file`'s word on it, as
//! JSON on stdout.
//!
//! Environment: `SIDEKEY_BENCH_AGENT` (default: the static release build),
//! `SIDEKEY_BENCH_AWS` (default `target/bench-venv/bin/aws`; without it the
//! aws-cli figures are null), `SIDEKEY_BENCH_RUNS` (default 21). The floor
//! runs in the test venv's Python (`.venv`, made by `scripts/venv`: boto3
//! and cryptography come with moto); without it its figures are null.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Prefix, Service};
use sidekey_store::{Keys, Params, PutOptions, SsmParams, Store};
use sidekey_test_support::{aws_env, create_kms_key, kms_client, ssm_client, FaultProxy, Moto};

const SERVICES: [&str; 2] = ["api", "web"];
const PER_SERVICE: usize = 25;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running")?;
    let elapsed = start.elapsed();
    if !status.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok(elapsed)
}

/// Peak RSS in KiB of one run of `program args`, from getrusage of the
/// child (python's resource module waits for it; its own RSS is not
/// counted).
fn peak_rss_kib(program: &Path, args: &[&str], env: &[(String, String)]) -> anyhow::Result<u64> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import resource,subprocess,sys\n\
             r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL)\n\
             assert r.returncode==0, r.returncode\n\
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        )
        .arg(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("python3 for getrusage")?;
    if !out.status.success() {
        bail!("rss run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The warm boto3 process of `boto3_floor.py`: one fetch per `round`.
struct Floor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Floor {
    /// Starts the script and waits for its untimed first fetch, which must
    /// open `expect` values.
    fn start(
        python: &Path,
        args: [&str; 5],
        env: &[(String, String)],
        expect: usize,
    ) -> anyhow::Result<Floor> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/boto3_floor.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting boto3_floor.py")?;
        let stdin = child.stdin.take().context("its stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("its stdout")?);
        let mut floor = Floor {
            child,
            stdin,
            stdout,
        };
        let line = floor.line()?;
        if line != format!("ready {expect}") {
            bail!("boto3_floor.py: {line:?}, expected \"ready {expect}\"");
        }
        Ok(floor)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("boto3_floor.py ended (its error is above)");
        }
        Ok(line.trim().to_owned())
    }

    /// One timed fetch, in milliseconds as the script measured it.
    fn round(&mut self, expect: usize) -> anyhow::Result<f64> {
        writeln!(self.stdin, "go")?;
        let line = self.line()?;
        let (ms, n) = line.split_once(' ').context("a line \"MS N\"")?;
        if n != expect.to_string() {
            bail!("boto3_floor.py opened {n} values, expected {expect}");
        }
        Ok(ms.parse()?)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else is taken from the args.
    let runs: usize = std::env::var("SIDEKEY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    let agent = std::env::var_os("SIDEKEY_BENCH_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            root().join("target/x86_64-unknown-linux-gnu/release-agent/sidekey-agent")
        });
    if !agent.is_file() {
        bail!(
            "{} is missing: run scripts/bench-agent (it builds the static release agent)",
            agent.display()
        );
    }
    let aws = std::env::var_os("SIDEKEY_BENCH_AWS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench-venv/bin/aws"));
    let aws = aws.is_file().then_some(aws);
    if aws.is_none() {
        eprintln!("aws-cli not found: its figures will be null (scripts/bench-agent installs it)");
    }

    let moto = Moto::start()?;
    let proxy = FaultProxy::start(moto.endpoint())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let kms_key = rt.block_on(create_kms_key(moto.endpoint()))?;
    let prefix = format!("bench{}", std::process::id());
    rt.block_on(async {
        let store = Store::from_parts(
            Params::Ssm(SsmParams::new(ssm_client(moto.endpoint()).await)),
            Keys::Kms {
                client: kms_client(moto.endpoint()).await,
                key: kms_key.clone(),
            },
            Prefix::parse(&prefix)?,
            Duration::from_secs(120),
        );
        let env = Environment::parse("bench")?;
        for service in SERVICES {
            let values: Vec<(Key, Secret)> = (0..PER_SERVICE)
                .map(|i| {
                    (
                        Key::parse(&format!("{}_SECRET_{i:02}", service.to_uppercase()))
                            .expect("key"),
                        Secret::from(format!("{service}-value-{i:02}-{}", "s".repeat(24))),
                    )
                })
                .collect();
            let items: Vec<(Key, &Secret)> = values.iter().map(|(k, v)| (k.clone(), v)).collect();
            store
                .put_many(
                    &env,
                    &Service::parse(service)?,
                    &items,
                    &PutOptions::default(),
                )
                .await?;
        }
        anyhow::Ok(())
    })?;

    let mut env = aws_env(&proxy.endpoint());
    env.extend(
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/nonexistent"),
            ("SIDEKEY_ENVIRONMENT", "bench"),
            ("SIDEKEY_SERVICES", "api,web"),
            ("SIDEKEY_PREFIX", prefix.as_str()),
            ("SIDEKEY_KMS_KEY", kms_key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let agent_cmd = || {
        let mut c = Command::new(&agent);
        c.args(["exec", "--", "/bin/true"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        c
    };
    let path = format!("/{prefix}/bench/");
    let aws_args = [
        "ssm",
        "get-parameters-by-path",
        "--path",
        path.as_str(),
        "--recursive",
        "--with-decryption",
        "--output",
        "json",
    ];
    let aws_cmd = |aws: &Path| {
        let mut c = Command::new(aws);
        c.args(aws_args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        c
    };

    // Check the agent delivers all 50, then warm up (page cache, moto).
    let check = Command::new(&agent)
        .args(["exec", "--", "/usr/bin/env"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let delivered = String::from_utf8_lossy(&check.stdout)
        .lines()
        .filter(|l| l.starts_with("API_SECRET_") || l.starts_with("WEB_SECRET_"))
        .count();
    if delivered != SERVICES.len() * PER_SERVICE {
        bail!(
            "the agent delivered {delivered} secrets: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let python = root().join(".venv/bin/python3");
    let secrets = SERVICES.len() * PER_SERVICE;
    let services = SERVICES.join(",");
    let endpoint = proxy.endpoint();
    let mut floor = if python.is_file() {
        let args = [
            endpoint.as_str(),
            prefix.as_str(),
            "bench",
            services.as_str(),
            kms_key.as_str(),
        ];
        Some(Floor::start(&python, args, &env, secrets)?)
    } else {
        eprintln!(
            "{} not found: the floor's figures will be null (run scripts/venv)",
            python.display()
        );
        None
    };
    for _ in 0..2 {
        timed(&mut agent_cmd())?;
        if let Some(f) = floor.as_mut() {
            f.round(secrets)?;
        }
        if let Some(aws) = &aws {
            timed(&mut aws_cmd(aws))?;
        }
    }

    let (mut agent_ms, mut aws_ms, mut true_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_ms, mut floor_calls) = (Vec::new(), Vec::new());
    let mut calls: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut aws_calls = Vec::new();
    for _ in 0..runs {
        proxy.reset_counts();
        agent_ms.push(timed(&mut agent_cmd())?.as_secs_f64() * 1e3);
        calls
            .entry("ssm".into())
            .or_default()
            .push(proxy.total_for_service("AmazonSSM"));
        calls
            .entry("kms".into())
            .or_default()
            .push(proxy.total_for_service("TrentService"));
        if let Some(aws) = &aws {
            proxy.reset_counts();
            aws_ms.push(timed(&mut aws_cmd(aws))?.as_secs_f64() * 1e3);
            aws_calls.push(proxy.total_for_service("AmazonSSM"));
        }
        if let Some(f) = floor.as_mut() {
            proxy.reset_counts();
            floor_ms.push(f.round(secrets)?);
            floor_calls.push((
                proxy.total_for_service("AmazonSSM"),
                proxy.total_for_service("TrentService"),
            ));
        }
        true_ms.push(timed(Command::new("/bin/true").env_clear())?.as_secs_f64() * 1e3);
    }
    drop(floor);

    let agent_rss = peak_rss_kib(&agent, &["exec", "--", "/bin/true"], &env)?;
    let aws_rss = match &aws {
        Some(aws) => Some(peak_rss_kib(aws, &aws_args, &env)?),
        None => None,
    };
    let size = std::fs::metadata(&agent)?.len();
    let file = Command::new("file")
        .arg(&agent)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("file(1) not available: {e}"));

    let agent_median = median(agent_ms.clone());
    let aws_median = (!aws_ms.is_empty()).then(|| median(aws_ms.clone()));
    let true_median = median(true_ms);
    let floor_median = (!floor_ms.is_empty()).then(|| median(floor_ms.clone()));
    let report = serde_json::json!({
        "secrets": SERVICES.len() * PER_SERVICE,
        "services": SERVICES.len(),
        "runs": runs,
        "agent_start_to_exit_ms_median": round(agent_median),
        "agent_start_to_exit_ms_min": round(agent_ms.iter().copied().fold(f64::INFINITY, f64::min)),
        "bin_true_alone_ms_median": round(true_median),
        "aws_cli_ms_median": aws_median.map(round),
        "floor_boto3_warm_ms_median": floor_median.map(round),
        "floor_boto3_warm_ms_min": floor_median.map(|_| round(floor_ms.iter().copied().fold(f64::INFINITY, f64::min))),
        "floor_calls_per_fetch_ssm_kms": floor_calls.iter().max(),
        "agent_over_floor": floor_median.map(|f| round(agent_median / f * 100.0) / 100.0),
        "agent_over_aws_cli": aws_median.map(|a| round(agent_median / a * 100.0) / 100.0),
        "ssm_calls_per_start": calls["ssm"].iter().max(),
        "kms_calls_per_start": calls["kms"].iter().max(),
        "aws_cli_ssm_calls": aws_calls.iter().max(),
        "agent_peak_rss_kib": agent_rss,
        "aws_cli_peak_rss_kib": aws_rss,
        "agent_binary_bytes": size,
        "agent_binary": agent.display().to_string(),
        "file": file,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
