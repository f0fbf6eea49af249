//! The control API of a running `gophermesh up`, on loopback: what `gophermesh status`,
//! `route set` and `apply` talk to.
//!
//! - `GET /v1/status`: tasks, processes, Envoys (connected, ACKed versions, last NACK),
//!   route weights, and the split Envoy actually observed.
//! - `PUT /v1/routes/{route}/weights[?router=R]` with `{"weights": {"node": w, ...}}`.
//! - `POST /v1/resources` with `{"origin": "...", "resource": <--cli-input-json>}`.
//!
//! Refused changes answer 400 with `{"problems": ["FILE: PATH: REASON", ...]}` and change
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use meshmodel::{Problems, Resource};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ads::EnvoyStatuses;
use super::store::{Snapshot, Store};
use crate::admin::EnvoyAdmin;
use crate::supervise::ProcessTable;

/// What the API reads and writes.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub envoys: EnvoyStatuses,
    pub processes: ProcessTable,
    /// Each virtual node's Envoy admin interface.
    pub admins: Arc<BTreeMap<String, EnvoyAdmin>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/routes/{route}/weights", put(set_weights))
        .route("/v1/resources", post(apply))
        .with_state(state)
}

fn refused(problems: &Problems) -> Response {
    let list: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "problems": list }))).into_response()
}

fn accepted(snapshot: &Snapshot, resource: Option<(String, Value)>) -> Response {
    let mut body = json!({ "version": snapshot.version });
    if let Some((origin, value)) = resource {
        body["origin"] = json!(origin);
        body["resource"] = value;
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct WeightsBody {
    weights: BTreeMap<String, i64>,
}

#[derive(Debug, Deserialize)]
struct RouterQuery {
    router: Option<String>,
}

async fn set_weights(
    State(s): State<ApiState>,
    Path(route): Path<String>,
    Query(q): Query<RouterQuery>,
    body: Result<Json<WeightsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"problems": ["body: expected {\"weights\": {\"NODE\": WEIGHT, ...}}"]})),
        )
            .into_response();
    };
    match s
        .store
        .set_weights(q.router.as_deref(), &route, &body.weights)
    {
        Ok(snapshot) => {
            let changed = snapshot.mesh.routes.values().find(|r| {
                r.value.route_name == route
                    && q.router
                        .as_deref()
                        .is_none_or(|x| x == r.value.virtual_router_name)
            });
            let resource =
                changed.map(|r| (r.origin.clone(), Resource::Route(r.value.clone()).to_json()));
            tracing::info!(route, weights = ?body.weights, version = snapshot.version, "route weights changed");
            accepted(&snapshot, resource)
        }
        Err(problems) => refused(&problems),
    }
}

#[derive(Debug, Deserialize)]
struct ApplyBody {
    origin: Option<String>,
    resource: Value,
}

async fn apply(
    State(s): State<ApiState>,
    body: Result<Json<ApplyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"problems": ["body: expected {\"origin\": \"FILE\", \"resource\": {...}}"]}),
            ),
        )
            .into_response();
    };
    let origin = body.origin.unwrap_or_else(|| "<apply>".to_owned());
    let resource = match Resource::from_value(&origin, body.resource) {
        Ok(r) => r,
        Err(problems) => return refused(&problems),
    };
    let described = resource.describe();
    match s.store.apply(&origin, resource) {
        Ok(snapshot) => {
            tracing::info!(resource = described, version = snapshot.version, "applied");
            accepted(&snapshot, None)
        }
        Err(problems) => refused(&problems),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    let snapshot = s.store.current();
    let mut routes = Vec::new();
    for r in snapshot.mesh.routes.values() {
        let targets: Vec<Value> = r
            .value
            .spec
            .weighted_targets()
            .map(|(_, ts)| {
                ts.iter()
                    .map(|t| json!({"virtualNode": t.virtual_node, "weight": t.weight}))
                    .collect()
            })
            .unwrap_or_default();
        routes.push(json!({
            "virtualRouter": r.value.virtual_router_name,
            "route": r.value.route_name,
            "targets": targets,
        }));
    }
    let observed = observed_split(&s, &snapshot).await;
    let placements: BTreeMap<&String, Value> = snapshot
        .placements
        .iter()
        .map(|(node, p)| {
            let admin = s.admins.get(node);
            (
                node,
                json!({
                    "ingress": p.ingress.to_string(),
                    "egress": p.egress.to_string(),
                    "app": p.app.to_string(),
                    "reach": p.reach.to_string(),
                    "admin": admin.map_or_else(|| p.admin.to_string(), |a| a.addr.to_string()),
                    "netns": admin.and_then(|a| a.netns.clone()),
                }),
            )
        })
        .collect();
    Json(json!({
        "mesh": snapshot.mesh.name(),
        "version": snapshot.version,
        "routes": routes,
        "observed": observed,
        "envoys": s.envoys.snapshot(),
        "placements": placements,
        "processes": s.processes.snapshot(),
    }))
    .into_response()
}

/// Requests completed per target virtual node, summed over every Envoy's egress
/// clusters (`cluster.cds_egress_M_N_P_PORT.upstream_rq_completed`).
async fn observed_split(s: &ApiState, snapshot: &Snapshot) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let Some(mesh) = snapshot.mesh.name() else {
        return out;
    };
    let prefix = format!("cluster.cds_egress_{mesh}_");
    for admin in s.admins.values() {
        // filter=^cluster\.cds_egress_.*\.upstream_rq_completed$, percent-encoded.
        let path = "/stats?filter=%5Ecluster%5C.cds_egress_.*%5C.upstream_rq_completed%24";
        let Ok((200, text)) = admin.get(path, Duration::from_secs(1)).await else {
            continue;
        };
        for line in text.lines() {
            let Some((name, count)) = line.split_once(": ") else {
                continue;
            };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            // Skip the per-zone and internal/external breakdowns (`NAME.external.upstream_...`).
            let Some(cluster) = rest
                .strip_suffix(".upstream_rq_completed")
                .filter(|c| !c.contains('.'))
            else {
                continue;
            };
            // cluster = NODE_PROTOCOL_PORT; the node name may contain underscores.
            let mut parts = cluster.rsplitn(3, '_');
            let (Some(_port), Some(_proto), Some(node)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            *out.entry(node.to_owned()).or_default() += count.trim().parse::<u64>().unwrap_or(0);
        }
    }
    out
}
