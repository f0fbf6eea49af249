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

/// The table of one kind: its map field `$map`, its `Key` and `Resource` variant `$kind`,
/// its map key made from `$key` (the key's names, bound as `$k` when matched) and its
/// value's identity fields `$ident`.
macro_rules! table {
    ($name:ident, $t:ty, $map:ident, $kind:ident, ($($k:ident),+), ($($ident:ident),+)) => {
        static $name: Of<table!(@key $($k),+), $t> = Of {
            map: |m| &m.$map,
            map_mut: |m| &mut m.$map,
            of_key: |k| match k {
                Key::$kind($($k),+) => Some(table!(@tuple $($k.clone()),+)),
                _ => None,
            },
            key: |table!(@pattern $($k),+)| Key::$kind($($k.clone()),+),
            ident: |r| table!(@tuple $(r.$ident.clone()),+),
            wrap: Resource::$kind,
            kind: Kind::$kind,
            unwrap: |r| match r {
                Resource::$kind(v) => Some(v),
                _ => None,
            },
            mesh_name: |r| &r.mesh_name,
        };
    };
    (@key $a:ident) => { String };
    (@key $a:ident, $b:ident) => { (String, String) };
    (@tuple $a:expr) => { $a };
    (@tuple $a:expr, $b:expr) => { ($a, $b) };
    (@pattern $a:ident) => { $a };
    (@pattern $a:ident, $b:ident) => { ($a, $b) };
}

table!(
    VIRTUAL_NODES,
    VirtualNodeInput,
    virtual_nodes,
    VirtualNode,
    (n),
    (virtual_node_name)
);
table!(
    VIRTUAL_ROUTERS,
    VirtualRouterInput,
    virtual_routers,
    VirtualRouter,
    (n),
    (virtual_router_name)
);
table!(
    ROUTES,
    RouteInput,
    routes,
    Route,
    (r, n),
    (virtual_router_name, route_name)
);
table!(
    VIRTUAL_SERVICES,
    VirtualServiceInput,
    virtual_services,
    VirtualService,
    (n),
    (virtual_service_name)
);
table!(
    VIRTUAL_GATEWAYS,
    VirtualGatewayInput,
    virtual_gateways,
    VirtualGateway,
    (n),
    (virtual_gateway_name)
);
table!(
    GATEWAY_ROUTES,
    GatewayRouteInput,
    gateway_routes,
    GatewayRoute,
    (g, n),
    (virtual_gateway_name, gateway_route_name)
);

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
