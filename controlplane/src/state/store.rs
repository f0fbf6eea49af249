//! The one store of mesh state. Every change (a `route set`, an `apply`, a call to the App
//! Mesh API) goes through [`Store`], is checked against the whole mesh, is written to the
//! durable database when there is one ([`super::persist`]), and only then becomes a new
//! [`Snapshot`] that every watcher (the snapshot cache, hence every ADS stream) is woken
//! with. A refused change, or one that cannot be written, leaves the current snapshot,
//! and so every Envoy, as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use meshmodel::{Key, Mesh, Problems, Resource};
use tokio::sync::watch;

use super::lock;
use super::meta::Identity;
use super::persist::{
    Database, Durable, Loaded, PersistError, Record, StorageHealth, mesh_ca_key, mesh_ca_record,
    record_key, rollout_key, rollout_record,
};
use super::placement::{Instance, Placement};
use super::rollout::Rollout;
use super::snapshot::{MeshState, SealedCa, Snapshot};

/// Meshes to publish, by name, as a change left them (`None`: gone).
type Meshes = Vec<(String, Option<MeshState>)>;

/// How long a change is made again while other replicas keep storing theirs first.
pub const CONFLICT_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// A change the store could not make.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The change itself was refused; nothing changed.
    Refused(E),
    /// The change was fine but could not be written to the database; nothing changed.
    Storage(PersistError),
}

/// What a change produces: the next state of the meshes it changes, and the client token
/// of the write, if any.
#[derive(Debug)]
pub struct Next {
    /// Each mesh the change makes, replaces or (when it holds nothing) removes, by name.
    pub meshes: Vec<(String, Mesh)>,
    pub client_token: Option<String>,
    /// A resource whose version goes up even if its content did not change (an update
    /// call that repeats the current spec, as App Mesh counts it).
    pub bump: Option<Key>,
    /// Rollouts made, changed or (`None`) removed: mesh, `ROUTER/ROUTE`, rollout. The mesh
    /// must be one of `meshes`.
    pub rollouts: Vec<(String, String, Option<Rollout>)>,
    /// A mesh CA to store, when the mesh has none yet: mesh, CA. The mesh must be one of
    /// `meshes`.
    pub mesh_ca: Option<(String, SealedCa)>,
}

impl Next {
    /// Mesh `name` becomes `mesh` (made when it does not exist yet, gone when `mesh` holds
    /// nothing), with no client token and nothing bumped.
    pub fn mesh(name: impl Into<String>, mesh: Mesh) -> Self {
        Self {
            meshes: vec![(name.into(), mesh)],
            client_token: None,
            bump: None,
            rollouts: Vec::new(),
            mesh_ca: None,
        }
    }
}

/// The store: the current snapshot and a way to be told of the next one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    /// Held while a change is made, so changes are serialized.
    write: Arc<Mutex<Option<Durable>>>,
    /// The database's health as of the last write (`None` in memory).
    health: Arc<RwLock<Option<StorageHealth>>>,
    identity: Arc<Identity>,
    /// Milliseconds every write waits before it is stored ([`Store::delay_writes`]).
    write_delay: Arc<AtomicU64>,
    /// One write at a time through [`Store::writing`]; a write waits for its turn at most
    /// `turn_wait` milliseconds.
    turn: Arc<tokio::sync::Semaphore>,
    turn_wait: Arc<AtomicU64>,
    /// Where each mesh's nodes run here, as last set, whether or not the mesh is held
    /// yet: a mesh made later (through the API) gets its placements when it appears.
    placed: Arc<Mutex<Placed>>,
}

/// Placements by mesh, then node.
type Placed = BTreeMap<String, BTreeMap<String, Placement>>;

/// How long a write waits for the writes before it, by default, before it is refused as
/// [`Busy`]: with a store that does not answer, writes fail within a bound instead of
/// queueing without end.
pub const WRITE_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A write that was not made: the writes before it held the store for longer than the
/// store's turn wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is still busy with earlier changes after {0:?}; this change was not made")]
pub struct Busy(pub std::time::Duration);

impl Store {
    /// A store in memory holding `meshes` (each already checked), at version 1, with ARNs
    /// made for `identity`.
    pub fn in_memory(meshes: impl IntoIterator<Item = Mesh>, identity: Identity) -> Self {
        let meshes = meshes
            .into_iter()
            .filter_map(|mesh| {
                let name = mesh.name()?.to_owned();
                let meta = mesh
                    .resources()
                    .into_iter()
                    .map(|(_, r)| {
                        let key = r.key();
                        let m = identity.new_meta(&name, &key, None);
                        (key, m)
                    })
                    .collect();
                Some((name, MeshState::new(mesh, meta)))
            })
            .collect();
        Self::from_parts(meshes, None, identity)
    }

    fn from_parts(
        meshes: BTreeMap<String, MeshState>,
        db: Option<Durable>,
        identity: Identity,
    ) -> Self {
        let snapshot = Snapshot {
            version: 1,
            meshes: meshes.into_iter().map(|(n, m)| (n, Arc::new(m))).collect(),
        };
        let (tx, _) = watch::channel(Arc::new(snapshot));
        let health = db.as_ref().map(|d| d.health().clone());
        Self {
            tx: Arc::new(tx),
            health: Arc::new(RwLock::new(health)),
            write: Arc::new(Mutex::new(db)),
            identity: Arc::new(identity),
            write_delay: Arc::default(),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
            turn_wait: Arc::new(AtomicU64::new(millis(WRITE_TURN_WAIT))),
            placed: Arc::default(),
        }
    }

    /// A durable store in `path`. When the database holds resources they are the meshes
    /// (`seed` is not called) and the second value is how many; otherwise the meshes
    /// `seed()` gives are written to it, as one ordinary change from nothing, and used.
    pub fn open<E>(
        path: &Path,
        seed: impl FnOnce() -> Result<Vec<Mesh>, E>,
        identity: Identity,
    ) -> Result<(Self, usize), OpenError<E>> {
        let (db, loaded) = Database::open(path).map_err(OpenError::Storage)?;
        Self::open_durable(Durable::File(db), loaded, seed, identity)
    }

    /// A store whose durable copy is DynamoDB table `table`, shared with other replicas:
    /// seeded as [`Store::open`] does when the table is empty, and following the changes
    /// other replicas store (read every `every`; see [`Store::follow`]).
    pub fn open_dynamo<E>(
        table: &str,
        seed: impl FnOnce() -> Result<Vec<Mesh>, E>,
        identity: Identity,
        every: std::time::Duration,
    ) -> Result<(Self, usize), OpenError<E>> {
        let (table, loaded) =
            super::persist::dynamo::Table::open(table).map_err(OpenError::Storage)?;
        let watch = table.watch();
        let opened = Self::open_durable(Durable::Dynamo(table), loaded, seed, identity)?;
        opened.0.follow(watch, every);
        Ok(opened)
    }

    fn open_durable<E>(
        durable: Durable,
        loaded: Loaded,
        seed: impl FnOnce() -> Result<Vec<Mesh>, E>,
        identity: Identity,
    ) -> Result<(Self, usize), OpenError<E>> {
        if loaded.count > 0 {
            let store = Self::from_parts(loaded.meshes, Some(durable), identity);
            return Ok((store, loaded.count));
        }
        let seeds: Vec<(String, Mesh)> = seed()
            .map_err(OpenError::Seed)?
            .into_iter()
            .filter_map(|mut mesh| {
                mesh.backends_may_dangle = true;
                Some((mesh.name()?.to_owned(), mesh))
            })
            .collect();
        let store = Self::from_parts(BTreeMap::new(), Some(durable), identity);
        // Another replica may seed the same table first: then its meshes stand.
        let seeded = store.update_with(|s| match s.meshes.is_empty() {
            true => Ok(Next {
                meshes: seeds.clone(),
                client_token: None,
                bump: None,
                rollouts: Vec::new(),
                mesh_ca: None,
            }),
            false => Err(()),
        });
        let count = match seeded {
            Ok(_) => 0,
            Err(UpdateError::Refused(())) => store
                .current()
                .meshes
                .values()
                .map(|m| m.mesh.resources().len())
                .sum(),
            Err(UpdateError::Storage(e)) => return Err(OpenError::Storage(e)),
        };
        Ok((store, count))
    }

    /// Sets where each virtual node of mesh `mesh` runs (its Envoy and app); a mesh not
    /// held yet gets them when it is made.
    pub fn set_placements(&self, mesh: &str, placements: BTreeMap<String, Placement>) {
        lock(&self.placed).insert(mesh.to_owned(), placements.clone());
        self.republish(mesh, |m| m.placements = placements);
    }

    /// Sets the instances Cloud Map gave for each virtual node of mesh `mesh` it discovers.
    /// Stores `ca` as mesh `mesh`'s CA unless it has one already; the CA it has after (the
    /// one stored first, by this or another replica). Blocks until stored.
    pub fn put_mesh_ca(&self, mesh: &str, ca: SealedCa) -> Result<SealedCa, UpdateError<String>> {
        let stored = self.update_with(|s| {
            let state = s
                .mesh(mesh)
                .ok_or_else(|| format!("no mesh `{mesh}` here"))?;
            Ok(Next {
                mesh_ca: Some((mesh.to_owned(), ca.clone())),
                ..Next::mesh(mesh, state.mesh.clone())
            })
        })?;
        stored
            .mesh(mesh)
            .and_then(|m| m.mesh_ca.clone())
            .ok_or_else(|| UpdateError::Refused(format!("mesh `{mesh}` is gone")))
    }

    pub fn set_discovered(&self, mesh: &str, discovered: BTreeMap<String, Vec<Instance>>) {
        self.republish(mesh, |m| m.discovered = discovered);
    }

    /// Publishes the current snapshot with `change` made to what mesh `mesh` holds beside
    /// its resources (nothing is stored), at the next version. It does not wait for a write
    /// in progress: the write publishes its meshes over what is current then
    /// ([`Store::publish`]).
    fn republish(&self, mesh: &str, change: impl FnOnce(&mut MeshState)) {
        self.tx.send_if_modified(|current| {
            let Some(held) = current.meshes.get(mesh) else {
                return false;
            };
            let mut changed = (**held).clone();
            change(&mut changed);
            let mut next = (**current).clone();
            next.version += 1;
            next.meshes.insert(mesh.to_owned(), Arc::new(changed));
            *current = Arc::new(next);
            true
        });
    }

    /// Publishes `meshes` (each mesh's resources and metadata as a change made from an
    /// earlier snapshot left them; `None`: the mesh is gone) over the current snapshot,
    /// keeping what it holds beside them (placements and discovered instances, which may
    /// have changed while the change was stored), at the next version. With `all`, the
    /// meshes not named are gone too (a reload of everything stored).
    fn publish(&self, meshes: Meshes, all: bool) -> Arc<Snapshot> {
        let mut published = None;
        self.tx.send_modify(|current| {
            let mut next = Snapshot {
                version: current.version + 1,
                meshes: match all {
                    true => BTreeMap::new(),
                    false => current.meshes.clone(),
                },
            };
            for (name, state) in meshes {
                let Some(mut state) = state else {
                    next.meshes.remove(&name);
                    continue;
                };
                match current.meshes.get(&name) {
                    Some(held) => {
                        state.placements = held.placements.clone();
                        state.discovered = held.discovered.clone();
                    }
                    None => {
                        state.placements =
                            lock(&self.placed).get(&name).cloned().unwrap_or_default();
                    }
                }
                next.meshes.insert(name, Arc::new(state));
            }
            let made = Arc::new(next);
            published = Some(made.clone());
            *current = made;
        });
        published.expect("send_modify runs its closure")
    }

    /// Makes every later write wait `delay` before it is stored: a drill of a slow disk or
    /// a slow DynamoDB, for the tests that show what such a store does and does not delay.
    pub fn delay_writes(&self, delay: std::time::Duration) {
        self.write_delay.store(millis(delay), Ordering::Relaxed);
    }

    /// Sets how long a write through [`Store::writing`] waits for the writes before it
    /// ([`WRITE_TURN_WAIT`] unless set).
    pub fn bound_write_turns(&self, wait: std::time::Duration) {
        self.turn_wait.store(millis(wait), Ordering::Relaxed);
    }

    /// Runs `write` (a change through this store, which blocks while it is stored: an
    /// fsync, DynamoDB calls, retries while other replicas win) on tokio's blocking pool,
    /// so that a slow store holds up no async worker: the APIs' reads and the ADS streams
    /// go on while writes wait. Writes take turns; one that has waited longer than the
    /// turn wait for the writes before it is not made ([`Busy`]). Async code makes every
    /// change through this.
    pub async fn writing<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let wait = std::time::Duration::from_millis(self.turn_wait.load(Ordering::Relaxed));
        let turn = match tokio::time::timeout(wait, self.turn.clone().acquire_owned()).await {
            Ok(Ok(turn)) => turn,
            // The semaphore is never closed; a closed one would mean no write can be made.
            Ok(Err(_)) | Err(_) => return Err(Busy(wait)),
        };
        let store = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let done = write(&store);
            drop(turn);
            done
        });
        match done.await {
            Ok(done) => Ok(done),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The account and region the resources' ARNs name.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// How the durable store is doing (`None` when the state lives in memory).
    pub fn health(&self) -> Option<StorageHealth> {
        self.health
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Applies `change` to the current snapshot. The resulting mesh's changed resources get
    /// new metadata versions, are written to the durable store (if any) in one transaction,
    /// and then the snapshot is published. Changes are serialized; when another replica
    /// stored a change first, its state is loaded and published and `change` is made again
    /// on top of it, after a random pause that grows with each round lost (up to 32 ms),
    /// for up to [`CONFLICT_BUDGET`] (a replica whose peer writes without pause can lose
    /// several rounds in a row).
    ///
    /// This blocks until the change is stored: from async code, call it through
    /// [`Store::writing`].
    pub fn update_with<E>(
        &self,
        mut change: impl FnMut(&Snapshot) -> Result<Next, E>,
    ) -> Result<Arc<Snapshot>, UpdateError<E>> {
        let mut guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = std::time::Instant::now();
        let mut lost = 0u32;
        loop {
            let current = self.current();
            let next = change(&current).map_err(UpdateError::Refused)?;
            let (puts, deletes, next) = self.changes(&current, next);
            // A change that changes nothing (a repeat, as when a write whose answer was
            // lost is made again over what it stored) writes nothing.
            if puts.is_empty() && deletes.is_empty() {
                return Ok(self.publish(next, false));
            }
            let delay = self.write_delay.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            let Some(durable) = guard.as_mut() else {
                return Ok(self.publish(next, false));
            };
            let written = durable.write(&puts, &deletes);
            self.note_health(durable);
            match written {
                Ok(()) => return Ok(self.publish(next, false)),
                Err(PersistError::Conflict) if started.elapsed() < CONFLICT_BUDGET => {
                    // A random pause, longer after each round lost, so that two replicas
                    // writing without pause take turns instead of one winning every race.
                    lost += 1;
                    let ceiling = 1u64 << lost.min(5);
                    std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(
                        0..=ceiling,
                    )));
                    self.reload(durable).map_err(UpdateError::Storage)?;
                }
                Err(e) => return Err(UpdateError::Storage(e)),
            }
        }
    }

    /// What `next` changes relative to `current`: records to write, keys to remove, and the
    /// meshes to publish once they are stored.
    fn changes(
        &self,
        current: &Snapshot,
        next: Next,
    ) -> (Vec<(String, Record)>, Vec<String>, Meshes) {
        let Next {
            meshes,
            client_token,
            bump,
            rollouts: changed_rollouts,
            mesh_ca: new_ca,
        } = next;
        let (mut puts, mut deletes, mut published) = (Vec::new(), Vec::new(), Vec::new());
        for (name, mesh) in meshes {
            let held = current.meshes.get(&name).map(|m| &**m);
            let empty = MeshState::default();
            let before = held.unwrap_or(&empty);
            let bare = before.bare_keys;
            // Only what the change touched is compared, written and given new metadata
            // (the rest is shared with the current mesh).
            let (mut changed, removed) = before.mesh.diff(&mesh);
            if let Some(key) = &bump {
                if !changed.iter().any(|(k, _, _)| k == key) {
                    if let Some((origin, resource)) = mesh.get(key) {
                        changed.push((key.clone(), origin, resource));
                    }
                }
            }
            let mut meta = before.meta.clone();
            for (key, origin, resource) in changed {
                let m = match meta.get(&key) {
                    Some(m) => m.next_version(client_token.clone()),
                    None => self.identity.new_meta(&name, &key, client_token.clone()),
                };
                let record = Record {
                    origin,
                    resource: resource.to_json(),
                    meta: m.clone(),
                };
                puts.push((record_key(&name, bare, &key), record));
                meta.insert(key, m);
            }
            for key in removed {
                deletes.push(record_key(&name, bare, &key));
                meta.remove(&key);
            }
            let gone = mesh.resources().is_empty();
            let mut rollouts = before.rollouts.clone();
            for (_, key, rollout) in changed_rollouts.iter().filter(|(m, _, _)| *m == name) {
                match rollout {
                    Some(r) if !gone && rollouts.get(key) != Some(r) => {
                        puts.push((rollout_key(&name, key), rollout_record(r)));
                        rollouts.insert(key.clone(), r.clone());
                    }
                    Some(_) => {}
                    None => {
                        if rollouts.remove(key).is_some() {
                            deletes.push(rollout_key(&name, key));
                        }
                    }
                }
            }
            if gone {
                deletes.extend(rollouts.keys().map(|k| rollout_key(&name, k)));
            }
            let mut mesh_ca = before.mesh_ca.clone();
            match new_ca.as_ref().filter(|(m, _)| *m == name) {
                Some((_, ca)) if !gone && mesh_ca.is_none() => {
                    puts.push((mesh_ca_key(&name), mesh_ca_record(ca)));
                    mesh_ca = Some(ca.clone());
                }
                _ if gone && mesh_ca.is_some() => deletes.push(mesh_ca_key(&name)),
                _ => {}
            }
            // A mesh with nothing left in it (deleted) is gone.
            let state = (!gone).then(|| MeshState {
                bare_keys: bare,
                rollouts,
                mesh_ca,
                ..MeshState::new(mesh, meta)
            });
            published.push((name, state));
        }
        (puts, deletes, published)
    }

    fn note_health(&self, durable: &Durable) {
        *self
            .health
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(durable.health().clone());
    }

    /// Loads what another writer stored and publishes it (the write lock is held).
    fn reload(&self, durable: &mut Durable) -> Result<(), PersistError> {
        let Some(loaded) = durable.reload() else {
            return Ok(());
        };
        let loaded = loaded?;
        let meshes = loaded
            .meshes
            .into_iter()
            .map(|(name, state)| (name, Some(state)))
            .collect();
        self.publish(meshes, true);
        Ok(())
    }

    /// Follows the changes other replicas store in the table `watch` reads: every `every`,
    /// its version is read, and when it moved past this replica's, everything is loaded and
    /// published (so this replica's Envoys get it). Runs on a thread of its own until the
    /// store is dropped; a failed read is logged once per failure streak and tried again.
    fn follow(&self, watch: super::persist::dynamo::Watch, every: std::time::Duration) {
        let weak = Arc::downgrade(&self.tx);
        let (write, health, identity, placed) = (
            Arc::downgrade(&self.write),
            Arc::downgrade(&self.health),
            Arc::downgrade(&self.identity),
            Arc::downgrade(&self.placed),
        );
        let spawned = std::thread::Builder::new()
            .name("follow-table".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(every);
                    let (Some(tx), Some(write), Some(health), Some(identity), Some(placed)) = (
                        weak.upgrade(),
                        write.upgrade(),
                        health.upgrade(),
                        identity.upgrade(),
                        placed.upgrade(),
                    ) else {
                        return;
                    };
                    let store = Store {
                        tx,
                        write,
                        health,
                        identity,
                        write_delay: Arc::default(),
                        turn: Arc::new(tokio::sync::Semaphore::new(1)),
                        turn_wait: Arc::default(),
                        placed,
                    };
                    match store.catch_up(&watch) {
                        Ok(()) => {
                            if failing {
                                tracing::info!("reading the shared state works again");
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!("cannot follow the shared state: {e}");
                            }
                            failing = true;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start following the shared state: {e}");
        }
    }

    /// Loads and publishes the table's state when another replica moved it on.
    fn catch_up(&self, watch: &super::persist::dynamo::Watch) -> Result<(), PersistError> {
        let stored = watch.version()?;
        let mut guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(durable) = guard.as_mut() else {
            return Ok(());
        };
        if !matches!(durable, Durable::Dynamo(table) if table.version() != stored) {
            return Ok(());
        }
        let reloaded = self.reload(durable);
        self.note_health(durable);
        if reloaded.is_ok() {
            tracing::info!(stored, "loaded a change another replica stored");
        }
        reloaded
    }

    /// Creates or replaces one resource, in the mesh its `meshName` names (a mesh
    /// resource makes its mesh; any other resource needs its mesh to be held).
    pub fn apply(
        &self,
        origin: &str,
        resource: Resource,
    ) -> Result<Arc<Snapshot>, UpdateError<Problems>> {
        let named = resource.mesh_name().to_owned();
        let makes_mesh = matches!(resource, Resource::Mesh(_));
        self.update_with(|s| match (s.mesh(&named), makes_mesh) {
            (None, true) => Mesh {
                backends_may_dangle: true,
                ..Mesh::default()
            }
            .apply(origin, resource.clone())
            .map(|m| Next::mesh(named.clone(), m)),
            _ => in_mesh(s, Some(&named), |m| m.apply(origin, resource.clone())),
        })
    }

    /// Sets the weights of route `route` ([`super::weights::set_weights`]) of the mesh
    /// named `mesh` (the only one when `None`).
    pub fn set_weights(
        &self,
        mesh: Option<&str>,
        router: Option<&str>,
        route: &str,
        weights: &BTreeMap<String, i64>,
    ) -> Result<Arc<Snapshot>, UpdateError<Problems>> {
        self.update_with(|s| {
            in_mesh(s, mesh, |m| {
                super::weights::set_weights(m, router, route, weights)
            })
        })
    }
}

/// `change` made to the mesh named `mesh` of `snapshot` (the only one when `None`); a
/// name of no mesh here is refused, naming those there are, as is leaving the name out
/// when there are several.
fn in_mesh(
    snapshot: &Snapshot,
    mesh: Option<&str>,
    change: impl Fn(&Mesh) -> Result<Mesh, Problems>,
) -> Result<Next, Problems> {
    let (name, state) = snapshot
        .pick(mesh)
        .map_err(|e| Problems::one(meshmodel::Problem::new("<request>", "mesh", e.to_string())))?;
    change(&state.mesh).map(|m| Next::mesh(name, m))
}

/// `d` in whole milliseconds.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why [`Store::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E> {
    #[error("{0}")]
    Storage(PersistError),
    #[error("cannot seed the store: {0}")]
    Seed(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Mesh {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        Mesh::load_dir(&dir).expect("the shipped mesh loads")
    }

    fn weights(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
    }

    fn route_weights(s: &Snapshot) -> Vec<(String, i64)> {
        let mesh = &s.mesh("gophermesh").expect("the shipped mesh").mesh;
        let route = mesh.routes.values().next().expect("a route");
        let (_, targets) = route.value.spec.weighted_targets().expect("weighted");
        targets
            .iter()
            .map(|t| (t.virtual_node.clone(), t.weight))
            .collect()
    }

    /// A directory under the system's temporary directory, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "gophermesh-store-{name}-{}-{:x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_change_bumps_the_version_and_wakes_watchers_a_refusal_changes_nothing() {
        let store = Store::in_memory([shipped()], Identity::default());
        let mut watcher = store.subscribe();
        let before = store.current();
        let key = Key::Route("distributor".into(), "distributor".into());

        let after = store
            .set_weights(
                None,
                None,
                "distributor",
                &weights(&[("distributor-v1", 30), ("distributor-v2", 70)]),
            )
            .expect("accepted");
        assert_eq!(after.version, before.version + 1);
        assert!(watcher.has_changed().expect("store alive"));
        assert_eq!(
            route_weights(&watcher.borrow_and_update()),
            [
                ("distributor-v1".to_owned(), 30),
                ("distributor-v2".to_owned(), 70)
            ]
        );
        let meta = |s: &Snapshot| s.mesh("gophermesh").expect("mesh").meta.clone();
        assert_eq!(meta(&after)[&key].version, meta(&before)[&key].version + 1);
        let node = Key::VirtualNode("requester".into());
        assert_eq!(
            meta(&after)[&node],
            meta(&before)[&node],
            "untouched resources keep their metadata"
        );

        for bad in [
            weights(&[("distributor-v1", 0), ("distributor-v2", 0)]),
            weights(&[("distributor-v1", 50)]),
            weights(&[
                ("distributor-v1", 50),
                ("distributor-v2", 50),
                ("nobody", 1),
            ]),
        ] {
            let refused = store
                .set_weights(None, None, "distributor", &bad)
                .expect_err("refused");
            assert!(
                matches!(&refused, UpdateError::Refused(Problems(p)) if !p.is_empty()),
                "{refused:?}"
            );
        }
        assert!(
            store
                .set_weights(None, None, "nope", &weights(&[("distributor-v1", 1)]))
                .is_err()
        );
        assert!(
            !watcher.has_changed().expect("store alive"),
            "refusals publish nothing"
        );
        assert_eq!(store.current().version, after.version);
    }

    #[test]
    fn a_durable_store_is_seeded_once_and_restores_every_change() {
        let dir = TempDir::new("durable");
        let path = dir.0.join("state.redb");
        let count = shipped().resources().len();
        let (store, restored) = Store::open(
            &path,
            || Ok::<_, std::convert::Infallible>(vec![shipped()]),
            Identity::default(),
        )
        .expect("opens");
        assert_eq!(restored, 0, "an empty database is seeded");
        let changed = store
            .set_weights(
                None,
                None,
                "distributor",
                &weights(&[("distributor-v1", 0), ("distributor-v2", 100)]),
            )
            .expect("accepted");
        drop(store);

        let (again, restored) = Store::open(
            &path,
            || -> Result<Vec<Mesh>, &str> { Err("a store with resources is not seeded") },
            Identity::default(),
        )
        .expect("reopens");
        assert_eq!(restored, count);
        let snapshot = again.current();
        assert_eq!(route_weights(&snapshot), route_weights(&changed));
        let meta = |s: &Snapshot| s.mesh("gophermesh").expect("mesh").meta.clone();
        assert_eq!(
            meta(&snapshot),
            meta(&changed),
            "metadata survives as written"
        );
    }

    /// With a second mesh, a route's weights are set in the mesh named, a resource goes to
    /// the mesh its `meshName` names, and a mesh that is not here is refused by name.
    #[test]
    fn changes_go_to_the_mesh_they_name() {
        let store = Store::in_memory([shipped()], Identity::default());
        // A copy of the shipped mesh named `shop`.
        let text = |dir: &Path| {
            let mut out = Vec::new();
            for sub in [
                "",
                "virtual-nodes",
                "virtual-routers",
                "routes",
                "virtual-services",
            ] {
                let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_some_and(|x| x == "json") {
                        let t = std::fs::read_to_string(&path).expect("read");
                        out.push((
                            path.display().to_string(),
                            t.replace("\"gophermesh\"", "\"shop\""),
                        ));
                    }
                }
            }
            out
        };
        let mut shop = Mesh::default();
        for (origin, t) in text(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh")) {
            let value: serde_json::Value = serde_json::from_str(&t).expect("json");
            let r = Resource::from_value(&origin, value).expect("a resource");
            shop.insert(origin, r);
        }
        store
            .update_with(|_| Ok::<_, Problems>(Next::mesh("shop", shop.clone())))
            .expect("shop made");
        let shop_weights = |s: &Snapshot| {
            let mesh = &s.mesh("shop").expect("shop").mesh;
            let route = &mesh.routes[&("distributor".to_owned(), "distributor".to_owned())];
            let (_, targets) = route.value.spec.weighted_targets().expect("weighted");
            targets.iter().map(|t| t.weight).collect::<Vec<_>>()
        };
        let after = store
            .set_weights(
                Some("shop"),
                None,
                "distributor",
                &weights(&[("distributor-v1", 20), ("distributor-v2", 80)]),
            )
            .expect("accepted");
        assert_eq!(shop_weights(&after), [20, 80]);
        assert_eq!(
            route_weights(&after),
            [
                ("distributor-v1".to_owned(), 90),
                ("distributor-v2".to_owned(), 10)
            ],
            "the other mesh is untouched"
        );
        let route = serde_json::json!({"meshName": "shop", "virtualRouterName": "distributor",
            "routeName": "distributor", "spec": {"httpRoute": {"match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "distributor-v2", "weight": 1}]}}}});
        let resource = Resource::from_value("shop.json", route).expect("a route");
        let after = store.apply("shop.json", resource).expect("applied");
        assert_eq!(shop_weights(&after), [1]);
        assert_eq!(route_weights(&after)[0].1, 90);
        let refused = store
            .set_weights(
                Some("nope"),
                None,
                "distributor",
                &weights(&[("distributor-v1", 1)]),
            )
            .expect_err("no such mesh");
        let said = match refused {
            UpdateError::Refused(p) => p.to_string(),
            UpdateError::Storage(e) => panic!("{e}"),
        };
        assert!(
            said.contains("no mesh `nope` here (there is `gophermesh`, `shop`)"),
            "{said}"
        );
    }

    /// A database written before meshes were named in record keys holds its one mesh
    /// under the resources' own keys: it loads, its changes keep that form, and a mesh made
    /// beside it is stored under `@MESH/` keys; both load again as they were.
    #[test]
    fn records_under_bare_keys_still_load_and_keep_their_form() {
        let dir = TempDir::new("bare");
        let path = dir.0.join("state.redb");
        let identity = Identity::default();
        let (mut db, _) = Database::open(&path).expect("opens");
        let mesh = shipped();
        let puts: Vec<(String, Record)> = mesh
            .resources()
            .into_iter()
            .map(|(origin, r)| {
                let key = r.key();
                let record = Record {
                    origin: origin.to_owned(),
                    resource: r.to_json(),
                    meta: identity.new_meta("gophermesh", &key, None),
                };
                (key.to_text(), record)
            })
            .collect();
        db.write(&puts, &[]).expect("written as before");
        drop(db);

        let refuse = || -> Result<Vec<Mesh>, &str> { Err("not seeded") };
        let (store, restored) = Store::open(&path, refuse, identity.clone()).expect("loads");
        assert_eq!(restored, puts.len());
        assert!(
            store
                .current()
                .mesh("gophermesh")
                .expect("loaded")
                .bare_keys
        );
        store
            .set_weights(
                None,
                None,
                "distributor",
                &weights(&[("distributor-v1", 40), ("distributor-v2", 60)]),
            )
            .expect("accepted");
        let shop = Mesh::named("shop").expect("a mesh");
        store
            .update_with(|_| Ok::<_, Problems>(Next::mesh("shop", shop.clone())))
            .expect("shop made");
        // With two meshes, a change that names none is refused, naming both.
        let said = match store.set_weights(None, None, "distributor", &weights(&[])) {
            Err(UpdateError::Refused(p)) => p.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(said.contains("`gophermesh`, `shop`"), "{said}");
        drop(store);

        let (_, loaded) = Database::open(&path).expect("reopens");
        let keys: Vec<String> = loaded.meshes.keys().cloned().collect();
        assert_eq!(keys, ["gophermesh", "shop"]);
        assert!(loaded.meshes["gophermesh"].bare_keys);
        assert!(!loaded.meshes["shop"].bare_keys);
        assert_eq!(loaded.count, puts.len() + 1, "no record was written twice");
        let again = Store::from_parts(loaded.meshes, None, identity);
        assert_eq!(
            route_weights(&again.current()),
            [
                ("distributor-v1".to_owned(), 40),
                ("distributor-v2".to_owned(), 60)
            ]
        );
    }
}
