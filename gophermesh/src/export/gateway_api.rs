//! The Kubernetes Gateway API: a Service per node and virtual service, HTTPRoutes and
//! GRPCRoutes for the routers' routes, and Gateways with their routes for virtual gateways.

use meshmodel::Mesh;
use meshmodel::appmesh::{HttpRoute, Protocol, RouteInput};
use serde_json::{Value, json};

use super::lattice::lattice_name;
use super::{
    Export, GATEWAYS, SEVERAL_NODE_LISTENERS, SEVERAL_ROUTER_LISTENERS, SIMPLE_MATCHES, Support,
    UNMATCHED, http_targets,
};

/// What the Kubernetes Gateway API (its mesh profile, GAMMA) carries of App Mesh.
pub const GATEWAY_API: &[Support] = &[
    ("virtual service names (client aliases)", None),
    ("weighted targets", None),
    ("HTTP, HTTP/2, gRPC and TCP listeners", None),
    (SIMPLE_MATCHES, None),
    (
        UNMATCHED,
        Some(
            "header ranges and inverted matches, query parameters matched on presence only, and the scheme have no HTTPRoute match (regex paths and headers, suffixes and exact query values are carried)",
        ),
    ),
    (
        "per-request and idle timeouts",
        Some("the per-request timeout is carried (timeouts.request); idle timeouts have no field"),
    ),
    (
        "retry policies",
        Some(
            "HTTPRoute retries are experimental in Gateway API v1; the mesh implementation's own policy applies",
        ),
    ),
    (
        "outlier detection",
        Some("no field: the implementation's own (e.g. Istio's DestinationRule)"),
    ),
    (
        "listener health checks",
        Some("use the pods' readiness probes"),
    ),
    (
        "connection pools",
        Some("no field: the implementation's own"),
    ),
    (
        "TLS and mutual TLS (files)",
        Some("mesh implementations encrypt between pods themselves; these files do not carry"),
    ),
    (
        super::TLS_ACM,
        Some(
            "a Gateway listener's certificateRefs name Kubernetes Secrets, not ACM ARNs (export the certificate into a Secret, or use the implementation's ACM integration); between pods the mesh implementation issues its own certificates",
        ),
    ),
    (
        super::TLS_SDS,
        Some(
            "the mesh implementation issues and rotates workload certificates itself (Istio and Linkerd over their own SDS); these secret names do not carry",
        ),
    ),
    ("access logs", Some("the implementation's own logging")),
    (
        "egress filter DROP_ALL",
        Some("no field: use NetworkPolicy"),
    ),
    (
        "backends (which services a node may call)",
        Some("no field: use NetworkPolicy or the implementation's authorization policy"),
    ),
    (
        "TCP routes",
        Some("TCPRoute is experimental in Gateway API v1"),
    ),
    (GATEWAYS, None),
    // A node's Service has a port per listener.
    (SEVERAL_NODE_LISTENERS, None),
    // A route object per router listener, on that port of the virtual service's Service.
    (SEVERAL_ROUTER_LISTENERS, None),
];

/// A Kubernetes name (DNS-1035 label): lower case, other characters as `-`, at most 63.
fn k8s_name(name: &str) -> String {
    let mut out = lattice_name(name);
    out.truncate(63);
    out.trim_matches('-').to_owned()
}

/// `^` + `text` with regex characters escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Kubernetes Gateway API for `mesh`, as its mesh profile (GAMMA) has it: a `Service`
/// per virtual node (selecting `app: NODE`) and per virtual service (the name clients use,
/// its first label), an `HTTPRoute` per http/http2 router listener and a `GRPCRoute` per grpc
/// one, attached to that port of the virtual service's Service, with matches, weighted
/// backendRefs and the per-request timeout. Files: `NAME.yaml`, one object each.
pub fn gateway_api(mesh: &Mesh) -> Export {
    let mut out = Export::new(GATEWAY_API, mesh);
    for (name, node) in &mesh.virtual_nodes {
        let listeners: Vec<(i64, &str)> = node
            .value
            .spec
            .listeners
            .iter()
            .map(|l| (l.port_mapping.port, l.port_mapping.protocol.as_str()))
            .collect();
        if listeners.is_empty() {
            continue;
        }
        out.files.insert(
            format!("service-{}.yaml", k8s_name(name)),
            k8s_service(&k8s_name(name), &listeners, Some(&k8s_name(name))),
        );
    }
    for (vs_name, vs) in &mesh.virtual_services {
        let router = vs
            .value
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.virtual_router.as_ref())
            .map(|r| r.virtual_router_name.as_str());
        if let Some(router) = router {
            router_routes(&mut out, mesh, vs_name, router);
        }
    }
    gateway_api_gateways(mesh, &mut out);
    out
}

/// A Service with a port per listener (named by its protocol, and by its port as well
/// when there are several: port names are unique), selecting pods `app: SELECTOR`.
fn k8s_service(name: &str, listeners: &[(i64, &str)], selector: Option<&str>) -> Value {
    let ports: Vec<Value> = listeners
        .iter()
        .map(|&(port, protocol)| {
            let name = match listeners.len() {
                1 => protocol.to_owned(),
                _ => format!("{protocol}-{port}"),
            };
            json!({"name": name, "port": port, "targetPort": port,
                "appProtocol": match protocol { "grpc" | "http2" => "kubernetes.io/h2c", "tcp" => "tcp", _ => "http" }})
        })
        .collect();
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": ports}
    });
    if let Some(app) = selector {
        svc["spec"]["selector"] = json!({"app": app});
    }
    svc
}

/// Virtual service `vs_name`, provided by router `router_name`: its Service (unless a
/// node's Service has the name) and a route object per listener, attached to that port of
/// the Service, with the routes whose match names the port (all of them when the router
/// has one listener).
fn router_routes(out: &mut Export, mesh: &Mesh, vs_name: &str, router_name: &str) {
    let front = k8s_name(vs_name.split('.').next().unwrap_or(vs_name));
    let Some(router) = mesh.virtual_routers.get(router_name) else {
        return;
    };
    let listeners: Vec<(i64, Protocol)> = router
        .value
        .spec
        .listeners
        .iter()
        .map(|l| (l.port_mapping.port, l.port_mapping.protocol))
        .collect();
    // A name that is also a node's (the gophers' requester) is that node's Service.
    if !listeners.is_empty() && !mesh.virtual_nodes.keys().any(|n| k8s_name(n) == front) {
        let ports: Vec<(i64, &str)> = listeners.iter().map(|(p, x)| (*p, x.as_str())).collect();
        out.files.insert(
            format!("service-{front}.yaml"),
            k8s_service(&front, &ports, None),
        );
    }
    let mut routes: Vec<(&String, &RouteInput)> = mesh
        .routes
        .iter()
        .filter(|((r, _), _)| r == router_name)
        .map(|(_, s)| (&s.origin, &*s.value))
        .collect();
    routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
    for (i, &(port, protocol)) in listeners.iter().enumerate() {
        let grpc = protocol == Protocol::Grpc;
        let rules: Vec<Value> = routes
            .iter()
            .filter(|(_, r)| r.spec.match_port().is_none_or(|p| p == port))
            .filter_map(|(origin, route)| route_rule(out, mesh, origin, route, grpc))
            .collect();
        if protocol == Protocol::Tcp || rules.is_empty() {
            // No route to write (Gateway API v1 has no TCPRoute; TCP routes are reported
            // as lost above).
            continue;
        }
        let kind = if grpc { "GRPCRoute" } else { "HTTPRoute" };
        let name = match i {
            0 => k8s_name(router_name),
            _ => format!("{}-{port}", k8s_name(router_name)),
        };
        out.files.insert(
            format!("{}-{name}.yaml", kind.to_ascii_lowercase()),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": front, "port": port}],
                    "rules": rules,
                }
            }),
        );
    }
}

/// The rule of one route: its match, weighted backendRefs and per-request timeout (an
/// HTTPRoute's; a GRPCRoute has none); what it cannot carry is noted in `out`.
fn route_rule(
    out: &mut Export,
    mesh: &Mesh,
    origin: &str,
    route: &RouteInput,
    grpc: bool,
) -> Option<Value> {
    let (h, at, targets) = http_targets(out, origin, route)?;
    let node_port = |node: &str| {
        mesh.virtual_nodes
            .get(node)
            .and_then(|n| n.value.spec.listeners.first())
            .map_or(80, |l| l.port_mapping.port)
    };
    let backends: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({"name": k8s_name(&t.virtual_node),
            "port": t.port.unwrap_or_else(|| node_port(&t.virtual_node)), "weight": t.weight})
        })
        .collect();
    if h.retry_policy.is_some() {
        out.lose(origin, &format!("{at}.retryPolicy"), "retry policies");
    }
    let matched = route_match(out, origin, at, route, &h, grpc);
    let mut rule = json!({"matches": [matched], "backendRefs": backends});
    if let Some(t) = &h.timeout {
        if let Some(d) = t.per_request {
            if !grpc {
                let ms = d.to_std().as_millis();
                let request = match ms % 1000 {
                    0 => format!("{}s", ms / 1000),
                    _ => format!("{ms}ms"),
                };
                rule["timeouts"] = json!({"request": request});
            }
        }
        if t.idle.is_some() {
            out.lose(
                origin,
                &format!("{at}.timeout.idle"),
                "per-request and idle timeouts",
            );
        }
    }
    Some(rule)
}

/// A route's match as the Gateway API's: headers, then a gRPC method or an HTTP path,
/// method and query parameters; what it cannot match on is noted in `out`.
fn route_match(
    out: &mut Export,
    origin: &str,
    at: &str,
    route: &RouteInput,
    h: &HttpRoute,
    grpc: bool,
) -> Value {
    let m = &h.route_match;
    let unmatched = |out: &mut Export, field: &str| {
        out.lose(origin, &format!("{at}.match.{field}"), UNMATCHED);
    };
    let headers = k8s_headers(&m.headers, |i| unmatched(out, &format!("headers[{i}]")));
    let mut matched = json!({});
    if !headers.is_empty() {
        matched["headers"] = json!(headers);
    }
    if m.scheme.is_some() {
        unmatched(out, "scheme");
    }
    if grpc {
        let g = route.spec.grpc_route.as_ref().map(|g| &g.route_match);
        if let Some(service) = g.and_then(|g| g.service_name.clone()) {
            let mut method = json!({"type": "Exact", "service": service});
            if let Some(name) = g.and_then(|g| g.method_name.clone()) {
                method["method"] = json!(name);
            }
            matched["method"] = method;
        }
        return matched;
    }
    matched["path"] = match (&m.prefix, &m.path) {
        (_, Some(p)) if p.exact.is_some() => json!({"type": "Exact", "value": p.exact}),
        (_, Some(p)) => json!({"type": "RegularExpression", "value": p.regex}),
        (prefix, _) => {
            json!({"type": "PathPrefix", "value": prefix.clone().unwrap_or_else(|| "/".into())})
        }
    };
    if let Some(method) = &m.method {
        matched["method"] = json!(method);
    }
    let mut params = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        match &q.query_match {
            Some(v) => params.push(json!({"type": "Exact", "name": q.name, "value": v.exact})),
            None => unmatched(out, &format!("queryParameters[{i}]")),
        }
    }
    if !params.is_empty() {
        matched["queryParams"] = json!(params);
    }
    matched
}

/// Gateway API header matches for App Mesh's: exact as `Exact`; prefix, suffix, regex and
/// presence as `RegularExpression`; `unmatched(i)` for the rest (ranges, inversions).
fn k8s_headers(
    headers: &[meshmodel::appmesh::HttpRouteHeader],
    mut unmatched: impl FnMut(usize),
) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, header) in headers.iter().enumerate() {
        let value = match header.header_match.as_ref() {
            _ if header.invert.unwrap_or(false) => None,
            None => Some(("RegularExpression", ".*".to_owned())),
            Some(x) => x
                .exact
                .clone()
                .map(|v| ("Exact", v))
                .or_else(|| {
                    x.prefix
                        .as_ref()
                        .map(|v| ("RegularExpression", format!("^{}.*", regex_escape(v))))
                })
                .or_else(|| {
                    x.suffix
                        .as_ref()
                        .map(|v| ("RegularExpression", format!(".*{}$", regex_escape(v))))
                })
                .or_else(|| x.regex.clone().map(|v| ("RegularExpression", v))),
        };
        match value {
            Some((kind, value)) => {
                out.push(json!({"type": kind, "name": header.name, "value": value}))
            }
            None => unmatched(i),
        }
    }
    out
}

/// Each virtual gateway as a `Gateway` (a listener per gateway listener; its class is for
/// the cluster's implementation to name, `gophermesh-ingress` here), and each gateway route
/// as an `HTTPRoute` or `GRPCRoute` on it: the match (hostname as `hostnames`), App Mesh's
/// default rewrites as a `URLRewrite` filter (the prefix to `/`, the host to the target
/// service's name), and the target service's `Service` and port as the backend.
fn gateway_api_gateways(mesh: &Mesh, out: &mut Export) {
    for (name, gateway) in &mesh.virtual_gateways {
        let listeners: Vec<Value> = gateway
            .value
            .spec
            .listeners
            .iter()
            .map(|l| {
                let (port, protocol) = (l.port_mapping.port, l.port_mapping.protocol.as_str());
                json!({"name": format!("{protocol}-{port}"), "port": port, "protocol": "HTTP"})
            })
            .collect();
        out.files.insert(
            format!("gateway-{}.yaml", k8s_name(name)),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": k8s_name(name)},
                "spec": {"gatewayClassName": "gophermesh-ingress", "listeners": listeners}
            }),
        );
    }
    for route in mesh.gateway_routes.values() {
        let (origin, r) = (&route.origin, &route.value);
        let Some((at, _, http)) = r.spec.as_http() else {
            continue;
        };
        let grpc = r.spec.grpc_route.is_some();
        let m = &http.route_match;
        let target = &http.action.target;
        let service = &target.virtual_service.virtual_service_name;
        let front = k8s_name(service.split('.').next().unwrap_or(service));
        let port = target
            .port
            .or_else(|| mesh.service_ports(service).first().copied())
            .unwrap_or(80);
        let mut parent = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
            "name": k8s_name(&r.virtual_gateway_name)});
        if let Some(p) = m.port {
            parent["port"] = json!(p);
        }
        let mut spec = json!({"parentRefs": [parent]});
        match m.hostname.as_ref().map(|h| (&h.exact, &h.suffix)) {
            Some((Some(exact), _)) => spec["hostnames"] = json!([exact]),
            Some((None, Some(suffix))) if suffix.starts_with('.') => {
                spec["hostnames"] = json!([format!("*{suffix}")]);
            }
            Some((None, Some(_))) => {
                out.lose(origin, &format!("{at}.match.hostname.suffix"), UNMATCHED)
            }
            _ => {}
        }
        let mut matched = json!({});
        let headers = k8s_headers(&m.headers, |i| {
            out.lose(origin, &format!("{at}.match.headers[{i}]"), UNMATCHED);
        });
        if !headers.is_empty() {
            matched["headers"] = json!(headers);
        }
        let mut filters = Vec::new();
        if grpc {
            if let Some(service) = r
                .spec
                .grpc_route
                .as_ref()
                .and_then(|g| g.route_match.service_name.clone())
            {
                matched["method"] = json!({"type": "Exact", "service": service});
            }
        } else {
            matched["path"] = match (&m.prefix, &m.path) {
                (_, Some(p)) if p.exact.is_some() => json!({"type": "Exact", "value": p.exact}),
                (_, Some(p)) => json!({"type": "RegularExpression", "value": p.regex}),
                (prefix, _) => {
                    json!({"type": "PathPrefix", "value": prefix.clone().unwrap_or_else(|| "/".into())})
                }
            };
            if let Some(method) = &m.method {
                matched["method"] = json!(method);
            }
            let params: Vec<Value> = m
                .query_parameters
                .iter()
                .enumerate()
                .filter_map(|(i, q)| match &q.query_match {
                    Some(v) => Some(json!({"type": "Exact", "name": q.name, "value": v.exact})),
                    None => {
                        out.lose(
                            origin,
                            &format!("{at}.match.queryParameters[{i}]"),
                            UNMATCHED,
                        );
                        None
                    }
                })
                .collect();
            if !params.is_empty() {
                matched["queryParams"] = json!(params);
            }
        }
        let mut url = json!({});
        // A gRPC gateway route, as HTTP, keeps its path.
        if let Some((_, to)) = http.prefix_rewrite() {
            url["path"] = json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": to});
        }
        if let Some(to) = http
            .action
            .rewrite
            .as_ref()
            .and_then(|w| w.path.as_ref())
            .and_then(|p| p.exact.clone())
        {
            url["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": to});
        }
        if http.rewrites_host() {
            url["hostname"] = json!(service);
        }
        if url.as_object().is_some_and(|o| !o.is_empty()) {
            if grpc {
                // GRPCRoute has no URLRewrite filter: the host is set as a header instead.
                filters.push(json!({"type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"set": [{"name": "host", "value": service}]}}));
            } else {
                filters.push(json!({"type": "URLRewrite", "urlRewrite": url}));
            }
        }
        let mut rule =
            json!({"matches": [matched], "backendRefs": [{"name": front, "port": port}]});
        if !filters.is_empty() {
            rule["filters"] = json!(filters);
        }
        spec["rules"] = json!([rule]);
        let kind = if grpc { "GRPCRoute" } else { "HTTPRoute" };
        out.files.insert(
            format!(
                "{}-{}-{}.yaml",
                kind.to_ascii_lowercase(),
                k8s_name(&r.virtual_gateway_name),
                k8s_name(&r.gateway_route_name)
            ),
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": format!("{}-{}", k8s_name(&r.virtual_gateway_name), k8s_name(&r.gateway_route_name))},
                "spec": spec,
            }),
        );
    }
}
