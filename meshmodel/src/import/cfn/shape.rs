//! `AWS::AppMesh::*` properties, as CloudFormation spells them, in the App Mesh API's
//! shapes: `MeshName`, `VirtualNodeName`, ... become the request's name fields, `Spec`
//! its `spec` with every member's name in the API's camelCase (`PortMapping` ->
//! `portMapping`, `DNS` -> `dns`, `AWSCloudMap` -> `awsCloudMap`, `HTTP2` -> `http2`),
//! `Tags` its `tags`; numbers and booleans CloudFormation passes as strings become numbers
//! and booleans where the API wants them. Also the names a resource is known by, for `Ref`
//! and `Fn::GetAtt`.

use serde_json::{Map, Value};

use super::Options;
use crate::problem::Problem;

pub(crate) use crate::problem::join;

/// The App Mesh resource types, with the API's member naming the resource and the ARN
/// path segment of its kind.
const KINDS: &[(&str, &str, &str)] = &[
    ("AWS::AppMesh::Mesh", "MeshName", "mesh"),
    (
        "AWS::AppMesh::VirtualNode",
        "VirtualNodeName",
        "virtualNode",
    ),
    (
        "AWS::AppMesh::VirtualService",
        "VirtualServiceName",
        "virtualService",
    ),
    (
        "AWS::AppMesh::VirtualRouter",
        "VirtualRouterName",
        "virtualRouter",
    ),
    ("AWS::AppMesh::Route", "RouteName", "route"),
    (
        "AWS::AppMesh::VirtualGateway",
        "VirtualGatewayName",
        "virtualGateway",
    ),
    (
        "AWS::AppMesh::GatewayRoute",
        "GatewayRouteName",
        "gatewayRoute",
    ),
];

/// The attributes `Fn::GetAtt` reads of an App Mesh resource (those of its kind).
pub(crate) const ATTRIBUTES: &[&str] = &[
    "Arn",
    "Uid",
    "MeshName",
    "MeshOwner",
    "ResourceOwner",
    "the resource's own name (VirtualNodeName, RouteName, ...)",
];

/// The property naming an App Mesh resource of type `kind` (`VirtualNodeName` for
/// `AWS::AppMesh::VirtualNode`); `None` for other types.
pub fn app_mesh_kind(kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, n, _)| *n)
}

/// The names an App Mesh resource is known by.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) kind: &'static str,
    /// The property naming it (`VirtualNodeName`).
    name_property: &'static str,
    segment: &'static str,
    pub(crate) mesh: String,
    /// The router of a route, the gateway of a gateway route: its name property and name.
    parent: Option<(&'static str, String)>,
    pub(crate) own: String,
    mesh_owner: Option<String>,
}

impl Names {
    /// The names of resource `id` of type `kind` in stack `stack`, reading its properties
    /// with `property` (`None` when not given). A name not given is made as
    /// CloudFormation makes one: `STACK-LOGICALID`.
    pub(crate) fn of(
        kind: &str,
        id: &str,
        stack: &str,
        property: impl Fn(&str) -> Result<Option<String>, Problem>,
    ) -> Result<Self, Problem> {
        let Some(&(kind, name_property, segment)) = KINDS.iter().find(|(k, _, _)| *k == kind)
        else {
            return Err(Problem::new("", "", format!("{kind} is not App Mesh")));
        };
        let own = property(name_property)?.unwrap_or_else(|| format!("{stack}-{id}"));
        let required = |name: &str| -> Result<String, Problem> {
            property(name)?.ok_or_else(|| {
                Problem::new(
                    "",
                    format!("Resources.{id}.Properties.{name}"),
                    format!("{kind} needs {name}"),
                )
            })
        };
        let mesh = match kind {
            "AWS::AppMesh::Mesh" => own.clone(),
            _ => required("MeshName")?,
        };
        let parent = match kind {
            "AWS::AppMesh::Route" => Some(("VirtualRouterName", required("VirtualRouterName")?)),
            "AWS::AppMesh::GatewayRoute" => {
                Some(("VirtualGatewayName", required("VirtualGatewayName")?))
            }
            _ => None,
        };
        Ok(Self {
            kind,
            name_property,
            segment,
            mesh,
            parent,
            own,
            mesh_owner: property("MeshOwner")?,
        })
    }

    /// The resource's ARN.
    pub(crate) fn arn(&self, options: &Options) -> String {
        let partition = match options.region.as_str() {
            r if r.starts_with("cn-") => "aws-cn",
            r if r.starts_with("us-gov-") => "aws-us-gov",
            _ => "aws",
        };
        let owner = self.mesh_owner.as_deref().unwrap_or(&options.account);
        let mut path = format!("mesh/{}", self.mesh);
        if let Some((property, parent)) = &self.parent {
            let segment = if *property == "VirtualRouterName" {
                "virtualRouter"
            } else {
                "virtualGateway"
            };
            path.push_str(&format!("/{segment}/{parent}"));
        }
        if self.segment != "mesh" {
            path.push_str(&format!("/{}/{}", self.segment, self.own));
        }
        format!("arn:{partition}:appmesh:{}:{owner}:{path}", options.region)
    }

    /// `Fn::GetAtt` of `attribute`; `None` for one this kind does not have.
    pub(crate) fn attribute(&self, attribute: &str, options: &Options) -> Option<Value> {
        let owner = || {
            self.mesh_owner
                .clone()
                .unwrap_or_else(|| options.account.clone())
        };
        let value = match attribute {
            "Arn" => self.arn(options),
            "Uid" => uid(&self.arn(options)),
            "MeshName" => self.mesh.clone(),
            "MeshOwner" => owner(),
            "ResourceOwner" => options.account.clone(),
            a if a == self.name_property => self.own.clone(),
            a => match &self.parent {
                Some((property, parent)) if a == *property => parent.clone(),
                _ => return None,
            },
        };
        Some(Value::String(value))
    }
}

/// A stable identifier made from `seed`, shaped as a UUID (what `Uid` attributes hold).
pub(crate) fn uid(seed: &str) -> String {
    // FNV-1a, twice with different offsets: 128 stable bits.
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The API's request JSON for a resource of type `kind` with evaluated `properties`;
/// `Err((PATH, REASON))` for a property the type does not have.
pub(crate) fn api_json(
    kind: &str,
    properties: &Value,
    names: &Names,
) -> Result<Value, (String, String)> {
    let mut out = Map::new();
    out.insert("meshName".into(), Value::from(names.mesh.clone()));
    if kind != "AWS::AppMesh::Mesh" {
        out.insert(camel(names.name_property), Value::from(names.own.clone()));
    }
    if let Some((property, parent)) = &names.parent {
        out.insert(camel(property), Value::from(parent.clone()));
    }
    let empty = Map::new();
    let given = properties.as_object().unwrap_or(&empty);
    for (property, value) in given {
        match property.as_str() {
            "MeshName" | "VirtualRouterName" | "VirtualGatewayName" => {}
            p if p == names.name_property => {}
            "MeshOwner" => {
                out.insert("meshOwner".into(), value.clone());
            }
            "Spec" | "Tags" => {
                out.insert(camel(property), api_value(value));
            }
            other => {
                return Err((
                    other.to_owned(),
                    format!(
                        "{kind} has no property {other} (it has MeshName, {}{}, Spec, Tags{})",
                        names.name_property,
                        names
                            .parent
                            .as_ref()
                            .map(|(p, _)| format!(", {p}"))
                            .unwrap_or_default(),
                        if kind == "AWS::AppMesh::Mesh" {
                            ""
                        } else {
                            ", MeshOwner"
                        }
                    ),
                ));
            }
        }
    }
    out.entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    Ok(Value::Object(out))
}

/// The API's members whose values are numbers, and booleans.
const NUMBERS: &[&str] = &[
    "port",
    "weight",
    "priority",
    "maxRetries",
    "value",
    "healthyThreshold",
    "unhealthyThreshold",
    "timeoutMillis",
    "intervalMillis",
    "maxConnections",
    "maxPendingRequests",
    "maxRequests",
    "maxServerErrors",
    "maxEjectionPercent",
    "ports",
    "start",
    "end",
];
const BOOLEANS: &[&str] = &["enforce", "invert"];

/// `value` with its members named in camelCase, strings made numbers and booleans where
/// the API wants them.
fn api_value(value: &Value) -> Value {
    fn convert(value: &Value, key: Option<&str>) -> Value {
        match value {
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| {
                        let k = camel(k);
                        let v = convert(v, Some(&k));
                        (k, v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| convert(v, key)).collect()),
            Value::String(s) if key.is_some_and(|k| NUMBERS.contains(&k)) => s
                .trim()
                .parse::<serde_json::Number>()
                .map_or_else(|_| value.clone(), Value::Number),
            Value::String(s) if key.is_some_and(|k| BOOLEANS.contains(&k)) => {
                match s.to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => value.clone(),
                }
            }
            other => other.clone(),
        }
    }
    convert(value, None)
}

/// A member's name as the API spells it: the leading capitals lowered, but for the last
/// of several when a lowercase letter follows (`AWSCloudMap` -> `awsCloudMap`, `DNS` ->
/// `dns`, `HTTP2` -> `http2`, `PortMapping` -> `portMapping`).
pub(crate) fn camel(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let capitals = chars.iter().take_while(|c| c.is_ascii_uppercase()).count();
    let lower_until = match chars.get(capitals) {
        Some(c) if c.is_ascii_lowercase() && capitals > 1 => capitals - 1,
        _ => capitals,
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < lower_until {
                c.to_ascii_lowercase()
            } else {
                *c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_named_as_the_api_names_them() {
        for (cfn, api) in [
            ("PortMapping", "portMapping"),
            ("DNS", "dns"),
            ("AWSCloudMap", "awsCloudMap"),
            ("HTTP2", "http2"),
            ("Http2Route", "http2Route"),
            ("TLS", "tls"),
            ("ACM", "acm"),
            ("SDS", "sds"),
            ("GRPC", "grpc"),
            ("IpPreference", "ipPreference"),
            ("CertificateAuthorityArns", "certificateAuthorityArns"),
            ("Key", "key"),
        ] {
            assert_eq!(camel(cfn), api, "{cfn}");
        }
    }

    #[test]
    fn uids_are_stable_and_shaped_as_uuids() {
        let u = uid("arn:aws:appmesh:us-east-1:1:mesh/m");
        assert_eq!(u, uid("arn:aws:appmesh:us-east-1:1:mesh/m"));
        assert_ne!(u, uid("arn:aws:appmesh:us-east-1:1:mesh/n"));
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }

    #[test]
    fn strings_become_numbers_and_booleans_where_the_api_wants_them() {
        let spec = json!({"Listeners": [{"PortMapping": {"Port": "8080", "Protocol": "http"},
            "TLS": {"Mode": "STRICT"}}],
            "BackendDefaults": {"ClientPolicy": {"TLS": {"Enforce": "true", "Ports": ["443"]}}}});
        assert_eq!(
            api_value(&spec),
            json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                "tls": {"mode": "STRICT"}}],
                "backendDefaults": {"clientPolicy": {"tls": {"enforce": true, "ports": [443]}}}})
        );
    }
}
