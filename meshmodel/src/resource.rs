//! One App Mesh resource file: which kind it is, and its typed content.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::appmesh::{
    GatewayRouteInput, MeshInput, RouteInput, VirtualGatewayInput, VirtualNodeInput,
    VirtualRouterInput, VirtualServiceInput,
};
use crate::problem::{Problem, Problems};

/// The seven kinds of App Mesh resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Mesh,
    VirtualNode,
    VirtualRouter,
    Route,
    VirtualService,
    VirtualGateway,
    GatewayRoute,
}

/// The identity of a resource within its mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Mesh,
    VirtualNode(String),
    VirtualRouter(String),
    /// (virtual router, route)
    Route(String, String),
    VirtualService(String),
    VirtualGateway(String),
    /// (virtual gateway, gateway route)
    GatewayRoute(String, String),
}

impl Key {
    /// The ARN path after `mesh/MESH`: `""`, `/virtualNode/N`, `/virtualRouter/R/route/X`, ...
    pub fn arn_suffix(&self) -> String {
        match self {
            Key::Mesh => String::new(),
            Key::VirtualNode(n) => format!("/virtualNode/{n}"),
            Key::VirtualRouter(n) => format!("/virtualRouter/{n}"),
            Key::Route(r, n) => format!("/virtualRouter/{r}/route/{n}"),
            Key::VirtualService(n) => format!("/virtualService/{n}"),
            Key::VirtualGateway(n) => format!("/virtualGateway/{n}"),
            Key::GatewayRoute(g, n) => format!("/virtualGateway/{g}/gatewayRoute/{n}"),
        }
    }

    /// A stable text form (`virtualNode/N`, `route/R/X`, `mesh`), for storage.
    pub fn to_text(&self) -> String {
        match self {
            Key::Mesh => "mesh".to_owned(),
            Key::VirtualNode(n) => format!("virtualNode/{n}"),
            Key::VirtualRouter(n) => format!("virtualRouter/{n}"),
            Key::Route(r, n) => format!("route/{r}/{n}"),
            Key::VirtualService(n) => format!("virtualService/{n}"),
            Key::VirtualGateway(n) => format!("virtualGateway/{n}"),
            Key::GatewayRoute(g, n) => format!("gatewayRoute/{g}/{n}"),
        }
    }

    /// The inverse of [`Key::to_text`].
    pub fn from_text(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once('/').unwrap_or((text, ""));
        match kind {
            "mesh" if rest.is_empty() => Some(Key::Mesh),
            "virtualNode" if !rest.is_empty() => Some(Key::VirtualNode(rest.to_owned())),
            "virtualRouter" if !rest.is_empty() => Some(Key::VirtualRouter(rest.to_owned())),
            "virtualService" if !rest.is_empty() => Some(Key::VirtualService(rest.to_owned())),
            "virtualGateway" if !rest.is_empty() => Some(Key::VirtualGateway(rest.to_owned())),
            "route" => {
                let (r, n) = rest.split_once('/')?;
                (!r.is_empty() && !n.is_empty()).then(|| Key::Route(r.to_owned(), n.to_owned()))
            }
            "gatewayRoute" => {
                let (g, n) = rest.split_once('/')?;
                (!g.is_empty() && !n.is_empty())
                    .then(|| Key::GatewayRoute(g.to_owned(), n.to_owned()))
            }
            _ => None,
        }
    }

    /// `kind name`, e.g. `route distributor/distributor`.
    pub fn describe(&self) -> String {
        match self {
            Key::Mesh => "the mesh".to_owned(),
            Key::VirtualNode(n) => format!("virtual node `{n}`"),
            Key::VirtualRouter(n) => format!("virtual router `{n}`"),
            Key::Route(r, n) => format!("route `{n}` of virtual router `{r}`"),
            Key::VirtualService(n) => format!("virtual service `{n}`"),
            Key::VirtualGateway(n) => format!("virtual gateway `{n}`"),
            Key::GatewayRoute(g, n) => format!("gateway route `{n}` of virtual gateway `{g}`"),
        }
    }
}

/// A parsed resource file. Resources are few and never on a hot path, so the variants are
/// not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Mesh(MeshInput),
    VirtualNode(VirtualNodeInput),
    VirtualRouter(VirtualRouterInput),
    Route(RouteInput),
    VirtualService(VirtualServiceInput),
    VirtualGateway(VirtualGatewayInput),
    GatewayRoute(GatewayRouteInput),
}

impl Resource {
    /// The resource's tags (App Mesh keeps them beside the spec).
    pub fn tags(&self) -> Option<&[crate::appmesh::Tag]> {
        match self {
            Resource::Mesh(r) => r.tags.as_deref(),
            Resource::VirtualNode(r) => r.tags.as_deref(),
            Resource::VirtualRouter(r) => r.tags.as_deref(),
            Resource::Route(r) => r.tags.as_deref(),
            Resource::VirtualService(r) => r.tags.as_deref(),
            Resource::VirtualGateway(r) => r.tags.as_deref(),
            Resource::GatewayRoute(r) => r.tags.as_deref(),
        }
    }

    /// The resource's tags, to change them.
    pub fn tags_mut(&mut self) -> &mut Option<Vec<crate::appmesh::Tag>> {
        match self {
            Resource::Mesh(r) => &mut r.tags,
            Resource::VirtualNode(r) => &mut r.tags,
            Resource::VirtualRouter(r) => &mut r.tags,
            Resource::Route(r) => &mut r.tags,
            Resource::VirtualService(r) => &mut r.tags,
            Resource::VirtualGateway(r) => &mut r.tags,
            Resource::GatewayRoute(r) => &mut r.tags,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Resource::Mesh(_) => Kind::Mesh,
            Resource::VirtualNode(_) => Kind::VirtualNode,
            Resource::VirtualRouter(_) => Kind::VirtualRouter,
            Resource::Route(_) => Kind::Route,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::VirtualGateway(_) => Kind::VirtualGateway,
            Resource::GatewayRoute(_) => Kind::GatewayRoute,
        }
    }

    /// Its identity within the mesh.
    pub fn key(&self) -> Key {
        match self {
            Resource::Mesh(_) => Key::Mesh,
            Resource::VirtualNode(r) => Key::VirtualNode(r.virtual_node_name.clone()),
            Resource::VirtualRouter(r) => Key::VirtualRouter(r.virtual_router_name.clone()),
            Resource::Route(r) => Key::Route(r.virtual_router_name.clone(), r.route_name.clone()),
            Resource::VirtualService(r) => Key::VirtualService(r.virtual_service_name.clone()),
            Resource::VirtualGateway(r) => Key::VirtualGateway(r.virtual_gateway_name.clone()),
            Resource::GatewayRoute(r) => {
                Key::GatewayRoute(r.virtual_gateway_name.clone(), r.gateway_route_name.clone())
            }
        }
    }

    /// The mesh the resource says it belongs to.
    pub fn mesh_name(&self) -> &str {
        match self {
            Resource::Mesh(r) => &r.mesh_name,
            Resource::VirtualNode(r) => &r.mesh_name,
            Resource::VirtualRouter(r) => &r.mesh_name,
            Resource::Route(r) => &r.mesh_name,
            Resource::VirtualService(r) => &r.mesh_name,
            Resource::VirtualGateway(r) => &r.mesh_name,
            Resource::GatewayRoute(r) => &r.mesh_name,
        }
    }

    /// `kind name`, e.g. `route distributor/distributor`.
    pub fn describe(&self) -> String {
        match self {
            Resource::Mesh(r) => format!("mesh {}", r.mesh_name),
            Resource::VirtualNode(r) => format!("virtual node {}", r.virtual_node_name),
            Resource::VirtualRouter(r) => format!("virtual router {}", r.virtual_router_name),
            Resource::Route(r) => format!("route {}/{}", r.virtual_router_name, r.route_name),
            Resource::VirtualService(r) => format!("virtual service {}", r.virtual_service_name),
            Resource::VirtualGateway(r) => format!("virtual gateway {}", r.virtual_gateway_name),
            Resource::GatewayRoute(r) => format!(
                "gateway route {}/{}",
                r.virtual_gateway_name, r.gateway_route_name
            ),
        }
    }

    /// Parses one resource document; `origin` names it in problems.
    pub fn parse(origin: &str, text: &str) -> Result<Self, Problems> {
        let value = crate::problem::parse_json(origin, text)?;
        Self::from_value(origin, value)
    }

    /// Parses a resource from a JSON value, telling the kind by its name fields.
    pub fn from_value(origin: &str, value: Value) -> Result<Self, Problems> {
        let Some(object) = value.as_object() else {
            return Err(Problems::one(Problem::new(
                origin,
                "",
                "expected a JSON object (the --cli-input-json of an aws appmesh create-* call)",
            )));
        };
        if let Some((path, hint)) = preview_shape(&value) {
            return Err(Problems::one(Problem::new(origin, path, hint)));
        }
        let has = |k: &str| object.contains_key(k);
        let kind = if has("gatewayRouteName") {
            Kind::GatewayRoute
        } else if has("routeName") {
            Kind::Route
        } else if has("virtualNodeName") {
            Kind::VirtualNode
        } else if has("virtualServiceName") {
            Kind::VirtualService
        } else if has("virtualRouterName") {
            Kind::VirtualRouter
        } else if has("virtualGatewayName") {
            Kind::VirtualGateway
        } else if has("meshName") {
            Kind::Mesh
        } else {
            return Err(Problems::one(Problem::new(
                origin,
                "",
                "cannot tell which App Mesh resource this is: expected meshName plus one of \
                 virtualNodeName, virtualRouterName, routeName, virtualServiceName, \
                 virtualGatewayName, gatewayRouteName",
            )));
        };
        Ok(match kind {
            Kind::Mesh => Resource::Mesh(typed(origin, value)?),
            Kind::VirtualNode => Resource::VirtualNode(typed(origin, value)?),
            Kind::VirtualRouter => Resource::VirtualRouter(typed(origin, value)?),
            Kind::Route => Resource::Route(typed(origin, value)?),
            Kind::VirtualService => Resource::VirtualService(typed(origin, value)?),
            Kind::VirtualGateway => Resource::VirtualGateway(typed(origin, value)?),
            Kind::GatewayRoute => Resource::GatewayRoute(typed(origin, value)?),
        })
    }

    /// The resource as `--cli-input-json` (no client token).
    pub fn to_json(&self) -> Value {
        let value = match self {
            Resource::Mesh(r) => serde_json::to_value(r),
            Resource::VirtualNode(r) => serde_json::to_value(r),
            Resource::VirtualRouter(r) => serde_json::to_value(r),
            Resource::Route(r) => serde_json::to_value(r),
            Resource::VirtualService(r) => serde_json::to_value(r),
            Resource::VirtualGateway(r) => serde_json::to_value(r),
            Resource::GatewayRoute(r) => serde_json::to_value(r),
        };
        let mut value = value.unwrap_or(Value::Null);
        if let Some(o) = value.as_object_mut() {
            o.remove("clientToken");
        }
        value
    }
}

/// Deserializes `value` as `T`, reporting the JSON path of the first field that does not fit.
pub fn typed<T: DeserializeOwned>(origin: &str, value: Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problems::one(Problem::new(origin, path, e.into_inner().to_string()))
    })
}

/// Recognises the 2018 preview API shapes the original walkthrough used, which the GA API
/// (and the current AWS CLI) reject, and says what the GA shape is.
fn preview_shape(value: &Value) -> Option<(String, String)> {
    let spec = value.get("spec")?;
    if let Some(backends) = spec.get("backends").and_then(Value::as_array) {
        if let Some(i) = backends.iter().position(Value::is_string) {
            return Some((
                format!("spec.backends[{i}]"),
                "a plain string backend is the 2018 preview API; the GA API (2019-01-25) wants \
                 {\"virtualService\": {\"virtualServiceName\": \"...\"}}"
                    .to_owned(),
            ));
        }
    }
    if spec.pointer("/serviceDiscovery/dns/serviceName").is_some() {
        return Some((
            "spec.serviceDiscovery.dns.serviceName".to_owned(),
            "`serviceName` is the 2018 preview API; the GA API (2019-01-25) calls it `hostname`"
                .to_owned(),
        ));
    }
    if spec.get("serviceNames").is_some() {
        return Some((
            "spec.serviceNames".to_owned(),
            "router `serviceNames` is the 2018 preview API; in the GA API (2019-01-25) a router \
             has `listeners`, and a virtual service names the router as its provider"
                .to_owned(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_by_their_name_fields() {
        let r = Resource::parse("m", r#"{"meshName":"m"}"#).expect("mesh");
        assert_eq!(r.kind(), Kind::Mesh);
        let r = Resource::parse(
            "r",
            r#"{"meshName":"m","virtualRouterName":"d","routeName":"d","spec":{}}"#,
        )
        .expect("route");
        assert_eq!(r.kind(), Kind::Route);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let err = Resource::parse(
            "f.json",
            r#"{"meshName":"m","virtualNodeName":"n","spec":{"listeners":[{"portMapping":{"port":1,"protocol":"http"},"tlz":{}}]}}"#,
        )
        .expect_err("tlz is no field of App Mesh's");
        let text = err.to_string();
        assert!(
            text.starts_with("f.json: spec.listeners[0].tlz: unknown field `tlz`"),
            "{text}"
        );
    }

    #[test]
    fn bad_json_gives_line_and_column() {
        let err = Resource::parse("f.json", "{\n\"meshName\": }").expect_err("bad json");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn the_2018_preview_shapes_get_a_hint() {
        let err = Resource::parse(
            "old.json",
            r#"{"meshName":"m","virtualNodeName":"n","spec":{"backends":["distributor.gophers.local"]}}"#,
        )
        .expect_err("preview shape");
        assert!(
            err.to_string()
                .contains("spec.backends[0]: a plain string backend is the 2018 preview API"),
            "{err}"
        );
        let err = Resource::parse(
            "old.json",
            r#"{"meshName":"m","virtualNodeName":"n","spec":{"serviceDiscovery":{"dns":{"serviceName":"x"}}}}"#,
        )
        .expect_err("preview shape");
        assert!(err.to_string().contains("calls it `hostname`"), "{err}");
    }
}
