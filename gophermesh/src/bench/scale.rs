//! Generated meshes for the control-plane scaling run.
//!
//! A mesh of `n` virtual nodes: the shipped `requester` node (the one task that runs, with
//! the shipped requester task definition) and `n - 1` services `svc-I`, each with its own
//! virtual router, a route to it, and a virtual service `svc-I.bench.local` that the
//! requester has as a backend. So the requester's Envoy receives the whole mesh: `n - 1`
//! virtual hosts, `n - 1` egress clusters and its own listeners.
//!
//! No task runs `svc-I`, so its egress cluster is the node's DNS service discovery, as App
//! Mesh programs it (LOGICAL_DNS), and Envoy resolves it before the cluster is warm. Its
//! hostname is therefore an address literal (`127.77.X.Y`, one per service), which
//! resolves at once: with names that no server knows, the figure would be the machine's
//! resolver timing out (8 to 12 s here for 100 to 1,000 nodes), not the control plane.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

const MESH: &str = "gophermesh";

fn write(path: &Path, doc: &Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Compact: the requester of a 10,000-node mesh has 9,999 backends, and input files
    // are read up to 1 MiB.
    std::fs::write(path, serde_json::to_vec(doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn listener() -> Value {
    json!([{"portMapping": {"port": 8080, "protocol": "http"}}])
}

/// Writes `dir/mesh` and `dir/taskdefs` for a mesh of `nodes` virtual nodes; the shipped
/// requester task definition is copied from `taskdefs`. Returns the number of resources.
pub fn generate(dir: &Path, nodes: u32, taskdefs: &Path) -> anyhow::Result<usize> {
    let mesh = dir.join("mesh");
    let services = nodes.saturating_sub(1);
    write(
        &mesh.join("mesh.json"),
        &json!({"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}),
    )?;
    let mut backends = Vec::new();
    for i in 0..services {
        let node = format!("svc-{i}");
        let router = format!("svc-{i}");
        let service = format!("svc-{i}.bench.local");
        let hostname = format!("127.77.{}.{}", (i / 256) % 256, i % 256);
        write(
            &mesh.join(format!("virtual-nodes/{node}.json")),
            &json!({"meshName": MESH, "virtualNodeName": node, "spec": {
                "listeners": listener(),
                "serviceDiscovery": {"dns": {"hostname": hostname}}
            }}),
        )?;
        write(
            &mesh.join(format!("virtual-routers/{router}.json")),
            &json!({"meshName": MESH, "virtualRouterName": router, "spec": {"listeners": listener()}}),
        )?;
        write(
            &mesh.join(format!("routes/{router}.json")),
            &json!({"meshName": MESH, "virtualRouterName": router, "routeName": router, "spec": {
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}
                }
            }}),
        )?;
        write(
            &mesh.join(format!("virtual-services/{service}.json")),
            &json!({"meshName": MESH, "virtualServiceName": service, "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": router}}
            }}),
        )?;
        backends.push(json!({"virtualService": {"virtualServiceName": service}}));
    }
    write(
        &mesh.join("virtual-nodes/requester.json"),
        &json!({"meshName": MESH, "virtualNodeName": "requester", "spec": {
            "listeners": listener(),
            "serviceDiscovery": {"dns": {"hostname": "requester.gophers.local"}},
            "backends": backends
        }}),
    )?;
    let from = taskdefs.join("requester.json");
    let to = dir.join("taskdefs/requester.json");
    std::fs::create_dir_all(dir.join("taskdefs"))?;
    std::fs::copy(&from, &to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(1 + 4 * services as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_mesh_loads_and_checks() {
        let dir = std::env::temp_dir().join(format!("gm-scale-{}", std::process::id()));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../taskdefs");
        let count = generate(&dir, 25, &shipped).expect("generated");
        assert_eq!(count, 1 + 4 * 24 + 1);
        let (mesh, tasks) = meshmodel::load(&dir.join("mesh"), &dir.join("taskdefs"))
            .unwrap_or_else(|p| panic!("the generated mesh has problems: {p:?}"));
        assert_eq!(mesh.virtual_nodes.len(), 25);
        assert_eq!(tasks.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
