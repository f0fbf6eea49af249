//! App Mesh resources to Envoy resources, as App Mesh programs its Envoys.
//!
//! For a virtual node `N` in mesh `M`:
//! - listener `lds_ingress_0.0.0.0_15000`: inbound traffic to the local app, through
//!   cluster `cds_ingress_M_N_http_PORT`;
//! - listener `lds_egress_0.0.0.0_15001`: the app's outbound traffic, routed by the
//!   route configuration `rds_egress_http_PORT` (delivered by RDS, so shifting weights
//!   never touches a listener or a connection);
//! - one virtual host per backend virtual service, whose routes come from the virtual
//!   router's routes (priority order) and send traffic to weighted clusters
//!   `cds_egress_M_T_http_PORT`, one per target virtual node `T`, with `T`'s health check,
//!   outlier detection and connection pool;
//! - retry policy and timeouts from the route, App Mesh's defaults where it is silent.
//!
//! The mapping, by listener side and resource kind (each file imports only those below it
//! in this list, and this root):
//!
//! ```text
//! ingress      a node's listeners to its local app
//! egress       a node's egress listener, its backends' virtual hosts, ALLOW_ALL/DROP_ALL
//! gateway      a virtual gateway's listeners and gateway routes
//! tcp          TCP backends: a proxy filter chain, or a CONNECT virtual host
//! routes       an App Mesh route as an Envoy route, and its targets' egress clusters
//! clusters     a node listener's cluster: endpoints, limits, health check, ejection
//! http         HTTP connection managers and their listeners
//! tls_context  listener TLS, mTLS validation, client policy TLS
//! mesh_tls     mutual TLS the mesh sets up by itself (its `gophermesh:mtls` tag)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use meshmodel::appmesh::{Listener, VirtualNodeInput};
use prost::Message;

use crate::state::placement::Placement;
use crate::state::snapshot::MeshState;
use ingress::ingress;

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub use clusters::PASSTHROUGH;
pub use egress::FORWARD_PROXY;
pub use meshmodel::GATEWAY_PREFIX;
pub use routes::{ROUTE_MARK, retry_on};

/// App Mesh's per-request timeout when a route gives none.
pub const DEFAULT_PER_REQUEST: Duration = Duration::from_secs(15);
/// App Mesh's default retries: 2, on 503, connect failures, refused streams and resets.
pub const DEFAULT_RETRIES: u32 = 2;
/// "Effectively unlimited" circuit-breaker thresholds, as App Mesh sets them.
const UNLIMITED: u32 = u32::MAX;

/// Everything one Envoy receives, by resource type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeResources {
    pub listeners: Vec<(String, Any)>,
    pub clusters: Vec<(String, Any)>,
    pub routes: Vec<(String, Any)>,
    /// The endpoints of the EDS clusters (those of Cloud Map nodes), by cluster name.
    pub endpoints: Vec<(String, Any)>,
}

impl NodeResources {
    /// The resources of `type_url`, or `None` for a type this control plane does not serve.
    pub fn of_type(&self, type_url: &str) -> Option<&[(String, Any)]> {
        match type_url {
            LISTENER_TYPE => Some(&self.listeners),
            CLUSTER_TYPE => Some(&self.clusters),
            ROUTE_TYPE => Some(&self.routes),
            ENDPOINT_TYPE => Some(&self.endpoints),
            _ => None,
        }
    }

    /// Adds the egress clusters `egress_cluster` made, and the endpoints of the EDS ones.
    fn add_egress(&mut self, egress: EgressClusters) {
        self.clusters.extend(egress.clusters);
        self.endpoints.extend(egress.endpoints);
    }
}

/// The egress clusters a node's routes send to, each made once, by name, and the load
/// assignments of the EDS ones (by cluster name).
#[derive(Debug, Default)]
struct EgressClusters {
    clusters: BTreeMap<String, Any>,
    endpoints: BTreeMap<String, Any>,
}

fn any<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

fn socket_address(addr: SocketAddr) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn listener_of(node: &VirtualNodeInput) -> Option<&Listener> {
    node.spec.listeners.first()
}

fn cluster_name(direction: &str, mesh: &str, node: &str, listener: Option<&Listener>) -> String {
    let (proto, port) = listener
        .map(|l| (l.port_mapping.protocol.as_str(), l.port_mapping.port))
        .unwrap_or(("http", 0));
    format!("cds_{direction}_{mesh}_{node}_{proto}_{port}")
}

/// The Envoy resources for virtual node `node` (or virtual gateway `virtualGateway/G`) of
/// the mesh `snapshot` holds, or `None` when it has no such node. A node no task of this
/// control plane runs (an ECS task elsewhere) is placed as App Mesh places it
/// ([`Placement::as_app_mesh`]).
pub fn for_node(snapshot: &MeshState, node: &str) -> Option<NodeResources> {
    if let Some(gateway) = node.strip_prefix(GATEWAY_PREFIX) {
        return gateway::for_gateway(snapshot, gateway);
    }
    let mesh = &snapshot.mesh;
    let mesh_name = mesh.name()?;
    let vn = &mesh.virtual_nodes.get(node)?.value;
    let listener = listener_of(vn);
    let placed;
    let place = match snapshot.placements.get(node) {
        Some(p) => p,
        None => {
            placed = Placement::as_app_mesh(listener.map(|l| l.port_mapping.port));
            &placed
        }
    };
    let mut out = NodeResources::default();

    // Inbound: the ingress listener(s) to the local app.
    ingress(&mut out, snapshot, node, vn, place);

    // Outbound: the egress listener, routed by RDS.
    egress::egress(&mut out, snapshot, mesh_name, vn, place);
    Some(out)
}

/// The listener of `node` on `port`, or its first when no port is given.
fn listener_on(node: &VirtualNodeInput, port: Option<i64>) -> Option<(usize, &Listener)> {
    match port {
        Some(p) => node
            .spec
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.port_mapping.port == p),
        None => node.spec.listeners.first().map(|l| (0, l)),
    }
}

/// Whether connections reach this placement redirected by the APPMESH rules (ECS,
/// `--netns`, `--containers`), so that each keeps its original destination, rather than
/// sent to its Envoy's addresses directly (the loopback mode).
fn transparent(place: &Placement) -> bool {
    place.ingress.ip().is_unspecified()
}

/// Where the ingress listener for the node's listener number `k` accepts connections
/// when connections are not redirected: the placement's ingress for the first, the next
/// ports after the egress listener's for the others (15002, 15003, ...).
fn ingress_at(place: &Placement, k: usize) -> SocketAddr {
    if k == 0 {
        return place.ingress;
    }
    let port = place
        .ingress
        .port()
        .max(place.egress.port())
        .saturating_add(u16::try_from(k).unwrap_or(u16::MAX));
    SocketAddr::new(place.ingress.ip(), port)
}

/// The listener filter that gives a redirected connection its original destination back.
fn original_dst_filter() -> listener::ListenerFilter {
    listener::ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_owned(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            &envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> route::RouteMatch {
    route::RouteMatch {
        path_specifier: Some(route::route_match::PathSpecifier::Prefix(prefix.to_owned())),
        ..Default::default()
    }
}

mod clusters;
mod egress;
mod gateway;
mod http;
mod ingress;
mod mesh_tls;
mod reads;
mod routes;
mod tcp;
#[cfg(test)]
mod tests;
mod tls_context;
pub use mesh_tls::{
    MESH_CERTIFICATE, MESH_TRUST, MTLS_TAG, MeshTls, callers_of, mesh_tls, spiffe_id,
};
pub use reads::{Changed, Read, Reads, changed, reads};
pub use tls_context::{AcmMaterial, LOCAL_SDS_CLUSTER, acm_material, trust_secret_name};
