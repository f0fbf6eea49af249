//! Exports of a mesh to where App Mesh users are sent next, each with an honest report of
//! what it cannot carry: for every App Mesh field in use that the target has no place for,
//! one [`Loss`] naming the file, the JSON path and why.
//!
//! ```text
//! service_connect   ECS Service Connect: per task, the task definition without the Envoy
//!                   and its APPMESH proxy, and the service's serviceConnectConfiguration
//! ```
//!
//! What each target carries is one table ([`SERVICE_CONNECT`]), which the report, the
//! README's table and the tests all read.

use std::collections::BTreeMap;

use meshmodel::Mesh;
use meshmodel::appmesh::{HttpRoute, RouteInput};
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
        "route matches (path, headers, method, query, scheme) and priority",
        Some("Service Connect routes a name to one service, without looking at requests"),
    ),
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
];

/// The reason `feature` is lost in `table`.
fn lost(table: &[Support], feature: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(f, _)| *f == feature)
        .and_then(|(_, why)| *why)
}

/// The markdown table of what each target carries (the README's).
pub fn features_table() -> String {
    let mut out = String::from("| App Mesh feature | ECS Service Connect |\n|---|---|\n");
    for (feature, why) in SERVICE_CONNECT {
        let cell = match why {
            None => "carried".to_owned(),
            Some(why) => format!("lost: {why}"),
        };
        out.push_str(&format!("| {feature} | {cell} |\n"));
    }
    out
}

/// What an export makes: files by name, and what it could not carry.
#[derive(Debug, Default)]
pub struct Export {
    pub files: BTreeMap<String, Value>,
    pub losses: Vec<Loss>,
}

impl Export {
    fn lose(&mut self, origin: &str, path: &str, feature: &'static str) {
        let reason = lost(SERVICE_CONNECT, feature).unwrap_or("not carried");
        self.losses.push(Loss {
            origin: origin.to_owned(),
            path: path.to_owned(),
            feature,
            reason: reason.to_owned(),
        });
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

/// ECS Service Connect for `mesh` and its `tasks`.
pub fn service_connect(mesh: &Mesh, tasks: &[Task]) -> Export {
    let mut out = Export::default();
    // Who gets each virtual service's name: the node a router's first route sends the
    // most weight to, or the node that provides it.
    let mut aliases: BTreeMap<String, Vec<(String, i64, Option<Value>)>> = BTreeMap::new();
    for (name, service) in &mesh.virtual_services {
        let provider = service.value.spec.provider.as_ref();
        if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
            let port = mesh
                .virtual_nodes
                .get(&node.virtual_node_name)
                .and_then(|n| n.value.spec.listeners.first())
                .map_or(80, |l| l.port_mapping.port);
            aliases
                .entry(node.virtual_node_name.clone())
                .or_default()
                .push((name.clone(), port, None));
            continue;
        }
        let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) else {
            continue;
        };
        let router_name = &router.virtual_router_name;
        let port = mesh
            .virtual_routers
            .get(router_name)
            .and_then(|r| r.value.spec.listeners.first())
            .map_or(80, |l| l.port_mapping.port);
        let mut routes: Vec<(&String, &RouteInput)> = mesh
            .routes
            .iter()
            .filter(|((r, _), _)| r == router_name)
            .map(|(_, s)| (&s.origin, &s.value))
            .collect();
        routes.sort_by_key(|(_, r)| r.spec.priority.unwrap_or(i64::MAX));
        // The route that takes every request (no condition), else the last one.
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
        for (i, (origin, route)) in routes.iter().enumerate() {
            if Some(i) != chosen {
                let at = http_of(route).map_or("spec", |(_, at)| at);
                out.lose(
                    origin,
                    &format!("{at}.match"),
                    "route matches (path, headers, method, query, scheme) and priority",
                );
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
            aliases.entry(best.virtual_node.clone()).or_default().push((
                name.clone(),
                port,
                timeout,
            ));
        }
    }
    if let Some(m) = &mesh.mesh {
        // ALLOW_ALL is what no filter does; DROP_ALL has no counterpart.
        if m.value
            .spec
            .egress_filter
            .as_ref()
            .is_some_and(|f| f.kind == meshmodel::appmesh::EgressFilterType::DropAll)
        {
            out.lose(&m.origin, "spec.egressFilter", "egress filter DROP_ALL");
        }
    }
    for node in mesh.virtual_nodes.values() {
        let (origin, spec) = (&node.origin, &node.value.spec);
        for (i, l) in spec.listeners.iter().enumerate() {
            let at = format!("spec.listeners[{i}]");
            for (present, field, feature) in [
                (
                    l.outlier_detection.is_some(),
                    "outlierDetection",
                    "outlier detection",
                ),
                (
                    l.health_check.is_some(),
                    "healthCheck",
                    "listener health checks",
                ),
                (
                    l.connection_pool.is_some(),
                    "connectionPool",
                    "connection pools",
                ),
                (l.tls.is_some(), "tls", "TLS and mutual TLS (files)"),
            ] {
                if present {
                    out.lose(origin, &format!("{at}.{field}"), feature);
                }
            }
        }
        if spec.backend_defaults.is_some() {
            out.lose(origin, "spec.backendDefaults", "TLS and mutual TLS (files)");
        }
        if spec.logging.is_some() {
            out.lose(origin, "spec.logging", "access logs");
        }
        if !spec.backends.is_empty() {
            out.lose(
                origin,
                "spec.backends",
                "backends (which services a node may call)",
            );
        }
    }
    let namespace = mesh
        .virtual_services
        .keys()
        .find_map(|n| n.split_once('.').map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| "local".to_owned());
    for task in tasks {
        let node = mesh.virtual_nodes.get(&task.virtual_node);
        let discovery = node
            .and_then(|n| n.value.spec.service_discovery.as_ref())
            .and_then(|d| d.dns.as_ref())
            .and_then(|d| d.hostname.split('.').next().map(ToOwned::to_owned))
            .unwrap_or_else(|| task.virtual_node.clone());
        let port_name = task
            .app_containers()
            .flat_map(|c| c.port_mappings.iter())
            .find_map(|p| {
                p.other
                    .get("name")
                    .and_then(Value::as_str)
                    .map(ToOwned::to_owned)
            })
            .unwrap_or_else(|| format!("{discovery}-port"));
        let mut service = json!({"portName": port_name, "discoveryName": discovery});
        let names = aliases.get(&task.virtual_node).cloned().unwrap_or_default();
        if !names.is_empty() {
            service["clientAliases"] = names
                .iter()
                .map(|(dns, port, _)| json!({"port": port, "dnsName": dns}))
                .collect();
            if let Some(timeout) = names.iter().find_map(|(_, _, t)| t.clone()) {
                service["timeout"] = timeout;
            }
        }
        out.files.insert(
            format!("{}.service-connect.json", task.definition.family),
            json!({"serviceConnectConfiguration": {
                "enabled": true,
                "namespace": namespace,
                "services": [service]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loss_reason_comes_from_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (mesh, tasks) =
            meshmodel::load(&dir.join("mesh"), &dir.join("taskdefs")).expect("the shipped mesh");
        let export = service_connect(&mesh, &tasks);
        for loss in &export.losses {
            assert_eq!(
                lost(SERVICE_CONNECT, loss.feature),
                Some(loss.reason.as_str()),
                "{loss}"
            );
        }
        assert!(features_table().contains("| weighted targets | lost: "));
    }
}
