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
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
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
}

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

/// One simulated sidecar of task `index`: as Envoy does, it opens its stream again (with a
/// growing pause) whenever the stream is refused or breaks; `reconnects` counts those.
async fn sidecar(
    xds: String,
    index: usize,
    acks: mpsc::UnboundedSender<Acked>,
    bytes: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut attempt: u64 = 0;
    loop {
        match one_stream(&xds, index, &acks, &bytes).await {
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
    let (tx, mut acks) = mpsc::unbounded_channel();
    let bytes = Arc::new(AtomicU64::new(0));
    let mut latest = vec![BTreeMap::new(); n as usize];
    let started = Instant::now();
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n as usize {
        let (xds, tx, bytes) = (served.xds.clone(), tx.clone(), bytes.clone());
        let reconnects = reconnects.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sidecar(xds, i, tx, bytes, reconnects).await {
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

/// `gophermesh bench-fleet`: every fleet size in turn; writes `OUT/fleet.json`.
pub async fn run(config: &FleetConfig) -> anyhow::Result<ExitCode> {
    let files = crate::runtime::raise_open_files();
    if let Some(&most) = config.clients.iter().max() {
        if u64::from(most) + 64 > files {
            bail!(
                "{most} sidecars need {most} connections, but this process may open only {files} files: raise the limit (ulimit -n)"
            );
        }
    }
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let work = std::path::absolute(config.out.join("work"))?;
    let mut runs = Vec::new();
    for &n in &config.clients {
        say(format!(
            "fleet of {n} sidecars against gophermesh serve with {} virtual nodes",
            config.nodes
        ));
        runs.push(one_fleet(config, n, &work).await?);
    }
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
