//! The one store of mesh state. Every change (a `route set`, an `apply`, later the App
//! Mesh API) goes through [`Store`], is checked against the whole mesh, and on success
//! becomes a new [`Snapshot`] that every ADS stream is woken with. A refused change leaves
//! the current snapshot, and so every Envoy, as it was.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use meshmodel::appmesh::WeightedTarget;
use meshmodel::{Mesh, Problem, Problems, Resource};
use tokio::sync::watch;

/// Where a virtual node's Envoy and app are on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Where the node's Envoy accepts inbound traffic (the ingress listener).
    pub ingress: SocketAddr,
    /// Where the node's Envoy accepts its app's outbound traffic (the egress listener).
    pub egress: SocketAddr,
    /// Where the app listens, as the node's Envoy reaches it.
    pub app: SocketAddr,
    /// Where other Envoys send traffic for this node.
    pub reach: SocketAddr,
    /// Envoy's admin interface (loopback only).
    pub admin: SocketAddr,
    /// Benchmark aid (`up --answer-at-envoy`): the node's Envoy answers inbound requests
    /// itself with a fixed distributor answer and never forwards them to the app.
    pub answer_at_envoy: bool,
}

/// One consistent state of the mesh, as served to Envoy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every accepted change.
    pub version: u64,
    pub mesh: Mesh,
    pub placements: BTreeMap<String, Placement>,
}

/// The store: the current snapshot and a way to be told of the next one.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    write: Arc<Mutex<()>>,
}

impl Store {
    /// A store holding `mesh` (already checked) and `placements`, at version 1.
    pub fn new(mesh: Mesh, placements: BTreeMap<String, Placement>) -> Self {
        let snapshot = Snapshot {
            version: 1,
            mesh,
            placements,
        };
        let (tx, _) = watch::channel(Arc::new(snapshot));
        Self {
            tx: Arc::new(tx),
            write: Arc::default(),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Applies `change` to a copy of the mesh; publishes it if the result checks out.
    fn update(
        &self,
        change: impl FnOnce(&Mesh) -> Result<Mesh, Problems>,
    ) -> Result<Arc<Snapshot>, Problems> {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let mesh = change(&current.mesh)?;
        let next = Arc::new(Snapshot {
            version: current.version + 1,
            mesh,
            placements: current.placements.clone(),
        });
        self.tx.send_replace(next.clone());
        Ok(next)
    }

    /// Creates or replaces one resource.
    pub fn apply(&self, origin: &str, resource: Resource) -> Result<Arc<Snapshot>, Problems> {
        self.update(|mesh| mesh.apply(origin, resource))
    }

    /// Sets the weights of route `route` (in `router`, or in the only router that has a
    /// route of that name). Every target must be named; nodes not yet targets are refused.
    pub fn set_weights(
        &self,
        router: Option<&str>,
        route: &str,
        weights: &BTreeMap<String, i64>,
    ) -> Result<Arc<Snapshot>, Problems> {
        let origin = "<route set>";
        self.update(|mesh| {
            let found: Vec<_> = mesh
                .routes
                .values()
                .filter(|s| s.value.route_name == route && router.is_none_or(|r| r == s.value.virtual_router_name))
                .collect();
            let entry = match found.as_slice() {
                [one] => *one,
                [] => {
                    let known: Vec<String> = mesh.routes.keys().map(|(r, n)| format!("{r}/{n}")).collect();
                    return Err(Problems::one(Problem::new(
                        origin,
                        "route",
                        format!("no route `{route}`{} (known: {})", router.map(|r| format!(" in router `{r}`")).unwrap_or_default(), known.join(", ")),
                    )));
                }
                _ => {
                    return Err(Problems::one(Problem::new(
                        origin,
                        "route",
                        format!("more than one router has a route `{route}`; name the router with --router"),
                    )));
                }
            };
            let mut next = entry.value.clone();
            let Some(targets) = next.spec.weighted_targets_mut() else {
                return Err(Problems::one(Problem::new(&entry.origin, "spec", "the route has no weighted targets")));
            };
            let current: Vec<String> = targets.iter().map(|t| t.virtual_node.clone()).collect();
            for node in weights.keys() {
                if !current.contains(node) {
                    return Err(Problems::one(Problem::new(
                        origin,
                        node.as_str(),
                        format!("`{node}` is not a target of route {route} (targets: {})", current.join(", ")),
                    )));
                }
            }
            let missing: Vec<&String> = current.iter().filter(|n| !weights.contains_key(*n)).collect();
            if !missing.is_empty() {
                return Err(Problems::one(Problem::new(
                    origin,
                    "weights",
                    format!(
                        "give a weight for every target; missing: {}",
                        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )));
            }
            *targets = targets
                .iter()
                .map(|t| WeightedTarget {
                    weight: weights[&t.virtual_node],
                    ..t.clone()
                })
                .collect();
            mesh.apply(&entry.origin, Resource::Route(next))
        })
    }
}
