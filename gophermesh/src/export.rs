//! Exports of a mesh to where App Mesh users are sent next, each with an honest report of
//! what it cannot carry: for every App Mesh field in use that the target has no place for,
//! one [`Loss`] naming the file, the JSON path and why.
//!
//! ```text
//! service_connect   ECS Service Connect: per task, the task definition without the Envoy
//!                   and its APPMESH proxy, and the service's serviceConnectConfiguration
//! lattice           VPC Lattice: the `aws vpc-lattice` calls in creation order
//! gateway_api       the Kubernetes Gateway API: Services and HTTPRoutes / GRPCRoutes
//! ```
//!
//! What each target carries is one table per target ([`SERVICE_CONNECT`], [`LATTICE`],
//! [`GATEWAY_API`]), which the report, the
//! README's table and the tests all read. [`lattice_apply`] makes the Lattice export's calls
//! itself (`export lattice --apply` and `--teardown`).

pub mod lattice_apply;

use std::collections::BTreeMap;

use meshmodel::Mesh;
use meshmodel::appmesh::{HttpRoute, Protocol, RouteInput};
use meshmodel::taskdef::Task;
use serde::Serialize;
use serde_json::{Value, json};

/// One App Mesh field a target cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// The file the field is in.
    pub origin: String,
    /// Its JSON path there.
    pub path: String,
    /// The App Mesh feature it is.
    pub feature: &'static str,
    /// What happens to it in the target.
    pub reason: String,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.origin, self.path, self.feature, self.reason
        )
    }
}

/// An App Mesh feature and what a target does with it: `None` when it carries it, else why
/// not.
pub type Support = (&'static str, Option<&'static str>);

/// What ECS Service Connect carries of App Mesh.
pub const SERVICE_CONNECT: &[Support] = &[
    ("virtual service names (client aliases)", None),
    ("per-request and idle timeouts", None),
    ("HTTP, HTTP/2, gRPC and TCP listeners", None),
    (
        "weighted targets",
        Some(
            "a name reaches the tasks of one ECS service; the target with the highest weight keeps it, the others get none of its traffic",
        ),
    ),
    (
        SIMPLE_MATCHES,
        Some("Service Connect routes a name to one service, without looking at requests"),
    ),
    (
        UNMATCHED,
        Some("Service Connect routes a name to one service, without looking at requests"),
    ),
    ("TCP routes", None),
    (
        "retry policies",
        Some("its proxy retries by its own fixed policy, which cannot be tuned"),
    ),
    (
        "outlier detection",
        Some("its proxy ejects failing endpoints by its own defaults, which cannot be tuned"),
    ),
    (
        "listener health checks",
        Some("use the container's healthCheck in the task definition instead"),
    ),
    ("connection pools", Some("no circuit breaker settings")),
    (
        "TLS and mutual TLS (files)",
        Some(
            "Service Connect encrypts with certificates from AWS Private CA that ECS manages, not these files",
        ),
    ),
    (
        "access logs",
        Some("its proxy's logs go where the service's log configuration says, in its own format"),
    ),
    (
        "egress filter DROP_ALL",
        Some("no filter: tasks reach whatever their security groups allow"),
    ),
    (
        "backends (which services a node may call)",
        Some("every client reaches every name in the namespace"),
    ),
    (
        GATEWAYS,
        Some("Service Connect has no ingress: put a load balancer in front of the services"),
    ),
    (SEVERAL_NODE_LISTENERS, None),
    (SEVERAL_ROUTER_LISTENERS, None),
];

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

/// Virtual gateways and their gateway routes, as one feature.
const GATEWAYS: &str = "virtual gateways and gateway routes (ingress)";

/// Nodes and routers with more than one listener.
const SEVERAL_NODE_LISTENERS: &str = "several listeners per virtual node";
const SIMPLE_MATCHES: &str =
    "route matches (path prefix or exact, header exact or prefix, method) and priority";
const SEVERAL_ROUTER_LISTENERS: &str = "several listeners per virtual router";

/// The feature of the matches a rule of Lattice or the Gateway API cannot express.
const UNMATCHED: &str =
    "route matches on regex paths, header suffix, regex, range or inversion, query and scheme";

/// The reason `feature` is lost in `table`.
fn lost(table: &[Support], feature: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(f, _)| *f == feature)
        .and_then(|(_, why)| *why)
}

/// The markdown table of what each target carries (the README's): every feature either
/// table names, and what each target does with it.
pub fn features_table() -> String {
    let mut features: Vec<&str> = Vec::new();
    for (f, _) in SERVICE_CONNECT.iter().chain(LATTICE).chain(GATEWAY_API) {
        if !features.contains(f) {
            features.push(f);
        }
    }
    let cell = |table: &[Support], feature: &str| match table.iter().find(|(f, _)| *f == feature) {
        Some((_, None)) => "carried".to_owned(),
        Some((_, Some(why))) => format!("lost: {why}"),
        None => "?".to_owned(),
    };
    let mut out = String::from(
        "| App Mesh feature | ECS Service Connect | VPC Lattice | Gateway API |\n|---|---|---|---|\n",
    );
    for feature in features {
        out.push_str(&format!(
            "| {feature} | {} | {} | {} |\n",
            cell(SERVICE_CONNECT, feature),
            cell(LATTICE, feature),
            cell(GATEWAY_API, feature)
        ));
    }
    out
}

/// What an export makes: files by name, and what it could not carry (by the target's
/// table).
#[derive(Debug)]
pub struct Export {
    pub files: BTreeMap<String, Value>,
    pub losses: Vec<Loss>,
    table: &'static [Support],
}

impl Export {
    /// An export to the target `table` describes, with the losses of the mesh's and the
    /// nodes' settings it cannot carry already noted (see [`Export::settings_losses`]).
    fn new(table: &'static [Support], mesh: &Mesh) -> Self {
        let mut out = Self {
            files: BTreeMap::new(),
            losses: Vec::new(),
            table,
        };
        out.settings_losses(mesh);
        out
    }

    /// The losses of settings on the mesh and the nodes that the table cannot carry: the
    /// egress filter DROP_ALL (ALLOW_ALL is what no filter does), and each listener's
    /// outlier detection, health check, connection pool, TLS and timeouts, TLS client
    /// policies, access logs and backends; virtual gateways and gateway routes.
    fn settings_losses(&mut self, mesh: &Mesh) {
        let table = self.table;
        let mut lose = |origin: &str, path: &str, feature: &'static str| {
            if lost(table, feature).is_some() {
                self.lose(origin, path, feature);
            }
        };
        if let Some(m) = &mesh.mesh {
            if m.value
                .spec
                .egress_filter
                .as_ref()
                .is_some_and(|f| f.kind == meshmodel::appmesh::EgressFilterType::DropAll)
            {
                lose(&m.origin, "spec.egressFilter", "egress filter DROP_ALL");
            }
        }
        for node in mesh.virtual_nodes.values() {
            let (origin, spec) = (&node.origin, &node.value.spec);
            for (i, l) in spec.listeners.iter().enumerate() {
                let given = ListenerSettings {
                    outlier_detection: l.outlier_detection.is_some(),
                    health_check: l.health_check.is_some(),
                    connection_pool: l.connection_pool.is_some(),
                    tls: l.tls.is_some(),
                    timeout: l.timeout.is_some(),
                };
                for (field, feature) in given.features() {
                    lose(origin, &format!("spec.listeners[{i}].{field}"), feature);
                }
            }
            if spec.backend_defaults.is_some() {
                lose(origin, "spec.backendDefaults", "TLS and mutual TLS (files)");
            }
            if spec.logging.is_some() {
                lose(origin, "spec.logging", "access logs");
            }
            if !spec.backends.is_empty() {
                lose(
                    origin,
                    "spec.backends",
                    "backends (which services a node may call)",
                );
            }
            for i in 1..spec.listeners.len() {
                lose(
                    origin,
                    &format!("spec.listeners[{i}]"),
                    SEVERAL_NODE_LISTENERS,
                );
            }
        }
        for router in mesh.virtual_routers.values() {
            for i in 1..router.value.spec.listeners.len() {
                lose(
                    &router.origin,
                    &format!("spec.listeners[{i}]"),
                    SEVERAL_ROUTER_LISTENERS,
                );
            }
        }
        for gateway in mesh.virtual_gateways.values() {
            lose(&gateway.origin, "spec", GATEWAYS);
            let (origin, spec) = (&gateway.origin, &gateway.value.spec);
            for (i, l) in spec.listeners.iter().enumerate() {
                let given = ListenerSettings {
                    health_check: l.health_check.is_some(),
                    connection_pool: l.connection_pool.is_some(),
                    tls: l.tls.is_some(),
                    ..ListenerSettings::default()
                };
                for (field, feature) in given.features() {
                    lose(origin, &format!("spec.listeners[{i}].{field}"), feature);
                }
            }
            if spec.backend_defaults.is_some() {
                lose(origin, "spec.backendDefaults", "TLS and mutual TLS (files)");
            }
            if spec.logging.is_some() {
                lose(origin, "spec.logging", "access logs");
            }
        }
        for route in mesh.gateway_routes.values() {
            lose(&route.origin, "spec", GATEWAYS);
        }
    }

    /// Notes that `feature`, at `path` of `origin`, does not reach the target.
    /// Notes a loss, once (a route on several listeners is read once per listener).
    fn lose(&mut self, origin: &str, path: &str, feature: &'static str) {
        let reason = lost(self.table, feature).unwrap_or("not carried");
        let loss = Loss {
            origin: origin.to_owned(),
            path: path.to_owned(),
            feature,
            reason: reason.to_owned(),
        };
        if !self.losses.contains(&loss) {
            self.losses.push(loss);
        }
    }
}

/// Which of a listener's settings are given.
#[derive(Debug, Default)]
struct ListenerSettings {
    outlier_detection: bool,
    health_check: bool,
    connection_pool: bool,
    tls: bool,
    timeout: bool,
}

impl ListenerSettings {
    /// (field, feature) of each setting given.
    fn features(&self) -> Vec<(&'static str, &'static str)> {
        [
            (
                self.outlier_detection,
                "outlierDetection",
                "outlier detection",
            ),
            (self.health_check, "healthCheck", "listener health checks"),
            (self.connection_pool, "connectionPool", "connection pools"),
            (self.tls, "tls", "TLS and mutual TLS (files)"),
            (self.timeout, "timeout", "per-request and idle timeouts"),
        ]
        .into_iter()
        .filter(|(given, _, _)| *given)
        .map(|(_, field, feature)| (field, feature))
        .collect()
    }
}

/// The routes of a router as App Mesh orders them, each with its HTTP-like form.
fn http_of(r: &RouteInput) -> Option<(HttpRoute, &'static str)> {
    let s = &r.spec;
    if let Some(h) = &s.http_route {
        return Some((h.clone(), "spec.httpRoute"));
    }
    if let Some(h) = &s.http2_route {
        return Some((h.clone(), "spec.http2Route"));
    }
    s.grpc_route
        .as_ref()
        .map(|g| (g.as_http(), "spec.grpcRoute"))
}

/// An HTTP-like route's match and action, where they are, and its weighted targets;
/// `None` for a TCP route, which is reported lost (the exports write HTTP rules only).
fn http_targets<'r>(
    out: &mut Export,
    origin: &str,
    route: &'r RouteInput,
) -> Option<(
    HttpRoute,
    &'static str,
    &'r [meshmodel::appmesh::WeightedTarget],
)> {
    if route.spec.tcp_route.is_some() {
        out.lose(origin, "spec.tcpRoute", "TCP routes");
        return None;
    }
    let (h, at) = http_of(route)?;
    let (_, targets) = route.spec.weighted_targets()?;
    Some((h, at, targets))
}

/// Whether a route matches on more than path prefix or exact, headers exact or prefix, and
/// the method.
fn beyond_simple(h: &HttpRoute) -> bool {
    let m = &h.route_match;
    m.path.as_ref().is_some_and(|p| p.regex.is_some())
        || m.scheme.is_some()
        || !m.query_parameters.is_empty()
        || m.headers.iter().any(|x| {
            x.invert.unwrap_or(false)
                || x.header_match
                    .as_ref()
                    .is_none_or(|hm| hm.exact.is_none() && hm.prefix.is_none())
        })
}

/// A virtual service's name as a Service Connect client alias: the port clients call and
/// the node's listener port it reaches.
#[derive(Debug, Clone)]
struct Alias {
    dns: String,
    port: i64,
    target_port: i64,
    timeout: Option<Value>,
}

/// Of one router listener's routes (in priority order), the one Service Connect carries
/// (the unconditional one, else the last) and where it goes: the node it sends the most
/// weight to, that node's port, and its timeouts. The others are reported lost, as are
/// its other targets, its retries.
fn service_connect_choice(
    out: &mut Export,
    routes: &[(&String, &RouteInput)],
    first_port: &dyn Fn(&str) -> i64,
) -> Option<(String, i64, Option<Value>)> {
    let unconditional = |r: &RouteInput| {
        http_of(r).is_none_or(|(h, _)| {
            let m = &h.route_match;
            m.headers.is_empty()
                && m.method.is_none()
                && m.path.is_none()
                && m.query_parameters.is_empty()
                && m.scheme.is_none()
                && m.prefix.as_deref().is_none_or(|p| p == "/")
        })
    };
    let chosen = routes
        .iter()
        .position(|(_, r)| unconditional(r))
        .or(routes.len().checked_sub(1));
    let mut choice = None;
    for (i, &(origin, route)) in routes.iter().enumerate() {
        if Some(i) != chosen {
            let (feature, at) = match http_of(route) {
                Some((h, at)) if beyond_simple(&h) => (UNMATCHED, at),
                Some((_, at)) => (SIMPLE_MATCHES, at),
                None => (SIMPLE_MATCHES, "spec"),
            };
            out.lose(origin, &format!("{at}.match"), feature);
            continue;
        }
        let Some((path, targets)) = route.spec.weighted_targets() else {
            continue;
        };
        let Some(best) = targets.iter().max_by_key(|t| t.weight) else {
            continue;
        };
        if targets.iter().filter(|t| t.weight > 0).count() > 1 {
            out.lose(origin, path, "weighted targets");
        }
        if let Some((h, at)) = http_of(route) {
            if h.retry_policy.is_some() {
                out.lose(origin, &format!("{at}.retryPolicy"), "retry policies");
            }
        }
        let timeout = http_of(route).and_then(|(h, _)| h.timeout).map(|t| {
            let mut v = json!({});
            if let Some(d) = t.per_request {
                v["perRequestTimeoutSeconds"] = json!(d.to_std().as_secs().max(1));
            }
            if let Some(d) = t.idle {
                v["idleTimeoutSeconds"] = json!(d.to_std().as_secs());
            }
            v
        });
        let port = best.port.unwrap_or_else(|| first_port(&best.virtual_node));
        choice = Some((best.virtual_node.clone(), port, timeout));
    }
    choice
}

/// ECS Service Connect for `mesh` and its `tasks`.
pub fn service_connect(mesh: &Mesh, tasks: &[Task]) -> Export {
    let mut out = Export::new(SERVICE_CONNECT, mesh);
    // Who gets each virtual service's name, per listener of its router or node: the node
    // the listener's unconditional route sends the most weight to (at the port its target
    // names), or the node that provides it.
    let mut aliases: BTreeMap<String, Vec<Alias>> = BTreeMap::new();
    let first_port = |node: &str| {
        mesh.virtual_nodes
            .get(node)
            .and_then(|n| n.value.spec.listeners.first())
            .map_or(80, |l| l.port_mapping.port)
    };
    for (name, service) in &mesh.virtual_services {
        let provider = service.value.spec.provider.as_ref();
        if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
            let node = &node.virtual_node_name;
            for l in mesh
                .virtual_nodes
                .get(node)
                .map(|n| n.value.spec.listeners.as_slice())
                .unwrap_or_default()
            {
                aliases.entry(node.clone()).or_default().push(Alias {
                    dns: name.clone(),
                    port: l.port_mapping.port,
                    target_port: l.port_mapping.port,
                    timeout: None,
                });
            }
            continue;
        }
        let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) else {
            continue;
        };
        let router_name = &router.virtual_router_name;
        let mut routes: Vec<(&String, &RouteInput)> = mesh
            .routes
            .iter()
            .filter(|((r, _), _)| r == router_name)
            .map(|(_, s)| (&s.origin, &*s.value))
            .collect();
        routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
        for port in mesh.service_ports(name) {
            let on_port: Vec<(&String, &RouteInput)> = routes
                .iter()
                .copied()
                .filter(|(_, r)| r.spec.match_port().is_none_or(|p| p == port))
                .collect();
            if let Some((node, target_port, timeout)) =
                service_connect_choice(&mut out, &on_port, &first_port)
            {
                aliases.entry(node).or_default().push(Alias {
                    dns: name.clone(),
                    port,
                    target_port,
                    timeout,
                });
            }
        }
    }
    let namespace = mesh
        .virtual_services
        .keys()
        .find_map(|n| n.split_once('.').map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| "local".to_owned());
    for task in tasks {
        // A gateway's task is Envoy alone: nothing of it runs under Service Connect (its
        // loss is reported with the gateway's).
        if task.gateway().is_some() {
            continue;
        }
        let node = mesh.virtual_nodes.get(&task.virtual_node);
        let discovery = node
            .and_then(|n| n.value.spec.service_discovery.as_ref())
            .and_then(|d| d.dns.as_ref())
            .and_then(|d| d.hostname.split('.').next().map(ToOwned::to_owned))
            .unwrap_or_else(|| task.virtual_node.clone());
        // A Service Connect service per node listener, on the app's port mapping of that
        // port (named here where the task definition does not name it).
        let listeners = node
            .map(|n| n.value.spec.listeners.as_slice())
            .unwrap_or_default();
        let names = aliases.get(&task.virtual_node).cloned().unwrap_or_default();
        let mut port_names = BTreeMap::new();
        let mut services = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let port = l.port_mapping.port;
            let port_name = task
                .app_containers()
                .flat_map(|c| c.port_mappings.iter())
                .filter(|p| p.container_port == Some(port))
                .find_map(|p| p.other.get("name").and_then(Value::as_str))
                .map_or_else(
                    || {
                        let name = format!("{discovery}-{port}");
                        port_names.insert(port, name.clone());
                        name
                    },
                    ToOwned::to_owned,
                );
            let discovery_name = match i {
                0 => discovery.clone(),
                _ => format!("{discovery}-{port}"),
            };
            let mut service = json!({"portName": port_name, "discoveryName": discovery_name});
            let here: Vec<&Alias> = names.iter().filter(|a| a.target_port == port).collect();
            if !here.is_empty() {
                service["clientAliases"] = here
                    .iter()
                    .map(|a| json!({"port": a.port, "dnsName": a.dns}))
                    .collect();
                if let Some(timeout) = here.iter().find_map(|a| a.timeout.clone()) {
                    service["timeout"] = timeout;
                }
            }
            services.push(service);
        }
        out.files.insert(
            format!("{}.service-connect.json", task.definition.family),
            json!({"serviceConnectConfiguration": {
                "enabled": true,
                "namespace": namespace,
                "services": services
            }}),
        );
        // The task definition without the Envoy and its APPMESH proxy: Service Connect adds
        // a proxy of its own.
        let mut td = serde_json::to_value(&task.definition).unwrap_or(Value::Null);
        if let Some(o) = td.as_object_mut() {
            o.remove("proxyConfiguration");
        }
        let envoy = task.proxy.container_name.clone();
        if let Some(containers) = td["containerDefinitions"].as_array_mut() {
            containers.retain(|c| c["name"] != envoy.as_str());
            for c in containers.iter_mut() {
                for mapping in c["portMappings"].as_array_mut().into_iter().flatten() {
                    let port = mapping["containerPort"].as_i64().unwrap_or_default();
                    if let Some(name) = port_names.get(&port) {
                        mapping["name"] = json!(name);
                    }
                }
                if let Some(deps) = c["dependsOn"].as_array_mut() {
                    deps.retain(|d| d["containerName"] != envoy.as_str());
                    if deps.is_empty() {
                        c.as_object_mut().map(|o| o.remove("dependsOn"));
                    }
                }
            }
        }
        out.files
            .insert(format!("{}.json", task.definition.family), td);
    }
    out
}

/// A name Lattice takes (`^[a-z0-9][a-z0-9-]*$`, at most 40 characters): lower case, other
/// characters as `-`.
fn lattice_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
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
    let mut steps: Vec<(&'static str, String, Value)> = Vec::new();
    let mesh_name = mesh.name().unwrap_or("mesh").to_owned();
    steps.push((
        "create-service-network",
        "network".into(),
        json!({"name": lattice_name(&mesh_name), "authType": "NONE"}),
    ));
    // A target group per node listener: the first named as the node, the others with their
    // port after it (Lattice names are unique per account).
    let group_name = |node: &str, port: Option<i64>| {
        let listeners = mesh
            .virtual_nodes
            .get(node)
            .map(|n| n.value.spec.listeners.as_slice())
            .unwrap_or_default();
        match listeners
            .iter()
            .position(|l| Some(l.port_mapping.port) == port)
        {
            Some(i) if i > 0 => {
                format!("{}-{}", lattice_name(node), listeners[i].port_mapping.port)
            }
            _ => lattice_name(node),
        }
    };
    for (name, node) in &mesh.virtual_nodes {
        for l in &node.value.spec.listeners {
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
            let group = group_name(name, Some(l.port_mapping.port));
            steps.push((
                "create-target-group",
                format!("tg-{group}"),
                json!({"name": group, "type": "IP", "config": config}),
            ));
        }
    }
    let forward = |targets: &[meshmodel::appmesh::WeightedTarget]| {
        json!({"forward": {"targetGroups": targets.iter().map(|t| json!({
            "targetGroupIdentifier": format!("@{{tg-{}}}", group_name(&t.virtual_node, t.port)),
            "weight": lattice_weight(t.weight),
        })).collect::<Vec<_>>()}})
    };
    // A Lattice listener per App Mesh listener: the first named `listener`, the others with
    // their port after it; references likewise.
    let listener_names = |vs: &str, i: usize, port: i64| match i {
        0 => (
            "listener".to_owned(),
            format!("listener-{}", lattice_name(vs)),
        ),
        _ => (
            format!("listener-{port}"),
            format!("listener-{}-{port}", lattice_name(vs)),
        ),
    };
    for (vs_name, service) in &mesh.virtual_services {
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
                steps.push((
                    "create-listener",
                    reference,
                    json!({"serviceIdentifier": format!("@{{{svc}}}"), "name": name, "protocol": "HTTP", "port": port,
                        "defaultAction": forward(&[meshmodel::appmesh::WeightedTarget {
                            virtual_node: node.clone(), weight: 100, port: Some(port) }])}),
                ));
            }
            continue;
        }
        let Some(router_name) = provider
            .and_then(|p| p.virtual_router.as_ref())
            .map(|r| r.virtual_router_name.clone())
        else {
            continue;
        };
        let router_listeners = mesh
            .virtual_routers
            .get(&router_name)
            .map(|r| r.value.spec.listeners.clone())
            .unwrap_or_default();
        let mut routes: Vec<(&String, &RouteInput)> = mesh
            .routes
            .iter()
            .filter(|((r, _), _)| *r == router_name)
            .map(|(_, s)| (&s.origin, &*s.value))
            .collect();
        routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
        for (i, l) in router_listeners.iter().enumerate() {
            let port = l.port_mapping.port;
            let (name, listener) = listener_names(vs_name, i, port);
            // The routes whose match names this port (all of them with one listener); a
            // route on several listeners is lost only once.
            let on_port: Vec<_> = routes
                .iter()
                .copied()
                .filter(|(_, r)| r.spec.match_port().is_none_or(|p| p == port))
                .collect();
            let (default, rules) = lattice_rules(&mut out, &on_port, &forward);
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
    let node_port = |node: &str| {
        mesh.virtual_nodes
            .get(node)
            .and_then(|n| n.value.spec.listeners.first())
            .map_or(80, |l| l.port_mapping.port)
    };
    // A Service with a port per listener (named by its protocol, and by its port as well
    // when there are several: port names are unique).
    let service = |name: &str, listeners: &[(i64, &str)], selector: Option<&str>| {
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
    };
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
            service(&k8s_name(name), &listeners, Some(&k8s_name(name))),
        );
    }
    for (vs_name, vs) in &mesh.virtual_services {
        let front = k8s_name(vs_name.split('.').next().unwrap_or(vs_name));
        let Some(router_name) = vs
            .value
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.virtual_router.as_ref())
            .map(|r| r.virtual_router_name.clone())
        else {
            continue;
        };
        let Some(router) = mesh.virtual_routers.get(&router_name) else {
            continue;
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
                service(&front, &ports, None),
            );
        }
        let mut routes: Vec<(&String, &RouteInput)> = mesh
            .routes
            .iter()
            .filter(|((r, _), _)| *r == router_name)
            .map(|(_, s)| (&s.origin, &*s.value))
            .collect();
        routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
        // A route object per listener, attached to that port of the Service: the routes
        // whose match names the port (all of them when the router has one listener).
        for (i, &(port, protocol)) in listeners.iter().enumerate() {
            let grpc = protocol == Protocol::Grpc;
            let mut rules = Vec::new();
            let on_port = routes
                .iter()
                .copied()
                .filter(|(_, r)| r.spec.match_port().is_none_or(|p| p == port));
            for (origin, route) in on_port {
                let Some((h, at, targets)) = http_targets(&mut out, origin, route) else {
                    continue;
                };
                let backends: Vec<Value> = targets
                .iter()
                .map(|t| json!({"name": k8s_name(&t.virtual_node),
                    "port": t.port.unwrap_or_else(|| node_port(&t.virtual_node)), "weight": t.weight}))
                .collect();
                if h.retry_policy.is_some() {
                    out.lose(origin, &format!("{at}.retryPolicy"), "retry policies");
                }
                let m = &h.route_match;
                let unmatched = |out: &mut Export, field: &str| {
                    out.lose(origin, &format!("{at}.match.{field}"), UNMATCHED);
                };
                let headers = k8s_headers(&m.headers, |i| {
                    unmatched(&mut out, &format!("headers[{i}]"))
                });
                let mut matched = json!({});
                if !headers.is_empty() {
                    matched["headers"] = json!(headers);
                }
                if m.scheme.is_some() {
                    unmatched(&mut out, "scheme");
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
                } else {
                    matched["path"] = match (&m.prefix, &m.path) {
                        (_, Some(p)) if p.exact.is_some() => {
                            json!({"type": "Exact", "value": p.exact})
                        }
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
                            Some(v) => params
                                .push(json!({"type": "Exact", "name": q.name, "value": v.exact})),
                            None => unmatched(&mut out, &format!("queryParameters[{i}]")),
                        }
                    }
                    if !params.is_empty() {
                        matched["queryParams"] = json!(params);
                    }
                }
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
                rules.push(rule);
            }
            if protocol == Protocol::Tcp || rules.is_empty() {
                // No route to write (Gateway API v1 has no TCPRoute; TCP routes are reported
                // as lost above).
                continue;
            }
            let kind = if grpc { "GRPCRoute" } else { "HTTPRoute" };
            let name = match i {
                0 => k8s_name(&router_name),
                _ => format!("{}-{port}", k8s_name(&router_name)),
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
    gateway_api_gateways(mesh, &mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mesh that uses every feature the tables name.
    fn every_feature() -> Mesh {
        let tls = json!({"mode": "STRICT", "certificate": {"file": {
            "certificateChain": "/c.pem", "privateKey": "/c.key"}}});
        let listener = |protocol: &str| {
            json!([{"portMapping": {"port": 8080, "protocol": protocol},
                "healthCheck": {"protocol": "http", "path": "/health", "healthyThreshold": 2,
                    "unhealthyThreshold": 2, "timeoutMillis": 2000, "intervalMillis": 5000},
                "outlierDetection": {"maxServerErrors": 5, "interval": {"value": 10, "unit": "s"},
                    "baseEjectionDuration": {"value": 30, "unit": "s"}, "maxEjectionPercent": 10},
                "connectionPool": {"http": {"maxConnections": 10}},
                "timeout": {"http": {"perRequest": {"value": 5, "unit": "s"}}},
                "tls": tls}])
        };
        let node = |name: &str, backends: Value| {
            json!({"meshName": "m", "virtualNodeName": name, "spec": {
                "listeners": listener("http"),
                "serviceDiscovery": {"dns": {"hostname": format!("{name}.m.local")}},
                "backends": backends,
                "backendDefaults": {"clientPolicy": {"tls": {"validation": {"trust": {"file": {"certificateChain": "/ca.pem"}}}}}},
                "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}}}})
        };
        let targets = json!({"weightedTargets": [
            {"virtualNode": "a", "weight": 50}, {"virtualNode": "b", "weight": 50}]});
        let route = |name: &str, priority: i64, m: Value| {
            json!({"meshName": "m", "virtualRouterName": "web", "routeName": name, "spec": {
                "priority": priority, "httpRoute": {"match": m, "action": targets,
                    "retryPolicy": {"maxRetries": 1, "perRetryTimeout": {"value": 1, "unit": "s"},
                        "httpRetryEvents": ["server-error"]},
                    "timeout": {"perRequest": {"value": 1, "unit": "s"}}}}})
        };
        let docs = [
            json!({"meshName": "m", "spec": {"egressFilter": {"type": "DROP_ALL"}}}),
            node("a", json!([])),
            node("b", json!([])),
            json!({"meshName": "m", "virtualRouterName": "web", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}),
            route(
                "canary",
                1,
                json!({"prefix": "/", "headers": [{"name": "x", "match": {"exact": "1"}}]}),
            ),
            route(
                "odd",
                2,
                json!({"path": {"regex": "/a.*"}, "scheme": "https",
                "queryParameters": [{"name": "q"}], "headers": [{"name": "y", "match": {"suffix": "z"}}]}),
            ),
            route("all", 3, json!({"prefix": "/"})),
            json!({"meshName": "m", "virtualRouterName": "raw", "spec": {
                "listeners": [{"portMapping": {"port": 9000, "protocol": "tcp"}}]}}),
            json!({"meshName": "m", "virtualRouterName": "raw", "routeName": "raw", "spec": {
                "tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}),
            json!({"meshName": "m", "virtualServiceName": "web.m.local", "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "web"}}}}),
            json!({"meshName": "m", "virtualServiceName": "raw.m.local", "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "raw"}}}}),
            node(
                "client",
                json!([{"virtualService": {"virtualServiceName": "web.m.local"}}]),
            ),
            json!({"meshName": "m", "virtualGatewayName": "in", "spec": {
                "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}}),
            // A node of two listeners.
            json!({"meshName": "m", "virtualNodeName": "two", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}},
                    {"portMapping": {"port": 9090, "protocol": "grpc"}}],
                "serviceDiscovery": {"dns": {"hostname": "two.m.local"}}}}),
            // gRPC: a router of two listeners with a route on a service and method, and a gateway
            // route to it.
            json!({"meshName": "m", "virtualRouterName": "rpc", "spec": {
                "listeners": [{"portMapping": {"port": 9090, "protocol": "grpc"}},
                    {"portMapping": {"port": 9095, "protocol": "http"}}]}}),
            json!({"meshName": "m", "virtualRouterName": "rpc", "routeName": "rpc", "spec": {
                "grpcRoute": {"match": {"serviceName": "gopher.Gopher", "methodName": "Answer",
                    "port": 9090},
                    "action": {"weightedTargets": [{"virtualNode": "two", "weight": 1, "port": 9090}]}}}}),
            json!({"meshName": "m", "virtualServiceName": "rpc.m.local", "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "rpc"}}}}),
            json!({"meshName": "m", "virtualGatewayName": "rpcin", "spec": {
                "listeners": [{"portMapping": {"port": 9091, "protocol": "grpc"}}]}}),
            json!({"meshName": "m", "virtualGatewayName": "rpcin", "gatewayRouteName": "rpc",
                "spec": {"grpcRoute": {"match": {"serviceName": "gopher.Gopher"}, "action": {
                    "target": {"virtualService": {"virtualServiceName": "rpc.m.local"}, "port": 9090}}}}}),
            json!({"meshName": "m", "virtualGatewayName": "in", "gatewayRouteName": "web",
                "spec": {"httpRoute": {"match": {"prefix": "/web/"}, "action": {
                    "target": {"virtualService": {"virtualServiceName": "web.m.local"}},
                    "rewrite": {"prefix": {"defaultPrefix": "DISABLED"}}}}}}),
        ];
        let mut mesh = Mesh::default();
        for (i, doc) in docs.iter().enumerate() {
            let origin = format!("doc{i}.json");
            let r = meshmodel::Resource::from_value(&origin, doc.clone()).expect("a resource");
            mesh = mesh.apply(&origin, r).expect("accepted");
        }
        mesh
    }

    /// Fed a mesh that uses every feature, each export names every feature its table says it
    /// loses: nothing is dropped without a word.
    #[test]
    fn every_lost_feature_in_use_is_reported() {
        let mesh = every_feature();
        for (target, table, export) in [
            (
                "Service Connect",
                SERVICE_CONNECT,
                service_connect(&mesh, &[]),
            ),
            ("Lattice", LATTICE, lattice(&mesh)),
            ("Gateway API", GATEWAY_API, gateway_api(&mesh)),
        ] {
            for (feature, why) in table {
                if why.is_some() {
                    assert!(
                        export.losses.iter().any(|l| l.feature == *feature),
                        "{target} loses `{feature}` without saying so: {:#?}",
                        export.losses
                    );
                }
            }
        }
    }

    fn shipped_mesh() -> (Mesh, Vec<Task>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        meshmodel::load(&dir.join("mesh"), &dir.join("taskdefs")).expect("the shipped mesh")
    }

    /// The schema of what the Gateway API export writes, kept as test data
    /// (`tests/data/gateway-api/v1.schema.json`, see its `$comment`).
    fn gateway_api_schema() -> jsonschema::Validator {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/gateway-api/v1.schema.json");
        let text = std::fs::read_to_string(&path).expect("the schema file");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema compiles")
    }

    /// Each error as `JSON path: reason`.
    fn schema_errors(schema: &jsonschema::Validator, doc: &Value) -> Vec<String> {
        schema
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    /// Everything the Gateway API export writes, for the shipped mesh and for a mesh that
    /// uses every feature, validates against the Gateway API v1 and core v1 schemas; every
    /// kind it writes is among them.
    #[test]
    fn gateway_api_output_validates_against_the_schemas() {
        let schema = gateway_api_schema();
        let mut kinds = std::collections::BTreeSet::new();
        for mesh in [shipped_mesh().0, every_feature()] {
            let export = gateway_api(&mesh);
            assert!(!export.files.is_empty());
            let mut ports: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
            for (file, doc) in &export.files {
                let errors = schema_errors(&schema, doc);
                assert!(
                    errors.is_empty(),
                    "{file} does not validate: {errors:#?}\n{doc:#}"
                );
                kinds.insert(doc["kind"].as_str().unwrap_or_default().to_owned());
                if doc["kind"] == "Service" {
                    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                    let listed = doc["spec"]["ports"].as_array().into_iter().flatten();
                    ports.insert(name, listed.map(|p| &p["port"]).collect());
                }
            }
            // Every backend is a port of a Service the export wrote.
            for doc in export.files.values() {
                let rules = doc["spec"]["rules"].as_array().into_iter().flatten();
                for backend in rules.flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
                {
                    let name = backend["name"].as_str().unwrap_or_default();
                    assert!(
                        ports
                            .get(name)
                            .is_some_and(|p| p.contains(&&backend["port"])),
                        "{backend} is no port of a Service written: {ports:?}"
                    );
                }
            }
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["GRPCRoute", "Gateway", "HTTPRoute", "Service"]
        );
    }

    /// A router of two listeners: its virtual service's Service has both ports, and each
    /// port has the route object of its protocol with the routes whose match names it (the
    /// http port has none here, so it has no object).
    #[test]
    fn each_router_listener_is_a_route_object_on_its_port() {
        let files = gateway_api(&every_feature()).files;
        let ports = &files["service-rpc.yaml"]["spec"]["ports"];
        assert_eq!(ports[0]["port"], 9090);
        assert_eq!(
            (ports[1]["port"].clone(), ports[1]["name"].clone()),
            (json!(9095), json!("http-9095"))
        );
        let grpc = &files["grpcroute-rpc.yaml"]["spec"];
        assert_eq!(grpc["parentRefs"][0]["port"], 9090);
        assert_eq!(grpc["rules"][0]["matches"][0]["method"]["method"], "Answer");
        assert_eq!(grpc["rules"][0]["backendRefs"][0]["port"], 9090);
        assert!(
            !files.keys().any(|f| f.contains("rpc-9095")),
            "{:?}",
            files.keys()
        );
    }

    /// Every listener reaches Lattice: a target group per node listener (the first named as
    /// the node, the others with their port), a Lattice listener per router listener with
    /// the routes whose match names its port, forwarding to the target group of the port
    /// the weighted target names.
    #[test]
    fn each_listener_is_a_lattice_listener_and_target_group() {
        let (steps, out) = lattice_steps(&every_feature());
        let step = |reference: &str| {
            steps
                .iter()
                .find(|s| s.reference == reference)
                .unwrap_or_else(|| panic!("no step {reference}"))
                .input
                .clone()
        };
        assert_eq!(step("tg-two")["config"]["port"], 8080);
        assert_eq!(step("tg-two-9090")["name"], "two-9090");
        assert_eq!(step("tg-two-9090")["config"]["protocolVersion"], "GRPC");
        let first = step("listener-rpc-m-local");
        assert_eq!(
            (&first["name"], &first["port"]),
            (&json!("listener"), &json!(9090))
        );
        let second = step("listener-rpc-m-local-9095");
        assert_eq!(
            (&second["name"], &second["port"]),
            (&json!("listener-9095"), &json!(9095))
        );
        // The gRPC route names port 9090: its rule is on the first listener only.
        let rule = step("rule-rpc-m-local-rpc");
        assert_eq!(rule["listenerIdentifier"], "@{listener-rpc-m-local}");
        assert_eq!(
            rule["action"]["forward"]["targetGroups"][0]["targetGroupIdentifier"],
            "@{tg-two-9090}"
        );
        assert_eq!(
            second["defaultAction"],
            json!({"fixedResponse": {"statusCode": 404}})
        );
        assert!(
            !steps
                .iter()
                .any(|s| s.reference.starts_with("rule-rpc-m-local-9095")),
            "{:?}",
            steps.iter().map(|s| &s.reference).collect::<Vec<_>>()
        );
        assert!(
            !out.losses
                .iter()
                .any(|l| l.feature.starts_with("several listeners")),
            "{:?}",
            out.losses
        );
    }

    /// The schema refuses what the API server would: each of these changes to a valid
    /// HTTPRoute is an error at the path it names.
    #[test]
    fn the_gateway_api_schema_refuses_what_the_api_server_would() {
        let schema = gateway_api_schema();
        let export = gateway_api(&shipped_mesh().0);
        // The weighted rule of the distributor's routes, made the first.
        let mut route = export
            .files
            .values()
            .find(|d| d["kind"] == "HTTPRoute" && d["metadata"]["name"] == "distributor")
            .expect("the distributor's HTTPRoute")
            .clone();
        if let Some(rules) = route["spec"]["rules"].as_array_mut() {
            rules.retain(|r| r["backendRefs"][1].is_object());
        }
        assert_eq!(route["spec"]["rules"].as_array().map(Vec::len), Some(1));
        assert_eq!(schema_errors(&schema, &route), Vec::<String>::new());
        // Where the error must be, and the change.
        type Breakage = (&'static str, fn(&mut Value));
        let broken: [Breakage; 9] = [
            ("/spec/rules/0/backendRefs/0/weight", |d| {
                d["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(1_000_001)
            }),
            ("/spec/rules/0/backendRefs/0", |d| {
                if let Some(r) = d["spec"]["rules"][0]["backendRefs"][0].as_object_mut() {
                    r.remove("port");
                }
            }),
            ("/spec/rules/0/matches/0/path/value", |d| {
                d["spec"]["rules"][0]["matches"][0]["path"] =
                    json!({"type": "PathPrefix", "value": "api"})
            }),
            ("/spec/rules/0/matches/0/path/value", |d| {
                d["spec"]["rules"][0]["matches"][0]["path"] =
                    json!({"type": "Exact", "value": "/a//b"})
            }),
            ("/spec/rules/0/matches/0/method", |d| {
                d["spec"]["rules"][0]["matches"][0]["method"] = json!("FETCH")
            }),
            ("/spec/rules/0/matches/0/headers/0/name", |d| {
                d["spec"]["rules"][0]["matches"][0]["headers"] =
                    json!([{"name": "x gopher", "value": "v2"}])
            }),
            ("/spec/rules/0/timeouts/request", |d| {
                d["spec"]["rules"][0]["timeouts"] = json!({"request": "1.5s"})
            }),
            ("/spec/rules/0", |d| {
                d["spec"]["rules"][0]["retries"] = json!({"attempts": 2})
            }),
            ("/spec/rules/0/filters/0", |d| {
                d["spec"]["rules"][0]["filters"] = json!([{"type": "URLRewrite"}])
            }),
        ];
        for (at, change) in broken {
            let mut doc = route.clone();
            change(&mut doc);
            let errors = schema_errors(&schema, &doc);
            assert!(
                errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
                "no error at {at}: {errors:#?}"
            );
        }
        // A prefix rewrite needs exactly one match, on a path prefix.
        let mut doc = route.clone();
        doc["spec"]["rules"][0]["filters"] = json!([{"type": "URLRewrite", "urlRewrite":
            {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]);
        doc["spec"]["rules"][0]["matches"] = json!([{"path": {"type": "Exact", "value": "/a"}}]);
        assert!(!schema_errors(&schema, &doc).is_empty());
        doc["spec"]["rules"][0]["matches"] =
            json!([{"path": {"type": "PathPrefix", "value": "/a"}}]);
        assert_eq!(schema_errors(&schema, &doc), Vec::<String>::new());
    }

    /// Service Connect carries every listener: a node of two listeners is two services of
    /// its ECS service (the second on a port mapping the export names, where the task
    /// definition does not), and a router's second listener is a client alias of the node
    /// its route reaches, on the service of the port its target names.
    #[test]
    fn each_listener_is_a_service_connect_service() {
        let docs = [
            json!({"meshName": "m", "spec": {}}),
            json!({"meshName": "m", "virtualNodeName": "two", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}},
                    {"portMapping": {"port": 9090, "protocol": "grpc"}}],
                "serviceDiscovery": {"dns": {"hostname": "two.m.local"}}}}),
            json!({"meshName": "m", "virtualRouterName": "rpc", "spec": {
                "listeners": [{"portMapping": {"port": 80, "protocol": "http"}},
                    {"portMapping": {"port": 9090, "protocol": "grpc"}}]}}),
            json!({"meshName": "m", "virtualRouterName": "rpc", "routeName": "web", "spec": {
                "httpRoute": {"match": {"prefix": "/", "port": 80}, "action": {"weightedTargets": [
                    {"virtualNode": "two", "weight": 1, "port": 8080}]}}}}),
            json!({"meshName": "m", "virtualRouterName": "rpc", "routeName": "rpc", "spec": {
                "grpcRoute": {"match": {"serviceName": "gophers.Gopher", "port": 9090},
                    "action": {"weightedTargets": [{"virtualNode": "two", "weight": 1, "port": 9090}]}}}}),
            json!({"meshName": "m", "virtualServiceName": "rpc.m.local", "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "rpc"}}}}),
        ];
        let mut mesh = Mesh::default();
        for (i, doc) in docs.iter().enumerate() {
            let origin = format!("doc{i}.json");
            let r = meshmodel::Resource::from_value(&origin, doc.clone()).expect("a resource");
            mesh = mesh.apply(&origin, r).expect("accepted");
        }
        // The shipped distributor's task definition, made the task of `two`, its app port
        // 9090 added without a name.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../taskdefs");
        let text = std::fs::read_to_string(dir.join("distributor-v1.json")).expect("read");
        let text = text
            .replace(
                "mesh/gophermesh/virtualNode/distributor-v1",
                "mesh/m/virtualNode/two",
            )
            .replace("\"value\": \"8080\"", "\"value\": \"8080,9090\"");
        let mut definition: meshmodel::ecs::TaskDefinition =
            serde_json::from_str(&text).expect("a task definition");
        definition.container_definitions[0].port_mappings.push(
            serde_json::from_value(json!({"containerPort": 9090, "protocol": "tcp"}))
                .expect("a port mapping"),
        );
        let tasks = meshmodel::taskdef::check(
            &mesh,
            &[meshmodel::mesh::Sourced::new(
                "two.json".to_owned(),
                definition,
            )],
        )
        .expect("a task of two");
        let files = service_connect(&mesh, &tasks).files;
        let family = tasks[0].definition.family.clone();
        let services = &files[&format!("{family}.service-connect.json")]["serviceConnectConfiguration"]
            ["services"];
        assert_eq!(services.as_array().map(Vec::len), Some(2), "{services}");
        assert_eq!(services[0]["portName"], "distributor-http");
        assert_eq!(
            services[0]["clientAliases"],
            json!([{"port": 80, "dnsName": "rpc.m.local"}])
        );
        let second = &services[1];
        assert_eq!(
            second["clientAliases"],
            json!([{"port": 9090, "dnsName": "rpc.m.local"}])
        );
        let port_name = second["portName"].as_str().expect("a port name");
        assert_ne!(second["discoveryName"], services[0]["discoveryName"]);
        let mappings = &files[&format!("{family}.json")]["containerDefinitions"][0]["portMappings"];
        assert!(
            mappings
                .as_array()
                .expect("mappings")
                .iter()
                .any(|m| m["containerPort"] == 9090 && m["name"] == port_name),
            "{mappings}"
        );
    }

    #[test]
    fn every_loss_reason_comes_from_the_table() {
        let (mesh, tasks) = shipped_mesh();
        let export = service_connect(&mesh, &tasks);
        for loss in &export.losses {
            assert_eq!(
                lost(SERVICE_CONNECT, loss.feature),
                Some(loss.reason.as_str()),
                "{loss}"
            );
        }
        assert!(features_table().contains("| weighted targets | lost: "));
        let names = |t: &[Support]| {
            let mut n: Vec<&str> = t.iter().map(|(f, _)| *f).collect();
            n.sort_unstable();
            n
        };
        assert_eq!(
            names(SERVICE_CONNECT),
            names(LATTICE),
            "every target says what it does with every feature"
        );
        assert_eq!(names(SERVICE_CONNECT), names(GATEWAY_API));
    }
}
