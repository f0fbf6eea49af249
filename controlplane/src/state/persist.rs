//! The durable copy of the mesh: one record per resource (its origin, its
//! `--cli-input-json` document and its App Mesh metadata), written in one transaction per
//! accepted change, and one per rollout (`!rollout/MESH/ROUTER/ROUTE`). On one machine that is a redb database file ([`Database`], fsynced);
//! for replicas it is a DynamoDB table ([`dynamo::Table`]) that every replica writes with
//! a condition on the stored version and watches for the others' changes.

pub mod dynamo;

use std::path::{Path, PathBuf};

use meshmodel::{Key, Problem, Problems, Resource};
use serde::{Deserialize, Serialize};

use super::meta::Meta;
use super::rollout::Rollout;
use super::snapshot::{MeshState, SealedCa};

const RESOURCES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("resources");

/// What can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the state database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: redb::Error },
    #[error("the state in {} does not load:\n  {}", path.display(), problems.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Unloadable { path: PathBuf, problems: Problems },
    #[error("cannot write the state database: {0}")]
    Write(#[from] redb::Error),
    #[error("the state database {} cannot be reopened after a failed write: {source}", path.display())]
    Unavailable {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another replica stored a change first; reload and try again.
    #[error("another replica changed the mesh at the same time")]
    Conflict,
    #[error("DynamoDB table {table}: {reason}")]
    Dynamo { table: String, reason: String },
    /// The store did not say whether it took the change, however often it was asked.
    #[error(
        "DynamoDB table {table} did not say whether it took the change ({reason}); it may have: look (describe, status) before making it again"
    )]
    FateUnknown { table: String, reason: String },
    #[error(
        "a change of {items} resources is more than one DynamoDB transaction holds (97); make it in parts"
    )]
    TooLarge { items: usize },
}

impl PersistError {
    /// What a caller is told of a change that met this error: that it was not made, or
    /// (the store did not say) that it may have been.
    pub fn outcome(&self) -> String {
        match self {
            Self::FateUnknown { .. } => self.to_string(),
            e => format!("the change could not be stored, so it was not made: {e}"),
        }
    }
}

/// One stored resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub origin: String,
    pub resource: serde_json::Value,
    pub meta: Meta,
}

/// The state database.
///
/// A failed write closes it and opens it again at once (redb refuses every later write
/// on a handle that met an I/O error); when that fails too, the next write tries again
/// before anything else, so the store heals by itself once the disk does.
#[derive(Debug)]
pub struct Database {
    /// `None` while it could not be reopened.
    db: Option<redb::Database>,
    path: PathBuf,
    health: StorageHealth,
}

/// How the database is doing, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageHealth {
    /// Where the state is kept: a file path or `dynamodb://TABLE`.
    pub location: String,
    /// Whether the last write succeeded (or none failed yet).
    pub writable: bool,
    /// The last write failure, while the store has not written since.
    pub last_error: Option<String>,
    /// Writes that failed since start.
    pub failed_writes: u64,
    /// Times the database was reopened after a failure.
    pub reopened: u64,
}

impl StorageHealth {
    /// A store at `location` that has not failed yet.
    pub fn fresh(location: String) -> Self {
        Self {
            location,
            writable: true,
            ..Self::default()
        }
    }

    /// Counts and logs the outcome of a write to `place`. A conflict with another replica
    /// is not a failure of the store.
    pub fn note(&mut self, result: &Result<(), PersistError>, place: &str) {
        match result {
            Ok(()) => {
                if !self.writable {
                    tracing::info!(%place, "the state store writes again");
                }
                self.writable = true;
                self.last_error = None;
            }
            Err(PersistError::Conflict) => {}
            Err(e) => {
                tracing::error!(%place, "{}", e.outcome());
                self.writable = false;
                self.failed_writes += 1;
                self.last_error = Some(e.to_string());
            }
        }
    }
}

/// What a database held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every mesh it held, by name.
    pub meshes: std::collections::BTreeMap<String, MeshState>,
    /// How many resources it held.
    pub count: usize,
}

impl Database {
    /// Opens (or creates) the database at `path` and reads every resource in it. The mesh
    /// it holds must check out as a whole; otherwise nothing is served from it.
    pub fn open(path: &Path) -> Result<(Self, Loaded), PersistError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| PersistError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let db = redb::Database::create(path).map_err(|source| PersistError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let records = read_all(&db).map_err(|source| PersistError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let listed = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        let loaded = load_records(&path.display().to_string(), listed).map_err(|problems| {
            PersistError::Unloadable {
                path: path.to_path_buf(),
                problems,
            }
        })?;
        Ok((
            Self {
                db: Some(db),
                path: path.to_path_buf(),
                health: StorageHealth::fresh(path.display().to_string()),
            },
            loaded,
        ))
    }

    /// How the database is doing.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }

    fn reopen(&mut self) -> Result<(), PersistError> {
        self.db = None;
        match redb::Database::create(&self.path) {
            Ok(db) => {
                self.db = Some(db);
                self.health.reopened += 1;
                tracing::warn!(path = %self.path.display(), "reopened the state database after a failed write");
                Ok(())
            }
            Err(source) => Err(PersistError::Unavailable {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes `puts` and removes `deletes` in one durable transaction; on failure, nothing
    /// of it is stored, the failure is logged as an error and the database reopened.
    pub fn write(
        &mut self,
        puts: &[(String, Record)],
        deletes: &[String],
    ) -> Result<(), PersistError> {
        let result = match self.db.is_some() {
            true => Ok(()),
            false => self.reopen(),
        }
        .and_then(|()| {
            let db = self.db.as_ref().expect("opened above");
            write_to(db, puts, deletes)
        });
        self.health.note(&result, &self.path.display().to_string());
        if matches!(result, Err(PersistError::Write(_))) {
            if let Err(again) = self.reopen() {
                tracing::error!("{again}");
            }
        }
        result
    }
}

/// The record key of `key` of mesh `mesh`: `@MESH/KEY`, or the resource's own key for a
/// mesh stored that way ([`MeshState::bare_keys`], as stores written before meshes were
/// named in record keys hold theirs).
pub(crate) fn record_key(mesh: &str, bare: bool, key: &Key) -> String {
    match bare {
        true => key.to_text(),
        false => format!("@{mesh}/{}", key.to_text()),
    }
}

/// What starts the record key of a rollout: `!rollout/MESH/ROUTER/ROUTE`.
const ROLLOUT_PREFIX: &str = "!rollout/";
/// The origin a rollout's record carries in place of a file.
const ROLLOUT_ORIGIN: &str = "<rollout>";

/// The record key of the rollout `key` (`ROUTER/ROUTE`) of mesh `mesh`.
pub(crate) fn rollout_key(mesh: &str, key: &str) -> String {
    format!("{ROLLOUT_PREFIX}{mesh}/{key}")
}

/// A rollout as a record (it has no App Mesh metadata).
pub(crate) fn rollout_record(rollout: &Rollout) -> Record {
    Record {
        origin: ROLLOUT_ORIGIN.to_owned(),
        resource: serde_json::to_value(rollout).expect("a rollout serializes"),
        meta: Meta::default(),
    }
}

/// What starts the record key of a mesh's CA: `!meshca/MESH`.
const MESH_CA_PREFIX: &str = "!meshca/";

/// The record key of mesh `mesh`'s CA.
pub(crate) fn mesh_ca_key(mesh: &str) -> String {
    format!("{MESH_CA_PREFIX}{mesh}")
}

/// A mesh's CA (its key sealed) as a record.
pub(crate) fn mesh_ca_record(ca: &SealedCa) -> Record {
    Record {
        origin: "<mesh CA>".to_owned(),
        resource: serde_json::to_value(ca).expect("a CA serializes"),
        meta: Meta::default(),
    }
}

/// The mesh a record key names (`@MESH/KEY`), if it names one.
fn mesh_of_key(record_key: &str) -> Option<&str> {
    record_key
        .strip_prefix('@')?
        .split_once('/')
        .map(|(mesh, _)| mesh)
}

/// The records of a store as meshes with their metadata; every problem when they do not
/// make meshes that each check out as a whole (`source` names the store in each). A record
/// under a resource's own key belongs to the mesh its `meshName` names, which is then
/// marked as stored that way.
pub(crate) fn load_records<'a>(
    source: &str,
    records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Loaded, Problems> {
    let mut loaded = Loaded::default();
    let mut problems = Vec::new();
    let mut rollouts = Vec::new();
    let mut cas = Vec::new();
    for (key, bytes) in records {
        loaded.count += 1;
        let record: Record = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::new(source, key, format!("unreadable record: {e}")));
                continue;
            }
        };
        if let Some(mesh) = key.strip_prefix(MESH_CA_PREFIX) {
            match serde_json::from_value::<SealedCa>(record.resource) {
                Ok(ca) => cas.push((mesh, ca)),
                Err(e) => problems.push(Problem::new(
                    source,
                    key,
                    format!("unreadable mesh CA: {e}"),
                )),
            }
            continue;
        }
        if let Some(rest) = key.strip_prefix(ROLLOUT_PREFIX) {
            match (
                rest.split_once('/'),
                serde_json::from_value::<Rollout>(record.resource),
            ) {
                (Some((mesh, route)), Ok(r)) => rollouts.push((mesh, route, r)),
                (_, Err(e)) => problems.push(Problem::new(
                    source,
                    key,
                    format!("unreadable rollout: {e}"),
                )),
                (None, _) => problems.push(Problem::new(source, key, "a rollout of no mesh")),
            }
            continue;
        }
        let resource = match Resource::from_value(&record.origin, record.resource) {
            Ok(resource) => resource,
            Err(Problems(mut more)) => {
                problems.append(&mut more);
                continue;
            }
        };
        let named = resource.mesh_name().to_owned();
        let keyed = mesh_of_key(key);
        if keyed.is_some_and(|m| m != named) {
            problems.push(Problem::new(
                source,
                key,
                format!("the record is kept under another mesh than its meshName `{named}`"),
            ));
            continue;
        }
        let mesh = loaded.meshes.entry(named).or_default();
        mesh.mesh.backends_may_dangle = true;
        mesh.bare_keys |= keyed.is_none();
        mesh.meta.insert(resource.key(), record.meta);
        mesh.mesh.insert(record.origin, resource);
    }
    for (mesh, route, rollout) in rollouts {
        match loaded.meshes.get_mut(mesh) {
            Some(held) => {
                held.rollouts.insert(route.to_owned(), rollout);
            }
            None => tracing::warn!(mesh, route, "a stored rollout of a mesh not held; ignored"),
        }
    }
    for (mesh, ca) in cas {
        match loaded.meshes.get_mut(mesh) {
            Some(held) => held.mesh_ca = Some(ca),
            None => tracing::warn!(mesh, "a stored CA of a mesh not held; ignored"),
        }
    }
    for mesh in loaded.meshes.values() {
        problems.extend(mesh.mesh.check());
    }
    match problems.is_empty() {
        true => Ok(loaded),
        false => Err(Problems(problems)),
    }
}

/// Where the durable copy lives.
#[derive(Debug)]
pub enum Durable {
    /// A redb file on this machine.
    File(Database),
    /// A DynamoDB table shared by replicas.
    Dynamo(dynamo::Table),
}

impl Durable {
    /// Writes `puts` and removes `deletes` in one transaction. For a table, the
    /// transaction holds only if no other replica stored a change since this one last read
    /// or wrote ([`PersistError::Conflict`] otherwise).
    pub fn write(
        &mut self,
        puts: &[(String, Record)],
        deletes: &[String],
    ) -> Result<(), PersistError> {
        match self {
            Self::File(db) => db.write(puts, deletes),
            Self::Dynamo(table) => table.write(puts, deletes),
        }
    }

    /// How the store is doing.
    pub fn health(&self) -> &StorageHealth {
        match self {
            Self::File(db) => db.health(),
            Self::Dynamo(table) => table.health(),
        }
    }

    /// The stored state as it is now, when another writer may have changed it (a table);
    /// `None` for a file, which only this process writes.
    pub fn reload(&mut self) -> Option<Result<Loaded, PersistError>> {
        match self {
            Self::File(_) => None,
            Self::Dynamo(table) => Some(table.reload()),
        }
    }
}

/// Writes `puts` and removes `deletes` in one durable transaction.
fn write_to(
    db: &redb::Database,
    puts: &[(String, Record)],
    deletes: &[String],
) -> Result<(), PersistError> {
    let encoded: Vec<(&str, Vec<u8>)> = puts
        .iter()
        .map(|(k, r)| Ok((k.as_str(), serde_json::to_vec(r)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let tx = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut table = tx.open_table(RESOURCES).map_err(redb::Error::from)?;
        for (k, v) in &encoded {
            table.insert(*k, v.as_slice()).map_err(redb::Error::from)?;
        }
        for k in deletes {
            table.remove(k.as_str()).map_err(redb::Error::from)?;
        }
    }
    tx.commit().map_err(redb::Error::from)?;
    Ok(())
}

fn read_all(db: &redb::Database) -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
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
