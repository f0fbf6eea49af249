//! TCP backends: a TCP proxy filter chain (where connections are redirected) or an HTTP
//! CONNECT virtual host (where the app uses its Envoy as a proxy), to weighted clusters.

use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use meshmodel::appmesh::Listener;
use std::time::Duration;

use super::{any, pb_duration, u32v};

/// A tcp listener's idle timeout.
pub(super) fn tcp_idle(l: &Listener) -> Option<Duration> {
    l.timeout
        .as_ref()
        .and_then(|t| t.tcp.as_ref())
        .and_then(|t| t.idle)
        .map(meshmodel::appmesh::Duration::to_std)
}

/// Where a TCP proxy sends a connection.
#[derive(Debug, Clone)]
pub(super) enum TcpTo {
    Cluster(String),
    /// (cluster, weight), weights above 0.
    Weighted(Vec<(String, u32)>),
}

/// A filter chain that passes each TCP connection (on original destination `port`, when
/// given) to its cluster, closing it after `idle` without bytes (Envoy's default, 1 hour,
/// when `None`).
pub(super) fn tcp_chain(
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

/// The virtual host `SERVICE:PORT` that tunnels a `CONNECT` for it to `to` (a TCP
/// backend in the loopback mode), closed after `idle` without bytes.
pub(super) fn connect_host(
    service: &str,
    port: i64,
    to: TcpTo,
    idle: Option<Duration>,
) -> route::VirtualHost {
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
