//! Routes: an App Mesh route's match, retry policy, timeouts and weighted targets as an Envoy
//! route, and the egress cluster of each target.

use crate::state::snapshot::MeshState;
use envoy_types::pb::envoy::config::route::v3 as route;
use meshmodel::appmesh::{ConnectionPool, HttpRoute, RouteInput};

use super::clusters::{Side, Upstream, static_cluster};
use super::tls_context::cluster_tls;
use super::{
    CLUSTER_TYPE, DEFAULT_PER_REQUEST, DEFAULT_RETRIES, ENDPOINT_TYPE, EgressClusters, any,
    cluster_name, listener_on, pb_duration, u32v,
};

/// How an Envoy calls out: TLS to its backends (a client policy), and the connection
/// limits a virtual gateway's listener sets on every cluster it sends to.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Caller<'a> {
    pub(super) policy: Option<&'a meshmodel::appmesh::ClientPolicyTls>,
    pub(super) pool: Option<&'a ConnectionPool>,
}

pub use crate::state::observed::ROUTE_MARK;

/// Adds (once) the egress cluster for target node `target` on its listener `port` (its
/// first when `None`); returns its name. With `via` (a router and one of its routes), the
/// cluster is that route's own, `NAME~ROUTER~ROUTE`, so that Envoy counts the requests
/// each route sends the node apart.
pub(super) fn egress_cluster(
    snapshot: &MeshState,
    mesh: &str,
    target: &str,
    port: Option<i64>,
    caller: Caller<'_>,
    clusters: &mut EgressClusters,
    via: Option<(&str, &str)>,
) -> String {
    let node = snapshot.mesh.virtual_nodes.get(target).map(|s| &s.value);
    let listener = node.and_then(|n| listener_on(n, port)).map(|(_, l)| l);
    let mut name = cluster_name("egress", mesh, target, listener);
    if let Some((router, route)) = via {
        name = format!("{name}{ROUTE_MARK}{router}{ROUTE_MARK}{route}");
    }
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
        } else if node.is_some()
            && listener.is_none_or(|l| l.tls.is_none())
            && super::mesh_tls::mesh_tls(&snapshot.mesh).is_some()
        {
            // No TLS of the user's on either side: the mesh's own.
            super::mesh_tls::mesh_cluster_tls(&mut c, mesh, target);
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

pub(super) fn translate_route(
    snapshot: &MeshState,
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
    // changes the route configuration, never the clusters under requests in flight. A
    // target another route of the router also sends to gets this route's own cluster.
    let mut weighted = Vec::new();
    for t in &http.action.weighted_targets {
        let via = shared_in_router(snapshot, r, &t.virtual_node)
            .then_some((r.virtual_router_name.as_str(), r.route_name.as_str()));
        let name = egress_cluster(
            snapshot,
            mesh,
            &t.virtual_node,
            t.port,
            caller,
            clusters,
            via,
        );
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

/// Whether another route of `r`'s router also sends to node `target`.
fn shared_in_router(snapshot: &MeshState, r: &RouteInput, target: &str) -> bool {
    snapshot
        .mesh
        .routes_of(&r.virtual_router_name)
        .into_iter()
        .filter(|o| o.route_name != r.route_name)
        .filter_map(|o| o.spec.weighted_targets())
        .any(|(_, targets)| targets.iter().any(|t| t.virtual_node == target))
}

pub(super) fn route_match(http: &HttpRoute) -> route::RouteMatch {
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

pub(super) fn route_action(
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
