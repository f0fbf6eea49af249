//! One consistent state of the mesh as served to Envoy ([`Snapshot`]): what the store
//! publishes, what the durable copies load into, and what the translation reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshmodel::{Key, Mesh};

use super::meta::Meta;
use super::placement::{Instance, Placement};

/// One consistent state of the mesh, as served to Envoy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every accepted change.
    pub version: u64,
    pub mesh: Mesh,
    pub placements: BTreeMap<String, Placement>,
    /// The instances of each virtual node Cloud Map discovers, as last looked up
    /// (by `cloudmap`); a node not here has not been looked up.
    pub discovered: BTreeMap<String, Vec<Instance>>,
    /// Metadata of every resource in `mesh`.
    pub meta: BTreeMap<Key, Meta>,
    /// The meshes after the first, by name: made and changed through the App Mesh API,
    /// and served to the Envoys whose node ids name them. The local runtime, the control
    /// API and the console work on the first (`mesh`).
    pub others: BTreeMap<String, Arc<OtherMesh>>,
}

/// Other meshes as loaded, as a snapshot holds them.
pub(crate) fn shared(others: BTreeMap<String, OtherMesh>) -> BTreeMap<String, Arc<OtherMesh>> {
    others.into_iter().map(|(n, o)| (n, Arc::new(o))).collect()
}

/// A mesh other than the first, and the metadata of its resources.
#[derive(Debug, Clone, Default)]
pub struct OtherMesh {
    pub mesh: Mesh,
    pub meta: BTreeMap<Key, Meta>,
}

impl Snapshot {
    /// The mesh named `name` (the first or another) and its resources' metadata, with which
    /// it is: `None` for the first, else its name.
    pub fn mesh_named(&self, name: &str) -> Option<(&Mesh, &BTreeMap<Key, Meta>, Option<&str>)> {
        if self.mesh.name() == Some(name) {
            return Some((&self.mesh, &self.meta, None));
        }
        self.others
            .get_key_value(name)
            .map(|(n, o)| (&o.mesh, &o.meta, Some(n.as_str())))
    }

    /// Every mesh there is, the first (when it exists) and then the others by name.
    pub fn meshes(&self) -> impl Iterator<Item = (&Mesh, &BTreeMap<Key, Meta>, Option<&str>)> {
        let first = self
            .mesh
            .name()
            .is_some()
            .then_some((&self.mesh, &self.meta, None));
        first.into_iter().chain(
            self.others
                .iter()
                .map(|(n, o)| (&o.mesh, &o.meta, Some(n.as_str()))),
        )
    }

    /// This snapshot as the translation sees it for the Envoys of mesh `name`: the
    /// snapshot itself for the first mesh, or one holding the other mesh in its place (with
    /// nothing placed or discovered, as no task of another mesh runs here, and without the
    /// metadata, which the translation does not read).
    pub fn view(&self, name: &str) -> Option<std::borrow::Cow<'_, Snapshot>> {
        if self.mesh.name() == Some(name) {
            return Some(std::borrow::Cow::Borrowed(self));
        }
        let other = self.others.get(name)?;
        Some(std::borrow::Cow::Owned(Snapshot {
            version: self.version,
            mesh: other.mesh.clone(),
            ..Snapshot::default()
        }))
    }
}
