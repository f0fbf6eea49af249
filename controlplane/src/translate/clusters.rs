//! Clusters: the static (or EDS) cluster of a node's listener, as an egress target or as the
//! ingress side's local app.

use crate::state::snapshot::MeshState;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use meshmodel::appmesh::{ConnectionPool, Listener, Protocol};
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    UNLIMITED, ads_source, any, ingress_at, listener_on, pb_duration, socket_address, transparent,
    u32v,
};

/// Where a cluster sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Upstream {
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
    pub(super) fn of(snapshot: &MeshState, node: &str, port: Option<i64>) -> Self {
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
pub(super) enum Side<'a> {
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

pub(super) const EGRESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The cluster `name` of `upstream`, speaking `protocol`, on `side` of its node: its
/// endpoints (static, EDS or DNS), connection limits, HTTP/2 when the listener speaks it,
/// and for a caller's egress cluster the target listener's health check and outlier
/// detection.
pub(super) fn static_cluster(
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
    let (discovery, addresses) = discovery(upstream);
    let mut c = cluster::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            discovery as i32,
        )),
        connect_timeout: Some(pb_duration(connect_timeout)),
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: lb_endpoints(addresses, target),
                ..Default::default()
            }],
            ..Default::default()
        }),
        circuit_breakers: Some(circuit_breakers(pool)),
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
    if matches!(protocol, Some(Protocol::Http2 | Protocol::Grpc)) {
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(
                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                &http2_upstream(),
            ),
        );
    }
    if let Some(l) = target {
        if let Some(hc) = &l.health_check {
            c.health_checks = vec![health_check(hc)];
        }
        if let Some(od) = &l.outlier_detection {
            c.outlier_detection = Some(outlier_detection(od));
        }
    }
    c
}

/// How a cluster of `upstream` finds its endpoints, and their addresses.
fn discovery(upstream: Upstream) -> (cluster::cluster::DiscoveryType, Vec<core::Address>) {
    match upstream {
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
    }
}

/// The endpoints at `addresses`; a health check of `target` on another port than the
/// listener's checks each endpoint there.
fn lb_endpoints(
    addresses: Vec<core::Address>,
    target: Option<&Listener>,
) -> Vec<endpoint::LbEndpoint> {
    let health_check_config = target
        .and_then(|l| l.health_check.as_ref())
        .and_then(|hc| hc.port)
        .and_then(|p| u32::try_from(p).ok())
        .map(|port_value| endpoint::endpoint::HealthCheckConfig {
            port_value,
            ..Default::default()
        });
    addresses
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
        .collect()
}

/// A connection pool's limits (unlimited where it sets none, as App Mesh leaves them).
fn circuit_breakers(pool: Option<&ConnectionPool>) -> cluster::CircuitBreakers {
    let limit = |v: Option<i64>| {
        Some(u32v(
            v.and_then(|v| u32::try_from(v).ok()).unwrap_or(UNLIMITED),
        ))
    };
    cluster::CircuitBreakers {
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
    }
}

/// HTTP/2 to the upstream (an `http2` or `grpc` listener).
fn http2_upstream() -> upstream_http::HttpProtocolOptions {
    upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            upstream_http::http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    core::Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    }
}

/// A listener's health check as Envoy's active health check.
fn health_check(hc: &meshmodel::appmesh::HealthCheckPolicy) -> core::HealthCheck {
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
    core::HealthCheck {
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
    }
}

/// A listener's outlier detection (ejection on consecutive 5xx).
fn outlier_detection(od: &meshmodel::appmesh::OutlierDetection) -> cluster::OutlierDetection {
    cluster::OutlierDetection {
        consecutive_5xx: Some(u32v(u32::try_from(od.max_server_errors).unwrap_or(5))),
        interval: Some(pb_duration(od.interval.to_std())),
        base_ejection_time: Some(pb_duration(od.base_ejection_duration.to_std())),
        max_ejection_percent: Some(u32v(u32::try_from(od.max_ejection_percent).unwrap_or(10))),
        enforcing_consecutive_5xx: Some(u32v(100)),
        ..Default::default()
    }
}
