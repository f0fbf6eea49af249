//! Several replicas of `serve` over one DynamoDB table, and the loss of one
//! (`bench-fleet --replicas N`).
//!
//! moto's DynamoDB (`moto_server`, on loopback) holds the table; `N` replicas of
//! `gophermesh serve` keep the generated mesh in it, the first one seeding it. The fleet is
//! split as a load balancer in front of them would: the first `n / N` sidecars connect to
//! replica 0, the others are spread over the rest. Measured: route changes made through
//! replica 1 until every sidecar of every replica has ACKed each (the other replicas learn
//! of them by following the table); then replica 0 is killed (SIGKILL), its sidecars
//! connect again to the others, and a change is made at once through replica 1: how long
//! until all of replica 0's sidecars hold it, and, meanwhile, how long each further change
//! takes until the sidecars already on the survivors have ACKed it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use super::{Addresses, Fleet, FleetConfig, Served};
use crate::progress::say;
use crate::runtime::envoy::XdsProtocol;

/// The table the replicas share.
const TABLE: &str = "gophermesh-bench";

/// `moto_server` on a free loopback port; stopped when dropped.
struct Moto {
    _child: tokio::process::Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "--replicas keeps the mesh in DynamoDB, and the bench serves one with moto on loopback, but moto_server is not on PATH: install it with `pip install 'moto[server]'` (scripts/setup.sh --tests puts it in .venv/bin)"
                ),
                _ => anyhow::anyhow!("cannot start moto_server: {e}"),
            })?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once("Running on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("moto_server did not say where it listens")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            _child: child,
            endpoint,
        })
    }
}

/// Which sidecars go to which replica: replica 0 gets the first `n / replicas`, the others
/// an equal share each of the rest (the last one what remains).
fn shares(n: usize, replicas: usize) -> Vec<std::ops::Range<usize>> {
    let first = n / replicas;
    let each = (n - first) / (replicas - 1);
    (0..replicas)
        .map(|r| match r {
            0 => 0..first,
            r if r == replicas - 1 => first + (r - 1) * each..n,
            r => first + (r - 1) * each..first + r * each,
        })
        .collect()
}

/// Figures of one fleet of `n` sidecars speaking `protocol`, over `config.replicas`
/// replicas, one of them lost.
pub(super) async fn one_failover(
    config: &FleetConfig,
    n: u32,
    protocol: XdsProtocol,
    work: &Path,
) -> anyhow::Result<serde_json::Value> {
    let replicas = config.replicas as usize;
    if replicas < 2 || (n as usize) < replicas {
        bail!("a failover needs 2 replicas or more, and a sidecar for each ({n} for {replicas})");
    }
    let dir = work.join(format!("failover-{n}-{}", protocol.api_name()));
    let _ = std::fs::remove_dir_all(&dir);
    super::super::scale::generate(&dir, config.nodes, &config.taskdefs_dir)?;
    let moto = Moto::start().await?;
    controlplane::state::persist::dynamo::create_table_at(&moto.endpoint, TABLE)
        .await
        .map_err(|e| anyhow::anyhow!("moto's DynamoDB: {e}"))?;
    let state = format!("dynamodb://{TABLE}");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ];
    let mut served: Vec<Served> = Vec::new();
    for r in 0..replicas {
        let state_dir = dir.join(format!("state-{r}"));
        let args = ["--state", state.as_str()];
        served.push(super::start_serve_with(&dir, &state_dir, &args, &env).await?);
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut versions = Vec::new();
    for replica in &served {
        versions.push(super::current_version(&http, replica).await?);
    }

    // The sidecars of replica 0 (those that move) on one channel, the others on another.
    let bytes = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let all: Vec<String> = served.iter().map(|s| s.xds.clone()).collect();
    let fleet_of = |first: usize, fallback: Vec<usize>| Fleet {
        xds: Arc::new(Addresses {
            all: all.clone(),
            first,
            fallback,
        }),
        delta: protocol == XdsProtocol::Delta,
        bytes: bytes.clone(),
        reconnects: reconnects.clone(),
    };
    let shares = shares(n as usize, replicas);
    let (moving_tx, mut moving_acks) = mpsc::unbounded_channel();
    let (staying_tx, mut staying_acks) = mpsc::unbounded_channel();
    let mut tasks = fleet_of(0, (1..replicas).collect()).spawn(shares[0].clone(), &moving_tx, None);
    for (r, share) in shares.iter().enumerate().skip(1) {
        tasks.extend(fleet_of(r, Vec::new()).spawn(share.clone(), &staying_tx, None));
    }
    drop((moving_tx, staying_tx));
    let mut moving = vec![BTreeMap::new(); shares[0].len()];
    let mut staying = vec![BTreeMap::new(); n as usize - shares[0].len()];
    let all_types = [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE];
    let mut groups = [
        (&mut moving_acks, &mut moving[..], 0),
        (&mut staying_acks, &mut staying[..], shares[0].len()),
    ];
    let started = Instant::now();
    super::changes::until_all_of(&mut groups, &all_types, &versions)
        .await
        .context("connecting the fleet to the replicas")?;
    let connected = started.elapsed().as_secs_f64() * 1e3;

    // Changes through replica 1, until the sidecars of every replica hold each.
    let lost = served[0].child.id().context("replica 0 has no pid")?;
    let mut live: Vec<Option<&Served>> = served.iter().map(Some).collect();
    let changes = config.changes;
    let mut times =
        super::changes::timed_changes(&http, &live, 1, &mut groups, changes, [2, 1]).await?;
    times.sort_by(f64::total_cmp);

    // Replica 0 is lost: killed, then a change through replica 1 at once.
    let reconnects_before = reconnects.load(Ordering::Relaxed);
    let killed = Instant::now();
    let lost = nix::unistd::Pid::from_raw(i32::try_from(lost)?);
    nix::sys::signal::kill(lost, nix::sys::signal::Signal::SIGKILL)
        .context("cannot kill replica 0")?;
    live[0] = None;
    let marker = super::changes::change(&http, &served[1], 3).await?;
    let marked = super::changes::versions_holding(&http, &live, (1, marker), 3).await?;
    let again = super::changes::until_configured(
        moving_acks,
        shares[0].clone(),
        &[ROUTE_TYPE],
        marked,
        killed,
    );
    let group = (&mut staying_acks, &mut staying[..], shares[0].len());
    let during = config.changes.min(10);
    let mut beside =
        super::changes::timed_changes(&http, &live, 1, &mut [group], during, [4, 3]).await?;
    beside.sort_by(f64::total_cmp);
    let again = again
        .await?
        .context("the sidecars of the lost replica, on the others")?;
    let moved = reconnects.load(Ordering::Relaxed) - reconnects_before;
    for t in tasks {
        t.abort();
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let p = |v: &[f64], q: f64| round(super::super::nearest_rank(v, q));
    say(format!(
        "  {n} sidecars ({}) over {replicas} replicas: a change through one ACKed by the sidecars of all in p50 {:.1} ms, p99 {:.1} ms",
        protocol.api_name(),
        p(&times, 0.5),
        p(&times, 0.99),
    ));
    say(format!(
        "  {n} sidecars ({}): replica 0 killed; its {} sidecars held a change made at once through another {again:.0} ms later ({moved} streams opened again); meanwhile a change ACKed by the other sidecars in p50 {:.1} ms, p99 {:.1} ms",
        protocol.api_name(),
        shares[0].len(),
        p(&beside, 0.5),
        p(&beside, 0.99),
    ));
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "replicas": replicas,
        "connected_ms": round(connected),
        "change_acked_by_all_ms": {
            "p50": p(&times, 0.5), "p99": p(&times, 0.99), "changes": times.len(),
        },
        "lost_replica": {
            "sidecars": shares[0].len(),
            "streams_opened_again": moved,
            "configured_ms": round(again),
            "change_acked_ms": {
                "p50": p(&beside, 0.5), "p99": p(&beside, 0.99), "changes": beside.len(),
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn the_shares_cover_every_sidecar_once() {
        for (n, replicas) in [(10, 2), (11, 3), (3, 3), (10_000, 4)] {
            let s = shares(n, replicas);
            assert_eq!(s.len(), replicas);
            assert_eq!(s[0], 0..n / replicas);
            assert!(s.windows(2).all(|w| w[0].end == w[1].start), "{s:?}");
            assert_eq!(s[replicas - 1].end, n, "{s:?}");
            assert!(s.iter().all(|r| !r.is_empty()), "{s:?}");
        }
    }
}
