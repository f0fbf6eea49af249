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

mod gateway_api;
mod lattice;
pub mod lattice_apply;
mod service_connect;

use std::collections::BTreeMap;

use meshmodel::Mesh;
use meshmodel::appmesh::{HttpRoute, RouteInput};
use serde::Serialize;
use serde_json::Value;

pub use gateway_api::{GATEWAY_API, gateway_api};
pub use lattice::{LATTICE, LATTICE_MESH_TAG, LatticeStep, lattice, lattice_steps};
pub use service_connect::{SERVICE_CONNECT, service_connect};

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

/// Virtual gateways and their gateway routes, as one feature.
const GATEWAYS: &str = "virtual gateways and gateway routes (ingress)";

/// Nodes and routers with more than one listener.
const SEVERAL_NODE_LISTENERS: &str = "several listeners per virtual node";
const SIMPLE_MATCHES: &str =
    "route matches (path prefix or exact, header exact or prefix, method) and priority";
const SEVERAL_ROUTER_LISTENERS: &str = "several listeners per virtual router";

/// TLS whose certificates or trust come from ACM and AWS Private CA.
const TLS_ACM: &str = "TLS from ACM certificates and Private CA trust";
/// TLS whose certificates or trust come from an SDS server beside the Envoy.
const TLS_SDS: &str = "TLS from an SDS server (SPIRE)";
const TLS_FILES: &str = "TLS and mutual TLS (files)";

/// The feature a listener's TLS is, by where its certificate and trust come from.
fn listener_tls_feature(tls: &meshmodel::appmesh::ListenerTls) -> &'static str {
    let trust = tls.validation.as_ref().map(|v| &v.trust);
    if tls.certificate.acm.is_some() {
        TLS_ACM
    } else if tls.certificate.sds.is_some() || trust.is_some_and(|t| t.sds.is_some()) {
        TLS_SDS
    } else {
        TLS_FILES
    }
}

/// The feature a node's or gateway's backend defaults are (their client policy's TLS), by
/// where its trust and certificate come from.
fn backend_defaults_feature(defaults: &meshmodel::appmesh::BackendDefaults) -> &'static str {
    let tls = defaults.client_policy.as_ref().and_then(|p| p.tls.as_ref());
    match tls {
        Some(t) if t.validation.trust.acm.is_some() => TLS_ACM,
        Some(t)
            if t.validation.trust.sds.is_some()
                || t.certificate.as_ref().is_some_and(|c| c.sds.is_some()) =>
        {
            TLS_SDS
        }
        _ => TLS_FILES,
    }
}

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
                    tls: l.tls.as_ref().map(listener_tls_feature),
                    timeout: l.timeout.is_some(),
                };
                for (field, feature) in given.features() {
                    lose(origin, &format!("spec.listeners[{i}].{field}"), feature);
                }
            }
            if let Some(defaults) = &spec.backend_defaults {
                lose(
                    origin,
                    "spec.backendDefaults",
                    backend_defaults_feature(defaults),
                );
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
                    tls: l.tls.as_ref().map(listener_tls_feature),
                    ..ListenerSettings::default()
                };
                for (field, feature) in given.features() {
                    lose(origin, &format!("spec.listeners[{i}].{field}"), feature);
                }
            }
            if let Some(defaults) = &spec.backend_defaults {
                lose(
                    origin,
                    "spec.backendDefaults",
                    backend_defaults_feature(defaults),
                );
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
    /// The TLS feature, when TLS is given.
    tls: Option<&'static str>,
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
            (self.tls.is_some(), "tls", self.tls.unwrap_or(TLS_FILES)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use meshmodel::taskdef::Task;
    use serde_json::json;

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
            // Nodes whose certificates come from ACM and from an SDS server.
            json!({"meshName": "m", "virtualNodeName": "acm", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                    "tls": {"mode": "STRICT", "certificate": {"acm": {
                        "certificateArn": "arn:aws:acm:us-east-1:111122223333:certificate/c"}}}}],
                "serviceDiscovery": {"dns": {"hostname": "acm.m.local"}}}}),
            json!({"meshName": "m", "virtualNodeName": "spire", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                    "tls": {"mode": "STRICT", "certificate": {"sds": {"secretName": "svid"}}}}],
                "serviceDiscovery": {"dns": {"hostname": "spire.m.local"}}}}),
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

    /// TLS is reported by where its certificates come from: files, ACM or an SDS server,
    /// each with what the target does with it.
    #[test]
    fn tls_losses_say_where_the_certificates_come_from() {
        use serde_json::json;
        let (mut mesh, tasks) = shipped_mesh();
        let acm = "arn:aws:acm:us-east-1:111122223333:certificate/abc";
        let ca = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca1";
        let edit = |mesh: &mut Mesh, node: &str, change: &dyn Fn(&mut serde_json::Value)| {
            let sourced = mesh.virtual_nodes.get_mut(node).expect("node");
            let mut doc = serde_json::to_value(&*sourced.value).expect("json");
            change(&mut doc);
            sourced.value = std::sync::Arc::new(serde_json::from_value(doc).expect("a node"));
        };
        edit(&mut mesh, "distributor-v1", &|d| {
            d["spec"]["listeners"][0]["tls"] =
                json!({"mode": "STRICT", "certificate": {"acm": {"certificateArn": acm}}});
        });
        edit(&mut mesh, "distributor-v2", &|d| {
            d["spec"]["listeners"][0]["tls"] =
                json!({"mode": "STRICT", "certificate": {"sds": {"secretName": "svid"}}});
        });
        edit(&mut mesh, "requester", &|d| {
            d["spec"]["backendDefaults"] = json!({"clientPolicy": {"tls": {"validation": {
                "trust": {"acm": {"certificateAuthorityArns": [ca]}}}}}});
        });
        let export = service_connect(&mesh, &tasks);
        let feature_at = |origin: &str, path: &str| {
            export
                .losses
                .iter()
                .find(|l| l.origin.ends_with(origin) && l.path == path)
                .map(|l| l.feature)
        };
        assert_eq!(
            feature_at("distributor-v1.json", "spec.listeners[0].tls"),
            Some(TLS_ACM)
        );
        assert_eq!(
            feature_at("distributor-v2.json", "spec.listeners[0].tls"),
            Some(TLS_SDS)
        );
        assert_eq!(
            feature_at("requester.json", "spec.backendDefaults"),
            Some(TLS_ACM)
        );
        assert!(
            lost(SERVICE_CONNECT, TLS_ACM).is_some_and(|why| why.contains("Private CA")),
            "Service Connect says what it does with ACM"
        );
    }
}
