//! What the APIs show of the tasks, told by whatever runs them (the runtime of `up`, or
//! nothing for `serve`): the one seam between the APIs and the runtime.

use std::collections::BTreeMap;

use crate::metrics::{Edge, Figures};
use controlplane::TargetTraffic;
use futures::future::BoxFuture;
use serde_json::Value;

/// What the control API shows of the tasks, told by whatever runs them.
pub trait Tasks: Send + Sync + std::fmt::Debug {
    /// The tasks' part of the status.
    fn status(&self) -> BoxFuture<'_, TaskStatus>;

    /// Every supervised process or container (`name` is `NODE/CONTAINER`, `mesh` its
    /// task's mesh), without asking any Envoy.
    fn processes(&self) -> Value;

    /// The traffic to each target virtual node (keyed `MESH/NODE`) of every mesh whose
    /// tasks run here, from one stats read per Envoy.
    fn traffic(&self) -> BoxFuture<'_, BTreeMap<String, TargetTraffic>>;

    /// What each caller's Envoy running here sent to each target, from its own stats
    /// (for `/metrics`).
    fn metrics(&self) -> BoxFuture<'_, BTreeMap<Edge, Figures>>;
}

/// The tasks' part of `GET /v1/status`.
#[derive(Debug, Clone, Default)]
pub struct TaskStatus {
    /// Every supervised process or container.
    pub processes: Value,
    /// Where each virtual node's Envoy and app are (keyed `MESH/NODE`).
    pub placements: Value,
    /// Requests completed per target virtual node (keyed `MESH/NODE`), summed over every
    /// Envoy.
    pub observed: BTreeMap<String, u64>,
}

/// What every caller's Envoy sent each target, as `/metrics` shows it: from the Envoys
/// `tasks` runs, plus what DogStatsD told `statsd`; also the receiver's own families.
pub async fn all_edges(
    tasks: &dyn Tasks,
    statsd: Option<&crate::metrics::statsd::Statsd>,
) -> (BTreeMap<Edge, Figures>, Vec<crate::metrics::Family>) {
    let mut edges = tasks.metrics().await;
    let mut own = Vec::new();
    if let Some(statsd) = statsd {
        let (received, counters) = statsd.snapshot();
        for (edge, figures) in received {
            edges.entry(edge).or_default().add(&figures);
        }
        own = counters;
    }
    (edges, own)
}
