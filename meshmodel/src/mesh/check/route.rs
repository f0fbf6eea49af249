//! Routes: their matches, weighted targets, retry policies and timeouts, by protocol.

use crate::appmesh::{HttpRetryPolicy, HttpRoute, RouteInput, VirtualRouterInput, WeightedTarget};
use crate::problem::{Problem, join};
use std::collections::BTreeSet;

use crate::mesh::check::{check_name, check_regex, known, one_kind, parent, range};
use crate::mesh::{Mesh, limits};

impl Mesh {
    pub(crate) fn check_route(&self, p: &mut Vec<Problem>, origin: &str, route: &RouteInput) {
        check_name(p, origin, "routeName", &route.route_name);
        let Some(router) = parent(
            p,
            origin,
            ("virtualRouterName", "virtual router"),
            &route.virtual_router_name,
            &self.virtual_routers,
        ) else {
            return;
        };
        let spec = &route.spec;
        let kinds = [
            ("httpRoute", spec.http_route.is_some()),
            ("http2Route", spec.http2_route.is_some()),
            ("grpcRoute", spec.grpc_route.is_some()),
            ("tcpRoute", spec.tcp_route.is_some()),
        ];
        if !one_kind(p, origin, spec.priority, &kinds) {
            return;
        }
        check_route_listeners(p, origin, route, &router.value);
        if let Some((path, targets)) = spec.weighted_targets() {
            self.check_targets(p, origin, path, targets);
        }
        check_matched_port(p, origin, route, &router.value);
        check_route_kinds(p, origin, route);
    }

    pub(crate) fn check_targets(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        path: &str,
        targets: &[WeightedTarget],
    ) {
        let (lo, hi) = limits::TARGETS;
        if targets.len() < lo || targets.len() > hi {
            p.push(Problem::new(
                origin,
                path,
                format!(
                    "{} targets given; a route takes {lo} to {hi}",
                    targets.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, t) in targets.iter().enumerate() {
            let at = format!("{path}[{i}]");
            range(p, origin, &join(&at, "weight"), t.weight, limits::WEIGHT);
            if let Some(port) = t.port {
                range(p, origin, &join(&at, "port"), port, limits::PORT);
            }
            if !seen.insert((&t.virtual_node, t.port)) {
                p.push(Problem::new(
                    origin,
                    join(&at, "virtualNode"),
                    format!("virtual node `{}` is a target twice", t.virtual_node),
                ));
            } else if let Some(node) = self.virtual_nodes.get(&t.virtual_node) {
                let ports: Vec<i64> = node
                    .value
                    .spec
                    .listeners
                    .iter()
                    .map(|l| l.port_mapping.port)
                    .collect();
                match t.port {
                    Some(port) if !ports.contains(&port) => p.push(Problem::new(
                        origin,
                        join(&at, "port"),
                        format!(
                            "{port} is not a listener port of virtual node `{}` ({})",
                            t.virtual_node,
                            ports
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                    None if ports.len() > 1 => p.push(Problem::new(
                        origin,
                        join(&at, "port"),
                        format!(
                            "virtual node `{}` has several listeners; say which port",
                            t.virtual_node
                        ),
                    )),
                    _ => {}
                }
            } else {
                p.push(Problem::new(
                    origin,
                    join(&at, "virtualNode"),
                    format!(
                        "virtual node `{}` does not exist (known: {})",
                        t.virtual_node,
                        known(self.virtual_nodes.keys())
                    ),
                ));
            }
        }
        if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
            p.push(Problem::new(
                origin,
                path,
                "every weight is 0, so no target would get traffic; give at least one a weight above 0",
            ));
        }
    }
}

pub(crate) fn check_http_route(p: &mut Vec<Problem>, origin: &str, base: &str, route: &HttpRoute) {
    let m = &route.route_match;
    let at = join(base, "match");
    match (&m.prefix, &m.path) {
        // A match on the port (or anything else) alone matches every path, as App Mesh has it.
        (None, None) if m.port.is_none() => p.push(Problem::new(
            origin,
            &at,
            "give a prefix (like \"/\"), a path or a port to match",
        )),
        (Some(prefix), _) if !prefix.starts_with('/') => {
            p.push(Problem::new(
                origin,
                join(&at, "prefix"),
                format!("`{prefix}` must start with /"),
            ));
        }
        _ => {}
    }
    if let Some(path) = &m.path {
        if path.exact.is_some() == path.regex.is_some() {
            p.push(Problem::new(
                origin,
                join(&at, "path"),
                "give exactly one of exact and regex",
            ));
        }
        if let Some(re) = &path.regex {
            check_regex(p, origin, &join(&at, "path.regex"), re);
        }
    }
    if let Some(port) = m.port {
        if !(1..=65535).contains(&port) {
            p.push(Problem::new(
                origin,
                join(&at, "port"),
                format!("{port} is not a port (1-65535)"),
            ));
        }
    }
    if let Some(scheme) = &m.scheme {
        if scheme != "http" && scheme != "https" {
            p.push(Problem::new(
                origin,
                join(&at, "scheme"),
                format!("`{scheme}` is not http or https"),
            ));
        }
    }
    if let Some(method) = &m.method {
        const METHODS: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        if !METHODS.contains(&method.as_str()) {
            p.push(Problem::new(
                origin,
                join(&at, "method"),
                format!("`{method}` is not one of {}", METHODS.join(", ")),
            ));
        }
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        if q.name.is_empty() {
            p.push(Problem::new(
                origin,
                format!("{at}.queryParameters[{i}].name"),
                "must not be empty (Envoy matches a parameter by its name)",
            ));
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        check_header_name(p, origin, &format!("{at}.headers[{i}].name"), &h.name);
        if let Some(hm) = &h.header_match {
            for (field, value) in [
                ("exact", &hm.exact),
                ("prefix", &hm.prefix),
                ("suffix", &hm.suffix),
            ] {
                if let Some(v) = value {
                    check_header_value(p, origin, &format!("{at}.headers[{i}].match.{field}"), v);
                }
            }
            let given = [
                hm.exact.is_some(),
                hm.prefix.is_some(),
                hm.suffix.is_some(),
                hm.regex.is_some(),
                hm.range.is_some(),
            ];
            if let Some(re) = &hm.regex {
                check_regex(p, origin, &format!("{at}.headers[{i}].match.regex"), re);
            }
            if given.iter().filter(|g| **g).count() != 1 {
                p.push(Problem::new(
                    origin,
                    format!("{at}.headers[{i}].match"),
                    "give exactly one of exact, prefix, suffix, regex and range",
                ));
            }
        }
    }
    if let Some(retry) = &route.retry_policy {
        check_retry(p, origin, &join(base, "retryPolicy"), retry);
    }
    if let Some(timeout) = &route.timeout {
        for (field, d) in [("perRequest", timeout.per_request), ("idle", timeout.idle)] {
            if d.is_some_and(|d| d.value < 0) {
                p.push(Problem::new(
                    origin,
                    format!("{base}.timeout.{field}.value"),
                    "must not be negative",
                ));
            }
        }
    }
}

/// App Mesh's longest header name.
const HEADER_NAME_MAX: usize = 50;

/// A header name as App Mesh takes it (1 to 50 characters) and as Envoy takes it (an HTTP
/// token: letters, digits and ``!#$%&'*+-.^_`|~``, lower or upper case), so that no
/// route the API accepts is refused by the Envoys it reaches.
pub(crate) fn check_header_name(p: &mut Vec<Problem>, origin: &str, at: &str, name: &str) {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.chars().count() > HEADER_NAME_MAX {
        p.push(Problem::new(
            origin,
            at,
            format!("a header name is 1 to {HEADER_NAME_MAX} characters"),
        ));
    } else if let Some(bad) = name.chars().find(|c| !token(*c)) {
        p.push(Problem::new(
            origin,
            at,
            format!(
                "{bad:?} is not allowed in a header name (letters, digits and !#$%&'*+-.^_`|~ are)"
            ),
        ));
    }
}

/// App Mesh's longest string to match a header with.
const HEADER_MATCH_MAX: usize = 255;

/// A header value to match: 1 to 255 characters as App Mesh takes it (Envoy refuses an
/// empty prefix or suffix), with no NUL, carriage return or line feed (Envoy refuses them).
pub(crate) fn check_header_value(p: &mut Vec<Problem>, origin: &str, at: &str, value: &str) {
    if value.is_empty() || value.chars().count() > HEADER_MATCH_MAX {
        p.push(Problem::new(
            origin,
            at,
            format!("a header match is 1 to {HEADER_MATCH_MAX} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '\0' | '\r' | '\n')) {
        p.push(Problem::new(
            origin,
            at,
            format!("{bad:?} is not allowed in a header value"),
        ));
    }
}

pub(crate) fn check_retry(p: &mut Vec<Problem>, origin: &str, at: &str, retry: &HttpRetryPolicy) {
    if retry.max_retries < 0 {
        p.push(Problem::new(
            origin,
            join(at, "maxRetries"),
            "must not be negative",
        ));
    }
    if retry.per_retry_timeout.value < 1 {
        p.push(Problem::new(
            origin,
            join(at, "perRetryTimeout.value"),
            "must be at least 1",
        ));
    }
    if retry.http_retry_events.is_empty()
        && retry.tcp_retry_events.is_empty()
        && retry.grpc_retry_events.is_empty()
    {
        p.push(Problem::new(
            origin,
            at,
            "give at least one of httpRetryEvents, tcpRetryEvents and (for a grpcRoute) grpcRetryEvents",
        ));
    }
    for (field, events, allowed) in [
        (
            "httpRetryEvents",
            &retry.http_retry_events,
            limits::HTTP_RETRY_EVENTS,
        ),
        (
            "tcpRetryEvents",
            &retry.tcp_retry_events,
            limits::TCP_RETRY_EVENTS,
        ),
        (
            "grpcRetryEvents",
            &retry.grpc_retry_events,
            limits::GRPC_RETRY_EVENTS,
        ),
    ] {
        for (i, e) in events.iter().enumerate() {
            if !allowed.contains(&e.as_str()) {
                p.push(Problem::new(
                    origin,
                    format!("{at}.{field}[{i}]"),
                    format!(
                        "`{e}` is not a retry event; use one of {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
}

/// The router's listeners (the one the route's port names) speak what the route serves;
/// a router of several listeners needs the route to name a port.
fn check_route_listeners(
    p: &mut Vec<Problem>,
    origin: &str,
    route: &RouteInput,
    router: &VirtualRouterInput,
) {
    let spec = &route.spec;
    let kind = if spec.tcp_route.is_some() {
        "tcpRoute"
    } else if spec.grpc_route.is_some() {
        "grpcRoute"
    } else {
        "http route"
    };
    let route_port = spec.match_port();
    let listeners = &router.spec.listeners;
    if listeners.len() > 1 && route_port.is_none() {
        p.push(Problem::new(
            origin,
            "spec",
            format!(
                "virtual router `{}` has several listeners; give the route a match.port",
                route.virtual_router_name
            ),
        ));
    }
    for listener in listeners
        .iter()
        .filter(|l| route_port.is_none_or(|port| port == l.port_mapping.port))
    {
        let proto = listener.port_mapping.protocol.as_str();
        let compatible = match kind {
            "tcpRoute" => proto == "tcp",
            "grpcRoute" => proto == "grpc",
            _ => proto != "tcp",
        };
        if !compatible {
            p.push(Problem::new(
                origin,
                "spec",
                format!(
                    "a {kind} cannot serve virtual router `{}`, whose listener is {proto}",
                    route.virtual_router_name
                ),
            ));
        }
    }
}

/// A match on a port picks one of the router's listeners.
fn check_matched_port(
    p: &mut Vec<Problem>,
    origin: &str,
    route: &RouteInput,
    router: &VirtualRouterInput,
) {
    let spec = &route.spec;
    // A match on a port picks one of the router's listeners.
    let matched_port = [
        (
            "spec.httpRoute.match.port",
            spec.http_route.as_ref().and_then(|r| r.route_match.port),
        ),
        (
            "spec.http2Route.match.port",
            spec.http2_route.as_ref().and_then(|r| r.route_match.port),
        ),
        (
            "spec.grpcRoute.match.port",
            spec.grpc_route.as_ref().and_then(|r| r.route_match.port),
        ),
        (
            "spec.tcpRoute.match.port",
            spec.tcp_route
                .as_ref()
                .and_then(|r| r.route_match.as_ref())
                .and_then(|m| m.port),
        ),
    ];
    for (path, port) in matched_port {
        let Some(port) = port else { continue };
        let ports: Vec<i64> = router
            .spec
            .listeners
            .iter()
            .map(|l| l.port_mapping.port)
            .collect();
        if !ports.contains(&port) {
            p.push(Problem::new(
                origin,
                path,
                format!(
                    "{port} is not a listener port of virtual router `{}` ({})",
                    route.virtual_router_name,
                    ports
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
}

/// Each protocol's route: HTTP and HTTP/2 as HTTP routes (no gRPC retry events), gRPC
/// with its service and method names.
fn check_route_kinds(p: &mut Vec<Problem>, origin: &str, route: &RouteInput) {
    let spec = &route.spec;
    for (base, http) in [
        ("spec.httpRoute", &spec.http_route),
        ("spec.http2Route", &spec.http2_route),
    ] {
        if let Some(http) = http {
            check_http_route(p, origin, base, http);
            if let Some(retry) = &http.retry_policy {
                if !retry.grpc_retry_events.is_empty() {
                    p.push(Problem::new(
                        origin,
                        format!("{base}.retryPolicy.grpcRetryEvents"),
                        "only a grpcRoute retries on gRPC events",
                    ));
                }
            }
        }
    }
    if let Some(grpc) = &spec.grpc_route {
        let m = &grpc.route_match;
        if m.method_name.is_some() && m.service_name.is_none() {
            p.push(Problem::new(
                origin,
                "spec.grpcRoute.match.methodName",
                "a methodName needs a serviceName",
            ));
        }
        for (field, name) in [
            ("serviceName", &m.service_name),
            ("methodName", &m.method_name),
        ] {
            if name
                .as_ref()
                .is_some_and(|n| n.is_empty() || n.contains('/'))
            {
                p.push(Problem::new(
                    origin,
                    format!("spec.grpcRoute.match.{field}"),
                    "must be a name without `/`",
                ));
            }
        }
        check_http_route(p, origin, "spec.grpcRoute", &grpc.as_http());
    }
}
