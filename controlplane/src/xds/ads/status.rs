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
    pub open_streams: Vec<StreamInfo>,
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
            .is_some_and(|s| s.open_streams.iter().any(|o| &o.instance == instance))
    }

    pub(super) fn update(&self, node: &str, f: impl FnOnce(&mut EnvoyStatus)) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(node.to_owned()).or_default());
    }
}
