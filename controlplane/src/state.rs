//! The state of the meshes and its durable copies: what every other part reads.
//!
//! ```text
//! snapshot   one consistent state: every mesh by name, each with its placements; node keys
//! store      the one writer of snapshots: checked changes, a watch channel
//! batch      several resources applied as one change (or previewed)
//! meta       App Mesh metadata of each resource (ARN, uid, version, times, token)
//! persist    the durable copy: redb on one machine, DynamoDB (persist/dynamo) for replicas
//! aws        what the AWS SDK clients share (configuration, errors in one line)
//! weights    the rule of `route set`
//! placement  where each node's Envoy and app are, and Cloud Map instances
//! cloudmap   the instances of Cloud Map nodes, looked up (for `serve`)
//! observed   the traffic each target node received (told by whoever reads the Envoys)
//! rollout    a route moved to one target step by step, checked, rolled back (the rule)
//! rollouts   a rollout's start, a person's pause/resume/abort, a driver's look: changes
//! ```
//!
//! Nothing here imports the translation or the xDS serving.

pub(crate) mod aws;
pub mod batch;
pub mod cloudmap;
pub mod meta;
pub mod observed;
pub mod persist;
pub mod placement;
pub mod rollout;
pub mod rollouts;
pub mod snapshot;
pub mod store;
pub mod weights;

/// `mutex` locked, whether or not a holder panicked (what it guards stays consistent).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
