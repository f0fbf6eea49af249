//! Mutual TLS the mesh sets up by itself, switched on by the mesh's tag `gophermesh:mtls`
//! (`STRICT`: callers must show a mesh certificate; `PERMISSIVE`: plain callers are taken
//! too, for a migration; absent or `DISABLED`: off). A tag, not a flag, because it lives on
//! the mesh's own record: every replica, the App Mesh API, CloudFormation's `Tags` and the
//! EKS controller's manifests see the same switch, and the mesh JSON stays App Mesh's.
//!
//! Each virtual node's and gateway's Envoy gets a certificate whose URI names it
//! (`spiffe://MESH/virtualNode/NAME`, `spiffe://MESH/virtualGateway/NAME`), served over SDS
//! by the control plane ([`MESH_CERTIFICATE`], issued by the mesh's CA, [`MESH_TRUST`]).
//! A node's listener takes only the callers the mesh gives it (the nodes and gateways whose
//! backends reach it); a caller's cluster checks that the target is the node it meant. A
//! listener with its own `tls`, or a backend under a client policy's `tls`, keeps it.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use meshmodel::Mesh;

use crate::state::snapshot::{Callers, MeshState};

use super::tls_context::{downstream_tls, from_control_plane, san_exactly, upstream_tls};

pub use meshmodel::MTLS_TAG;

/// The secret of an Envoy's own mesh certificate (each Envoy gets its node's).
pub const MESH_CERTIFICATE: &str = "gophermesh:mesh-certificate";

/// The secret of the mesh CA's certificate, which every Envoy of the mesh trusts.
pub const MESH_TRUST: &str = "gophermesh:mesh-trust";

/// Whether the mesh's Envoys speak mutual TLS by themselves, and how strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshTls {
    /// Listeners take mesh certificates only.
    Strict,
    /// Listeners also take plain callers; callers in the mesh always use TLS.
    Permissive,
}

/// The mesh's `gophermesh:mtls` setting (the model checked its value).
pub fn mesh_tls(mesh: &Mesh) -> Option<MeshTls> {
    let tags = mesh.mesh.as_ref()?.value.tags.as_ref()?;
    let tag = tags.iter().find(|t| t.key == MTLS_TAG)?;
    match tag.value.as_deref() {
        Some("STRICT") => Some(MeshTls::Strict),
        Some("PERMISSIVE") => Some(MeshTls::Permissive),
        _ => None,
    }
}

/// The URI a node's (`NAME`) or gateway's (`virtualGateway/NAME`) certificate carries.
pub fn spiffe_id(mesh: &str, node: &str) -> String {
    match node.strip_prefix(super::GATEWAY_PREFIX) {
        Some(gateway) => format!("spiffe://{mesh}/virtualGateway/{gateway}"),
        None => format!("spiffe://{mesh}/virtualNode/{node}"),
    }
}

/// The callers of every node of `mesh` (the nodes and gateways whose backends reach it),
/// in one pass over its routes, nodes and gateway routes.
fn callers(mesh: &Mesh) -> Callers {
    let mut behind_router: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for ((router, _), route) in &mesh.routes {
        let targets = route.value.spec.weighted_targets();
        behind_router.entry(router.as_str()).or_default().extend(
            targets
                .into_iter()
                .flat_map(|(_, t)| t)
                .map(|t| t.virtual_node.as_str()),
        );
    }
    let nodes_behind = |service: &str| -> BTreeSet<&str> {
        let provider = mesh
            .virtual_services
            .get(service)
            .and_then(|s| s.value.spec.provider.as_ref());
        let mut out = BTreeSet::new();
        if let Some(p) = provider {
            if let Some(n) = &p.virtual_node {
                out.insert(n.virtual_node_name.as_str());
            }
            if let Some(r) = &p.virtual_router {
                out.extend(
                    behind_router
                        .get(r.virtual_router_name.as_str())
                        .into_iter()
                        .flatten(),
                );
            }
        }
        out
    };
    let mut out = Callers::new();
    for (name, caller) in &mesh.virtual_nodes {
        for b in &caller.value.spec.backends {
            for target in nodes_behind(&b.virtual_service.virtual_service_name) {
                out.entry(target.to_owned())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
    for ((gateway, _), route) in &mesh.gateway_routes {
        if let Some((_, _, http)) = route.value.spec.as_http() {
            for target in nodes_behind(&http.action.target.virtual_service.virtual_service_name) {
                out.entry(target.to_owned())
                    .or_default()
                    .insert(format!("{}{gateway}", super::GATEWAY_PREFIX));
            }
        }
    }
    out
}

/// The callers of `node` in `state`, worked out once per mesh version.
pub fn callers_of<'a>(state: &'a MeshState, node: &str) -> Option<&'a BTreeSet<String>> {
    callers_in(state).get(node)
}

/// The callers of every node in `state`, worked out once per mesh version.
pub(super) fn callers_in(state: &MeshState) -> &Callers {
    state.callers.get_or_init(|| callers(&state.mesh))
}

/// The mesh certificate, and trust in the mesh CA for peers whose URI is one of `peers`.
fn mesh_context(peers: impl IntoIterator<Item = String>) -> tls::CommonTlsContext {
    use tls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    tls::CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![from_control_plane(MESH_CERTIFICATE)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(tls::CertificateValidationContext {
                    match_typed_subject_alt_names: peers
                        .into_iter()
                        .map(|p| san_exactly(tls::subject_alt_name_matcher::SanType::Uri, &p))
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(from_control_plane(MESH_TRUST)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Node `node`'s listener `l` (of mesh `mesh_name`) takes mutual TLS from its callers. A
/// node no one in the mesh calls takes no mesh certificate at all (only plain callers, when
/// permissive).
pub(super) fn mesh_listener_tls(
    l: &mut listener::Listener,
    state: &MeshState,
    mesh_name: &str,
    node: &str,
    how: MeshTls,
) {
    let callers = callers_of(state, node).into_iter().flatten();
    let mut peers: Vec<String> = callers.map(|c| spiffe_id(mesh_name, c)).collect();
    if peers.is_empty() {
        // An exact URI no certificate of the mesh carries: nobody in the mesh may call.
        peers.push(format!("spiffe://{mesh_name}/no-caller"));
    }
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(mesh_context(peers)),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: true,
        }),
        ..Default::default()
    };
    downstream_tls(l, &context, how == MeshTls::Permissive);
}

/// A caller's cluster to node `target` speaks mutual TLS, and checks the target is it.
pub(super) fn mesh_cluster_tls(c: &mut cluster::Cluster, mesh_name: &str, target: &str) {
    let context = tls::UpstreamTlsContext {
        common_tls_context: Some(mesh_context([spiffe_id(mesh_name, target)])),
        ..Default::default()
    };
    upstream_tls(c, &context);
}
