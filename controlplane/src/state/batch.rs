//! Several resources, of one mesh or of several, applied as one change: they land whole or
//! not at all (a template or a set of manifests, as `apply -f` sends them). A dry run says
//! what the change would do without making it.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshmodel::{Mesh, Problem, Problems, Resource};

use super::snapshot::Snapshot;
use super::store::{Next, Store, UpdateError};

/// What a batch does to each of its resources (each with its origin).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sorted {
    pub created: Vec<(String, Resource)>,
    pub updated: Vec<(String, Resource)>,
    pub unchanged: Vec<(String, Resource)>,
}

/// The change `resources` make to `snapshot`: each mesh they touch with all of its
/// resources in, checked as a whole. A mesh that does not exist yet must be among them.
pub fn next_of(
    snapshot: &Snapshot,
    resources: &[(String, Resource)],
) -> Result<(Next, Sorted), Problems> {
    let mut by_mesh: BTreeMap<&str, Vec<(String, Resource)>> = BTreeMap::new();
    for (origin, resource) in resources {
        by_mesh
            .entry(resource.mesh_name())
            .or_default()
            .push((origin.clone(), resource.clone()));
    }
    let mut meshes = Vec::new();
    let mut sorted = Sorted::default();
    let mut problems = Vec::new();
    for (name, group) in by_mesh {
        let base = match snapshot.mesh(name) {
            Some(state) => state.mesh.clone(),
            None if group.iter().any(|(_, r)| matches!(r, Resource::Mesh(_))) => Mesh {
                backends_may_dangle: true,
                ..Mesh::default()
            },
            None => {
                let (origin, first) = &group[0];
                problems.push(Problem::new(
                    origin,
                    "meshName",
                    format!(
                        "{} names mesh {name:?}, which does not exist here and is not among what is applied",
                        first.describe()
                    ),
                ));
                continue;
            }
        };
        for (origin, resource) in &group {
            let entry = (origin.clone(), resource.clone());
            match base.get(&resource.key()) {
                None => sorted.created.push(entry),
                Some((_, before)) if before == *resource => sorted.unchanged.push(entry),
                Some(_) => sorted.updated.push(entry),
            }
        }
        match base.apply_all(&group) {
            Ok(mesh) => meshes.push((name.to_owned(), mesh)),
            Err(Problems(mut p)) => problems.append(&mut p),
        }
    }
    match problems.is_empty() {
        true => Ok((
            Next {
                meshes,
                client_token: None,
                bump: None,
                rollouts: Vec::new(),
                mesh_ca: None,
            },
            sorted,
        )),
        false => Err(Problems(problems)),
    }
}

impl Store {
    /// Applies `resources` as one change ([`next_of`]): the snapshot it made, and what it
    /// did to each resource.
    pub fn apply_all(
        &self,
        resources: &[(String, Resource)],
    ) -> Result<(Arc<Snapshot>, Sorted), UpdateError<Problems>> {
        let mut sorted = Sorted::default();
        let snapshot = self.update_with(|s| {
            let (next, made) = next_of(s, resources)?;
            sorted = made;
            Ok(next)
        })?;
        Ok((snapshot, sorted))
    }

    /// What [`Store::apply_all`] would do now, without doing it.
    pub fn preview_all(&self, resources: &[(String, Resource)]) -> Result<Sorted, Problems> {
        next_of(&self.current(), resources).map(|(_, sorted)| sorted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(json: serde_json::Value) -> (String, Resource) {
        let origin = "t.yaml: X".to_owned();
        let r = Resource::from_value(&origin, json).expect("a resource");
        (origin, r)
    }

    #[test]
    fn a_batch_lands_whole_or_not_at_all() {
        let store = Store::in_memory(std::iter::empty(), crate::Identity::default());
        let mesh = resource(serde_json::json!({"meshName": "m", "spec": {}}));
        let node = resource(serde_json::json!({"meshName": "m", "virtualNodeName": "n",
            "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "n.local"}}}}));
        let dangling = resource(
            serde_json::json!({"meshName": "m", "virtualServiceName": "s",
            "spec": {"provider": {"virtualNode": {"virtualNodeName": "missing"}}}}),
        );
        let refused = store
            .apply_all(&[mesh.clone(), node.clone(), dangling])
            .expect_err("a service of no node");
        let UpdateError::Refused(problems) = refused else {
            panic!("{refused:?}")
        };
        assert!(problems.to_string().contains("missing"), "{problems}");
        assert!(store.current().meshes.is_empty(), "nothing landed");

        let preview = store
            .preview_all(&[mesh.clone(), node.clone()])
            .expect("fine");
        assert_eq!((preview.created.len(), preview.updated.len()), (2, 0));
        assert!(
            store.current().meshes.is_empty(),
            "a dry run changes nothing"
        );

        let (snapshot, sorted) = store
            .apply_all(&[node.clone(), mesh.clone()])
            .expect("made");
        assert_eq!(sorted.created.len(), 2);
        assert!(snapshot.mesh("m").is_some());
        let (_, again) = store.apply_all(&[mesh, node]).expect("made");
        assert_eq!((again.created.len(), again.unchanged.len()), (0, 2));
    }
}
