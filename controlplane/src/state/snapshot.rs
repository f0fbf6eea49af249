//! One consistent state of every mesh as served to Envoy ([`Snapshot`]): what the store
//! publishes, what the durable copies load into, and what the translation reads. There is
//! no first mesh: a snapshot is a map from mesh name to that mesh's state ([`MeshState`]),
//! and every surface names the mesh it works on ([`Snapshot::pick`] when one may be left
//! out).

use std::collections::BTreeMap;
use std::sync::Arc;

use meshmodel::{Key, Mesh};

use super::meta::Meta;
use super::placement::{Instance, Placement};
use super::rollout::Rollout;

/// One consistent state of every mesh, as served to Envoy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every accepted change.
    pub version: u64,
    /// Every mesh held, by name.
    pub meshes: BTreeMap<String, Arc<MeshState>>,
}

/// One mesh: its resources, their metadata, and where its nodes run.
#[derive(Debug, Clone, Default)]
pub struct MeshState {
    pub mesh: Mesh,
    /// Metadata of every resource in `mesh`.
    pub meta: BTreeMap<Key, Meta>,
    /// Where each virtual node's Envoy and app run, for the nodes whose tasks run here
    /// (`up`); a node not here is placed as App Mesh places it.
    pub placements: BTreeMap<String, Placement>,
    /// The instances of each virtual node Cloud Map discovers, as last looked up
    /// (by `cloudmap`); a node not here has not been looked up.
    pub discovered: BTreeMap<String, Vec<Instance>>,
    /// Whether this mesh's records are stored under the resources' own keys, as stores
    /// written before meshes were named in record keys hold their (one) mesh; every other
    /// mesh's records are keyed `@MESH/KEY`.
    pub bare_keys: bool,
    /// The rollouts of the mesh's routes by `ROUTER/ROUTE`, stored with its resources; a
    /// finished one stays until the next rollout of its route replaces it.
    pub rollouts: BTreeMap<String, Rollout>,
    /// The CA of the mesh's own mutual TLS, its key sealed (encrypted with a key the
    /// store never holds), stored with its resources so that every replica and restart
    /// issues from it; `None` until one is made.
    pub mesh_ca: Option<SealedCa>,
    /// Who calls each node (the nodes and gateways whose backends reach it), worked out
    /// from `mesh` on first use and kept with it: a change of `mesh` makes a new
    /// `MeshState` (as the store does), never an edit of this one's.
    pub callers: std::sync::OnceLock<Callers>,
}

/// The callers of each node, by node name: node names, and gateways as
/// `virtualGateway/NAME`.
pub type Callers = BTreeMap<String, std::collections::BTreeSet<String>>;

/// A CA as stored: its certificate (PEM) and its key sealed (AES-256-GCM, hex of nonce and
/// ciphertext); what seals it is the secrets' business.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedCa {
    pub certificate: String,
    pub sealed_key: String,
}

impl MeshState {
    /// A mesh as loaded or made, with nothing placed or discovered yet.
    pub fn new(mesh: Mesh, meta: BTreeMap<Key, Meta>) -> Self {
        Self {
            mesh,
            meta,
            ..Self::default()
        }
    }
}

/// The key an Envoy of `node` (a virtual node's name or `virtualGateway/NAME`) of mesh
/// `mesh` is known by, to the cache, the statuses and the console: `MESH/NODE`.
pub fn node_key(mesh: &str, node: &str) -> String {
    format!("{mesh}/{node}")
}

/// The mesh and node of a [`node_key`] (a mesh name holds no `/`).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

/// Why [`Snapshot::pick`] could not choose a mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("no mesh `{asked}` here ({})", list_held(.held))]
    Unknown { asked: String, held: Vec<String> },
    #[error("there are {} meshes here ({}); name one with `mesh`", .held.len(), list_held(.held))]
    Several { held: Vec<String> },
    #[error("there is no mesh here yet")]
    None,
}

fn list_held(names: &[String]) -> String {
    match names.is_empty() {
        true => "there is none".to_owned(),
        false => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("there is {}", quoted.join(", "))
        }
    }
}

impl Snapshot {
    /// The mesh named `name`.
    pub fn mesh(&self, name: &str) -> Option<&Arc<MeshState>> {
        self.meshes.get(name)
    }

    /// The names of every mesh held, sorted.
    pub fn names(&self) -> Vec<String> {
        self.meshes.keys().cloned().collect()
    }

    /// The mesh `asked` names, or the only one held when `asked` is `None`; refuses to
    /// guess when there are several, and names those there are when `asked` is unknown.
    pub fn pick(&self, asked: Option<&str>) -> Result<(&str, &Arc<MeshState>), PickError> {
        match asked {
            Some(name) => self
                .meshes
                .get_key_value(name)
                .map(|(n, m)| (n.as_str(), m))
                .ok_or_else(|| PickError::Unknown {
                    asked: name.to_owned(),
                    held: self.names(),
                }),
            None => {
                let mut all = self.meshes.iter();
                match (all.next(), all.next()) {
                    (Some((n, m)), None) => Ok((n.as_str(), m)),
                    (None, _) => Err(PickError::None),
                    (Some(_), Some(_)) => Err(PickError::Several { held: self.names() }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(names: &[&str]) -> Snapshot {
        Snapshot {
            version: 1,
            meshes: names
                .iter()
                .map(|n| ((*n).to_owned(), Arc::new(MeshState::default())))
                .collect(),
        }
    }

    #[test]
    fn pick_takes_the_only_mesh_and_refuses_to_guess_among_several() {
        assert_eq!(snapshot(&["a"]).pick(None).expect("only").0, "a");
        assert_eq!(snapshot(&[]).pick(None).expect_err("none"), PickError::None);
        let two = snapshot(&["a", "b"]);
        let several = two.pick(None).expect_err("several").to_string();
        assert!(
            several.contains("2 meshes") && several.contains("`a`, `b`"),
            "{several}"
        );
        assert_eq!(two.pick(Some("b")).expect("named").0, "b");
        let unknown = two.pick(Some("c")).expect_err("unknown").to_string();
        assert_eq!(unknown, "no mesh `c` here (there is `a`, `b`)");
    }
}
