//! VPC Lattice: a service network, a service per virtual service, a target group per node
//! listener, a listener per router listener with rules for its routes, as the `aws
//! vpc-lattice` calls in creation order (each step names what it makes and what it refers to).

use meshmodel::Mesh;
use meshmodel::appmesh::{Protocol, RouteInput};
use serde_json::{Value, json};

use super::{
    Export, GATEWAYS, SEVERAL_NODE_LISTENERS, SEVERAL_ROUTER_LISTENERS, SIMPLE_MATCHES, Support,
    UNMATCHED, http_targets,
};

/// What VPC Lattice carries of App Mesh.
pub const LATTICE: &[Support] = &[
    ("virtual service names (client aliases)", None),
    ("weighted targets", None),
    ("HTTP, HTTP/2, gRPC and TCP listeners", None),
    (SIMPLE_MATCHES, None),
    (
        UNMATCHED,
        Some(
            "a Lattice rule matches path prefix or exact, headers exact, prefix or contains, and the method",
        ),
    ),
    ("listener health checks", None),
    (
        "per-request and idle timeouts",
        Some("Lattice has no per-route timeouts"),
    ),
    ("retry policies", Some("Lattice has no retry policy")),
    (
        "outlier detection",
        Some("Lattice has no outlier detection"),
    ),
    ("connection pools", Some("no circuit breaker settings")),
    (
        "TLS and mutual TLS (files)",
        Some(
            "no mutual TLS between services: Lattice authenticates callers with IAM (auth type AWS_IAM and an auth policy) instead",
        ),
    ),
    (
        super::TLS_ACM,
        Some(
            "an HTTPS listener of a Lattice service (on its custom domain name) serves an ACM certificate itself, but this export writes HTTP listeners and no certificate; the Private CA trust of client policies does not carry (Lattice authenticates callers with IAM)",
        ),
    ),
    (
        super::TLS_SDS,
        Some(
            "Lattice terminates TLS with ACM certificates only; SDS secrets (SPIRE identities) do not carry",
        ),
    ),
    (
        "access logs",
        Some("use a Lattice access log subscription; App Mesh's file and format do not carry"),
    ),
    (
        "egress filter DROP_ALL",
        Some("no filter: tasks reach whatever their security groups allow"),
    ),
    (
        "backends (which services a node may call)",
        Some(
            "every VPC associated with the service network reaches every service in it; restrict with auth policies",
        ),
    ),
    (
        "TCP routes",
        Some("Lattice passes TCP only as TLS (TLS_PASSTHROUGH listeners)"),
    ),
    (
        GATEWAYS,
        Some(
            "not written by this export yet; clients outside reach the Lattice services through the service network's VPC associations",
        ),
    ),
    (SEVERAL_NODE_LISTENERS, None),
    (SEVERAL_ROUTER_LISTENERS, None),
];

/// A name Lattice takes (`^[a-z0-9][a-z0-9-]*$`, at most 40 characters, no hyphen after
/// another): lower case, each run of other characters as one `-`.
pub(super) fn lattice_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(40);
    out.trim_matches('-').to_owned()
}

/// App Mesh's relative weights (0-100) as Lattice's (0-999), times 9: the split is the same.
fn lattice_weight(weight: i64) -> i64 {
    weight.clamp(0, 100) * 9
}

/// The Lattice protocol version of an App Mesh listener protocol.
fn protocol_version(protocol: meshmodel::appmesh::Protocol) -> &'static str {
    use meshmodel::appmesh::Protocol;
    match protocol {
        Protocol::Http2 => "HTTP2",
        Protocol::Grpc => "GRPC",
        _ => "HTTP1",
    }
}

/// VPC Lattice for `mesh`: the `aws vpc-lattice` inputs in creation order, named
/// `NN-CALL--REF.json`, where `@{REF}` in a later input stands for the id the call named
/// REF returned and `${VPC_ID}` comes from the environment (`apply.sh` does both).
pub fn lattice(mesh: &Mesh) -> Export {
    let (steps, mut out) = lattice_steps(mesh);
    for (i, step) in steps.into_iter().enumerate() {
        out.files.insert(
            format!("{:03}-{}--{}.json", i + 1, step.call, step.reference),
            step.input,
        );
    }
    out
}

/// The tag on every Lattice resource the export creates, whose value is the mesh's name:
/// what `export lattice --apply` may change and `--teardown` deletes.
pub const LATTICE_MESH_TAG: &str = "gophermesh:mesh";

/// One `aws vpc-lattice CALL --cli-input-json INPUT` of the Lattice export; later inputs
/// name its result's id `@{REFERENCE}`.
#[derive(Debug, Clone)]
pub struct LatticeStep {
    pub call: &'static str,
    pub reference: String,
    pub input: Value,
}

/// The Lattice calls for `mesh` in creation order (each input tagged
/// [`LATTICE_MESH_TAG`] with the mesh's name), and what they lose.
pub fn lattice_steps(mesh: &Mesh) -> (Vec<LatticeStep>, Export) {
    let mut out = Export::new(LATTICE, mesh);
    let mut steps: Steps = Vec::new();
    let mesh_name = mesh.name().unwrap_or("mesh").to_owned();
    steps.push((
        "create-service-network",
        "network".into(),
        json!({"name": lattice_name(&mesh_name), "authType": "NONE"}),
    ));
    for (name, node) in &mesh.virtual_nodes {
        for l in &node.value.spec.listeners {
            let group = group_name(mesh, name, Some(l.port_mapping.port));
            steps.push((
                "create-target-group",
                format!("tg-{group}"),
                json!({"name": group, "type": "IP", "config": target_group_config(l)}),
            ));
        }
    }
    for (vs_name, service) in &mesh.virtual_services {
        service_steps(&mut out, &mut steps, mesh, vs_name, service);
    }
    let steps = steps
        .into_iter()
        .map(|(call, reference, mut input)| {
            input["tags"] = json!({ LATTICE_MESH_TAG: mesh_name });
            LatticeStep {
                call,
                reference,
                input,
            }
        })
        .collect();
    (steps, out)
}

/// Calls before they are tagged: (call, reference, input).
type Steps = Vec<(&'static str, String, Value)>;

/// The target group of `node`'s listener on `port`: the first named as the node, the
/// others with their port after it (Lattice names are unique per account).
fn group_name(mesh: &Mesh, node: &str, port: Option<i64>) -> String {
    let listeners = mesh
        .virtual_nodes
        .get(node)
        .map(|n| n.value.spec.listeners.as_slice())
        .unwrap_or_default();
    match listeners
        .iter()
        .position(|l| Some(l.port_mapping.port) == port)
    {
        Some(i) if i > 0 => format!("{}-{}", lattice_name(node), listeners[i].port_mapping.port),
        _ => lattice_name(node),
    }
}

/// A node listener's target group `config`: port, protocol (and its version), VPC, and the
/// listener's health check.
fn target_group_config(l: &meshmodel::appmesh::Listener) -> Value {
    let mut config = json!({
        "port": l.port_mapping.port,
        "protocol": if l.port_mapping.protocol == Protocol::Tcp { "TCP" } else { "HTTP" },
        "vpcIdentifier": "${VPC_ID}",
    });
    if l.port_mapping.protocol != Protocol::Tcp {
        config["protocolVersion"] = json!(protocol_version(l.port_mapping.protocol));
    }
    if let Some(hc) = &l.health_check {
        let secs = |ms: i64| (ms / 1000).max(1);
        let mut check = json!({
            "enabled": true,
            "healthCheckIntervalSeconds": secs(hc.interval_millis),
            "healthCheckTimeoutSeconds": secs(hc.timeout_millis),
            "healthyThresholdCount": hc.healthy_threshold,
            "unhealthyThresholdCount": hc.unhealthy_threshold,
        });
        if let Some(path) = &hc.path {
            check["path"] = json!(path);
            check["protocol"] = json!("HTTP");
        }
        config["healthCheck"] = check;
    }
    config
}

/// The action that forwards to `targets`' target groups by weight.
fn forward(mesh: &Mesh, targets: &[meshmodel::appmesh::WeightedTarget]) -> Value {
    json!({"forward": {"targetGroups": targets.iter().map(|t| json!({
        "targetGroupIdentifier": format!("@{{tg-{}}}", group_name(mesh, &t.virtual_node, t.port)),
        "weight": lattice_weight(t.weight),
    })).collect::<Vec<_>>()}})
}

/// (name, reference) of the Lattice listener for App Mesh listener `i` of virtual service
/// `vs`: the first named `listener`, the others with their port after it.
fn listener_names(vs: &str, i: usize, port: i64) -> (String, String) {
    match i {
        0 => (
            "listener".to_owned(),
            format!("listener-{}", lattice_name(vs)),
        ),
        _ => (
            format!("listener-{port}"),
            format!("listener-{}-{port}", lattice_name(vs)),
        ),
    }
}

/// Virtual service `vs_name`: its Lattice service, the service's association with the
/// network, and a listener per listener of its provider (a node's forwarding to its
/// target group; a router's with a rule per route).
fn service_steps(
    out: &mut Export,
    steps: &mut Steps,
    mesh: &Mesh,
    vs_name: &str,
    service: &meshmodel::mesh::Sourced<meshmodel::appmesh::VirtualServiceInput>,
) {
    let svc = format!("svc-{}", lattice_name(vs_name));
    steps.push((
        "create-service",
        svc.clone(),
        json!({"name": lattice_name(vs_name), "customDomainName": vs_name, "authType": "NONE"}),
    ));
    steps.push((
        "create-service-network-service-association",
        format!("assoc-{}", lattice_name(vs_name)),
        json!({"serviceNetworkIdentifier": "@{network}", "serviceIdentifier": format!("@{{{svc}}}")}),
    ));
    let provider = service.value.spec.provider.as_ref();
    if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
        let node = &node.virtual_node_name;
        let listeners = mesh
            .virtual_nodes
            .get(node)
            .map(|n| n.value.spec.listeners.as_slice())
            .unwrap_or_default();
        for (i, l) in listeners.iter().enumerate() {
            let port = l.port_mapping.port;
            let (name, reference) = listener_names(vs_name, i, port);
            let target = meshmodel::appmesh::WeightedTarget {
                virtual_node: node.clone(),
                weight: 100,
                port: Some(port),
            };
            steps.push((
                "create-listener",
                reference,
                json!({"serviceIdentifier": format!("@{{{svc}}}"), "name": name, "protocol": "HTTP", "port": port,
                    "defaultAction": forward(mesh, &[target])}),
            ));
        }
    } else if let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) {
        router_listeners(out, steps, mesh, vs_name, &router.virtual_router_name);
    }
}

/// The Lattice listeners of virtual service `vs_name` provided by router `router_name`:
/// one per router listener, with the routes whose match names its port (all of them with
/// one listener; a route on several listeners is lost only once) as its rules.
fn router_listeners(
    out: &mut Export,
    steps: &mut Steps,
    mesh: &Mesh,
    vs_name: &str,
    router_name: &str,
) {
    let svc = format!("svc-{}", lattice_name(vs_name));
    let router_listeners = mesh
        .virtual_routers
        .get(router_name)
        .map(|r| r.value.spec.listeners.clone())
        .unwrap_or_default();
    let mut routes: Vec<(&String, &RouteInput)> = mesh
        .routes
        .iter()
        .filter(|((r, _), _)| r == router_name)
        .map(|(_, s)| (&s.origin, &*s.value))
        .collect();
    routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
    for (i, l) in router_listeners.iter().enumerate() {
        let port = l.port_mapping.port;
        let (name, listener) = listener_names(vs_name, i, port);
        let on_port: Vec<_> = routes
            .iter()
            .copied()
            .filter(|(_, r)| r.spec.match_port().is_none_or(|p| p == port))
            .collect();
        let (default, rules) = lattice_rules(out, &on_port, &|t| forward(mesh, t));
        steps.push((
            "create-listener",
            listener.clone(),
            json!({"serviceIdentifier": format!("@{{{svc}}}"), "name": name, "protocol": "HTTP", "port": port, "defaultAction": default}),
        ));
        let rule_prefix = match i {
            0 => lattice_name(vs_name),
            _ => format!("{}-{port}", lattice_name(vs_name)),
        };
        for (priority, (route_name, http_match, action)) in rules.into_iter().enumerate() {
            steps.push((
                "create-rule",
                format!("rule-{rule_prefix}-{}", lattice_name(&route_name)),
                json!({
                    "serviceIdentifier": format!("@{{{svc}}}"),
                    "listenerIdentifier": format!("@{{{listener}}}"),
                    "name": lattice_name(&route_name),
                    "priority": priority + 1,
                    "match": {"httpMatch": http_match},
                    "action": action,
                }),
            ));
        }
    }
}

/// The Lattice listener's default action (the unconditional route's forward, else 404) and
/// a rule per conditional route, in `routes`' order: (route name, HTTP match, action).
fn lattice_rules(
    out: &mut Export,
    routes: &[(&String, &RouteInput)],
    forward: &dyn Fn(&[meshmodel::appmesh::WeightedTarget]) -> Value,
) -> (Value, Vec<(String, Value, Value)>) {
    let mut default = json!({"fixedResponse": {"statusCode": 404}});
    let mut rules = Vec::new();
    for &(origin, route) in routes {
        let Some((h, at, targets)) = http_targets(out, origin, route) else {
            continue;
        };
        if h.retry_policy.is_some() {
            out.lose(origin, &format!("{at}.retryPolicy"), "retry policies");
        }
        if h.timeout.is_some() {
            out.lose(
                origin,
                &format!("{at}.timeout"),
                "per-request and idle timeouts",
            );
        }
        let m = &h.route_match;
        let unmatched = |out: &mut Export, field: &str| {
            out.lose(origin, &format!("{at}.match.{field}"), UNMATCHED);
        };
        let mut http_match = json!({});
        let mut conditional = false;
        match (&m.prefix, &m.path) {
            (_, Some(p)) if p.exact.is_some() => {
                http_match["pathMatch"] = json!({"match": {"exact": p.exact}});
                conditional = true;
            }
            (_, Some(_)) => unmatched(out, "path.regex"),
            (Some(prefix), _) if prefix != "/" => {
                http_match["pathMatch"] = json!({"match": {"prefix": prefix}});
                conditional = true;
            }
            _ => {}
        }
        let mut headers = Vec::new();
        for (i, header) in m.headers.iter().enumerate() {
            let hm = header.header_match.as_ref();
            let exact = hm.and_then(|x| x.exact.clone());
            let prefix = hm.and_then(|x| x.prefix.clone());
            match (header.invert.unwrap_or(false), exact, prefix) {
                (false, Some(v), _) => {
                    headers.push(json!({"name": header.name, "match": {"exact": v}}))
                }
                (false, None, Some(v)) => {
                    headers.push(json!({"name": header.name, "match": {"prefix": v}}))
                }
                _ => unmatched(out, &format!("headers[{i}]")),
            }
        }
        if !headers.is_empty() {
            http_match["headerMatches"] = json!(headers);
            conditional = true;
        }
        if let Some(method) = &m.method {
            http_match["method"] = json!(method);
            conditional = true;
        }
        if !m.query_parameters.is_empty() {
            unmatched(out, "queryParameters");
        }
        if m.scheme.is_some() {
            unmatched(out, "scheme");
        }
        if conditional {
            rules.push((route.route_name.clone(), http_match, forward(targets)));
        } else {
            default = forward(targets);
        }
    }
    (default, rules)
}
