//! `CreateVirtualRouter`: a router's listeners.

use serde::{Deserialize, Serialize};

use super::shared::{PortMapping, Tag};

/// `aws appmesh create-virtual-router --cli-input-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterInput {
    pub mesh_name: String,
    pub virtual_router_name: String,
    #[serde(default)]
    pub spec: VirtualRouterSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<VirtualRouterListener>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterListener {
    pub port_mapping: PortMapping,
}
