//! `gophermesh serve`: the control plane alone, for Envoys that run elsewhere.
//!
//! No tasks run here, so no node has a placement: each Envoy that connects gets its node's
//! whole configuration from the mesh, as App Mesh gave it (its proxy ports on every
//! address, its app on loopback, its targets by their service discovery). The APIs and the
//! console are those of `up`, with the same guards; the state lives in memory, in
//! `--data-dir`, or in a DynamoDB table shared with other replicas (`--state`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use controlplane::TargetTraffic;
use controlplane::xds::ads::EnvoyStatuses;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::api::tasks;
use crate::config::{ServeConfig, StateStore};
use crate::plane;
use crate::progress::{ADS_ON, APPMESH_API, CONTROL_API, say};

/// What the control API shows of the tasks when none run here.
#[derive(Debug)]
struct NoTasks;

impl tasks::Tasks for NoTasks {
    fn status(&self) -> BoxFuture<'_, tasks::TaskStatus> {
        Box::pin(async {
            tasks::TaskStatus {
                processes: json!([]),
                placements: json!({}),
                observed: BTreeMap::new(),
            }
        })
    }

    fn processes(&self) -> Value {
        json!([])
    }

    fn traffic(&self) -> BoxFuture<'_, BTreeMap<String, TargetTraffic>> {
        Box::pin(async { BTreeMap::new() })
    }
}

/// Refuses to expose what should not be exposed, before anything listens.
fn check_exposure(args: &ServeConfig) -> anyhow::Result<()> {
    if !args.api_listen.ip().is_loopback() && args.api_credentials.is_none() {
        bail!(
            "--api-listen {} is beyond loopback, where an open App Mesh API would let anyone change the mesh: set --api-access-key-id and --api-secret-access-key (SigV4), or listen on 127.0.0.1",
            args.api_listen
        );
    }
    let tls = args.tls.is_some();
    for (flag, addr) in [
        ("--xds-listen", args.xds_listen),
        ("--api-listen", args.api_listen),
        ("--control-listen", args.control_listen),
    ] {
        if !addr.ip().is_loopback() && !tls {
            tracing::warn!(
                "{flag} {addr} is beyond loopback without TLS: what crosses the network (configuration, signatures, the control token) can be read on the way; give --tls-cert and --tls-key"
            );
        }
    }
    Ok(())
}

/// A listener on `addr` with a deep accept queue: a fleet's sidecars reconnect at once when
/// the control plane restarts.
fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("{flag} {addr}: cannot make a socket"))?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .and_then(|()| socket.listen(4096))
        .with_context(|| format!("{flag} {addr}: cannot listen there"))
}

/// Runs `serve` as `args` says until Ctrl-C or SIGTERM.
pub async fn run(args: ServeConfig) -> anyhow::Result<ExitCode> {
    check_exposure(&args)?;
    let files = crate::runtime::raise_open_files();
    tracing::info!(files, "open-file limit (one per Envoy stream)");
    let refuse = |problems: &meshmodel::Problems, what: &str| {
        for p in &problems.0 {
            eprintln!("{p}");
        }
        anyhow::anyhow!("{} problem(s) in {what}; not serving", problems.0.len())
    };
    let opened = plane::open_store(
        &args.mesh_dir,
        match &args.state {
            StateStore::Table(table, every) => plane::StateAt::Table(table, *every),
            StateStore::Dir(dir) => plane::StateAt::Dir(dir),
            StateStore::Memory => plane::StateAt::Memory,
        },
        args.empty,
        args.identity.clone(),
        refuse,
    )?;
    let store = opened.store;
    say(format!(
        "{} ({})",
        plane::describe_meshes(&store.current()),
        opened.provenance
    ));
    let tls = match &args.tls {
        Some((cert, key)) => Some(plane::Tls::from_pem_files(cert, key)?),
        None => None,
    };
    let xds = bind(args.xds_listen, "--xds-listen")?;
    let control_listener = bind(args.control_listen, "--control-listen")?;
    let appmesh_listener = bind(args.api_listen, "--api-listen")?;
    let xds_addr = xds.local_addr()?;
    let envoys = EnvoyStatuses::default();
    let (ads, ads_tls) = plane::spawn_ads(&store, envoys.clone(), xds, tls.as_ref())?;
    let mut background = vec![ads];
    if let Some(follow) = plane::follow_cloud_map(args.cloud_map, &store).await? {
        background.push(follow);
    }
    let apis = plane::start_apis(
        &store,
        envoys,
        Arc::new(NoTasks),
        &plane::ApiConfig {
            credentials: args.api_credentials.clone(),
            allow_hosts: &args.allow_hosts,
            state_dir: &args.state_dir,
            tls: tls.as_ref(),
        },
        (control_listener, appmesh_listener),
        &mut background,
    )?;
    say(format!(
        "control plane: {ADS_ON}{xds_addr} ({}), {CONTROL_API}{}, {APPMESH_API}{}{}",
        if ads_tls { "TLS" } else { "plaintext" },
        apis.control,
        apis.appmesh,
        if args.api_credentials.is_some() {
            " (SigV4 required)"
        } else {
            ""
        }
    ));
    say(format!(
        "control token in {} (the CLI reads it; changes through the control API need it)",
        apis.token_file.display()
    ));
    println!();
    println!(
        "Point each sidecar at it: APPMESH_XDS_ENDPOINT={xds_addr} (node ids mesh/M/virtualNode/N or their ARNs)."
    );
    println!("Ctrl-C or SIGTERM stops it.");
    println!("ready");
    common::shutdown::signal().await;
    for task in background {
        task.abort();
    }
    say("stopped");
    Ok(ExitCode::SUCCESS)
}
