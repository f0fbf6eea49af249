//! What the data plane reports back: the traffic each target virtual node received, as
//! its callers' Envoys count it. Whatever runs the Envoys reads it; the control plane shows it.

use serde::Serialize;

/// What the Envoys saw of the requests to one target virtual node, summed over their
/// egress clusters for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetTraffic {
    /// Requests completed (`upstream_rq_completed`).
    pub completed: u64,
    /// Of those, answered 5xx (`upstream_rq_5xx`).
    pub errors_5xx: u64,
    /// Latency percentiles (`upstream_rq_time`) over Envoy's last stats interval, in ms;
    /// `None` when nothing completed in it. With several Envoys, the largest.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}
