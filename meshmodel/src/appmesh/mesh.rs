//! `CreateMesh`: the mesh's egress filter and service discovery preference.

use serde::{Deserialize, Serialize};

use super::shared::Tag;

/// `aws appmesh create-mesh --cli-input-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshInput {
    pub mesh_name: String,
    #[serde(default)]
    pub spec: MeshSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_filter: Option<EgressFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<MeshServiceDiscovery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressFilter {
    #[serde(rename = "type")]
    pub kind: EgressFilterType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EgressFilterType {
    /// Only traffic to mesh backends leaves the proxy (App Mesh's default).
    DropAll,
    /// Traffic to destinations outside the mesh is passed through.
    AllowAll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<String>,
}
