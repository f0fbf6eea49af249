//! Changing a mesh and telling what changed: insert, look up, remove (refused while
//! something needs the resource), list and diff its resources.

use crate::appmesh::RouteInput;
use crate::resource::{Key, Kind, Resource};

use crate::mesh::kinds::{Changes, TABLES};
use crate::mesh::{Mesh, RemoveError, Sourced, gateway_target};

impl Mesh {
    /// Where the resource with the same identity as `resource` came from, if it exists.
    pub fn origin_of(&self, resource: &Resource) -> Option<&str> {
        match resource.key() {
            Key::Mesh => self.mesh.as_ref().map(|s| s.origin.as_str()),
            key => TABLES.iter().find_map(|t| t.origin(self, &key)),
        }
    }

    /// Puts `resource` in, replacing one with the same identity. Does not check.
    pub fn insert(&mut self, origin: String, resource: Resource) {
        let mut left = match resource {
            Resource::Mesh(value) => {
                self.mesh = Some(Sourced::new(origin, value));
                return;
            }
            other => Some((origin, other)),
        };
        for table in TABLES {
            match left {
                Some((origin, resource)) => left = table.insert(self, origin, resource),
                None => return,
            }
        }
    }

    /// The resource with identity `key`, and its origin.
    pub fn get(&self, key: &Key) -> Option<(String, Resource)> {
        match key {
            Key::Mesh => self
                .mesh
                .as_ref()
                .map(|s| (s.origin.clone(), Resource::Mesh((*s.value).clone()))),
            key => TABLES.iter().find_map(|t| t.get(self, key)),
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
            key => {
                TABLES.iter().any(|t| t.remove(&mut next, key));
            }
        }
        Ok(next)
    }

    /// The routes and virtual services (their descriptions) that need something: the
    /// routes for which `route` holds and the services whose provider `provider` accepts.
    pub(crate) fn users(
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
        for table in TABLES {
            table.list(self, &mut out);
        }
        out
    }

    /// What `next` changes relative to this mesh: the resources it adds or changes (with
    /// their origin), and the identities of those it removes. Resources a change did not
    /// touch share their value with this mesh and are passed over without a comparison.
    pub fn diff(&self, next: &Mesh) -> Changes {
        let mut changes: Changes = (Vec::new(), Vec::new());
        match (&self.mesh, &next.mesh) {
            (Some(a), Some(b))
                if std::sync::Arc::ptr_eq(&a.value, &b.value) || a.value == b.value => {}
            (_, Some(b)) => changes.0.push((
                Key::Mesh,
                b.origin.clone(),
                Resource::Mesh((*b.value).clone()),
            )),
            (Some(_), None) => changes.1.push(Key::Mesh),
            (None, None) => {}
        }
        for table in TABLES {
            table.diff(self, next, &mut changes);
        }
        changes
    }
}
