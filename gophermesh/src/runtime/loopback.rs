//! The loopback backend (the default): every task gets an address of its own in
//! 127.0.0.0/8, as `awsvpc` gives each ECS task an address, and keeps the task
//! definition's ports on it: Envoy's ingress and egress listeners on the proxy
//! configuration's ports (15000, 15001), its admin on 9901, the app on its AppPort. No two
//! tasks, and no two runs, share an address, so nothing has to find a free port.
//!
//! A run reserves a /24 (`127.X.Y.0`) by holding an exclusive lock on
//! `$TMPDIR/gophermesh-loopback/127.X.Y.lock` for as long as it runs; the lock goes with
//! the process, so a killed run frees its addresses. Task `i` gets `127.X.Y.(10+i)`.
//!
//! Apps reach their backends through their Envoy's egress listener used as an HTTP proxy
//! (`EGRESS_PROXY`), so the requester still calls `http://distributor.gophers.local:8080`
//! and Envoy routes by that name.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use controlplane::Placement;
use meshmodel::taskdef::Task;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;

use super::processes::Processes;
use super::{Backend, Launch, Plan, Site, app_port, envoy};

/// The first subnet tried is 127.FIRST_X.0.0/24; X runs up to 254.
const FIRST_X: u8 = 201;

/// A /24 of 127.0.0.0/8 held by this run.
#[derive(Debug)]
pub struct Subnet {
    prefix: [u8; 3],
    _lock: Flock<std::fs::File>,
}

impl Subnet {
    /// Reserves the first /24 that no other run holds.
    pub fn reserve() -> anyhow::Result<Self> {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for x in FIRST_X..=254 {
            for y in 0..=255u8 {
                let path = dir.join(format!("127.{x}.{y}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    return Ok(Self {
                        prefix: [127, x, y],
                        _lock: lock,
                    });
                }
            }
        }
        bail!(
            "every loopback subnet from 127.{FIRST_X}.0.0 on is held by another gophermesh run (locks in {})",
            dir.display()
        )
    }

    /// The address of task number `index` (0-based).
    pub fn task_ip(&self, index: usize) -> anyhow::Result<Ipv4Addr> {
        let last = u8::try_from(10 + index)
            .ok()
            .filter(|&n| n < 255)
            .context("the loopback mode runs at most 245 tasks")?;
        let [a, b, c] = self.prefix;
        Ok(Ipv4Addr::new(a, b, c, last))
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("gophermesh-loopback")
}

/// Tasks as processes on loopback addresses of their own.
#[derive(Debug, Default)]
pub struct Loopback {
    subnet: Option<Subnet>,
    processes: Processes,
}

impl Backend for Loopback {
    fn plan(&mut self, tasks: &[Task], _meshes: &super::Meshes) -> anyhow::Result<Plan> {
        let subnet = Subnet::reserve()?;
        let mut sites = std::collections::BTreeMap::new();
        for (index, t) in tasks.iter().enumerate() {
            let ip = subnet.task_ip(index)?;
            let at = |port: u16| SocketAddr::from((ip, port));
            // A gateway's Envoy listens on the gateway's ports itself; it has no app.
            let app = if t.gateway().is_some() {
                at(t.proxy.proxy_ingress_port)
            } else {
                at(app_port(t))
            };
            let place = Placement {
                ingress: at(t.proxy.proxy_ingress_port),
                egress: at(t.proxy.proxy_egress_port),
                app,
                reach: at(t.proxy.proxy_ingress_port),
                admin: at(envoy::ADMIN_PORT),
            };
            let site = Site {
                egress_proxy: Some(format!("http://{}", place.egress)),
                place,
                app_listen: app,
                netns: None,
                envoy_user: None,
                app_user: None,
            };
            sites.insert(t.key(), site);
        }
        self.subnet = Some(subnet);
        Ok(Plan {
            sites,
            hosts: None,
            entry_netns: None,
        })
    }

    async fn xds_listener(&self, port: u16) -> anyhow::Result<TcpListener> {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("cannot listen for xDS on 127.0.0.1:{port}"))
    }

    async fn start_task(
        &mut self,
        launch: &Launch,
        task: &Task,
        site: &Site,
    ) -> anyhow::Result<()> {
        self.processes.start_task(launch, task, site).await
    }

    async fn stop(&mut self) {
        self.processes.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_hold_different_subnets() {
        let first = Subnet::reserve().expect("a subnet");
        let second = Subnet::reserve().expect("another subnet");
        assert_ne!(first.prefix, second.prefix);
        let ip = first.task_ip(2).expect("an address");
        assert!(ip.is_loopback());
        assert_eq!(ip.octets()[3], 12);
        assert!(first.task_ip(245).is_err());
        // The lock is what holds it: a direct attempt on the same file is refused.
        let [_, x, y] = first.prefix;
        let file = std::fs::File::open(lock_dir().join(format!("127.{x}.{y}.lock")))
            .expect("the lock file exists");
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err());
    }
}
