//! What the control plane knows of each Envoy: its streams, what it ACKed, its last NACK
//! and how far it is in sync; kept by the ADS streams, read by status and the console.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::state::lock;

/// A configuration an Envoy refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub type_url: String,
    /// The snapshot version the Envoy refused.
    pub version: String,
    pub message: String,
    /// RFC 3339 time of the NACK.
    pub at: String,
}

/// One open ADS stream of a virtual node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Numbered from 1 in the order streams opened.
    pub id: u64,
    /// The address the stream came from, when known.
    pub peer: Option<String>,
    /// Which Envoy of the node it is, when the Envoy says (the ECS task ARN the App Mesh
    /// sidecar puts in its node metadata); several tasks of one virtual node share its id.
    pub instance: Option<String>,
    /// RFC 3339 time it opened.
    pub since: String,
}

/// What the control plane knows of one virtual node's Envoys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvoyStatus {
    /// Whether any stream of this node is open.
    pub connected: bool,
    /// Every open stream of this node.
    pub open_streams: OpenStreams,
    /// Last version ACKed, by short type name (`clusters`, `listeners`, `routes`, and
    /// `endpoints` for an Envoy with EDS clusters).
    pub acked: BTreeMap<String, String>,
    pub last_nack: Option<Nack>,
    /// Streams opened since start.
    pub streams: u64,
    /// On the current stream: milliseconds from Envoy's first request to its ACK of the
    /// last of clusters, listeners and routes (its whole first configuration).
    pub first_config_ms: Option<f64>,
    /// The last mesh version whose every change for this Envoy it has ACKed (types that
    /// did not change for it need no ACK). `None` until its first configuration is ACKed.
    pub synced_version: Option<u64>,
    /// Why this Envoy gets nothing, when it does not (its node id names no virtual node
    /// of the mesh served).
    pub problem: Option<String>,
}

/// Every Envoy's status, keyed by virtual node name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EnvoyStatuses(Arc<Mutex<BTreeMap<String, EnvoyStatus>>>);

impl EnvoyStatuses {
    pub fn snapshot(&self) -> BTreeMap<String, EnvoyStatus> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether every connected Envoy has ACKed every change up to `version` (read in
    /// place: this is polled while a change spreads, and a fleet's statuses are large).
    pub fn all_synced(&self, version: u64) -> bool {
        lock(&self.0)
            .values()
            .all(|e| !e.connected || e.synced_version.is_some_and(|v| v >= version))
    }

    /// Whether an open stream speaks for Envoy `instance` of `node` (read in place).
    pub(super) fn held(&self, node: &str, instance: &Option<String>) -> bool {
        lock(&self.0)
            .get(node)
            .is_some_and(|s| s.open_streams.holds(instance))
    }

    pub(super) fn update(&self, node: &str, f: impl FnOnce(&mut EnvoyStatus)) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(node.to_owned()).or_default());
    }
}

/// The open streams of one node, in a list (as status shows them) with an index by stream
/// and by instance, so that a stream opening or closing costs the same with ten thousand
/// tasks of the node as with one (a storm of them is one mutex, taken once per stream).
#[derive(Debug, Clone, Default)]
pub struct OpenStreams {
    list: Vec<StreamInfo>,
    /// Where each stream is in `list`, by id.
    places: std::collections::HashMap<u64, usize>,
    /// The streams of each instance.
    instances: std::collections::HashMap<Option<String>, Vec<u64>>,
}

impl OpenStreams {
    pub fn push(&mut self, info: StreamInfo) {
        self.places.insert(info.id, self.list.len());
        self.instances
            .entry(info.instance.clone())
            .or_default()
            .push(info.id);
        self.list.push(info);
    }

    /// Removes stream `id`, when open.
    pub fn remove(&mut self, id: u64) -> Option<StreamInfo> {
        let place = self.places.remove(&id)?;
        let gone = self.list.swap_remove(place);
        if let Some(moved) = self.list.get(place) {
            self.places.insert(moved.id, place);
        }
        if let Some(ids) = self.instances.get_mut(&gone.instance) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.instances.remove(&gone.instance);
            }
        }
        Some(gone)
    }

    /// Whether a stream speaks for `instance`.
    pub fn holds(&self, instance: &Option<String>) -> bool {
        self.instances.contains_key(instance)
    }

    /// Removes every stream of `instance`; those removed.
    pub fn take_instance(&mut self, instance: &Option<String>) -> Vec<StreamInfo> {
        let ids = self.instances.get(instance).cloned().unwrap_or_default();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }
}

impl std::ops::Deref for OpenStreams {
    type Target = [StreamInfo];

    fn deref(&self) -> &[StreamInfo] {
        &self.list
    }
}

impl PartialEq for OpenStreams {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Serialize for OpenStreams {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OpenStreams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<StreamInfo>::deserialize(deserializer)?;
        let mut out = Self::default();
        for info in list {
            out.push(info);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, instance: Option<&str>) -> StreamInfo {
        StreamInfo {
            id,
            peer: None,
            instance: instance.map(str::to_owned),
            since: String::new(),
        }
    }

    #[test]
    fn streams_come_and_go_by_id_and_instance() {
        let mut open = OpenStreams::default();
        for (id, instance) in [(1, Some("a")), (2, Some("b")), (3, None), (4, Some("a"))] {
            open.push(info(id, instance));
        }
        assert!(open.holds(&Some("a".into())) && open.holds(&None));
        let taken: Vec<u64> = open
            .take_instance(&Some("a".into()))
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(taken, [1, 4]);
        assert!(!open.holds(&Some("a".into())));
        assert_eq!(open.len(), 2);
        assert_eq!(open.remove(3).map(|i| i.id), Some(3));
        assert_eq!(open.remove(3), None, "gone already");
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [2]);
        assert!(!open.holds(&None));
        let again: OpenStreams =
            serde_json::from_str(&serde_json::to_string(&open).expect("json")).expect("back");
        assert_eq!(again, open);
        assert!(again.holds(&Some("b".into())));
    }
}
