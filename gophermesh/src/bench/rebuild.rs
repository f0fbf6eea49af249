//! A route change in a mesh whose every node has an Envoy connected: how many nodes the
//! control plane builds again, and the time it takes to bring them all to the new
//! version, when it knows what each node reads (what serves) and when it builds the
//! whole mesh again (as before). Both in one run, one after the other, in this process:
//! the same mesh, the same changes.
//!
//! The mesh: `nodes` services `svc-I`, each its own node, router, route and virtual
//! service, the route sending to `svc-I` and (weight 0 to start) `svc-I+1`; node `svc-I`
//! has the next `backends` services as backends, so each service has `backends` callers.
//! A change sets the weights of one route; "brought to the new version" is what a stream
//! does with a node's resources: build them, encode every type (state of the world) and
//! make every listing (delta).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use controlplane::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use controlplane::xds::cache::Prepared;
use controlplane::xds::vhds::VHOST_TYPE;
use controlplane::{Cache, Identity, Store};
use serde::Serialize;
use serde_json::json;

const MESH: &str = "rebuild";

/// One way of keeping the nodes between versions, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Keeping {
    /// Nodes built again per change (mean).
    pub builds_per_change: f64,
    /// Time to bring every node to a change's version, ms: median and slowest.
    pub ms_per_change_p50: f64,
    pub ms_per_change_max: f64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildFigure {
    pub nodes: u32,
    pub backends_per_node: u32,
    pub changes: u32,
    /// What serves: only the nodes that read what changed are built again.
    pub what_read_it: Keeping,
    /// Every node of the changed mesh built again.
    pub every_node: Keeping,
}

/// The generated mesh (see the module's comment).
fn mesh(nodes: u32, backends: u32) -> anyhow::Result<meshmodel::Mesh> {
    let listener = json!([{"portMapping": {"port": 8080, "protocol": "http"}}]);
    let mut docs = vec![json!({"meshName": MESH})];
    for i in 0..nodes {
        let name = format!("svc-{i}");
        let next = format!("svc-{}", (i + 1) % nodes);
        let backends: Vec<_> = (1..=backends)
            .map(|k| {
                let service = format!("svc-{}.local", (i + k) % nodes);
                json!({"virtualService": {"virtualServiceName": service}})
            })
            .collect();
        docs.push(json!({"meshName": MESH, "virtualNodeName": name, "spec": {
            "listeners": listener,
            "serviceDiscovery": {"dns": {"hostname": format!("127.78.{}.{}", i / 256 % 256, i % 256)}},
            "backends": backends}}));
        docs.push(json!({"meshName": MESH, "virtualRouterName": name,
            "spec": {"listeners": listener}}));
        docs.push(
            json!({"meshName": MESH, "virtualRouterName": name, "routeName": name, "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
                {"virtualNode": name, "weight": 100}, {"virtualNode": next, "weight": 0}]}}}}),
        );
        docs.push(
            json!({"meshName": MESH, "virtualServiceName": format!("{name}.local"),
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": name}}}}),
        );
    }
    let resources = docs
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let origin = format!("generated#{i}");
            meshmodel::Resource::from_value(&origin, doc).map(|r| (origin, r))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| anyhow::anyhow!("the generated mesh is refused: {p:?}"))?;
    meshmodel::Mesh::default()
        .apply_all(&resources)
        .map_err(|p| anyhow::anyhow!("the generated mesh is refused: {p:?}"))
}

/// What a stream does with a node's resources of a new version.
fn bring_up(resources: &Prepared) {
    for t in [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, ENDPOINT_TYPE] {
        let _ = resources.encoded(t);
    }
    for t in [
        CLUSTER_TYPE,
        LISTENER_TYPE,
        ROUTE_TYPE,
        ENDPOINT_TYPE,
        VHOST_TYPE,
    ] {
        let _ = resources.listing(t);
    }
}

/// Every node of `cache`'s current version, brought up; how many were new.
fn every_node(cache: &Cache, keys: &[String], held: &mut [Option<Arc<Prepared>>]) -> usize {
    let now = cache.current();
    let mut new = 0;
    for (key, slot) in keys.iter().zip(held.iter_mut()) {
        let found = cache.resources(&now, key);
        let same = match (&found, &*slot) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            new += 1;
            if let Some(r) = &found {
                bring_up(r);
            }
            *slot = found;
        }
    }
    new
}

fn keeping(cache: &Cache, store: &Store, nodes: u32, changes: u32) -> anyhow::Result<Keeping> {
    let keys: Vec<String> = (0..nodes).map(|i| format!("{MESH}/svc-{i}")).collect();
    let mut held = vec![None; keys.len()];
    every_node(cache, &keys, &mut held);
    let mut times = Vec::new();
    let mut builds = 0;
    for c in 0..changes {
        // Spread over the mesh; each change moves one route's weights.
        let i = (u64::from(c) * 7919 % u64::from(nodes.max(1))) as u32;
        let (name, next) = (format!("svc-{i}"), format!("svc-{}", (i + 1) % nodes));
        let w = 90 - i64::from(c % 2) * 40;
        let weights = [(name.clone(), w), (next, 100 - w)].into();
        store
            .set_weights(Some(MESH), Some(&name), &name, &weights)
            .map_err(|e| anyhow::anyhow!("the route change was refused: {e:?}"))?;
        let t0 = Instant::now();
        builds += every_node(cache, &keys, &mut held);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(Keeping {
        builds_per_change: builds as f64 / f64::from(changes.max(1)),
        ms_per_change_p50: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        ms_per_change_max: times.last().copied().unwrap_or(f64::NAN),
    })
}

/// How many services each of `nodes` calls when asked for `backends`: the next ones, no
/// more than there are others.
fn calls(nodes: u32, backends: u32) -> u32 {
    backends.min(nodes.saturating_sub(1))
}

/// Measures both ways on the same mesh and changes.
pub fn measure(nodes: u32, backends: u32, changes: u32) -> anyhow::Result<RebuildFigure> {
    let backends = calls(nodes, backends);
    let generated = mesh(nodes, backends).context("generating the mesh")?;
    let knowing = Store::in_memory([generated.clone()], Identity::default());
    let what_read_it = keeping(&Cache::new(knowing.clone()), &knowing, nodes, changes)?;
    let blind = Store::in_memory([generated], Identity::default());
    let every = Cache::with_builder(blind.clone(), Arc::new(controlplane::translate::for_node));
    let every_node = keeping(&every, &blind, nodes, changes)?;
    Ok(RebuildFigure {
        nodes,
        backends_per_node: backends,
        changes,
        what_read_it,
        every_node,
    })
}

/// The run `gophermesh bench` makes: 1,000 nodes of 10 backends each, 20 changes (200
/// nodes and 5 changes with `--quick`).
pub fn run(quick: bool) -> anyhow::Result<RebuildFigure> {
    let (nodes, backends, changes) = if quick { (200, 10, 5) } else { (1000, 10, 20) };
    measure_said(nodes, backends, changes)
}

/// [`measure`], saying what it measures and what it found.
pub fn measure_said(nodes: u32, backends: u32, changes: u32) -> anyhow::Result<RebuildFigure> {
    let calls = calls(nodes, backends);
    crate::progress::say(format!(
        "a route change in a mesh of {nodes} nodes, every one connected ({calls} backends each)"
    ));
    let figure = measure(nodes, backends, changes)?;
    crate::progress::say(format!("  {figure}"));
    Ok(figure)
}

impl RebuildFigure {
    /// The budget's name: the nodes built again per change may be the route's callers.
    pub fn budget_name(&self) -> String {
        format!(
            "route change, {} nodes connected: nodes built again (its callers: {})",
            self.nodes, self.backends_per_node
        )
    }
}

impl std::fmt::Display for RebuildFigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (&self.what_read_it, &self.every_node);
        write!(
            f,
            "route change, {} nodes connected ({} backends each): {:.0} nodes built again in p50 {:.1} ms (max {:.1}); building every node: {:.0} in p50 {:.1} ms (max {:.1})",
            self.nodes,
            self.backends_per_node,
            a.builds_per_change,
            a.ms_per_change_p50,
            a.ms_per_change_max,
            b.builds_per_change,
            b.ms_per_change_p50,
            b.ms_per_change_max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_change_builds_again_its_callers_only() {
        let figure = measure(40, 3, 6).expect("measured");
        // Each service has 3 callers; every node of the mesh otherwise.
        assert_eq!(figure.what_read_it.builds_per_change, 3.0);
        assert_eq!(figure.every_node.builds_per_change, 40.0);
    }
}
