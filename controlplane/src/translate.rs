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
//! One file because it is one mapping, read top to bottom as App Mesh's own reference
//! reads (a node's listeners, then its clusters, then its routes); about a fifth of it is
//! the unit tests of that mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use meshmodel::appmesh::{
    ConnectionPool, HttpRoute, Listener, Logging, Protocol, RouteInput, VirtualNodeInput,
};
use prost::Message;

use crate::state::placement::Placement;
use crate::state::snapshot::Snapshot;

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub use meshmodel::GATEWAY_PREFIX;

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

/// The Envoy resources for virtual node `node` (or virtual gateway `virtualGateway/G`), or
/// `None` when it is not in the snapshot. A node no task of this control plane runs (an ECS task elsewhere) is placed
/// as App Mesh places it ([`Placement::as_app_mesh`]).
pub fn for_node(snapshot: &Snapshot, node: &str) -> Option<NodeResources> {
    // A node (or gateway) of a mesh other than the first: `@MESH/NODE`.
    if let Some((mesh, inner)) = node.strip_prefix('@').and_then(|k| k.split_once('/')) {
        return for_node(&*snapshot.view(mesh)?, inner);
    }
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
    ingress(&mut out, mesh_name, node, vn, place);

    // Outbound: the egress listener, routed by RDS.
    let egress_route_name = format!(
        "rds_egress_{}_{}",
        listener.map_or("http", |l| l.port_mapping.protocol.as_str()),
        listener.map_or(0, |l| l.port_mapping.port)
    );
    let egress_name = format!("lds_egress_{}_{}", place.egress.ip(), place.egress.port());
    let allow_all = mesh.mesh.as_ref().is_some_and(|m| {
        m.value
            .spec
            .egress_filter
            .as_ref()
            .is_some_and(|f| f.kind == meshmodel::appmesh::EgressFilterType::AllowAll)
    });
    // Transparent interception (the APPMESH rules redirect every connection): the
    // original destination is known. Not so for an app using its Envoy as an explicit
    // proxy (the loopback mode), where it would be Envoy itself.
    let transparent = transparent(place);
    let mut manager = http_manager(
        "egress",
        hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(ads_source()),
            route_config_name: egress_route_name.clone(),
        }),
        vn.spec.logging.as_ref(),
    );
    if !transparent {
        explicit_proxy(&mut manager, allow_all);
    }
    let mut egress = manager_listener(&egress_name, place.egress, &manager);
    if transparent {
        // The address a connection was redirected from (the APPMESH rules' REDIRECT).
        egress.listener_filters.push(original_dst_filter());
    }

    let mut virtual_hosts = Vec::new();
    // TCP backends as (virtual service, port, where, idle timeout): where connections are
    // redirected, a filter chain per port, told apart by the original destination port (so
    // not on a port that an HTTP backend of this node has too: HTTP keeps it); in the
    // loopback mode, HTTP CONNECT tunnels.
    let mut tcp_backends: Vec<(String, i64, TcpTo, Option<Duration>)> = Vec::new();
    let mut http_ports: BTreeSet<i64> = BTreeSet::new();
    let mut egress_clusters = EgressClusters::default();
    for backend in &vn.spec.backends {
        let service_name = &backend.virtual_service.virtual_service_name;
        // TLS to this backend: its own client policy, else the node's backend defaults.
        let policy = backend
            .virtual_service
            .client_policy
            .as_ref()
            .or(vn
                .spec
                .backend_defaults
                .as_ref()
                .and_then(|d| d.client_policy.as_ref()))
            .and_then(|p| p.tls.as_ref());
        let caller = Caller { policy, pool: None };
        let Some(service) = mesh.virtual_services.get(service_name) else {
            continue;
        };
        let provider = service.value.spec.provider.as_ref();
        // (port, routes) per listener of the provider; one entry with no port when it has
        // no listener.
        let mut by_port: Vec<(Option<i64>, Vec<route::Route>)> = Vec::new();
        if let Some(router_name) = provider
            .and_then(|p| p.virtual_router.as_ref())
            .map(|r| &r.virtual_router_name)
        {
            let listeners: Vec<(i64, Protocol)> = mesh
                .virtual_routers
                .get(router_name)
                .map(|r| {
                    r.value
                        .spec
                        .listeners
                        .iter()
                        .map(|l| (l.port_mapping.port, l.port_mapping.protocol))
                        .collect()
                })
                .unwrap_or_default();
            // A tcp listener is served by the first tcpRoute for its port, as a TCP proxy.
            for (port, _) in listeners.iter().filter(|(_, p)| *p == Protocol::Tcp) {
                let route = mesh.routes_of(router_name).into_iter().find(|r| {
                    r.spec.tcp_route.is_some() && r.spec.match_port().is_none_or(|p| p == *port)
                });
                if let Some(tcp) = route.and_then(|r| r.spec.tcp_route.as_ref()) {
                    let weighted: Vec<(String, u32)> = tcp
                        .action
                        .weighted_targets
                        .iter()
                        .map(|t| {
                            let name = egress_cluster(
                                snapshot,
                                mesh_name,
                                &t.virtual_node,
                                t.port,
                                caller,
                                &mut egress_clusters,
                            );
                            (name, u32::try_from(t.weight).unwrap_or(0))
                        })
                        .filter(|(_, w)| *w > 0)
                        .collect();
                    let idle = tcp
                        .timeout
                        .as_ref()
                        .and_then(|t| t.idle)
                        .map(|d| d.to_std());
                    tcp_backends.push((
                        service_name.clone(),
                        *port,
                        TcpTo::Weighted(weighted),
                        idle,
                    ));
                }
            }
            let ports: Vec<Option<i64>> = if listeners.is_empty() {
                vec![None]
            } else {
                listeners
                    .iter()
                    .filter(|(_, p)| *p != Protocol::Tcp)
                    .map(|(port, _)| Some(*port))
                    .collect()
            };
            for port in ports {
                let mut routes = Vec::new();
                for r in mesh.routes_of(router_name) {
                    // With several listeners, each route serves the one its match names.
                    if port.is_some() && r.spec.match_port().is_some_and(|p| Some(p) != port) {
                        continue;
                    }
                    if let Some(envoy_route) =
                        translate_route(snapshot, mesh_name, r, caller, &mut egress_clusters)
                    {
                        routes.push(envoy_route);
                    }
                }
                by_port.push((port, routes));
            }
        } else if let Some(target) = provider
            .and_then(|p| p.virtual_node.as_ref())
            .map(|n| &n.virtual_node_name)
        {
            if let Some(t) = mesh.virtual_nodes.get(target) {
                for l in &t.value.spec.listeners {
                    if l.port_mapping.protocol == Protocol::Tcp {
                        let port = l.port_mapping.port;
                        let name = egress_cluster(
                            snapshot,
                            mesh_name,
                            target,
                            Some(port),
                            caller,
                            &mut egress_clusters,
                        );
                        let idle = tcp_idle(l);
                        tcp_backends.push((service_name.clone(), port, TcpTo::Cluster(name), idle));
                    }
                }
                let ports: Vec<Option<i64>> = if t.value.spec.listeners.is_empty() {
                    vec![None]
                } else {
                    t.value
                        .spec
                        .listeners
                        .iter()
                        .filter(|l| l.port_mapping.protocol != Protocol::Tcp)
                        .map(|l| Some(l.port_mapping.port))
                        .collect()
                };
                for port in ports {
                    let name = egress_cluster(
                        snapshot,
                        mesh_name,
                        target,
                        port,
                        caller,
                        &mut egress_clusters,
                    );
                    let routes = vec![route::Route {
                        r#match: Some(prefix_match("/")),
                        action: Some(route::route::Action::Route(route_action(
                            route::route_action::ClusterSpecifier::Cluster(name),
                            None,
                        ))),
                        ..Default::default()
                    }];
                    by_port.push((port, routes));
                }
            }
        }
        http_ports.extend(by_port.iter().filter_map(|(p, _)| *p));
        // One virtual host per port (`NAME:PORT`); the first also takes the bare name.
        let several = by_port.len() > 1;
        for (k, (port, routes)) in by_port.into_iter().enumerate() {
            let mut domains = Vec::new();
            if k == 0 {
                domains.push(service_name.clone());
            }
            domains.extend(port.map(|p| format!("{service_name}:{p}")));
            virtual_hosts.push(route::VirtualHost {
                name: match port {
                    Some(p) if several => format!("{service_name}:{p}"),
                    _ => service_name.clone(),
                },
                domains,
                routes,
                ..Default::default()
            });
        }
    }
    // TCP backends by the original destination port, which only redirected connections
    // have (the loopback mode tunnels them instead, below). One chain per port.
    if transparent {
        let mut tcp_ports = BTreeSet::new();
        let chains: Vec<listener::FilterChain> = tcp_backends
            .into_iter()
            .filter(|(_, port, ..)| !http_ports.contains(port) && tcp_ports.insert(*port))
            .map(|(_, port, to, idle)| {
                tcp_chain(&format!("egress_tcp_{port}"), Some(port), to, idle)
            })
            .collect();
        if allow_all {
            // What is not HTTP (HTTPS, a database's protocol) is passed through as TCP:
            // the HTTP connection manager takes only what the HTTP inspector finds HTTP in.
            pass_other_tcp_through(&mut egress, &tcp_ports);
        } else {
            // DROP_ALL, as App Mesh's: AWS's own APIs stay reachable.
            let_aws_apis_out(&mut egress, &tcp_ports);
        }
        egress.filter_chains.extend(chains);
    } else {
        // Without redirection, an app reaches a TCP backend by asking its Envoy (its HTTP
        // proxy) to `CONNECT SERVICE:PORT`; Envoy opens the tunnel to the backend's
        // clusters.
        virtual_hosts.extend(
            tcp_backends
                .into_iter()
                .map(|(service, port, to, idle)| connect_host(&service, port, to, idle)),
        );
    }
    out.listeners
        .push((egress_name.clone(), any(LISTENER_TYPE, &egress)));
    if allow_all && !transparent {
        // Egress filter ALLOW_ALL without redirection: the destination is the one the app
        // asked its proxy for (the request's host, or a CONNECT's), looked up by Envoy's
        // dynamic forward proxy.
        virtual_hosts.push(forward_proxy_host());
        out.clusters.push((
            FORWARD_PROXY.to_owned(),
            any(CLUSTER_TYPE, &forward_proxy_cluster()),
        ));
    }
    if allow_all && transparent {
        // Egress filter ALLOW_ALL: any other destination, passed through to where the
        // connection was going.
        virtual_hosts.push(route::VirtualHost {
            name: "allow_all".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![route::Route {
                r#match: Some(prefix_match("/")),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        PASSTHROUGH.to_owned(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if transparent {
        // Where passed-through connections go (ALLOW_ALL's, and DROP_ALL's to AWS's APIs).
        out.clusters.push((
            PASSTHROUGH.to_owned(),
            any(
                CLUSTER_TYPE,
                &cluster::Cluster {
                    name: PASSTHROUGH.to_owned(),
                    cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                        cluster::cluster::DiscoveryType::OriginalDst as i32,
                    )),
                    lb_policy: cluster::cluster::LbPolicy::ClusterProvided as i32,
                    connect_timeout: Some(pb_duration(EGRESS_CONNECT_TIMEOUT)),
                    ..Default::default()
                },
            ),
        ));
    }
    out.routes.push((
        egress_route_name.clone(),
        any(
            ROUTE_TYPE,
            &route::RouteConfiguration {
                name: egress_route_name,
                virtual_hosts,
                ..Default::default()
            },
        ),
    ));
    out.add_egress(egress_clusters);
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

/// The inbound side of node `node` at `place`: per listener, a cluster to the app on the
/// listener's port (`cds_ingress_M_N_PROTO_PORT`, with the listener's connection pool) and
/// an HTTP connection manager to it, with the listener's TLS and timeout. One listener on
/// the placement's ingress; with several, one Envoy listener whose filter chains are told
/// apart by the original destination port where connections are redirected, else an
/// Envoy listener per node listener ([`ingress_at`]).
fn ingress(
    out: &mut NodeResources,
    mesh_name: &str,
    node: &str,
    vn: &VirtualNodeInput,
    place: &Placement,
) {
    let listeners: Vec<Option<&Listener>> = if vn.spec.listeners.is_empty() {
        vec![None]
    } else {
        vn.spec.listeners.iter().map(Some).collect()
    };
    let several = listeners.len() > 1;
    let mut merged: Option<listener::Listener> = None;
    for (k, listener) in listeners.into_iter().enumerate() {
        let ingress_cluster = cluster_name("ingress", mesh_name, node, listener);
        let app = match listener {
            Some(l) if k > 0 => SocketAddr::new(
                place.app.ip(),
                u16::try_from(l.port_mapping.port).unwrap_or(0),
            ),
            _ => place.app,
        };
        out.clusters.push((
            ingress_cluster.clone(),
            any(
                CLUSTER_TYPE,
                &static_cluster(
                    &ingress_cluster,
                    Upstream::Addr(app),
                    listener.map(|l| l.port_mapping.protocol),
                    Side::Ingress(listener),
                ),
            ),
        ));
        let http_timeout = listener
            .and_then(|l| l.timeout.as_ref())
            .and_then(|t| t.http.as_ref().or(t.http2.as_ref()).or(t.grpc.as_ref()));
        let ingress_timeout = http_timeout
            .and_then(|t| t.per_request)
            .map_or(DEFAULT_PER_REQUEST, meshmodel::appmesh::Duration::to_std);
        let ingress_idle = http_timeout
            .and_then(|t| t.idle)
            .map(|d| pb_duration(d.to_std()));
        let route_name = match listener {
            Some(l) if several => format!(
                "rds_ingress_{}_{}",
                l.port_mapping.protocol.as_str(),
                l.port_mapping.port
            ),
            _ => "rds_ingress".to_owned(),
        };
        let ingress_routes = route::RouteConfiguration {
            name: route_name,
            virtual_hosts: vec![route::VirtualHost {
                name: format!("ingress_{node}"),
                domains: vec!["*".to_owned()],
                routes: vec![route::Route {
                    r#match: Some(prefix_match("/")),
                    action: Some(route::route::Action::Route(route::RouteAction {
                        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                            ingress_cluster,
                        )),
                        timeout: Some(pb_duration(ingress_timeout)),
                        idle_timeout: ingress_idle,
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let at = if transparent(place) {
            place.ingress
        } else {
            ingress_at(place, k)
        };
        // Named as App Mesh names them: `lds_ingress_<ip>_<port>`.
        let name = format!("lds_ingress_{}_{}", at.ip(), at.port());
        let mut ingress = match listener {
            // A tcp listener passes connections to the app as they are.
            Some(l) if l.port_mapping.protocol == Protocol::Tcp => listener::Listener {
                name: name.clone(),
                address: Some(socket_address(at)),
                filter_chains: vec![tcp_chain(
                    "ingress",
                    None,
                    TcpTo::Cluster(cluster_name("ingress", mesh_name, node, listener)),
                    tcp_idle(l),
                )],
                ..Default::default()
            },
            _ => http_listener(
                &name,
                at,
                "ingress",
                hcm::http_connection_manager::RouteSpecifier::RouteConfig(ingress_routes),
                vn.spec.logging.as_ref(),
            ),
        };
        if let Some(tls_config) = listener.and_then(|l| l.tls.as_ref()) {
            listener_tls(&mut ingress, tls_config);
        }
        match (several && transparent(place), listener, merged.as_mut()) {
            // One listener for every port: each chain answers its original port.
            (true, Some(l), into) => {
                let port = u32::try_from(l.port_mapping.port).unwrap_or(0);
                for chain in &mut ingress.filter_chains {
                    chain
                        .filter_chain_match
                        .get_or_insert_with(Default::default)
                        .destination_port = Some(u32v(port));
                }
                match into {
                    Some(all) => {
                        all.filter_chains.append(&mut ingress.filter_chains);
                        for f in ingress.listener_filters {
                            if !all.listener_filters.iter().any(|g| g.name == f.name) {
                                all.listener_filters.push(f);
                            }
                        }
                    }
                    None => {
                        ingress.listener_filters.insert(0, original_dst_filter());
                        merged = Some(ingress);
                    }
                }
            }
            _ => out.listeners.push((name, any(LISTENER_TYPE, &ingress))),
        }
    }
    if let Some(all) = merged {
        out.listeners
            .push((all.name.clone(), any(LISTENER_TYPE, &all)));
    }
}

/// A tcp listener's idle timeout.
fn tcp_idle(l: &Listener) -> Option<Duration> {
    l.timeout
        .as_ref()
        .and_then(|t| t.tcp.as_ref())
        .and_then(|t| t.idle)
        .map(meshmodel::appmesh::Duration::to_std)
}

/// Where a TCP proxy sends a connection.
#[derive(Debug, Clone)]
enum TcpTo {
    Cluster(String),
    /// (cluster, weight), weights above 0.
    Weighted(Vec<(String, u32)>),
}

/// A filter chain that passes each TCP connection (on original destination `port`, when
/// given) to its cluster, closing it after `idle` without bytes (Envoy's default, 1 hour,
/// when `None`).
fn tcp_chain(
    stat_prefix: &str,
    port: Option<i64>,
    to: TcpTo,
    idle: Option<Duration>,
) -> listener::FilterChain {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
    let cluster_specifier = match to {
        TcpTo::Cluster(name) => tcp::tcp_proxy::ClusterSpecifier::Cluster(name),
        TcpTo::Weighted(clusters) => {
            tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(tcp::tcp_proxy::WeightedCluster {
                clusters: clusters
                    .into_iter()
                    .map(
                        |(name, weight)| tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                            name,
                            weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            })
        }
    };
    let proxy = tcp::TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(cluster_specifier),
        idle_timeout: idle.map(pb_duration),
        ..Default::default()
    };
    listener::FilterChain {
        filter_chain_match: port.map(|p| listener::FilterChainMatch {
            destination_port: Some(u32v(u32::try_from(p).unwrap_or(0))),
            ..Default::default()
        }),
        filters: vec![listener::Filter {
            name: "envoy.filters.network.tcp_proxy".to_owned(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                &proxy,
            ))),
        }],
        ..Default::default()
    }
}

/// The egress connection manager of an app that uses its Envoy as an explicit HTTP proxy:
/// it takes `CONNECT` requests (its routes say which are tunnelled where), and with
/// `forward`, sends requests to the hosts they name (the dynamic forward proxy's filter,
/// before the router).
fn explicit_proxy(manager: &mut hcm::HttpConnectionManager, forward: bool) {
    manager
        .upgrade_configs
        .push(hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "CONNECT".to_owned(),
            ..Default::default()
        });
    if forward {
        use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3 as dfp;
        let filter = dfp::FilterConfig {
            implementation_specifier: Some(
                dfp::filter_config::ImplementationSpecifier::DnsCacheConfig(dns_cache()),
            ),
            ..Default::default()
        };
        manager.http_filters.insert(
            0,
            hcm::HttpFilter {
                name: "envoy.filters.http.dynamic_forward_proxy".to_owned(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
                    &filter,
                ))),
                ..Default::default()
            },
        );
    }
}

/// The cluster of egress filter ALLOW_ALL in the loopback mode: the host each request (or
/// CONNECT) names, looked up in DNS.
pub const FORWARD_PROXY: &str = "cds_egress_forward_proxy";

/// The DNS cache the dynamic forward proxy's filter and cluster share.
fn dns_cache()
-> envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
    envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
        name: "egress_dns".to_owned(),
        dns_lookup_family: cluster::cluster::DnsLookupFamily::V4Preferred as i32,
        ..Default::default()
    }
}

fn forward_proxy_cluster() -> cluster::Cluster {
    use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3 as dfp;
    let config = dfp::ClusterConfig {
        cluster_implementation_specifier: Some(
            dfp::cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(dns_cache()),
        ),
        ..Default::default()
    };
    cluster::Cluster {
        name: FORWARD_PROXY.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::ClusterType(
            cluster::cluster::CustomClusterType {
                name: "envoy.clusters.dynamic_forward_proxy".to_owned(),
                typed_config: Some(any(
                    "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                    &config,
                )),
            },
        )),
        lb_policy: cluster::cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(pb_duration(EGRESS_CONNECT_TIMEOUT)),
        ..Default::default()
    }
}

/// ALLOW_ALL's virtual host in the loopback mode: a CONNECT is tunnelled, any other request
/// forwarded, to the host it names.
fn forward_proxy_host() -> route::VirtualHost {
    let mut host = connect_host("*", 0, TcpTo::Cluster(FORWARD_PROXY.to_owned()), None);
    host.name = "allow_all".to_owned();
    host.domains = vec!["*".to_owned()];
    host.routes.push(route::Route {
        r#match: Some(prefix_match("/")),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                FORWARD_PROXY.to_owned(),
            )),
            timeout: Some(pb_duration(DEFAULT_PER_REQUEST)),
            ..Default::default()
        })),
        ..Default::default()
    });
    host
}

/// The virtual host `SERVICE:PORT` that tunnels a `CONNECT` for it to `to` (a TCP
/// backend in the loopback mode), closed after `idle` without bytes.
fn connect_host(service: &str, port: i64, to: TcpTo, idle: Option<Duration>) -> route::VirtualHost {
    let cluster_specifier = match to {
        TcpTo::Cluster(name) => route::route_action::ClusterSpecifier::Cluster(name),
        TcpTo::Weighted(clusters) => {
            route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
                clusters: clusters
                    .into_iter()
                    .map(|(name, weight)| route::weighted_cluster::ClusterWeight {
                        name,
                        weight: Some(u32v(weight)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
    };
    let name = format!("{service}:{port}");
    route::VirtualHost {
        name: format!("{name} (tcp)"),
        domains: vec![name],
        routes: vec![route::Route {
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::ConnectMatcher(
                    route::route_match::ConnectMatcher {},
                )),
                ..Default::default()
            }),
            action: Some(route::route::Action::Route(route::RouteAction {
                cluster_specifier: Some(cluster_specifier),
                upgrade_configs: vec![route::route_action::UpgradeConfig {
                    upgrade_type: "CONNECT".to_owned(),
                    connect_config: Some(
                        route::route_action::upgrade_config::ConnectConfig::default(),
                    ),
                    ..Default::default()
                }],
                // A tunnel lasts as long as its bytes flow, as a TCP proxy's connection.
                timeout: Some(pb_duration(Duration::ZERO)),
                idle_timeout: idle.map(pb_duration),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// How long the egress listener waits for a connection's first bytes to tell HTTP from
/// other TCP under ALLOW_ALL; a protocol whose server speaks first is passed through after
/// it.
const PROTOCOL_SNIFF: Duration = Duration::from_secs(1);

/// Adds to `egress` a listener filter that reads a connection's first bytes (`name`,
/// `config`) for at most [`PROTOCOL_SNIFF`], not run on the TCP backends' `ports` (a
/// protocol whose server speaks first would wait for it).
fn sniff(
    egress: &mut listener::Listener,
    name: &str,
    type_url: &str,
    config: &impl Message,
    ports: &BTreeSet<i64>,
) {
    use envoy_types::pb::envoy::r#type::v3::Int32Range;
    use listener::listener_filter_chain_match_predicate::{MatchSet, Rule};
    let mut rules: Vec<listener::ListenerFilterChainMatchPredicate> = ports
        .iter()
        .filter_map(|p| i32::try_from(*p).ok())
        .map(|p| listener::ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: p,
                end: p + 1,
            })),
        })
        .collect();
    egress.listener_filters.push(listener::ListenerFilter {
        name: name.to_owned(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
            type_url, config,
        ))),
        // An OR takes two rules at least.
        filter_disabled: match rules.len() {
            0 => None,
            1 => rules.pop(),
            _ => Some(listener::ListenerFilterChainMatchPredicate {
                rule: Some(Rule::OrMatch(MatchSet { rules })),
            }),
        },
    });
    egress.listener_filters_timeout = Some(pb_duration(PROTOCOL_SNIFF));
    egress.continue_on_listener_filters_timeout = true;
}

/// Egress filter DROP_ALL where connections are redirected, as App Mesh has it: TLS whose
/// server name is `*.amazonaws.com` (AWS's own APIs) passes through to its original
/// destination; the rest stays in the mesh. The TLS inspector reads the server name (not
/// on the TCP backends' `ports`).
fn let_aws_apis_out(egress: &mut listener::Listener, ports: &BTreeSet<i64>) {
    sniff(
        egress,
        "envoy.filters.listener.tls_inspector",
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
        ports,
    );
    let mut aws = tcp_chain(
        "egress_aws",
        None,
        TcpTo::Cluster(PASSTHROUGH.to_owned()),
        None,
    );
    aws.filter_chain_match = Some(listener::FilterChainMatch {
        server_names: vec!["*.amazonaws.com".to_owned()],
        transport_protocol: "tls".to_owned(),
        ..Default::default()
    });
    egress.filter_chains.push(aws);
}

/// Egress filter ALLOW_ALL where connections are redirected: the HTTP inspector reads each
/// connection's first bytes (not on the TCP backends' `ports`), the HTTP connection
/// manager's chain takes HTTP only, and any other TCP goes to its original destination
/// through a TCP proxy (the default chain). Chains for TCP backends match by port first.
fn pass_other_tcp_through(egress: &mut listener::Listener, ports: &BTreeSet<i64>) {
    sniff(
        egress,
        "envoy.filters.listener.http_inspector",
        "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        &envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector::default(),
        ports,
    );
    for chain in &mut egress.filter_chains {
        chain.filter_chain_match = Some(listener::FilterChainMatch {
            application_protocols: ["http/1.0", "http/1.1", "h2c"].map(str::to_owned).to_vec(),
            ..Default::default()
        });
    }
    egress.default_filter_chain = Some(tcp_chain(
        "egress_passthrough",
        None,
        TcpTo::Cluster(PASSTHROUGH.to_owned()),
        None,
    ));
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

/// How an Envoy calls out: TLS to its backends (a client policy), and the connection
/// limits a virtual gateway's listener sets on every cluster it sends to.
#[derive(Debug, Clone, Copy, Default)]
struct Caller<'a> {
    policy: Option<&'a meshmodel::appmesh::ClientPolicyTls>,
    pool: Option<&'a ConnectionPool>,
}

/// Adds (once) the egress cluster for target node `target` on its listener `port` (its
/// first when `None`); returns its name.
fn egress_cluster(
    snapshot: &Snapshot,
    mesh: &str,
    target: &str,
    port: Option<i64>,
    caller: Caller<'_>,
    clusters: &mut EgressClusters,
) -> String {
    let node = snapshot.mesh.virtual_nodes.get(target).map(|s| &s.value);
    let listener = node.and_then(|n| listener_on(n, port)).map(|(_, l)| l);
    let name = cluster_name("egress", mesh, target, listener);
    if !clusters.clusters.contains_key(&name) {
        let mut c = static_cluster(
            &name,
            Upstream::of(snapshot, target, port),
            listener.map(|l| l.port_mapping.protocol),
            Side::Egress {
                target: listener,
                pool: caller.pool,
            },
        );
        if let Some(policy) = caller.policy {
            cluster_tls(&mut c, policy, listener.map(|l| l.port_mapping.port));
        }
        // A Cloud Map node's endpoints go by EDS, as App Mesh sends them: a change of
        // instances replaces the load assignment, never the cluster.
        if c.eds_cluster_config.is_some() {
            if let Some(assignment) = c.load_assignment.take() {
                clusters
                    .endpoints
                    .insert(name.clone(), any(ENDPOINT_TYPE, &assignment));
            }
        }
        clusters
            .clusters
            .insert(name.clone(), any(CLUSTER_TYPE, &c));
    }
    name
}

fn translate_route(
    snapshot: &Snapshot,
    mesh: &str,
    r: &RouteInput,
    caller: Caller<'_>,
    clusters: &mut EgressClusters,
) -> Option<route::Route> {
    let from_grpc = r
        .spec
        .grpc_route
        .as_ref()
        .map(meshmodel::appmesh::GrpcRoute::as_http);
    let http = r
        .spec
        .http_route
        .as_ref()
        .or(r.spec.http2_route.as_ref())
        .or(from_grpc.as_ref())?;
    // Every target gets its cluster, weight 0 or not, so shifting weights only ever
    // changes the route configuration, never the clusters under requests in flight.
    let mut weighted = Vec::new();
    for t in &http.action.weighted_targets {
        let name = egress_cluster(snapshot, mesh, &t.virtual_node, t.port, caller, clusters);
        if t.weight > 0 {
            weighted.push(route::weighted_cluster::ClusterWeight {
                name,
                weight: Some(u32v(u32::try_from(t.weight).unwrap_or(0))),
                ..Default::default()
            });
        }
    }
    Some(route::Route {
        name: format!("{}/{}", r.virtual_router_name, r.route_name),
        r#match: Some(route_match(http)),
        action: Some(route::route::Action::Route(route_action(
            route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
                clusters: weighted,
                ..Default::default()
            }),
            Some(http),
        ))),
        ..Default::default()
    })
}

fn route_match(http: &HttpRoute) -> route::RouteMatch {
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
    let m = &http.route_match;
    let path_specifier = match (&m.prefix, &m.path) {
        (_, Some(p)) if p.exact.is_some() => Some(route::route_match::PathSpecifier::Path(
            p.exact.clone().unwrap_or_default(),
        )),
        (_, Some(p)) if p.regex.is_some() => Some(route::route_match::PathSpecifier::SafeRegex(
            matcher::RegexMatcher {
                regex: p.regex.clone().unwrap_or_default(),
                ..Default::default()
            },
        )),
        (Some(prefix), _) => Some(route::route_match::PathSpecifier::Prefix(prefix.clone())),
        _ => Some(route::route_match::PathSpecifier::Prefix("/".to_owned())),
    };
    let string = |pattern: matcher::string_matcher::MatchPattern| matcher::StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    };
    let mut headers: Vec<route::HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| {
            use matcher::string_matcher::MatchPattern;
            use route::header_matcher::HeaderMatchSpecifier as S;
            let spec = h.header_match.as_ref().map(|hm| {
                if let Some(v) = &hm.exact {
                    S::StringMatch(string(MatchPattern::Exact(v.clone())))
                } else if let Some(v) = &hm.prefix {
                    S::StringMatch(string(MatchPattern::Prefix(v.clone())))
                } else if let Some(v) = &hm.suffix {
                    S::StringMatch(string(MatchPattern::Suffix(v.clone())))
                } else if let Some(v) = &hm.regex {
                    S::StringMatch(string(MatchPattern::SafeRegex(matcher::RegexMatcher {
                        regex: v.clone(),
                        ..Default::default()
                    })))
                } else if let Some(r) = &hm.range {
                    S::RangeMatch(envoy_types::pb::envoy::r#type::v3::Int64Range {
                        start: r.start,
                        end: r.end,
                    })
                } else {
                    S::PresentMatch(true)
                }
            });
            route::HeaderMatcher {
                name: h.name.clone(),
                invert_match: h.invert.unwrap_or(false),
                header_match_specifier: Some(spec.unwrap_or(S::PresentMatch(true))),
                ..Default::default()
            }
        })
        .collect();
    if let Some(method) = &m.method {
        headers.push(route::HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                string(matcher::string_matcher::MatchPattern::Exact(method.clone())),
            )),
            ..Default::default()
        });
    }
    if let Some(scheme) = &m.scheme {
        headers.push(route::HeaderMatcher {
            name: ":scheme".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                string(matcher::string_matcher::MatchPattern::Exact(scheme.clone())),
            )),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_parameters
        .iter()
        .map(|q| route::QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(match &q.query_match {
                Some(exact) => {
                    route::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string(matcher::string_matcher::MatchPattern::Exact(
                            exact.exact.clone(),
                        )),
                    )
                }
                None => {
                    route::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
                }
            }),
        })
        .collect();
    route::RouteMatch {
        path_specifier,
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// Envoy `retry_on` for App Mesh retry events.
pub fn retry_on(http_events: &[String], tcp_events: &[String]) -> (String, Vec<u32>) {
    let mut on: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for e in http_events {
        match e.as_str() {
            "server-error" => on.push("5xx"),
            "gateway-error" => on.push("gateway-error"),
            "client-error" => {
                on.push("retriable-status-codes");
                codes.push(409);
            }
            "stream-error" => on.push("refused-stream"),
            _ => {}
        }
    }
    if tcp_events.iter().any(|e| e == "connection-error") {
        on.push("connect-failure");
        on.push("reset");
    }
    on.dedup();
    (on.join(","), codes)
}

fn route_action(
    cluster_specifier: route::route_action::ClusterSpecifier,
    http: Option<&HttpRoute>,
) -> route::RouteAction {
    let per_request = http
        .and_then(|h| h.timeout.as_ref())
        .and_then(|t| t.per_request)
        .map_or(DEFAULT_PER_REQUEST, meshmodel::appmesh::Duration::to_std);
    let idle = http
        .and_then(|h| h.timeout.as_ref())
        .and_then(|t| t.idle)
        .map(|d| pb_duration(d.to_std()));
    let retry_policy = match http.and_then(|h| h.retry_policy.as_ref()) {
        Some(policy) => {
            let (mut on, codes) = retry_on(&policy.http_retry_events, &policy.tcp_retry_events);
            // Envoy's gRPC retry conditions are named as App Mesh's events.
            for event in &policy.grpc_retry_events {
                if !on.is_empty() {
                    on.push(',');
                }
                on.push_str(event);
            }
            route::RetryPolicy {
                retry_on: on,
                retriable_status_codes: codes,
                num_retries: Some(u32v(u32::try_from(policy.max_retries).unwrap_or(0))),
                per_try_timeout: Some(pb_duration(policy.per_retry_timeout.to_std())),
                ..Default::default()
            }
        }
        // App Mesh's default: the retriable failures (gRPC `unavailable` too), 503, two
        // retries, each on another host than the ones tried (up to 5 picks).
        None => route::RetryPolicy {
            retry_on: "unavailable,connect-failure,refused-stream,reset,retriable-status-codes"
                .to_owned(),
            retriable_status_codes: vec![503],
            num_retries: Some(u32v(DEFAULT_RETRIES)),
            retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
                config_type: Some(route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
                    &envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate::default(),
                ))),
            }],
            host_selection_retry_max_attempts: 5,
            ..Default::default()
        },
    };
    route::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(pb_duration(per_request)),
        idle_timeout: idle,
        retry_policy: Some(retry_policy),
        ..Default::default()
    }
}

/// Where a cluster sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upstream {
    /// A known address (a task this control plane placed): a STATIC cluster.
    Addr(SocketAddr),
    /// The target node's DNS service discovery, as App Mesh programs it: LOGICAL_DNS for
    /// `responseType` LOADBALANCER (the default), STRICT_DNS for ENDPOINTS.
    Dns {
        host: String,
        port: u16,
        strict: bool,
        /// App Mesh's `ipPreference` (the node's, else the mesh's), as Envoy's DNS lookup
        /// family.
        family: Option<cluster::cluster::DnsLookupFamily>,
    },
    /// The instances Cloud Map gave for the target node (none before a lookup, or when it
    /// found none: Envoy answers 503): an EDS cluster, its endpoints sent by EDS.
    Endpoints(Vec<SocketAddr>),
    /// Nowhere known (no such node, or no listener): no endpoints, so Envoy answers 503.
    Nowhere,
}

impl Upstream {
    /// Where other Envoys reach virtual node `node` (of `snapshot`) on its listener `port`
    /// (its first when `None`): its placement when a task runs it here, else its service
    /// discovery.
    fn of(snapshot: &Snapshot, node: &str, port: Option<i64>) -> Self {
        let Some(vn) = snapshot.mesh.virtual_nodes.get(node).map(|n| &n.value) else {
            return Upstream::Nowhere;
        };
        let listener = listener_on(vn, port);
        if let Some(p) = snapshot.placements.get(node) {
            return Upstream::Addr(match listener {
                Some((k, l)) if k > 0 => {
                    if transparent(p) {
                        let port = u16::try_from(l.port_mapping.port).unwrap_or(0);
                        SocketAddr::new(p.reach.ip(), port)
                    } else {
                        ingress_at(p, k)
                    }
                }
                _ => p.reach,
            });
        }
        let cloud_map = vn
            .spec
            .service_discovery
            .as_ref()
            .is_some_and(|sd| sd.aws_cloud_map.is_some());
        if let (true, Some((_, l))) = (cloud_map, listener) {
            let port = u16::try_from(l.port_mapping.port).unwrap_or(0);
            let instances = snapshot.discovered.get(node).map_or(&[][..], Vec::as_slice);
            return Upstream::Endpoints(instances.iter().map(|i| i.at(port)).collect());
        }
        let dns = vn
            .spec
            .service_discovery
            .as_ref()
            .and_then(|sd| sd.dns.as_ref());
        let preference = dns.and_then(|d| d.ip_preference.as_deref()).or_else(|| {
            snapshot
                .mesh
                .mesh
                .as_ref()
                .and_then(|m| m.value.spec.service_discovery.as_ref())
                .and_then(|sd| sd.ip_preference.as_deref())
        });
        match (dns, listener.map(|(_, l)| l)) {
            (Some(dns), Some(l)) => Upstream::Dns {
                host: dns.hostname.clone(),
                port: u16::try_from(l.port_mapping.port).unwrap_or(0),
                strict: dns.response_type.as_deref() == Some("ENDPOINTS"),
                family: preference.map(|p| {
                    use cluster::cluster::DnsLookupFamily as F;
                    match p {
                        "IPv4_ONLY" => F::V4Only,
                        "IPv6_ONLY" => F::V6Only,
                        "IPv4_PREFERRED" => F::V4Preferred,
                        // IPv6_PREFERRED: AAAA first, then A.
                        _ => F::Auto,
                    }
                }),
            },
            _ => Upstream::Nowhere,
        }
    }
}

/// Which side of a node a cluster is on, with the node's listener: App Mesh puts the
/// listener's `connectionPool` on the node's own local ingress cluster (so the limits hold
/// whoever calls), and its health check and outlier detection on the callers' egress
/// clusters (with the caller's own limits when the caller is a virtual gateway).
#[derive(Debug, Clone, Copy)]
enum Side<'a> {
    Ingress(Option<&'a Listener>),
    Egress {
        target: Option<&'a Listener>,
        pool: Option<&'a ConnectionPool>,
    },
}

/// The cluster of egress filter ALLOW_ALL: each connection's original destination.
pub const PASSTHROUGH: &str = "cds_egress_passthrough";

/// Connect timeouts as App Mesh sets them: the local app, and a node elsewhere.
const INGRESS_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const EGRESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn static_cluster(
    name: &str,
    upstream: Upstream,
    protocol: Option<Protocol>,
    side: Side<'_>,
) -> cluster::Cluster {
    let (pool, target, connect_timeout) = match side {
        Side::Ingress(l) => (
            l.and_then(|l| l.connection_pool.as_ref()),
            None,
            INGRESS_CONNECT_TIMEOUT,
        ),
        Side::Egress { target, pool } => (pool, target, EGRESS_CONNECT_TIMEOUT),
    };
    let family = match &upstream {
        Upstream::Dns { family, .. } => *family,
        _ => None,
    };
    let (discovery, addresses) = match upstream {
        Upstream::Addr(addr) => (
            cluster::cluster::DiscoveryType::Static,
            vec![socket_address(addr)],
        ),
        Upstream::Endpoints(addrs) => (
            cluster::cluster::DiscoveryType::Eds,
            addrs.into_iter().map(socket_address).collect(),
        ),
        Upstream::Dns {
            host, port, strict, ..
        } => (
            if strict {
                cluster::cluster::DiscoveryType::StrictDns
            } else {
                cluster::cluster::DiscoveryType::LogicalDns
            },
            vec![core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: host,
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                        u32::from(port),
                    )),
                    ..Default::default()
                })),
            }],
        ),
        Upstream::Nowhere => (cluster::cluster::DiscoveryType::Static, vec![]),
    };
    // A health check on another port than the listener's checks each endpoint there.
    let health_check_config = target
        .and_then(|l| l.health_check.as_ref())
        .and_then(|hc| hc.port)
        .and_then(|p| u32::try_from(p).ok())
        .map(|port_value| endpoint::endpoint::HealthCheckConfig {
            port_value,
            ..Default::default()
        });
    let lb_endpoints: Vec<endpoint::LbEndpoint> = addresses
        .into_iter()
        .map(|address| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: Some(address),
                    health_check_config: health_check_config.clone(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    let mut c = cluster::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            discovery as i32,
        )),
        connect_timeout: Some(pb_duration(connect_timeout)),
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(family) = family {
        c.dns_lookup_family = family as i32;
    }
    if discovery == cluster::cluster::DiscoveryType::Eds {
        c.eds_cluster_config = Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: name.to_owned(),
        });
    }
    let limit = |v: Option<i64>| {
        Some(u32v(
            v.and_then(|v| u32::try_from(v).ok()).unwrap_or(UNLIMITED),
        ))
    };
    c.circuit_breakers = Some(cluster::CircuitBreakers {
        thresholds: vec![cluster::circuit_breakers::Thresholds {
            max_connections: limit(pool.and_then(|p| {
                p.http
                    .as_ref()
                    .map(|h| h.max_connections)
                    .or(p.tcp.as_ref().map(|t| t.max_connections))
            })),
            max_pending_requests: limit(
                pool.and_then(|p| p.http.as_ref())
                    .and_then(|h| h.max_pending_requests),
            ),
            max_requests: limit(
                pool.and_then(|p| p.http2.as_ref().or(p.grpc.as_ref()))
                    .map(|h| h.max_requests),
            ),
            max_retries: Some(u32v(UNLIMITED)),
            ..Default::default()
        }],
        ..Default::default()
    });
    if matches!(protocol, Some(Protocol::Http2 | Protocol::Grpc)) {
        let options = upstream_http::HttpProtocolOptions {
            upstream_protocol_options: Some(upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                upstream_http::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        core::Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(
                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                &options,
            ),
        );
    }
    if let Some(l) = target {
        if let Some(hc) = &l.health_check {
            let interval = pb_duration(Duration::from_millis(
                u64::try_from(hc.interval_millis).unwrap_or(5000),
            ));
            let checker = match hc.protocol {
                Protocol::Tcp => core::health_check::HealthChecker::TcpHealthCheck(
                    core::health_check::TcpHealthCheck::default(),
                ),
                // The gRPC health checking protocol (grpc.health.v1.Health/Check).
                Protocol::Grpc => core::health_check::HealthChecker::GrpcHealthCheck(
                    core::health_check::GrpcHealthCheck::default(),
                ),
                _ => core::health_check::HealthChecker::HttpHealthCheck(
                    core::health_check::HttpHealthCheck {
                        path: hc.path.clone().unwrap_or_else(|| "/".to_owned()),
                        ..Default::default()
                    },
                ),
            };
            c.health_checks = vec![core::HealthCheck {
                timeout: Some(pb_duration(Duration::from_millis(
                    u64::try_from(hc.timeout_millis).unwrap_or(2000),
                ))),
                interval: Some(interval),
                // Check at the same pace while idle, so a restarted task is seen soon.
                no_traffic_interval: Some(interval),
                unhealthy_threshold: Some(u32v(u32::try_from(hc.unhealthy_threshold).unwrap_or(2))),
                healthy_threshold: Some(u32v(u32::try_from(hc.healthy_threshold).unwrap_or(2))),
                health_checker: Some(checker),
                ..Default::default()
            }];
        }
        if let Some(od) = &l.outlier_detection {
            c.outlier_detection = Some(cluster::OutlierDetection {
                consecutive_5xx: Some(u32v(u32::try_from(od.max_server_errors).unwrap_or(5))),
                interval: Some(pb_duration(od.interval.to_std())),
                base_ejection_time: Some(pb_duration(od.base_ejection_duration.to_std())),
                max_ejection_percent: Some(u32v(
                    u32::try_from(od.max_ejection_percent).unwrap_or(10),
                )),
                enforcing_consecutive_5xx: Some(u32v(100)),
                ..Default::default()
            });
        }
    }
    c
}

fn http_listener(
    name: &str,
    addr: SocketAddr,
    stat_prefix: &str,
    routes: hcm::http_connection_manager::RouteSpecifier,
    logging: Option<&Logging>,
) -> listener::Listener {
    manager_listener(name, addr, &http_manager(stat_prefix, routes, logging))
}

/// An HTTP connection manager as App Mesh sets one up, with the node's access log.
fn http_manager(
    stat_prefix: &str,
    routes: hcm::http_connection_manager::RouteSpecifier,
    logging: Option<&Logging>,
) -> hcm::HttpConnectionManager {
    let access_log = logging
        .and_then(|l| l.access_log.as_ref())
        .and_then(|a| a.file.as_ref())
        .map(|file| {
            use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
            use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
            use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log::AccessLogFormat;
            use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
            let log_format = file.format.as_ref().map(|f| {
                let format = match &f.text {
                    Some(text) => core::substitution_format_string::Format::TextFormatSource(
                        core::DataSource {
                            specifier: Some(core::data_source::Specifier::InlineString(
                                // One line per request, as App Mesh writes it.
                                if text.ends_with('\n') { text.clone() } else { format!("{text}\n") },
                            )),
                            ..Default::default()
                        },
                    ),
                    None => core::substitution_format_string::Format::JsonFormat(Struct {
                        fields: f
                            .json
                            .iter()
                            .map(|j| {
                                (
                                    j.key.clone(),
                                    Value {
                                        kind: Some(Kind::StringValue(j.value.clone())),
                                    },
                                )
                            })
                            .collect(),
                    }),
                };
                AccessLogFormat::LogFormat(core::SubstitutionFormatString {
                    format: Some(format),
                    ..Default::default()
                })
            });
            let config = FileAccessLog {
                path: file.path.clone(),
                access_log_format: log_format,
            };
            vec![accesslog::AccessLog {
                name: "envoy.access_loggers.file".to_owned(),
                config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    &config,
                ))),
                ..Default::default()
            }]
        })
        .unwrap_or_default();
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(routes),
        access_log,
        // As App Mesh sets them on every HTTP connection manager.
        normalize_path: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        merge_slashes: true,
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }],
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener on `addr` whose one filter chain is `manager`.
fn manager_listener(
    name: &str,
    addr: SocketAddr,
    manager: &hcm::HttpConnectionManager,
) -> listener::Listener {
    listener::Listener {
        name: name.to_owned(),
        address: Some(socket_address(addr)),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    manager,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A file Envoy reads, as a data source.
fn file_source(path: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

/// TLS material common to both sides: the certificate to show (when given as files) and the
/// peers to trust, with the names they must carry.
fn common_tls(
    certificate: Option<&meshmodel::appmesh::TlsCertificate>,
    validation: Option<&meshmodel::appmesh::TlsValidation>,
) -> tls::CommonTlsContext {
    let tls_certificates = certificate
        .and_then(|c| c.file.as_ref())
        .map(|f| tls::TlsCertificate {
            certificate_chain: Some(file_source(&f.certificate_chain)),
            private_key: Some(file_source(&f.private_key)),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let validation_context_type = validation.and_then(|v| {
        let trust = v.trust.file.as_ref()?;
        let names = v
            .subject_alternative_names
            .as_ref()
            .map(|n| n.names.exact.as_slice())
            .unwrap_or_default();
        Some(tls::common_tls_context::ValidationContextType::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(file_source(&trust.certificate_chain)),
                match_typed_subject_alt_names: names
                    .iter()
                    .map(|name| tls::SubjectAltNameMatcher {
                        san_type: tls::subject_alt_name_matcher::SanType::Dns as i32,
                        matcher: Some(envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                            match_pattern: Some(
                                envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                                    name.clone(),
                                ),
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ))
    });
    tls::CommonTlsContext {
        tls_certificates,
        validation_context_type,
        ..Default::default()
    }
}

/// Puts a listener's `tls` on its filter chain: STRICT takes TLS only; PERMISSIVE also
/// takes plain connections (a TLS inspector tells them apart); with `validation`, the
/// caller must show a certificate it trusts (mutual TLS). DISABLED changes nothing.
fn listener_tls(l: &mut listener::Listener, tls_config: &meshmodel::appmesh::ListenerTls) {
    let mode = tls_config.mode.as_str();
    if mode == "DISABLED" || l.filter_chains.is_empty() {
        return;
    }
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(common_tls(
            Some(&tls_config.certificate),
            tls_config.validation.as_ref(),
        )),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: tls_config.validation.is_some(),
        }),
        ..Default::default()
    };
    let socket = core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &context,
        ))),
    };
    let mut plain = l.filter_chains[0].clone();
    let secure = &mut l.filter_chains[0];
    secure.transport_socket = Some(socket);
    if mode == "PERMISSIVE" {
        secure.filter_chain_match = Some(listener::FilterChainMatch {
            transport_protocol: "tls".to_owned(),
            ..Default::default()
        });
        plain.filter_chain_match = Some(listener::FilterChainMatch {
            transport_protocol: "raw_buffer".to_owned(),
            ..Default::default()
        });
        l.filter_chains.push(plain);
        l.listener_filters.push(listener::ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_owned(),
            config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
            ))),
            ..Default::default()
        });
    }
}

/// Puts a client policy's TLS on an egress cluster to a node listening on `port`, unless
/// the policy is not enforced or names other ports.
fn cluster_tls(
    c: &mut cluster::Cluster,
    policy: &meshmodel::appmesh::ClientPolicyTls,
    port: Option<i64>,
) {
    if policy.enforce == Some(false)
        || (!policy.ports.is_empty() && !port.is_some_and(|p| policy.ports.contains(&p)))
    {
        return;
    }
    let context = tls::UpstreamTlsContext {
        common_tls_context: Some(common_tls(
            policy.certificate.as_ref(),
            Some(&policy.validation),
        )),
        ..Default::default()
    };
    c.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &context,
        ))),
    });
}

mod gateway;
#[cfg(test)]
mod tests;
