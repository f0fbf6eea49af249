//! The snapshot cache: each Envoy's resources, built once per mesh version and shared by
//! every stream of that Envoy (and every push of every type), as go-control-plane's
//! `pkg/cache/v3` sits beside its server. The ADS server only ever asks the cache; what
//! builds the resources (the App Mesh translation, or a stand-in in tests) is the cache's
//! business. Each type's resources are also encoded once, on first use, and the encoding
//! shared by every stream that sends them ([`Encoded`]). A node's resources are kept from
//! one version to the next when the change touched nothing its builder read
//! ([`crate::translate::reads`]), so only the nodes a change reaches are built again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::watch;

use super::encoded::Encoded;
pub use super::encoded::version_of;
use super::listing::{Changes, Listing};
use super::vhds::VHOST_TYPE;
use crate::state::lock;
use crate::state::snapshot::{MeshState, Snapshot, split_key};
use crate::state::store::Store;
use crate::translate::{
    self, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, NodeResources, ROUTE_TYPE, Reads,
};

/// Builds one virtual node's resources from its mesh's state; `None` when the mesh has no
/// such node.
pub type Build = dyn Fn(&MeshState, &str) -> Option<NodeResources> + Send + Sync;

/// What building one node reads of its mesh's state ([`translate::reads`] for the App Mesh
/// translation), so that a change to the mesh builds again only the nodes that read it.
pub type ReadsOf = dyn Fn(&MeshState, &str) -> Reads + Send + Sync;

/// One node's resources of one mesh version, and each type's encoding once made.
#[derive(Debug, Default)]
pub struct Prepared {
    resources: NodeResources,
    encoded: [OnceLock<Arc<Encoded>>; 4],
    /// Each type's listing for delta streams, in [`DELTA_TYPES`] order.
    listings: [OnceLock<Arc<Listing>>; 5],
    /// What changed since earlier resources of the node, by type: worked out once for all
    /// the streams that move from those to these (a few kept; the oldest go first).
    changes: Mutex<Vec<KeptChanges>>,
}

/// What changed in one type (by its place in [`DELTA_TYPES`]) since the earlier resources
/// of a node.
type KeptChanges = (Weak<Prepared>, usize, Arc<Changes>);

/// The types a delta stream is sent from a node's resources (route configurations and
/// virtual hosts as [`super::vhds`] splits them).
const DELTA_TYPES: [&str; 5] = [
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ENDPOINT_TYPE,
    VHOST_TYPE,
];

/// How many earlier versions' changes a node's resources keep.
const CHANGES_KEPT: usize = 8;

impl Prepared {
    pub fn new(resources: NodeResources) -> Self {
        Self {
            resources,
            encoded: Default::default(),
            listings: Default::default(),
            changes: Mutex::default(),
        }
    }

    /// What a node the mesh does not have gets: nothing.
    pub fn nothing() -> Arc<Self> {
        static NOTHING: OnceLock<Arc<Prepared>> = OnceLock::new();
        NOTHING.get_or_init(Arc::default).clone()
    }

    /// The encoding of every resource of `type_url`, made on the first call and then
    /// shared; `None` for a type this control plane does not serve.
    pub fn encoded(&self, type_url: &str) -> Option<Arc<Encoded>> {
        let slot = slot(type_url)?;
        let resources = self.resources.of_type(type_url)?;
        Some(
            self.encoded[slot]
                .get_or_init(|| Arc::new(Encoded::new(resources.iter().map(|(_, any)| any))))
                .clone(),
        )
    }

    /// The listing of `type_url` for delta streams (route configurations and virtual
    /// hosts split apart), made on the first call and then shared; `None` for a type this
    /// control plane does not serve from the node's resources.
    pub fn listing(&self, type_url: &str) -> Option<Arc<Listing>> {
        let slot = DELTA_TYPES.iter().position(|t| *t == type_url)?;
        if matches!(type_url, ROUTE_TYPE | VHOST_TYPE) && self.listings[slot].get().is_none() {
            // One split makes both listings (a stream that asks for one asks for the other).
            let split = super::vhds::split(&self.resources.routes);
            for (t, resources) in [(ROUTE_TYPE, &split.routes), (VHOST_TYPE, &split.hosts)] {
                if let Some(i) = DELTA_TYPES.iter().position(|d| *d == t) {
                    let _ = self.listings[i].set(Arc::new(Listing::new(resources)));
                }
            }
        }
        Some(
            self.listings[slot]
                .get_or_init(|| {
                    Arc::new(Listing::new(
                        self.resources.of_type(type_url).unwrap_or_default(),
                    ))
                })
                .clone(),
        )
    }

    /// What changed in `type_url` from `before` to these resources (worked out once, then
    /// shared by every stream that asks).
    pub fn changes_since(&self, before: &Arc<Prepared>, type_url: &str) -> Option<Arc<Changes>> {
        let slot = DELTA_TYPES.iter().position(|t| *t == type_url)?;
        let mut kept = lock(&self.changes);
        let found = kept
            .iter()
            .find(|(b, s, _)| *s == slot && std::ptr::eq(b.as_ptr(), Arc::as_ptr(before)));
        if let Some((_, _, changes)) = found {
            return Some(changes.clone());
        }
        let earlier = before.listing(type_url)?;
        let changes = Arc::new(self.listing(type_url)?.changes_since(&earlier));
        if kept.len() >= CHANGES_KEPT {
            kept.remove(0);
        }
        kept.push((Arc::downgrade(before), slot, changes.clone()));
        Some(changes)
    }
}

/// Where a type's encodings and versions are kept.
fn slot(type_url: &str) -> Option<usize> {
    match type_url {
        CLUSTER_TYPE => Some(0),
        LISTENER_TYPE => Some(1),
        ROUTE_TYPE => Some(2),
        ENDPOINT_TYPE => Some(3),
        _ => None,
    }
}

impl std::ops::Deref for Prepared {
    type Target = NodeResources;

    fn deref(&self) -> &NodeResources {
        &self.resources
    }
}

#[derive(Default)]
struct Built {
    version: u64,
    /// The state of each mesh the nodes below were built from.
    states: HashMap<String, Arc<MeshState>>,
    nodes: HashMap<String, Node>,
}

/// One node as built: its resources (`None`: the mesh has no such node), and what
/// building them read (`None`: not known, so any change to the mesh builds it again).
type Node = (Option<Arc<Prepared>>, Option<Reads>);

impl Built {
    /// What is built for `snapshot`, starting from what `before` built: the nodes of a
    /// mesh the change did not touch (its state the very same), and within a mesh that
    /// changed those that read nothing it changed, are kept as they were, so they are not
    /// built again and their streams see nothing new.
    fn after(before: Built, snapshot: &Snapshot) -> Self {
        let states: HashMap<String, Arc<MeshState>> = snapshot
            .meshes
            .iter()
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect();
        let Built {
            states: earlier,
            nodes,
            ..
        } = before;
        // What changed in each mesh whose state is new, worked out once (and only when a
        // node of it says what it reads).
        let mut changes: HashMap<String, translate::Changed> = HashMap::new();
        let mut unchanged = |key: &str, reads: Option<&Reads>| {
            let Some((mesh, _)) = split_key(key) else {
                return false;
            };
            match (earlier.get(mesh), states.get(mesh)) {
                (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
                (Some(a), Some(b)) => reads.is_some_and(|r| {
                    if !changes.contains_key(mesh) {
                        changes.insert(mesh.to_owned(), translate::changed(a, b));
                    }
                    changes
                        .get(mesh)
                        .is_some_and(|changed| !r.touched_by(changed))
                }),
                _ => false,
            }
        };
        let nodes = nodes
            .into_iter()
            .filter(|(key, (_, reads))| unchanged(key, reads.as_ref()))
            .collect();
        Self {
            version: snapshot.version,
            states,
            nodes,
        }
    }
}

/// Per-node resources of the store's snapshots. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    store: Store,
    build: Arc<Build>,
    reads: Option<Arc<ReadsOf>>,
    built: Arc<Mutex<Built>>,
    builds: Arc<AtomicU64>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("builds", &self.builds.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache of the App Mesh translation of `store`'s snapshots.
    pub fn new(store: Store) -> Self {
        Self::with_builder(store, Arc::new(translate::for_node))
            .knowing_reads(Arc::new(translate::reads))
    }

    /// A cache whose resources `build` makes; any change to a mesh builds all its nodes
    /// again (unless [`Cache::knowing_reads`]).
    pub fn with_builder(store: Store, build: Arc<Build>) -> Self {
        Self {
            store,
            build,
            reads: None,
            built: Arc::default(),
            builds: Arc::default(),
        }
    }

    /// This cache, told what building each node reads (`reads` must name everything the
    /// builder reads), so that a change builds again only the nodes that read it.
    pub fn knowing_reads(mut self, reads: Arc<ReadsOf>) -> Self {
        self.reads = Some(reads);
        self
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.store.current()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.store.subscribe()
    }

    /// The resources of the node whose key is `node` (`MESH/NODE`, [`crate::state::snapshot::node_key`])
    /// in `snapshot`: built on the first call for this version, then shared; kept from
    /// the version before when the change did not touch what the node reads. A snapshot
    /// older than the newest one built is built but not kept. `None` for a mesh not held
    /// or a node it does not have.
    pub fn resources(&self, snapshot: &Snapshot, node: &str) -> Option<Arc<Prepared>> {
        let (mesh, inner) = split_key(node)?;
        let state = snapshot.mesh(mesh)?;
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshot.version > built.version {
            let before = std::mem::take(&mut *built);
            *built = Built::after(before, snapshot);
        }
        if snapshot.version == built.version {
            if let Some((found, _)) = built.nodes.get(node) {
                return found.clone();
            }
        }
        self.builds.fetch_add(1, Ordering::Relaxed);
        let made = (self.build)(state, inner).map(|r| Arc::new(Prepared::new(r)));
        if snapshot.version == built.version {
            let reads = self.reads.as_ref().map(|reads| reads(state, inner));
            built.nodes.insert(node.to_owned(), (made.clone(), reads));
        }
        made
    }

    /// How many times resources were built (what the tests check the sharing by).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::meta::Identity;

    /// A cache of mesh `m` whose builder names each build's one listener `NODE#N` (N the
    /// build's number), and knows every node but `unknown`.
    fn counting_cache() -> Cache {
        let mesh = meshmodel::Mesh::named("m").expect("a mesh");
        let store = Store::in_memory([mesh], Identity::default());
        let made = AtomicU64::new(0);
        Cache::with_builder(
            store,
            Arc::new(move |_: &MeshState, node: &str| {
                let n = made.fetch_add(1, Ordering::Relaxed) + 1;
                (node != "unknown").then(|| NodeResources {
                    listeners: vec![(format!("{node}#{n}"), Default::default())],
                    ..NodeResources::default()
                })
            }),
        )
    }

    #[test]
    fn a_change_to_one_mesh_builds_nothing_of_another() {
        let meshes = ["m", "n"].map(|name| meshmodel::Mesh::named(name).expect("a mesh"));
        let store = Store::in_memory(meshes, Identity::default());
        let cache = Cache::with_builder(
            store.clone(),
            Arc::new(|state: &MeshState, node: &str| {
                Some(NodeResources {
                    listeners: vec![(
                        format!("{:?}/{node}", state.mesh.name()),
                        Default::default(),
                    )],
                    ..NodeResources::default()
                })
            }),
        );
        let v1 = cache.current();
        let (a, b) = (
            cache.resources(&v1, "m/a").expect("a"),
            cache.resources(&v1, "n/b").expect("b"),
        );
        assert_eq!(cache.builds(), 2);
        store.set_placements("n", Default::default());
        let v2 = cache.current();
        assert!(v2.version > v1.version);
        let a2 = cache.resources(&v2, "m/a").expect("a");
        assert!(
            Arc::ptr_eq(&a, &a2),
            "mesh m did not change: the same resources"
        );
        assert_eq!(cache.builds(), 2, "nothing of m was built again");
        let b2 = cache.resources(&v2, "n/b").expect("b");
        assert!(!Arc::ptr_eq(&b, &b2), "mesh n changed: built again");
        assert_eq!(cache.builds(), 3);
    }

    #[test]
    fn a_change_builds_again_only_the_nodes_that_read_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh loads");
        let store = Store::in_memory([mesh], Identity::default());
        let cache = Cache::new(store.clone());
        let keys = [
            "requester",
            "distributor-v1",
            "distributor-v2",
            "virtualGateway/ingress",
        ]
        .map(|n| format!("gophermesh/{n}"));
        let built = |cache: &Cache| -> Vec<Arc<Prepared>> {
            let now = cache.current();
            keys.iter()
                .map(|k| cache.resources(&now, k).expect("a node of the mesh"))
                .collect()
        };
        let rebuilt = |a: &[Arc<Prepared>], b: &[Arc<Prepared>]| -> Vec<&str> {
            keys.iter()
                .zip(a.iter().zip(b))
                .filter(|(_, (a, b))| !Arc::ptr_eq(a, b))
                .map(|(k, _)| k.as_str())
                .collect()
        };
        let v1 = built(&cache);
        assert_eq!(cache.builds(), 4);
        let weights = [("distributor-v1", 50), ("distributor-v2", 50)]
            .map(|(n, w)| (n.to_owned(), w))
            .into();
        store
            .set_weights(None, None, "distributor", &weights)
            .expect("weights set");
        let v2 = built(&cache);
        assert_eq!(
            rebuilt(&v1, &v2),
            ["gophermesh/requester", "gophermesh/virtualGateway/ingress"],
            "the callers of the distributor's router, and no one else"
        );
        assert_eq!(cache.builds(), 6);
        // distributor-v2 runs here now: it, and those that send to it.
        let placed = crate::state::placement::Placement::as_app_mesh(Some(8080));
        store.set_placements("gophermesh", [("distributor-v2".to_owned(), placed)].into());
        let v3 = built(&cache);
        assert_eq!(
            rebuilt(&v2, &v3),
            [
                "gophermesh/requester",
                "gophermesh/distributor-v2",
                "gophermesh/virtualGateway/ingress"
            ]
        );
        assert_eq!(cache.builds(), 9);
    }

    #[test]
    fn each_node_is_built_once_per_version() {
        let cache = counting_cache();
        let v1 = cache.current();
        for _ in 0..5 {
            let r = cache.resources(&v1, "m/a").expect("a is known");
            assert_eq!(r.listeners[0].0, "a#1");
        }
        assert_eq!(cache.builds(), 1);
        assert!(cache.resources(&v1, "m/unknown").is_none());
        assert!(cache.resources(&v1, "m/unknown").is_none());
        assert_eq!(cache.builds(), 2, "an unknown node is remembered too");
        assert!(
            cache.resources(&v1, "elsewhere/a").is_none(),
            "no such mesh"
        );
        assert_eq!(cache.builds(), 2, "a mesh not held builds nothing");

        cache.store.set_placements("m", Default::default());
        let v2 = cache.current();
        assert!(v2.version > v1.version);
        let r = cache.resources(&v2, "m/a").expect("a is known");
        assert_eq!(r.listeners[0].0, "a#3", "a new version builds again");
        // A stream still on the old snapshot gets the old resources, built for it alone.
        let old = cache.resources(&v1, "m/a").expect("a is known");
        assert_eq!(old.listeners[0].0, "a#4");
        let again = cache.resources(&v2, "m/a").expect("a is known");
        assert_eq!(
            again.listeners[0].0, "a#3",
            "the newer version's entry was kept"
        );
        assert_eq!(cache.builds(), 4);
    }
}
