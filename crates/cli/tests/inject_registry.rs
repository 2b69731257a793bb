//! `sidekey inject --registry-lookup`: the command of a container without
//! one is read from a real registry (Debian's docker-registry on loopback,
//! TLS from a generated CA, htpasswd auth; the image built by umoci and
//! pushed by skopeo) and baked into the printed manifest.

use std::process::Command;

use sidekey_test_support::registry::{ImageSpec, TestRegistry};

fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: team-a}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}, annotations: {{sidekey.io/inject: "true", sidekey.io/services: web}}}}
    spec: {{containers: [{{name: web, image: "{image}"}}]}}
"#
    )
}

#[test]
fn inject_bakes_in_the_command_read_from_the_registry() {
    let missing = TestRegistry::tools_missing();
    if !missing.is_empty() {
        sidekey_test_support::skip(&format!("registry tools missing: {}", missing.join(", ")));
        return;
    }
    let registry = TestRegistry::start().unwrap();
    let image = registry
        .push_image(
            "cli/web:1",
            &ImageSpec {
                arch: "amd64",
                entrypoint: Some(&["/bin/web"]),
                cmd: Some(&["--listen", ":8080"]),
            },
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, manifest(&image)).unwrap();
    let auth = dir.path().join("config.json");
    std::fs::write(&auth, registry.docker_config(registry.password())).unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, registry.docker_config("wrong-pw-7f2e")).unwrap();
    let sidekey = |extra: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_sidekey"))
            .args(["--output", "json", "inject", "-f"])
            .arg(&file)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let ca = registry.ca_file();

    let out = sidekey(&[
        "--registry-lookup".as_ref(),
        "--registry-auth".as_ref(),
        auth.as_os_str(),
        "--registry-ca".as_ref(),
        ca.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &doc["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        serde_json::json!([
            sidekey_patch::AGENT_INSTALLED,
            "exec",
            "--",
            "/bin/web",
            "--listen",
            ":8080"
        ]),
        "{doc}"
    );

    // Without the lookup: denied, told what to set.
    let out = sidekey(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sidekey.io/command.web"), "{err}");
    assert!(out.stdout.is_empty());

    // A wrong password: the registry's answer, never the password.
    let out = sidekey(&[
        "--registry-lookup".as_ref(),
        "--registry-auth".as_ref(),
        wrong.as_os_str(),
        "--registry-ca".as_ref(),
        ca.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&image) && err.contains("refused access"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-pw-7f2e") && !err.contains(registry.password()),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
