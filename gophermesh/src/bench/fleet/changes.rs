//! Route changes through the control API, and waiting until the sidecars hold them: each
//! sidecar's latest ACK of each type, on the control plane it went to (replicas number
//! their versions each for itself).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::mpsc;

use controlplane::translate::ROUTE_TYPE;

use super::sidecar::Acked;
use super::{Served, status};

/// What one sidecar ACKed last of each type: on which control plane, and its version.
pub(super) type Latest = BTreeMap<&'static str, (usize, u64)>;

/// Waits until every one of `n` sidecars has ACKed `type_urls` at `version` or later;
/// `latest` keeps each sidecar's latest ACK per type. (The sidecars still behind are
/// counted as ACKs come, not looked over again for each: a fleet of 10,000 would spend a
/// second of the measured time in that loop.)
pub(super) async fn until_all(
    acks: &mut mpsc::UnboundedReceiver<Acked>,
    latest: &mut [Latest],
    type_urls: &[&'static str],
    version: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    until_all_from(acks, latest, 0, type_urls, &[version], limit).await
}

/// [`until_all`] for the sidecars numbered from `first` (`latest[0]` is sidecar `first`),
/// each at `versions[r]` or later, where `r` is the control plane its last ACK went to
/// (each replica numbers its versions itself); ACKs of others are passed over.
pub(super) async fn until_all_from(
    acks: &mut mpsc::UnboundedReceiver<Acked>,
    latest: &mut [Latest],
    first: usize,
    type_urls: &[&'static str],
    versions: &[u64],
    limit: Duration,
) -> anyhow::Result<()> {
    let done = |l: &Latest| {
        type_urls.iter().all(|t| {
            l.get(t)
                .is_some_and(|(r, v)| versions.get(*r).is_some_and(|want| v >= want))
        })
    };
    let mut behind = latest.iter().filter(|l| !done(l)).count();
    let deadline = tokio::time::Instant::now() + limit;
    while behind > 0 {
        let Ok(ack) = tokio::time::timeout_at(deadline, acks.recv()).await else {
            bail!(
                "{behind} of {} sidecars had not ACKed version {versions:?} within {limit:?}",
                latest.len()
            );
        };
        let ack = ack.context("every sidecar stream ended")?;
        let Some(l) = ack
            .client
            .checked_sub(first)
            .and_then(|i| latest.get_mut(i))
        else {
            continue;
        };
        let before = done(l);
        l.insert(ack.type_url, (ack.replica, ack.version));
        match (before, done(l)) {
            (false, true) => behind -= 1,
            (true, false) => behind += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Waits, beside what the caller goes on with, until sidecars `indices` (their ACKs on
/// `acks`) have all ACKed `types` at `versions` or later (see [`until_all_from`]); the ms
/// from `since` until then.
pub(super) fn until_configured(
    mut acks: mpsc::UnboundedReceiver<Acked>,
    indices: std::ops::Range<usize>,
    types: &'static [&'static str],
    versions: Vec<u64>,
    since: Instant,
) -> tokio::task::JoinHandle<anyhow::Result<f64>> {
    tokio::spawn(async move {
        let mut latest = vec![BTreeMap::new(); indices.len()];
        let limit = Duration::from_secs(120);
        let first = indices.start;
        until_all_from(&mut acks, &mut latest, first, types, &versions, limit).await?;
        Ok(since.elapsed().as_secs_f64() * 1e3)
    })
}

/// Sidecars whose ACKs come on one channel: `latest[i]` is the latest each type ACKed by
/// sidecar `first + i` (see [`until_all_from`]).
pub(super) type Group<'a> = (
    &'a mut mpsc::UnboundedReceiver<Acked>,
    &'a mut [Latest],
    usize,
);

/// [`until_all_from`] for each of `groups` in turn, within two minutes each.
pub(super) async fn until_all_of(
    groups: &mut [Group<'_>],
    type_urls: &[&'static str],
    versions: &[u64],
) -> anyhow::Result<()> {
    for (acks, latest, first) in groups.iter_mut() {
        let limit = Duration::from_secs(120);
        until_all_from(acks, latest, *first, type_urls, versions, limit).await?;
    }
    Ok(())
}

/// Sets svc-0's weight through the control API of `served`; the mesh version it made.
pub(super) async fn change(
    http: &reqwest::Client,
    served: &Served,
    weight: u32,
) -> anyhow::Result<u64> {
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
    answer["version"]
        .as_u64()
        .with_context(|| format!("the route change was refused: {answer}"))
}

/// The version at which `served` holds svc-0's weight `weight` (a replica that learns of
/// a change from the table makes a version of its own numbering), as soon as it does.
pub(super) async fn version_holding(
    http: &reqwest::Client,
    served: &Served,
    weight: u32,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status(http, served).await?;
        let holds = status["meshes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["routes"].as_array().into_iter().flatten())
            .filter(|r| r["virtualRouter"] == "svc-0" && r["route"] == "svc-0")
            .flat_map(|r| r["targets"].as_array().into_iter().flatten())
            .any(|t| t["virtualNode"] == "svc-0" && t["weight"] == weight);
        if holds {
            return status["version"]
                .as_u64()
                .context("no version in its status");
        }
        if Instant::now() > deadline {
            bail!("a replica did not learn of svc-0's weight {weight} within a minute");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// For each of `replicas` (`None`: lost), the version at which it holds svc-0's weight
/// `weight`, which replica `made.0` made at version `made.1` (`u64::MAX` for a lost one).
pub(super) async fn versions_holding(
    http: &reqwest::Client,
    replicas: &[Option<&Served>],
    made: (usize, u64),
    weight: u32,
) -> anyhow::Result<Vec<u64>> {
    let mut versions = Vec::with_capacity(replicas.len());
    for (r, served) in replicas.iter().enumerate() {
        versions.push(match served {
            _ if r == made.0 => made.1,
            Some(served) => version_holding(http, served, weight).await?,
            None => u64::MAX,
        });
    }
    Ok(versions)
}

/// Makes `changes` route changes through the control API of `replicas[through]` (the
/// control planes by number, `None` for a lost one), svc-0's weight taking the two
/// `weights` in turn, each change waiting until every sidecar of every group holds it
/// from the control plane it is on; how long each took, in ms. (A weight the route has
/// already changes nothing, and nothing is sent.)
pub(super) async fn timed_changes(
    http: &reqwest::Client,
    replicas: &[Option<&Served>],
    through: usize,
    groups: &mut [Group<'_>],
    changes: u32,
    weights: [u32; 2],
) -> anyhow::Result<Vec<f64>> {
    let via = replicas[through].context("changes go through a replica that runs")?;
    let mut times = Vec::new();
    for i in 0..changes {
        let t0 = Instant::now();
        let weight = weights[i as usize % 2];
        let v = change(http, via, weight).await?;
        let versions = versions_holding(http, replicas, (through, v), weight).await?;
        until_all_of(groups, &[ROUTE_TYPE], &versions)
            .await
            .with_context(|| format!("change {i}"))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas number their versions each for itself: a sidecar holds a change once its
    /// latest ACK is at the version of the replica that ACK went to, and never when that
    /// replica is lost (`u64::MAX`), however high the version it last ACKed there.
    #[tokio::test]
    async fn an_ack_counts_at_the_version_of_the_replica_it_went_to() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let send = |client, replica, version| {
            let type_url = ROUTE_TYPE;
            tx.send(Acked {
                client,
                replica,
                type_url,
                version,
            })
            .expect("the receiver is here");
        };
        let versions = [u64::MAX, 5];
        let mut latest = vec![Latest::new(); 2];
        let short = Duration::from_millis(50);
        send(0, 1, 5);
        send(1, 1, 4);
        send(1, 0, 9);
        let wait = until_all_from(&mut rx, &mut latest, 0, &[ROUTE_TYPE], &versions, short);
        assert!(wait.await.is_err(), "sidecar 1 last ACKed the lost replica");
        send(0, 0, 7);
        send(1, 1, 5);
        let wait = until_all_from(&mut rx, &mut latest, 0, &[ROUTE_TYPE], &versions, short);
        assert!(wait.await.is_err(), "sidecar 0 went back to the lost one");
        send(0, 1, 6);
        let wait = until_all_from(&mut rx, &mut latest, 0, &[ROUTE_TYPE], &versions, short);
        assert!(
            wait.await.is_ok(),
            "both hold replica 1's version 5 or later"
        );
    }
}
