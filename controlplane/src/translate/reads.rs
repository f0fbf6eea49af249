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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshmodel::appmesh::RouteSpec;
use meshmodel::mesh::Sourced;

use super::mesh_tls::callers_in;
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

fn same_sourced<T: PartialEq>(a: &Sourced<T>, b: &Sourced<T>) -> bool {
    same(Some(&a.value), Some(&b.value))
}

/// Adds `read(key)` to `out` for each key whose resource differs between `a` and `b`.
fn differing_resources<T: PartialEq>(
    a: &BTreeMap<String, Sourced<T>>,
    b: &BTreeMap<String, Sourced<T>>,
    read: fn(String) -> Read,
    out: &mut BTreeSet<Read>,
) {
    differing(a, b, same_sourced, |k| {
        out.insert(read(k.clone()));
    });
}

/// What differs between `a` and `b`, two states of one mesh.
pub fn changed(a: &MeshState, b: &MeshState) -> Changed {
    let mut out = BTreeSet::new();
    let (ma, mb) = (&a.mesh, &b.mesh);
    let (mesh_a, mesh_b) = (ma.mesh.as_ref(), mb.mesh.as_ref());
    if !same(mesh_a.map(|m| &m.value), mesh_b.map(|m| &m.value)) {
        out.insert(Read::Mesh);
    }
    differing_resources(&ma.virtual_nodes, &mb.virtual_nodes, Read::Node, &mut out);
    differing_resources(
        &ma.virtual_services,
        &mb.virtual_services,
        Read::Service,
        &mut out,
    );
    differing_resources(
        &ma.virtual_routers,
        &mb.virtual_routers,
        Read::Router,
        &mut out,
    );
    differing_resources(
        &ma.virtual_gateways,
        &mb.virtual_gateways,
        Read::Gateway,
        &mut out,
    );
    differing(&ma.routes, &mb.routes, same_sourced, |(r, _)| {
        out.insert(Read::RoutesOf(r.clone()));
    });
    differing(
        &ma.gateway_routes,
        &mb.gateway_routes,
        same_sourced,
        |(g, _)| {
            out.insert(Read::GatewayRoutesOf(g.clone()));
        },
    );
    differing(&a.placements, &b.placements, PartialEq::eq, |k| {
        out.insert(Read::Placement(k.clone()));
    });
    differing(&a.discovered, &b.discovered, PartialEq::eq, |k| {
        out.insert(Read::Discovered(k.clone()));
    });
    let tls = |s: &MeshState| super::mesh_tls::mesh_tls(&s.mesh).is_some();
    if tls(a) || tls(b) {
        differing(callers_in(a), callers_in(b), PartialEq::eq, |k| {
            out.insert(Read::Callers(k.clone()));
        });
    }
    Changed(out)
}

impl Reads {
    /// Whether anything read is among what `changed` (the tests check this against each
    /// read compared in the two states `changed` was worked out from).
    pub fn touched_by(&self, changed: &Changed) -> bool {
        let (small, large) = match self.0.len() < changed.0.len() {
            true => (&self.0, &changed.0),
            false => (&changed.0, &self.0),
        };
        small.iter().any(|r| large.contains(r))
    }
}

#[cfg(test)]
mod tests;
