//! The ingress side: a node's listeners, each to its local app (HTTP, gRPC, HTTP/2 or TCP),
//! with their timeouts, outlier detection, connection pools and TLS.

use crate::state::placement::Placement;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use meshmodel::appmesh::{Listener, Protocol, VirtualNodeInput};
use std::net::SocketAddr;

use super::clusters::{Side, Upstream, static_cluster};
use super::http::http_listener;
use super::tcp::{TcpTo, tcp_chain, tcp_idle};
use super::tls_context::listener_tls;
use super::{
    CLUSTER_TYPE, DEFAULT_PER_REQUEST, LISTENER_TYPE, NodeResources, any, cluster_name, ingress_at,
    original_dst_filter, pb_duration, prefix_match, socket_address, transparent, u32v,
};

/// The inbound side of node `node` at `place`: per listener, a cluster to the app on the
/// listener's port (`cds_ingress_M_N_PROTO_PORT`, with the listener's connection pool) and
/// an HTTP connection manager to it, with the listener's TLS and timeout. One listener on
/// the placement's ingress; with several, one Envoy listener whose filter chains are told
/// apart by the original destination port where connections are redirected, else an
/// Envoy listener per node listener ([`ingress_at`]).
pub(super) fn ingress(
    out: &mut NodeResources,
    state: &crate::state::snapshot::MeshState,
    node: &str,
    vn: &VirtualNodeInput,
    place: &Placement,
) {
    let listeners: Vec<Option<&Listener>> = if vn.spec.listeners.is_empty() {
        vec![None]
    } else {
        vn.spec.listeners.iter().map(Some).collect()
    };
    let mesh = &state.mesh;
    let mesh_name = mesh.name().unwrap_or_default();
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
        } else if let Some(how) = super::mesh_tls::mesh_tls(mesh) {
            super::mesh_tls::mesh_listener_tls(&mut ingress, state, mesh_name, node, how);
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
