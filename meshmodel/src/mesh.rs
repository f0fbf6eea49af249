//! The whole mesh: every resource, where it came from, and the checks that need more than
//! one resource to make (references, weights, names).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::appmesh::{
    ClientPolicy, GatewayRouteInput, HealthCheckPolicy, HttpRetryPolicy, HttpRoute, Listener,
    ListenerTls, MeshInput, PortMapping, Protocol, RouteInput, TlsCertificate, TlsValidation,
    VirtualGatewayInput, VirtualNodeInput, VirtualRouterInput, VirtualServiceInput, WeightedTarget,
};
use crate::problem::{Problem, Problems, join};
use crate::resource::{Key, Kind, Resource};

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
    /// Reads every `*.json` file below `dir` (sorted, recursively) as one resource each,
    /// and checks the result. All problems found are returned together.
    pub fn load_dir(dir: &Path) -> Result<Self, Problems> {
        let mut files = Vec::new();
        collect_json(dir, &mut files).map_err(|e| {
            Problems::one(Problem::new(
                dir.display().to_string(),
                "",
                format!("cannot read: {e}"),
            ))
        })?;
        if files.is_empty() {
            return Err(Problems::one(Problem::new(
                dir.display().to_string(),
                "",
                "no *.json resource files here",
            )));
        }
        let mut problems = Vec::new();
        let mut resources = Vec::new();
        for file in files {
            let origin = file.display().to_string();
            match crate::input::read_text(&file, crate::input::MAX_FILE) {
                Err(e) => problems.push(Problem::new(&origin, "", format!("cannot read: {e}"))),
                Ok(text) => match Resource::parse(&origin, &text) {
                    Ok(r) => resources.push((origin, r)),
                    Err(Problems(mut p)) => problems.append(&mut p),
                },
            }
        }
        // A file that does not parse would make every reference to what it defines look
        // dangling; those references are checked once every file parses.
        let unparsed = !problems.is_empty();
        let mut mesh = Mesh::default();
        for (origin, resource) in resources {
            if let Some(previous) = mesh.origin_of(&resource) {
                problems.push(Problem::new(
                    &origin,
                    "",
                    format!("{} is already defined in {previous}", resource.describe()),
                ));
                continue;
            }
            mesh.insert(origin, resource);
        }
        if mesh.mesh.is_none() && problems.is_empty() {
            problems.push(Problem::new(
                dir.display().to_string(),
                "",
                "no mesh resource: add a mesh.json with {\"meshName\": \"...\"}",
            ));
        }
        if unparsed {
            problems.push(Problem::new(
                dir.display().to_string(),
                "",
                "references between resources are checked once every file above reads and parses",
            ));
        } else {
            problems.extend(mesh.check());
        }
        if problems.is_empty() {
            Ok(mesh)
        } else {
            Err(Problems(problems))
        }
    }

    /// The mesh's name, when the mesh resource exists.
    pub fn name(&self) -> Option<&str> {
        self.mesh.as_ref().map(|m| m.value.mesh_name.as_str())
    }

    /// Where the resource with the same identity as `resource` came from, if it exists.
    pub fn origin_of(&self, resource: &Resource) -> Option<&str> {
        let origin = match resource {
            Resource::Mesh(_) => self.mesh.as_ref().map(|s| &s.origin),
            Resource::VirtualNode(r) => self
                .virtual_nodes
                .get(&r.virtual_node_name)
                .map(|s| &s.origin),
            Resource::VirtualRouter(r) => self
                .virtual_routers
                .get(&r.virtual_router_name)
                .map(|s| &s.origin),
            Resource::Route(r) => self
                .routes
                .get(&(r.virtual_router_name.clone(), r.route_name.clone()))
                .map(|s| &s.origin),
            Resource::VirtualService(r) => self
                .virtual_services
                .get(&r.virtual_service_name)
                .map(|s| &s.origin),
            Resource::VirtualGateway(r) => self
                .virtual_gateways
                .get(&r.virtual_gateway_name)
                .map(|s| &s.origin),
            Resource::GatewayRoute(r) => self
                .gateway_routes
                .get(&(r.virtual_gateway_name.clone(), r.gateway_route_name.clone()))
                .map(|s| &s.origin),
        };
        origin.map(String::as_str)
    }

    /// Puts `resource` in, replacing one with the same identity. Does not check.
    pub fn insert(&mut self, origin: String, resource: Resource) {
        match resource {
            Resource::Mesh(value) => self.mesh = Some(Sourced::new(origin, value)),
            Resource::VirtualNode(value) => {
                self.virtual_nodes
                    .insert(value.virtual_node_name.clone(), Sourced::new(origin, value));
            }
            Resource::VirtualRouter(value) => {
                self.virtual_routers.insert(
                    value.virtual_router_name.clone(),
                    Sourced::new(origin, value),
                );
            }
            Resource::Route(value) => {
                let key = (value.virtual_router_name.clone(), value.route_name.clone());
                self.routes.insert(key, Sourced::new(origin, value));
            }
            Resource::VirtualService(value) => {
                self.virtual_services.insert(
                    value.virtual_service_name.clone(),
                    Sourced::new(origin, value),
                );
            }
            Resource::VirtualGateway(value) => {
                self.virtual_gateways.insert(
                    value.virtual_gateway_name.clone(),
                    Sourced::new(origin, value),
                );
            }
            Resource::GatewayRoute(value) => {
                let key = (
                    value.virtual_gateway_name.clone(),
                    value.gateway_route_name.clone(),
                );
                self.gateway_routes.insert(key, Sourced::new(origin, value));
            }
        }
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

    /// The resource with identity `key`, and its origin.
    pub fn get(&self, key: &Key) -> Option<(String, Resource)> {
        match key {
            Key::Mesh => self
                .mesh
                .as_ref()
                .map(|s| (s.origin.clone(), Resource::Mesh((*s.value).clone()))),
            Key::VirtualNode(n) => self
                .virtual_nodes
                .get(n)
                .map(|s| (s.origin.clone(), Resource::VirtualNode((*s.value).clone()))),
            Key::VirtualRouter(n) => self.virtual_routers.get(n).map(|s| {
                (
                    s.origin.clone(),
                    Resource::VirtualRouter((*s.value).clone()),
                )
            }),
            Key::Route(r, n) => self
                .routes
                .get(&(r.clone(), n.clone()))
                .map(|s| (s.origin.clone(), Resource::Route((*s.value).clone()))),
            Key::VirtualService(n) => self.virtual_services.get(n).map(|s| {
                (
                    s.origin.clone(),
                    Resource::VirtualService((*s.value).clone()),
                )
            }),
            Key::VirtualGateway(n) => self.virtual_gateways.get(n).map(|s| {
                (
                    s.origin.clone(),
                    Resource::VirtualGateway((*s.value).clone()),
                )
            }),
            Key::GatewayRoute(g, n) => self
                .gateway_routes
                .get(&(g.clone(), n.clone()))
                .map(|s| (s.origin.clone(), Resource::GatewayRoute((*s.value).clone()))),
        }
    }

    /// The mesh without the resource `key`, refused as App Mesh refuses it while something
    /// still needs it: a mesh that has resources, a node that a route targets or a service
    /// is provided by, a router that has routes or provides a service, a gateway that has
    /// gateway routes, a service that a gateway route targets.
    pub fn remove(&self, key: &Key) -> Result<Mesh, RemoveError> {
        if self.get(key).is_none() {
            return Err(RemoveError::NotFound(format!(
                "{} does not exist",
                key.describe()
            )));
        }
        let users: Vec<String> = match key {
            Key::Mesh => self
                .resources()
                .into_iter()
                .filter(|(_, r)| r.kind() != Kind::Mesh)
                .map(|(_, r)| r.describe())
                .collect(),
            Key::VirtualNode(n) => self.users(
                |r| {
                    r.spec
                        .weighted_targets()
                        .is_some_and(|(_, ts)| ts.iter().any(|t| &t.virtual_node == n))
                },
                |p| {
                    p.virtual_node
                        .as_ref()
                        .is_some_and(|p| &p.virtual_node_name == n)
                },
            ),
            Key::VirtualRouter(n) => self.users(
                |r| &r.virtual_router_name == n,
                |p| {
                    p.virtual_router
                        .as_ref()
                        .is_some_and(|p| &p.virtual_router_name == n)
                },
            ),
            Key::VirtualGateway(g) => self
                .gateway_routes
                .values()
                .filter(|s| &s.value.virtual_gateway_name == g)
                .map(|s| Resource::GatewayRoute((*s.value).clone()).describe())
                .collect(),
            Key::VirtualService(n) => self
                .gateway_routes
                .values()
                .filter(|s| gateway_target(&s.value).is_some_and(|t| t == n))
                .map(|s| Resource::GatewayRoute((*s.value).clone()).describe())
                .collect(),
            Key::Route(..) | Key::GatewayRoute(..) => Vec::new(),
        };
        if !users.is_empty() {
            return Err(RemoveError::InUse(format!(
                "{} is in use by {}; delete or change those first",
                key.describe(),
                users.join(", ")
            )));
        }
        let mut next = self.clone();
        match key {
            Key::Mesh => next.mesh = None,
            Key::VirtualNode(n) => {
                next.virtual_nodes.remove(n);
            }
            Key::VirtualRouter(n) => {
                next.virtual_routers.remove(n);
            }
            Key::Route(r, n) => {
                next.routes.remove(&(r.clone(), n.clone()));
            }
            Key::VirtualService(n) => {
                next.virtual_services.remove(n);
            }
            Key::VirtualGateway(n) => {
                next.virtual_gateways.remove(n);
            }
            Key::GatewayRoute(g, n) => {
                next.gateway_routes.remove(&(g.clone(), n.clone()));
            }
        }
        Ok(next)
    }

    /// The routes and virtual services (their descriptions) that need something: the
    /// routes for which `route` holds and the services whose provider `provider` accepts.
    fn users(
        &self,
        route: impl Fn(&RouteInput) -> bool,
        provider: impl Fn(&crate::appmesh::VirtualServiceProvider) -> bool,
    ) -> Vec<String> {
        let mut users: Vec<String> = self
            .routes
            .values()
            .filter(|s| route(&s.value))
            .map(|s| Resource::Route((*s.value).clone()).describe())
            .collect();
        users.extend(
            self.virtual_services
                .values()
                .filter(|s| s.value.spec.provider.as_ref().is_some_and(&provider))
                .map(|s| Resource::VirtualService((*s.value).clone()).describe()),
        );
        users
    }

    /// Every resource, as (origin, resource), in a stable order: mesh, nodes, routers,
    /// routes, services, gateways, gateway routes.
    pub fn resources(&self) -> Vec<(String, Resource)> {
        let mut out = Vec::new();
        if let Some(m) = &self.mesh {
            out.push((m.origin.clone(), Resource::Mesh((*m.value).clone())));
        }
        out.extend(each(&self.virtual_nodes, Resource::VirtualNode));
        out.extend(each(&self.virtual_routers, Resource::VirtualRouter));
        out.extend(each(&self.routes, Resource::Route));
        out.extend(each(&self.virtual_services, Resource::VirtualService));
        out.extend(each(&self.virtual_gateways, Resource::VirtualGateway));
        out.extend(each(&self.gateway_routes, Resource::GatewayRoute));
        out
    }

    /// What `next` changes relative to this mesh: the resources it adds or changes (with
    /// their origin), and the identities of those it removes. Resources a change did not
    /// touch share their value with this mesh and are passed over without a comparison.
    pub fn diff(&self, next: &Mesh) -> (Vec<(Key, String, Resource)>, Vec<Key>) {
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        match (&self.mesh, &next.mesh) {
            (Some(a), Some(b))
                if std::sync::Arc::ptr_eq(&a.value, &b.value) || a.value == b.value => {}
            (_, Some(b)) => changed.push((
                Key::Mesh,
                b.origin.clone(),
                Resource::Mesh((*b.value).clone()),
            )),
            (Some(_), None) => removed.push(Key::Mesh),
            (None, None) => {}
        }
        fn kind<K: Ord, T: Clone + PartialEq>(
            before: &BTreeMap<K, Sourced<T>>,
            after: &BTreeMap<K, Sourced<T>>,
            key: impl Fn(&K) -> Key,
            wrap: fn(T) -> Resource,
            changed: &mut Vec<(Key, String, Resource)>,
            removed: &mut Vec<Key>,
        ) {
            for (k, b) in after {
                let same = before.get(k).is_some_and(|a| {
                    std::sync::Arc::ptr_eq(&a.value, &b.value) || a.value == b.value
                });
                if !same {
                    changed.push((key(k), b.origin.clone(), wrap((*b.value).clone())));
                }
            }
            removed.extend(before.keys().filter(|k| !after.contains_key(*k)).map(key));
        }
        let (c, r) = (&mut changed, &mut removed);
        kind(
            &self.virtual_nodes,
            &next.virtual_nodes,
            |k| Key::VirtualNode(k.clone()),
            Resource::VirtualNode,
            c,
            r,
        );
        kind(
            &self.virtual_routers,
            &next.virtual_routers,
            |k| Key::VirtualRouter(k.clone()),
            Resource::VirtualRouter,
            c,
            r,
        );
        kind(
            &self.routes,
            &next.routes,
            |(a, b)| Key::Route(a.clone(), b.clone()),
            Resource::Route,
            c,
            r,
        );
        kind(
            &self.virtual_services,
            &next.virtual_services,
            |k| Key::VirtualService(k.clone()),
            Resource::VirtualService,
            c,
            r,
        );
        kind(
            &self.virtual_gateways,
            &next.virtual_gateways,
            |k| Key::VirtualGateway(k.clone()),
            Resource::VirtualGateway,
            c,
            r,
        );
        kind(
            &self.gateway_routes,
            &next.gateway_routes,
            |(a, b)| Key::GatewayRoute(a.clone(), b.clone()),
            Resource::GatewayRoute,
            c,
            r,
        );
        (changed, removed)
    }

    /// The gateway routes of `gateway`, highest precedence first, ordered as
    /// [`Mesh::routes_of`] orders routes.
    pub fn gateway_routes_of(&self, gateway: &str) -> Vec<&GatewayRouteInput> {
        let mut routes: Vec<&GatewayRouteInput> = self
            .gateway_routes
            .values()
            .map(|s| &*s.value)
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
        let mut routes: Vec<&RouteInput> = self
            .routes
            .values()
            .map(|s| &*s.value)
            .filter(|r| r.virtual_router_name == router)
            .collect();
        routes.sort_by_key(|r| (r.spec.priority.unwrap_or(i64::MAX), r.route_name.clone()));
        routes
    }

    /// (origin, mesh name) of every resource but the mesh, in the order of
    /// [`Mesh::resources`], without copying them.
    fn mesh_names(&self) -> impl Iterator<Item = (&str, &str)> {
        fn names<K, T>(
            map: &BTreeMap<K, Sourced<T>>,
            name: fn(&T) -> &str,
        ) -> impl Iterator<Item = (&str, &str)> {
            map.values()
                .map(move |s| (s.origin.as_str(), name(&s.value)))
        }
        names(&self.virtual_nodes, |r| &r.mesh_name)
            .chain(names(&self.virtual_routers, |r| &r.mesh_name))
            .chain(names(&self.routes, |r| &r.mesh_name))
            .chain(names(&self.virtual_services, |r| &r.mesh_name))
            .chain(names(&self.virtual_gateways, |r| &r.mesh_name))
            .chain(names(&self.gateway_routes, |r| &r.mesh_name))
    }

    /// Everything that is inconsistent; empty when the mesh is fine.
    pub fn check(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let Some(mesh) = &self.mesh else {
            if let Some((origin, name)) = self.mesh_names().next() {
                p.push(Problem::new(
                    origin,
                    "meshName",
                    format!("mesh `{name}` does not exist: create it first"),
                ));
            }
            return p;
        };
        let mesh_name = &mesh.value.mesh_name;
        check_name(&mut p, &mesh.origin, "meshName", mesh_name);
        check_ip_preference(
            &mut p,
            &mesh.origin,
            "spec.serviceDiscovery.ipPreference",
            mesh.value
                .spec
                .service_discovery
                .as_ref()
                .and_then(|sd| sd.ip_preference.as_ref()),
        );
        // Every change is checked against the whole mesh: read the names in place.
        for (origin, name) in self.mesh_names() {
            if name != mesh_name {
                p.push(Problem::new(
                    origin,
                    "meshName",
                    format!("`{name}` is not this mesh; the mesh is `{mesh_name}`"),
                ));
            }
        }
        for s in self.virtual_nodes.values() {
            self.check_virtual_node(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_routers.values() {
            check_name(
                &mut p,
                &s.origin,
                "virtualRouterName",
                &s.value.virtual_router_name,
            );
            check_listeners(
                &mut p,
                &s.origin,
                s.value.spec.listeners.iter().map(|l| &l.port_mapping),
            );
        }
        for s in self.routes.values() {
            self.check_route(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_services.values() {
            self.check_virtual_service(&mut p, &s.origin, &s.value);
        }
        for s in self.virtual_gateways.values() {
            check_virtual_gateway(&mut p, &s.origin, &s.value);
        }
        for s in self.gateway_routes.values() {
            self.check_gateway_route(&mut p, &s.origin, &s.value);
        }
        p
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

    fn check_gateway_route(&self, p: &mut Vec<Problem>, origin: &str, route: &GatewayRouteInput) {
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
        // The listeners it can serve: those of its protocol (and port, when it names one).
        let listeners = &gateway.value.spec.listeners;
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
        } else if m.prefix.is_none() && m.path.is_none() && m.hostname.is_none() {
            p.push(Problem::new(
                origin,
                format!("{base}.match"),
                "give a prefix (like \"/\"), a path or a hostname to match",
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
        let target = &http.action.target;
        let service = &target.virtual_service.virtual_service_name;
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

    fn check_virtual_node(&self, p: &mut Vec<Problem>, origin: &str, node: &VirtualNodeInput) {
        check_name(p, origin, "virtualNodeName", &node.virtual_node_name);
        check_listeners(
            p,
            origin,
            node.spec.listeners.iter().map(|l| &l.port_mapping),
        );
        for (i, listener) in node.spec.listeners.iter().enumerate() {
            check_listener(p, origin, &format!("spec.listeners[{i}]"), listener);
            if let Some(tls) = &listener.tls {
                check_listener_tls(p, origin, &format!("spec.listeners[{i}].tls"), tls);
            }
        }
        if let Some(format) = node
            .spec
            .logging
            .as_ref()
            .and_then(|l| l.access_log.as_ref())
            .and_then(|a| a.file.as_ref())
            .and_then(|f| f.format.as_ref())
        {
            if format.text.is_some() != format.json.is_empty() {
                p.push(Problem::new(
                    origin,
                    "spec.logging.accessLog.file.format",
                    "give exactly one of text and json",
                ));
            }
        }
        if let Some(policy) = node
            .spec
            .backend_defaults
            .as_ref()
            .and_then(|d| d.client_policy.as_ref())
        {
            check_client_policy(p, origin, "spec.backendDefaults.clientPolicy", policy);
        }
        for (i, backend) in node.spec.backends.iter().enumerate() {
            if let Some(policy) = &backend.virtual_service.client_policy {
                check_client_policy(
                    p,
                    origin,
                    &format!("spec.backends[{i}].virtualService.clientPolicy"),
                    policy,
                );
            }
        }
        if !node.spec.listeners.is_empty() && node.spec.service_discovery.is_none() {
            p.push(Problem::new(
                origin,
                "spec.serviceDiscovery",
                "a virtual node with a listener needs service discovery (dns or awsCloudMap)",
            ));
        }
        if let Some(sd) = &node.spec.service_discovery {
            let preferences = [
                (
                    "spec.serviceDiscovery.dns.ipPreference",
                    sd.dns.as_ref().and_then(|d| d.ip_preference.as_ref()),
                ),
                (
                    "spec.serviceDiscovery.awsCloudMap.ipPreference",
                    sd.aws_cloud_map
                        .as_ref()
                        .and_then(|d| d.ip_preference.as_ref()),
                ),
            ];
            for (path, preference) in preferences {
                check_ip_preference(p, origin, path, preference);
            }
            if sd.dns.is_some() == sd.aws_cloud_map.is_some() {
                p.push(Problem::new(
                    origin,
                    "spec.serviceDiscovery",
                    "give exactly one of dns and awsCloudMap",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, backend) in node.spec.backends.iter().enumerate() {
            let name = &backend.virtual_service.virtual_service_name;
            let path = format!("spec.backends[{i}].virtualService.virtualServiceName");
            if !seen.insert(name) {
                p.push(Problem::new(
                    origin,
                    &path,
                    format!("backend `{name}` is listed twice"),
                ));
            } else if !self.backends_may_dangle && !self.virtual_services.contains_key(name) {
                p.push(Problem::new(
                    origin,
                    &path,
                    format!(
                        "virtual service `{name}` does not exist (known: {})",
                        known(self.virtual_services.keys())
                    ),
                ));
            }
        }
    }

    fn check_route(&self, p: &mut Vec<Problem>, origin: &str, route: &RouteInput) {
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
        let kind = if spec.tcp_route.is_some() {
            "tcpRoute"
        } else if spec.grpc_route.is_some() {
            "grpcRoute"
        } else {
            "http route"
        };
        let route_port = spec.match_port();
        let listeners = &router.value.spec.listeners;
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
        if let Some((path, targets)) = spec.weighted_targets() {
            self.check_targets(p, origin, path, targets);
        }
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
                .value
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

    fn check_targets(
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

    fn check_virtual_service(&self, p: &mut Vec<Problem>, origin: &str, vs: &VirtualServiceInput) {
        let name = &vs.virtual_service_name;
        if name.is_empty() || name.len() > limits::NAME_MAX {
            p.push(Problem::new(
                origin,
                "virtualServiceName",
                "must be 1 to 255 characters",
            ));
        }
        let Some(provider) = &vs.spec.provider else {
            return;
        };
        match (&provider.virtual_router, &provider.virtual_node) {
            (Some(r), None) => {
                if !self.virtual_routers.contains_key(&r.virtual_router_name) {
                    p.push(Problem::new(
                        origin,
                        "spec.provider.virtualRouter.virtualRouterName",
                        format!(
                            "virtual router `{}` does not exist (known: {})",
                            r.virtual_router_name,
                            known(self.virtual_routers.keys())
                        ),
                    ));
                }
            }
            (None, Some(n)) => {
                if !self.virtual_nodes.contains_key(&n.virtual_node_name) {
                    p.push(Problem::new(
                        origin,
                        "spec.provider.virtualNode.virtualNodeName",
                        format!(
                            "virtual node `{}` does not exist (known: {})",
                            n.virtual_node_name,
                            known(self.virtual_nodes.keys())
                        ),
                    ));
                }
            }
            _ => p.push(Problem::new(
                origin,
                "spec.provider",
                "give exactly one of virtualRouter and virtualNode",
            )),
        }
    }
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

fn check_virtual_gateway(p: &mut Vec<Problem>, origin: &str, gateway: &VirtualGatewayInput) {
    check_name(
        p,
        origin,
        "virtualGatewayName",
        &gateway.virtual_gateway_name,
    );
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

/// Every `*.json` file below `dir`, sorted, recursively (links to directories are not
/// followed).
pub fn json_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    Ok(files)
}

fn collect_json(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn range(p: &mut Vec<Problem>, origin: &str, path: &str, value: i64, (lo, hi): (i64, i64)) {
    if value < lo || value > hi {
        p.push(Problem::new(
            origin,
            path,
            format!("{value} is out of range; allowed: {lo} to {hi}"),
        ));
    }
}

/// Every resource of one kind's map, as (origin, resource).
fn each<'a, K, T: Clone>(
    map: &'a BTreeMap<K, Sourced<T>>,
    wrap: fn(T) -> Resource,
) -> impl Iterator<Item = (String, Resource)> + 'a {
    map.values()
        .map(move |s| (s.origin.clone(), wrap((*s.value).clone())))
}

/// The router or gateway (`what`, named at `field`) a route names, or a problem saying it
/// does not exist.
fn parent<'a, T>(
    p: &mut Vec<Problem>,
    origin: &str,
    (field, what): (&str, &str),
    name: &str,
    all: &'a BTreeMap<String, T>,
) -> Option<&'a T> {
    let found = all.get(name);
    if found.is_none() {
        p.push(Problem::new(
            origin,
            field,
            format!(
                "{what} `{name}` does not exist (known: {})",
                known(all.keys())
            ),
        ));
    }
    found
}

/// A route's priority is in range and it is exactly one of `kinds` (name, given); whether
/// its kind is clear.
fn one_kind(
    p: &mut Vec<Problem>,
    origin: &str,
    priority: Option<i64>,
    kinds: &[(&str, bool)],
) -> bool {
    if let Some(priority) = priority {
        range(p, origin, "spec.priority", priority, limits::PRIORITY);
    }
    if kinds.iter().filter(|(_, given)| *given).count() == 1 {
        return true;
    }
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (*l, r));
    p.push(Problem::new(
        origin,
        "spec",
        format!("give exactly one of {} and {last}", rest.join(", ")),
    ));
    false
}

/// App Mesh's IP preferences (the address family Envoy resolves hostnames to).
fn check_ip_preference(p: &mut Vec<Problem>, origin: &str, path: &str, value: Option<&String>) {
    const PREFERENCES: &[&str] = &["IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY"];
    if let Some(v) = value {
        if !PREFERENCES.contains(&v.as_str()) {
            p.push(Problem::new(
                origin,
                path,
                format!("`{v}` is not one of {}", PREFERENCES.join(", ")),
            ));
        }
    }
}

fn check_name(p: &mut Vec<Problem>, origin: &str, path: &str, name: &str) {
    if name.is_empty() || name.len() > limits::NAME_MAX {
        p.push(Problem::new(origin, path, "must be 1 to 255 characters"));
    }
}

fn check_listeners<'a>(
    p: &mut Vec<Problem>,
    origin: &str,
    ports: impl Iterator<Item = &'a PortMapping>,
) {
    let ports: Vec<&PortMapping> = ports.collect();
    let mut seen = BTreeSet::new();
    for (i, pm) in ports.iter().enumerate() {
        let at = format!("spec.listeners[{i}].portMapping.port");
        range(p, origin, &at, pm.port, limits::PORT);
        if !seen.insert(pm.port) {
            p.push(Problem::new(
                origin,
                at,
                format!("port {} has another listener already", pm.port),
            ));
        }
    }
}

fn check_listener_tls(p: &mut Vec<Problem>, origin: &str, at: &str, tls: &ListenerTls) {
    if !matches!(tls.mode.as_str(), "STRICT" | "PERMISSIVE" | "DISABLED") {
        p.push(Problem::new(
            origin,
            join(at, "mode"),
            format!("`{}` is not STRICT, PERMISSIVE or DISABLED", tls.mode),
        ));
    }
    check_certificate(p, origin, &join(at, "certificate"), &tls.certificate, true);
    if let Some(v) = &tls.validation {
        check_validation(p, origin, &join(at, "validation"), v);
    }
}

fn check_client_policy(p: &mut Vec<Problem>, origin: &str, at: &str, policy: &ClientPolicy) {
    let Some(tls) = &policy.tls else { return };
    let at = join(at, "tls");
    for (i, port) in tls.ports.iter().enumerate() {
        range(p, origin, &format!("{at}.ports[{i}]"), *port, limits::PORT);
    }
    if let Some(cert) = &tls.certificate {
        check_certificate(p, origin, &join(&at, "certificate"), cert, false);
    }
    check_validation(p, origin, &join(&at, "validation"), &tls.validation);
}

/// Where Envoy reads TLS material from: files on its machine. ACM and SDS sources are
/// refused by name (this control plane serves neither).
fn check_certificate(
    p: &mut Vec<Problem>,
    origin: &str,
    at: &str,
    cert: &TlsCertificate,
    acm_allowed_by_app_mesh: bool,
) {
    let given = [cert.file.is_some(), cert.acm.is_some(), cert.sds.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        p.push(Problem::new(
            origin,
            at,
            if acm_allowed_by_app_mesh {
                "give exactly one of file, acm and sds"
            } else {
                "give exactly one of file and sds"
            },
        ));
    }
    if cert.acm.is_some() {
        p.push(Problem::new(
            origin,
            join(at, "acm"),
            "ACM certificates are not supported here (App Mesh exported them to its Envoys; this control plane does not): give certificate.file",
        ));
    }
    if cert.sds.is_some() {
        p.push(Problem::new(
            origin,
            join(at, "sds"),
            "SDS certificate sources are not served by this control plane: give certificate.file",
        ));
    }
    if let Some(file) = &cert.file {
        check_path(
            p,
            origin,
            &join(at, "file.certificateChain"),
            &file.certificate_chain,
        );
        check_path(p, origin, &join(at, "file.privateKey"), &file.private_key);
    }
}

fn check_validation(p: &mut Vec<Problem>, origin: &str, at: &str, v: &TlsValidation) {
    let trust = &v.trust;
    let at_trust = join(at, "trust");
    let given = [
        trust.file.is_some(),
        trust.acm.is_some(),
        trust.sds.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        p.push(Problem::new(
            origin,
            &at_trust,
            "give exactly one of file, acm and sds",
        ));
    }
    if trust.acm.is_some() {
        p.push(Problem::new(
            origin,
            join(&at_trust, "acm"),
            "trust in ACM Private CA authorities is not supported here: give trust.file with their certificates",
        ));
    }
    if trust.sds.is_some() {
        p.push(Problem::new(
            origin,
            join(&at_trust, "sds"),
            "SDS trust sources are not served by this control plane: give trust.file",
        ));
    }
    if let Some(file) = &trust.file {
        check_path(
            p,
            origin,
            &join(&at_trust, "file.certificateChain"),
            &file.certificate_chain,
        );
    }
    if let Some(names) = &v.subject_alternative_names {
        if names.names.exact.is_empty() || names.names.exact.iter().any(String::is_empty) {
            p.push(Problem::new(
                origin,
                join(at, "subjectAlternativeNames.match.exact"),
                "give one or more names, none empty",
            ));
        }
    }
}

/// A file Envoy reads: an absolute path.
fn check_path(p: &mut Vec<Problem>, origin: &str, at: &str, path: &str) {
    if !path.starts_with('/') {
        p.push(Problem::new(
            origin,
            at,
            format!("`{path}` must be an absolute path (Envoy reads it where it runs)"),
        ));
    }
}

fn check_listener(p: &mut Vec<Problem>, origin: &str, base: &str, listener: &Listener) {
    if let Some(hc) = &listener.health_check {
        check_health_check(p, origin, &join(base, "healthCheck"), hc);
    }
    if let Some(od) = &listener.outlier_detection {
        let at = join(base, "outlierDetection");
        if od.max_server_errors < 1 {
            p.push(Problem::new(
                origin,
                join(&at, "maxServerErrors"),
                "must be at least 1",
            ));
        }
        range(
            p,
            origin,
            &join(&at, "maxEjectionPercent"),
            od.max_ejection_percent,
            (0, 100),
        );
        for (field, d) in [
            ("interval", od.interval),
            ("baseEjectionDuration", od.base_ejection_duration),
        ] {
            if d.value < 1 {
                p.push(Problem::new(
                    origin,
                    join(&at, &join(field, "value")),
                    "must be at least 1",
                ));
            }
        }
    }
}

fn check_health_check(p: &mut Vec<Problem>, origin: &str, at: &str, hc: &HealthCheckPolicy) {
    let checks = [
        ("healthyThreshold", hc.healthy_threshold, limits::THRESHOLD),
        (
            "unhealthyThreshold",
            hc.unhealthy_threshold,
            limits::THRESHOLD,
        ),
        ("timeoutMillis", hc.timeout_millis, limits::HC_TIMEOUT_MS),
        ("intervalMillis", hc.interval_millis, limits::HC_INTERVAL_MS),
    ];
    for (field, value, bounds) in checks {
        range(p, origin, &join(at, field), value, bounds);
    }
    if let Some(port) = hc.port {
        range(p, origin, &join(at, "port"), port, limits::PORT);
    }
    let http = matches!(hc.protocol.as_str(), "http" | "http2");
    match (&hc.path, http) {
        (None, true) => p.push(Problem::new(
            origin,
            join(at, "path"),
            "an http or http2 health check needs a path",
        )),
        (Some(path), true) if !path.starts_with('/') => {
            p.push(Problem::new(
                origin,
                join(at, "path"),
                format!("`{path}` must start with /"),
            ));
        }
        _ => {}
    }
}

fn check_http_route(p: &mut Vec<Problem>, origin: &str, base: &str, route: &HttpRoute) {
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
    for (i, h) in m.headers.iter().enumerate() {
        if let Some(hm) = &h.header_match {
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

fn check_retry(p: &mut Vec<Problem>, origin: &str, at: &str, retry: &HttpRetryPolicy) {
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

/// Envoy compiles route regexes with RE2; refuse what does not compile, so Envoy never
/// has to refuse (NACK) a route configuration.
fn check_regex(p: &mut Vec<Problem>, origin: &str, at: &str, re: &str) {
    if let Err(e) = regex_syntax::Parser::new().parse(re) {
        let reason = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        p.push(Problem::new(
            origin,
            at,
            format!("`{re}` is not a valid regular expression: {reason}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
