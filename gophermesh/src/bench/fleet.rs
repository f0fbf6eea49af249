//! The control plane at fleet scale: `gophermesh bench-fleet`.
//!
//! A generated mesh of `nodes` virtual nodes is served by a real `gophermesh serve`; `N`
//! simulated sidecars connect to it at once, each as a task of the `requester` node (its
//! own ECS task ARN in the node metadata, as the App Mesh sidecar sends it), so every one
//! routes to the whole mesh. Each simulated sidecar speaks ADS as Envoy does: it asks for
//! clusters and listeners, decodes every resource it gets, asks for the route
//! configurations its listeners name, and ACKs each response with its version and nonce.
//!
//! Measured: the connect storm (all `N` connect at once, until all have ACKed clusters,
//! listeners and routes), then `changes` route changes through the control API, each timed
//! until every sidecar has ACKed it; bytes the sidecars received per change; the control
//! plane's CPU seconds per change and its resident memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

use crate::progress::{UpAddresses, say};

use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};

mod changes;
mod delta;
mod digest;
mod failover;
mod light;
mod real;
mod sidecar;

use crate::runtime::envoy::XdsProtocol;

use changes::{Latest, timed_changes, until_all, until_configured};
use real::RealEnvoy;
use sidecar::{Acked, Received, lock};

/// What `bench-fleet` is asked to do.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Fleet sizes to measure, one run each.
    pub clients: Vec<u32>,
    /// Virtual nodes in the generated mesh.
    pub nodes: u32,
    /// Route changes timed per run.
    pub changes: u32,
    /// The protocols the simulated sidecars speak: each fleet size is run once per protocol.
    pub protocols: Vec<XdsProtocol>,
    /// Where `fleet.json` goes.
    pub out: PathBuf,
    /// The shipped task definitions (the generator copies the requester's).
    pub taskdefs_dir: PathBuf,
    /// Real Envoys connected beside the simulated sidecars, as tasks of the same node;
    /// what they hold is compared with what a simulated sidecar received.
    pub envoys: u32,
    /// The Envoy binary (`None`: found as `up` finds it).
    pub envoy_bin: Option<PathBuf>,
    /// With 2 or more, each fleet runs again over this many replicas, one of them lost
    /// (see [`failover`]).
    pub replicas: u32,
}

/// `gophermesh serve` on a generated mesh, on loopback with port 0.
struct Served {
    child: tokio::process::Child,
    xds: String,
    control: String,
    token: crate::api::token::ControlToken,
}

async fn start_serve(dir: &Path) -> anyhow::Result<Served> {
    start_serve_with(dir, &dir.join("state"), &[], &[]).await
}

/// [`start_serve`] with its own state directory `state`, more arguments and environment.
async fn start_serve_with(
    dir: &Path,
    state: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Served> {
    let me = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(me)
        .arg("serve")
        .arg("--mesh-dir")
        .arg(dir.join("mesh"))
        .args(["--xds-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--control-listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start gophermesh serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addresses = UpAddresses::default();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            addresses.read(&line);
            if line == "ready" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match (ready, addresses.xds, addresses.control) {
        (true, Some(xds), Some(control)) => Ok(Served {
            child,
            xds,
            control,
            token: crate::api::token::ControlToken::read(state)?,
        }),
        _ => bail!("gophermesh serve did not get ready"),
    }
}

/// What `served`'s control API says of its state (`GET /v1/status`).
async fn status(http: &reqwest::Client, served: &Served) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/v1/status", served.control);
    Ok(http.get(url).send().await?.json().await?)
}

/// The mesh version `served` is at.
async fn current_version(http: &reqwest::Client, served: &Served) -> anyhow::Result<u64> {
    Ok(status(http, served).await?["version"].as_u64().unwrap_or(1))
}

/// CPU seconds (user + system) and resident MiB of process `pid`, as the bench reads them.
fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    Ok((
        super::load::cpu_time(pid)?.as_secs_f64(),
        super::load::memory_mib(pid, "VmRSS")?,
    ))
}

/// One simulated sidecar of task `index`: as Envoy does, it opens its stream again (with a
/// growing pause) whenever the stream is refused or breaks; `reconnects` counts those. It
/// first connects to `xds`; each time again, to the next of `fallback` when there are any
/// (as a load balancer in front of replicas sends a new connection to another).
async fn sidecar(
    xds: &Addresses,
    index: usize,
    delta: bool,
    acks: mpsc::UnboundedSender<Acked>,
    bytes: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    received: Option<Received>,
) -> anyhow::Result<()> {
    let mut attempt: u64 = 0;
    loop {
        let (r, xds) = xds.for_attempt(index, attempt);
        let received = received.as_ref();
        let stream = match delta {
            true => delta::one_stream(xds, index, r, &acks, &bytes, received).await,
            false => sidecar::one_stream(xds, index, r, &acks, &bytes, received).await,
        };
        match stream {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 30 => {
                attempt += 1;
                reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("sidecar {index}: stream {attempt} ended: {e:#}");
                tokio::time::sleep(Duration::from_millis(50 * attempt.min(20))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where a sidecar's ADS is: the control planes (replicas) by number, the one it connects
/// to first, and where it goes when that one breaks.
#[derive(Clone, Debug)]
struct Addresses {
    all: Vec<String>,
    first: usize,
    fallback: Vec<usize>,
}

impl Addresses {
    /// One control plane, connected to again and again.
    fn one(xds: &str) -> Arc<Self> {
        Arc::new(Self {
            all: vec![xds.to_owned()],
            first: 0,
            fallback: Vec::new(),
        })
    }

    /// Which control plane sidecar `index` connects to on its `attempt`th try (0: the
    /// first), and its address: after the first, the fallbacks in turn, from a place that
    /// depends on the sidecar (so the sidecars of a lost replica spread over the others).
    fn for_attempt(&self, index: usize, attempt: u64) -> (usize, &str) {
        let r = match (attempt, self.fallback.len()) {
            (0, _) | (_, 0) => self.first,
            (a, n) => self.fallback[(index + a as usize) % n],
        };
        (r, &self.all[r])
    }
}

/// What every sidecar of a fleet shares: where ADS is, its protocol, and the counters.
#[derive(Clone)]
struct Fleet {
    xds: Arc<Addresses>,
    delta: bool,
    bytes: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
}

impl Fleet {
    /// Starts sidecars `indices`, their ACKs to `tx`; the first one's configuration goes
    /// to `received` when given.
    fn spawn(
        &self,
        indices: std::ops::Range<usize>,
        tx: &mpsc::UnboundedSender<Acked>,
        received: Option<&Received>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let first = indices.start;
        indices
            .map(|i| {
                let (fleet, tx) = (self.clone(), tx.clone());
                let received = received.filter(|_| i == first).cloned();
                tokio::spawn(async move {
                    let Fleet {
                        xds,
                        delta,
                        bytes,
                        reconnects,
                    } = fleet;
                    if let Err(e) = sidecar(&xds, i, delta, tx, bytes, reconnects, received).await {
                        eprintln!("gophermesh: sidecar {i}: {e:#}");
                    }
                })
            })
            .collect()
    }
}

/// A storm beside a connected fleet: the second half of the `n` sidecars drop their streams
/// and connect again all at once (as the sidecars of a lost replica land on this one),
/// and while they do, `changes` route changes are timed until the first half has ACKed
/// each. How long each change took (ms), and how long until the second half was
/// configured again (ms).
async fn storm_beside(
    http: &reqwest::Client,
    served: &Served,
    fleet: &Fleet,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    acks: &mut mpsc::UnboundedReceiver<Acked>,
    latest: &mut [Latest],
    changes: u32,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let (n, half) = (latest.len(), latest.len() / 2);
    for task in tasks.drain(half..) {
        task.abort();
    }
    let version = current_version(http, served).await?;
    let (tx, storm_acks) = mpsc::unbounded_channel();
    let started = Instant::now();
    tasks.extend(fleet.spawn(half..n, &tx, None));
    drop(tx);
    let all = &[CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE];
    let again = until_configured(storm_acks, half..n, all, vec![version], started);
    // Weights the changes before never set, so that the first one changes something too.
    let group = (acks, &mut latest[..half], 0);
    let times = timed_changes(http, &[Some(served)], 0, &mut [group], changes, [3, 4]).await?;
    let again = again
        .await?
        .context("the storm beside the connected sidecars")?;
    Ok((times, again))
}

/// Runs one fleet of `n` sidecars speaking `protocol`; its figures.
async fn one_fleet(
    config: &FleetConfig,
    n: u32,
    protocol: XdsProtocol,
    work: &Path,
) -> anyhow::Result<serde_json::Value> {
    let delta = protocol == XdsProtocol::Delta;
    let dir = work.join(format!("fleet-{n}-{}", protocol.api_name()));
    let _ = std::fs::remove_dir_all(&dir);
    super::scale::generate(&dir, config.nodes, &config.taskdefs_dir)?;
    let served = start_serve(&dir).await?;
    let pid = served.child.id().context("serve has no pid")?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let version = current_version(&http, &served).await?;
    let (before_cpu, idle_rss) = usage(pid)?;
    let envoy_bin = match config.envoys {
        0 => None,
        _ => Some(crate::runtime::envoy::find(config.envoy_bin.as_deref())?),
    };
    let mut real = Vec::new();
    for i in 0..config.envoys {
        let envoy = envoy_bin.as_deref().context("found above")?;
        real.push(RealEnvoy::start(envoy, &served.xds, &dir.join("envoys"), i).await?);
    }
    let received = Received::default();
    let (tx, mut acks) = mpsc::unbounded_channel();
    let fleet = Fleet {
        xds: Addresses::one(&served.xds),
        delta,
        bytes: Arc::new(AtomicU64::new(0)),
        reconnects: Arc::new(AtomicU64::new(0)),
    };
    let (bytes, reconnects) = (fleet.bytes.clone(), fleet.reconnects.clone());
    let mut latest = vec![BTreeMap::new(); n as usize];
    let started = Instant::now();
    let mut tasks = fleet.spawn(0..n as usize, &tx, Some(&received));
    drop(tx);
    until_all(
        &mut acks,
        &mut latest,
        &[CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE],
        version,
        Duration::from_secs(60),
    )
    .await
    .context("the connect storm")?;
    let storm = started.elapsed().as_secs_f64();
    let storm_bytes = bytes.load(Ordering::Relaxed);
    let (after_storm_cpu, _) = usage(pid)?;
    say(format!(
        "  {n} sidecars ({}): all configured {:.0} ms after connecting at once ({:.1} MiB sent, {} streams opened again)",
        protocol.api_name(),
        storm * 1e3,
        storm_bytes as f64 / (1 << 20) as f64,
        reconnects.load(Ordering::Relaxed)
    ));

    let (cpu0, _) = usage(pid)?;
    let bytes0 = bytes.load(Ordering::Relaxed);
    let mut times = timed_changes(
        &http,
        &[Some(&served)],
        0,
        &mut [(&mut acks, &mut latest[..], 0)],
        config.changes,
        [2, 1],
    )
    .await?;
    let (cpu1, rss) = usage(pid)?;
    let per_change_bytes =
        (bytes.load(Ordering::Relaxed) - bytes0) as f64 / f64::from(config.changes.max(1));
    real_envoys_agree(&real, &received).await?;
    let (mut beside, storm_again) = storm_beside(
        &http,
        &served,
        &fleet,
        &mut tasks,
        &mut acks,
        &mut latest,
        config.changes.min(10),
    )
    .await?;
    beside.sort_by(f64::total_cmp);
    say(format!(
        "  {n} sidecars ({}): half of them connected again at once, configured in {storm_again:.0} ms; meanwhile a change ACKed by the other half in p50 {:.1} ms, p99 {:.1} ms",
        protocol.api_name(),
        super::nearest_rank(&beside, 0.5),
        super::nearest_rank(&beside, 0.99),
    ));
    for t in tasks {
        t.abort();
    }
    times.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let figures = json!({
        "clients": n,
        "virtual_nodes": config.nodes,
        "protocol": protocol.api_name(),
        "connect_storm_ms": round(storm * 1e3),
        "connect_storm_cpu_s": round(after_storm_cpu - before_cpu),
        "connect_storm_mib": round(storm_bytes as f64 / (1 << 20) as f64),
        "reconnects": reconnects.load(Ordering::Relaxed),
        "change_acked_by_all_ms": {
            "p50": round(super::nearest_rank(&times, 0.5)),
            "p99": round(super::nearest_rank(&times, 0.99)),
            "max": round(times.last().copied().unwrap_or(0.0)),
            "changes": config.changes,
        },
        "cpu_s_per_change": round((cpu1 - cpu0) / f64::from(config.changes.max(1))),
        "kib_sent_per_change": round(per_change_bytes / 1024.0),
        "bytes_sent_per_change_per_sidecar": round(per_change_bytes / f64::from(n.max(1))),
        "rss_mib": {"idle": round(idle_rss), "with_fleet": round(rss)},
        "storm_beside": {
            "reconnected": n - n / 2,
            "configured_ms": round(storm_again),
            "change_acked_ms": {
                "p50": round(super::nearest_rank(&beside, 0.5)),
                "p99": round(super::nearest_rank(&beside, 0.99)),
                "changes": beside.len(),
            },
        },
        "real_envoys_identical": real.len(),
    });
    say(format!(
        "  {n} sidecars ({}): a route change ACKed by all in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.3} CPU s and {:.0} KiB per change ({:.0} bytes per sidecar); serve {:.0} MiB",
        protocol.api_name(),
        super::nearest_rank(&times, 0.5),
        super::nearest_rank(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
        (cpu1 - cpu0) / f64::from(config.changes.max(1)),
        per_change_bytes / 1024.0,
        per_change_bytes / f64::from(n.max(1)),
        rss
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

/// The real Envoys hold what the simulated sidecars were sent.
async fn real_envoys_agree(real: &[RealEnvoy], received: &Received) -> anyhow::Result<()> {
    // The real Envoys hold what the simulated sidecars were sent.
    let last = lock(received).get(ROUTE_TYPE).map_or(0, |(v, _)| *v);
    let simulated = lock(received).clone();
    for (i, envoy) in (0u32..).zip(real) {
        envoy.agrees(i, last, &simulated).await.with_context(|| {
            format!(
                "real Envoy {i} ({:?} xDS) and simulated sidecar 0 differ",
                RealEnvoy::protocol(i)
            )
        })?;
    }
    if !real.is_empty() {
        let lines: Vec<String> = lock(received)
            .values()
            .flat_map(|(_, l)| l.iter().cloned())
            .collect();
        let targets = lines.iter().filter(|l| l.contains(" -> ")).count();
        say(format!(
            "  {} real Envoys of the same node (state of the world and delta xDS) hold what the simulated sidecars received: {} clusters, {} listeners, {targets} route targets with their weights",
            real.len(),
            lines.iter().filter(|l| l.starts_with("cluster ")).count(),
            lines.iter().filter(|l| l.starts_with("listener ")).count(),
        ));
    }
    Ok(())
}

/// Every fleet size of `config` in turn, in `work`; their figures.
pub async fn runs(config: &FleetConfig, work: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let files = crate::runtime::raise_open_files();
    if let Some(&most) = config.clients.iter().max() {
        if u64::from(most) + 64 > files {
            bail!(
                "{most} sidecars need {most} connections, but this process may open only {files} files: raise the limit (ulimit -n)"
            );
        }
    }
    let mut runs = Vec::new();
    for &n in &config.clients {
        for &protocol in &config.protocols {
            say(format!(
                "fleet of {n} sidecars ({} xDS) against gophermesh serve with {} virtual nodes",
                protocol.api_name(),
                config.nodes
            ));
            let mut figures = one_fleet(config, n, protocol, work).await?;
            if config.replicas >= 2 {
                say(format!(
                    "the same fleet over {} replicas of gophermesh serve, sharing a DynamoDB table",
                    config.replicas
                ));
                let failover = failover::one_failover(config, n, protocol, work).await?;
                figures["failover"] = failover;
            }
            runs.push(figures);
        }
    }
    Ok(runs)
}

/// `gophermesh bench-fleet`: every fleet size in turn; writes `OUT/fleet.json`.
pub async fn run(config: &FleetConfig) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let work = std::path::absolute(config.out.join("work"))?;
    let runs = runs(config, &work).await?;
    let rebuild = super::rebuild::measure_said(config.nodes, 10, config.changes)?;
    let path = config.out.join("fleet.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({
            "machine": super::facts::machine(),
            "runs": runs,
            "rebuild": rebuild,
        }))?,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    say(format!("wrote {}", path.display()));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::config::route::v3::route::Action;
    use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;

    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    use super::digest::{digest_of, digest_of_dump};
    use super::real::compare;
    use super::sidecar::short;
    use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
    use envoy_types::pb::envoy::config::route::v3::{
        Route, RouteAction, VirtualHost, WeightedCluster, weighted_cluster::ClusterWeight,
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};
    use prost::Message as _;

    fn response(type_url: &str, version: &str, resources: Vec<Vec<u8>>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.to_owned(),
            type_url: type_url.to_owned(),
            resources: resources
                .into_iter()
                .map(|value| Any {
                    type_url: type_url.to_owned(),
                    value,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A config dump as Envoy's admin writes it, for one cluster, one listener and one
    /// route configuration whose route splits `v1`/`v2` by `weights`.
    fn dump(version: &str, weights: (u64, u64)) -> serde_json::Value {
        json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "static_clusters": [{"cluster": {"name": "xds_cluster"}}],
             "dynamic_active_clusters": [{"version_info": "3", "cluster": {"name": "c"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
             "dynamic_listeners": [{"name": "l", "active_state": {"version_info": "3", "listener": {"name": "l"}}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
             "dynamic_route_configs": [{"version_info": version, "route_config": {
                "name": "rds", "virtual_hosts": [{"name": "d", "routes": [{"route": {
                    "weighted_clusters": {"clusters": [
                        {"name": "v1", "weight": weights.0}, {"name": "v2", "weight": weights.1}
                    ]}}}]}]}}]}
        ]})
    }

    fn received(version: u64, weights: (u32, u32)) -> BTreeMap<&'static str, (u64, Vec<String>)> {
        let cluster = Cluster {
            name: "c".into(),
            ..Default::default()
        };
        let listener = Listener {
            name: "l".into(),
            ..Default::default()
        };
        let weighted = |name: &str, weight: u32| ClusterWeight {
            name: name.into(),
            weight: Some(UInt32Value { value: weight }),
            ..Default::default()
        };
        let routes = RouteConfiguration {
            name: "rds".into(),
            virtual_hosts: vec![VirtualHost {
                name: "d".into(),
                routes: vec![Route {
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(
                            WeightedCluster {
                                clusters: vec![
                                    weighted("v1", weights.0),
                                    weighted("v2", weights.1),
                                ],
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut out = BTreeMap::new();
        for (type_url, v, bytes) in [
            (CLUSTER_TYPE, 3, cluster.encode_to_vec()),
            (LISTENER_TYPE, 3, listener.encode_to_vec()),
            (ROUTE_TYPE, version, routes.encode_to_vec()),
        ] {
            let r = response(type_url, &v.to_string(), vec![bytes]);
            out.insert(
                short(type_url).expect("known"),
                (v, digest_of(&r).expect("decodes")),
            );
        }
        out
    }

    #[test]
    fn a_real_envoys_dump_and_a_simulated_sidecar_agree_only_when_they_hold_the_same() {
        let simulated = received(7, (90, 10));
        compare(&digest_of_dump(&dump("7", (90, 10))), &simulated, true).expect("the same");
        let e = compare(&digest_of_dump(&dump("7", (50, 50))), &simulated, true)
            .expect_err("other weights");
        assert!(e.to_string().contains("rds d -> v1 x50"), "{e}");
        let e = compare(&digest_of_dump(&dump("6", (90, 10))), &simulated, true)
            .expect_err("an older version");
        assert!(e.to_string().contains("version 6"), "{e}");
        // A delta Envoy's versions are its resources' own: compared by content alone.
        compare(&digest_of_dump(&dump("ab12", (90, 10))), &simulated, false)
            .expect("the same content");
        assert!(
            compare(&digest_of_dump(&dump("ab12", (50, 50))), &simulated, false).is_err(),
            "other weights differ whatever the versions"
        );
        let mut no_routes = digest_of_dump(&dump("7", (90, 10)));
        no_routes.remove(ROUTE_TYPE);
        assert!(compare(&no_routes, &simulated, true).is_err());
    }
}
