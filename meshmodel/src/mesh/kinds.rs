//! Each resource kind's map of a mesh behind one trait ([`Table`]), so that what every
//! edit does to a kind (find, insert, remove, list, diff, read the mesh name) is written
//! once for all six, not as a match per edit. The mesh resource itself, one or none, is
//! not a map and stays beside them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::appmesh::{
    GatewayRouteInput, RouteInput, VirtualGatewayInput, VirtualNodeInput, VirtualRouterInput,
    VirtualServiceInput,
};
use crate::mesh::{Mesh, Sourced};
use crate::resource::{Key, Kind, Resource};

/// What a change adds or changes (with its origin), and what it removes.
pub(crate) type Changes = (Vec<(Key, String, Resource)>, Vec<Key>);

/// One resource kind's map of a mesh.
pub(crate) trait Table: Sync {
    /// The resource `key` names, when it is of this kind and there.
    fn get(&self, mesh: &Mesh, key: &Key) -> Option<(String, Resource)>;
    /// Where the resource `key` names came from, when it is of this kind and there.
    fn origin<'m>(&self, mesh: &'m Mesh, key: &Key) -> Option<&'m str>;
    /// Puts `resource` in when it is of this kind; otherwise hands both back.
    fn insert(
        &self,
        mesh: &mut Mesh,
        origin: String,
        resource: Resource,
    ) -> Option<(String, Resource)>;
    /// Takes the resource `key` names out; whether `key` is of this kind.
    fn remove(&self, mesh: &mut Mesh, key: &Key) -> bool;
    /// Every resource of this kind, as (origin, resource).
    fn list(&self, mesh: &Mesh, out: &mut Vec<(String, Resource)>);
    /// What `after` changes in this kind relative to `before`; resources that share their
    /// value are passed over without a comparison.
    fn diff(&self, before: &Mesh, after: &Mesh, changes: &mut Changes);
    /// (origin, mesh name) of every resource of this kind, without copying them.
    fn mesh_names<'m>(&self, mesh: &'m Mesh) -> Box<dyn Iterator<Item = (&'m str, &'m str)> + 'm>;
}

/// A kind's map in a mesh and how its resources, keys and identities go together.
struct Of<K: 'static, T: 'static> {
    map: fn(&Mesh) -> &BTreeMap<K, Sourced<T>>,
    map_mut: fn(&mut Mesh) -> &mut BTreeMap<K, Sourced<T>>,
    /// The key of the map that `Key` names, when it is of this kind.
    of_key: fn(&Key) -> Option<K>,
    key: fn(&K) -> Key,
    /// The map's key of a resource of this kind.
    ident: fn(&T) -> K,
    wrap: fn(T) -> Resource,
    kind: Kind,
    /// The value of a resource of this kind (`None` for any other).
    unwrap: fn(Resource) -> Option<T>,
    mesh_name: fn(&T) -> &str,
}

impl<K: Ord + Clone + Sync, T: Clone + PartialEq + Sync> Table for Of<K, T> {
    fn get(&self, mesh: &Mesh, key: &Key) -> Option<(String, Resource)> {
        let s = (self.map)(mesh).get(&(self.of_key)(key)?)?;
        Some((s.origin.clone(), (self.wrap)((*s.value).clone())))
    }

    fn origin<'m>(&self, mesh: &'m Mesh, key: &Key) -> Option<&'m str> {
        let s = (self.map)(mesh).get(&(self.of_key)(key)?)?;
        Some(s.origin.as_str())
    }

    fn insert(
        &self,
        mesh: &mut Mesh,
        origin: String,
        resource: Resource,
    ) -> Option<(String, Resource)> {
        if resource.kind() != self.kind {
            return Some((origin, resource));
        }
        if let Some(value) = (self.unwrap)(resource) {
            (self.map_mut)(mesh).insert((self.ident)(&value), Sourced::new(origin, value));
        }
        None
    }

    fn remove(&self, mesh: &mut Mesh, key: &Key) -> bool {
        let Some(k) = (self.of_key)(key) else {
            return false;
        };
        (self.map_mut)(mesh).remove(&k);
        true
    }

    fn list(&self, mesh: &Mesh, out: &mut Vec<(String, Resource)>) {
        out.extend(
            (self.map)(mesh)
                .values()
                .map(|s| (s.origin.clone(), (self.wrap)((*s.value).clone()))),
        );
    }

    fn diff(&self, before: &Mesh, after: &Mesh, (changed, removed): &mut Changes) {
        let (before, after) = ((self.map)(before), (self.map)(after));
        for (k, b) in after {
            let same = before
                .get(k)
                .is_some_and(|a| Arc::ptr_eq(&a.value, &b.value) || a.value == b.value);
            if !same {
                changed.push((
                    (self.key)(k),
                    b.origin.clone(),
                    (self.wrap)((*b.value).clone()),
                ));
            }
        }
        removed.extend(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(self.key),
        );
    }

    fn mesh_names<'m>(&self, mesh: &'m Mesh) -> Box<dyn Iterator<Item = (&'m str, &'m str)> + 'm> {
        let name = self.mesh_name;
        Box::new(
            (self.map)(mesh)
                .values()
                .map(move |s| (s.origin.as_str(), name(&s.value))),
        )
    }
}

static VIRTUAL_NODES: Of<String, VirtualNodeInput> = Of {
    map: |m| &m.virtual_nodes,
    map_mut: |m| &mut m.virtual_nodes,
    of_key: |k| match k {
        Key::VirtualNode(n) => Some(n.clone()),
        _ => None,
    },
    key: |k| Key::VirtualNode(k.clone()),
    ident: |r| r.virtual_node_name.clone(),
    wrap: Resource::VirtualNode,
    kind: Kind::VirtualNode,
    unwrap: |r| match r {
        Resource::VirtualNode(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

static VIRTUAL_ROUTERS: Of<String, VirtualRouterInput> = Of {
    map: |m| &m.virtual_routers,
    map_mut: |m| &mut m.virtual_routers,
    of_key: |k| match k {
        Key::VirtualRouter(n) => Some(n.clone()),
        _ => None,
    },
    key: |k| Key::VirtualRouter(k.clone()),
    ident: |r| r.virtual_router_name.clone(),
    wrap: Resource::VirtualRouter,
    kind: Kind::VirtualRouter,
    unwrap: |r| match r {
        Resource::VirtualRouter(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

static ROUTES: Of<(String, String), RouteInput> = Of {
    map: |m| &m.routes,
    map_mut: |m| &mut m.routes,
    of_key: |k| match k {
        Key::Route(r, n) => Some((r.clone(), n.clone())),
        _ => None,
    },
    key: |(r, n)| Key::Route(r.clone(), n.clone()),
    ident: |r| (r.virtual_router_name.clone(), r.route_name.clone()),
    wrap: Resource::Route,
    kind: Kind::Route,
    unwrap: |r| match r {
        Resource::Route(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

static VIRTUAL_SERVICES: Of<String, VirtualServiceInput> = Of {
    map: |m| &m.virtual_services,
    map_mut: |m| &mut m.virtual_services,
    of_key: |k| match k {
        Key::VirtualService(n) => Some(n.clone()),
        _ => None,
    },
    key: |k| Key::VirtualService(k.clone()),
    ident: |r| r.virtual_service_name.clone(),
    wrap: Resource::VirtualService,
    kind: Kind::VirtualService,
    unwrap: |r| match r {
        Resource::VirtualService(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

static VIRTUAL_GATEWAYS: Of<String, VirtualGatewayInput> = Of {
    map: |m| &m.virtual_gateways,
    map_mut: |m| &mut m.virtual_gateways,
    of_key: |k| match k {
        Key::VirtualGateway(n) => Some(n.clone()),
        _ => None,
    },
    key: |k| Key::VirtualGateway(k.clone()),
    ident: |r| r.virtual_gateway_name.clone(),
    wrap: Resource::VirtualGateway,
    kind: Kind::VirtualGateway,
    unwrap: |r| match r {
        Resource::VirtualGateway(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

static GATEWAY_ROUTES: Of<(String, String), GatewayRouteInput> = Of {
    map: |m| &m.gateway_routes,
    map_mut: |m| &mut m.gateway_routes,
    of_key: |k| match k {
        Key::GatewayRoute(g, n) => Some((g.clone(), n.clone())),
        _ => None,
    },
    key: |(g, n)| Key::GatewayRoute(g.clone(), n.clone()),
    ident: |r| (r.virtual_gateway_name.clone(), r.gateway_route_name.clone()),
    wrap: Resource::GatewayRoute,
    kind: Kind::GatewayRoute,
    unwrap: |r| match r {
        Resource::GatewayRoute(v) => Some(v),
        _ => None,
    },
    mesh_name: |r| &r.mesh_name,
};

/// Every kind's table, in the order resources are listed: nodes, routers, routes,
/// services, gateways, gateway routes.
pub(crate) static TABLES: [&dyn Table; 6] = [
    &VIRTUAL_NODES,
    &VIRTUAL_ROUTERS,
    &ROUTES,
    &VIRTUAL_SERVICES,
    &VIRTUAL_GATEWAYS,
    &GATEWAY_ROUTES,
];
