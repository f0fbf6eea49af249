//! The rule of `route set`: new weights for one route's targets, every target named,
//! nothing else changed. The store checks the resulting mesh as a whole, as for any change.

use std::collections::BTreeMap;

use meshmodel::appmesh::WeightedTarget;
use meshmodel::{Mesh, Problem, Problems, Resource};

/// The mesh with route `route`'s weights set (in `router`, or in the only router that has
/// a route of that name). Every target must be named; nodes not yet targets are refused.
pub fn set_weights(
    mesh: &Mesh,
    router: Option<&str>,
    route: &str,
    weights: &BTreeMap<String, i64>,
) -> Result<Mesh, Problems> {
    let origin = "<route set>";
    let found: Vec<_> = mesh
        .routes
        .values()
        .filter(|s| {
            s.value.route_name == route && router.is_none_or(|r| r == s.value.virtual_router_name)
        })
        .collect();
    let entry = match found.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<String> = mesh
                .routes
                .keys()
                .map(|(r, n)| format!("{r}/{n}"))
                .collect();
            return Err(Problems::one(Problem::new(
                origin,
                "route",
                format!(
                    "no route `{route}`{} (known: {})",
                    router
                        .map(|r| format!(" in router `{r}`"))
                        .unwrap_or_default(),
                    known.join(", ")
                ),
            )));
        }
        _ => {
            return Err(Problems::one(Problem::new(
                origin,
                "route",
                format!(
                    "more than one router has a route `{route}`; name the router with --router"
                ),
            )));
        }
    };
    let mut next = (*entry.value).clone();
    let Some(targets) = next.spec.weighted_targets_mut() else {
        return Err(Problems::one(Problem::new(
            &entry.origin,
            "spec",
            "the route has no weighted targets",
        )));
    };
    let current: Vec<String> = targets.iter().map(|t| t.virtual_node.clone()).collect();
    for node in weights.keys() {
        if !current.contains(node) {
            return Err(Problems::one(Problem::new(
                origin,
                node.as_str(),
                format!(
                    "`{node}` is not a target of route {route} (targets: {})",
                    current.join(", ")
                ),
            )));
        }
    }
    let missing: Vec<&String> = current
        .iter()
        .filter(|n| !weights.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(Problems::one(Problem::new(
            origin,
            "weights",
            format!(
                "give a weight for every target; missing: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )));
    }
    *targets = targets
        .iter()
        .map(|t| WeightedTarget {
            weight: weights[&t.virtual_node],
            ..t.clone()
        })
        .collect();
    mesh.apply(&entry.origin, Resource::Route(next))
}
