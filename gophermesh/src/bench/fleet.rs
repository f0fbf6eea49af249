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
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use prost::Message as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

use crate::progress::{UpAddresses, say};

use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// What `bench-fleet` is asked to do.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Fleet sizes to measure, one run each.
    pub clients: Vec<u32>,
    /// Virtual nodes in the generated mesh.
    pub nodes: u32,
    /// Route changes timed per run.
    pub changes: u32,
    /// Where `fleet.json` goes.
    pub out: PathBuf,
    /// The shipped task definitions (the generator copies the requester's).
    pub taskdefs_dir: PathBuf,
    /// Real Envoys connected beside the simulated sidecars, as tasks of the same node;
    /// what they hold is compared with what a simulated sidecar received.
    pub envoys: u32,
    /// The Envoy binary (`None`: found as `up` finds it).
    pub envoy_bin: Option<PathBuf>,
}

/// What a simulated sidecar last received, by type: the version, and what the resources
/// say in the terms a real Envoy's config dump can be read in ([`Digest`]).
type Received = Arc<std::sync::Mutex<BTreeMap<&'static str, (u64, Vec<String>)>>>;

/// One ACK a sidecar sent.
#[derive(Debug)]
struct Acked {
    client: usize,
    type_url: &'static str,
    version: u64,
}

fn short(type_url: &str) -> Option<&'static str> {
    match type_url {
        CLUSTER_TYPE => Some(CLUSTER_TYPE),
        LISTENER_TYPE => Some(LISTENER_TYPE),
        ROUTE_TYPE => Some(ROUTE_TYPE),
        _ => None,
    }
}

/// The route configuration names the listeners of `response` ask for (as Envoy reads them
/// from each HTTP connection manager's `rds`).
fn rds_names(response: &DiscoveryResponse) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for any in &response.resources {
        let listener =
            Listener::decode(any.value.as_slice()).context("a listener that does not decode")?;
        for chain in &listener.filter_chains {
            for filter in &chain.filters {
                let Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        typed,
                    ),
                ) = &filter.config_type
                else {
                    continue;
                };
                if typed.type_url.ends_with("HttpConnectionManager") {
                    let hcm = HttpConnectionManager::decode(typed.value.as_slice())
                        .context("an HTTP connection manager that does not decode")?;
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        names.push(rds.route_config_name);
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A digest line of a route target: route configuration, virtual host, cluster and, for
/// weighted clusters, the weight. Both digests write them here, so that they compare.
fn target_line(config: &str, host: &str, cluster: &str, weight: Option<u64>) -> String {
    match weight {
        Some(w) => format!("{config} {host} -> {cluster} x{w}"),
        None => format!("{config} {host} -> {cluster}"),
    }
}

/// What a response's resources say, as lines that a real Envoy's config dump gives too:
/// each cluster's and listener's name, and each route configuration's name with every
/// route's target clusters and weights, by virtual host. Sorted.
fn digest_of(response: &DiscoveryResponse) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for any in &response.resources {
        match response.type_url.as_str() {
            CLUSTER_TYPE => lines.push(format!(
                "cluster {}",
                Cluster::decode(any.value.as_slice())?.name
            )),
            LISTENER_TYPE => lines.push(format!(
                "listener {}",
                Listener::decode(any.value.as_slice())?.name
            )),
            _ => {
                let config = RouteConfiguration::decode(any.value.as_slice())?;
                lines.push(format!("routes {}", config.name));
                for host in &config.virtual_hosts {
                    for route in &host.routes {
                        let Some(Action::Route(action)) = &route.action else {
                            continue;
                        };
                        match &action.cluster_specifier {
                            Some(ClusterSpecifier::Cluster(c)) => {
                                lines.push(target_line(&config.name, &host.name, c, None));
                            }
                            Some(ClusterSpecifier::WeightedClusters(w)) => {
                                for c in &w.clusters {
                                    let weight = c.weight.map_or(0, |w| u64::from(w.value));
                                    lines.push(target_line(
                                        &config.name,
                                        &host.name,
                                        &c.name,
                                        Some(weight),
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    lines.sort();
    Ok(lines)
}

/// The same lines from a real Envoy's `/config_dump`, with each type's version.
fn digest_of_dump(dump: &serde_json::Value) -> BTreeMap<&'static str, (u64, Vec<String>)> {
    let version = |v: &serde_json::Value| v.as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = BTreeMap::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or_default();
        let (type_url, items) = if kind.ends_with("ClustersConfigDump") {
            (CLUSTER_TYPE, &config["dynamic_active_clusters"])
        } else if kind.ends_with("ListenersConfigDump") {
            (LISTENER_TYPE, &config["dynamic_listeners"])
        } else if kind.ends_with("RoutesConfigDump") {
            (ROUTE_TYPE, &config["dynamic_route_configs"])
        } else {
            continue;
        };
        let mut lines = Vec::new();
        let mut newest = 0;
        for item in items.as_array().into_iter().flatten() {
            match type_url {
                CLUSTER_TYPE => {
                    newest = newest.max(version(&item["version_info"]));
                    lines.push(format!("cluster {}", text(&item["cluster"]["name"])));
                }
                LISTENER_TYPE => {
                    let active = &item["active_state"];
                    newest = newest.max(version(&active["version_info"]));
                    lines.push(format!("listener {}", text(&active["listener"]["name"])));
                }
                _ => {
                    newest = newest.max(version(&item["version_info"]));
                    let config = &item["route_config"];
                    let name = text(&config["name"]);
                    lines.push(format!("routes {name}"));
                    for host in config["virtual_hosts"].as_array().into_iter().flatten() {
                        let host_name = text(&host["name"]);
                        for route in host["routes"].as_array().into_iter().flatten() {
                            let action = &route["route"];
                            if let Some(c) = action["cluster"].as_str() {
                                lines.push(target_line(&name, &host_name, c, None));
                            }
                            for c in action["weighted_clusters"]["clusters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                            {
                                lines.push(target_line(
                                    &name,
                                    &host_name,
                                    &text(&c["name"]),
                                    Some(c["weight"].as_u64().unwrap_or(0)),
                                ));
                            }
                        }
                    }
                }
            }
        }
        lines.sort();
        out.insert(type_url, (newest, lines));
    }
    out
}

/// A real Envoy of the `requester` node, as task `index` of the fleet.
struct RealEnvoy {
    _child: tokio::process::Child,
    admin: crate::runtime::envoy::EnvoyAdmin,
}

impl RealEnvoy {
    async fn start(envoy: &Path, xds: &str, dir: &Path, index: u32) -> anyhow::Result<Self> {
        let xds: std::net::SocketAddr = xds
            .parse()
            .with_context(|| format!("serve's xDS address `{xds}`"))?;
        let mut boot = crate::runtime::envoy::bootstrap(
            "gophermesh",
            "requester",
            ([127, 0, 0, 1], 0).into(),
            xds,
        );
        boot["node"]["metadata"] = json!({"aws.appmesh.platformInfo": {
            "ecsTaskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/fleet/envoy-{index}")
        }});
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("envoy-{index}.json"));
        std::fs::write(&path, serde_json::to_vec(&boot)?)?;
        let address_file = dir.join(format!("envoy-{index}.admin"));
        let _ = std::fs::remove_file(&address_file);
        let log = std::fs::File::create(dir.join(format!("envoy-{index}.log")))?;
        let options = crate::runtime::envoy::EnvoyOptions {
            concurrency: 1,
            log_level: "warn".to_owned(),
        };
        let child = tokio::process::Command::new(envoy)
            .args(options.args(&path.display().to_string()))
            .arg("--admin-address-path")
            .arg(&address_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", envoy.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Some(addr) = std::fs::read_to_string(&address_file)
                .ok()
                .and_then(|a| a.trim().parse().ok())
            {
                break addr;
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy {index} wrote no admin address within 20 s; see {}",
                    dir.join(format!("envoy-{index}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            _child: child,
            admin: crate::runtime::envoy::EnvoyAdmin { addr, netns: None },
        })
    }

    /// What it holds, once its route configurations are at `version` (within 30 s).
    async fn holding(
        &self,
        version: u64,
    ) -> anyhow::Result<BTreeMap<&'static str, (u64, Vec<String>)>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .admin
                .get("/config_dump", Duration::from_secs(10))
                .await?;
            if status == 200 {
                let held = digest_of_dump(&serde_json::from_str(&body)?);
                if held.get(ROUTE_TYPE).is_some_and(|(v, _)| *v >= version) {
                    return Ok(held);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the real Envoy at {} did not hold routes of version {version} within 30 s",
                    self.admin
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Compares what a real Envoy holds with what the simulated sidecar received.
fn compare(
    real: &BTreeMap<&'static str, (u64, Vec<String>)>,
    simulated: &BTreeMap<&'static str, (u64, Vec<String>)>,
) -> anyhow::Result<()> {
    for type_url in [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
        let (Some((rv, real)), Some((sv, simulated))) =
            (real.get(type_url), simulated.get(type_url))
        else {
            bail!("{type_url}: the real Envoy or the simulated sidecar holds none");
        };
        // Content always; the version only for the route configurations that changed
        // last: a type that did not change may be sent again, unchanged, under a newer
        // version (when an Envoy asks again), and Envoy keeps the version it was sent.
        if (type_url == ROUTE_TYPE && rv != sv) || real != simulated {
            let only_real: Vec<_> = real
                .iter()
                .filter(|l| !simulated.contains(l))
                .take(3)
                .collect();
            let only_sim: Vec<_> = simulated
                .iter()
                .filter(|l| !real.contains(l))
                .take(3)
                .collect();
            bail!(
                "{type_url}: the real Envoy holds version {rv} ({} lines), the simulated sidecar {sv} ({} lines); only the real one: {only_real:?}; only the simulated one: {only_sim:?}",
                real.len(),
                simulated.len()
            );
        }
    }
    Ok(())
}

/// One simulated sidecar of task `index`: as Envoy does, it opens its stream again (with a
/// growing pause) whenever the stream is refused or breaks; `reconnects` counts those.
async fn sidecar(
    xds: String,
    index: usize,
    acks: mpsc::UnboundedSender<Acked>,
    bytes: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    received: Option<Received>,
) -> anyhow::Result<()> {
    let mut attempt: u64 = 0;
    loop {
        match one_stream(&xds, index, &acks, &bytes, received.as_ref()).await {
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

/// One ADS stream of sidecar `index`, until it ends.
async fn one_stream(
    xds: &str,
    index: usize,
    acks: &mpsc::UnboundedSender<Acked>,
    bytes: &AtomicU64,
    received: Option<&Received>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
        .connect()
        .await
        .context("cannot connect to ADS")?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    let text = |v: String| PbValue {
        kind: Some(Kind::StringValue(v)),
    };
    let info = Struct {
        fields: [(
            "ecsTaskArn".to_owned(),
            text(format!(
                "arn:aws:ecs:us-east-1:000000000000:task/fleet/{index}"
            )),
        )]
        .into(),
    };
    let node = Node {
        id: "mesh/gophermesh/virtualNode/requester".to_owned(),
        cluster: "requester".to_owned(),
        metadata: Some(Struct {
            fields: [(
                "aws.appmesh.platformInfo".to_owned(),
                PbValue {
                    kind: Some(Kind::StructValue(info)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let ask = |type_url: &str, names: Vec<String>| DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names,
        ..Default::default()
    };
    tx.send(DiscoveryRequest {
        node: Some(node),
        ..ask(CLUSTER_TYPE, Vec::new())
    })
    .await?;
    tx.send(ask(LISTENER_TYPE, Vec::new())).await?;
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("the ADS stream was refused")?
        .into_inner();
    let mut routes_asked: Option<Vec<String>> = None;
    while let Some(response) = inbound.message().await.context("the ADS stream broke")? {
        bytes.fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
        let Some(type_url) = short(&response.type_url) else {
            bail!(
                "a response of a type never asked for: {}",
                response.type_url
            );
        };
        let mut names = Vec::new();
        if type_url == LISTENER_TYPE {
            let wanted = rds_names(&response)?;
            if routes_asked.as_ref() != Some(&wanted) {
                tx.send(ask(ROUTE_TYPE, wanted.clone())).await?;
                routes_asked = Some(wanted);
            }
        }
        if type_url == ROUTE_TYPE {
            names = routes_asked.clone().unwrap_or_default();
        }
        tx.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..ask(type_url, names)
        })
        .await?;
        let version = response.version_info.parse().unwrap_or(0);
        if let Some(received) = received {
            let digest = digest_of(&response)?;
            lock(received).insert(type_url, (version, digest));
        }
        let _ = acks.send(Acked {
            client: index,
            type_url,
            version,
        });
    }
    Ok(())
}

/// `gophermesh serve` on a generated mesh, on loopback with port 0.
struct Served {
    child: tokio::process::Child,
    xds: String,
    control: String,
    token: crate::api::token::ControlToken,
}

async fn start_serve(dir: &Path) -> anyhow::Result<Served> {
    let me = std::env::current_exe()?;
    let state = dir.join("state");
    let mut child = tokio::process::Command::new(me)
        .arg("serve")
        .arg("--mesh-dir")
        .arg(dir.join("mesh"))
        .args(["--xds-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--control-listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
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
            token: crate::api::token::ControlToken::read(&state)?,
        }),
        _ => bail!("gophermesh serve did not get ready"),
    }
}

/// CPU seconds (user + system) and resident MiB of process `pid`, as the bench reads them.
fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    Ok((
        super::load::cpu_time(pid)?.as_secs_f64(),
        super::load::memory_mib(pid, "VmRSS")?,
    ))
}

/// Waits until every one of `n` sidecars has ACKed `type_urls` at `version` or later;
/// `latest` keeps each sidecar's latest ACKed version per type.
async fn until_all(
    acks: &mut mpsc::UnboundedReceiver<Acked>,
    latest: &mut [BTreeMap<&'static str, u64>],
    type_urls: &[&'static str],
    version: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let behind = |latest: &[BTreeMap<&'static str, u64>]| {
        latest
            .iter()
            .filter(|l| {
                !type_urls
                    .iter()
                    .all(|t| l.get(t).is_some_and(|v| *v >= version))
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + limit;
    while behind(latest) > 0 {
        let Ok(ack) = tokio::time::timeout_at(deadline, acks.recv()).await else {
            bail!(
                "{} of {} sidecars had not ACKed version {version} within {limit:?}",
                behind(latest),
                latest.len()
            );
        };
        let ack = ack.context("every sidecar stream ended")?;
        let entry = latest[ack.client].entry(ack.type_url).or_default();
        *entry = (*entry).max(ack.version);
    }
    Ok(())
}

/// Runs one fleet of `n` sidecars; its figures.
async fn one_fleet(config: &FleetConfig, n: u32, work: &Path) -> anyhow::Result<serde_json::Value> {
    let dir = work.join(format!("fleet-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    super::scale::generate(&dir, config.nodes, &config.taskdefs_dir)?;
    let served = start_serve(&dir).await?;
    let pid = served.child.id().context("serve has no pid")?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let version: u64 = {
        let status: serde_json::Value = http
            .get(format!("{}/v1/status", served.control))
            .send()
            .await?
            .json()
            .await?;
        status["version"].as_u64().unwrap_or(1)
    };
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
    let bytes = Arc::new(AtomicU64::new(0));
    let mut latest = vec![BTreeMap::new(); n as usize];
    let started = Instant::now();
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n as usize {
        let (xds, tx, bytes) = (served.xds.clone(), tx.clone(), bytes.clone());
        let reconnects = reconnects.clone();
        let received = (i == 0).then(|| received.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sidecar(xds, i, tx, bytes, reconnects, received).await {
                eprintln!("gophermesh: sidecar {i}: {e:#}");
            }
        }));
    }
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
        "  {n} sidecars: all configured {:.0} ms after connecting at once ({:.1} MiB sent, {} streams opened again)",
        storm * 1e3,
        storm_bytes as f64 / (1 << 20) as f64,
        reconnects.load(Ordering::Relaxed)
    ));

    let mut times = Vec::new();
    let (cpu0, _) = usage(pid)?;
    let bytes0 = bytes.load(Ordering::Relaxed);
    for i in 0..config.changes {
        let weight = if i % 2 == 0 { 2 } else { 1 };
        let t0 = Instant::now();
        let answer: serde_json::Value = http
            .put(format!(
                "{}/v1/routes/svc-0/weights?router=svc-0",
                served.control
            ))
            .bearer_auth(served.token.text())
            .json(&json!({"weights": {"svc-0": weight}}))
            .send()
            .await?
            .json()
            .await?;
        let v = answer["version"]
            .as_u64()
            .with_context(|| format!("the route change was refused: {answer}"))?;
        until_all(
            &mut acks,
            &mut latest,
            &[ROUTE_TYPE],
            v,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("change {i}"))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (cpu1, rss) = usage(pid)?;
    // The real Envoys hold what the simulated sidecars were sent.
    let last = lock(&received).get(ROUTE_TYPE).map_or(0, |(v, _)| *v);
    for (i, envoy) in real.iter().enumerate() {
        let held = envoy.holding(last).await?;
        compare(&held, &lock(&received))
            .with_context(|| format!("real Envoy {i} and simulated sidecar 0 differ"))?;
    }
    if !real.is_empty() {
        let lines: Vec<String> = lock(&received)
            .values()
            .flat_map(|(_, l)| l.iter().cloned())
            .collect();
        let targets = lines.iter().filter(|l| l.contains(" -> ")).count();
        say(format!(
            "  {} real Envoys of the same node hold what the simulated sidecars received: {} clusters, {} listeners, {targets} route targets with their weights",
            real.len(),
            lines.iter().filter(|l| l.starts_with("cluster ")).count(),
            lines.iter().filter(|l| l.starts_with("listener ")).count(),
        ));
    }
    let per_change_bytes =
        (bytes.load(Ordering::Relaxed) - bytes0) as f64 / f64::from(config.changes.max(1));
    for t in tasks {
        t.abort();
    }
    times.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let figures = json!({
        "clients": n,
        "virtual_nodes": config.nodes,
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
        "rss_mib": {"idle": round(idle_rss), "with_fleet": round(rss)},
        "real_envoys_identical": real.len(),
    });
    say(format!(
        "  {n} sidecars: a route change ACKed by all in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.3} CPU s and {:.0} KiB per change; serve {:.0} MiB",
        super::nearest_rank(&times, 0.5),
        super::nearest_rank(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
        (cpu1 - cpu0) / f64::from(config.changes.max(1)),
        per_change_bytes / 1024.0,
        rss
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
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
        say(format!(
            "fleet of {n} sidecars against gophermesh serve with {} virtual nodes",
            config.nodes
        ));
        runs.push(one_fleet(config, n, work).await?);
    }
    Ok(runs)
}

/// `gophermesh bench-fleet`: every fleet size in turn; writes `OUT/fleet.json`.
pub async fn run(config: &FleetConfig) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let work = std::path::absolute(config.out.join("work"))?;
    let runs = runs(config, &work).await?;
    let path = config.out.join("fleet.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({
            "machine": super::facts::machine(),
            "runs": runs,
        }))?,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    say(format!("wrote {}", path.display()));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{
        Route, RouteAction, VirtualHost, WeightedCluster, weighted_cluster::ClusterWeight,
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};

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
        compare(&digest_of_dump(&dump("7", (90, 10))), &simulated).expect("the same");
        let e =
            compare(&digest_of_dump(&dump("7", (50, 50))), &simulated).expect_err("other weights");
        assert!(e.to_string().contains("rds d -> v1 x50"), "{e}");
        let e = compare(&digest_of_dump(&dump("6", (90, 10))), &simulated)
            .expect_err("an older version");
        assert!(e.to_string().contains("version 6"), "{e}");
        let mut no_routes = digest_of_dump(&dump("7", (90, 10)));
        no_routes.remove(ROUTE_TYPE);
        assert!(compare(&no_routes, &simulated).is_err());
    }
}
