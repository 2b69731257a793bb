//! The moto server: found, started on a free loopback port, waited for, and stopped.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http1;

/// How long to wait for `GET /moto-api/` to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long Drop waits for moto to die after its lifeline closes before sending SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts when another process grabs the free port between picking and binding it.
const PORT_ATTEMPTS: usize = 3;

const INSTALL_HINT: &str = "create the venv in the workspace root with \
     `python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5'`, \
     or set SIDEKEY_MOTO_SERVER to a moto_server executable, \
     or SIDEKEY_MOTO_URL to the URL of a running moto server";

/// The wrapper moto runs under. `sh -c SCRIPT <moto_server> <port>`:
///
/// - keeps our stdin pipe (the *lifeline*) on fd 3, then starts a watcher subshell that blocks
///   reading it (an asynchronous list gets `/dev/null` as its stdin, hence fd 3);
/// - `exec`s moto in place of the shell, so the child's pid *is* moto's pid (`$$`), with stdin
///   from `/dev/null` and the lifeline closed;
/// - when the lifeline closes (we drop the `ChildStdin`, or the test process exits or is killed
///   in any way: the kernel closes its descriptors), `read` returns and the watcher sends moto
///   SIGTERM; for the shared server it then waits for moto to go and removes the log directory
///   (only once the server got ready: a failed start keeps its log for the error message).
///
/// No unsafe code (`prctl(PR_SET_PDEATHSIG)`) and no signal handlers are needed.
const WRAPPER: &str = r#"exec 3<&0
(
  read -r _lifeline <&3
  kill "$$" 2>/dev/null
  if [ -n "$SIDEKEY_MOTO_CLEANUP_DIR" ] && [ -e "$SIDEKEY_MOTO_CLEANUP_DIR/ready" ]; then
    i=0
    while kill -0 "$$" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    rm -rf "$SIDEKEY_MOTO_CLEANUP_DIR"
  fi
) &
exec "$0" -H 127.0.0.1 -p "$1" 0</dev/null 3<&-
"#;

/// A moto server on `127.0.0.1`.
///
/// [`Moto::start`] runs `$SIDEKEY_MOTO_SERVER`, or else `<workspace root>/.venv/bin/moto_server`,
/// on a free port; if `$SIDEKEY_MOTO_URL` is set it uses that running server instead and starts
/// nothing. The child's output goes to a log file in a temporary directory (its path is in every
/// error message). Dropping a `Moto` stops its child and waits for it.
///
/// The child is also stopped when the test process ends in any way, including a crash or
/// SIGKILL: it is started through a small shell wrapper that kills moto as soon as the pipe on
/// its stdin, held open by this struct, is closed (see the `WRAPPER` script in the source).
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    process: Option<Process>,
}

#[derive(Debug)]
struct Process {
    child: Child,
    /// The lifeline: while it is open, moto lives.
    lifeline: Option<ChildStdin>,
    log: PathBuf,
    /// Removed after the child is gone (for the shared server, by the wrapper script).
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts a moto server of its own (or attaches to `$SIDEKEY_MOTO_URL`) and waits until
    /// `GET /moto-api/` answers 200.
    pub fn start() -> anyhow::Result<Moto> {
        Self::start_inner(false)
    }

    /// The moto server of this test process, started on first use and never stopped explicitly:
    /// it dies with the process (see the type docs). Tests sharing it run in parallel, so they
    /// must use unique names and must not call [`Moto::reset`].
    ///
    /// # Panics
    /// If the server cannot be started (this is for tests only); every later call panics with the
    /// same message rather than trying again.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Self::start_inner(true).map_err(|e| format!("{e:#}"))) {
            Ok(moto) => moto,
            Err(e) => panic!("cannot start the shared moto server: {e}"),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Wipes all state in the server (`POST /moto-api/reset`).
    pub fn reset(&self) -> anyhow::Result<()> {
        let status = http1::request(&self.endpoint, "POST", "/moto-api/reset")
            .with_context(|| format!("resetting moto at {}", self.endpoint))?;
        if status != 200 {
            bail!("resetting moto at {}: HTTP {status}", self.endpoint);
        }
        Ok(())
    }

    /// The log file of the child, or `None` when attached to `$SIDEKEY_MOTO_URL`.
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.log.as_path())
    }

    /// The pid of the moto process, or `None` when attached to `$SIDEKEY_MOTO_URL`.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    fn start_inner(shared: bool) -> anyhow::Result<Moto> {
        if let Some(url) = std::env::var_os("SIDEKEY_MOTO_URL") {
            let url = url
                .into_string()
                .map_err(|_| anyhow::anyhow!("SIDEKEY_MOTO_URL is not UTF-8"))?;
            let endpoint = url.trim_end_matches('/').to_owned();
            wait_ready(&endpoint, None)
                .with_context(|| format!("moto at SIDEKEY_MOTO_URL={url} is not answering"))?;
            return Ok(Moto {
                endpoint,
                process: None,
            });
        }
        let program = moto_program();
        if !program.is_file() {
            bail!(
                "moto server not found at {}: {INSTALL_HINT}",
                program.display()
            );
        }
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match spawn(&program, shared)? {
                Spawned::Ready(moto) => return Ok(moto),
                Spawned::PortTaken(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            stop(process);
        }
    }
}

/// `$SIDEKEY_MOTO_SERVER`, or `<workspace root>/.venv/bin/moto_server`.
fn moto_program() -> PathBuf {
    if let Some(path) = std::env::var_os("SIDEKEY_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    workspace_root().join(".venv/bin/moto_server")
}

/// Two levels above this crate's manifest directory, as seen at compile time.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

enum Spawned {
    Ready(Moto),
    /// Moto exited because its port was taken: try another one.
    PortTaken(anyhow::Error),
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn spawn(program: &Path, shared: bool) -> anyhow::Result<Spawned> {
    let port = free_port()?;
    let dir = tempfile::Builder::new()
        .prefix("sidekey-moto-")
        .tempdir()
        .context("creating a temporary directory for the moto log")?;
    let log = dir.path().join("moto.log");
    let log_file =
        File::create(&log).with_context(|| format!("creating moto log {}", log.display()))?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(WRAPPER)
        .arg(program)
        .arg(port.to_string())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("SIDEKEY_MOTO_CLEANUP_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file));
    if shared {
        command.env("SIDEKEY_MOTO_CLEANUP_DIR", dir.path());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {} (log: {})", program.display(), log.display()))?;
    let lifeline = child.stdin.take();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut process = Process {
        child,
        lifeline,
        log,
        dir,
    };
    match wait_ready(&endpoint, Some(&mut process.child)) {
        Ok(()) => {
            // Lets the wrapper remove the shared server's log directory when the process exits.
            File::create(process.dir.path().join("ready"))?;
            Ok(Spawned::Ready(Moto {
                endpoint,
                process: Some(process),
            }))
        }
        Err(reason) => {
            stop(&mut process);
            let log_text = read_log(&process.log);
            let error = anyhow::anyhow!(
                "moto server {} did not become ready on {endpoint}: {reason:#}; log: {}; \
                 if moto is not installed, {INSTALL_HINT}; last log lines:\n{}",
                program.display(),
                process.log.display(),
                tail(&log_text, 20)
            );
            let port_taken = log_text.contains("Address already in use");
            // Keep the log so the path in the message can be opened.
            let Process { dir, .. } = process;
            let _ = dir.keep();
            if port_taken {
                Ok(Spawned::PortTaken(error))
            } else {
                Err(error)
            }
        }
    }
}

/// Polls `GET /moto-api/` every 50 ms until it answers 200, the child exits, or 30 s pass.
fn wait_ready(endpoint: &str, mut child: Option<&mut Child>) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(child) = child.as_deref_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("moto exited early ({})", describe(status));
            }
        }
        let last = match http1::request(endpoint, "GET", "/moto-api/") {
            Ok(200) => return Ok(()),
            Ok(status) => format!("GET /moto-api/ answered HTTP {status}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("not ready after {READY_TIMEOUT:?} (last attempt: {last})");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Closes the lifeline (the wrapper then sends moto SIGTERM) and waits; SIGKILL after 10 s.
fn stop(process: &mut Process) {
    drop(process.lifeline.take());
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match process.child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                return;
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(127) => "exit code 127: the program could not be run".to_owned(),
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_owned(),
    }
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
