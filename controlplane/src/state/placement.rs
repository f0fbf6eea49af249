//! Where a virtual node's Envoy and app are: told by whatever runs the tasks (the local
//! runtime); for a node no task here runs, App Mesh's own placement in an ECS task
//! ([`Placement::as_app_mesh`]). The translation reads it.

use std::net::{IpAddr, SocketAddr};

/// Where a virtual node's Envoy and app are on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Where the node's Envoy accepts inbound traffic (the ingress listener).
    pub ingress: SocketAddr,
    /// Where the node's Envoy accepts its app's outbound traffic (the egress listener).
    pub egress: SocketAddr,
    /// Where the app listens, as the node's Envoy reaches it.
    pub app: SocketAddr,
    /// Where other Envoys send traffic for this node.
    pub reach: SocketAddr,
    /// Envoy's admin interface (on the task's own loopback).
    pub admin: SocketAddr,
}

impl Placement {
    /// Where App Mesh's own Envoy is in an ECS task with the APPMESH proxy configuration:
    /// ingress on `0.0.0.0:15000`, egress on `0.0.0.0:15001`, admin on `127.0.0.1:9901`,
    /// the app at `127.0.0.1:<listener port>`. (`reach` is unknown here; other Envoys find
    /// the node by its service discovery.)
    pub fn as_app_mesh(port: Option<i64>) -> Self {
        let port = port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
        Self {
            ingress: SocketAddr::from(([0, 0, 0, 0], 15000)),
            egress: SocketAddr::from(([0, 0, 0, 0], 15001)),
            app: SocketAddr::from(([127, 0, 0, 1], port)),
            reach: SocketAddr::from(([0, 0, 0, 0], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
        }
    }
}

/// One instance of a Cloud Map service, where a caller's Envoy reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    pub ip: IpAddr,
    /// `AWS_INSTANCE_PORT`, when the instance has it; otherwise the node's listener port.
    pub port: Option<u16>,
}

impl Instance {
    /// Where to reach it for a listener on `listener_port`.
    pub fn at(&self, listener_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(listener_port))
    }
}
