//! ECS task definitions (`aws ecs register-task-definition --cli-input-json`), as far as
//! the mesh needs them: containers, their environment, users, ports, dependencies, health
//! checks, and the APPMESH proxy configuration.
//!
//! ECS has many more fields than these; they are kept as they are and left to the AWS CLI
//! to check, so a task definition with, say, `ephemeralStorage` still loads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::{Problem, Problems};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_configuration: Option<ProxyConfiguration>,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfiguration {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub container_name: String,
    #[serde(default)]
    pub properties: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<ContainerPortMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl ContainerDefinition {
    /// The value of environment variable `name`, with its index in `environment`.
    pub fn env(&self, name: &str) -> Option<(usize, &str)> {
        self.environment
            .iter()
            .enumerate()
            .find(|(_, kv)| kv.name == name)
            .map(|(i, kv)| (i, kv.value.as_str()))
    }

    /// ECS's default: a container is essential unless it says otherwise.
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
}

/// The APPMESH `proxyConfiguration` properties, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMeshProxy {
    /// The container that runs Envoy.
    pub container_name: String,
    pub ignored_uid: Option<u32>,
    pub ignored_gid: Option<u32>,
    pub proxy_ingress_port: u16,
    pub proxy_egress_port: u16,
    pub app_ports: Vec<u16>,
    pub egress_ignored_ips: Vec<String>,
    pub egress_ignored_ports: Vec<u16>,
}

impl TaskDefinition {
    /// Parses a task definition document; `origin` names it in problems.
    pub fn parse(origin: &str, text: &str) -> Result<Self, Problems> {
        let value = crate::problem::parse_json(origin, text)?;
        crate::resource::typed(origin, value)
    }

    /// The index and definition of the container called `name`.
    pub fn container(&self, name: &str) -> Option<(usize, &ContainerDefinition)> {
        self.container_definitions
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    /// The APPMESH proxy configuration, parsed; problems name the property.
    pub fn appmesh_proxy(&self, origin: &str) -> Result<AppMeshProxy, Problems> {
        let Some(pc) = &self.proxy_configuration else {
            return Err(Problems::one(Problem::new(
                origin,
                "proxyConfiguration",
                "missing: an App Mesh task needs a proxyConfiguration of type APPMESH",
            )));
        };
        let mut p = Vec::new();
        if pc.kind.as_deref().unwrap_or("APPMESH") != "APPMESH" {
            p.push(Problem::new(
                origin,
                "proxyConfiguration.type",
                format!(
                    "`{}` is not APPMESH",
                    pc.kind.as_deref().unwrap_or_default()
                ),
            ));
        }
        let find = |name: &str| {
            pc.properties
                .iter()
                .enumerate()
                .find(|(_, kv)| kv.name == name)
                .map(|(i, kv)| {
                    (
                        format!("proxyConfiguration.properties[{i}].value"),
                        kv.value.as_str(),
                    )
                })
        };
        let mut port = |name: &str, required: bool| -> Option<u16> {
            match find(name) {
                Some((path, v)) => match v.trim().parse::<u16>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        p.push(Problem::new(
                            origin,
                            path,
                            format!("{name} `{v}` is not a port (1-65535)"),
                        ));
                        None
                    }
                },
                None if required => {
                    p.push(Problem::new(
                        origin,
                        "proxyConfiguration.properties",
                        format!("{name} is missing"),
                    ));
                    None
                }
                None => None,
            }
        };
        let ingress = port("ProxyIngressPort", true);
        let egress = port("ProxyEgressPort", true);
        let mut list = |name: &str| -> Vec<u16> {
            let Some((path, v)) = find(name) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.parse::<u16>() {
                    Ok(n) if n > 0 => out.push(n),
                    _ => p.push(Problem::new(
                        origin,
                        &path,
                        format!("{name}: `{item}` is not a port (1-65535)"),
                    )),
                }
            }
            if out.len() > 15 {
                p.push(Problem::new(
                    origin,
                    &path,
                    format!("{name}: {} ports given; at most 15 are allowed", out.len()),
                ));
            }
            out
        };
        let app_ports = list("AppPorts");
        let egress_ignored_ports = list("EgressIgnoredPorts");
        let mut id = |name: &str| -> Option<u32> {
            let (path, v) = find(name)?;
            match v.trim().parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    p.push(Problem::new(
                        origin,
                        path,
                        format!("{name} `{v}` is not a numeric id"),
                    ));
                    None
                }
            }
        };
        let ignored_uid = id("IgnoredUID");
        let ignored_gid = id("IgnoredGID");
        if ignored_uid.is_none() && ignored_gid.is_none() {
            p.push(Problem::new(
                origin,
                "proxyConfiguration.properties",
                "give IgnoredUID or IgnoredGID, or Envoy's own traffic would loop back into Envoy",
            ));
        }
        if app_ports.is_empty() && find("AppPorts").is_none() {
            p.push(Problem::new(
                origin,
                "proxyConfiguration.properties",
                "AppPorts is missing",
            ));
        }
        let egress_ignored_ips = find("EgressIgnoredIPs")
            .map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        match (ingress, egress) {
            (Some(ingress), Some(egress)) if p.is_empty() => Ok(AppMeshProxy {
                container_name: pc.container_name.clone(),
                ignored_uid,
                ignored_gid,
                proxy_ingress_port: ingress,
                proxy_egress_port: egress,
                app_ports,
                egress_ignored_ips,
                egress_ignored_ports,
            }),
            _ => Err(Problems(p)),
        }
    }
}
