//! The namespace backend (`up --netns`, root): each task in a network namespace of its
//! own ([`super::netns`]) with the APPMESH iptables rules of its task definition. Envoy
//! listens on the proxy configuration's ingress and egress ports as uid 1337, the app on
//! its AppPort with no proxy setting, and other Envoys reach the task at `TASK_IP:AppPort`,
//! which the rules redirect to Envoy's ingress, exactly as on ECS. The pod backend
//! (`pods`) puts its pods on the same network.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use controlplane::Placement;
use meshmodel::taskdef::Task;
use tokio::net::TcpListener;

use super::netns::{self, Network};
use super::processes::Processes;
use super::{Backend, Launch, Plan, Site, app_port, envoy};
use crate::progress::say;

/// Tasks as processes, each in a network namespace of its own.
#[derive(Debug, Default)]
pub struct Namespaces {
    network: Option<Network>,
    processes: Processes,
    /// An address of the host the tasks reach (a control plane outside the run).
    uplink: Option<Ipv4Addr>,
}

impl Namespaces {
    /// Tasks that reach `to`, an address of the host, through an uplink
    /// ([`Network::add_uplink`]).
    pub fn with_uplink(to: Ipv4Addr) -> Self {
        Self {
            uplink: Some(to),
            ..Self::default()
        }
    }
}

impl Backend for Namespaces {
    fn plan(&mut self, tasks: &[Task], meshes: &super::Meshes) -> anyhow::Result<Plan> {
        Network::preflight()?;
        let (mut network, plan) = plan_network(tasks, meshes, None)?;
        if let Some(to) = self.uplink {
            let host = network.add_uplink(to)?;
            say(format!(
                "the tasks reach {to} (and nothing else outside) through an uplink to the host ({host})"
            ));
        }
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
        self.processes.start_task(launch, task, site).await
    }

    async fn stop(&mut self) {
        self.processes.stop().await;
        if let Some(network) = self.network.as_mut() {
            teardown(network);
        }
    }
}

/// Removes the namespaces of dead runs, creates the network for `tasks` (in the namespaces of processes `pod_pids` when given) and plans
/// each task's site on it.
pub fn plan_network(
    tasks: &[Task],
    meshes: &super::Meshes,
    pod_pids: Option<&[u32]>,
) -> anyhow::Result<(Network, Plan)> {
    let leftovers = Network::remove_leftovers();
    if !leftovers.is_empty() {
        say(format!(
            "removed namespaces left by an earlier run: {}",
            leftovers.join(", ")
        ));
    }
    say("creating a network namespace per task (hub bridge, veth pairs, APPMESH iptables rules)");
    let hosts = hosts_for(tasks, meshes)?;
    // A gateway's task has no proxy configuration, so no APPMESH rules.
    let proxies: Vec<Option<&meshmodel::ecs::AppMeshProxy>> = tasks
        .iter()
        .map(|t| t.gateway().is_none().then_some(&t.proxy))
        .collect();
    let network = Network::create_for(&proxies, &hosts, pod_pids)?;
    let mut sites = BTreeMap::new();
    for (t, ns) in tasks.iter().zip(&network.tasks) {
        say(format!(
            "  task {}: netns {} at {}",
            t.definition.family, ns.name, ns.ip
        ));
        let port = if t.gateway().is_some() {
            t.proxy.proxy_ingress_port
        } else {
            app_port(t)
        };
        let place = Placement {
            ingress: (Ipv4Addr::UNSPECIFIED, t.proxy.proxy_ingress_port).into(),
            egress: (Ipv4Addr::UNSPECIFIED, t.proxy.proxy_egress_port).into(),
            app: (Ipv4Addr::LOCALHOST, port).into(),
            reach: (ns.ip, port).into(),
            admin: (Ipv4Addr::LOCALHOST, envoy::ADMIN_PORT).into(),
        };
        sites.insert(
            t.key(),
            Site {
                place,
                app_listen: (Ipv4Addr::UNSPECIFIED, port).into(),
                egress_proxy: None,
                netns: Some(ns.name.clone()),
                envoy_user: Some(envoy_user(t)?),
                app_user: Some(super::APP_USER),
            },
        );
    }
    let plan = Plan {
        sites,
        hosts: Some(network.clone_files()),
        entry_netns: Some(network.hub.clone()),
    };
    Ok((network, plan))
}

/// The ADS listener on the hub's address, inside the hub namespace.
pub async fn hub_listener(network: Option<&Network>, port: u16) -> anyhow::Result<TcpListener> {
    let net = network.context("the network is made by plan, before the ADS listener")?;
    let addr = SocketAddr::from((netns::HUB_IP, port));
    netns::listen(&net.hub, addr)
        .await
        .with_context(|| format!("cannot listen for xDS on {addr} in {}", net.hub))
}

/// Removes the rules and namespaces, saying what failed.
pub fn teardown(network: &mut Network) {
    let failures = network.teardown();
    if failures.is_empty() {
        say(format!(
            "removed the APPMESH rules and {} network namespaces",
            network.tasks.len() + 1
        ));
    }
    for f in failures {
        eprintln!("gophermesh: teardown: {f}");
    }
}

/// The uid:gid of the Envoy container's `user` ("1337" or "1337:1337"); the proxy
/// configuration's IgnoredUID, or 1337, when unset.
fn envoy_user(task: &Task) -> anyhow::Result<(u32, u32)> {
    let user = task
        .definition
        .container(&task.proxy.container_name)
        .and_then(|(_, c)| c.user.clone())
        .or_else(|| task.proxy.ignored_uid.map(|u| u.to_string()))
        .unwrap_or_else(|| "1337".to_owned());
    super::numeric_user(task, &task.proxy.container_name, &user)
}

/// What the tasks' hosts files say: every node's DNS hostname resolves to its task; other
/// virtual service names to a placeholder that the sidecar intercepts.
pub fn hosts_for(
    tasks: &[Task],
    meshes: &super::Meshes,
) -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    let mut hosts: Vec<(String, Ipv4Addr)> = Vec::new();
    for (index, t) in tasks.iter().enumerate() {
        if let Some(hostname) = meshes
            .get(&t.mesh_name)
            .and_then(|m| m.virtual_nodes.get(&t.virtual_node))
            .and_then(|n| n.value.spec.service_discovery.as_ref())
            .and_then(|d| d.dns.as_ref())
            .map(|d| d.hostname.clone())
        {
            hosts.push((hostname, netns::task_ip(index)?));
        }
    }
    for name in meshes.values().flat_map(|m| m.virtual_services.keys()) {
        if !hosts.iter().any(|(h, _)| h == name) {
            hosts.push((name.clone(), netns::PLACEHOLDER_IP));
        }
    }
    Ok(hosts)
}
