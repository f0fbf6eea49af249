//! The rollouts' side of the metrics: what a rollout's checks read (the counts of the
//! requests its route sent its target) and what `/metrics` shows of each rollout.

use std::collections::BTreeMap;

use controlplane::Snapshot;
use controlplane::state::rollout::{Counts, Phase, Rollout};

use super::{Edge, Family, Figures, Kind, escape};

/// What the callers' Envoys of mesh `mesh` counted of the attempts `rollout`'s checked
/// route (its A/B stage's while that runs) sent
/// its target (answers, and failed attempts its retries made again): from the route's own egress clusters when the target has them (it is the
/// target of several routes of the router), else from its one egress cluster. All zero
/// when no Envoy reported any.
pub fn route_counts(edges: &BTreeMap<Edge, Figures>, mesh: &str, rollout: &Rollout) -> Counts {
    let own = format!(
        "{}{}{}",
        rollout.router,
        controlplane::ROUTE_MARK,
        rollout.checked_route()
    );
    let to_target = |e: &&Edge| e.mesh == mesh && e.target == rollout.target;
    let by_route = edges
        .iter()
        .filter(|(e, _)| to_target(e) && e.route.as_deref() == Some(own.as_str()));
    let by_node = edges
        .iter()
        .filter(|(e, _)| to_target(e) && e.route.is_none());
    let mut summed = Figures::default();
    match by_route.clone().next() {
        Some(_) => by_route.for_each(|(_, f)| summed.add(f)),
        None => by_node.for_each(|(_, f)| summed.add(f)),
    }
    // Each attempt counts: a retry follows an attempt that failed, so a route's retries
    // do not hide a failing target from its rollout's checks.
    Counts {
        responses: (summed.by_class.iter().sum::<f64>() + summed.retries) as u64,
        errors_5xx: (summed.by_class[3] + summed.retries) as u64,
        buckets: summed.buckets.iter().map(|c| *c as u64).collect(),
    }
}

/// Each rollout's weight, phase, failed checks and checked requests, for `/metrics`.
pub fn rollout_families(snapshot: &Snapshot) -> Vec<Family> {
    let mut weight = Family::new(
        "gophermesh_rollout_weight",
        "The weight (percent) a rollout gives its target now.",
        Kind::Gauge,
    );
    let mut phase = Family::new(
        "gophermesh_rollout_phase",
        "1 for the phase a rollout is in.",
        Kind::Gauge,
    );
    let mut failed = Family::new(
        "gophermesh_rollout_failed_checks",
        "Checks a rollout failed so far.",
        Kind::Gauge,
    );
    let mut requests = Family::new(
        "gophermesh_rollout_checked_requests",
        "Requests to a rollout's target counted by its checks, by result.",
        Kind::Gauge,
    );
    for (mesh, state) in &snapshot.meshes {
        for r in state.rollouts.values() {
            let labels = format!(
                "Mesh=\"{}\",VirtualRouter=\"{}\",Route=\"{}\",TargetVirtualNode=\"{}\"",
                escape(mesh),
                escape(&r.router),
                escape(&r.route),
                escape(&r.target)
            );
            weight.samples.push(("", labels.clone(), r.weight() as f64));
            let name = match r.phase {
                Phase::Progressing => "progressing",
                Phase::Paused { .. } => "paused",
                Phase::Succeeded => "succeeded",
                Phase::RolledBack { .. } => "rolledBack",
                Phase::Aborted => "aborted",
            };
            phase
                .samples
                .push(("", format!("{labels},phase=\"{name}\""), 1.0));
            failed
                .samples
                .push(("", labels.clone(), f64::from(r.failed_checks)));
            let ok = r.requests.saturating_sub(r.failed_requests);
            requests
                .samples
                .push(("", format!("{labels},result=\"ok\""), ok as f64));
            requests.samples.push((
                "",
                format!("{labels},result=\"5xx\""),
                r.failed_requests as f64,
            ));
        }
    }
    vec![weight, phase, failed, requests]
}

#[cfg(test)]
mod tests {
    use super::*;
    use controlplane::state::rollout::Plan;
    use meshmodel::appmesh::WeightedTarget;

    fn edge(target: &str, route: Option<&str>) -> Edge {
        Edge {
            mesh: "m".into(),
            kind: "VirtualNode",
            node: "requester".into(),
            target: target.into(),
            route: route.map(str::to_owned),
        }
    }

    /// The route's own cluster when the target has one, retries as failed attempts.
    #[test]
    fn a_rollout_reads_its_routes_attempts_retries_included() {
        let rollout = Rollout::start(
            ("r", "main"),
            "v2",
            (Plan::default(), None),
            &[
                WeightedTarget {
                    virtual_node: "v1".into(),
                    weight: 90,
                    port: None,
                },
                WeightedTarget {
                    virtual_node: "v2".into(),
                    weight: 10,
                    port: None,
                },
            ],
            0,
        )
        .expect("starts");
        let figures = |ok: f64, failed: f64, retries: f64| Figures {
            by_class: [ok, 0.0, 0.0, failed],
            retries,
            ..Figures::default()
        };
        let mut edges = BTreeMap::from([
            (edge("v2", None), figures(1000.0, 0.0, 0.0)),
            (edge("v1", None), figures(500.0, 0.0, 0.0)),
        ]);
        assert_eq!(route_counts(&edges, "m", &rollout).responses, 1000);
        edges.insert(edge("v2", Some("r~main")), figures(95.0, 1.0, 4.0));
        edges.insert(edge("v2", Some("r~canary")), figures(7.0, 0.0, 0.0));
        let counts = route_counts(&edges, "m", &rollout);
        assert_eq!((counts.responses, counts.errors_5xx), (100, 5));
    }
}
