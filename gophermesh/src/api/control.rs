//! The control API of a running `gophermesh up`, on loopback: what `gophermesh status`,
//! `route set` and `apply` talk to.
//!
//! - `GET /v1/status`: tasks, processes, Envoys (connected, ACKed versions, last NACK),
//!   route weights, and the split Envoy actually observed.
//! - `PUT /v1/routes/{route}/weights[?router=R][&mesh=M][&wait=DURATION]` with
//!   `{"weights": {"node": w, ...}}`; `mesh` may be left out while one mesh is held. With
//!   `wait` (at most 60s), the answer waits until every connected Envoy has ACKed the
//!   change, one refused it, or the time is up, and says which (`reached`: `"all"`,
//!   `{"refused": [...]}` or `{"waiting": [...]}`); the change is stored either way.
//! - `POST /v1/resources`: one resource, or several as one change, or a dry run of them
//!   ([`super::apply`]).
//! - `GET /v1/rollouts`, `POST /v1/rollouts`, `POST /v1/rollouts/{route}/{action}`:
//!   rollouts ([`super::rollouts`]).
//! - `GET /metrics`: per caller and target with the App Mesh metric extension's names, and
//!   each rollout's weight, phase and checks.
//!
//! Behind [`super::guard`]: reads are open, changes need the control token.
//!
//! Refused changes answer 400 with `{"problems": ["FILE: PATH: REASON", ...]}` and change
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use meshmodel::Resource;
use serde::Deserialize;
use serde_json::json;

use super::answers::{accepted, not_made, unavailable};
use super::console;
use super::guard::{self, Guard};
use super::live::{self, Live};
use controlplane::Store;
use controlplane::xds::ads::EnvoyStatuses;

use super::status::{MeshRoutes, Reached, RouteWeights, Status, StoreStatus};
use super::tasks::Tasks;

/// What the control API reads and writes.
#[derive(Debug, Clone)]
pub struct ControlState {
    pub store: Store,
    pub envoys: EnvoyStatuses,
    /// The TLS secrets served over SDS (ACM material), for status.
    pub secrets: controlplane::secrets::Secrets,
    pub tasks: Arc<dyn Tasks>,
    /// The console's live view.
    pub live: Live,
    /// The DogStatsD receiver's figures, when one runs.
    pub statsd: Option<crate::metrics::statsd::Statsd>,
}

impl axum::extract::FromRef<ControlState> for Store {
    fn from_ref(state: &ControlState) -> Self {
        state.store.clone()
    }
}

impl axum::extract::FromRef<ControlState> for Live {
    fn from_ref(state: &ControlState) -> Self {
        state.live.clone()
    }
}

/// The API behind `guard` (Host, body, token for changes, concurrency).
pub fn router(state: ControlState, guard: Guard) -> Router {
    Router::new()
        .route("/", get(console::page))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .route("/v1/live", get(live::frame_now))
        .route("/v1/live/stream", get(live::stream))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/routes/{route}/weights", put(set_weights))
        .route(
            "/v1/rollouts",
            get(super::rollouts::list).post(super::rollouts::start),
        )
        .route("/v1/rollouts/{route}/{action}", post(super::rollouts::act))
        .route("/v1/resources", post(super::apply::apply))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
}

/// `GET /metrics`: per caller and target, with the App Mesh metric extension's names
/// (Prometheus text format 0.0.4, or OpenMetrics when `Accept` asks for it): from the
/// Envoys running here, and from DogStatsD.
async fn metrics(State(state): State<ControlState>, headers: axum::http::HeaderMap) -> Response {
    use crate::metrics::{Format, families, render};
    let format = Format::of(
        headers
            .get(axum::http::header::ACCEPT)
            .and_then(|a| a.to_str().ok()),
    );
    let (edges, own) = super::tasks::all_edges(&*state.tasks, state.statsd.as_ref()).await;
    let mut all = families(&edges);
    all.extend(own);
    all.extend(crate::metrics::rollout_families(&state.store.current()));
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        render(&all, format),
    )
        .into_response()
}

/// How the guard's refusals look from this API: `{"problems": [...]}` like any refusal.
pub fn render_refusal(r: &guard::Refusal) -> Response {
    (r.status, Json(json!({ "problems": [r.message] }))).into_response()
}

#[derive(Debug, Deserialize)]
struct WeightsBody {
    weights: BTreeMap<String, i64>,
}

#[derive(Debug, Deserialize)]
struct RouterQuery {
    router: Option<String>,
    /// The mesh of the route (the only one when absent; refused when there are several).
    mesh: Option<String>,
    /// How long to wait for the Envoys' ACKs (`10s`, `500ms`), if at all.
    wait: Option<String>,
}

/// The longest `wait` a change may ask for.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `wait` as a duration of at most [`MAX_WAIT`], or the problem with it.
fn wait_of(q: &RouterQuery) -> Result<Option<std::time::Duration>, String> {
    let Some(text) = q.wait.as_deref() else {
        return Ok(None);
    };
    match humantime::parse_duration(text) {
        Ok(d) if d <= MAX_WAIT => Ok(Some(d)),
        Ok(_) => Err(format!("wait: `{text}` is longer than {MAX_WAIT:?}")),
        Err(e) => Err(format!(
            "wait: `{text}` is not a duration such as 10s or 500ms: {e}"
        )),
    }
}

/// Until mesh version `version` has reached every connected Envoy, one refused it, or
/// `wait` is up: how far it got.
async fn until_reached(envoys: &EnvoyStatuses, version: u64, wait: std::time::Duration) -> Reached {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let reached = Reached::of(&envoys.snapshot(), version);
        if !matches!(reached, Reached::Waiting(_)) || tokio::time::Instant::now() >= deadline {
            return reached;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn set_weights(
    State(s): State<ControlState>,
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
    let wait = match wait_of(&q) {
        Ok(wait) => wait,
        Err(problem) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "problems": [problem] })),
            )
                .into_response();
        }
    };
    let (mesh, router, name, weights) = (
        q.mesh.clone(),
        q.router.clone(),
        route.clone(),
        body.weights.clone(),
    );
    let made = s
        .store
        .writing(move |store| {
            store.set_weights(mesh.as_deref(), router.as_deref(), &name, &weights)
        })
        .await;
    let made = match made {
        Ok(made) => made,
        Err(busy) => return unavailable(busy.to_string()),
    };
    match made {
        Ok(snapshot) => {
            let Ok((_, changed_mesh)) = snapshot.pick(q.mesh.as_deref()) else {
                return Json(accepted(&snapshot, None)).into_response();
            };
            let changed = changed_mesh.mesh.routes.values().find(|r| {
                r.value.route_name == route
                    && q.router
                        .as_deref()
                        .is_none_or(|x| x == r.value.virtual_router_name)
            });
            let resource = changed.map(|r| Resource::Route((*r.value).clone()).to_json());
            tracing::info!(route, mesh = ?q.mesh, weights = ?body.weights, version = snapshot.version, "route weights changed");
            let mut answer = accepted(&snapshot, resource);
            if let Some(wait) = wait {
                let reached = until_reached(&s.envoys, snapshot.version, wait).await;
                answer["reached"] = reached.to_json();
            }
            Json(answer).into_response()
        }
        Err(e) => not_made(e),
    }
}

async fn status(State(s): State<ControlState>) -> Response {
    let snapshot = s.store.current();
    let tasks = s.tasks.status().await;
    Json(Status {
        version: snapshot.version,
        store: StoreStatus::of(s.store.health()),
        meshes: snapshot
            .meshes
            .iter()
            .map(|(name, m)| MeshRoutes {
                name: name.clone(),
                routes: RouteWeights::of_mesh(&m.mesh),
            })
            .collect(),
        observed: tasks.observed,
        envoys: s.envoys.snapshot(),
        certificates: s.secrets.status(),
        placements: tasks.placements,
        processes: tasks.processes,
    })
    .into_response()
}
