//! A running `gophermesh up` as the benchmark drives it: its processes, who answered,
//! and how fast a route shift reaches the Envoys.

use std::path::{Path, PathBuf};
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

/// Writes `dir/requester` and `dir/distributor`: the minimal hyper stand-ins the mesh
/// floor runs in place of the gophers (`gophermesh bench-hello`, forwarding to the
/// distributor through the task's Envoy, and answering). Returns `dir`, for `up --bin-dir`.
pub(super) fn stand_ins(dir: &Path, me: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let me = me.display().to_string().replace('\'', r"'\''");
    let scripts = [
        (
            "requester",
            r#"--forward "$DISTRIBUTOR_URL" ${EGRESS_PROXY:+--proxy "$EGRESS_PROXY"}"#,
        ),
        ("distributor", "--distributor"),
    ];
    for (name, args) in scripts {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\nexec '{me}' bench-hello --listen \"$LISTEN_ADDR\" {args}\n"),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir.to_owned())
}

/// A copy of the mesh files in `mesh` under `dir`, the mesh resource tagged
/// `gophermesh:mtls` = `value` (its own mutual TLS). Returns `dir`.
pub(super) fn tagged_mesh(mesh: &Path, dir: &Path, value: &str) -> anyhow::Result<PathBuf> {
    const KINDS: [&str; 6] = [
        "virtualNodeName",
        "virtualRouterName",
        "routeName",
        "virtualServiceName",
        "virtualGatewayName",
        "gatewayRouteName",
    ];
    let mut todo = vec![(mesh.to_path_buf(), dir.to_path_buf())];
    while let Some((from, to)) = todo.pop() {
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("cannot read {}", from.display()))?
        {
            let path = entry?.path();
            let target = to.join(path.file_name().context("a file name")?);
            if path.is_dir() {
                todo.push((path, target));
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let mut doc: Value = match serde_json::from_str(&text) {
                Ok(doc) => doc,
                Err(_) => {
                    std::fs::write(&target, text)?;
                    continue;
                }
            };
            if doc.get("meshName").is_some() && KINDS.iter().all(|k| doc.get(k).is_none()) {
                doc["tags"] = json!([{"key": meshmodel::MTLS_TAG, "value": value}]);
            }
            std::fs::write(&target, serde_json::to_vec_pretty(&doc)?)?;
        }
    }
    Ok(dir.to_path_buf())
}

/// The TLS handshakes the listeners of node `node`'s Envoy (`MESH/NODE`) took.
pub(super) async fn listener_handshakes(
    http: &reqwest::Client,
    up: &Up,
    node: &str,
) -> anyhow::Result<u64> {
    let status = up.status(http).await?;
    let admin = status["placements"][node]["admin"]
        .as_str()
        .with_context(|| format!("status places no Envoy of {node}"))?;
    let text = http
        .get(format!(
            "http://{admin}/stats?filter=^listener\\..*ssl\\.handshake$"
        ))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum())
}
