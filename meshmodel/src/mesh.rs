//! The whole mesh: every resource, where it came from, and the checks that need more than
//! one resource to make (references, weights, names).
//!
//! ```text
//! mesh.rs  the Mesh (one map per resource kind), App Mesh's limits, queries
//! load     a mesh directory, read and checked
//! kinds    each resource kind's map behind one trait (what the edits share)
//! edit     insert, get, remove, list and diff resources
//! check    the checks of the whole mesh, by resource kind (check/)
//! ```

use std::collections::BTreeMap;

use crate::appmesh::{
    GatewayRouteInput, MeshInput, RouteInput, VirtualGatewayInput, VirtualNodeInput,
    VirtualRouterInput, VirtualServiceInput,
};
use crate::problem::{Problem, Problems};
use crate::resource::{Key, Resource};

mod check;
pub use check::logging::{
    LOG_OPERATORS, LOG_OPERATORS_WITH_LENGTH, LOG_OPERATORS_WITH_PARAMETER, parse_format,
};
mod edit;
mod kinds;
mod load;

pub use load::json_files;

/// A value and the origin (file path, `<api>`, ...) it was read from. The value is shared:
/// every change makes a new mesh, and the resources it does not touch are not copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub origin: String,
    pub value: std::sync::Arc<T>,
}

impl<T> Sourced<T> {
    pub fn new(origin: String, value: T) -> Self {
        Self {
            origin,
            value: std::sync::Arc::new(value),
        }
    }
}

/// Every resource of one mesh. Build it with [`Mesh::load_dir`] or [`Mesh::apply`]; both
/// check it, so a `Mesh` obtained from them is consistent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub mesh: Option<Sourced<MeshInput>>,
    pub virtual_nodes: BTreeMap<String, Sourced<VirtualNodeInput>>,
    pub virtual_routers: BTreeMap<String, Sourced<VirtualRouterInput>>,
    /// Keyed by (virtual router, route).
    pub routes: BTreeMap<(String, String), Sourced<RouteInput>>,
    pub virtual_services: BTreeMap<String, Sourced<VirtualServiceInput>>,
    pub virtual_gateways: BTreeMap<String, Sourced<VirtualGatewayInput>>,
    /// Keyed by (virtual gateway, gateway route).
    pub gateway_routes: BTreeMap<(String, String), Sourced<GatewayRouteInput>>,
    /// App Mesh's API lets a virtual node name a backend virtual service before that
    /// service exists (the walkthrough creates nodes first), and lets a service be deleted
    /// while nodes still name it. Files are checked strictly (`false`); a running mesh
    /// that the API changes follows the API (`true`). Such a backend gets no route until
    /// the service exists.
    pub backends_may_dangle: bool,
}

/// Why a resource cannot be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveError {
    NotFound(String),
    InUse(String),
}

impl std::fmt::Display for RemoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoveError::NotFound(m) | RemoveError::InUse(m) => f.write_str(m),
        }
    }
}

/// App Mesh's limits, from the botocore model and the service quotas.
pub mod limits {
    pub const NAME_MAX: usize = 255;
    pub const TARGETS: (usize, usize) = (1, 10);
    pub const WEIGHT: (i64, i64) = (0, 100);
    pub const PRIORITY: (i64, i64) = (0, 1000);
    pub const PORT: (i64, i64) = (1, 65535);
    pub const THRESHOLD: (i64, i64) = (2, 10);
    pub const HC_TIMEOUT_MS: (i64, i64) = (2000, 60000);
    pub const HC_INTERVAL_MS: (i64, i64) = (5000, 300_000);
    pub const HTTP_RETRY_EVENTS: &[&str] = &[
        "server-error",
        "gateway-error",
        "client-error",
        "stream-error",
    ];
    pub const TCP_RETRY_EVENTS: &[&str] = &["connection-error"];
    pub const GRPC_RETRY_EVENTS: &[&str] = &[
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ];
}

impl Mesh {
    /// A mesh named `name` that holds only its mesh resource (with an empty spec).
    pub fn named(name: &str) -> Result<Mesh, Problems> {
        let origin = format!("<mesh {name}>");
        let resource =
            Resource::from_value(&origin, serde_json::json!({"meshName": name, "spec": {}}))?;
        Mesh::default().apply(&origin, resource)
    }

    /// The mesh's name, when the mesh resource exists.
    pub fn name(&self) -> Option<&str> {
        self.mesh.as_ref().map(|m| m.value.mesh_name.as_str())
    }

    /// The mesh with `resource` created or replaced, if the result is consistent. `self` is
    /// never changed: a refused change leaves the running mesh as it was.
    pub fn apply(&self, origin: &str, resource: Resource) -> Result<Mesh, Problems> {
        let mut next = self.clone();
        next.insert(origin.to_owned(), resource);
        let problems = next.check();
        if problems.is_empty() {
            Ok(next)
        } else {
            Err(Problems(problems))
        }
    }

    /// The mesh with every one of `resources` created or replaced, checked once as a whole
    /// (so that they may name each other in any order); a resource given twice is refused.
    /// `self` is never changed.
    pub fn apply_all(&self, resources: &[(String, Resource)]) -> Result<Mesh, Problems> {
        let mut next = self.clone();
        let mut problems = Vec::new();
        let mut seen: BTreeMap<Key, &str> = BTreeMap::new();
        for (origin, resource) in resources {
            if let Some(first) = seen.insert(resource.key(), origin) {
                problems.push(Problem::new(
                    origin,
                    "",
                    format!("{} is given twice (first in {first})", resource.describe()),
                ));
                continue;
            }
            next.insert(origin.clone(), resource.clone());
        }
        if problems.is_empty() {
            problems = next.check();
        }
        match problems.is_empty() {
            true => Ok(next),
            false => Err(Problems(problems)),
        }
    }

    /// The gateway routes of `gateway`, highest precedence first, ordered as
    /// [`Mesh::routes_of`] orders routes.
    pub fn gateway_routes_of(&self, gateway: &str) -> Vec<&GatewayRouteInput> {
        let mut routes: Vec<&GatewayRouteInput> = owned_by(&self.gateway_routes, gateway)
            .map(|(_, s)| &*s.value)
            .filter(|r| r.virtual_gateway_name == gateway)
            .collect();
        routes.sort_by_key(|r| {
            (
                r.spec.priority.unwrap_or(i64::MAX),
                r.gateway_route_name.clone(),
            )
        });
        routes
    }

    /// The routes of `router`, highest precedence first (lowest `priority`; routes without
    /// one come last, by name), as App Mesh orders them.
    pub fn routes_of(&self, router: &str) -> Vec<&RouteInput> {
        let mut routes: Vec<&RouteInput> = owned_by(&self.routes, router)
            .map(|(_, s)| &*s.value)
            .filter(|r| r.virtual_router_name == router)
            .collect();
        routes.sort_by_key(|r| (r.spec.priority.unwrap_or(i64::MAX), r.route_name.clone()));
        routes
    }

    /// The listener ports of virtual service `name`'s provider (router or node).
    pub fn service_ports(&self, name: &str) -> Vec<i64> {
        let Some(provider) = self
            .virtual_services
            .get(name)
            .and_then(|s| s.value.spec.provider.as_ref())
        else {
            return Vec::new();
        };
        if let Some(r) = &provider.virtual_router {
            self.virtual_routers
                .get(&r.virtual_router_name)
                .map(|r| {
                    r.value
                        .spec
                        .listeners
                        .iter()
                        .map(|l| l.port_mapping.port)
                        .collect()
                })
                .unwrap_or_default()
        } else if let Some(n) = &provider.virtual_node {
            self.virtual_nodes
                .get(&n.virtual_node_name)
                .map(|n| {
                    n.value
                        .spec
                        .listeners
                        .iter()
                        .map(|l| l.port_mapping.port)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

/// The virtual service a gateway route sends to.
fn gateway_target(route: &GatewayRouteInput) -> Option<&String> {
    let s = &route.spec;
    s.http_route
        .as_ref()
        .or(s.http2_route.as_ref())
        .map(|r| &r.action.target)
        .or(s.grpc_route.as_ref().map(|g| &g.action.target))
        .map(|t| &t.virtual_service.virtual_service_name)
}

/// The entries of `map` (routes by router, gateway routes by gateway) keyed `(owner, _)`: a
/// range of the map, not a walk of all of it.
pub fn owned_by<'a, T>(
    map: &'a BTreeMap<(String, String), Sourced<T>>,
    owner: &str,
) -> impl Iterator<Item = (&'a (String, String), &'a Sourced<T>)> + use<'a, T> {
    let owner = owner.to_owned();
    map.range((owner.clone(), String::new())..)
        .take_while(move |((o, _), _)| *o == owner)
}

/// `re` without its leading plain text `prefix`: the regex `rest` such that `prefix + s`
/// matches `re` exactly when `s` matches `rest` (the original text of the rest of `re`).
/// `None` when `re` does not begin with `prefix` as literal characters at its top level
/// (an alternation, a group, a class or flags first).
pub fn strip_literal_prefix(re: &str, prefix: &str) -> Option<String> {
    use regex_syntax::ast::Ast;
    let ast = regex_syntax::ast::parse::Parser::new().parse(re).ok()?;
    let items: Vec<&Ast> = match &ast {
        Ast::Concat(c) => c.asts.iter().collect(),
        other => vec![other],
    };
    let mut wanted = prefix.chars();
    let mut end = 0;
    let mut next = wanted.next();
    for item in items {
        let Some(c) = next else { break };
        match item {
            Ast::Literal(l) if l.c == c => {
                end = l.span.end.offset;
                next = wanted.next();
            }
            _ => return None,
        }
    }
    if next.is_some() {
        return None;
    }
    re.get(end..).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Key;
    use std::path::Path;

    fn shipped() -> Mesh {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        Mesh::load_dir(&dir).expect("the shipped mesh loads")
    }

    /// The problems of adding `doc` to the shipped mesh, as `path: reason` lines.
    fn problems_adding(mesh: &Mesh, doc: serde_json::Value) -> Vec<String> {
        let r = Resource::from_value("new.json", doc).expect("parses");
        match mesh.apply("new.json", r) {
            Ok(_) => Vec::new(),
            Err(p) => {
                p.0.iter()
                    .map(|p| format!("{}: {}", p.path, p.reason))
                    .collect()
            }
        }
    }

    #[test]
    fn a_diff_names_what_a_change_touched_and_nothing_else() {
        let mesh = shipped();
        assert_eq!(mesh.diff(&mesh.clone()), (Vec::new(), Vec::new()));
        let (_, Resource::Route(mut route)) = mesh
            .get(&Key::Route("distributor".into(), "distributor".into()))
            .expect("the route")
        else {
            panic!("not a route")
        };
        route.spec.priority = Some(7);
        let next = mesh
            .apply("changed.json", Resource::Route(route.clone()))
            .expect("applies");
        let (changed, removed) = mesh.diff(&next);
        assert_eq!(removed, Vec::<Key>::new());
        assert_eq!(
            changed
                .iter()
                .map(|(k, o, r)| (k.clone(), o.as_str(), r.clone()))
                .collect::<Vec<_>>(),
            [(
                Key::Route("distributor".into(), "distributor".into()),
                "changed.json",
                Resource::Route(route)
            )]
        );
        let smaller = mesh
            .remove(&Key::GatewayRoute("ingress".into(), "requester".into()))
            .expect("removable");
        assert_eq!(
            mesh.diff(&smaller),
            (
                Vec::new(),
                vec![Key::GatewayRoute("ingress".into(), "requester".into())]
            )
        );
    }

    #[test]
    fn gateways_and_gateway_routes_are_checked_field_by_field() {
        let mesh = shipped();
        let gateway = |listeners: serde_json::Value| {
            serde_json::json!({"meshName": "gophermesh", "virtualGatewayName": "in",
                "spec": {"listeners": listeners}})
        };
        let bad = problems_adding(
            &mesh,
            gateway(serde_json::json!([
                {"portMapping": {"port": 9080, "protocol": "tcp"}},
                {"portMapping": {"port": 9080, "protocol": "http"},
                 "connectionPool": {"tcp": {"maxConnections": 1}}}
            ])),
        );
        assert_eq!(
            bad,
            [
                "spec.listeners[0].portMapping.protocol: a virtual gateway listener is http, http2 or grpc",
                "spec.listeners[1].portMapping.port: port 9080 has another listener already",
                "spec.listeners[1].connectionPool.tcp: a virtual gateway listener has no tcp connection pool (http, http2 or grpc)",
            ]
        );
        let r = Resource::from_value(
            "gw.json",
            gateway(serde_json::json!([{"portMapping": {"port": 9080, "protocol": "http"}}])),
        )
        .expect("parses");
        let mesh = mesh.apply("gw.json", r).expect("a gateway");
        let route = |spec: serde_json::Value| {
            serde_json::json!({"meshName": "gophermesh", "virtualGatewayName": "in",
                "gatewayRouteName": "r", "spec": spec})
        };
        let target = serde_json::json!({"virtualService": {
            "virtualServiceName": "distributor.gophers.local"}});
        assert_eq!(
            problems_adding(
                &mesh,
                route(serde_json::json!({"httpRoute": {
                    "match": {"prefix": "/a/", "path": {"exact": "/b"}, "port": 9999},
                    "action": {"target": {"virtualService": {"virtualServiceName": "distributor.gophers.local"}, "port": 81},
                        "rewrite": {"path": {"exact": "c"}, "hostname": {"defaultTargetHostname": "ON"}}}}}))
            ),
            [
                "spec.httpRoute.match.port: virtual gateway `in` has no http listener on port 9999 (it has: http 9080)",
                "spec.httpRoute.match: give a prefix or a path, not both",
                "spec.httpRoute.action.rewrite.path.exact: give the path to send, starting with /",
                "spec.httpRoute.action.rewrite.hostname.defaultTargetHostname: `ON` is not ENABLED or DISABLED",
                "spec.httpRoute.action.target.port: 81 is not a listener port of virtual service `distributor.gophers.local`'s provider (8080)",
            ]
        );
        assert_eq!(
            problems_adding(
                &mesh,
                route(serde_json::json!({"http2Route": {"match": {"prefix": "/"},
                    "action": {"target": target}}}))
            ),
            ["spec.http2Route: virtual gateway `in` has no http2 listener (it has: http 9080)"]
        );
        assert!(
            problems_adding(
                &mesh,
                route(serde_json::json!({"httpRoute": {
                    "match": {"hostname": {"suffix": ".example"}},
                    "action": {"target": target}}}))
            )
            .is_empty(),
            "a hostname alone is a match"
        );
    }

    #[test]
    fn deletes_are_refused_while_something_needs_the_resource() {
        let mesh = shipped();
        let in_use = |key: Key| match mesh.remove(&key) {
            Err(RemoveError::InUse(m)) => m,
            other => panic!("{key:?}: {other:?}"),
        };
        assert!(
            in_use(Key::VirtualNode("distributor-v1".into()))
                .contains("route distributor/distributor")
        );
        assert!(
            in_use(Key::VirtualRouter("distributor".into()))
                .contains("virtual service distributor.gophers.local")
        );
        assert!(in_use(Key::Mesh).contains("virtual node"));
        assert_eq!(
            mesh.remove(&Key::VirtualNode("nope".into())),
            Err(RemoveError::NotFound(
                "virtual node `nope` does not exist".into()
            ))
        );
        // Routes and a service can go; then the router's last users are gone too.
        let without_route = mesh
            .remove(&Key::Route("distributor".into(), "distributor".into()))
            .expect("a route can be deleted")
            .remove(&Key::Route(
                "distributor".into(),
                "distributor-canary".into(),
            ))
            .expect("the canary route can be deleted");
        // The gateway route that targets the service holds it until it goes.
        assert!(
            matches!(
                without_route.remove(&Key::VirtualService("distributor.gophers.local".into())),
                Err(RemoveError::InUse(m)) if m.contains("gateway route ingress/distributor")
            ),
            "a service a gateway route targets is in use"
        );
        assert!(
            matches!(
                mesh.remove(&Key::VirtualGateway("ingress".into())),
                Err(RemoveError::InUse(m)) if m.contains("gateway route ingress/requester")
            ),
            "a gateway with routes is in use"
        );
        let without_service = without_route
            .remove(&Key::GatewayRoute("ingress".into(), "distributor".into()))
            .expect("a gateway route can be deleted")
            .remove(&Key::VirtualService("distributor.gophers.local".into()))
            .expect("a service can be deleted");
        assert!(
            without_service
                .remove(&Key::VirtualRouter("distributor".into()))
                .is_ok()
        );
        assert_eq!(
            mesh,
            shipped(),
            "remove never changes the mesh it is called on"
        );
    }

    /// A header Envoy would refuse (a newline in its name, a line feed in its value, a
    /// character that is not a token's) is refused by the model, naming the field: a
    /// route the API accepts never makes its callers' Envoys NACK.
    #[test]
    fn header_matches_envoy_would_refuse_are_refused() {
        let mesh = shipped();
        let route = |name: &str, exact: &str| {
            serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
                "routeName": "distributor", "spec": {"httpRoute": {
                    "match": {"prefix": "/", "headers": [{"name": name, "match": {"exact": exact}}]},
                    "action": {"weightedTargets": [{"virtualNode": "distributor-v1", "weight": 1}]}}}})
        };
        for (name, exact, path, says) in [
            (
                "x-bad\nname",
                "v",
                "headers[0].name",
                "'\\n' is not allowed in a header name",
            ),
            ("x bad", "v", "headers[0].name", "' ' is not allowed"),
            (
                "x-ok",
                "a\r\nb",
                "headers[0].match.exact",
                "'\\r' is not allowed in a header value",
            ),
            (
                &"x".repeat(51),
                "v",
                "headers[0].name",
                "1 to 50 characters",
            ),
            ("", "v", "headers[0].name", "1 to 50 characters"),
        ] {
            let said = problems_adding(&mesh, route(name, exact)).join("\n");
            assert!(
                said.contains(&format!("spec.httpRoute.match.{path}")) && said.contains(says),
                "{name:?} {exact:?}: {said}"
            );
        }
        assert_eq!(
            problems_adding(&mesh, route("x-canary_1.A", "yes")),
            Vec::<String>::new()
        );
    }

    /// What the property test with a real Envoy found the model took and Envoy refused: a
    /// duration past protobuf's range, an empty suffix or regex to match a header, an empty
    /// query parameter name. Each is refused, naming the field; the same values in range
    /// are taken.
    #[test]
    fn values_envoy_refuses_are_refused() {
        let mesh = shipped();
        let route = |matching: serde_json::Value, extra: serde_json::Value| {
            let mut http = serde_json::json!({"match": matching,
                "action": {"weightedTargets": [{"virtualNode": "distributor-v1", "weight": 1}]}});
            for (k, v) in extra.as_object().into_iter().flatten() {
                http[k] = v.clone();
            }
            serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
                "routeName": "distributor", "spec": {"httpRoute": http}})
        };
        let prefix = serde_json::json!({"prefix": "/"});
        let refused = |doc: serde_json::Value| match Resource::from_value("new.json", doc) {
            Err(p) => p.to_string(),
            Ok(r) => match mesh.apply("new.json", r) {
                Err(p) => p.to_string(),
                Ok(_) => String::new(),
            },
        };
        let too_long = serde_json::json!({"unit": "s", "value": 9_223_372_036_854_775_807_i64});
        for (doc, says) in [
            (
                route(
                    prefix.clone(),
                    serde_json::json!({"timeout": {"idle": too_long}}),
                ),
                "spec.httpRoute.timeout.idle: value 9223372036854775807: at most 315576000000 s",
            ),
            (
                route(
                    prefix.clone(),
                    serde_json::json!({"retryPolicy": {"maxRetries": 1, "httpRetryEvents": ["server-error"],
                        "perRetryTimeout": {"unit": "ms", "value": -5}}}),
                ),
                "a duration must not be negative",
            ),
            (
                route(
                    serde_json::json!({"prefix": "/", "headers": [{"name": "x-a", "match": {"suffix": ""}}]}),
                    serde_json::json!({}),
                ),
                "headers[0].match.suffix: a header match is 1 to 255 characters",
            ),
            (
                route(
                    serde_json::json!({"prefix": "/", "headers": [{"name": "x-a", "match": {"regex": ""}}]}),
                    serde_json::json!({}),
                ),
                "headers[0].match.regex: a regular expression must not be empty",
            ),
            (
                route(
                    serde_json::json!({"path": {"regex": "/a?+"}}),
                    serde_json::json!({}),
                ),
                "a repetition of a repetition",
            ),
            (
                route(
                    serde_json::json!({"path": {"regex": "/a{1001}"}}),
                    serde_json::json!({}),
                ),
                "a count over 1000",
            ),
            (
                route(
                    serde_json::json!({"path": {"regex": "/a{99}"}}),
                    serde_json::json!({}),
                ),
                "over the 100 Envoy takes",
            ),
            (
                route(
                    serde_json::json!({"prefix": "/", "queryParameters": [{"name": ""}]}),
                    serde_json::json!({}),
                ),
                "queryParameters[0].name: must not be empty",
            ),
        ] {
            let said = refused(doc.clone());
            assert!(said.contains(says), "{doc}: {said}");
        }
        let longest =
            serde_json::json!({"unit": "s", "value": crate::appmesh::Duration::MAX_SECONDS});
        assert_eq!(
            refused(route(
                prefix,
                serde_json::json!({"timeout": {"idle": longest}})
            )),
            ""
        );
    }

    /// Every resource put in lands in its own kind's map and comes back out of it as it
    /// went in; a key of one kind finds nothing in another's.
    #[test]
    fn every_kind_goes_through_its_own_table() {
        let mesh = shipped();
        let mut copy = Mesh::default();
        for (origin, resource) in mesh.resources() {
            copy.insert(origin, resource);
        }
        assert_eq!(copy, mesh);
        for (origin, resource) in mesh.resources() {
            let key = resource.key();
            assert_eq!(copy.origin_of(&resource), Some(origin.as_str()), "{key:?}");
            assert_eq!(copy.get(&key), Some((origin, resource)), "{key:?}");
            let owners = kinds::TABLES
                .iter()
                .filter(|t| t.get(&copy, &key).is_some());
            assert_eq!(owners.count(), usize::from(key != Key::Mesh), "{key:?}");
        }
        let (changed, removed) = Mesh::default().diff(&mesh);
        assert_eq!((changed.len(), removed.len()), (mesh.resources().len(), 0));
        let node = Key::VirtualNode("distributor-v2".into());
        let mut less = copy.clone();
        assert!(kinds::TABLES.iter().any(|t| t.remove(&mut less, &node)));
        assert_eq!(less.get(&node), None);
        assert_eq!(copy.diff(&less), (Vec::new(), vec![node]));
    }

    #[test]
    fn keys_round_trip_through_text() {
        for key in [
            Key::Mesh,
            Key::VirtualNode("a".into()),
            Key::VirtualRouter("r".into()),
            Key::Route("r".into(), "x".into()),
            Key::VirtualService("s.b.local".into()),
        ] {
            assert_eq!(Key::from_text(&key.to_text()), Some(key));
        }
        assert_eq!(Key::from_text("route/onlyone"), None);
        assert_eq!(Key::from_text("gateway/x"), None);
    }
}
