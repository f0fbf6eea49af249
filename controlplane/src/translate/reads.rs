//! What one node's translation reads of its mesh's state ([`Reads`]), so that a change
//! builds again only the nodes it can change: a route change, the callers of its router's
//! services; a node change, the node and those whose routes reach it; a placement or a
//! Cloud Map lookup, the node and its callers.
//!
//! The walk follows [`super::for_node`] from the node through its backends' services,
//! their routers and routes, to every target node, and names each resource it passes,
//! present or not (a backend whose service does not exist yet reads that service's name:
//! its creation is a change the node sees). Which names come next depends only on what
//! was read before, so when every read is the same in two states the walk, and the
//! translation, are the same in both. The tests hold the translation to it: on a state
//! cut down to what the walk names, every node translates as on the whole state.

use std::collections::BTreeSet;
use std::sync::Arc;

use meshmodel::appmesh::RouteSpec;

use crate::state::snapshot::MeshState;

/// One thing a node's translation reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Read {
    /// The mesh resource (its name, egress filter, IP preference and tags).
    Mesh,
    Node(String),
    Service(String),
    Router(String),
    /// Every route of a virtual router.
    RoutesOf(String),
    Gateway(String),
    /// Every gateway route of a virtual gateway.
    GatewayRoutesOf(String),
    /// Where a node (or `virtualGateway/NAME`) runs here.
    Placement(String),
    /// The instances Cloud Map gave a node.
    Discovered(String),
    /// Who calls a node (read when the mesh speaks mutual TLS by itself).
    Callers(String),
}

/// Everything one node's translation reads, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads(BTreeSet<Read>);

/// What node `node` (or `virtualGateway/NAME`) of `state` reads when it is translated.
pub fn reads(state: &MeshState, node: &str) -> Reads {
    let mut walk = Walk {
        state,
        out: BTreeSet::from([Read::Mesh]),
    };
    match node.strip_prefix(super::GATEWAY_PREFIX) {
        Some(gateway) => walk.gateway(gateway, node),
        None => walk.node(node),
    }
    Reads(walk.out)
}

struct Walk<'a> {
    state: &'a MeshState,
    out: BTreeSet<Read>,
}

impl Walk<'_> {
    fn node(&mut self, node: &str) {
        self.out.insert(Read::Node(node.to_owned()));
        let Some(vn) = self.state.mesh.virtual_nodes.get(node) else {
            return;
        };
        self.out.insert(Read::Placement(node.to_owned()));
        if super::mesh_tls::mesh_tls(&self.state.mesh).is_some() {
            self.out.insert(Read::Callers(node.to_owned()));
        }
        for backend in &vn.value.spec.backends {
            self.service(&backend.virtual_service.virtual_service_name);
        }
    }

    fn gateway(&mut self, gateway: &str, key: &str) {
        self.out.insert(Read::Gateway(gateway.to_owned()));
        if !self.state.mesh.virtual_gateways.contains_key(gateway) {
            return;
        }
        self.out.insert(Read::Placement(key.to_owned()));
        self.out.insert(Read::GatewayRoutesOf(gateway.to_owned()));
        let state = self.state;
        for gr in state.mesh.gateway_routes_of(gateway) {
            if let Some((_, _, http)) = gr.spec.as_http() {
                self.service(&http.action.target.virtual_service.virtual_service_name);
            }
        }
    }

    /// A backend (or gateway route target) service, its provider, and what that reaches.
    fn service(&mut self, name: &str) {
        if !self.out.insert(Read::Service(name.to_owned())) {
            return;
        }
        let state = self.state;
        let provider = state
            .mesh
            .virtual_services
            .get(name)
            .and_then(|s| s.value.spec.provider.as_ref());
        if let Some(router) = provider.and_then(|p| p.virtual_router.as_ref()) {
            let router = &router.virtual_router_name;
            self.out.insert(Read::Router(router.clone()));
            self.out.insert(Read::RoutesOf(router.clone()));
            for r in state.mesh.routes_of(router) {
                for target in targets(&r.spec) {
                    self.target(target);
                }
            }
        } else if let Some(node) = provider.and_then(|p| p.virtual_node.as_ref()) {
            self.target(&node.virtual_node_name);
        }
    }

    /// A node traffic is sent to: its listeners and discovery, where it runs here, and
    /// what Cloud Map gave it.
    fn target(&mut self, node: &str) {
        self.out.insert(Read::Node(node.to_owned()));
        self.out.insert(Read::Placement(node.to_owned()));
        self.out.insert(Read::Discovered(node.to_owned()));
    }
}

/// Every target node a route names, of whichever kind it is.
fn targets(spec: &RouteSpec) -> impl Iterator<Item = &str> {
    let http = [&spec.http_route, &spec.http2_route]
        .into_iter()
        .flatten()
        .flat_map(|r| &r.action.weighted_targets);
    let grpc = spec
        .grpc_route
        .iter()
        .flat_map(|r| &r.action.weighted_targets);
    let tcp = spec
        .tcp_route
        .iter()
        .flat_map(|r| &r.action.weighted_targets);
    http.chain(grpc).chain(tcp).map(|t| t.virtual_node.as_str())
}

/// The same resource in two states: the very same value, or an equal one.
fn same<T: PartialEq>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

/// The same keyed resources (a router's routes, a gateway's gateway routes) in two maps.
fn same_range<'a, T: PartialEq + 'a>(
    a: impl Iterator<Item = (&'a (String, String), &'a Arc<T>)>,
    b: impl Iterator<Item = (&'a (String, String), &'a Arc<T>)>,
) -> bool {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some((ka, va)), Some((kb, vb))) if ka == kb && same(Some(va), Some(vb)) => {}
            _ => return false,
        }
    }
}

/// The entries of `map` keyed `(owner, _)`.
fn owned_by<'a, T>(
    map: &'a std::collections::BTreeMap<(String, String), meshmodel::mesh::Sourced<T>>,
    owner: &'a str,
) -> impl Iterator<Item = (&'a (String, String), &'a Arc<T>)> {
    map.range((owner.to_owned(), String::new())..)
        .take_while(move |((o, _), _)| o == owner)
        .map(|(k, v)| (k, &v.value))
}

impl Read {
    /// Whether this reads the same in `a` and `b`.
    fn same_in(&self, a: &MeshState, b: &MeshState) -> bool {
        let (ma, mb) = (&a.mesh, &b.mesh);
        match self {
            Read::Mesh => same(
                ma.mesh.as_ref().map(|m| &m.value),
                mb.mesh.as_ref().map(|m| &m.value),
            ),
            Read::Node(n) => same(
                ma.virtual_nodes.get(n).map(|s| &s.value),
                mb.virtual_nodes.get(n).map(|s| &s.value),
            ),
            Read::Service(n) => same(
                ma.virtual_services.get(n).map(|s| &s.value),
                mb.virtual_services.get(n).map(|s| &s.value),
            ),
            Read::Router(n) => same(
                ma.virtual_routers.get(n).map(|s| &s.value),
                mb.virtual_routers.get(n).map(|s| &s.value),
            ),
            Read::Gateway(n) => same(
                ma.virtual_gateways.get(n).map(|s| &s.value),
                mb.virtual_gateways.get(n).map(|s| &s.value),
            ),
            Read::RoutesOf(r) => same_range(owned_by(&ma.routes, r), owned_by(&mb.routes, r)),
            Read::GatewayRoutesOf(g) => same_range(
                owned_by(&ma.gateway_routes, g),
                owned_by(&mb.gateway_routes, g),
            ),
            Read::Placement(n) => a.placements.get(n) == b.placements.get(n),
            Read::Discovered(n) => a.discovered.get(n) == b.discovered.get(n),
            Read::Callers(n) => super::callers_of(a, n) == super::callers_of(b, n),
        }
    }
}

/// What differs between two states of a mesh, as the reads it changes: worked out once
/// per change, in one ordered walk of each map (the very same values compare at once), and
/// then looked up in each node's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed(BTreeSet<Read>);

/// Calls `changed` with each key whose value differs between `a` and `b` (or is in one
/// only), walking both in order.
fn differing<K: Ord, V>(
    a: &std::collections::BTreeMap<K, V>,
    b: &std::collections::BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
    mut changed: impl FnMut(&K),
) {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some((k, _)), None) => {
                changed(k);
                a.next();
            }
            (None, Some((k, _))) => {
                changed(k);
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                Ordering::Less => {
                    changed(ka);
                    a.next();
                }
                Ordering::Greater => {
                    changed(kb);
                    b.next();
                }
                Ordering::Equal => {
                    if !same(va, vb) {
                        changed(ka);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

fn same_sourced<T: PartialEq>(
    a: &meshmodel::mesh::Sourced<T>,
    b: &meshmodel::mesh::Sourced<T>,
) -> bool {
    same(Some(&a.value), Some(&b.value))
}

/// What differs between `a` and `b`, two states of one mesh.
pub fn changed(a: &MeshState, b: &MeshState) -> Changed {
    let mut out = BTreeSet::new();
    let (ma, mb) = (&a.mesh, &b.mesh);
    if !Read::Mesh.same_in(a, b) {
        out.insert(Read::Mesh);
    }
    let named = |read: fn(String) -> Read| move |k: &String| read(k.clone());
    let mut add = |r: Read| {
        out.insert(r);
    };
    let node = named(Read::Node);
    differing(&ma.virtual_nodes, &mb.virtual_nodes, same_sourced, |k| {
        add(node(k))
    });
    let service = named(Read::Service);
    differing(
        &ma.virtual_services,
        &mb.virtual_services,
        same_sourced,
        |k| add(service(k)),
    );
    let router = named(Read::Router);
    differing(
        &ma.virtual_routers,
        &mb.virtual_routers,
        same_sourced,
        |k| add(router(k)),
    );
    let gateway = named(Read::Gateway);
    differing(
        &ma.virtual_gateways,
        &mb.virtual_gateways,
        same_sourced,
        |k| add(gateway(k)),
    );
    differing(&ma.routes, &mb.routes, same_sourced, |(r, _)| {
        add(Read::RoutesOf(r.clone()));
    });
    differing(
        &ma.gateway_routes,
        &mb.gateway_routes,
        same_sourced,
        |(g, _)| {
            add(Read::GatewayRoutesOf(g.clone()));
        },
    );
    let placed = named(Read::Placement);
    differing(&a.placements, &b.placements, PartialEq::eq, |k| {
        add(placed(k))
    });
    let discovered = named(Read::Discovered);
    differing(&a.discovered, &b.discovered, PartialEq::eq, |k| {
        add(discovered(k))
    });
    let tls = |s: &MeshState| super::mesh_tls::mesh_tls(&s.mesh).is_some();
    if tls(a) || tls(b) {
        fn callers(s: &MeshState) -> &crate::state::snapshot::Callers {
            s.callers.get_or_init(|| super::mesh_tls::callers(&s.mesh))
        }
        let caller = named(Read::Callers);
        differing(callers(a), callers(b), PartialEq::eq, |k| add(caller(k)));
    }
    Changed(out)
}

impl Reads {
    /// Whether everything read is the same in `a` and `b` (so the node translates the same
    /// in both).
    pub fn same_in(&self, a: &MeshState, b: &MeshState) -> bool {
        self.0.iter().all(|r| r.same_in(a, b))
    }

    /// Whether anything read is among what `changed` (the same answer as
    /// [`Reads::same_in`], negated, for the two states `changed` was worked out from).
    pub fn touched_by(&self, changed: &Changed) -> bool {
        let (small, large) = match self.0.len() < changed.0.len() {
            true => (&self.0, &changed.0),
            false => (&changed.0, &self.0),
        };
        small.iter().any(|r| large.contains(r))
    }

    /// `state` cut down to what is read here: what the tests translate to check the walk.
    #[cfg(test)]
    pub(super) fn cut(&self, state: &MeshState) -> MeshState {
        let mesh = &state.mesh;
        let mut cut = meshmodel::Mesh {
            backends_may_dangle: mesh.backends_may_dangle,
            ..meshmodel::Mesh::default()
        };
        let mut placements = std::collections::BTreeMap::new();
        let mut discovered = std::collections::BTreeMap::new();
        let mut callers = crate::state::snapshot::Callers::new();
        fn copy<K: Ord + Clone, V: Clone>(
            from: &std::collections::BTreeMap<K, V>,
            to: &mut std::collections::BTreeMap<K, V>,
            key: &K,
        ) {
            if let Some(v) = from.get(key) {
                to.insert(key.clone(), v.clone());
            }
        }
        for read in &self.0 {
            match read {
                Read::Mesh => cut.mesh.clone_from(&mesh.mesh),
                Read::Node(n) => copy(&mesh.virtual_nodes, &mut cut.virtual_nodes, n),
                Read::Service(n) => copy(&mesh.virtual_services, &mut cut.virtual_services, n),
                Read::Router(n) => copy(&mesh.virtual_routers, &mut cut.virtual_routers, n),
                Read::Gateway(n) => copy(&mesh.virtual_gateways, &mut cut.virtual_gateways, n),
                Read::RoutesOf(r) => {
                    for (k, _) in owned_by(&mesh.routes, r) {
                        copy(&mesh.routes, &mut cut.routes, k);
                    }
                }
                Read::GatewayRoutesOf(g) => {
                    for (k, _) in owned_by(&mesh.gateway_routes, g) {
                        copy(&mesh.gateway_routes, &mut cut.gateway_routes, k);
                    }
                }
                Read::Placement(n) => copy(&state.placements, &mut placements, n),
                Read::Discovered(n) => copy(&state.discovered, &mut discovered, n),
                Read::Callers(n) => {
                    if let Some(c) = super::callers_of(state, n) {
                        callers.insert(n.clone(), c.clone());
                    }
                }
            }
        }
        let out = MeshState {
            mesh: cut,
            placements,
            discovered,
            ..MeshState::default()
        };
        let _ = out.callers.set(callers);
        out
    }
}

#[cfg(test)]
mod tests;
