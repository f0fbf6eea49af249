//! A task's Envoy and apps as supervised processes on this machine (the loopback and
//! namespace backends), started as the task definition's `dependsOn ... HEALTHY` asks:
//! Envoy first, until it is LIVE, then each app container until it listens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use meshmodel::taskdef::Task;

use super::images::ImageRef;
use super::supervise::{Spec, Supervised};
use super::{Launch, Site, netns, wait_until};
use crate::progress::say;

/// The processes of the tasks started so far, in start order.
#[derive(Debug, Default)]
pub struct Processes {
    running: Vec<Supervised>,
}

impl Processes {
    /// Starts `task`'s Envoy, waits until it is LIVE, then starts each app container and
    /// waits until it listens.
    pub async fn start_task(
        &mut self,
        launch: &Launch,
        task: &Task,
        site: &Site,
    ) -> anyhow::Result<()> {
        let base_env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k == "PATH" || k == "HOME")
            .collect();
        self.start_envoy(launch, task, site, &base_env).await?;
        let node = &task.virtual_node;
        for container in task.app_containers() {
            let binary = ImageRef::parse(&container.image).binary;
            let program = launch.bin_dir.join(&binary);
            if !program.is_file() {
                bail!(
                    "{}: container `{}` runs image {}, but there is no {} binary in {} (build it with cargo build --workspace, or set --bin-dir)",
                    task.origin,
                    container.name,
                    container.image,
                    binary,
                    launch.bin_dir.display()
                );
            }
            let mut env = base_env.clone();
            env.extend(
                container
                    .environment
                    .iter()
                    .map(|kv| (kv.name.clone(), kv.value.clone())),
            );
            env.insert("LISTEN_ADDR".into(), site.app_listen.to_string());
            if let Some(proxy) = &site.egress_proxy {
                env.insert("EGRESS_PROXY".into(), proxy.clone());
            }
            env.insert(
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
            let user = match (site.app_user, &container.user) {
                (None, _) => None,
                (Some(_), Some(named)) => Some(super::numeric_user(task, &container.name, named)?),
                (Some(default), None) => Some(default),
            };
            let (program, args) = command(site, &program, Vec::new(), user);
            self.running.push(Supervised::start(
                Spec {
                    name: format!("{node}/{}", container.name),
                    program,
                    args,
                    env,
                    log: launch.run_dir.join(format!(
                        "{}-{}.log",
                        task.file_stem(),
                        container.name
                    )),
                },
                &launch.processes,
                launch.grace,
            ));
            let check = site.place.app;
            let ns = site.netns.clone();
            if !wait_until(Duration::from_secs(15), async || match &ns {
                None => tokio::net::TcpStream::connect(check).await.is_ok(),
                Some(ns) => netns::dial(ns, check, Duration::from_millis(200))
                    .await
                    .is_ok(),
            })
            .await
            {
                bail!(
                    "{node}/{} did not listen on {check} within 15 s; see its log in {}",
                    container.name,
                    launch.run_dir.display()
                );
            }
            say(format!(
                "  {} is up on {}, reached through Envoy at {}",
                container.name, site.place.app, site.place.reach
            ));
        }
        Ok(())
    }

    async fn start_envoy(
        &mut self,
        launch: &Launch,
        task: &Task,
        site: &Site,
        base_env: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let node = &task.virtual_node;
        let bootstrap = launch.write_bootstrap(task, site)?;
        let log = launch
            .run_dir
            .join(format!("{}-envoy.log", task.file_stem()));
        if let Some((uid, gid)) = site.envoy_user {
            // Envoy runs as its own user; it reopens its log (/dev/stdout) by path.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            nix::unistd::chown(
                &log,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .with_context(|| format!("cannot hand {} to uid {uid}", log.display()))?;
        }
        let what = match task.gateway() {
            Some(gateway) => format!("virtual gateway {gateway}"),
            None => format!("virtual node {node}"),
        };
        say(format!(
            "task {} ({what}): starting Envoy{}",
            task.definition.family,
            site.envoy_user
                .map(|(uid, _)| format!(" as uid {uid}"))
                .unwrap_or_default()
        ));
        let args = launch.envoy_options.args(&bootstrap.display().to_string());
        let (program, args) = command(site, &launch.envoy, args, site.envoy_user);
        let row = format!("{node}/{}", task.proxy.container_name);
        let started = std::time::Instant::now();
        self.running.push(Supervised::start(
            Spec {
                name: row.clone(),
                program,
                args,
                env: base_env.clone(),
                log: log.clone(),
            },
            &launch.processes,
            launch.grace,
        ));
        let admin = site.admin();
        if !wait_until(Duration::from_secs(30), async || admin.live().await).await {
            bail!(
                "Envoy for {node} did not become LIVE within 30 s; see {}",
                log.display()
            );
        }
        let live_ms = started.elapsed().as_secs_f64() * 1000.0;
        launch
            .processes
            .update_named(&row, |s| s.live_ms = Some(live_ms));
        if task.gateway().is_some() {
            say(format!(
                "  Envoy is LIVE (admin {admin}); a gateway runs Envoy alone, listening on {}",
                site.place.ingress
            ));
        } else {
            say(format!("  Envoy is LIVE (admin {admin}); starting the app"));
        }
        Ok(())
    }

    /// Stops every process, the last started first.
    pub async fn stop(&mut self) {
        while let Some(p) = self.running.pop() {
            let name = p.name.clone();
            p.stop().await;
            say(format!("  stopped {name}"));
        }
    }
}

/// The program and arguments that run `program args` where `site` is, as `user` when
/// given (in a namespace of its own).
fn command(
    site: &Site,
    program: &Path,
    args: Vec<String>,
    user: Option<(u32, u32)>,
) -> (PathBuf, Vec<String>) {
    // setpriv --pdeathsig: if `up` itself is killed, its children get SIGTERM instead of
    // running on. (A uid change clears the signal, so it is set again after one.)
    let mut wrapped: Vec<String> = vec!["--pdeathsig".into(), "TERM".into(), "--".into()];
    if let Some(ns) = &site.netns {
        wrapped.extend(["ip".into(), "netns".into(), "exec".into(), ns.clone()]);
        if let Some((uid, gid)) = user {
            wrapped.extend([
                "setpriv".into(),
                "--reuid".into(),
                uid.to_string(),
                "--regid".into(),
                gid.to_string(),
                "--clear-groups".into(),
                "--pdeathsig".into(),
                "TERM".into(),
                "--".into(),
            ]);
        }
    }
    wrapped.push(program.display().to_string());
    wrapped.extend(args);
    (PathBuf::from("setpriv"), wrapped)
}
