//! Running the tasks of the mesh on this machine: each task definition's Envoy sidecar and
//! app containers, started in `dependsOn` order and supervised, in one of three backends.
//!
//! ```text
//! mod.rs      Site (where a task runs), Launch (what starting one needs), the Backend
//!             trait, and the start order
//! loopback    backend: each task on an address of its own in 127.0.0.0/8
//! namespaces  backend: a network namespace per task with the APPMESH iptables rules
//! pods        backend: each task definition as a podman pod on the namespaces' network
//! processes   starting a task's Envoy and apps as supervised processes
//! supervise   child processes restarted with backoff, stopped in order
//! netns       network namespaces, veth pairs, hosts files and iptables rules
//! envoy       the Envoy binary, bootstrap, arguments and admin interface
//! images      the container images, built offline with podman
//! publish     the requester's port published on the host's loopback
//! ```
//!
//! The runtime reads the mesh model and the control plane's placement types; it never
//! reaches into the control plane's store, translation or ADS.

pub mod envoy;
pub mod images;
pub mod loopback;
pub mod namespaces;
pub mod netns;
pub mod pods;
pub mod processes;
pub mod publish;
pub mod supervise;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use controlplane::Placement;
use meshmodel::taskdef::Task;
use tokio::net::TcpListener;

use envoy::{EnvoyAdmin, EnvoyOptions};
use supervise::ProcessTable;

/// Where one task runs and how its processes are started.
#[derive(Debug, Clone)]
pub struct Site {
    /// Where its Envoy and app listen, as the control plane is told.
    pub place: Placement,
    /// `LISTEN_ADDR` for the task's app.
    pub app_listen: SocketAddr,
    /// `EGRESS_PROXY` for the app (loopback mode only).
    pub egress_proxy: Option<String>,
    /// The network namespace of the task, when it has one of its own.
    pub netns: Option<String>,
    /// The uid and gid Envoy runs as (in a namespace of its own).
    pub envoy_user: Option<(u32, u32)>,
    /// The uid and gid an app container runs as when it names no `user` (in a namespace
    /// of its own; `None` runs apps as `up` runs).
    pub app_user: Option<(u32, u32)>,
}

/// The uid and gid apps run as in their own namespace when their container names no user:
/// the images' own `USER` (not root, and not 1337, whose traffic the APPMESH rules let
/// through).
pub const APP_USER: (u32, u32) = (10001, 10001);

/// A container's `user` ("1337" or "1337:1337") as numbers, or an error naming it.
pub fn numeric_user(task: &Task, container: &str, user: &str) -> anyhow::Result<(u32, u32)> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let parse = |s: &str| {
        s.parse::<u32>().map_err(|_| {
            anyhow::anyhow!(
                "{}: container `{container}`: user `{user}` must be a numeric uid[:gid] to run here",
                task.origin
            )
        })
    };
    Ok((parse(uid)?, parse(gid)?))
}

impl Site {
    /// The task's Envoy admin interface.
    pub fn admin(&self) -> EnvoyAdmin {
        EnvoyAdmin {
            addr: self.place.admin,
            netns: self.netns.clone(),
        }
    }
}

/// What starting any task needs.
#[derive(Debug)]
pub struct Launch {
    pub envoy: PathBuf,
    pub envoy_options: EnvoyOptions,
    /// Where the requester and distributor binaries are.
    pub bin_dir: PathBuf,
    /// Bootstrap files and logs.
    pub run_dir: PathBuf,
    /// The ADS server, as the Envoys reach it.
    pub xds: Xds,
    /// The region and account of the control plane's ARNs (what a task definition's
    /// `${AWS_REGION}` and `${AWS_ACCOUNT_ID}` stand for, unless the environment says).
    pub identity: controlplane::Identity,
    pub processes: ProcessTable,
    /// How long a stopped process may take before it is killed.
    pub grace: Duration,
}

/// Where the Envoys fetch their configuration.
#[derive(Debug, Clone)]
pub enum Xds {
    /// This run's own ADS server (plain gRPC, on loopback or the hub).
    Local(SocketAddr),
    /// A control plane over TLS, with the bootstrap the aws-appmesh-envoy agent writes
    /// ([`envoy::agent_bootstrap`]): one elsewhere (`up --control-plane`), or this run's
    /// own when its sidecars speak only TLS to a TCP endpoint (the sidecar image of `up
    /// --containers`, as on ECS).
    Tls {
        /// `HOST:PORT`, as `APPMESH_XDS_ENDPOINT`.
        endpoint: String,
        /// The CA bundle its certificate is checked against (a copy Envoy can read).
        ca_file: PathBuf,
    },
}

impl Launch {
    /// Writes node `node`'s Envoy bootstrap into the run directory; its path.
    pub fn write_bootstrap(&self, task: &Task, site: &Site) -> anyhow::Result<PathBuf> {
        let node = &task.virtual_node;
        let path = self
            .run_dir
            .join(format!("{}-envoy.json", task.file_stem()));
        let doc = match &self.xds {
            Xds::Local(xds) => {
                let mut doc = envoy::bootstrap(
                    &task.mesh_name,
                    node,
                    site.place.admin,
                    *xds,
                    self.envoy_options.xds_protocol,
                );
                // The SDS server beside the Envoy, when its container names one, as the
                // sidecar image's agent adds it.
                let sds = task
                    .definition
                    .container(&task.proxy.container_name)
                    .and_then(|(_, envoy)| envoy.env("APPMESH_SDS_SOCKET_PATH"));
                if let (Some((_, path)), Some(clusters)) =
                    (sds, doc["static_resources"]["clusters"].as_array_mut())
                {
                    clusters.push(crate::sidecar::additions::sds_cluster(path));
                }
                doc
            }
            Xds::Tls { endpoint, ca_file } => {
                let id = meshmodel::node_id(&task.mesh_name, node);
                envoy::agent_bootstrap(&envoy::AgentSettings {
                    cluster: id.clone(),
                    node_id: id,
                    xds_endpoint: endpoint.clone(),
                    admin_port: site.place.admin.port(),
                    ca_file: ca_file.clone(),
                    protocol: self.envoy_options.xds_protocol,
                })?
            }
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// Where the tasks run, as a backend planned it.
#[derive(Debug)]
pub struct Plan {
    /// Each task's site, by its node's key (`MESH/NODE`, [`Task::key`]).
    pub sites: BTreeMap<String, Site>,
    /// The tasks' hosts files, when they have their own (kept in step with the mesh).
    pub hosts: Option<netns::HostsFiles>,
    /// The namespace from which the host reaches the tasks (the hub), when they are not on
    /// the host's own network.
    pub entry_netns: Option<String>,
}

/// The meshes the tasks run in, by name.
pub type Meshes = BTreeMap<String, meshmodel::Mesh>;

/// A way of running tasks: plan where each runs, start them, stop them all.
// Used generically inside this crate only, so the futures' auto traits need no bounds.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// Decides (and sets up) where each task of `tasks`, in start order, runs.
    fn plan(&mut self, tasks: &[Task], meshes: &Meshes) -> anyhow::Result<Plan>;

    /// The network of namespaces the tasks run on, for backends that make one.
    fn network(&self) -> Option<&netns::Network> {
        None
    }

    /// A listener for the ADS server where this backend's Envoys can reach it: by
    /// default on the hub of [`Backend::network`].
    async fn xds_listener(&self, port: u16) -> anyhow::Result<TcpListener> {
        namespaces::hub_listener(self.network(), port).await
    }

    /// Whether this backend's Envoys reach ADS over TLS only (they run the sidecar image,
    /// which speaks TLS to any TCP endpoint, as the agent's does).
    fn speaks_tls(&self) -> bool {
        false
    }

    /// Starts `task` at `site` and waits until its containers are healthy.
    async fn start_task(&mut self, launch: &Launch, task: &Task, site: &Site)
    -> anyhow::Result<()>;

    /// Stops every task (apps first, then Envoys, in reverse start order) and removes
    /// what `plan` set up. Safe to call more than once.
    async fn stop(&mut self);
}

/// Tasks in start order: those whose virtual node others call come first (a virtual
/// gateway's, which only calls others, last).
pub fn start_order(tasks: &[Task], meshes: &Meshes) -> Vec<Task> {
    let calls_others = |t: &Task| {
        t.gateway().is_some()
            || meshes
                .get(&t.mesh_name)
                .and_then(|m| m.virtual_nodes.get(&t.virtual_node))
                .is_some_and(|n| !n.value.spec.backends.is_empty())
    };
    let mut ordered: Vec<Task> = tasks.iter().filter(|t| !calls_others(t)).cloned().collect();
    ordered.extend(tasks.iter().filter(|t| calls_others(t)).cloned());
    ordered
}

/// Whether `task` runs the requester (the task the host reaches).
pub fn runs_requester(task: &Task) -> bool {
    task.app_containers()
        .any(|c| images::ImageRef::parse(&c.image).binary == "requester")
}

/// Polls `check` every 50 ms until it holds (true) or `limit` has passed (false).
pub async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Where the requester and distributor binaries are: `configured`, else next to this
/// gophermesh.
pub fn bin_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    match configured {
        Some(d) => Ok(std::path::absolute(d)?),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("cannot tell where gophermesh is"),
    }
}

/// The port a task's app listens on: the first of AppPorts (validate checks that it is
/// the node's listener port and a container port).
pub fn app_port(task: &Task) -> u16 {
    task.proxy.app_ports.first().copied().unwrap_or(8080)
}

/// This process's open-file limit now (its soft limit; 1,024, Linux's usual default, when
/// it cannot be read).
pub fn open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// The listeners of a control plane that answer requests: the control API, the App Mesh
/// API and `up`'s published port.
const API_LISTENERS: usize = 3;

/// How this process's descriptor limit is shared by its listeners (read as each starts,
/// after `serve` raised the limit): each API listener's cap, and ADS's.
pub fn budget() -> common::server::Budget {
    common::server::Budget::of(open_files_limit(), API_LISTENERS)
}

/// Raises this process's open-file limit to its hard limit (each Envoy stream is a
/// connection: a control plane for a fleet needs thousands); the limit now in force.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}
