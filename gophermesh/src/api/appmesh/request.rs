//! Parsing an App Mesh API request: the operation from its method and path, and the
//! resource from its body, by two pure functions that can be tested and fuzzed without a
//! server. Errors are AWS's: status, error type and message.

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::sigv4;
use meshmodel::{Key, Kind, Resource};
use serde_json::{Value, json};

const PREFIX: &str = "/v20190125/meshes";

/// An AWS-style error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl AwsError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ConflictException", message)
    }
    pub(crate) fn in_use(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceInUseException", message)
    }
    /// A change the store could not write: 503, so that callers retry.
    /// 503: the store could not take the change just now; `said` tells whether it was
    /// made (not, or perhaps).
    pub(crate) fn unavailable(said: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            said.to_string(),
        )
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            message,
        )
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({ "message": self.message }).to_string(),
        )
            .into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        response
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Describe,
    Update,
    Delete,
    List,
}

/// A parsed method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub action: Action,
    pub kind: Kind,
    /// The mesh named in the path (`None` only for the mesh collection).
    pub mesh: Option<String>,
    /// The virtual router (routes) or virtual gateway (gateway routes) named in the path.
    pub parent: Option<String>,
    /// The resource named in the path (describe, update, delete).
    pub name: Option<String>,
}

impl Operation {
    /// AWS's name for it, e.g. `CreateVirtualNode`.
    pub fn name(&self) -> String {
        let verb = match self.action {
            Action::Create => "Create",
            Action::Describe => "Describe",
            Action::Update => "Update",
            Action::Delete => "Delete",
            Action::List => "List",
        };
        let noun = kind_noun(self.kind);
        if self.action == Action::List {
            if self.kind == Kind::Mesh {
                "ListMeshes".to_owned()
            } else {
                format!("{verb}{noun}s")
            }
        } else {
            format!("{verb}{noun}")
        }
    }

    /// The key of the resource named in the path.
    pub(crate) fn key(&self) -> Option<Key> {
        let name = self.name.clone()?;
        Some(match self.kind {
            Kind::Mesh => Key::Mesh,
            Kind::VirtualNode => Key::VirtualNode(name),
            Kind::VirtualRouter => Key::VirtualRouter(name),
            Kind::Route => Key::Route(self.parent.clone()?, name),
            Kind::VirtualService => Key::VirtualService(name),
            Kind::VirtualGateway => Key::VirtualGateway(name),
            Kind::GatewayRoute => Key::GatewayRoute(self.parent.clone()?, name),
        })
    }
}

pub(crate) fn kind_noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "Mesh",
        Kind::VirtualNode => "VirtualNode",
        Kind::VirtualRouter => "VirtualRouter",
        Kind::Route => "Route",
        Kind::VirtualService => "VirtualService",
        Kind::VirtualGateway => "VirtualGateway",
        Kind::GatewayRoute => "GatewayRoute",
    }
}

/// The JSON field that names the parent of a resource of `kind` (a route's router, a
/// gateway route's gateway).
pub(crate) fn parent_field(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Route => Some("virtualRouterName"),
        Kind::GatewayRoute => Some("virtualGatewayName"),
        _ => None,
    }
}

/// The JSON field that names a resource of `kind`.
pub(crate) fn name_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "meshName",
        Kind::VirtualNode => "virtualNodeName",
        Kind::VirtualRouter => "virtualRouterName",
        Kind::Route => "routeName",
        Kind::VirtualService => "virtualServiceName",
        Kind::VirtualGateway => "virtualGatewayName",
        Kind::GatewayRoute => "gatewayRouteName",
    }
}

/// The response member (`virtualNode`) and list member (`virtualNodes`) of `kind`.
pub(crate) fn list_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "meshes",
        Kind::VirtualNode => "virtualNodes",
        Kind::VirtualRouter => "virtualRouters",
        Kind::Route => "routes",
        Kind::VirtualService => "virtualServices",
        Kind::VirtualGateway => "virtualGateways",
        Kind::GatewayRoute => "gatewayRoutes",
    }
}

pub(crate) fn decode_segment(segment: &str) -> Result<String, AwsError> {
    let (bytes, malformed) = sigv4::percent_decode(segment);
    if malformed {
        return Err(AwsError::bad_request(format!(
            "path segment `{segment}` has a malformed percent-escape"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| AwsError::bad_request(format!("path segment `{segment}` is not UTF-8")))?;
    if text.is_empty() {
        return Err(AwsError::bad_request("a name in the path is empty"));
    }
    Ok(text)
}

/// The value of query parameter `name`, percent-decoded.
pub(crate) fn param(query: &str, name: &str) -> Result<Option<String>, AwsError> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode_segment(v))
        .transpose()
}

/// Parses the method and path of an App Mesh API call.
pub fn operation(method: &Method, path: &str) -> Result<Operation, AwsError> {
    let unknown = || {
        AwsError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no App Mesh operation is {method} {path}"),
        )
    };
    let rest = path.strip_prefix(PREFIX).ok_or_else(unknown)?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    let segs: Vec<String> = parts
        .iter()
        .map(|p| decode_segment(p))
        .collect::<Result<_, _>>()?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let collection = |kind| match *method {
        Method::PUT => Ok((Action::Create, kind)),
        Method::GET => Ok((Action::List, kind)),
        _ => Err(unknown()),
    };
    let item = |kind| match *method {
        Method::GET => Ok((Action::Describe, kind)),
        Method::PUT => Ok((Action::Update, kind)),
        Method::DELETE => Ok((Action::Delete, kind)),
        _ => Err(unknown()),
    };
    let own = |v: &&str| Some((*v).to_owned());
    let collection_kind = |word: &str| match word {
        "virtualNodes" => Some(Kind::VirtualNode),
        "virtualRouters" => Some(Kind::VirtualRouter),
        "virtualServices" => Some(Kind::VirtualService),
        "virtualGateways" => Some(Kind::VirtualGateway),
        _ => None,
    };
    let child_kind = |parent: &str, word: &str| match (parent, word) {
        ("virtualRouter", "routes") => Some(Kind::Route),
        ("virtualGateway", "gatewayRoutes") => Some(Kind::GatewayRoute),
        _ => None,
    };
    let (action, kind, mesh, parent, name) = match s.as_slice() {
        [] => {
            let (a, k) = collection(Kind::Mesh)?;
            (a, k, None, None, None)
        }
        [mesh] => {
            let (a, k) = item(Kind::Mesh)?;
            (a, k, own(mesh), None, own(mesh))
        }
        [mesh, word] => {
            let (a, k) = collection(collection_kind(word).ok_or_else(unknown)?)?;
            (a, k, own(mesh), None, None)
        }
        [mesh, word, name] => {
            let (a, k) = item(collection_kind(word).ok_or_else(unknown)?)?;
            (a, k, own(mesh), None, own(name))
        }
        [mesh, kind, parent, word] => {
            let (a, k) = collection(child_kind(kind, word).ok_or_else(unknown)?)?;
            (a, k, own(mesh), own(parent), None)
        }
        [mesh, kind, parent, word, name] => {
            let (a, k) = item(child_kind(kind, word).ok_or_else(unknown)?)?;
            (a, k, own(mesh), own(parent), own(name))
        }
        _ => return Err(unknown()),
    };
    Ok(Operation {
        action,
        kind,
        mesh,
        parent,
        name,
    })
}

/// A parsed create or update body: the resource (without its client token) and the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub resource: Resource,
    pub client_token: Option<String>,
}

/// Parses the body of a create or update call for `op` into a resource, with the names
/// from the path filled in. A name in the body that differs from the path is refused.
pub fn input(op: &Operation, body: &[u8]) -> Result<Input, AwsError> {
    let origin = op.name();
    let text = std::str::from_utf8(body)
        .map_err(|_| AwsError::bad_request(format!("{origin}: the body is not UTF-8")))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value = meshmodel::problem::parse_json(&origin, text)
        .map_err(|p| AwsError::bad_request(p.to_string()))?;
    let Value::Object(mut body) = value else {
        return Err(AwsError::bad_request(format!(
            "{origin}: the body must be a JSON object"
        )));
    };
    let mut put = |field: &str, value: &Option<String>| -> Result<(), AwsError> {
        let Some(value) = value else { return Ok(()) };
        match body.get(field) {
            Some(Value::String(given)) if given != value => Err(AwsError::bad_request(format!(
                "{origin}: {field}: `{given}` in the body differs from `{value}` in the path"
            ))),
            _ => {
                body.insert(field.to_owned(), Value::String(value.clone()));
                Ok(())
            }
        }
    };
    put("meshName", &op.mesh)?;
    if let Some(field) = parent_field(op.kind) {
        put(field, &op.parent)?;
    }
    if op.action == Action::Update {
        put(name_field(op.kind), &op.name)?;
    }
    // The AWS CLI sends the mesh owner as a query parameter, never in the body.
    let client_token = match body.remove("clientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Some(t),
        Some(_) => {
            return Err(AwsError::bad_request(format!(
                "{origin}: clientToken must be a string of 1 to 64 characters"
            )));
        }
    };
    let value = Value::Object(body);
    let resource =
        Resource::from_value(&origin, value).map_err(|p| AwsError::bad_request(p.to_string()))?;
    if resource.kind() != op.kind {
        return Err(AwsError::bad_request(format!(
            "{origin}: the body describes a {}, not a {}",
            resource.describe(),
            kind_noun(op.kind)
        )));
    }
    Ok(Input {
        resource,
        client_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(method: Method, path: &str) -> Operation {
        operation(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    #[test]
    fn paths_map_to_operations() {
        let o = op(Method::PUT, "/v20190125/meshes");
        assert_eq!(
            (o.action, o.kind, o.name()),
            (Action::Create, Kind::Mesh, "CreateMesh".to_owned())
        );
        let o = op(Method::GET, "/v20190125/meshes");
        assert_eq!(o.name(), "ListMeshes");
        let o = op(
            Method::GET,
            "/v20190125/meshes/m/virtualNodes/distributor-v1",
        );
        assert_eq!(o.name(), "DescribeVirtualNode");
        assert_eq!(o.key(), Some(Key::VirtualNode("distributor-v1".into())));
        let o = op(Method::PUT, "/v20190125/meshes/m/virtualRouter/r/routes/x");
        assert_eq!(o.name(), "UpdateRoute");
        assert_eq!(o.key(), Some(Key::Route("r".into(), "x".into())));
        let o = op(Method::GET, "/v20190125/meshes/m/virtualRouter/r/routes");
        assert_eq!(o.name(), "ListRoutes");
        let o = op(
            Method::DELETE,
            "/v20190125/meshes/m/virtualServices/a%2Eb.local",
        );
        assert_eq!(o.name, Some("a.b.local".into()));
        let o = op(Method::GET, "/v20190125/meshes/m/virtualGateways");
        assert_eq!(o.name(), "ListVirtualGateways");
        let o = op(
            Method::PUT,
            "/v20190125/meshes/m/virtualGateway/ingress/gatewayRoutes/r",
        );
        assert_eq!(o.name(), "UpdateGatewayRoute");
        assert_eq!(
            o.key(),
            Some(Key::GatewayRoute("ingress".into(), "r".into()))
        );
        for (m, p) in [
            (Method::POST, "/v20190125/meshes"),
            (Method::GET, "/v20190125/meshes/m/virtualGateway/g/routes"),
            (
                Method::GET,
                "/v20190125/meshes/m/virtualRouter/r/gatewayRoutes",
            ),
            (Method::GET, "/v1/status"),
            (Method::GET, "/v20190125/meshes/m/virtualRouter/r/nope"),
        ] {
            assert_eq!(
                operation(&m, p).map_err(|e| e.kind),
                Err("UnknownOperationException"),
                "{m} {p}"
            );
        }
        let other = operation(&Method::POST, "/v20190125/meshes").expect_err("no such");
        assert!(
            other.message.starts_with("no App Mesh operation is"),
            "{}",
            other.message
        );
    }

    #[test]
    fn bodies_take_names_from_the_path() {
        let o = op(
            Method::PUT,
            "/v20190125/meshes/gm/virtualRouter/distributor/routes",
        );
        let body = br#"{"routeName":"x","clientToken":"t1","spec":{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"a","weight":1}]}}}}"#;
        let i = input(&o, body).expect("parsed");
        assert_eq!(i.client_token.as_deref(), Some("t1"));
        let Resource::Route(r) = i.resource else {
            panic!("not a route")
        };
        assert_eq!(
            (r.mesh_name.as_str(), r.virtual_router_name.as_str()),
            ("gm", "distributor")
        );

        let o = op(Method::PUT, "/v20190125/meshes/gm/virtualNodes/a");
        let e = input(&o, br#"{"virtualNodeName":"b","spec":{}}"#).expect_err("mismatch");
        assert!(
            e.message.contains("virtualNodeName") && e.message.contains("differs"),
            "{e:?}"
        );
        let e = input(&o, b"{ nope").expect_err("bad json");
        assert_eq!(e.kind, "BadRequestException");
        assert!(e.message.contains("not valid JSON"), "{e:?}");
        let e = input(
            &o,
            br#"{"spec":{"listeners":[{"portMapping":{"port":"x","protocol":"http"}}]}}"#,
        )
        .expect_err("bad type");
        assert!(
            e.message.contains("spec.listeners[0].portMapping.port"),
            "{e:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn any_path_parses_or_is_refused(path in "(/v20190125/meshes)?(/[a-zA-Z0-9%._~-]{0,12}){0,6}", m in 0..5u8) {
            let method = [Method::GET, Method::PUT, Method::DELETE, Method::POST, Method::PATCH][usize::from(m)].clone();
            let _ = operation(&method, &path);
        }

        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let o = op(Method::PUT, "/v20190125/meshes/gm/virtualNodes");
            let _ = input(&o, &body);
        }
    }
}
