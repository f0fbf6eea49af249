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

use crate::metrics::{Edge, Figures};
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

/// What the control API shows of the tasks when none run here: the traffic the remote
/// sidecars report by DogStatsD, when a receiver runs.
#[derive(Debug)]
struct NoTasks(Option<crate::metrics::statsd::Statsd>);

impl tasks::Tasks for NoTasks {
    fn status(&self) -> BoxFuture<'_, tasks::TaskStatus> {
        let observed = self
            .0
            .as_ref()
            .map(crate::metrics::statsd::Statsd::completed)
            .unwrap_or_default();
        Box::pin(async {
            tasks::TaskStatus {
                processes: json!([]),
                placements: json!({}),
                observed,
            }
        })
    }

    fn processes(&self) -> Value {
        json!([])
    }

    fn traffic(&self) -> BoxFuture<'_, BTreeMap<String, TargetTraffic>> {
        let traffic = self.0.as_ref().map(|s| s.traffic()).unwrap_or_default();
        Box::pin(async move { traffic })
    }

    fn metrics(&self) -> BoxFuture<'_, BTreeMap<Edge, Figures>> {
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

/// A running `serve`: where each listener ended up (a port 0 in the configuration is the
/// port the system chose), its store, and its servers until [`Serving::run_until`].
#[derive(Debug)]
pub struct Serving {
    /// Where ADS listens, and whether it speaks TLS.
    pub xds: SocketAddr,
    pub ads_tls: bool,
    /// The APIs' URLs and the control token's file.
    pub apis: plane::Apis,
    pub store: controlplane::Store,
    stopper: plane::Stopper,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the store and binds and starts every listener of `serve` as `args` says; returns
/// once all of them answer.
pub async fn start(args: ServeConfig) -> anyhow::Result<Serving> {
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
        crate::config::Seed::of(&args.mesh_dir, &args.imports, &args.read),
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
    let (stopper, stop) = plane::Stop::new();
    let envoys = EnvoyStatuses::default();
    let secrets = plane::secrets(&args.certificates)?;
    let shared_ca =
        args.certificates.mesh_ca.is_some() || args.certificates.mesh_ca_seal_key.is_some();
    if matches!(args.state, StateStore::Table(..)) && !shared_ca {
        say(
            "the mesh's own mutual TLS (a mesh tagged gophermesh:mtls) issues from a CA made in this replica's memory: give every replica the same --mesh-ca-seal-key (or --mesh-ca-cert and --mesh-ca-key), or their Envoys will not trust each other",
        );
    }
    let (ads, ads_tls) = plane::spawn_ads(
        &store,
        (envoys.clone(), &secrets),
        xds,
        tls.as_ref(),
        stop.clone(),
    )?;
    let mut background = vec![
        ads,
        plane::spawn_secrets(&store, &secrets, args.certificates.refresh, stop.clone()),
    ];
    if let Some(follow) = plane::follow_cloud_map(args.cloud_map, &store).await? {
        background.push(follow);
    }
    let statsd = match args.statsd_listen {
        Some(addr) => {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("--statsd-listen {addr}: cannot receive there"))?;
            // Every sidecar flushes at once each interval: room for the bursts (the kernel
            // caps it at net.core.rmem_max).
            if let Err(e) = nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::RcvBuf,
                &crate::metrics::statsd::RECEIVE_BUFFER,
            ) {
                tracing::warn!(error = %e, "cannot enlarge the DogStatsD receive buffer");
            }
            say(format!(
                "DogStatsD from the sidecars on udp://{} (counted in /metrics)",
                socket.local_addr()?
            ));
            let statsd = crate::metrics::statsd::Statsd::default();
            let stopped = stop.clone();
            background.push(tokio::spawn(
                statsd
                    .clone()
                    .receive(socket, async move { stopped.wait().await }),
            ));
            Some(statsd)
        }
        None => None,
    };
    let apis = plane::start_apis(
        &store,
        (envoys, secrets),
        Arc::new(NoTasks(statsd.clone())),
        &plane::ApiConfig {
            credentials: args.api_credentials.clone(),
            allow_hosts: &args.allow_hosts,
            state_dir: &args.state_dir,
            tls: tls.as_ref(),
            statsd,
        },
        (control_listener, appmesh_listener),
        &mut background,
        &stop,
    )?;
    Ok(Serving {
        xds: xds_addr,
        ads_tls,
        apis,
        store,
        stopper,
        background,
    })
}

/// How long the servers get to stop once told to, before they are ended.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Serving {
    /// Serves until `shutdown` resolves, then stops every server (ADS, both APIs) and
    /// whatever else runs in the background; returns once they are gone.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.stopper.stop();
        // One grace for all of them; what outlives it is aborted and awaited, so that its
        // listeners are closed (dropped) by the time this returns.
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for mut task in self.background {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Runs `serve` as `args` says until Ctrl-C or SIGTERM.
pub async fn run(args: ServeConfig) -> anyhow::Result<ExitCode> {
    let api_credentials = args.api_credentials.is_some();
    let serving = start(args).await?;
    let xds_addr = serving.xds;
    say(format!(
        "control plane: {ADS_ON}{xds_addr} ({}), {CONTROL_API}{}, {APPMESH_API}{}{}",
        if serving.ads_tls { "TLS" } else { "plaintext" },
        serving.apis.control,
        serving.apis.appmesh,
        if api_credentials {
            " (SigV4 required)"
        } else {
            ""
        }
    ));
    say(format!(
        "control token in {} (the CLI reads it; changes through the control API need it)",
        serving.apis.token_file.display()
    ));
    println!();
    println!(
        "Point each sidecar at it: APPMESH_XDS_ENDPOINT={xds_addr} (node ids mesh/M/virtualNode/N or their ARNs)."
    );
    println!("Ctrl-C or SIGTERM stops it.");
    println!("ready");
    serving.run_until(common::shutdown::signal()).await;
    say("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// `GET path` on `addr`, HTTP/1.1; the whole answer.
    async fn get(addr: &str, path: &str) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    /// `serve` started in-process on ports the system picks: it says where each listener
    /// is, answers there, and once its shutdown resolves every listener is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_runs_in_process_until_its_shutdown() {
        let state_dir = std::env::temp_dir().join(format!(
            "gophermesh-serve-in-process-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let serving = start(ServeConfig::on_loopback(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh"),
            false,
            state_dir.clone(),
        ))
        .await
        .expect("serve starts");
        assert_ne!(serving.xds.port(), 0, "the port the system chose");
        let control = serving
            .apis
            .control
            .trim_start_matches("http://")
            .to_owned();
        let appmesh = serving
            .apis
            .appmesh
            .trim_start_matches("http://")
            .to_owned();
        let status = get(&control, "/v1/status").await.expect("status answers");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(
            status.contains(r#""meshes":[{"name":"gophermesh""#),
            "{status}"
        );
        let meshes = get(&appmesh, "/v20190125/meshes")
            .await
            .expect("the API answers");
        assert!(meshes.contains(r#""meshName":"gophermesh""#), "{meshes}");
        tokio::net::TcpStream::connect(serving.xds)
            .await
            .expect("ADS listens");

        let (tell, told) = tokio::sync::oneshot::channel::<()>();
        let xds = serving.xds;
        let running = tokio::spawn(serving.run_until(async {
            let _ = told.await;
        }));
        tell.send(()).expect("running");
        tokio::time::timeout(STOP_GRACE * 2, running)
            .await
            .expect("stopped within the grace")
            .expect("joined");
        for addr in [control.as_str(), appmesh.as_str(), &xds.to_string()] {
            let refused = tokio::net::TcpStream::connect(addr).await;
            assert!(refused.is_err(), "{addr} still listens after the shutdown");
        }
        let _ = std::fs::remove_dir_all(state_dir);
    }
}
