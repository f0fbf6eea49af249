//! Changing a mesh and telling what changed: insert, look up, remove (refused while
//! something needs the resource), list and diff its resources.

use crate::appmesh::RouteInput;
use crate::resource::{Key, Kind, Resource};
use std::collections::BTreeMap;

use crate::mesh::{Mesh, RemoveError, Sourced, gateway_target};

impl Mesh {
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
}

/// Every resource of one kind's map, as (origin, resource).
pub(crate) fn each<'a, K, T: Clone>(
    map: &'a BTreeMap<K, Sourced<T>>,
    wrap: fn(T) -> Resource,
) -> impl Iterator<Item = (String, Resource)> + 'a {
    map.values()
        .map(move |s| (s.origin.clone(), wrap((*s.value).clone())))
}
