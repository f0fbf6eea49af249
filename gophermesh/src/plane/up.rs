//! `gophermesh up`: the walkthrough on one machine.
//!
//! Loads mesh/ and taskdefs/ (or the durable store), plans where each task runs with the
//! backend the flags ask for (loopback addresses, network namespaces or pods), starts the
//! control plane (ADS for the Envoys, the control API and the App Mesh API), publishes the
//! requester on the host's loopback, then starts each task: its Envoy first, until it is
//! LIVE, then its apps, as the task definition's `dependsOn ... HEALTHY` asks. Tasks that
//! others call start first. Ctrl-C or SIGTERM stops everything in reverse order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::tasks;
use crate::config::{NetworkMode, UpConfig};
use crate::progress::{ADS_ON, APPMESH_API, CONTROL_API, REQUESTER_AT, command_here, say};
use crate::runtime::envoy::{self, EnvoyAdmin};
use crate::runtime::images::Podman;
use crate::runtime::loopback::Loopback;
use crate::runtime::namespaces::{Namespaces, hosts_for};
use crate::runtime::pods::PodBackend;
use crate::runtime::supervise::ProcessTable;
use crate::runtime::{self, Backend, Launch, Plan, Site, bin_dir, netns};
use anyhow::{Context, bail};
use controlplane::xds::ads::{EnvoyStatuses, node_key, split_key};
use controlplane::{Snapshot, Store};
use futures::future::BoxFuture;
use meshmodel::taskdef::Task;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::plane;

mod banner;

/// Runs `up` as `config` says until Ctrl-C or SIGTERM, then stops everything it started.
pub async fn run(config: UpConfig) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Its listeners share the limit (`runtime::budget`); its Envoys inherit it.
    let files = crate::runtime::raise_open_files();
    tracing::debug!(files, "open-file limit");
    let (store, tasks, provenance) = load_state(&config)?;
    let meshes = meshes_of(&store.current());
    let envoy_bin = std::path::absolute(envoy::find(config.envoy_bin.as_deref())?)?;
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "`setpriv` is missing (it starts every child so that it stops with up): apt-get install util-linux"
        );
    }
    let bin_dir = bin_dir(config.bin_dir.as_deref())?;
    let run_dir = std::path::absolute(config.state_dir.join("run"))?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    say(format!(
        "{} ({provenance}); {} tasks (Envoy: {})",
        plane::describe_meshes(&store.current()),
        tasks.len(),
        envoy_bin.display()
    ));
    let ordered = runtime::start_order(&tasks, &meshes);
    let launch = |xds: runtime::Xds| Launch {
        envoy: envoy_bin.clone(),
        envoy_options: config.envoy.clone(),
        bin_dir: bin_dir.clone(),
        run_dir: run_dir.clone(),
        xds,
        identity: config.identity.clone(),
        processes: ProcessTable::default(),
        grace: Duration::from_secs(5),
    };
    let up = Up {
        config: &config,
        store,
        ordered,
        started,
    };
    match config.network {
        NetworkMode::Loopback => up.run(Loopback::default(), launch).await,
        NetworkMode::Netns if config.control_plane.is_some() => {
            let (endpoint, _) = config.control_plane.as_ref().expect("matched");
            up.run(Namespaces::with_uplink(control_plane_ip(endpoint)?), launch)
                .await
        }
        NetworkMode::Netns => up.run(Namespaces::default(), launch).await,
        NetworkMode::Containers => {
            let podman = Podman::new(&config.state_dir)?;
            let work = std::path::absolute(config.state_dir.join("images"))?;
            let backend = PodBackend::new(podman, &bin_dir, &envoy_bin, &work)?;
            up.run(backend, launch).await
        }
    }
}

/// One run of `up`, whatever the backend.
struct Up<'a> {
    config: &'a UpConfig,
    store: Store,
    ordered: Vec<Task>,
    started: Instant,
}

impl Up<'_> {
    async fn run<B: Backend>(
        self,
        mut backend: B,
        launch: impl FnOnce(runtime::Xds) -> Launch,
    ) -> anyhow::Result<ExitCode> {
        let meshes = meshes_of(&self.store.current());
        let plan = match backend.plan(&self.ordered, &meshes) {
            Ok(plan) => plan,
            Err(e) => {
                backend.stop().await;
                return Err(e);
            }
        };
        let mut background = Vec::new();
        let (stopper, stop) = plane::Stop::new();
        let result = self
            .serve(&mut backend, &plan, &mut background, launch, &stop)
            .await;
        if let Err(e) = &result {
            eprintln!("gophermesh: {e:#}");
            say("stopping what was started");
        } else {
            common::shutdown::signal().await;
            say("stopping: apps first, then their Envoys, then the control plane");
        }
        backend.stop().await;
        stopper.stop();
        background.iter().for_each(tokio::task::JoinHandle::abort);
        Ok(match result {
            Ok(()) => {
                say("stopped");
                ExitCode::SUCCESS
            }
            Err(_) => ExitCode::FAILURE,
        })
    }

    /// Starts the control plane and the tasks, and prints the banner.
    async fn serve<B: Backend>(
        &self,
        backend: &mut B,
        plan: &Plan,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
        launch: impl FnOnce(runtime::Xds) -> Launch,
        stop: &plane::Stop,
    ) -> anyhow::Result<()> {
        let config = self.config;
        if let Some((endpoint, ca)) = &config.control_plane {
            return self
                .serve_remote(backend, plan, background, launch, endpoint, ca)
                .await;
        }
        let store = &self.store;
        for (mesh, placements) in placements_by_mesh(plan) {
            store.set_placements(&mesh, placements);
        }
        let envoys = EnvoyStatuses::default();
        let xds_listener = backend.xds_listener(config.xds_port).await?;
        let xds_addr = xds_listener.local_addr()?;
        let (xds, tls) = if backend.speaks_tls() {
            let (tls, ca) = plane::Tls::for_run(xds_addr.ip())?;
            // The sidecars check ADS against this run's CA, mounted where the agent's
            // image keeps its CA bundle.
            let ca_file = std::path::absolute(self.config.state_dir.join("run/ads-ca.pem"))?;
            std::fs::write(&ca_file, ca)
                .with_context(|| format!("cannot write {}", ca_file.display()))?;
            let endpoint = xds_addr.to_string();
            (runtime::Xds::Tls { endpoint, ca_file }, Some(tls))
        } else {
            (runtime::Xds::Local(xds_addr), None)
        };
        let secrets = plane::secrets(&config.certificates)?;
        background.push(plane::spawn_secrets(
            store,
            &secrets,
            config.certificates.refresh,
            stop.clone(),
        ));
        let (ads, secure) = plane::spawn_ads(
            store,
            (envoys.clone(), &secrets),
            xds_listener,
            tls.as_ref(),
            stop.clone(),
        )?;
        anyhow::ensure!(
            secure == tls.is_some(),
            "ADS at {xds_addr} cannot speak TLS on loopback, and the sidecars need it"
        );
        background.push(ads);
        if let Some(follow) = plane::follow_cloud_map(config.cloud_map, store).await? {
            background.push(follow);
        }
        let launch = launch(xds);

        let control_listener =
            loopback_listener(config.control_port, "the control API", "--control-port").await?;
        let appmesh_listener =
            loopback_listener(config.api_port, "the App Mesh API", "--api-port").await?;
        let tasks: Arc<dyn tasks::Tasks> = Arc::new(UpTasks {
            processes: launch.processes.clone(),
            sites: plan.sites.clone(),
            mesh_of: self
                .ordered
                .iter()
                .map(|t| (t.file_stem(), t.mesh_name.clone()))
                .collect(),
        });
        let apis = plane::start_apis(
            store,
            (envoys, secrets),
            tasks,
            &plane::ApiConfig {
                credentials: config.api_credentials.clone(),
                allow_hosts: &config.allow_hosts,
                state_dir: &config.state_dir,
                tls: None,
                statsd: None,
            },
            (control_listener, appmesh_listener),
            background,
            stop,
        )?;
        let (control_url, appmesh_url) = (&apis.control, &apis.appmesh);
        say(format!(
            "control plane: {ADS_ON}{xds_addr}, {CONTROL_API}{control_url}, {APPMESH_API}{appmesh_url}{}",
            if config.api_credentials.is_some() {
                " (SigV4 required)"
            } else {
                ""
            }
        ));
        say(format!(
            "control token in {} (the CLI reads it; changes through the control API need it)",
            apis.token_file.display()
        ));
        if let Some(files) = plan.hosts.clone() {
            background.push(follow_hosts(store, files, self.ordered.clone()));
        }
        let requester = self.publish_requester(plan, background).await?;
        let gateway = self.publish_gateway(plan, background).await?;

        for task in &self.ordered {
            backend
                .start_task(&launch, task, &plan.sites[&task.key()])
                .await?;
        }
        self.banner(
            &requester,
            gateway.as_ref(),
            &apis.control,
            &apis.appmesh,
            plan,
        );
        Ok(())
    }

    /// Starts the tasks against the control plane at `endpoint` (no local one), and prints
    /// the banner.
    async fn serve_remote<B: Backend>(
        &self,
        backend: &mut B,
        plan: &Plan,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
        launch: impl FnOnce(runtime::Xds) -> Launch,
        endpoint: &str,
        ca: &std::path::Path,
    ) -> anyhow::Result<()> {
        // Envoy runs as its own user: it reads a copy of the CA that it may read.
        let run_dir = self.config.state_dir.join("run");
        let ca_file = std::path::absolute(run_dir.join("control-plane-ca.pem"))?;
        let pem = meshmodel::input::read_text(ca, meshmodel::input::MAX_FILE)
            .with_context(|| format!("--control-plane-ca {}: cannot read", ca.display()))?;
        anyhow::ensure!(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "--control-plane-ca {}: no PEM certificate in it",
            ca.display()
        );
        std::fs::write(&ca_file, pem)
            .with_context(|| format!("cannot write {}", ca_file.display()))?;
        let launch = launch(runtime::Xds::Tls {
            endpoint: endpoint.to_owned(),
            ca_file,
        });
        say(format!(
            "control plane: elsewhere, at {endpoint} (TLS, trusting {}); none runs here",
            ca.display()
        ));
        if let Some(files) = plan.hosts.clone() {
            background.push(follow_hosts(&self.store, files, self.ordered.clone()));
        }
        let requester = self.publish_requester(plan, background).await?;
        for task in &self.ordered {
            backend
                .start_task(&launch, task, &plan.sites[&task.key()])
                .await?;
        }
        println!();
        println!(
            "gophermesh is up in {:.1} s, its Envoys configured by {endpoint}. {REQUESTER_AT}{requester}/",
            self.started.elapsed().as_secs_f64()
        );
        println!();
        println!("Try:");
        println!("  curl '{requester}/compare?n=1000'");
        println!(
            "  {} status --control-url URL   (the control plane's control API)",
            command_here("gophermesh")
        );
        println!();
        println!(
            "Logs are in {}. Ctrl-C stops everything.",
            self.config.state_dir.join("run").display()
        );
        println!("ready");
        Ok(())
    }

    /// Publishes the requester task on 127.0.0.1:`--requester-port`; its URL.
    async fn publish_requester(
        &self,
        plan: &Plan,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<String> {
        let port = self.config.requester_port;
        let listener = loopback_listener(port, "the requester", "--requester-port").await?;
        let site = self
            .ordered
            .iter()
            .find(|t| runtime::runs_requester(t))
            .and_then(|t| plan.sites.get(&t.key()).map(|s| (t, s)));
        match site {
            Some((task, site)) => Ok(publish(plan, task, site, listener, background)?),
            None => Ok(format!("http://{}", listener.local_addr()?)),
        }
    }

    /// Publishes the first virtual gateway's task, on its first listener, on
    /// 127.0.0.1:`--gateway-port`; its URL and the gateway's name, when a gateway's task
    /// runs.
    async fn publish_gateway(
        &self,
        plan: &Plan,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<Option<(String, String)>> {
        let Some((task, site)) = self
            .ordered
            .iter()
            .find(|t| t.gateway().is_some())
            .and_then(|t| plan.sites.get(&t.key()).map(|s| (t, s)))
        else {
            return Ok(None);
        };
        let listener = loopback_listener(
            self.config.gateway_port,
            "the ingress gateway",
            "--gateway-port",
        )
        .await?;
        let url = publish(plan, task, site, listener, background)?;
        Ok(Some((url, task.gateway().unwrap_or_default().to_owned())))
    }
}

/// The IPv4 address `--control-plane HOST:PORT` names (resolved once, at start).
fn control_plane_ip(endpoint: &str) -> anyhow::Result<Ipv4Addr> {
    use std::net::ToSocketAddrs as _;
    endpoint
        .to_socket_addrs()
        .with_context(|| format!("--control-plane {endpoint}: cannot resolve it"))?
        .find_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .with_context(|| {
            format!(
                "--control-plane {endpoint}: no IPv4 address other than loopback (the tasks have their own loopback; give an address of this machine's network)"
            )
        })
}

/// Forwards what `listener` accepts to `task` at `site` (from the namespace the host reaches
/// the tasks from); the URL it answers on.
fn publish(
    plan: &Plan,
    task: &Task,
    site: &runtime::Site,
    listener: TcpListener,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<String> {
    let url = format!("http://{}", listener.local_addr()?);
    say(format!(
        "publishing {} ({}) on {url}",
        task.virtual_node, site.place.reach
    ));
    background.push(tokio::spawn(runtime::publish::publish(
        listener,
        site.place.reach,
        plan.entry_netns.clone(),
    )));
    Ok(url)
}

/// A listener on 127.0.0.1:`port` for `what`, or an error naming `flag`.
async fn loopback_listener(port: u16, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| {
            format!("cannot listen for {what} on 127.0.0.1:{port} (is another gophermesh up running? use {flag}, or 0 for any free port)")
        })
}

/// Keeps the tasks' hosts files in step with the mesh as the API or `apply` change it.
fn follow_hosts(
    store: &Store,
    files: netns::HostsFiles,
    ordered: Vec<Task>,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = store.subscribe();
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let meshes = meshes_of(&snapshots.borrow_and_update());
            match hosts_for(&ordered, &meshes).and_then(|h| files.update_hosts(&h)) {
                Ok(true) => tracing::info!("the tasks' hosts files now name what the mesh has"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot update the tasks' hosts files: {e:#}"),
            }
        }
    })
}

/// Every mesh of `snapshot`, by name, as the runtime reads them.
fn meshes_of(snapshot: &Snapshot) -> runtime::Meshes {
    snapshot
        .meshes
        .iter()
        .map(|(name, m)| (name.clone(), m.mesh.clone()))
        .collect()
}

/// The placements of `plan`'s sites, mesh by mesh (a site's key is `MESH/NODE`).
fn placements_by_mesh(
    plan: &Plan,
) -> BTreeMap<String, BTreeMap<String, controlplane::state::placement::Placement>> {
    let mut by_mesh: BTreeMap<String, BTreeMap<_, _>> = BTreeMap::new();
    for (key, site) in &plan.sites {
        if let Some((mesh, node)) = split_key(key) {
            by_mesh
                .entry(mesh.to_owned())
                .or_default()
                .insert(node.to_owned(), site.place.clone());
        }
    }
    by_mesh
}

/// What the control API shows of `up`'s tasks.
#[derive(Debug)]
struct UpTasks {
    processes: ProcessTable,
    /// Each task's site, by `MESH/NODE`.
    sites: BTreeMap<String, Site>,
    /// The mesh of each task, by the node's name as processes are named.
    mesh_of: BTreeMap<String, String>,
}

impl tasks::Tasks for UpTasks {
    fn status(&self) -> BoxFuture<'_, tasks::TaskStatus> {
        Box::pin(async move {
            let placements: BTreeMap<&String, Value> = self
                .sites
                .iter()
                .map(|(key, s)| {
                    let p = &s.place;
                    (
                        key,
                        json!({
                            "ingress": p.ingress.to_string(),
                            "egress": p.egress.to_string(),
                            "app": p.app.to_string(),
                            "reach": p.reach.to_string(),
                            "admin": p.admin.to_string(),
                            "netns": s.netns,
                        }),
                    )
                })
                .collect();
            let mut observed = BTreeMap::new();
            for (mesh, admins) in self.admins_by_mesh() {
                for (node, n) in envoy::observed_split(&admins, &mesh).await {
                    observed.insert(node_key(&mesh, &node), n);
                }
            }
            tasks::TaskStatus {
                processes: self.processes(),
                placements: json!(placements),
                observed,
            }
        })
    }

    fn processes(&self) -> Value {
        let mut all = json!(self.processes.snapshot());
        for p in all.as_array_mut().into_iter().flatten() {
            let node = p["name"]
                .as_str()
                .and_then(|n| n.rsplit_once('/'))
                .map(|(node, _)| node.replace('/', "-"));
            if let Some(mesh) = node.and_then(|n| self.mesh_of.get(&n)) {
                p["mesh"] = json!(mesh);
            }
        }
        all
    }

    fn metrics(&self) -> BoxFuture<'_, BTreeMap<crate::metrics::Edge, crate::metrics::Figures>> {
        Box::pin(self.envoy_metrics())
    }

    fn traffic(&self) -> BoxFuture<'_, BTreeMap<String, controlplane::TargetTraffic>> {
        Box::pin(async move {
            let mut traffic = BTreeMap::new();
            for (mesh, admins) in self.admins_by_mesh() {
                for (node, t) in envoy::traffic(&admins, &mesh).await {
                    traffic.insert(node_key(&mesh, &node), t);
                }
            }
            traffic
        })
    }
}

impl UpTasks {
    /// Every Envoy's figures per target, read from its admin (each asked at once; one
    /// that does not answer within a second counts nothing).
    async fn envoy_metrics(&self) -> BTreeMap<crate::metrics::Edge, crate::metrics::Figures> {
        let reads = self.sites.iter().filter_map(|(key, site)| {
            let (mesh, node) = split_key(key)?;
            let (kind, name) = match node.strip_prefix(meshmodel::GATEWAY_PREFIX) {
                Some(gateway) => ("VirtualGateway", gateway.to_owned()),
                None => ("VirtualNode", node.to_owned()),
            };
            let (mesh, admin) = (mesh.to_owned(), site.admin());
            Some(async move {
                match admin
                    .get(crate::metrics::scrape::PATH, Duration::from_secs(1))
                    .await
                {
                    Ok((200, text)) => crate::metrics::scrape::read(&text, &mesh, kind, &name),
                    _ => BTreeMap::new(),
                }
            })
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The Envoys' admin interfaces of each mesh's tasks.
    fn admins_by_mesh(&self) -> BTreeMap<String, Vec<EnvoyAdmin>> {
        let mut by_mesh: BTreeMap<String, Vec<EnvoyAdmin>> = BTreeMap::new();
        for (key, site) in &self.sites {
            if let Some((mesh, _)) = split_key(key) {
                by_mesh
                    .entry(mesh.to_owned())
                    .or_default()
                    .push(site.admin());
            }
        }
        by_mesh
    }
}

/// Prints every problem, one per line; the error that ends `up`.
fn refuse_problems(problems: &meshmodel::Problems, what: &str) -> anyhow::Error {
    for p in &problems.0 {
        eprintln!("{p}");
    }
    anyhow::anyhow!(
        "{} problem(s) in {what}; nothing was started",
        problems.0.len()
    )
}

/// The store (from --data-dir, mesh/, or empty) and the checked task definitions, with a
/// few words on where the mesh came from.
fn load_state(config: &UpConfig) -> anyhow::Result<(Store, Vec<Task>, String)> {
    let source = &config.source;
    let taskdefs = source.taskdefs_dir.display().to_string();
    let defs = meshmodel::taskdef::load_dir(&source.taskdefs_dir)
        .map_err(|p| refuse_problems(&p, &taskdefs))?;
    let plane::Opened {
        store,
        provenance,
        seeded_from_files: strict,
    } = plane::open_store(
        source.seed(),
        config
            .data_dir
            .as_deref()
            .map_or(plane::StateAt::Memory, plane::StateAt::Dir),
        config.empty,
        config.identity.clone(),
        refuse_problems,
    )?;
    let meshes = meshes_of(&store.current());
    let tasks = meshmodel::taskdef::check_in_meshes(&meshes, &defs, strict)
        .map_err(|p| refuse_problems(&p, &taskdefs))?;
    // Processes, log files and namespaces are named by node: two meshes' tasks run side
    // by side when their nodes' names differ.
    let mut seen: BTreeMap<String, &Task> = BTreeMap::new();
    for t in &tasks {
        if let Some(other) = seen.insert(t.file_stem(), t) {
            bail!(
                "{}: virtual node `{}` of mesh `{}` has the name of one of mesh `{}` ({}); up names processes, logs and namespaces by node, so the tasks of two meshes need nodes of different names",
                t.origin,
                t.virtual_node,
                t.mesh_name,
                other.mesh_name,
                other.origin
            );
        }
    }
    Ok((store, tasks, provenance))
}
