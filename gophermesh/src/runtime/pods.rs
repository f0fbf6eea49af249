//! The pod backend (`up --containers`, root): each task definition runs as a podman pod,
//! as an ECS task runs.
//!
//! A pod's containers share one network namespace (`awsvpc`). The pod is created with no
//! network of podman's; its namespace is then named (`ip netns attach`) and given the same
//! network as `--netns`: a veth to the hub, the task address, and the APPMESH iptables rules
//! of the task definition's `proxyConfiguration`. Containers start in `dependsOn` order:
//! the Envoy container first, from the sidecar image (`gophermesh sidecar` under the task
//! definition's user, 1337, and environment, with `APPMESH_XDS_ENDPOINT` added and the
//! control plane's CA where the agent's image keeps its CA bundle: the bootstrap is
//! written from the environment, as on ECS), HEALTHY once its admin interface reports
//! LIVE; then each app container, HEALTHY once its image's own health
//! check (`/app healthcheck`) passes. Environment and user come from the task definition.
//! When an essential container exits, the task's other containers are stopped, as on ECS.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use meshmodel::taskdef::Task;

use super::images::{self, ImageRef, Podman};
use super::namespaces::{plan_network, teardown};
use super::netns::{self, Network};
use super::supervise::{ProcessStatus, ProcessTable};
use super::{Backend, Launch, Plan, Site, wait_until};
use crate::progress::say;

/// Tasks as podman pods on the namespace backend's network.
#[derive(Debug)]
pub struct PodBackend {
    podman: Podman,
    pods: Option<Pods>,
    network: Option<Network>,
}

impl PodBackend {
    /// Checks podman, removes pods of dead runs, and builds the images that are missing
    /// (from the binaries in `bin_dir` and `envoy`, in `work`).
    pub fn new(podman: Podman, bin_dir: &Path, envoy: &Path, work: &Path) -> anyhow::Result<Self> {
        Network::preflight()?;
        let left = Pods::remove_leftovers(&podman);
        if !left.is_empty() {
            say(format!(
                "removed pods left by an earlier run: {}",
                left.join(", ")
            ));
        }
        images::ensure_all(&podman, bin_dir, envoy, work)?;
        Ok(Self {
            podman,
            pods: None,
            network: None,
        })
    }
}

impl Backend for PodBackend {
    fn speaks_tls(&self) -> bool {
        true
    }

    fn plan(&mut self, tasks: &[Task], meshes: &super::Meshes) -> anyhow::Result<Plan> {
        let names: Vec<String> = (0..tasks.len()).map(netns::task_name).collect();
        say(format!("creating a pod per task: {}", names.join(", ")));
        let (pods, pids) = Pods::create(&self.podman, &names)?;
        self.pods = Some(pods);
        let (network, plan) = plan_network(tasks, meshes, Some(&pids))?;
        self.network = Some(network);
        Ok(plan)
    }

    fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    async fn start_task(
        &mut self,
        launch: &Launch,
        task: &Task,
        site: &Site,
    ) -> anyhow::Result<()> {
        let pods = self.pods.as_mut().context("pods are made by plan")?;
        pods.start_task(launch, task, site).await
    }

    async fn stop(&mut self) {
        if let Some(pods) = self.pods.as_mut() {
            let failures = pods.remove();
            if failures.is_empty() {
                say("removed the pods");
            }
            for f in failures {
                eprintln!("gophermesh: removing pods: {f}");
            }
        }
        if let Some(network) = self.network.as_mut() {
            teardown(network);
        }
    }
}

/// The Envoy container's environment: the task definition's (its `${AWS_REGION}` and
/// `${AWS_ACCOUNT_ID}` filled from this environment, else as the control plane's ARNs say),
/// then what this run sets: the management server, the admin port it reaches, and
/// `up`'s Envoy options.
fn sidecar_environment(
    launch: &Launch,
    task: &Task,
    site: &Site,
    endpoint: &str,
) -> Vec<(String, String)> {
    let identity = &launch.identity;
    let lookup = |name: &str| {
        std::env::var(name).ok().or(match name {
            "AWS_REGION" => Some(identity.region.clone()),
            "AWS_ACCOUNT_ID" => Some(identity.account.clone()),
            _ => None,
        })
    };
    let mut env: Vec<(String, String)> = task
        .definition
        .container(&task.proxy.container_name)
        .map(|(_, envoy)| {
            envoy
                .environment
                .iter()
                .map(|kv| {
                    let value = meshmodel::render::render(&kv.name, &kv.value, lookup)
                        .unwrap_or_else(|_| kv.value.clone());
                    (kv.name.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let ours = [
        ("APPMESH_XDS_ENDPOINT", endpoint.to_owned()),
        (
            "ENVOY_ADMIN_ACCESS_PORT",
            site.place.admin.port().to_string(),
        ),
        (
            "ENVOY_CONCURRENCY",
            launch.envoy_options.concurrency.to_string(),
        ),
        ("ENVOY_LOG_LEVEL", launch.envoy_options.log_level.clone()),
        (
            "GOPHERMESH_XDS_PROTOCOL",
            launch.envoy_options.xds_protocol.api_name().to_owned(),
        ),
    ];
    env.retain(|(name, _)| !ours.iter().any(|(n, _)| n == name));
    env.extend(ours.map(|(n, v)| (n.to_owned(), v)));
    env
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

    /// Starts `task`'s containers in its pod (the one in the task's namespace), in order,
    /// and waits for each to be HEALTHY.
    pub async fn start_task(
        &mut self,
        launch: &Launch,
        task: &Task,
        site: &Site,
    ) -> anyhow::Result<()> {
        let netns = site.netns.as_deref().context("a pod without a namespace")?;
        let index = self
            .pods
            .iter()
            .position(|(p, _)| p == netns)
            .with_context(|| format!("no pod for namespace {netns}"))?;
        let pod = netns.to_owned();
        let envoy_user = site.envoy_user.unwrap_or((1337, 1337));
        let app_listen = site.app_listen;
        let admin = site.admin();
        let processes = &launch.processes;
        let hosts = format!("/etc/netns/{netns}/hosts:/etc/hosts:ro");
        let node = &task.virtual_node;
        // Envoy first.
        let envoy_name = format!("{pod}-{}", task.proxy.container_name);
        let super::Xds::Tls { endpoint, ca_file } = &launch.xds else {
            bail!("the sidecar image speaks TLS only: ADS must be served over TLS");
        };
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
            format!(
                "{}:{}:ro",
                ca_file.display(),
                crate::sidecar::env::CA_BUNDLE
            ),
            "-v".into(),
            hosts.clone(),
        ];
        for (name, value) in sidecar_environment(launch, task, site, endpoint) {
            args.extend(["-e".into(), format!("{name}={value}")]);
        }
        args.push(images::SIDECAR.name.into());
        let what = match task.gateway() {
            Some(gateway) => format!("virtual gateway {gateway}"),
            None => format!("virtual node {node}"),
        };
        say(format!(
            "task {} ({what}): starting container {envoy_name} as uid {}",
            task.definition.family, envoy_user.0
        ));
        let envoy_row = format!("{node}/{}", task.proxy.container_name);
        let started = std::time::Instant::now();
        self.run_container(index, &args, &envoy_name, true, true, &envoy_row, processes)?;
        if !wait_until(Duration::from_secs(30), async || admin.live().await).await {
            bail!(
                "Envoy in {envoy_name} did not become LIVE within 30 s; see podman logs {envoy_name}"
            );
        }
        let live_ms = started.elapsed().as_secs_f64() * 1000.0;
        processes.update_named(&envoy_row, |s| s.live_ms = Some(live_ms));
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
            let image = ImageRef::parse(&c.image).local;
            say(format!("  starting container {name} ({image})"));
            args.push(image);
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
            log: format!("podman logs {name}"),
            ..Default::default()
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
        // The apps, then the Envoys (each drains for at most the 5 s podman gives it),
        // all of a kind at once.
        for want_envoy in [false, true] {
            let names: Vec<&str> = self
                .pods
                .iter()
                .rev()
                .flat_map(|(_, containers)| containers.iter().rev())
                .filter(|c| c.is_envoy == want_envoy)
                .map(|c| c.name.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut args = vec!["stop", "-t", "5"];
            args.extend(&names);
            match self.podman.run(&args) {
                Ok(_) => say(format!("  stopped {}", names.join(", "))),
                Err(e) => failures.push(format!("{e:#}")),
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
        for name in list.lines().filter(|n| netns::from_dead_run(n)) {
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
