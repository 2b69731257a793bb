//! Only envelopes are trusted, and no rollback (issue 14, section 4),
//! attacked through the real binaries: parameters written by boto3 (a
//! writer with `ssm:PutParameter` and no KMS rights) straight into moto,
//! the `sidekey` CLI for the legitimate writes, and the `sidekey-agent`
//! process reading them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{os, probe_bin, workspace_root, Kind, Probe, Ran, World};
use sidekey_test_support::aws_env;

/// Runs a Python snippet with boto3 against moto, as an attacker with SSM
/// rights only would: `ssm` is a boto3 SSM client, `args` is `sys.argv[1:]`.
/// Returns its stdout.
fn boto3(endpoint: &str, script: &str, args: &[&str]) -> String {
    let python = workspace_root().join(".venv/bin/python");
    let program =
        format!("import sys, boto3\nssm = boto3.client('ssm')\nargs = sys.argv[1:]\n{script}\n");
    let out = Command::new(&python)
        .arg("-c")
        .arg(program)
        .args(args)
        .env_clear()
        .envs(aws_env(endpoint))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (scripts/venv creates it)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// put_parameter NAME VALUE as a String (Overwrite).
fn put_string(w: &World, name: &str, value: &str) {
    boto3(
        &w.moto_endpoint,
        "ssm.put_parameter(Name=args[0], Value=args[1], Type='String', Overwrite=True)",
        &[name, value],
    );
}

/// The stored text of NAME (its latest version).
fn stored(w: &World, name: &str) -> String {
    boto3(
        &w.moto_endpoint,
        "print(ssm.get_parameter(Name=args[0])['Parameter']['Value'], end='')",
        &[name],
    )
}

struct App {
    _dir: tempfile::TempDir,
    marker: PathBuf,
}

impl App {
    fn new() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("app-ran");
        App { _dir: dir, marker }
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            os("exec"),
            os("--"),
            probe_bin().into_os_string(),
            os("0"),
            self.marker.clone().into_os_string(),
        ]
    }
}

fn error_line(ran: &Ran) -> String {
    ran.stderr_str()
        .lines()
        .rfind(|l| l.starts_with("sidekey-agent:"))
        .unwrap_or_default()
        .to_owned()
}

/// A plain String `LD_PRELOAD` written with boto3 (no KMS rights needed) is
/// refused: exit 69 naming the parameter, never the value, and the app
/// does not run. `SIDEKEY_ALLOW_LEGACY=true` reads it (migration), but the
/// loader check still refuses to hand `LD_PRELOAD` to the app (exit 65)
/// until `SIDEKEY_ALLOW_LOADER_ENV` names it.
#[test]
fn plaintext_ld_preload_from_boto3_is_refused() {
    let mut w = World::new(Kind::Ssm);
    w.put("prod", "api", "DB_PASSWORD", b"prod-db-pass-ld");
    let p = w.prefix.clone();
    let name = format!("/{p}/prod/api/LD_PRELOAD");
    let evil = "/tmp/evil-preload-7f3a.so";
    w.secret(evil.as_bytes());
    put_string(&w, &name, evil);

    let app = App::new();
    let env = w.agent_env("prod", "api", "");
    let ran = w.agent(&app.args(), &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.starts_with(&format!("sidekey-agent: environment prod: {name}: refused: a plain String parameter is not an sk2. envelope")),
        "{line}"
    );
    assert!(!app.marker.exists(), "the app ran");
    let audit = w.audit_lines();
    let last = audit.last().expect("an audit record");
    assert_eq!(last["outcome"], "failure", "{last}");

    // The migration opt-in reads the plain value, and then the loader rule
    // refuses the variable itself.
    let mut legacy = env.clone();
    legacy.push(("SIDEKEY_ALLOW_LEGACY".into(), "true".into()));
    let ran = w.agent(&app.args(), &legacy, false);
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.contains(&format!(
            "{name}: variable LD_PRELOAD changes how the app loads code: refused"
        )),
        "{line}"
    );
    assert!(!app.marker.exists(), "the app ran");

    // Named explicitly, it is delivered (the probe is static: the loader
    // never reads it, so nothing is loaded here).
    legacy.push(("SIDEKEY_ALLOW_LOADER_ENV".into(), "LD_PRELOAD".into()));
    let ran = w.agent(&app.args(), &legacy, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe.env.get(b"LD_PRELOAD".as_slice()).map(Vec::as_slice),
        Some(evil.as_bytes())
    );
}

/// A genuine envelope (written with the CLI, so by a KMS holder) for a
/// loader variable is refused too unless allowed; other names pass.
#[test]
fn enveloped_node_options_is_refused_unless_allowed() {
    let mut w = World::new(Kind::Ssm);
    w.put(
        "prod",
        "web",
        "NODE_OPTIONS",
        b"--require /tmp/x-node-opt.js",
    );
    w.put("prod", "web", "API_TOKEN", b"api-token-node-1");
    let app = App::new();
    let env = w.agent_env("prod", "web", "");
    let ran = w.agent(&app.args(), &env, false);
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    assert!(
        error_line(&ran).contains("variable NODE_OPTIONS changes how the app loads code"),
        "{}",
        ran.stderr_str()
    );
    assert!(!app.marker.exists());

    // A pick names the variable: an ordinary key picked into a loader
    // variable is refused the same way.
    let picked = w.agent_env("prod", "", "LD_PRELOAD=web/API_TOKEN");
    let ran = w.agent(&app.args(), &picked, false);
    assert_eq!(ran.status, 65, "{}", ran.stderr_str());
    assert!(
        error_line(&ran).contains("variable LD_PRELOAD changes how the app loads code"),
        "{}",
        ran.stderr_str()
    );
    assert!(!app.marker.exists());

    let mut bad = env.clone();
    bad.push(("SIDEKEY_ALLOW_LOADER_ENV".into(), "API_TOKEN".into()));
    let ran = w.agent(&app.args(), &bad, false);
    assert_eq!(ran.status, 64, "{}", ran.stderr_str());
    assert!(
        error_line(&ran).contains("SIDEKEY_ALLOW_LOADER_ENV"),
        "{}",
        ran.stderr_str()
    );

    let mut allowed = env;
    allowed.push(("SIDEKEY_ALLOW_LOADER_ENV".into(), "NODE_OPTIONS".into()));
    let ran = w.agent(&app.args(), &allowed, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert!(probe.env.contains_key(b"NODE_OPTIONS".as_slice()));
    assert!(probe.env.contains_key(b"API_TOKEN".as_slice()));
}

/// Rotate a secret, then copy the old version's envelope over the latest
/// with boto3 (Overwrite): the AEAD still opens it, but it was sealed for
/// version 1 and is stored as version 3. The agent refuses it with exit 69
/// naming the parameter and the rule.
#[test]
fn old_envelope_copied_over_the_latest_is_refused() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    let name = format!("/{p}/prod/api/DB_PASSWORD");
    w.put("prod", "api", "DB_PASSWORD", b"old-leaked-password-1");
    let old = stored(&w, &name);
    assert!(old.starts_with("sk2."), "{old}");
    w.put("prod", "api", "DB_PASSWORD", b"new-rotated-password-2");

    let app = App::new();
    let env = w.agent_env("prod", "api", "");
    let ran = w.agent(&app.args(), &env, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe.env.get(b"DB_PASSWORD".as_slice()).map(Vec::as_slice),
        Some(b"new-rotated-password-2".as_slice())
    );
    std::fs::remove_file(&app.marker).expect("marker");

    put_string(&w, &name, &old);
    let ran = w.agent(&app.args(), &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.starts_with(&format!(
            "sidekey-agent: environment prod: {name}: refused: envelope sealed for version 1 but stored as version 3: a replayed or rolled-back value"
        )),
        "{line}"
    );
    assert!(!app.marker.exists(), "the app ran with a rolled-back value");
    // Not even the legacy opt-in lets a mismatched sk2. through.
    let mut legacy = env;
    legacy.push(("SIDEKEY_ALLOW_LEGACY".into(), "true".into()));
    let ran = w.agent(&app.args(), &legacy, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    assert!(!app.marker.exists());
}

/// Seals a value the way sidekey does, independently (Python's
/// `cryptography` and a KMS data key from boto3): `sk1` (an older sidekey)
/// or `sk2` bound to VERSION and WRITTEN (unix seconds). This is what a KMS
/// holder could write; the tests use it for values written "long ago".
const SEAL: &str = r#"
import os, struct, base64
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
kms = boto3.client('kms')
fmt, key_id, env, svc, key, value, version, written = args[:8]
dk = kms.generate_data_key(KeyId=key_id, KeySpec='AES_256',
    EncryptionContext={'sidekey:environment': env, 'sidekey:service': svc})
l16 = lambda b: struct.pack('>H', len(b)) + b
nonce = os.urandom(12)
body = l16(dk['KeyId'].encode()) + l16(dk['CiphertextBlob']) + nonce
header = (b'\x01' + body) if fmt == 'sk1' else (b'\x02' + struct.pack('>QQ', int(version), int(written)) + body)
aad = b'sidekey ' + fmt.encode() + b'\0' + header + l16(env.encode()) + l16(svc.encode()) + l16(key.encode())
ct = AESGCM(dk['Plaintext']).encrypt(nonce, value.encode(), aad)
print(fmt + '.' + base64.urlsafe_b64encode(header + ct).decode().rstrip('='), end='')
"#;

#[allow(clippy::too_many_arguments)]
fn seal(
    w: &World,
    fmt: &str,
    env: &str,
    svc: &str,
    key: &str,
    value: &str,
    version: u64,
    written: u64,
) -> String {
    boto3(
        &w.moto_endpoint,
        SEAL,
        &[
            fmt,
            &w.kms_key,
            env,
            svc,
            key,
            value,
            &version.to_string(),
            &written.to_string(),
        ],
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The independent sealer agrees with the agent: an sk2 value sealed for
/// version 1 just now, stored as version 1, is read.
#[test]
fn independently_sealed_sk2_is_read() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    w.secret(b"python-sealed-value");
    let value = seal(
        &w,
        "sk2",
        "prod",
        "api",
        "FROM_PYTHON",
        "python-sealed-value",
        1,
        now(),
    );
    put_string(&w, &format!("/{p}/prod/api/FROM_PYTHON"), &value);
    let app = App::new();
    let ran = w.agent(&app.args(), &w.agent_env("prod", "api", ""), true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe.env.get(b"FROM_PYTHON".as_slice()).map(Vec::as_slice),
        Some(b"python-sealed-value".as_slice())
    );
}

/// An envelope sealed an hour ago for version 1, replayed into a parameter
/// that was deleted and re-created (its versions start again at 1): the
/// version matches, the write time does not (more than 15 minutes from the
/// parameter's LastModifiedDate). Refused, exit 69.
#[test]
fn envelope_replayed_into_a_recreated_parameter_is_refused() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    let name = format!("/{p}/prod/api/DB_PASSWORD");
    w.put("prod", "api", "DB_PASSWORD", b"the-current-password");
    boto3(
        &w.moto_endpoint,
        "ssm.delete_parameter(Name=args[0])",
        &[&name],
    );
    w.secret(b"an-hour-old-password");
    let old = seal(
        &w,
        "sk2",
        "prod",
        "api",
        "DB_PASSWORD",
        "an-hour-old-password",
        1,
        now() - 3600,
    );
    put_string(&w, &name, &old);
    let app = App::new();
    let ran = w.agent(&app.args(), &w.agent_env("prod", "api", ""), false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.contains(&format!("{name}: refused: envelope sealed at "))
            && line.contains("more than the 900 s allowed): a value replayed into a deleted and re-created parameter"),
        "{line}"
    );
    assert!(!app.marker.exists());
}

/// A legacy sk1. value (as an older sidekey wrote it) is refused by
/// default, naming the parameter and the way out; SIDEKEY_ALLOW_LEGACY=true
/// reads it.
#[test]
fn sk1_envelope_needs_the_legacy_opt_in() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    let name = format!("/{p}/prod/api/OLD_TOKEN");
    w.secret(b"sk1-sealed-token");
    let value = seal(
        &w,
        "sk1",
        "prod",
        "api",
        "OLD_TOKEN",
        "sk1-sealed-token",
        0,
        0,
    );
    assert!(value.starts_with("sk1."));
    put_string(&w, &name, &value);
    let app = App::new();
    let env = w.agent_env("prod", "api", "");
    let ran = w.agent(&app.args(), &env, false);
    assert_eq!(ran.status, 69, "{}", ran.stderr_str());
    let line = error_line(&ran);
    assert!(
        line.contains(&format!(
            "{name}: refused: a legacy sk1. envelope binds no parameter version"
        )),
        "{line}"
    );
    let mut legacy = env;
    legacy.push(("SIDEKEY_ALLOW_LEGACY".into(), "true".into()));
    let ran = w.agent(&app.args(), &legacy, true);
    assert_eq!(ran.status, 0, "{}", ran.stderr_str());
    let probe = Probe::parse(&ran.stdout);
    assert_eq!(
        probe.env.get(b"OLD_TOKEN".as_slice()).map(Vec::as_slice),
        Some(b"sk1-sealed-token".as_slice())
    );
    // A bad value of the opt-in is a configuration error naming it.
    let mut bad = w.agent_env("prod", "api", "");
    bad.push(("SIDEKEY_ALLOW_LEGACY".into(), "yes".into()));
    let ran = w.agent(&app.args(), &bad, false);
    assert_eq!(ran.status, 64, "{}", ran.stderr_str());
    assert!(
        error_line(&ran).contains("SIDEKEY_ALLOW_LEGACY"),
        "{}",
        ran.stderr_str()
    );
}
