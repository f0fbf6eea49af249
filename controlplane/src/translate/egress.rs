//! The egress side's listener pieces: the explicit proxy of the loopback mode, the dynamic
//! forward proxy of ALLOW_ALL, protocol sniffing, and what passes through to its original
//! destination.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;

use meshmodel::appmesh::{Protocol, VirtualNodeInput, VirtualServiceBackend};

use super::clusters::{EGRESS_CONNECT_TIMEOUT, PASSTHROUGH};
use super::http::{http_manager, manager_listener};
use super::routes::{Caller, egress_cluster, route_action, translate_route};
use super::tcp::{TcpTo, connect_host, tcp_chain, tcp_idle};
use super::{
    CLUSTER_TYPE, DEFAULT_PER_REQUEST, EgressClusters, LISTENER_TYPE, NodeResources, ROUTE_TYPE,
    ads_source, any, listener_of, original_dst_filter, pb_duration, prefix_match, transparent,
};
use crate::state::placement::Placement;
use crate::state::snapshot::MeshState;

/// The egress connection manager of an app that uses its Envoy as an explicit HTTP proxy:
/// it takes `CONNECT` requests (its routes say which are tunnelled where), and with
/// `forward`, sends requests to the hosts they name (the dynamic forward proxy's filter,
/// before the router).
pub(super) fn explicit_proxy(manager: &mut hcm::HttpConnectionManager, forward: bool) {
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

pub(super) fn forward_proxy_cluster() -> cluster::Cluster {
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
pub(super) fn forward_proxy_host() -> route::VirtualHost {
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
pub(super) fn let_aws_apis_out(egress: &mut listener::Listener, ports: &BTreeSet<i64>) {
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
pub(super) fn pass_other_tcp_through(egress: &mut listener::Listener, ports: &BTreeSet<i64>) {
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

/// The egress side of virtual node `vn` of mesh `mesh_name` placed at `place`: its
/// listener, the route configuration of its backends (by RDS), and their clusters.
pub(super) fn egress(
    out: &mut NodeResources,
    snapshot: &MeshState,
    mesh_name: &str,
    vn: &VirtualNodeInput,
    place: &Placement,
) {
    let listener = listener_of(vn);
    let egress_route_name = format!(
        "rds_egress_{}_{}",
        listener.map_or("http", |l| l.port_mapping.protocol.as_str()),
        listener.map_or(0, |l| l.port_mapping.port)
    );
    let egress_name = format!("lds_egress_{}_{}", place.egress.ip(), place.egress.port());
    let allow_all = snapshot.mesh.mesh.as_ref().is_some_and(|m| {
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

    let mut backends = Backends::default();
    for backend in &vn.spec.backends {
        backends.add(snapshot, mesh_name, vn, &backend.virtual_service);
    }
    let Backends {
        mut virtual_hosts,
        tcp,
        http_ports,
        clusters,
    } = backends;
    if transparent {
        redirected_tcp(&mut egress, tcp, &http_ports, allow_all);
    } else {
        // Without redirection, an app reaches a TCP backend by asking its Envoy (its HTTP
        // proxy) to `CONNECT SERVICE:PORT`; Envoy opens the tunnel to the backend's
        // clusters.
        virtual_hosts.extend(
            tcp.into_iter()
                .map(|b| connect_host(&b.service, b.port, b.to, b.idle)),
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
        virtual_hosts.push(allow_all_host());
    }
    if transparent {
        // Where passed-through connections go (ALLOW_ALL's, and DROP_ALL's to AWS's APIs).
        out.clusters.push((
            PASSTHROUGH.to_owned(),
            any(CLUSTER_TYPE, &passthrough_cluster()),
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
    out.add_egress(clusters);
}

/// A TCP backend: where connections are redirected, a filter chain on its port, told
/// apart by the original destination port (so not on a port that an HTTP backend of this
/// node has too: HTTP keeps it); in the loopback mode, an HTTP CONNECT tunnel.
struct TcpBackend {
    service: String,
    port: i64,
    to: TcpTo,
    idle: Option<Duration>,
}

/// What a node's backends put on its egress side.
#[derive(Default)]
struct Backends {
    virtual_hosts: Vec<route::VirtualHost>,
    tcp: Vec<TcpBackend>,
    /// The ports of the HTTP backends (their TCP namesakes give way).
    http_ports: BTreeSet<i64>,
    clusters: EgressClusters,
}

/// (port, routes) per listener of a backend's provider; one entry with no port when it
/// has no listener.
type ByPort = Vec<(Option<i64>, Vec<route::Route>)>;

impl Backends {
    /// Adds backend `backend` of node `vn`: a virtual host per port of its provider, and
    /// its TCP listeners.
    fn add(
        &mut self,
        snapshot: &MeshState,
        mesh_name: &str,
        vn: &VirtualNodeInput,
        backend: &VirtualServiceBackend,
    ) {
        let mesh = &snapshot.mesh;
        let service_name = &backend.virtual_service_name;
        // TLS to this backend: its own client policy, else the node's backend defaults.
        let policy = backend
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
            return;
        };
        let provider = service.value.spec.provider.as_ref();
        let by_port = if let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) {
            let router = &router.virtual_router_name;
            self.provided_by_router(snapshot, mesh_name, service_name, router, caller)
        } else if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
            let node = &node.virtual_node_name;
            self.provided_by_node(snapshot, mesh_name, service_name, node, caller)
        } else {
            Vec::new()
        };
        self.http_ports
            .extend(by_port.iter().filter_map(|(p, _)| *p));
        // One virtual host per port (`NAME:PORT`); the first also takes the bare name.
        let several = by_port.len() > 1;
        for (k, (port, routes)) in by_port.into_iter().enumerate() {
            let mut domains = Vec::new();
            if k == 0 {
                domains.push(service_name.clone());
            }
            domains.extend(port.map(|p| format!("{service_name}:{p}")));
            self.virtual_hosts.push(route::VirtualHost {
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

    /// A virtual service provided by router `router_name`: its routes per HTTP listener,
    /// and for each tcp listener the first tcpRoute for its port, as a TCP proxy.
    fn provided_by_router(
        &mut self,
        snapshot: &MeshState,
        mesh_name: &str,
        service_name: &str,
        router_name: &str,
        caller: Caller<'_>,
    ) -> ByPort {
        let mesh = &snapshot.mesh;
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
        for (port, _) in listeners.iter().filter(|(_, p)| *p == Protocol::Tcp) {
            let route = mesh.routes_of(router_name).into_iter().find(|r| {
                r.spec.tcp_route.is_some() && r.spec.match_port().is_none_or(|p| p == *port)
            });
            let Some(tcp) = route.and_then(|r| r.spec.tcp_route.as_ref()) else {
                continue;
            };
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
                        &mut self.clusters,
                        None,
                    );
                    (name, u32::try_from(t.weight).unwrap_or(0))
                })
                .filter(|(_, w)| *w > 0)
                .collect();
            self.tcp.push(TcpBackend {
                service: service_name.to_owned(),
                port: *port,
                to: TcpTo::Weighted(weighted),
                idle: tcp
                    .timeout
                    .as_ref()
                    .and_then(|t| t.idle)
                    .map(|d| d.to_std()),
            });
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
        let mut by_port = Vec::new();
        for port in ports {
            let mut routes = Vec::new();
            for r in mesh.routes_of(router_name) {
                // With several listeners, each route serves the one its match names.
                if port.is_some() && r.spec.match_port().is_some_and(|p| Some(p) != port) {
                    continue;
                }
                if let Some(envoy_route) =
                    translate_route(snapshot, mesh_name, r, caller, &mut self.clusters)
                {
                    routes.push(envoy_route);
                }
            }
            by_port.push((port, routes));
        }
        by_port
    }

    /// A virtual service provided by node `target`: every request of each HTTP listener to
    /// its cluster, and each tcp listener as a TCP proxy.
    fn provided_by_node(
        &mut self,
        snapshot: &MeshState,
        mesh_name: &str,
        service_name: &str,
        target: &str,
        caller: Caller<'_>,
    ) -> ByPort {
        let Some(t) = snapshot.mesh.virtual_nodes.get(target) else {
            return Vec::new();
        };
        let listeners = &t.value.spec.listeners;
        for l in listeners {
            if l.port_mapping.protocol == Protocol::Tcp {
                let port = l.port_mapping.port;
                let name = egress_cluster(
                    snapshot,
                    mesh_name,
                    target,
                    Some(port),
                    caller,
                    &mut self.clusters,
                    None,
                );
                self.tcp.push(TcpBackend {
                    service: service_name.to_owned(),
                    port,
                    to: TcpTo::Cluster(name),
                    idle: tcp_idle(l),
                });
            }
        }
        let ports: Vec<Option<i64>> = if listeners.is_empty() {
            vec![None]
        } else {
            listeners
                .iter()
                .filter(|l| l.port_mapping.protocol != Protocol::Tcp)
                .map(|l| Some(l.port_mapping.port))
                .collect()
        };
        ports
            .into_iter()
            .map(|port| {
                let name = egress_cluster(
                    snapshot,
                    mesh_name,
                    target,
                    port,
                    caller,
                    &mut self.clusters,
                    None,
                );
                let routes = vec![route::Route {
                    r#match: Some(prefix_match("/")),
                    action: Some(route::route::Action::Route(route_action(
                        route::route_action::ClusterSpecifier::Cluster(name),
                        None,
                    ))),
                    ..Default::default()
                }];
                (port, routes)
            })
            .collect()
    }
}

/// TCP backends where connections are redirected: a chain per original destination port
/// (not one an HTTP backend has), and what else the egress filter lets through.
fn redirected_tcp(
    egress: &mut listener::Listener,
    tcp: Vec<TcpBackend>,
    http_ports: &BTreeSet<i64>,
    allow_all: bool,
) {
    let mut tcp_ports = BTreeSet::new();
    let chains: Vec<listener::FilterChain> = tcp
        .into_iter()
        .filter(|b| !http_ports.contains(&b.port) && tcp_ports.insert(b.port))
        .map(|b| {
            tcp_chain(
                &format!("egress_tcp_{}", b.port),
                Some(b.port),
                b.to,
                b.idle,
            )
        })
        .collect();
    if allow_all {
        // What is not HTTP (HTTPS, a database's protocol) is passed through as TCP:
        // the HTTP connection manager takes only what the HTTP inspector finds HTTP in.
        pass_other_tcp_through(egress, &tcp_ports);
    } else {
        // DROP_ALL, as App Mesh's: AWS's own APIs stay reachable.
        let_aws_apis_out(egress, &tcp_ports);
    }
    egress.filter_chains.extend(chains);
}

/// ALLOW_ALL's last virtual host: any other destination, to the passthrough cluster.
fn allow_all_host() -> route::VirtualHost {
    route::VirtualHost {
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
    }
}

/// The cluster that sends a redirected connection on to its original destination.
fn passthrough_cluster() -> cluster::Cluster {
    cluster::Cluster {
        name: PASSTHROUGH.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(pb_duration(EGRESS_CONNECT_TIMEOUT)),
        ..Default::default()
    }
}
