//! `CreateVirtualGateway`: a gateway's listeners, TLS and logging.

use serde::{Deserialize, Serialize};

use super::shared::{PortMapping, Tag};
use super::virtual_node::{
    BackendDefaults, ConnectionPool, HealthCheckPolicy, ListenerTls, Logging,
};

/// `aws appmesh create-virtual-gateway --cli-input-json`: a standalone Envoy through which
/// traffic from outside enters the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewayInput {
    pub mesh_name: String,
    pub virtual_gateway_name: String,
    pub spec: VirtualGatewaySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewaySpec {
    pub listeners: Vec<VirtualGatewayListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_defaults: Option<BackendDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

/// A gateway listener: the shapes are a virtual node listener's, less outlier detection,
/// timeouts and TCP (checked by `Mesh::check`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewayListener {
    pub port_mapping: PortMapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}
