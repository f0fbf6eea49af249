//! ECS Service Connect: per task, the task definition without the Envoy and its APPMESH
//! proxy, and the service's `serviceConnectConfiguration` (a client alias per listener).

use meshmodel::Mesh;
use meshmodel::appmesh::RouteInput;
use meshmodel::taskdef::Task;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::{
    Export, GATEWAYS, SEVERAL_NODE_LISTENERS, SEVERAL_ROUTER_LISTENERS, SIMPLE_MATCHES, Support,
    UNMATCHED, beyond_simple, http_of,
};

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
        super::TLS_ACM,
        Some(
            "Service Connect issues each service's certificate itself from an AWS Private CA authority (serviceConnectConfiguration tls.issuerCertificateAuthority): give it the authority the client policies trust; the listeners' ACM certificates are not used",
        ),
    ),
    (
        super::TLS_SDS,
        Some(
            "Service Connect takes certificates from AWS Private CA only; SDS secrets (SPIRE identities) do not carry",
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
    let aliases = client_aliases(&mut out, mesh);
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
        let names = aliases.get(&task.virtual_node).cloned().unwrap_or_default();
        let (services, port_names) = task_services(mesh, task, &names);
        out.files.insert(
            format!("{}.service-connect.json", task.definition.family),
            json!({"serviceConnectConfiguration": {
                "enabled": true,
                "namespace": namespace,
                "services": services
            }}),
        );
        out.files.insert(
            format!("{}.json", task.definition.family),
            without_envoy(task, &port_names),
        );
    }
    out
}

/// Who gets each virtual service's name, per listener of its router or node, by node: the
/// node the listener's unconditional route sends the most weight to (at the port its
/// target names), or the node that provides it.
fn client_aliases(out: &mut Export, mesh: &Mesh) -> BTreeMap<String, Vec<Alias>> {
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
                service_connect_choice(out, &on_port, &first_port)
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
    aliases
}

/// A Service Connect service per listener of `task`'s node, on the app's port mapping of
/// that port, with the client aliases `names` that reach it; and the port names made here
/// where the task definition does not name the port.
fn task_services(mesh: &Mesh, task: &Task, names: &[Alias]) -> (Vec<Value>, BTreeMap<i64, String>) {
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
    (services, port_names)
}

/// `task`'s definition without the Envoy and its APPMESH proxy (Service Connect adds a
/// proxy of its own), its port mappings named as `port_names` says.
fn without_envoy(task: &Task, port_names: &BTreeMap<i64, String>) -> Value {
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
    td
}
