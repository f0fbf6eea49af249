//! Where a virtual node's Envoy and app are: the one thing the control plane is told by
//! whatever runs the tasks (the local runtime, or nothing at all for a control plane
//! without tasks). The translation reads it; the control plane never decides it.

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// When set, the node's Envoy answers every inbound request itself with this JSON body
    /// (status 200) and never forwards to the app. A measuring aid: `gophermesh bench`
    /// uses it to see what the Envoys alone cost.
    pub direct_response: Option<Arc<str>>,
}
