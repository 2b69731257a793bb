//! Running the project's binaries in tests, and checking their output for leaked secrets.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The timeout of [`run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for stdout/stderr to close after the process ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// What a process run by [`run`] did.
#[derive(Debug)]
pub struct Output {
    /// The exit code, or -1 if the process was killed by a signal.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout, invalid UTF-8 replaced.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr, invalid UTF-8 replaced.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `program` with a clean environment (only `PATH`, `HOME` set to a fresh temporary
/// directory, `LANG=C`, and `env`, which wins over those), `stdin` as its standard input, and
/// captures stdout and stderr. Fails if it runs longer than 60 s (it is killed then).
/// A non-zero exit is not an error: check [`Output::status`].
pub fn run(
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
    stdin: &[u8],
) -> anyhow::Result<Output> {
    run_with_timeout(program, args, env, stdin, RUN_TIMEOUT)
}

/// [`run`] with another timeout.
pub fn run_with_timeout(
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
    stdin: &[u8],
    timeout: Duration,
) -> anyhow::Result<Output> {
    let name = program.display().to_string();
    let home = tempfile::Builder::new()
        .prefix("sidekey-home-")
        .tempdir()
        .context("creating a temporary HOME")?;
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home.path())
        .env("LANG", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;

    // Feed stdin and drain the outputs on threads so that no pipe can fill up and block.
    let mut stdin_pipe = child.stdin.take().context("child stdin")?;
    let input = stdin.to_vec();
    std::thread::spawn(move || {
        // The child may exit without reading: a broken pipe is fine.
        let _ = stdin_pipe.write_all(&input);
    });
    let stdout = drain(child.stdout.take().context("child stdout")?);
    let stderr = drain(child.stderr.take().context("child stderr")?);

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {name}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {timeout:?} and was killed");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>, which: &str| {
        rx.recv_timeout(OUTPUT_GRACE).with_context(|| {
            format!("{name} exited but its {which} stayed open (a background process holds it?)")
        })
    };
    Ok(Output {
        status: status.code().unwrap_or(-1),
        stdout: collect(stdout, "stdout")?,
        stderr: collect(stderr, "stderr")?,
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// Asserts that no needle (a secret value the test wrote) occurs in `haystack`.
///
/// # Panics
/// If one does: the message names `what`, the needle's index, length and offset, never its
/// value. Also if a needle is empty (it would occur everywhere).
pub fn assert_no_secret(what: &str, haystack: &[u8], needles: &[&[u8]]) {
    for (index, needle) in needles.iter().enumerate() {
        assert!(
            !needle.is_empty(),
            "assert_no_secret({what}): secret #{index} is empty"
        );
        if let Some(offset) = haystack
            .windows(needle.len())
            .position(|window| window == *needle)
        {
            panic!(
                "{what} contains secret #{index} ({} bytes) at byte offset {offset}",
                needle.len()
            );
        }
    }
}
