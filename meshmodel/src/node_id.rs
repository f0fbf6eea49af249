//! Envoy node ids: how a sidecar names the virtual node it serves.
//!
//! App Mesh's Envoy sends `mesh/M/virtualNode/N`, or the node's ARN
//! (`arn:aws:appmesh:R:A:mesh/M/virtualNode/N`), as its node id.

/// How a virtual gateway's Envoy is named where virtual nodes' Envoys are named by their
/// node (tasks, placements, statuses): `virtualGateway/NAME` (no virtual node name has a
/// `/`).
pub const GATEWAY_PREFIX: &str = "virtualGateway/";

/// The Envoy node id for virtual node `node` of `mesh` (or for `virtualGateway/G`), as App
/// Mesh names it.
pub fn node_id(mesh: &str, node: &str) -> String {
    match node.strip_prefix(GATEWAY_PREFIX) {
        Some(gateway) => format!("mesh/{mesh}/virtualGateway/{gateway}"),
        None => format!("mesh/{mesh}/virtualNode/{node}"),
    }
}

/// The mesh and virtual node an Envoy's node id names (`mesh/M/virtualNode/N`, or the
/// node's ARN).
pub fn node_from_id(id: &str) -> Option<(&str, &str)> {
    named(id, "virtualNode")
}

/// The mesh and virtual gateway an Envoy's node id names (`mesh/M/virtualGateway/G`, or the
/// gateway's ARN).
pub fn gateway_from_id(id: &str) -> Option<(&str, &str)> {
    named(id, "virtualGateway")
}

/// The mesh and the name in `mesh/M/KIND/NAME` (anywhere in `id`, as in an ARN).
fn named<'a>(id: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let at = id.find("mesh/")?;
    let mut parts = id[at..].split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("mesh"), Some(mesh), Some(k), Some(name), None)
            if k == kind && !mesh.is_empty() && !name.is_empty() =>
        {
            Some((mesh, name))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip() {
        assert_eq!(
            node_from_id(&node_id("gophermesh", "requester")),
            Some(("gophermesh", "requester"))
        );
        assert_eq!(
            node_from_id("arn:aws:appmesh:us-east-1:1:mesh/m/virtualNode/n"),
            Some(("m", "n"))
        );
        assert_eq!(node_from_id("mesh/m/virtualRouter/n"), None);
        assert_eq!(
            gateway_from_id("arn:aws:appmesh:us-east-1:1:mesh/m/virtualGateway/ingress"),
            Some(("m", "ingress"))
        );
        assert_eq!(gateway_from_id("mesh/m/virtualNode/n"), None);
        assert_eq!(
            gateway_from_id(&node_id("m", "virtualGateway/in")),
            Some(("m", "in"))
        );
    }
}
