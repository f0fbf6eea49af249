//! A running `gophermesh up` as the benchmark drives it: its processes, who answered,
//! and how fast a route shift reaches the Envoys.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Child;

use super::report::Shifts;

/// A running `gophermesh up`.
pub(super) struct Up {
    pub(super) child: Child,
    pub(super) requester: String,
    pub(super) control: String,
    /// The control token this `up` wrote in its state directory.
    pub(super) token: crate::api::token::ControlToken,
}

impl Up {
    pub(super) async fn status(&self, http: &reqwest::Client) -> anyhow::Result<Value> {
        Ok(http
            .get(format!("{}/v1/status", self.control))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The supervised processes (name, pid).
    pub(super) async fn processes(
        &self,
        http: &reqwest::Client,
    ) -> anyhow::Result<Vec<(String, u32)>> {
        let status = self.status(http).await?;
        let procs = status["processes"]
            .as_array()
            .context("status without processes")?
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    u32::try_from(p["pid"].as_u64()?).ok()?,
                ))
            })
            .collect();
        Ok(procs)
    }

    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub(super) fn envoy_pids(procs: &[(String, u32)]) -> Vec<u32> {
    procs
        .iter()
        .filter(|(n, _)| n.ends_with("/envoy"))
        .map(|(_, p)| *p)
        .collect()
}

/// The version the requester's distributor answered with, and its host.
pub(super) async fn answered_by(
    http: &reqwest::Client,
    requester: &str,
) -> anyhow::Result<(String, String)> {
    let v: Value = http
        .get(requester)
        .header("accept", "application/json")
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await?;
    Ok((
        v["distributor"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        v["distributor"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

async fn set_weights(http: &reqwest::Client, up: &Up, v1: u32, v2: u32) -> anyhow::Result<()> {
    let r = http
        .put(format!("{}/v1/routes/distributor/weights", up.control))
        .bearer_auth(up.token.text())
        .json(&json!({"weights": {"distributor-v1": v1, "distributor-v2": v2}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("route set refused: {}", r.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Times `shifts` route changes from the API call to the first request that follows them.
pub(super) async fn shift_propagation(
    http: &reqwest::Client,
    up: &Up,
    shifts: u32,
) -> anyhow::Result<Shifts> {
    let mut times = Vec::new();
    for i in 0..shifts {
        let (v1, v2, want) = if i % 2 == 0 {
            (0, 100, "v2")
        } else {
            (100, 0, "v1")
        };
        let start = Instant::now();
        set_weights(http, up, v1, v2).await?;
        loop {
            let (version, _) = answered_by(http, &up.requester).await?;
            if version == want {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the requester still got {version} 10 s after shifting everything to {want}");
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    set_weights(http, up, 90, 10).await?;
    Ok(Shifts::of(times))
}

/// Starts a rollout of the `distributor` route to v2 on `up` with `plan` (the fields of
/// `POST /v1/rollouts` beside the route and the target).
pub(super) async fn start_rollout(
    http: &reqwest::Client,
    up: &Up,
    plan: Value,
) -> anyhow::Result<()> {
    let mut body = json!({"route": "distributor", "to": "distributor-v2"});
    if let (Some(body), Value::Object(plan)) = (body.as_object_mut(), plan) {
        body.extend(plan);
    }
    let r = http
        .post(format!("{}/v1/rollouts", up.control))
        .bearer_auth(up.token.text())
        .json(&body)
        .send()
        .await?;
    if r.status() != 201 {
        bail!(
            "the rollout was refused: {}",
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs a rollout of four steps (checked every second, on one request) to its end while
/// calling the requester, and times each step from its stored change to every Envoy's ACK,
/// as the console's history has it.
pub(super) async fn rollout_step_acks(http: &reqwest::Client, up: &Up) -> anyhow::Result<Shifts> {
    start_rollout(
        http,
        up,
        json!({"steps": [25, 50, 75, 100], "interval": "1s", "minRequests": 1}),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for _ in 0..20 {
            answered_by(http, &up.requester).await?;
        }
        let all = get_json(http, &format!("{}/v1/rollouts", up.control)).await?;
        let phase = all["rollouts"][0]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match phase.as_str() {
            "succeeded" => break,
            "progressing" if Instant::now() < deadline => {}
            _ => bail!(
                "the rollout did not succeed within 120 s: {}",
                all["rollouts"][0]
            ),
        }
    }
    let live = get_json(http, &format!("{}/v1/live", up.control)).await?;
    let times: Vec<f64> = live["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| {
            h["what"].as_str().is_some_and(|w| {
                w.contains("rollout of route distributor: advanced")
                    || w.contains("rollout of route distributor: succeeded")
            })
        })
        .filter_map(|h| h["acked_ms"].as_f64())
        .collect();
    if times.is_empty() {
        bail!(
            "no rollout step was ACKed by every Envoy: {}",
            live["history"]
        );
    }
    Ok(Shifts::of(times))
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.json().await?)
}
