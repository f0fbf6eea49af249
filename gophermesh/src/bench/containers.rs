//! `bench --containers`: the same mesh once more with `up --containers`, every Envoy from
//! the sidecar image (`gophermesh sidecar` under the task definition's environment),
//! measured beside the Envoys `up` runs by hand: the image's size against Envoy's own
//! binary, the time from start to LIVE, memory idle and at peak, and its throughput in the
//! same group of turns as `mesh` and `mesh_floor`.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::mesh::Up;
use super::report::Memory;
use super::{Bench, load::memory_mib};
use crate::progress::say;
use crate::runtime::images;

/// The mesh in containers, as started.
pub(super) struct InContainers {
    pub(super) up: Up,
    /// The requester task as other tasks reach it (its Envoy's ingress, through the
    /// APPMESH rules), and the namespace they reach it from: the task network's hub.
    pub(super) requester: String,
    pub(super) hub: String,
    /// Its processes, for CPU: the apps, each sidecar and its Envoy.
    pub(super) procs: Vec<(String, u32)>,
    /// Each task's sidecar and the Envoy it runs.
    sidecars: Vec<(u32, Option<u32>)>,
    /// The largest task's sidecar and Envoy together, before any load, MiB.
    idle_mib: f64,
}

impl Bench {
    /// Starts the mesh with `up --containers` (building the images when missing).
    pub(super) async fn mesh_in_containers(&self) -> anyhow::Result<InContainers> {
        say(
            "starting the same mesh in containers (gophermesh up --containers): every Envoy from the sidecar image",
        );
        let up = self
            .up(
                "mesh-containers",
                &self.mesh_dir,
                &self.taskdefs_dir,
                &self.bin_dir,
                &["--containers"],
            )
            .await?;
        let mut procs = Vec::new();
        let mut sidecars = Vec::new();
        for (name, pid) in up.processes(&self.http).await? {
            if name.ends_with("/envoy") {
                let envoy = children(pid).first().copied();
                if let Some(e) = envoy {
                    procs.push((name.clone(), e));
                }
                procs.push((format!("{name} (gophermesh sidecar)"), pid));
                sidecars.push((pid, envoy));
            } else {
                procs.push((name, pid));
            }
        }
        anyhow::ensure!(
            sidecars.iter().all(|(_, e)| e.is_some()),
            "a sidecar container runs no Envoy"
        );
        let idle_mib = largest(&sidecars, "VmRSS")?;
        let status = up.status(&self.http).await?;
        let reach = status["placements"]["gophermesh/requester"]["reach"]
            .as_str()
            .context("status names no address for the requester task")?;
        let hub = format!("gm-{}-hub", up.child.id().context("up exited")?);
        Ok(InContainers {
            requester: format!("http://{reach}"),
            hub,
            up,
            procs,
            sidecars,
            idle_mib,
        })
    }
}

impl InContainers {
    /// The sidecar's figures after the load, beside the Envoys run by hand (`by_hand`:
    /// their memory; `by_hand_up`: the `up` that ran them), and stops this mesh.
    pub(super) async fn figures(
        self,
        http: &reqwest::Client,
        by_hand: &Memory,
        by_hand_up: &Up,
        envoy: &Path,
    ) -> anyhow::Result<Value> {
        let peak = largest(&self.sidecars, "VmHWM")?;
        let live = |status: &Value| {
            let mut ms: Vec<f64> = status["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["name"].as_str().is_some_and(|n| n.ends_with("/envoy")))
                .filter_map(|p| p["live_ms"].as_f64())
                .collect();
            ms.sort_by(f64::total_cmp);
            ms.get(ms.len() / 2).copied()
        };
        let in_containers = live(&self.up.status(http).await?)
            .context("no sidecar container said when its Envoy became LIVE")?;
        let by_hand_live =
            live(&by_hand_up.status(http).await?).context("no Envoy said when it became LIVE")?;
        self.up.stop().await;
        let envoy_mb = std::fs::metadata(crate::runtime::envoy::real_envoy(envoy)?)
            .context("Envoy's binary")?
            .len() as f64
            / 1e6;
        let image_mb = images::image_size(images::SIDECAR.name).map(|b| b / 1e6);
        let figures = json!({
            "image_mb": image_mb,
            "envoy_binary_mb": envoy_mb,
            "image_over_envoy": image_mb.map(|i| i / envoy_mb),
            "live_ms": {"by_hand": by_hand_live, "sidecar_image": in_containers},
            "rss_mib": {
                "by_hand": {"idle": by_hand.idle, "load": by_hand.load},
                "sidecar_image": {"idle": self.idle_mib, "load": peak}
            }
        });
        say(format!(
            "  sidecar: LIVE {in_containers:.0} ms after podman run (Envoy by hand: {by_hand_live:.0} ms after exec); RSS idle {:.1} MiB, peak {peak:.1} MiB (by hand: {:.1} / {:.1})",
            self.idle_mib, by_hand.idle, by_hand.load
        ));
        Ok(figures)
    }
}

/// The largest of the tasks' sidecar and Envoy together, by `field` of their status, MiB.
fn largest(sidecars: &[(u32, Option<u32>)], field: &str) -> anyhow::Result<f64> {
    let mut most = 0.0_f64;
    for (sidecar, envoy) in sidecars {
        let mut sum = memory_mib(*sidecar, field)?;
        if let Some(e) = envoy {
            sum += memory_mib(*e, field)?;
        }
        most = most.max(sum);
    }
    Ok(most)
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
