//! The real Envoys of a fleet run, and the check that the simulated sidecars received what
//! they do.

use anyhow::{Context, bail};
use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::digest::digest_of_dump;

/// A real Envoy of the `requester` node, as task `index` of the fleet: the even ones speak
/// state of the world, the odd ones delta xDS, so that both are held to what the
/// simulated sidecars received.
pub(super) struct RealEnvoy {
    _child: tokio::process::Child,
    admin: crate::runtime::envoy::EnvoyAdmin,
}

impl RealEnvoy {
    pub(super) fn protocol(index: u32) -> crate::runtime::envoy::XdsProtocol {
        match index % 2 {
            0 => crate::runtime::envoy::XdsProtocol::Sotw,
            _ => crate::runtime::envoy::XdsProtocol::Delta,
        }
    }

    pub(super) async fn start(
        envoy: &Path,
        xds: &str,
        dir: &Path,
        index: u32,
    ) -> anyhow::Result<Self> {
        let xds: std::net::SocketAddr = xds
            .parse()
            .with_context(|| format!("serve's xDS address `{xds}`"))?;
        let mut boot = crate::runtime::envoy::bootstrap(
            "gophermesh",
            "requester",
            ([127, 0, 0, 1], 0).into(),
            xds,
            Self::protocol(index),
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
            xds_protocol: Self::protocol(index),
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

    /// Within 30 s, holds what `simulated` received at `version`. A state-of-the-world
    /// Envoy is waited for until its route configurations are at `version` and then
    /// compared; a delta one keeps each resource's own version (a hash of it), so it is
    /// compared by content until it agrees.
    pub(super) async fn agrees(
        &self,
        index: u32,
        version: u64,
        simulated: &BTreeMap<&'static str, (u64, Vec<String>)>,
    ) -> anyhow::Result<()> {
        let delta = Self::protocol(index) == crate::runtime::envoy::XdsProtocol::Delta;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .admin
                .get("/config_dump", Duration::from_secs(10))
                .await?;
            if status == 200 {
                let held = digest_of_dump(&serde_json::from_str(&body)?);
                if delta {
                    match compare(&held, simulated, false) {
                        Ok(()) => return Ok(()),
                        Err(e) if Instant::now() > deadline => return Err(e),
                        Err(_) => {}
                    }
                } else if held.get(ROUTE_TYPE).is_some_and(|(v, _)| *v >= version) {
                    return compare(&held, simulated, true);
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

/// Compares what a real Envoy holds with what the simulated sidecar received (with the
/// route configurations' version when `versions`).
pub(super) fn compare(
    real: &BTreeMap<&'static str, (u64, Vec<String>)>,
    simulated: &BTreeMap<&'static str, (u64, Vec<String>)>,
    versions: bool,
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
        if (versions && type_url == ROUTE_TYPE && rv != sv) || real != simulated {
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
