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

/// What separates an egress cluster's name from the route it serves, when it serves one
/// route only (`~` is not a character App Mesh names may hold).
pub const ROUTE_MARK: char = '~';

/// The key of what route `route` of router `router` in mesh `mesh` sent node `node`, when
/// the node is the target of several routes of the router (each then has its own egress
/// cluster): `MESH/NODE~ROUTER~ROUTE`. Traffic keyed `MESH/NODE` sums every route's.
pub fn route_target_key(mesh: &str, router: &str, route: &str, node: &str) -> String {
    let mark = ROUTE_MARK;
    format!("{mesh}/{node}{mark}{router}{mark}{route}")
}

/// What route `route` of router `router` sent node `node` of `mesh`, from counts keyed as
/// [`route_target_key`] or, when the node is no other route's target, `MESH/NODE`.
pub fn on_route<'a, T>(
    by_key: &'a std::collections::BTreeMap<String, T>,
    mesh: &str,
    (router, route): (&str, &str),
    node: &str,
) -> Option<&'a T> {
    by_key
        .get(&route_target_key(mesh, router, route, node))
        .or_else(|| by_key.get(&format!("{mesh}/{node}")))
}
