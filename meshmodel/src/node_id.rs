//! Envoy node ids: how a sidecar names the virtual node it serves.
//!
//! App Mesh's Envoy sends `mesh/M/virtualNode/N`, or the node's ARN
//! (`arn:aws:appmesh:R:A:mesh/M/virtualNode/N`), as its node id.

/// The Envoy node id for virtual node `node` of `mesh`, as App Mesh names it.
pub fn node_id(mesh: &str, node: &str) -> String {
    format!("mesh/{mesh}/virtualNode/{node}")
}

/// The virtual node named by an Envoy node id (`mesh/M/virtualNode/N`, or an ARN ending so).
pub fn node_from_id(id: &str) -> Option<(&str, &str)> {
    let at = id.find("mesh/")?;
    let mut parts = id[at..].split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("mesh"), Some(mesh), Some("virtualNode"), Some(node), None)
            if !mesh.is_empty() && !node.is_empty() =>
        {
            Some((mesh, node))
        }
        _ => None,
    }
}

/// The mesh and virtual gateway an Envoy's node id names (`mesh/M/virtualGateway/G`, or the
/// gateway's ARN).
pub fn gateway_from_id(id: &str) -> Option<(&str, &str)> {
    let at = id.find("mesh/")?;
    let mut parts = id[at..].split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("mesh"), Some(mesh), Some("virtualGateway"), Some(gateway), None)
            if !mesh.is_empty() && !gateway.is_empty() =>
        {
            Some((mesh, gateway))
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
    }
}
