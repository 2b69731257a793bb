//! Playing the kubelet: runs a (patched) pod's init containers, native
//! sidecars and app containers as real processes, in Kubernetes order, each
//! in its own mount namespace with a tmpfs root, its images' files, the
//! host's `/usr` (read-only, so ordinary binaries run), and its volume
//! mounts. Every `emptyDir` with `medium: Memory` is a real tmpfs shared by
//! the pod's containers, as the kubelet would make it.
//!
//! Needs root (mount namespaces, tmpfs, chroot, setpriv), as CI has. Used by
//! the whole-life tests in `tests/tests/`; nothing here fakes the agent or
//! the injector: they are the real binaries.

pub mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The PATH an image gives its containers.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container image: files put into the container's root.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// (path in the container, host file to copy, mode)
    pub files: Vec<(String, PathBuf, u32)>,
    /// What runs when the container spec has no command.
    pub entrypoint: Vec<String>,
    /// The image's numeric `USER`: who runs when neither the container
    /// nor the pod sets `runAsUser` (its group: the same number).
    pub user: Option<u32>,
}

impl Image {
    pub fn with_entrypoint(mut self, argv: &[&str]) -> Image {
        self.entrypoint = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn with_user(mut self, uid: u32) -> Image {
        self.user = Some(uid);
        self
    }

    pub fn with_file(mut self, path: &str, host: impl Into<PathBuf>, mode: u32) -> Image {
        self.files.push((path.to_owned(), host.into(), mode));
        self
    }
}

/// What one container did.
#[derive(Debug)]
pub struct ContainerRun {
    pub name: String,
    /// Exit code; -1 if killed by a signal, None if never started.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ContainerRun {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How a pod ended.
#[derive(Debug)]
pub struct PodRun {
    /// In start order: init containers, sidecars, app containers.
    pub containers: Vec<ContainerRun>,
    /// The first init container that failed, if any (the app never ran).
    pub failed_init: Option<String>,
}

impl PodRun {
    pub fn container(&self, name: &str) -> Option<&ContainerRun> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// A pod ready to run: its spec, images, a tmpfs for its volumes.
#[derive(Debug)]
pub struct Kubelet {
    work: PathBuf,
    volumes_root: PathBuf,
    images: BTreeMap<String, Image>,
    /// Variables every container gets (what EKS Pod Identity would inject:
    /// region, credentials, endpoint).
    pub extra_env: Vec<(String, String)>,
    /// How long a native sidecar may take to pass its startup probe.
    pub startup_timeout: Duration,
}

/// `sh` single quoting.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

impl Kubelet {
    /// `work`: a directory for the containers' mount points. Volumes go
    /// under /dev/shm (a tmpfs) in a fresh directory.
    pub fn new(work: &Path) -> Result<Kubelet> {
        let volumes = tempfile::Builder::new()
            .prefix("sidekey-pod-")
            .tempdir_in("/dev/shm")
            .context("a pod directory under /dev/shm")?
            .keep();
        Ok(Kubelet {
            work: work.to_owned(),
            volumes_root: volumes,
            images: BTreeMap::new(),
            extra_env: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        })
    }

    pub fn image(&mut self, name: &str, image: Image) {
        self.images.insert(name.to_owned(), image);
    }

    /// The host directory of an emptyDir volume (a tmpfs).
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_root.join(name)
    }

    /// Runs the pod to completion: init containers in order (each must exit
    /// 0), native sidecars started and probed, then the app containers
    /// together; sidecars get SIGTERM when the app containers have exited.
    pub fn run(&self, pod: &Value) -> Result<PodRun> {
        let spec = &pod["spec"];
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let name = v["name"]
                .as_str()
                .ok_or_else(|| anyhow!("volume without a name"))?;
            if v.get("emptyDir").is_none() {
                bail!("volume {name}: only emptyDir volumes are played");
            }
            std::fs::create_dir_all(self.volume_dir(name))?;
            // The kubelet makes an emptyDir mode 0777.
            std::fs::set_permissions(
                self.volume_dir(name),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )?;
        }
        let mut runs = Vec::new();
        let mut sidecars: Vec<(String, Child)> = Vec::new();
        let mut failed_init = None;
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("?").to_owned();
            if c["restartPolicy"] == "Always" {
                let child = self.spawn(pod, c)?;
                sidecars.push((name.clone(), child));
                if let Err(e) = self.wait_for_startup(pod, c) {
                    failed_init = Some(format!("{name}: {e}"));
                    break;
                }
                continue;
            }
            let child = self.spawn(pod, c)?;
            let run = collect(&name, child)?;
            let ok = run.status == Some(0);
            runs.push(run);
            if !ok {
                failed_init = Some(name);
                break;
            }
        }
        if failed_init.is_none() {
            let mut apps = Vec::new();
            for c in spec["containers"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("?").to_owned();
                apps.push((name, self.spawn(pod, c)?));
            }
            for (name, child) in apps {
                runs.push(collect(&name, child)?);
            }
        }
        for (name, child) in sidecars {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            runs.push(collect(&name, child)?);
        }
        Ok(PodRun {
            containers: runs,
            failed_init,
        })
    }

    fn wait_for_startup(&self, pod: &Value, c: &Value) -> Result<()> {
        let Some(cmd) = c["startupProbe"]["exec"]["command"].as_array() else {
            return Ok(());
        };
        let mut probe = c.clone();
        probe["command"] = Value::Array(cmd.clone());
        probe["args"] = Value::Array(Vec::new());
        let started = Instant::now();
        loop {
            let run = collect("probe", self.spawn(pod, &probe)?)?;
            if run.status == Some(0) {
                return Ok(());
            }
            if started.elapsed() > self.startup_timeout {
                bail!("startup probe never passed: {}", run.stderr_str().trim());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts one container: `unshare -m`, a tmpfs root, the host's /usr,
    /// /etc, /dev and a fresh /proc, the image's files, the volume mounts,
    /// then `chroot` + `setpriv` to the container's user and `exec`.
    fn spawn(&self, pod: &Value, c: &Value) -> Result<Child> {
        let name = c["name"].as_str().unwrap_or("?");
        let image_name = c["image"].as_str().unwrap_or("");
        let image = self
            .images
            .get(image_name)
            .ok_or_else(|| anyhow!("container {name}: no image {image_name:?} registered"))?;
        let root = tempfile::Builder::new()
            .prefix(&format!("root-{name}-"))
            .tempdir_in(&self.work)?
            .keep();
        let r = root.display().to_string();
        let mut script = vec![
            "set -e".to_owned(),
            format!("mount -t tmpfs -o mode=0755 rootfs {}", q(&r)),
            format!("mkdir -p {0}/usr {0}/etc {0}/dev {0}/proc {0}/tmp", q(&r)),
            format!("ln -s usr/bin {0}/bin && ln -s usr/sbin {0}/sbin && ln -s usr/lib {0}/lib && ln -s usr/lib64 {0}/lib64", q(&r)),
            format!("mount --rbind /usr {0}/usr && mount -o remount,bind,ro {0}/usr", q(&r)),
            format!("mount --bind /etc {0}/etc && mount -o remount,bind,ro {0}/etc", q(&r)),
            format!("mount --rbind /dev {0}/dev", q(&r)),
            format!("mount -t proc proc {0}/proc", q(&r)),
            format!("chmod 1777 {0}/tmp", q(&r)),
        ];
        for (path, host, mode) in &image.files {
            let dest = format!("{r}{path}");
            script.push(format!(
                "mkdir -p \"$(dirname {0})\" && cp {1} {0} && chmod {2:o} {0}",
                q(&dest),
                q(&host.display().to_string()),
                mode
            ));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = m["name"].as_str().unwrap_or("");
            let path = m["mountPath"].as_str().unwrap_or("");
            let dest = format!("{r}{path}");
            let src = self.volume_dir(vol).display().to_string();
            script.push(format!(
                "mkdir -p {0} && mount --bind {1} {0}",
                q(&dest),
                q(&src)
            ));
            if m["readOnly"] == true {
                script.push(format!("mount -o remount,bind,ro {}", q(&dest)));
            }
        }
        // The user the container runs as (container, else pod security context).
        let sc = &c["securityContext"];
        let psc = &pod["spec"]["securityContext"];
        let uid = sc["runAsUser"]
            .as_u64()
            .or(psc["runAsUser"].as_u64())
            .or(image.user.map(u64::from));
        let gid = sc["runAsGroup"]
            .as_u64()
            .or(psc["runAsGroup"].as_u64())
            .or(uid);
        let fs_group = psc["fsGroup"].as_u64();
        if let Some(g) = fs_group {
            // The kubelet makes volumes group-owned by fsGroup.
            for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                let dir = self.volume_dir(v["name"].as_str().unwrap_or(""));
                script.push(format!(
                    "chgrp {g} {0} && chmod g+rwxs {0}",
                    q(&dir.display().to_string())
                ));
            }
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().unwrap_or("").to_owned())
                .collect()
        };
        let mut argv = match c.get("command") {
            Some(cmd) if cmd.is_array() => strings(cmd),
            _ => image.entrypoint.clone(),
        };
        argv.extend(strings(&c["args"]));
        if argv.is_empty() {
            bail!("container {name} has no command (image entrypoints are not played)");
        }
        let env = self.container_env(pod, c);
        let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
        let mut exec = format!("exec chroot {}", q(&r));
        if let Some(u) = uid {
            let groups = match fs_group {
                Some(g) => format!("--groups {g}"),
                None => "--clear-groups".to_owned(),
            };
            exec.push_str(&format!(
                " setpriv --reuid {u} --regid {} {groups}",
                gid.unwrap_or(u)
            ));
        }
        exec.push_str(" --");
        for a in &argv {
            exec.push(' ');
            exec.push_str(&q(a));
        }
        // `setpriv` takes `--` before the command; plain chroot does not.
        let exec = if uid.is_some() {
            exec
        } else {
            exec.replacen(" --", "", 1)
        };
        script.push(exec);
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script.join("\n"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn()
            .with_context(|| format!("starting container {name}"))
    }

    /// The container's environment as the kubelet builds it: the image's
    /// PATH, the extra (Pod Identity) variables, then `env` in order with
    /// `value` (with `$(VAR)` expansion) and `fieldRef` on the pod's
    /// metadata.
    fn container_env(&self, pod: &Value, c: &Value) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![("PATH".to_owned(), IMAGE_PATH.to_owned())];
        env.extend(self.extra_env.iter().cloned());
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or("").to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    "metadata.namespace" => pod["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    _ => String::new(),
                }
            } else {
                String::new()
            };
            env.retain(|(k, _)| k != &name);
            env.push((name, value));
        }
        env
    }

    /// Removes the pod's volumes (the tmpfs directories).
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.volumes_root);
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `$(VAR)` expansion as the kubelet does it (`$$` escapes).
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let (Some(inner), Some(end)) = (after.strip_prefix('('), after.find(')')) {
            let var = &inner[..end - 1];
            match env.iter().rev().find(|(k, _)| k == var) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({var})")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn collect(name: &str, child: Child) -> Result<ContainerRun> {
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {name}"))?;
    Ok(ContainerRun {
        name: name.to_owned(),
        status: Some(out.status.code().unwrap_or(-1)),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// A pod from a workload manifest, as its controller would create it: the
/// template's metadata and spec, a generated name, the namespace.
pub fn pod_from_workload(manifest: &Value, namespace: &str) -> Result<Value> {
    let kind = manifest["kind"].as_str().unwrap_or("");
    let template = match kind {
        "Pod" => return Ok(manifest.clone()),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            &manifest["spec"]["template"]
        }
        "CronJob" => &manifest["spec"]["jobTemplate"]["spec"]["template"],
        other => bail!("not a workload: {other:?}"),
    };
    let name = manifest["metadata"]["name"].as_str().unwrap_or("pod");
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    if !pod["metadata"].is_object() {
        pod["metadata"] = serde_json::json!({});
    }
    pod["metadata"]["generateName"] = Value::String(format!("{name}-"));
    pod["metadata"]["namespace"] = Value::String(namespace.to_owned());
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("a$b", &env), "a$b");
    }
}
