//! Virtual gateways and their gateway routes.

use crate::appmesh::{GatewayRouteInput, HttpGatewayRoute, Protocol, VirtualGatewayInput};
use crate::problem::{Problem, join};
use std::collections::BTreeSet;

use crate::mesh::check::logging::check_logging;
use crate::mesh::check::node::{check_grpc_health, check_health_check};
use crate::mesh::check::route::check_http_route;
use crate::mesh::check::tls::{check_client_policy, check_listener_tls};
use crate::mesh::check::{check_name, known, one_kind, parent, range};
use crate::mesh::{Mesh, limits, strip_literal_prefix};

impl Mesh {
    pub(crate) fn check_gateway_route(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        route: &GatewayRouteInput,
    ) {
        check_name(p, origin, "gatewayRouteName", &route.gateway_route_name);
        let Some(gateway) = parent(
            p,
            origin,
            ("virtualGatewayName", "virtual gateway"),
            &route.virtual_gateway_name,
            &self.virtual_gateways,
        ) else {
            return;
        };
        let spec = &route.spec;
        let kinds = [
            ("httpRoute", spec.http_route.is_some()),
            ("http2Route", spec.http2_route.is_some()),
            ("grpcRoute", spec.grpc_route.is_some()),
        ];
        if !one_kind(p, origin, spec.priority, &kinds) {
            return;
        }
        let Some((base, protocol, http)) = spec.as_http() else {
            return;
        };
        let gateway = &gateway.value;
        check_gateway_listener(p, origin, route, gateway, base, protocol, &http);
        check_gateway_match(p, origin, route, base, &http);
        check_gateway_rewrite(p, origin, route, base, &http);
        self.check_rewrite_of_regexes(p, origin, base, &http);
        self.check_gateway_target(p, origin, base, &http);
    }

    /// A prefix rewrite before the target router's regex path matches: the regex must begin
    /// with the rewritten prefix as plain text.
    fn check_rewrite_of_regexes(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        base: &str,
        http: &HttpGatewayRoute,
    ) {
        let service = &http.action.target.virtual_service.virtual_service_name;
        // A router's regex on the path cannot be carried across a prefix rewrite (the
        // gateway's Envoy matches both at once, on the path as it arrives).
        // The prefix the target's routes see in place of the matched one, when it changes.
        let rewritten_to = http.prefix_rewrite().map(|(_, to)| to);
        let router = self
            .virtual_services
            .get(service)
            .and_then(|s| s.value.spec.provider.as_ref())
            .and_then(|p| p.virtual_router.as_ref());
        if let (Some(to), Some(router)) = (rewritten_to, router) {
            for r in self.routes_of(&router.virtual_router_name) {
                let regex = r
                    .spec
                    .http_route
                    .as_ref()
                    .or(r.spec.http2_route.as_ref())
                    .and_then(|h| h.route_match.path.as_ref())
                    .and_then(|p| p.regex.as_ref());
                if regex.is_some_and(|re| strip_literal_prefix(re, to).is_none()) {
                    p.push(Problem::new(
                        origin,
                        format!("{base}.action.rewrite.prefix"),
                        format!(
                            "route `{}` of virtual router `{}` matches a regex path that does not begin with `{to}` as plain text, so it cannot be matched on the path before this gateway route rewrites it (not supported here); set rewrite.prefix.defaultPrefix to DISABLED, or begin the regex with `{to}`",
                            r.route_name, r.virtual_router_name
                        ),
                    ));
                }
            }
        }
    }

    /// The target: a virtual service that exists, on a port its provider listens on.
    fn check_gateway_target(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        base: &str,
        http: &HttpGatewayRoute,
    ) {
        let target = &http.action.target;
        let service = &target.virtual_service.virtual_service_name;
        let at = format!("{base}.action.target");
        if !self.virtual_services.contains_key(service) {
            p.push(Problem::new(
                origin,
                format!("{at}.virtualService.virtualServiceName"),
                format!(
                    "virtual service `{service}` does not exist (known: {})",
                    known(self.virtual_services.keys())
                ),
            ));
        } else {
            let ports = self.service_ports(service);
            if let Some(port) = target.port {
                if !ports.contains(&port) {
                    p.push(Problem::new(
                        origin,
                        format!("{at}.port"),
                        format!(
                            "{port} is not a listener port of virtual service `{service}`'s provider ({})",
                            ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            } else if ports.len() > 1 {
                p.push(Problem::new(
                    origin,
                    format!("{at}.port"),
                    format!(
                        "virtual service `{service}`'s provider has several listeners; say which port"
                    ),
                ));
            }
        }
    }
}

/// The gateway has a listener of the route's protocol (and port, when it names one).
fn check_gateway_listener(
    p: &mut Vec<Problem>,
    origin: &str,
    route: &GatewayRouteInput,
    gateway: &VirtualGatewayInput,
    base: &str,
    protocol: Protocol,
    http: &HttpGatewayRoute,
) {
    // The listeners it can serve: those of its protocol (and port, when it names one).
    let listeners = &gateway.spec.listeners;
    let port = http.route_match.port;
    let serves = listeners.iter().any(|l| {
        l.port_mapping.protocol == protocol && port.is_none_or(|p| p == l.port_mapping.port)
    });
    if !serves {
        let have: Vec<String> = listeners
            .iter()
            .map(|l| l.port_mapping.to_string())
            .collect();
        p.push(Problem::new(
            origin,
            if port.is_some() {
                format!("{base}.match.port")
            } else {
                base.to_owned()
            },
            format!(
                "virtual gateway `{}` has no {} listener{} (it has: {})",
                route.virtual_gateway_name,
                protocol.as_str(),
                port.map(|p| format!(" on port {p}")).unwrap_or_default(),
                have.join(", ")
            ),
        ));
    }
}

/// The match: what it needs, what it cannot have together, its common parts as a route's.
fn check_gateway_match(
    p: &mut Vec<Problem>,
    origin: &str,
    route: &GatewayRouteInput,
    base: &str,
    http: &HttpGatewayRoute,
) {
    let spec = &route.spec;
    let m = &http.route_match;
    if let Some(grpc) = &spec.grpc_route {
        if grpc
            .route_match
            .service_name
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.contains('/'))
        {
            p.push(Problem::new(
                origin,
                "spec.grpcRoute.match.serviceName",
                "must be a name without `/`",
            ));
        }
    } else if m.prefix.is_none() && m.path.is_none() && m.hostname.is_none() && m.port.is_none() {
        // A match of only a port (a gateway with several listeners) takes every path of
        // that listener, as App Mesh took it.
        p.push(Problem::new(
            origin,
            format!("{base}.match"),
            "give a prefix (like \"/\"), a path, a hostname or a port to match",
        ));
    }
    if m.prefix.is_some() && m.path.is_some() {
        p.push(Problem::new(
            origin,
            format!("{base}.match"),
            "give a prefix or a path, not both",
        ));
    }
    if let Some(h) = &m.hostname {
        if h.exact.is_some() == h.suffix.is_some() {
            p.push(Problem::new(
                origin,
                format!("{base}.match.hostname"),
                "give exactly one of exact and suffix",
            ));
        }
    }
    // The match's common parts are checked as a route's are.
    check_http_route(p, origin, base, &http.as_route());
}

/// The rewrites: of the prefix and path (HTTP), of the hostname (every protocol).
fn check_gateway_rewrite(
    p: &mut Vec<Problem>,
    origin: &str,
    route: &GatewayRouteInput,
    base: &str,
    http: &HttpGatewayRoute,
) {
    let spec = &route.spec;
    let m = &http.route_match;
    let rewrite = if spec.grpc_route.is_some() {
        None
    } else {
        http.action.rewrite.as_ref()
    };
    if let Some(rw) = rewrite {
        let at = format!("{base}.action.rewrite");
        if let Some(prefix) = &rw.prefix {
            if m.prefix.is_none() {
                p.push(Problem::new(
                    origin,
                    format!("{at}.prefix"),
                    "a prefix rewrite needs a match on a prefix",
                ));
            }
            match (&prefix.default_prefix, &prefix.value) {
                (Some(_), Some(_)) | (None, None) => p.push(Problem::new(
                    origin,
                    format!("{at}.prefix"),
                    "give exactly one of defaultPrefix and value",
                )),
                (Some(d), None) if d != "ENABLED" && d != "DISABLED" => {
                    p.push(Problem::new(
                        origin,
                        format!("{at}.prefix.defaultPrefix"),
                        format!("`{d}` is not ENABLED or DISABLED"),
                    ));
                }
                (None, Some(v)) if !v.starts_with('/') => {
                    p.push(Problem::new(
                        origin,
                        format!("{at}.prefix.value"),
                        format!("`{v}` must start with /"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(path) = &rw.path {
            if m.path.as_ref().and_then(|p| p.exact.as_ref()).is_none() {
                p.push(Problem::new(
                    origin,
                    format!("{at}.path"),
                    "a path rewrite needs a match on an exact path",
                ));
            }
            if !path.exact.as_ref().is_some_and(|e| e.starts_with('/')) {
                p.push(Problem::new(
                    origin,
                    format!("{at}.path.exact"),
                    "give the path to send, starting with /",
                ));
            }
        }
    }
    let host_rewrite = if let Some(g) = &spec.grpc_route {
        g.action.rewrite.as_ref().and_then(|r| r.hostname.as_ref())
    } else {
        rewrite.and_then(|r| r.hostname.as_ref())
    };
    if let Some(d) = host_rewrite.and_then(|h| h.default_target_hostname.as_ref()) {
        if d != "ENABLED" && d != "DISABLED" {
            p.push(Problem::new(
                origin,
                format!("{base}.action.rewrite.hostname.defaultTargetHostname"),
                format!("`{d}` is not ENABLED or DISABLED"),
            ));
        }
    }
}

pub(crate) fn check_virtual_gateway(
    p: &mut Vec<Problem>,
    origin: &str,
    gateway: &VirtualGatewayInput,
) {
    check_name(
        p,
        origin,
        "virtualGatewayName",
        &gateway.virtual_gateway_name,
    );
    if let Some(logging) = &gateway.spec.logging {
        check_logging(p, origin, "spec.logging", logging);
    }
    let listeners = &gateway.spec.listeners;
    if listeners.is_empty() {
        p.push(Problem::new(
            origin,
            "spec.listeners",
            "a virtual gateway needs a listener",
        ));
    }
    let mut ports = BTreeSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let pm = &l.port_mapping;
        range(
            p,
            origin,
            &format!("{at}.portMapping.port"),
            pm.port,
            limits::PORT,
        );
        if !ports.insert(pm.port) {
            p.push(Problem::new(
                origin,
                format!("{at}.portMapping.port"),
                format!("port {} has another listener already", pm.port),
            ));
        }
        if pm.protocol == Protocol::Tcp {
            p.push(Problem::new(
                origin,
                format!("{at}.portMapping.protocol"),
                "a virtual gateway listener is http, http2 or grpc",
            ));
        }
        if let Some(hc) = &l.health_check {
            check_health_check(p, origin, &join(&at, "healthCheck"), hc);
            check_grpc_health(p, origin, &at, hc, pm.protocol);
        }
        if l.connection_pool.as_ref().is_some_and(|c| c.tcp.is_some()) {
            p.push(Problem::new(
                origin,
                format!("{at}.connectionPool.tcp"),
                "a virtual gateway listener has no tcp connection pool (http, http2 or grpc)",
            ));
        }
        if let Some(tls) = &l.tls {
            check_listener_tls(p, origin, &join(&at, "tls"), tls);
        }
    }
    if let Some(policy) = gateway
        .spec
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref())
    {
        check_client_policy(p, origin, "spec.backendDefaults.clientPolicy", policy);
    }
}
