//! A virtual gateway's Envoy: Envoy alone, no app, for traffic entering the mesh.
//!
//! For virtual gateway `G` of mesh `M`, per gateway listener (port `P`, protocol `proto`):
//! - listener `lds_ingress_0.0.0.0_P` (TLS from the listener's `tls`), routed by RDS (on
//!   the task's own address instead of 0.0.0.0 where `up` runs it on loopback);
//! - route configuration `rds_ingress_proto_P` with one virtual host for every host, whose
//!   routes are the gateway routes (priority order) of that protocol and port.
//!
//! A gateway route sends to a virtual service. The gateway's Envoy does the service's
//! routing itself, as App Mesh's does: when a virtual router provides the service, each of
//! the router's routes (priority order) becomes one Envoy route that matches what the
//! gateway route matches *and* what the router's route matches on the path as rewritten,
//! and sends to that route's weighted clusters `cds_egress_M_N_proto_port` with its
//! retries and timeouts. After them, a last route for the gateway route answers 404, so a
//! request the gateway route took but none of the service's routes matches is not passed on
//! to a later gateway route.
//!
//! Rewrites, as App Mesh's defaults have them: the matched prefix becomes `/` (or
//! `rewrite.prefix.value`, or stays with `defaultPrefix: DISABLED`), an exact path becomes
//! `rewrite.path.exact`, and the host becomes the virtual service's name (unless
//! `defaultTargetHostname: DISABLED`). gRPC gateway routes keep the path.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use meshmodel::appmesh::{GatewayRouteInput, HttpGatewayRoute};

use super::http::http_listener;
use super::routes::{Caller, egress_cluster, route_action, route_match, translate_route};
use super::tls_context::listener_tls;
use super::{EgressClusters, LISTENER_TYPE, NodeResources, ROUTE_TYPE, ads_source, any};
use crate::state::snapshot::MeshState;

/// How a gateway route changes the path before the target's routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathRewrite {
    Unchanged,
    /// The matched prefix `from` becomes `to`.
    Prefix {
        from: String,
        to: String,
    },
    /// The matched path `from` becomes `to`.
    Exact {
        from: String,
        to: String,
    },
}

impl PathRewrite {
    /// The rewrite of `http` (a gRPC gateway route, as HTTP, keeps its path).
    fn of(http: &HttpGatewayRoute) -> Self {
        if let Some((from, to)) = http.prefix_rewrite() {
            return PathRewrite::Prefix {
                from: from.to_owned(),
                to: to.to_owned(),
            };
        }
        if http.route_match.prefix.is_some() {
            return PathRewrite::Unchanged;
        }
        let exact = http
            .route_match
            .path
            .as_ref()
            .and_then(|p| p.exact.as_ref());
        let to = http
            .action
            .rewrite
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .and_then(|p| p.exact.as_ref());
        match (exact, to) {
            (Some(from), Some(to)) if from != to => PathRewrite::Exact {
                from: from.clone(),
                to: to.clone(),
            },
            _ => PathRewrite::Unchanged,
        }
    }

    /// Envoy's rewrite of the path (the query string is kept).
    fn action(&self) -> Option<matcher::RegexMatchAndSubstitute> {
        let (pattern, substitution) = match self {
            PathRewrite::Unchanged => return None,
            PathRewrite::Prefix { from, to } => {
                (format!("^{}", regex_lite::escape(from)), to.clone())
            }
            PathRewrite::Exact { from, to } => {
                (format!("^{}$", regex_lite::escape(from)), to.clone())
            }
        };
        Some(matcher::RegexMatchAndSubstitute {
            pattern: Some(matcher::RegexMatcher {
                regex: pattern,
                ..Default::default()
            }),
            substitution,
        })
    }
}

/// `:path` must satisfy `pattern` (the whole path, before any query string).
fn path_header(pattern: matcher::string_matcher::MatchPattern) -> route::HeaderMatcher {
    route::HeaderMatcher {
        name: ":path".to_owned(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            matcher::StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn path_regex(regex: String) -> route::HeaderMatcher {
    path_header(matcher::string_matcher::MatchPattern::SafeRegex(
        matcher::RegexMatcher {
            regex: format!("(?:{regex})(?:\\?.*)?"),
            ..Default::default()
        },
    ))
}

/// Whether `path` is matched by a route path specifier (what the router's route asks of the
/// one path an exact rewrite sends).
fn path_matches(spec: &route::route_match::PathSpecifier, path: &str) -> bool {
    use route::route_match::PathSpecifier as P;
    match spec {
        P::Prefix(prefix) => path.starts_with(prefix.as_str()),
        P::Path(exact) => path == exact,
        P::SafeRegex(re) => {
            regex_lite::Regex::new(&format!("^(?:{})$", re.regex)).is_ok_and(|re| re.is_match(path))
        }
        _ => false,
    }
}

/// The match of one Envoy route: the gateway route's `gateway` and the router route's
/// `routed`, whose path conditions hold on the path as `rewrite` leaves it. `None` when
/// no request can satisfy both.
fn both(
    gateway: &route::RouteMatch,
    routed: route::RouteMatch,
    rewrite: &PathRewrite,
) -> Option<route::RouteMatch> {
    use route::route_match::PathSpecifier as P;
    let mut out = gateway.clone();
    out.headers.extend(routed.headers);
    out.query_parameters.extend(routed.query_parameters);
    let Some(spec) = routed.path_specifier else {
        return Some(out);
    };
    match rewrite {
        PathRewrite::Unchanged => match spec {
            P::Prefix(prefix) if prefix == "/" => {}
            P::Prefix(prefix) => {
                out.headers
                    .push(path_header(matcher::string_matcher::MatchPattern::Prefix(
                        prefix,
                    )))
            }
            P::Path(exact) => out.headers.push(path_regex(regex_lite::escape(&exact))),
            P::SafeRegex(re) => out.headers.push(path_regex(re.regex)),
            _ => return None,
        },
        // The router sees `to` + rest where the request has `from` + rest.
        PathRewrite::Prefix { from, to } => match spec {
            P::Prefix(prefix) => {
                if let Some(rest) = prefix.strip_prefix(to.as_str()) {
                    out.path_specifier = Some(P::Prefix(format!("{from}{rest}")));
                } else if !to.starts_with(prefix.as_str()) {
                    return None;
                }
            }
            P::Path(exact) => {
                let rest = exact.strip_prefix(to.as_str())?;
                out.path_specifier = Some(P::Path(format!("{from}{rest}")));
            }
            // `to` + rest matches the regex when rest matches what follows `to` in it (the
            // mesh's checks refuse a regex that does not begin with `to`).
            P::SafeRegex(re) => {
                let rest = meshmodel::mesh::strip_literal_prefix(&re.regex, to)?;
                out.headers.push(path_regex(format!(
                    "{}(?:{rest})",
                    regex_lite::escape(from)
                )));
            }
            _ => return None,
        },
        PathRewrite::Exact { to, .. } => {
            if !path_matches(&spec, to) {
                return None;
            }
        }
    }
    Some(out)
}

/// The Envoy routes of gateway route `gr`: the target service's routes under the gateway
/// route's match, then a 404 for the rest of what it matched.
fn gateway_routes(
    snapshot: &MeshState,
    mesh_name: &str,
    gr: &GatewayRouteInput,
    http: &HttpGatewayRoute,
    caller: Caller<'_>,
    clusters: &mut EgressClusters,
) -> Vec<route::Route> {
    let mesh = &snapshot.mesh;
    let m = &http.route_match;
    let mut matched = route_match(&http.as_route());
    if let Some(host) = &m.hostname {
        // The host, with or without a port, in any case.
        let name = match (&host.exact, &host.suffix) {
            (Some(exact), _) => regex_lite::escape(exact),
            (None, Some(suffix)) => format!(".*{}", regex_lite::escape(suffix)),
            (None, None) => ".*".to_owned(),
        };
        matched.headers.push(route::HeaderMatcher {
            name: ":authority".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher::StringMatcher {
                    match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
                        matcher::RegexMatcher {
                            regex: format!("(?i){name}(?::[0-9]+)?"),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
    }
    let rewrite = PathRewrite::of(http);
    let target = &http.action.target;
    let service = &target.virtual_service.virtual_service_name;
    let host_rewrite = http.rewrites_host();
    let finish = |mut r: route::Route, name: String| {
        if let Some(route::route::Action::Route(action)) = &mut r.action {
            action.regex_rewrite = rewrite.action();
            if host_rewrite {
                action.host_rewrite_specifier = Some(
                    route::route_action::HostRewriteSpecifier::HostRewriteLiteral(service.clone()),
                );
            }
        }
        r.name = name;
        r
    };
    let label = format!("{}/{}", gr.virtual_gateway_name, gr.gateway_route_name);
    let mut out = Vec::new();
    let provider = mesh
        .virtual_services
        .get(service)
        .and_then(|s| s.value.spec.provider.as_ref());
    if let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) {
        for r in mesh.routes_of(&router.virtual_router_name) {
            let port = r.spec.match_port();
            if port.is_some() && target.port.is_some() && port != target.port {
                continue;
            }
            let Some(mut envoy_route) = translate_route(snapshot, mesh_name, r, caller, clusters)
            else {
                continue;
            };
            let Some(routed) = envoy_route.r#match.take() else {
                continue;
            };
            let Some(combined) = both(&matched, routed, &rewrite) else {
                continue;
            };
            envoy_route.r#match = Some(combined);
            let name = format!("{label} -> {}/{}", r.virtual_router_name, r.route_name);
            out.push(finish(envoy_route, name));
        }
    } else if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
        let cluster = egress_cluster(
            snapshot,
            mesh_name,
            &node.virtual_node_name,
            target.port,
            caller,
            clusters,
            None,
        );
        let envoy_route = route::Route {
            r#match: Some(matched.clone()),
            action: Some(route::route::Action::Route(route_action(
                route::route_action::ClusterSpecifier::Cluster(cluster),
                None,
            ))),
            ..Default::default()
        };
        out.push(finish(
            envoy_route,
            format!("{label} -> {}", node.virtual_node_name),
        ));
    }
    out.push(route::Route {
        name: format!("{label} (no route of {service} matches)"),
        r#match: Some(matched),
        action: Some(route::route::Action::DirectResponse(
            route::DirectResponseAction {
                status: 404,
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    out
}

/// The Envoy resources of virtual gateway `gateway`, or `None` when the snapshot has none.
pub(super) fn for_gateway(snapshot: &MeshState, gateway: &str) -> Option<NodeResources> {
    let mesh = &snapshot.mesh;
    let mesh_name = mesh.name()?;
    let gw = &mesh.virtual_gateways.get(gateway)?.value;
    let policy = gw
        .spec
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref())
        .and_then(|p| p.tls.as_ref());
    let place = snapshot
        .placements
        .get(&format!("{}{gateway}", super::GATEWAY_PREFIX));
    let mut out = NodeResources::default();
    let mut clusters = EgressClusters::default();
    for l in &gw.spec.listeners {
        let port = u16::try_from(l.port_mapping.port).unwrap_or(0);
        let protocol = l.port_mapping.protocol;
        let caller = Caller {
            policy,
            pool: l.connection_pool.as_ref(),
        };
        let route_name = format!("rds_ingress_{}_{port}", protocol.as_str());
        // On every address (as on ECS), or on the address of the task `up` placed it in.
        let ip = place.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.ingress.ip());
        let addr = SocketAddr::new(ip, port);
        let listener_name = format!("lds_ingress_{}_{}", addr.ip(), port);
        let mut listener = http_listener(
            &listener_name,
            addr,
            "ingress",
            hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                config_source: Some(ads_source()),
                route_config_name: route_name.clone(),
            }),
            gw.spec.logging.as_ref(),
        );
        if let Some(tls) = &l.tls {
            listener_tls(&mut listener, tls);
        }
        out.listeners
            .push((listener_name, any(LISTENER_TYPE, &listener)));
        let mut routes = Vec::new();
        for gr in mesh.gateway_routes_of(gateway) {
            let Some((_, kind, http)) = gr.spec.as_http() else {
                continue;
            };
            let on_port = http
                .route_match
                .port
                .is_none_or(|p| p == l.port_mapping.port);
            if kind == protocol && on_port {
                routes.extend(gateway_routes(
                    snapshot,
                    mesh_name,
                    gr,
                    &http,
                    caller,
                    &mut clusters,
                ));
            }
        }
        let config = route::RouteConfiguration {
            name: route_name.clone(),
            virtual_hosts: vec![route::VirtualHost {
                name: format!("{gateway}_{}_{port}", protocol.as_str()),
                domains: vec!["*".to_owned()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        };
        out.routes.push((route_name, any(ROUTE_TYPE, &config)));
    }
    out.add_egress(clusters);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use route::route_match::PathSpecifier as P;

    fn at(spec: P) -> route::RouteMatch {
        route::RouteMatch {
            path_specifier: Some(spec),
            ..Default::default()
        }
    }

    fn prefix(from: &str, to: &str) -> PathRewrite {
        PathRewrite::Prefix {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    #[test]
    fn a_router_prefix_is_moved_back_across_a_prefix_rewrite() {
        let gateway = at(P::Prefix("/shop/".into()));
        // The router sees `/` + rest: its `/api/` is the request's `/shop/api/`.
        let m = both(
            &gateway,
            at(P::Prefix("/api/".into())),
            &prefix("/shop/", "/"),
        )
        .expect("satisfiable");
        assert_eq!(m.path_specifier, Some(P::Prefix("/shop/api/".into())));
        // Its `/` is everything the gateway route took.
        let m =
            both(&gateway, at(P::Prefix("/".into())), &prefix("/shop/", "/")).expect("satisfiable");
        assert_eq!(m.path_specifier, Some(P::Prefix("/shop/".into())));
        // An exact path likewise; one the rewrite can never produce matches nothing.
        let m = both(
            &gateway,
            at(P::Path("/v2/x".into())),
            &prefix("/shop/", "/v2/"),
        )
        .expect("satisfiable");
        assert_eq!(m.path_specifier, Some(P::Path("/shop/x".into())));
        assert!(
            both(
                &gateway,
                at(P::Path("/v1/x".into())),
                &prefix("/shop/", "/v2/")
            )
            .is_none()
        );
        // A regex that begins with the rewritten prefix moves across as the rest of it.
        let m = both(
            &gateway,
            at(P::SafeRegex(matcher::RegexMatcher {
                regex: "/api/v[0-9]+/.*".into(),
                ..Default::default()
            })),
            &prefix("/shop/", "/"),
        )
        .expect("satisfiable");
        assert_eq!(m.path_specifier, Some(P::Prefix("/shop/".into())));
        let Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(s)) =
            &m.headers[0].header_match_specifier
        else {
            panic!("no :path condition: {m:?}")
        };
        let Some(matcher::string_matcher::MatchPattern::SafeRegex(re)) = &s.match_pattern else {
            panic!("not a regex: {s:?}")
        };
        assert_eq!(re.regex, "(?:/shop/(?:api/v[0-9]+/.*))(?:\\?.*)?");
        let full = regex_lite::Regex::new(&format!("^{}$", re.regex)).expect("compiles");
        assert!(full.is_match("/shop/api/v2/x?q=1"));
        assert!(!full.is_match("/shop/api/vx/x"));
    }

    #[test]
    fn an_exact_rewrite_decides_the_router_path_once_and_headers_add_up() {
        let gateway = at(P::Path("/old".into()));
        let rewrite = PathRewrite::Exact {
            from: "/old".into(),
            to: "/new/page".into(),
        };
        let mut routed = at(P::SafeRegex(matcher::RegexMatcher {
            regex: "/new/[a-z]+".into(),
            ..Default::default()
        }));
        routed.headers.push(route::HeaderMatcher {
            name: "x-canary".into(),
            ..Default::default()
        });
        let m = both(&gateway, routed, &rewrite).expect("the regex matches /new/page");
        assert_eq!(m.path_specifier, Some(P::Path("/old".into())));
        assert_eq!(m.headers.len(), 1);
        assert!(both(&gateway, at(P::Prefix("/other".into())), &rewrite).is_none());
        // Unchanged paths: the router's path becomes a `:path` condition.
        let m = both(
            &at(P::Prefix("/".into())),
            at(P::Path("/a.b".into())),
            &PathRewrite::Unchanged,
        )
        .expect("satisfiable");
        let Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(s)) =
            &m.headers[0].header_match_specifier
        else {
            panic!("no :path condition: {m:?}")
        };
        assert_eq!(
            s.match_pattern,
            Some(matcher::string_matcher::MatchPattern::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(?:/a\\.b)(?:\\?.*)?".into(),
                    ..Default::default()
                }
            ))
        );
    }

    #[test]
    fn rewrites_are_app_mesh_defaults_unless_told() {
        let route: GatewayRouteInput = serde_json::from_value(serde_json::json!({
            "meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "r",
            "spec": {"httpRoute": {"match": {"prefix": "/shop/"},
                "action": {"target": {"virtualService": {"virtualServiceName": "s"}}}}}
        }))
        .expect("a gateway route");
        let http = route.spec.as_http().expect("http").2;
        assert_eq!(PathRewrite::of(&http), prefix("/shop/", "/"));
        let action = PathRewrite::of(&http).action().expect("a rewrite");
        assert_eq!(action.pattern.expect("pattern").regex, "^/shop/");
        assert_eq!(action.substitution, "/");
        let mut disabled = http.clone();
        disabled.action.rewrite = Some(meshmodel::appmesh::HttpGatewayRouteRewrite {
            prefix: Some(meshmodel::appmesh::HttpGatewayRoutePrefixRewrite {
                default_prefix: Some("DISABLED".into()),
                value: None,
            }),
            ..Default::default()
        });
        assert_eq!(PathRewrite::of(&disabled), PathRewrite::Unchanged);
    }
}
