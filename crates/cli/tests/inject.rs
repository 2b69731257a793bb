//! `sidekey inject`: the webhook's planner offline, for every workload kind.

mod common;

use common::{Kind, World};

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: one, annotations: {sidekey.io/inject: "true", sidekey.io/services: api}}
spec:
  containers: [{name: app, image: example/app:1, command: [/app]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: two}
spec:
  selector: {matchLabels: {app: two}}
  template:
    metadata: {labels: {app: two}, annotations: {sidekey.io/inject: "true", sidekey.io/services: api}}
    spec: {containers: [{name: app, image: example/app:1, command: [/app]}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: three}
spec:
  serviceName: three
  selector: {matchLabels: {app: three}}
  template:
    metadata: {labels: {app: three}, annotations: {sidekey.io/inject: "true", sidekey.io/services: api, sidekey.io/delivery: files}}
    spec: {containers: [{name: app, image: example/app:1}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: four}
spec:
  selector: {matchLabels: {app: four}}
  template:
    metadata: {labels: {app: four}, annotations: {sidekey.io/inject: "true", sidekey.io/services: api, sidekey.io/delivery: both}}
    spec: {containers: [{name: app, image: example/app:1, command: [/app]}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: five}
spec:
  template:
    metadata: {annotations: {sidekey.io/inject: "true", sidekey.io/services: db, sidekey.io/delivery: files, sidekey.io/refresh: 1m}}
    spec: {restartPolicy: Never, containers: [{name: migrate, image: example/migrate:1, command: [/migrate]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: six}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {sidekey.io/inject: "true", sidekey.io/secrets: "TOKEN=api/TOKEN@2"}}
        spec: {restartPolicy: OnFailure, containers: [{name: task, image: example/task:1, command: [/task]}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
data: {a: b}
"#;

#[test]
fn every_workload_kind_is_injected_and_validates() {
    let mut w = World::new(Kind::Local);
    let input = w.dir.path().join("workloads.yaml");
    std::fs::write(&input, WORKLOADS).expect("write");
    let out = w.ok(
        &[
            "inject",
            "-f",
            &input.display().to_string(),
            "--namespace",
            "staging",
        ],
        b"",
    );
    let text = out.stdout_str();
    let docs: Vec<&str> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(docs.len(), 7, "{text}");
    for (doc, kind) in docs.iter().zip([
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
    ]) {
        assert!(doc.contains(&format!("kind: {kind}")), "{doc}");
        assert!(
            doc.contains("sidekey.io/injected"),
            "{kind} not injected: {doc}"
        );
        assert!(
            doc.contains("SIDEKEY_ENVIRONMENT") && doc.contains("value: staging"),
            "{doc}"
        );
    }
    assert!(docs[6].contains("kind: ConfigMap") && !docs[6].contains("sidekey"));
    // The output is what a cluster accepts.
    let output = w.dir.path().join("injected.yaml");
    std::fs::write(&output, &text).expect("write");
    let venv = std::env::var("SIDEKEY_VENV")
        .unwrap_or_else(|_| format!("{}/../../.venv", env!("CARGO_MANIFEST_DIR")));
    let check = std::process::Command::new(format!("{venv}/bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&output)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubernetes-validate (scripts/test installs it)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Injecting the output again changes nothing.
    let again = w.ok(
        &[
            "inject",
            "-f",
            &output.display().to_string(),
            "--namespace",
            "staging",
        ],
        b"",
    );
    assert_eq!(again.stdout_str(), text);
}

#[test]
fn a_denied_pod_fails_with_the_annotation_and_the_rule() {
    let mut w = World::new(Kind::Local);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {sidekey.io/inject: \"true\", sidekey.io/services: api, sidekey.io/environment: production}}\nspec: {containers: [{name: app, image: x, command: [/app]}]}\n";
    let out = w.sk(
        &["inject", "-f", "-", "--namespace", "staging"],
        pod.as_bytes(),
    );
    assert_eq!(out.status, 1);
    let err = out.stderr_str();
    assert!(err.contains("sidekey.io/environment"), "{err}");
    assert!(out.stdout.is_empty());
    // A container without a command, in env delivery: says how to fix it.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {sidekey.io/inject: \"true\", sidekey.io/services: api}}\nspec: {containers: [{name: app, image: x}]}\n";
    let out = w.sk(&["inject", "-f", "-"], pod.as_bytes());
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_str().contains("sidekey.io/command"),
        "{}",
        out.stderr_str()
    );
    // A bad configuration file is a usage error naming the file.
    let config = w.dir.path().join("config.yaml");
    std::fs::write(&config, "prefx: typo\n").expect("write");
    let out = w.sk(
        &[
            "inject",
            "-f",
            "-",
            "--config",
            &config.display().to_string(),
        ],
        pod.as_bytes(),
    );
    assert_eq!(out.status, 2);
    assert!(
        out.stderr_str().contains("config.yaml"),
        "{}",
        out.stderr_str()
    );
}
