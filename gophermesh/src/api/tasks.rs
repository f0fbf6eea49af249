//! What the APIs show of the tasks, told by whatever runs them (the runtime of `up`, or
//! nothing for `serve`): the one seam between the APIs and the runtime.

use std::collections::BTreeMap;

use controlplane::{Snapshot, TargetTraffic};
use futures::future::BoxFuture;
use serde_json::Value;

/// What the control API shows of the tasks, told by whatever runs them.
pub trait Tasks: Send + Sync + std::fmt::Debug {
    /// The tasks' part of the status, for the mesh as `snapshot` has it.
    fn status<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, TaskStatus>;

    /// Every supervised process or container (`name` is `NODE/CONTAINER`), without
    /// asking any Envoy.
    fn processes(&self) -> Value;

    /// The traffic to each target virtual node of `mesh`, from one stats read per Envoy.
    fn traffic<'a>(&'a self, mesh: &'a str) -> BoxFuture<'a, BTreeMap<String, TargetTraffic>>;
}

/// The tasks' part of `GET /v1/status`.
#[derive(Debug, Clone, Default)]
pub struct TaskStatus {
    /// Every supervised process or container.
    pub processes: Value,
    /// Where each virtual node's Envoy and app are.
    pub placements: Value,
    /// Requests completed per target virtual node, summed over every Envoy.
    pub observed: BTreeMap<String, u64>,
}
