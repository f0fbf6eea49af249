//! The one store of mesh state. Every change (a `route set`, an `apply`, a call to the App
//! Mesh API) goes through [`Store`], is checked against the whole mesh, is written to the
//! durable database when there is one, and only then becomes a new [`Snapshot`] that every
//! ADS stream is woken with. A refused change (or one that cannot be written) leaves the
//! current snapshot, and so every Envoy, as it was.
//!
//! Each resource carries App Mesh's metadata ([`Meta`]): ARN, uid, version (bumped by every
//! change to it), creation and update times, and the client token of the last write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use meshmodel::appmesh::WeightedTarget;
use meshmodel::{Key, Mesh, Problem, Problems, Resource};
use serde::{Deserialize, Serialize};
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

/// App Mesh's metadata of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub arn: String,
    pub uid: String,
    pub version: i64,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub last_updated_at: f64,
    /// The client token of the write that made this version, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Who owns the resources and where they live, for ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub account: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
        }
    }
}

impl Identity {
    pub fn arn(&self, mesh: &str, key: &Key) -> String {
        format!(
            "arn:aws:appmesh:{}:{}:mesh/{mesh}{}",
            self.region,
            self.account,
            key.arn_suffix()
        )
    }
}

fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // Milliseconds, as App Mesh reports them.
    (d.as_millis() as f64) / 1000.0
}

/// One consistent state of the mesh, as served to Envoy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every accepted change.
    pub version: u64,
    pub mesh: Mesh,
    pub placements: BTreeMap<String, Placement>,
    /// Metadata of every resource in `mesh`.
    pub meta: BTreeMap<Key, Meta>,
}

/// A change the store could not make.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The change itself was refused; nothing changed.
    Refused(E),
    /// The change was fine but could not be written to the database; nothing changed.
    Storage(anyhow::Error),
}

/// What a change produces: the next mesh, and the client token of the write, if any.
#[derive(Debug)]
pub struct Next {
    pub mesh: Mesh,
    pub client_token: Option<String>,
    /// A resource whose version goes up even if its content did not change (an update
    /// call that repeats the current spec, as App Mesh counts it).
    pub bump: Option<Key>,
}

const RESOURCES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("resources");

/// One stored resource.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    origin: String,
    resource: serde_json::Value,
    meta: Meta,
}

/// The store: the current snapshot and a way to be told of the next one.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    write: Arc<Mutex<Option<redb::Database>>>,
    identity: Arc<Identity>,
}

fn new_meta(identity: &Identity, mesh: &str, key: &Key, token: Option<String>) -> Meta {
    let at = now();
    Meta {
        arn: identity.arn(mesh, key),
        uid: format!("{:032x}", fastrand::u128(..)),
        version: 1,
        created_at: at,
        last_updated_at: at,
        client_token: token,
    }
}

impl Store {
    /// A store in memory holding `mesh` (already checked) and `placements`, at version 1.
    pub fn new(mesh: Mesh, placements: BTreeMap<String, Placement>) -> Self {
        Self::in_memory(mesh, placements, Identity::default())
    }

    /// [`Store::new`] with the ARNs made for `identity`.
    pub fn in_memory(
        mesh: Mesh,
        placements: BTreeMap<String, Placement>,
        identity: Identity,
    ) -> Self {
        let name = mesh.name().unwrap_or_default().to_owned();
        let meta = mesh
            .resources()
            .into_iter()
            .map(|(_, r)| {
                let key = r.key();
                let m = new_meta(&identity, &name, &key, None);
                (key, m)
            })
            .collect();
        Self::from_parts(mesh, placements, meta, None, identity)
    }

    fn from_parts(
        mesh: Mesh,
        placements: BTreeMap<String, Placement>,
        meta: BTreeMap<Key, Meta>,
        db: Option<redb::Database>,
        identity: Identity,
    ) -> Self {
        let snapshot = Snapshot {
            version: 1,
            mesh,
            placements,
            meta,
        };
        let (tx, _) = watch::channel(Arc::new(snapshot));
        Self {
            tx: Arc::new(tx),
            write: Arc::new(Mutex::new(db)),
            identity: Arc::new(identity),
        }
    }

    /// A durable store in `path`. When the database holds resources they are the mesh
    /// (`seed` is not used) and the second value is how many; otherwise `seed()` is written
    /// to it and used.
    pub fn open(
        path: &Path,
        seed: impl FnOnce() -> anyhow::Result<Mesh>,
        placements: BTreeMap<String, Placement>,
        identity: Identity,
    ) -> anyhow::Result<(Self, usize)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let db = redb::Database::create(path)
            .with_context(|| format!("cannot open the state database {}", path.display()))?;
        let records = read_all(&db).with_context(|| format!("cannot read {}", path.display()))?;
        if records.is_empty() {
            // Seeding is one ordinary change from nothing: written, then published.
            let mut mesh = seed()?;
            mesh.backends_may_dangle = true;
            let empty = Mesh {
                backends_may_dangle: true,
                ..Mesh::default()
            };
            let store = Self::from_parts(empty, placements, BTreeMap::new(), Some(db), identity);
            store
                .update_with(|_| {
                    Ok::<_, std::convert::Infallible>(Next {
                        mesh,
                        client_token: None,
                        bump: None,
                    })
                })
                .map_err(|e| match e {
                    UpdateError::Storage(e) => e,
                    UpdateError::Refused(never) => match never {},
                })
                .with_context(|| format!("cannot write the seed to {}", path.display()))?;
            return Ok((store, 0));
        }
        let count = records.len();
        let mut mesh = Mesh {
            backends_may_dangle: true,
            ..Mesh::default()
        };
        let mut meta = BTreeMap::new();
        let mut problems = Vec::new();
        for (key, bytes) in records {
            let record: Record = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(Problem::new(
                        path.display().to_string(),
                        key.as_str(),
                        format!("unreadable record: {e}"),
                    ));
                    continue;
                }
            };
            match Resource::from_value(&record.origin, record.resource) {
                Ok(resource) => {
                    meta.insert(resource.key(), record.meta);
                    mesh.insert(record.origin, resource);
                }
                Err(Problems(mut more)) => problems.append(&mut more),
            }
        }
        problems.extend(mesh.check());
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "the state in {} does not load:\n  {}",
                path.display(),
                list.join("\n  ")
            );
        }
        Ok((
            Self::from_parts(mesh, placements, meta, Some(db), identity),
            count,
        ))
    }

    /// Sets where each virtual node's Envoy and app are (before any Envoy connects).
    pub fn set_placements(&self, placements: BTreeMap<String, Placement>) {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        self.tx.send_replace(Arc::new(Snapshot {
            version: current.version + 1,
            placements,
            ..(*current).clone()
        }));
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Applies `change` to the current snapshot. The resulting mesh's changed resources get
    /// new metadata versions, are written to the database (if any) in one transaction, and
    /// then the snapshot is published. Changes are serialized.
    pub fn update_with<E>(
        &self,
        change: impl FnOnce(&Snapshot) -> Result<Next, E>,
    ) -> Result<Arc<Snapshot>, UpdateError<E>> {
        let guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let Next {
            mesh,
            client_token,
            bump,
        } = change(&current).map_err(UpdateError::Refused)?;
        let mesh_name = mesh
            .name()
            .or(current.mesh.name())
            .unwrap_or_default()
            .to_owned();
        let mut meta = current.meta.clone();
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        let before: BTreeMap<Key, (String, Resource)> = current
            .mesh
            .resources()
            .into_iter()
            .map(|(o, r)| (r.key(), (o, r)))
            .collect();
        let after: BTreeMap<Key, (String, Resource)> = mesh
            .resources()
            .into_iter()
            .map(|(o, r)| (r.key(), (o, r)))
            .collect();
        for (key, (origin, resource)) in &after {
            let m = match (before.get(key), meta.get(key)) {
                (Some((_, old)), Some(_)) if old == resource && bump.as_ref() != Some(key) => {
                    continue;
                }
                (Some(_), Some(m)) => Meta {
                    version: m.version + 1,
                    last_updated_at: now(),
                    client_token: client_token.clone(),
                    ..m.clone()
                },
                _ => new_meta(&self.identity, &mesh_name, key, client_token.clone()),
            };
            let record = Record {
                origin: origin.clone(),
                resource: resource.to_json(),
                meta: m.clone(),
            };
            let bytes = serde_json::to_vec(&record).map_err(|e| UpdateError::Storage(e.into()))?;
            puts.push((key.to_text(), bytes));
            meta.insert(key.clone(), m);
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            deletes.push(key.to_text());
            meta.remove(key);
        }
        if let Some(db) = guard.as_ref() {
            write(db, &puts, &deletes).map_err(UpdateError::Storage)?;
        }
        let next = Arc::new(Snapshot {
            version: current.version + 1,
            mesh,
            placements: current.placements.clone(),
            meta,
        });
        self.tx.send_replace(next.clone());
        Ok(next)
    }

    /// Applies `change` to a copy of the mesh; publishes it if the result checks out.
    fn update(
        &self,
        change: impl FnOnce(&Mesh) -> Result<Mesh, Problems>,
    ) -> Result<Arc<Snapshot>, Problems> {
        self.update_with(|s| {
            change(&s.mesh).map(|mesh| Next {
                mesh,
                client_token: None,
                bump: None,
            })
        })
        .map_err(|e| match e {
            UpdateError::Refused(p) => p,
            UpdateError::Storage(e) => Problems::one(Problem::new(
                "<store>",
                "",
                format!("the change could not be stored, so it was not made: {e:#}"),
            )),
        })
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

fn read_all(db: &redb::Database) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    let tx = db.begin_read()?;
    let table = match tx.open_table(RESOURCES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// Writes `puts` and removes `deletes` in one durable transaction.
fn write(
    db: &redb::Database,
    puts: &[(String, Vec<u8>)],
    deletes: &[String],
) -> anyhow::Result<()> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(RESOURCES)?;
        for (k, v) in puts {
            table.insert(k.as_str(), v.as_slice())?;
        }
        for k in deletes {
            table.remove(k.as_str())?;
        }
    }
    tx.commit()?;
    Ok(())
}
