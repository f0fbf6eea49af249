//! The rule of `route set`: new weights for one route's targets, every target named,
//! nothing else changed. The store checks the resulting mesh as a whole, as for any change.

use std::collections::BTreeMap;

use meshmodel::appmesh::{HeaderMatchMethod, HttpRouteHeader, RouteInput, WeightedTarget};
use meshmodel::mesh::Sourced;
use meshmodel::{Mesh, Problem, Problems, Resource};

/// The route `route` of `mesh` (in `router`, or in the only router that has a route of
/// that name), or why there is none to choose.
pub fn find_route<'m>(
    mesh: &'m Mesh,
    router: Option<&str>,
    route: &str,
) -> Result<&'m Sourced<RouteInput>, Problems> {
    let origin = "<route set>";
    let found: Vec<_> = mesh
        .routes
        .values()
        .filter(|s| {
            s.value.route_name == route && router.is_none_or(|r| r == s.value.virtual_router_name)
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let known: Vec<String> = mesh
                .routes
                .keys()
                .map(|(r, n)| format!("{r}/{n}"))
                .collect();
            Err(Problems::one(Problem::new(
                origin,
                "route",
                format!(
                    "no route `{route}`{} (known: {})",
                    router
                        .map(|r| format!(" in router `{r}`"))
                        .unwrap_or_default(),
                    known.join(", ")
                ),
            )))
        }
        _ => Err(Problems::one(Problem::new(
            origin,
            "route",
            format!("more than one router has a route `{route}`; name the router with --router"),
        ))),
    }
}

/// The mesh with route `route`'s weighted targets replaced by `targets` (as a rollout
/// sets them: a target may go, as when one is promoted to be the only one).
pub fn set_targets(
    mesh: &Mesh,
    router: &str,
    route: &str,
    targets: Vec<WeightedTarget>,
) -> Result<Mesh, Problems> {
    let entry = find_route(mesh, Some(router), route)?;
    let mut next = (*entry.value).clone();
    let Some(held) = next.spec.weighted_targets_mut() else {
        return Err(Problems::one(Problem::new(
            &entry.origin,
            "spec",
            "the route has no weighted targets",
        )));
    };
    *held = targets;
    mesh.apply(&entry.origin, Resource::Route(next))
}

/// The mesh with route `route`'s weights set (in `router`, or in the only router that has
/// a route of that name). Every target must be named; nodes not yet targets are refused.
pub fn set_weights(
    mesh: &Mesh,
    router: Option<&str>,
    route: &str,
    weights: &BTreeMap<String, i64>,
) -> Result<Mesh, Problems> {
    let origin = "<route set>";
    let entry = find_route(mesh, router, route)?;
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

/// Route `name`: what route `route` of `router` matches, when the request also carries
/// header `header` equal to `value`, all to `target`, and ahead of `route` (one priority
/// before it; 1000 when it has none, as the routes without one come last). The A/B stage
/// of a rollout. Refused, naming `--header`, for a route that is not HTTP or that nothing
/// can come before (priority 0).
pub fn header_route(
    mesh: &Mesh,
    (router, route): (&str, &str),
    (name, header, value): (&str, &str, &str),
    target: &str,
) -> Result<(String, RouteInput), Problems> {
    let entry = find_route(mesh, Some(router), route)?;
    let refused = |why: String| Problems::one(Problem::new("<rollout>", "--header", why));
    let mut next = (*entry.value).clone();
    next.route_name = name.to_owned();
    next.spec.priority = match entry.value.spec.priority {
        Some(0) => {
            return Err(refused(format!(
                "route {route} has priority 0: no route can come before it for an A/B stage"
            )));
        }
        Some(p) => Some(p - 1),
        None => Some(1000),
    };
    let http = match (&mut next.spec.http_route, &mut next.spec.http2_route) {
        (Some(http), _) | (None, Some(http)) => http,
        (None, None) => {
            return Err(refused(format!(
                "route {route} is not an HTTP route; an A/B stage matches an HTTP header"
            )));
        }
    };
    http.route_match.headers.push(HttpRouteHeader {
        name: header.to_owned(),
        invert: None,
        header_match: Some(HeaderMatchMethod {
            exact: Some(value.to_owned()),
            prefix: None,
            suffix: None,
            regex: None,
            range: None,
        }),
    });
    let port = http
        .action
        .weighted_targets
        .iter()
        .find(|t| t.virtual_node == target)
        .and_then(|t| t.port);
    http.action.weighted_targets = vec![WeightedTarget {
        virtual_node: target.to_owned(),
        weight: 100,
        port,
    }];
    Ok((entry.origin.clone(), next))
}
