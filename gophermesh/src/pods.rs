//! `up --containers`: each task definition runs as a podman pod, as an ECS task runs.
//!
//! A pod's containers share one network namespace (`awsvpc`). The pod is created with no
//! network of podman's; its namespace is then named (`ip netns attach`) and given the same
//! network as `--netns`: a veth to the hub, the task address, and the APPMESH iptables rules
//! of the task definition's `proxyConfiguration`. Containers start in `dependsOn` order:
//! the Envoy container (the task definition's user, 1337) first, HEALTHY once its admin
//! interface reports LIVE; then each app container, HEALTHY once its image's own health
//! check (`/app healthcheck`) passes. Environment and user come from the task definition.
//! When an essential container exits, the task's other containers are stopped, as on ECS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use meshmodel::taskdef::Task;

use crate::images::Podman;
use crate::supervise::{ProcessStatus, ProcessTable};
use crate::up::wait_until;

fn say(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// The local image for a task definition's image: the part from `gophermesh/` on
/// (`${IMAGE_REPOSITORY}/gophermesh/distributor:v1` -> `gophermesh/distributor:v1`).
pub fn local_image(image: &str) -> String {
    match image.find("gophermesh/") {
        Some(i) => image[i..].to_owned(),
        None => image.to_owned(),
    }
}

/// One running container.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    essential: bool,
    is_envoy: bool,
}

/// The pods of one run; dropping it removes them.
#[derive(Debug)]
pub struct Pods {
    podman: Podman,
    /// Pod name and its containers, in start order.
    pods: Vec<(String, Vec<Container>)>,
    removed: bool,
}

impl Pods {
    /// Creates (and starts) an empty pod per name; returns the pods and each one's infra
    /// process id, whose network namespace the task uses.
    pub fn create(podman: &Podman, names: &[String]) -> anyhow::Result<(Self, Vec<u32>)> {
        let mut pods = Self {
            podman: podman.clone(),
            pods: Vec::new(),
            removed: false,
        };
        let mut pids = Vec::new();
        for name in names {
            let infra = format!("{name}-infra");
            podman.run(&[
                "pod",
                "create",
                "--name",
                name,
                "--network",
                "none",
                "--infra-name",
                &infra,
            ])?;
            pods.pods.push((name.clone(), Vec::new()));
            podman.run(&["pod", "start", name])?;
            let pid: u32 = podman
                .run(&["inspect", "--format", "{{.State.Pid}}", &infra])?
                .parse()
                .with_context(|| format!("no process for pod {name}'s infra container"))?;
            pids.push(pid);
        }
        Ok((pods, pids))
    }

    /// Starts task `index`'s containers in order and waits for each to be HEALTHY.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_task(
        &mut self,
        index: usize,
        task: &Task,
        netns: &str,
        bootstrap: &Path,
        envoy_user: (u32, u32),
        envoy_args: &[String],
        app_listen: SocketAddr,
        admin: &crate::admin::EnvoyAdmin,
        processes: &ProcessTable,
    ) -> anyhow::Result<()> {
        let pod = self
            .pods
            .get(index)
            .map(|(p, _)| p.clone())
            .context("no such pod")?;
        let hosts = format!("/etc/netns/{netns}/hosts:/etc/hosts:ro");
        let node = &task.virtual_node;
        // Envoy first.
        let envoy_name = format!("{pod}-{}", task.proxy.container_name);
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--pod".into(),
            pod.clone(),
            "--name".into(),
            envoy_name.clone(),
            "--user".into(),
            format!("{}:{}", envoy_user.0, envoy_user.1),
            "-v".into(),
            format!("{}:/etc/envoy/bootstrap.json:ro", bootstrap.display()),
            "-v".into(),
            hosts.clone(),
        ];
        if let Some((_, envoy)) = task.definition.container(&task.proxy.container_name) {
            for kv in &envoy.environment {
                args.extend(["-e".into(), format!("{}={}", kv.name, kv.value)]);
            }
        }
        args.push(crate::images::ENVOY.into());
        args.extend(envoy_args.iter().cloned());
        say(format!(
            "task {} (virtual node {node}): starting container {envoy_name} as uid {}",
            task.definition.family, envoy_user.0
        ));
        let envoy_row = format!("{node}/{}", task.proxy.container_name);
        self.run_container(index, &args, &envoy_name, true, true, &envoy_row, processes)?;
        if !wait_until(Duration::from_secs(30), async || admin.live().await).await {
            bail!(
                "Envoy in {envoy_name} did not become LIVE within 30 s; see podman logs {envoy_name}"
            );
        }
        say(format!("  {envoy_name} is HEALTHY (Envoy LIVE)"));
        // Then the app containers, in the task definition's order.
        for c in task.app_containers() {
            let name = format!("{pod}-{}", c.name);
            let mut args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--pod".into(),
                pod.clone(),
                "--name".into(),
                name.clone(),
                // up runs the image's health check itself (there is no systemd here to).
                "--health-interval".into(),
                "disable".into(),
                "-v".into(),
                hosts.clone(),
            ];
            if let Some(user) = &c.user {
                args.extend(["--user".into(), user.clone()]);
            }
            for kv in &c.environment {
                args.extend(["-e".into(), format!("{}={}", kv.name, kv.value)]);
            }
            args.extend(["-e".into(), format!("LISTEN_ADDR={app_listen}")]);
            args.push(local_image(&c.image));
            say(format!(
                "  starting container {name} ({})",
                local_image(&c.image)
            ));
            let row = format!("{node}/{}", c.name);
            self.run_container(
                index,
                &args,
                &name,
                c.essential.unwrap_or(true),
                false,
                &row,
                processes,
            )?;
            let podman = self.podman.clone();
            let check = name.clone();
            let healthy = wait_until(Duration::from_secs(20), async || {
                let podman = podman.clone();
                let check = check.clone();
                tokio::task::spawn_blocking(move || {
                    podman
                        .command()
                        .args(["healthcheck", "run", &check])
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .await
                .unwrap_or(false)
            })
            .await;
            if !healthy {
                bail!("{name} did not become HEALTHY within 20 s; see podman logs {name}");
            }
            say(format!("  {name} is HEALTHY"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_container(
        &mut self,
        index: usize,
        args: &[String],
        name: &str,
        essential: bool,
        is_envoy: bool,
        row_name: &str,
        processes: &ProcessTable,
    ) -> anyhow::Result<()> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.podman.run(&refs)?;
        let pid = self
            .podman
            .run(&["inspect", "--format", "{{.State.Pid}}", name])
            .ok()
            .and_then(|p| p.parse::<u32>().ok());
        let row = processes.register(ProcessStatus {
            name: row_name.to_owned(),
            pid,
            running: true,
            restarts: 0,
            last_exit: None,
            log: format!("podman logs {name}"),
        });
        let container = Container {
            name: name.to_owned(),
            essential,
            is_envoy,
        };
        if let Some((_, list)) = self.pods.get_mut(index) {
            list.push(container.clone());
        }
        // Watch it: when it exits, say so; when it was essential, stop the task.
        let podman = self.podman.clone();
        let siblings: Vec<String> = self
            .pods
            .get(index)
            .map(|(_, l)| l.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let processes = processes.clone();
        let pod = self
            .pods
            .get(index)
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        tokio::spawn(async move {
            let out = tokio::process::Command::from(podman.command())
                .args(["wait", &container.name])
                .output()
                .await;
            let code = out
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            processes.update(row, |s| {
                s.running = false;
                s.last_exit = Some(format!("exited {code}"));
            });
            if container.essential && !code.is_empty() {
                tracing::warn!(
                    container = container.name,
                    code,
                    "an essential container exited; stopping task {pod}"
                );
                for other in siblings.iter().filter(|n| **n != container.name) {
                    let _ = tokio::process::Command::from(podman.command())
                        .args(["stop", "-t", "2", other])
                        .output()
                        .await;
                }
            }
        });
        Ok(())
    }

    /// Stops the apps, then the Envoys, then removes the pods (in reverse order).
    pub fn remove(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.removed {
            return failures;
        }
        self.removed = true;
        for want_envoy in [false, true] {
            for (_, containers) in self.pods.iter().rev() {
                for c in containers.iter().rev().filter(|c| c.is_envoy == want_envoy) {
                    if let Err(e) = self.podman.run(&["stop", "-t", "5", &c.name]) {
                        failures.push(format!("{e:#}"));
                    } else {
                        say(format!("  stopped {}", c.name));
                    }
                }
            }
        }
        for (pod, _) in self.pods.iter().rev() {
            if let Err(e) = self.podman.run(&["pod", "rm", "-f", "-t", "2", pod]) {
                failures.push(format!("{e:#}"));
            }
        }
        failures
    }

    /// Removes pods left by runs whose process is gone; returns their names.
    pub fn remove_leftovers(podman: &Podman) -> Vec<String> {
        let Ok(list) = podman.run(&["pod", "ls", "--format", "{{.Name}}"]) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for name in list.lines().filter(|n| crate::netns::from_dead_run(n)) {
            if podman.run(&["pod", "rm", "-f", "-t", "1", name]).is_ok() {
                removed.push(name.to_owned());
            }
        }
        removed
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for f in self.remove() {
            eprintln!("gophermesh: removing pods: {f}");
        }
    }
}

/// The images `up --containers` needs, built when any is missing.
pub fn ensure_images(
    podman: &Podman,
    bin_dir: &Path,
    envoy: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let needed = [
        crate::images::REQUESTER,
        crate::images::DISTRIBUTOR_V1,
        crate::images::DISTRIBUTOR_V2,
        crate::images::ENVOY,
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|i| !podman.has_image(i))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(format!(
        "building the missing images ({})",
        missing.join(", ")
    ));
    crate::images::build_all(podman, bin_dir, envoy, work).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_images_map_to_local_ones() {
        assert_eq!(
            local_image("${IMAGE_REPOSITORY}/gophermesh/distributor:v1"),
            "gophermesh/distributor:v1"
        );
        assert_eq!(
            local_image("gophermesh/requester:latest"),
            "gophermesh/requester:latest"
        );
        assert_eq!(local_image("nginx:1"), "nginx:1");
    }
}
