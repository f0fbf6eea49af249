//! `CreateRoute`: HTTP, HTTP/2, gRPC and TCP routes, their matches, weighted targets,
//! retry policies and timeouts.

use serde::{Deserialize, Serialize};

use super::shared::{Duration, Tag};

/// `aws appmesh create-route --cli-input-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteInput {
    pub mesh_name: String,
    pub virtual_router_name: String,
    pub route_name: String,
    pub spec: RouteSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<TcpRoute>,
}

impl RouteSpec {
    /// The router listener port the route's match names, whichever kind of route it is.
    pub fn match_port(&self) -> Option<i64> {
        self.http_route
            .as_ref()
            .or(self.http2_route.as_ref())
            .and_then(|r| r.route_match.port)
            .or(self.grpc_route.as_ref().and_then(|r| r.route_match.port))
            .or(self
                .tcp_route
                .as_ref()
                .and_then(|r| r.route_match.as_ref())
                .and_then(|m| m.port))
    }

    /// The weighted targets of whichever kind of route this is, with the JSON path to them.
    pub fn weighted_targets(&self) -> Option<(&'static str, &[WeightedTarget])> {
        if let Some(r) = &self.http_route {
            Some((
                "spec.httpRoute.action.weightedTargets",
                &r.action.weighted_targets,
            ))
        } else if let Some(r) = &self.http2_route {
            Some((
                "spec.http2Route.action.weightedTargets",
                &r.action.weighted_targets,
            ))
        } else if let Some(r) = &self.grpc_route {
            Some((
                "spec.grpcRoute.action.weightedTargets",
                &r.action.weighted_targets,
            ))
        } else {
            self.tcp_route.as_ref().map(|r| {
                (
                    "spec.tcpRoute.action.weightedTargets",
                    r.action.weighted_targets.as_slice(),
                )
            })
        }
    }

    /// Mutable access to the weighted targets, whichever kind of route this is.
    pub fn weighted_targets_mut(&mut self) -> Option<&mut Vec<WeightedTarget>> {
        if let Some(r) = &mut self.http_route {
            Some(&mut r.action.weighted_targets)
        } else if let Some(r) = &mut self.http2_route {
            Some(&mut r.action.weighted_targets)
        } else if let Some(r) = &mut self.grpc_route {
            Some(&mut r.action.weighted_targets)
        } else {
            self.tcp_route
                .as_mut()
                .map(|r| &mut r.action.weighted_targets)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(rename = "match")]
    pub route_match: HttpRouteMatch,
    pub action: HttpRouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HttpTimeout>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpRouteHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// `http` or `https`: matched on the request's `:scheme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatch>,
}

/// A query parameter a route matches: present, or equal to `match.exact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParameterMatch {
    pub name: String,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub query_match: Option<QueryMatchMethod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMatchMethod {
    pub exact: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub header_match: Option<HeaderMatchMethod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchMethod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<MatchRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRange {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteAction {
    pub weighted_targets: Vec<WeightedTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedTarget {
    pub virtual_node: String,
    pub weight: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetryPolicy {
    pub max_retries: i64,
    pub per_retry_timeout: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_retry_events: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_retry_events: Vec<String>,
    /// gRPC status names to retry on; a `grpcRoute`'s only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_retry_events: Vec<String>,
}

/// A `grpcRoute`: matched on the gRPC service and method (the request's path is
/// `/SERVICE/METHOD`) and on request metadata (headers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRoute {
    #[serde(rename = "match")]
    pub route_match: GrpcRouteMatch,
    pub action: HttpRouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HttpTimeout>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<HttpRouteHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

impl GrpcRoute {
    /// The HTTP/2 route this gRPC route is on the wire: `/SERVICE/METHOD` exactly, or the
    /// prefix `/SERVICE/`, or every path; metadata as headers.
    pub fn as_http(&self) -> HttpRoute {
        let m = &self.route_match;
        let (prefix, path) = match (&m.service_name, &m.method_name) {
            (Some(service), Some(method)) => (
                None,
                Some(HttpPathMatch {
                    exact: Some(format!("/{service}/{method}")),
                    regex: None,
                }),
            ),
            (Some(service), None) => (Some(format!("/{service}/")), None),
            _ => (Some("/".to_owned()), None),
        };
        HttpRoute {
            route_match: HttpRouteMatch {
                prefix,
                path,
                headers: m.metadata.clone(),
                port: m.port,
                ..HttpRouteMatch::default()
            },
            action: self.action.clone(),
            retry_policy: self.retry_policy.clone(),
            timeout: self.timeout.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    pub action: TcpRouteAction,
    /// The router listener port it serves (routers with one listener: that one).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route_match: Option<TcpRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TcpTimeout>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteAction {
    pub weighted_targets: Vec<WeightedTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}
