//! Only envelopes are trusted, no rollback, and least privilege by default
//! (issue 14, sections 4 and 6), attacked through the real `sidekey`
//! binary: parameters written by boto3 (an `ssm:PutParameter` writer with
//! no KMS rights) straight into moto, and local stores with loose
//! permissions.

mod common;

use std::process::Command;

use common::{Kind, World};
use sidekey_test_support::{aws_env, Moto};

fn python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// Runs a Python snippet with boto3 against moto: `ssm` is an SSM client,
/// `args` is `sys.argv[1:]`. Returns its stdout.
fn boto3(script: &str, args: &[&str]) -> String {
    let program =
        format!("import sys, boto3\nssm = boto3.client('ssm')\nargs = sys.argv[1:]\n{script}\n");
    let out = Command::new(python())
        .arg("-c")
        .arg(program)
        .args(args)
        .env_clear()
        .envs(aws_env(Moto::shared().endpoint()))
        .output()
        .expect("running .venv/bin/python (scripts/venv creates it)");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn put_string(name: &str, value: &str) {
    boto3(
        "ssm.put_parameter(Name=args[0], Value=args[1], Type='String', Overwrite=True)",
        &[name, value],
    );
}

fn stored(name: &str) -> String {
    boto3(
        "print(ssm.get_parameter(Name=args[0])['Parameter']['Value'], end='')",
        &[name],
    )
}

/// The wrapped data key of a stored sk2. value, in hex (parsed by Python
/// from the documented layout).
fn wrapped_key(name: &str) -> String {
    boto3(
        r#"
import base64, struct
v = ssm.get_parameter(Name=args[0])['Parameter']['Value']
assert v.startswith('sk2.'), v[:4]
b = base64.urlsafe_b64decode(v[4:] + '=' * (-len(v[4:]) % 4))
i = 1 + 16
n = struct.unpack('>H', b[i:i+2])[0]; i += 2 + n
n = struct.unpack('>H', b[i:i+2])[0]
print(b[i+2:i+2+n].hex(), end='')
"#,
        &[name],
    )
}

/// Seals like an older sidekey (sk1.), independently: Python's
/// `cryptography` and a KMS data key from boto3.
fn seal_sk1(kms_key: &str, env: &str, svc: &str, key: &str, value: &str) -> String {
    boto3(
        r#"
import os, struct, base64
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
kms = boto3.client('kms')
key_id, env, svc, key, value = args[:5]
dk = kms.generate_data_key(KeyId=key_id, KeySpec='AES_256',
    EncryptionContext={'sidekey:environment': env, 'sidekey:service': svc})
l16 = lambda b: struct.pack('>H', len(b)) + b
nonce = os.urandom(12)
header = b'\x01' + l16(dk['KeyId'].encode()) + l16(dk['CiphertextBlob']) + nonce
aad = b'sidekey sk1\0' + header + l16(env.encode()) + l16(svc.encode()) + l16(key.encode())
ct = AESGCM(dk['Plaintext']).encrypt(nonce, value.encode(), aad)
print('sk1.' + base64.urlsafe_b64encode(header + ct).decode().rstrip('='), end='')
"#,
        &[kms_key, env, svc, key, value],
    )
}

/// An older version's envelope copied over the latest with boto3 is
/// refused by `sidekey get --reveal` and `export`: nothing printed, the
/// error names the parameter and the rule.
#[test]
fn rolled_back_envelope_is_refused_by_get_and_export() {
    let mut w = World::new(Kind::Ssm);
    let name = format!("/{}/prod/api/API_KEY", w.prefix);
    w.put("prod", "api", "API_KEY", b"api-key-before-rotation");
    let old = stored(&name);
    w.put("prod", "api", "API_KEY", b"api-key-after-rotation");
    put_string(&name, &old);

    let out = w.reveal("prod", "api", "API_KEY", &[]);
    assert_eq!(out.status, 1, "{}", out.stderr_str());
    assert!(out.stdout.is_empty());
    let err = out.stderr_str();
    assert!(
        err.contains(&format!(
            "refused {name}: envelope sealed for version 1 but stored as version 3: a replayed or rolled-back value"
        )),
        "{err}"
    );
    let out = w.sk_values(&["export", "prod", "api"], b"");
    assert_ne!(out.status, 0);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str().contains("stored as version 3"),
        "{}",
        out.stderr_str()
    );
    // An old version read as itself is fine: it is what version 1 holds.
    let v1 = w.reveal("prod", "api", "API_KEY", &["--version", "1"]);
    assert_eq!(v1.status, 0, "{}", v1.stderr_str());
    assert_eq!(v1.stdout, b"api-key-before-rotation");
    // Writing again repairs the key.
    w.put("prod", "api", "API_KEY", b"api-key-rewritten-4");
    let out = w.reveal("prod", "api", "API_KEY", &[]);
    assert_eq!(out.stdout, b"api-key-rewritten-4", "{}", out.stderr_str());
}

/// After a rekey, a pre-rekey envelope replayed over the newest version of
/// a key (it is then the most recently modified parameter of the service)
/// is not used as the source of the data key: the next put seals under the
/// post-rekey data key.
#[test]
fn replayed_pre_rekey_envelope_is_not_a_data_key_source() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    let a = format!("/{p}/prod/api/A");
    let b = format!("/{p}/prod/api/B");
    let c = format!("/{p}/prod/api/C");
    w.put("prod", "api", "A", b"value-a-before-rekey");
    w.put("prod", "api", "B", b"value-b-before-rekey");
    let old_a = stored(&a);
    let old_key = wrapped_key(&a);
    w.ok(&["rekey", "prod", "api"], b"");
    let new_key = wrapped_key(&b);
    assert_ne!(old_key, new_key, "rekey made a new data key");
    assert_eq!(wrapped_key(&a), new_key);
    // The replay: A's pre-rekey envelope over A's latest (now the newest
    // parameter of the service).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put_string(&a, &old_a);

    w.put("prod", "api", "C", b"value-c-after-replay");
    assert_eq!(
        wrapped_key(&c),
        new_key,
        "C was sealed under the pre-rekey data key"
    );
    // Replayed over every key of a service (here its only one), no
    // envelope matches its own version any more: the next put makes a new
    // data key, never the pre-rekey one.
    let x = format!("/{p}/prod/web/X");
    let y = format!("/{p}/prod/web/Y");
    w.put("prod", "web", "X", b"value-x-before-rekey");
    let old_x = stored(&x);
    let old_web_key = wrapped_key(&x);
    w.ok(&["rekey", "prod", "web"], b"");
    assert_ne!(wrapped_key(&x), old_web_key);
    put_string(&x, &old_x);
    w.put("prod", "web", "Y", b"value-y-after-full-replay");
    assert_ne!(
        wrapped_key(&y),
        old_web_key,
        "Y was sealed under the pre-rekey data key"
    );
    // A put of the replayed key itself also seals under a post-rekey key.
    w.put("prod", "api", "A", b"value-a-rewritten");
    assert_ne!(wrapped_key(&a), old_key);
    let out = w.reveal("prod", "api", "A", &[]);
    assert_eq!(out.stdout, b"value-a-rewritten", "{}", out.stderr_str());
}

/// A plain String parameter (boto3, no KMS rights) and an sk1. value are
/// refused by default; `--allow-legacy` reads them; `sidekey
/// --allow-legacy rekey` migrates the service to sk2., after which plain
/// reads work without the flag.
#[test]
fn allow_legacy_reads_and_rekey_migrates() {
    let mut w = World::new(Kind::Ssm);
    let p = w.prefix.clone();
    let plain = format!("/{p}/prod/api/PLAIN_URL");
    let legacy = format!("/{p}/prod/api/OLD_TOKEN");
    w.secret(b"postgres://plain-value");
    w.secret(b"sk1-era-token-value");
    put_string(&plain, "postgres://plain-value");
    put_string(
        &legacy,
        &seal_sk1(
            &w.kms_key,
            "prod",
            "api",
            "OLD_TOKEN",
            "sk1-era-token-value",
        ),
    );

    let out = w.reveal("prod", "api", "PLAIN_URL", &[]);
    assert_eq!(out.status, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str().contains(&format!(
            "refused {plain}: a plain String parameter is not an sk2. envelope"
        )),
        "{}",
        out.stderr_str()
    );
    let out = w.reveal("prod", "api", "OLD_TOKEN", &[]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_str().contains(&format!(
            "refused {legacy}: a legacy sk1. envelope binds no parameter version"
        )),
        "{}",
        out.stderr_str()
    );

    let out = w.reveal("prod", "api", "PLAIN_URL", &["--allow-legacy"]);
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_eq!(out.stdout, b"postgres://plain-value");
    let out = w.reveal("prod", "api", "OLD_TOKEN", &["--allow-legacy"]);
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_eq!(out.stdout, b"sk1-era-token-value");

    // rekey without the opt-in refuses to read them (and writes nothing).
    let out = w.sk(&["rekey", "prod", "api"], b"");
    assert_eq!(out.status, 1, "{}", out.stderr_str());
    w.ok(&["--allow-legacy", "rekey", "prod", "api"], b"");
    assert!(stored(&plain).starts_with("sk2."));
    assert!(stored(&legacy).starts_with("sk2."));
    let out = w.reveal("prod", "api", "PLAIN_URL", &[]);
    assert_eq!(
        out.stdout,
        b"postgres://plain-value",
        "{}",
        out.stderr_str()
    );
    let out = w.reveal("prod", "api", "OLD_TOKEN", &[]);
    assert_eq!(out.stdout, b"sk1-era-token-value", "{}", out.stderr_str());
}

/// `sidekey policy` requires --account and --kms-key-arn (exit 2 naming
/// the flag) and refuses wildcards; nothing it prints holds a wildcard
/// account, region or key.
#[test]
fn policy_requires_account_and_key_and_refuses_wildcards() {
    let mut w = World::new(Kind::Local);
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let out = w.sk(&["policy", "dev", "--kms-key-arn", key], b"");
    assert_eq!(out.status, 2);
    assert!(
        out.stderr_str().contains("--account"),
        "{}",
        out.stderr_str()
    );
    let out = w.sk(&["policy", "dev", "--account", "123456789012"], b"");
    assert_eq!(out.status, 2);
    assert!(
        out.stderr_str().contains("--kms-key-arn"),
        "{}",
        out.stderr_str()
    );
    for (flag, value) in [
        ("--kms-key-arn", "arn:aws:kms:*:*:key/*"),
        ("--kms-key-arn", "arn:aws:kms:eu-west-1:123456789012:key/*"),
        ("--kms-key-arn", "arn:aws:kms:eu-west-1:*:key/1234abcd"),
        ("--kms-key-arn", "alias/sidekey"),
        ("--account", "*"),
        ("--policy-region", "*"),
    ] {
        let mut args = vec![
            "policy",
            "dev",
            "--account",
            "123456789012",
            "--kms-key-arn",
            key,
        ];
        match flag {
            "--policy-region" => args.extend([flag, value]),
            "--account" => args[3] = value,
            _ => args[5] = value,
        }
        let out = w.sk(&args, b"");
        assert_eq!(out.status, 2, "{args:?} was accepted: {}", out.stdout_str());
        assert!(
            out.stderr_str().contains(flag),
            "{args:?}: {}",
            out.stderr_str()
        );
    }
    // No region given: the key's region, never `*`.
    let out = w.ok(
        &[
            "policy",
            "dev",
            "--account",
            "123456789012",
            "--kms-key-arn",
            key,
        ],
        b"",
    );
    let text = out.stdout_str();
    assert!(
        text.contains("arn:aws:ssm:eu-west-1:123456789012:parameter/"),
        "{text}"
    );
    assert!(!text.contains(":*:") && !text.contains("key/*"), "{text}");
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The local store refuses a symlinked master.key, a directory open to
/// group or others, and creates its files private.
#[test]
fn local_store_permissions_are_enforced() {
    use std::os::unix::fs::PermissionsExt;
    let mut w = World::new(Kind::Local);
    w.put("dev", "api", "TOKEN", b"local-token-perm");
    let dir = w.store_dir();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert_eq!(mode(&dir.join("params.redb")), 0o600);

    // A directory others can enter or list.
    chmod(&dir, 0o755);
    let out = w.reveal("dev", "api", "TOKEN", &[]);
    assert_eq!(out.status, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str().contains(&format!(
            "local store directory {} has mode 755: it must be 0700",
            dir.display()
        )),
        "{}",
        out.stderr_str()
    );
    chmod(&dir, 0o700);
    assert_eq!(
        w.reveal("dev", "api", "TOKEN", &[]).stdout,
        b"local-token-perm"
    );

    // master.key replaced by a symbolic link to another key (an attacker's
    // own, private to this user, so only the link itself is wrong).
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other = elsewhere.path().join("other.key");
    std::fs::rename(dir.join("master.key"), &other).expect("move key");
    std::os::unix::fs::symlink(&other, dir.join("master.key")).expect("symlink");
    let out = w.reveal("dev", "api", "TOKEN", &[]);
    assert_eq!(out.status, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_str()
            .contains("master.key is a symbolic link: refused"),
        "{}",
        out.stderr_str()
    );
    // A put does not replace the link with a new key either.
    let out = w.sk(&["put", "dev", "api", "OTHER"], b"other-value");
    assert_eq!(out.status, 1);
    assert!(std::fs::symlink_metadata(dir.join("master.key"))
        .expect("link")
        .file_type()
        .is_symlink());
    std::fs::remove_file(dir.join("master.key")).expect("unlink");
    std::fs::rename(&other, dir.join("master.key")).expect("move back");

    // A key file readable by others.
    chmod(&dir.join("master.key"), 0o644);
    let out = w.reveal("dev", "api", "TOKEN", &[]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_str()
            .contains("must not be readable by group or others"),
        "{}",
        out.stderr_str()
    );
    chmod(&dir.join("master.key"), 0o600);

    // params.redb as a symbolic link.
    std::fs::rename(
        dir.join("params.redb"),
        elsewhere.path().join("params.redb"),
    )
    .expect("move db");
    std::os::unix::fs::symlink(
        elsewhere.path().join("params.redb"),
        dir.join("params.redb"),
    )
    .expect("symlink");
    let out = w.reveal("dev", "api", "TOKEN", &[]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_str()
            .contains("params.redb is a symbolic link: refused"),
        "{}",
        out.stderr_str()
    );
}

/// Two writers of one key at once: writer A reads the key's version (1) and
/// seals for 2, but its PutParameter is held by the proxy while writer B
/// writes version 2. A's value lands as version 3 sealed for 2; A notices,
/// seals for 4 and writes again, and reports version 4. Every version
/// reported reads back as its writer's value; version 3 is refused.
#[test]
fn concurrent_writer_reseals_for_the_version_it_gets() {
    use sidekey_test_support::{Fault, FaultRule};
    let mut w = World::new(Kind::Ssm);
    let name = format!("/{}/prod/api/RACE", w.prefix);
    w.put("prod", "api", "RACE", b"race-value-one");
    w.secret(b"race-value-from-a");
    w.secret(b"race-value-from-b");
    w.proxy().reset_counts();
    w.proxy().inject(
        FaultRule::on(
            "PutParameter",
            Fault::Delay(std::time::Duration::from_secs(5)),
        )
        .times(1),
    );
    let env_a = w.env();
    let writer_a = std::thread::spawn(move || {
        sidekey_test_support::run(
            std::path::Path::new(env!("CARGO_BIN_EXE_sidekey")),
            &["put", "prod", "api", "RACE"],
            &env_a,
            b"race-value-from-a",
        )
        .expect("writer A runs")
    });
    // Wait until A's first PutParameter is held by the proxy.
    for _ in 0..3000 {
        if w.proxy().count("PutParameter") >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(w.proxy().count("PutParameter"), 1, "writer A never wrote");
    // Writer B straight to moto, while A waits.
    let moto = Moto::shared().endpoint().to_owned();
    let b = w.run_with(
        &["put", "prod", "api", "RACE"],
        b"race-value-from-b",
        &[("AWS_ENDPOINT_URL", moto.as_str())],
        false,
    );
    assert_eq!(b.status, 0, "{}", b.stderr_str());
    assert_eq!(b.stdout_str().trim(), "prod/api/RACE version 2");
    let a = writer_a.join().expect("writer A");
    assert_eq!(a.status, 0, "{}", a.stderr_str());
    assert_eq!(
        a.stdout_str().trim(),
        "prod/api/RACE version 4",
        "{}",
        a.stderr_str()
    );

    let latest = w.reveal("prod", "api", "RACE", &[]);
    assert_eq!(
        latest.stdout,
        b"race-value-from-a",
        "{}",
        latest.stderr_str()
    );
    let v2 = w.reveal("prod", "api", "RACE", &["--version", "2"]);
    assert_eq!(v2.stdout, b"race-value-from-b", "{}", v2.stderr_str());
    let v3 = w.reveal("prod", "api", "RACE", &["--version", "3"]);
    assert_eq!(v3.status, 1);
    assert!(
        v3.stderr_str().contains(&format!(
            "refused {name}: envelope sealed for version 2 but stored as version 3"
        )),
        "{}",
        v3.stderr_str()
    );
    // The audit record of A names the version that holds its value.
    let audited: Vec<u64> = w
        .audit_lines()
        .iter()
        .filter_map(|r| r["secrets"][0]["version"].as_u64())
        .collect();
    assert!(audited.contains(&4), "{audited:?}");
}
