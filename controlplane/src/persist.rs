//! The durable copy of the mesh: one redb database file, one record per resource (its
//! origin, its `--cli-input-json` document and its App Mesh metadata), written in one
//! fsynced transaction per accepted change.

use std::path::{Path, PathBuf};

use meshmodel::{Key, Mesh, Problem, Problems, Resource};
use serde::{Deserialize, Serialize};

use crate::meta::Meta;

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
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One stored resource.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub origin: String,
    pub resource: serde_json::Value,
    pub meta: Meta,
}

/// The state database.
#[derive(Debug)]
pub struct Database {
    db: redb::Database,
}

/// What a database held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    pub mesh: Mesh,
    pub meta: std::collections::BTreeMap<Key, Meta>,
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
        let mut loaded = Loaded {
            mesh: Mesh {
                backends_may_dangle: true,
                ..Mesh::default()
            },
            count: records.len(),
            ..Loaded::default()
        };
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
                    loaded.meta.insert(resource.key(), record.meta);
                    loaded.mesh.insert(record.origin, resource);
                }
                Err(Problems(mut more)) => problems.append(&mut more),
            }
        }
        problems.extend(loaded.mesh.check());
        if !problems.is_empty() {
            return Err(PersistError::Unloadable {
                path: path.to_path_buf(),
                problems: Problems(problems),
            });
        }
        Ok((Self { db }, loaded))
    }

    /// Writes `puts` and removes `deletes` in one durable transaction.
    pub fn write(&self, puts: &[(String, Record)], deletes: &[String]) -> Result<(), PersistError> {
        let encoded: Vec<(&str, Vec<u8>)> = puts
            .iter()
            .map(|(k, r)| Ok((k.as_str(), serde_json::to_vec(r)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        let tx = self.db.begin_write().map_err(redb::Error::from)?;
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
