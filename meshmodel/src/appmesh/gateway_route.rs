//! `CreateGatewayRoute`: HTTP, HTTP/2 and gRPC gateway routes, their matches, targets and
//! rewrites.

use serde::{Deserialize, Serialize};

use super::route::{
    HttpPathMatch, HttpRoute, HttpRouteAction, HttpRouteHeader, HttpRouteMatch, QueryParameterMatch,
};
use super::shared::{Protocol, Tag};

/// `aws appmesh create-gateway-route --cli-input-json`: what a virtual gateway sends to
/// which virtual service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteInput {
    pub mesh_name: String,
    pub virtual_gateway_name: String,
    pub gateway_route_name: String,
    pub spec: GatewayRouteSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpGatewayRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_route: Option<HttpGatewayRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<GrpcGatewayRoute>,
}

impl GatewayRouteSpec {
    /// The route as HTTP (a gRPC route is HTTP/2 on `/SERVICE/...`), with the JSON path
    /// of its kind and the protocol of the listeners it serves.
    pub fn as_http(&self) -> Option<(&'static str, Protocol, HttpGatewayRoute)> {
        if let Some(r) = &self.http_route {
            Some(("spec.httpRoute", Protocol::Http, r.clone()))
        } else if let Some(r) = &self.http2_route {
            Some(("spec.http2Route", Protocol::Http2, r.clone()))
        } else {
            self.grpc_route
                .as_ref()
                .map(|g| ("spec.grpcRoute", Protocol::Grpc, g.as_http()))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoute {
    #[serde(rename = "match")]
    pub route_match: HttpGatewayRouteMatch,
    pub action: HttpGatewayRouteAction,
}

impl HttpGatewayRoute {
    /// The matched prefix and what the target's routes see in its place, when the route
    /// matches a prefix and rewrites it to something else (App Mesh's default: `/`).
    pub fn prefix_rewrite(&self) -> Option<(&str, &str)> {
        let from = self.route_match.prefix.as_deref()?;
        let to = match self.action.rewrite.as_ref().and_then(|r| r.prefix.as_ref()) {
            Some(p) if p.default_prefix.as_deref() == Some("DISABLED") => from,
            Some(p) => p.value.as_deref().unwrap_or("/"),
            None => "/",
        };
        (to != from).then_some((from, to))
    }

    /// The match as a route's (every path when it names none; no targets, no retries), for
    /// what gateway routes and routes share: their checks and their Envoy match.
    pub fn as_route(&self) -> HttpRoute {
        let m = &self.route_match;
        HttpRoute {
            route_match: HttpRouteMatch {
                prefix: m
                    .prefix
                    .clone()
                    .or_else(|| m.path.is_none().then(|| "/".to_owned())),
                path: m.path.clone(),
                method: m.method.clone(),
                headers: m.headers.clone(),
                port: m.port,
                scheme: None,
                query_parameters: m.query_parameters.clone(),
            },
            action: HttpRouteAction {
                weighted_targets: Vec::new(),
            },
            retry_policy: None,
            timeout: None,
        }
    }

    /// Whether the host becomes the target virtual service's name (App Mesh's default).
    pub fn rewrites_host(&self) -> bool {
        self.action
            .rewrite
            .as_ref()
            .and_then(|r| r.hostname.as_ref())
            .and_then(|h| h.default_target_hostname.as_deref())
            != Some("DISABLED")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpRouteHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// The request's host: exactly this name, or any name ending with this suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteHostnameMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteAction {
    pub target: GatewayRouteTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpGatewayRouteRewrite>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteTarget {
    pub virtual_service: GatewayRouteVirtualService,
    /// The listener port of the target's provider, when it has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteVirtualService {
    pub virtual_service_name: String,
}

/// What the gateway changes before forwarding. Unset, App Mesh rewrites the matched
/// prefix to `/` and the host to the target virtual service's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpGatewayRoutePathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<HttpGatewayRoutePrefixRewrite>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteHostnameRewrite {
    /// `ENABLED` (the default) or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_target_hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoutePathRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoutePrefixRewrite {
    /// `ENABLED` (the default: the matched prefix becomes `/`) or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRoute {
    #[serde(rename = "match")]
    pub route_match: GrpcGatewayRouteMatch,
    pub action: GrpcGatewayRouteAction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<HttpRouteHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteAction {
    pub target: GatewayRouteTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<GrpcGatewayRouteRewrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameRewrite>,
}

impl GrpcGatewayRoute {
    /// The HTTP/2 gateway route this is on the wire: the prefix `/SERVICE/` (or every
    /// path), metadata as headers, the path left as it is.
    pub fn as_http(&self) -> HttpGatewayRoute {
        let m = &self.route_match;
        HttpGatewayRoute {
            route_match: HttpGatewayRouteMatch {
                prefix: Some(
                    m.service_name
                        .as_ref()
                        .map_or_else(|| "/".to_owned(), |s| format!("/{s}/")),
                ),
                headers: m.metadata.clone(),
                hostname: m.hostname.clone(),
                port: m.port,
                ..HttpGatewayRouteMatch::default()
            },
            action: HttpGatewayRouteAction {
                target: self.action.target.clone(),
                rewrite: Some(HttpGatewayRouteRewrite {
                    hostname: self
                        .action
                        .rewrite
                        .as_ref()
                        .and_then(|r| r.hostname.clone()),
                    path: None,
                    prefix: Some(HttpGatewayRoutePrefixRewrite {
                        default_prefix: Some("DISABLED".to_owned()),
                        value: None,
                    }),
                }),
            },
        }
    }
}
