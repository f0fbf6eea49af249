//! The control API's rollouts ([`controlplane::state::rollout`]):
//!
//! - `GET /v1/rollouts[?mesh=M]`: every rollout with its phase, step, weight, checks and
//!   events (finished ones too, until the next on their route).
//! - `POST /v1/rollouts` with `{"route", "to", "mesh"?, "router"?, "steps"?, "interval"?,
//!   "minSuccess"?, "maxP99"?, "minRequests"?, "maxFailedChecks"?, "header"?}`: starts one,
//!   its first step set on the route in the same change (201); with `"header":
//!   "NAME=VALUE"`, its first stage is A/B (a route `ROUTE-ab` for the requests with it). Left out, each is as Flagger's App
//!   Mesh tutorial set it ([`Plan::default`]).
//! - `POST /v1/rollouts/{route}/{pause|resume|abort}[?mesh=M][&router=R]`.
//!
//! A bad value answers 400 naming the CLI flag it came from (`--steps: ...`), an unknown
//! mesh, route or rollout 404, a second rollout of a route (or an action on one that is
//! over) 409; nothing is changed by any of them.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use controlplane::state::rollout::{Plan, Rollout};
use controlplane::state::rollouts::{Action, RolloutError, RouteRef};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::progress::escape;

use super::answers::unavailable;
use controlplane::Store;

/// Milliseconds since the Unix epoch: the rollouts' clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A rollout as the API shows it: its stored form, with its mesh and current weight.
fn shown(mesh: &str, r: &Rollout) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["mesh"] = json!(mesh);
    v["weight"] = json!(r.weight());
    v
}

fn problem(status: StatusCode, said: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "problems": [said.to_string()] }))).into_response()
}

fn failed(e: RolloutError) -> Response {
    match e {
        RolloutError::Refused(r) => problem(StatusCode::BAD_REQUEST, r),
        RolloutError::NotFound(m) => problem(StatusCode::NOT_FOUND, m),
        RolloutError::Conflict(m) => problem(StatusCode::CONFLICT, m),
        RolloutError::Mesh(p) => super::answers::refused(&p),
        RolloutError::Storage(m) => unavailable(m),
        RolloutError::Unchanged => problem(StatusCode::CONFLICT, "nothing to change"),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct MeshQuery {
    mesh: Option<String>,
    router: Option<String>,
}

/// `GET /v1/rollouts`.
pub(super) async fn list(State(store): State<Store>, Query(q): Query<MeshQuery>) -> Response {
    let snapshot = store.current();
    let all: Vec<Value> = snapshot
        .meshes
        .iter()
        .filter(|(name, _)| q.mesh.as_deref().is_none_or(|m| m == *name))
        .flat_map(|(name, state)| state.rollouts.values().map(move |r| shown(name, r)))
        .collect();
    Json(json!({ "rollouts": all })).into_response()
}

/// The body of `POST /v1/rollouts`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct StartBody {
    route: String,
    to: String,
    mesh: Option<String>,
    router: Option<String>,
    steps: Option<Vec<i64>>,
    interval: Option<String>,
    min_success: Option<f64>,
    max_p99: Option<String>,
    min_requests: Option<u64>,
    max_failed_checks: Option<u32>,
    /// `NAME=VALUE`: an A/B stage first.
    header: Option<String>,
}

/// `text` as milliseconds, or why not, naming `flag`.
fn millis(flag: &str, text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .map_err(|e| format!("{flag}: `{text}` is not a duration such as 1m or 500ms: {e}"))
}

impl StartBody {
    fn plan(&self) -> Result<Plan, String> {
        let mut plan = Plan::default();
        if let Some(steps) = &self.steps {
            plan.steps = steps.clone();
        }
        if let Some(i) = &self.interval {
            plan.interval_ms = millis("--interval", i)?;
        }
        if let Some(m) = self.min_success {
            plan.min_success_pct = m;
        }
        if let Some(p) = &self.max_p99 {
            plan.max_p99_ms = millis("--max-p99", p)? as f64;
        }
        if let Some(n) = self.min_requests {
            plan.min_requests = n;
        }
        if let Some(n) = self.max_failed_checks {
            plan.max_failed_checks = n;
        }
        Ok(plan)
    }
}

/// `POST /v1/rollouts`.
pub(super) async fn start(
    State(store): State<Store>,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("body: {}", e.body_text())),
    };
    let plan = match body.plan() {
        Ok(plan) => plan,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    let made = store
        .writing(move |store| {
            let route = RouteRef {
                mesh: body.mesh.as_deref(),
                router: body.router.as_deref(),
                route: &body.route,
            };
            store.start_rollout(route, &body.to, (&plan, body.header.as_deref()), now_ms())
        })
        .await;
    match made {
        Ok(Ok((mesh, rollout))) => (
            StatusCode::CREATED,
            Json(json!({ "rollout": shown(&mesh, &rollout), "version": store.current().version })),
        )
            .into_response(),
        Ok(Err(e)) => failed(e),
        Err(busy) => unavailable(busy.to_string()),
    }
}

/// `POST /v1/rollouts/{route}/{action}`.
pub(super) async fn act(
    State(store): State<Store>,
    Path((route, action)): Path<(String, String)>,
    Query(q): Query<MeshQuery>,
) -> Response {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "abort" => Action::Abort,
        other => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("`{other}`: a rollout can be paused, resumed or aborted"),
            );
        }
    };
    let made = store
        .writing(move |store| {
            let at = RouteRef {
                mesh: q.mesh.as_deref(),
                router: q.router.as_deref(),
                route: &route,
            };
            store.act_on_rollout(at, action, now_ms())
        })
        .await;
    match made {
        Ok(Ok((mesh, rollout))) => Json(json!({
            "rollout": shown(&mesh, &rollout),
            "version": store.current().version
        }))
        .into_response(),
        Ok(Err(e)) => failed(e),
        Err(busy) => unavailable(busy.to_string()),
    }
}

/// A rollout's steps as `5,10,...`.
pub fn steps_text(r: &Value) -> String {
    let steps: Vec<String> = r["plan"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    steps.join(",")
}

/// A rollout as `gophermesh rollout status` prints it: where it is, then its last
/// `events` events, one per line (names escaped).
pub fn describe(r: &Value, events: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let text = |v: &Value| escape(v.as_str().unwrap_or_default());
    let phase = text(&r["phase"]);
    let why = r["reason"]
        .as_str()
        .map(|w| format!(" ({})", escape(w)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "mesh {} route {}/{} -> {}: {phase}{why} {} (steps {}), failed checks {}/{}, {} requests checked ({} 5xx)",
        text(&r["mesh"]),
        text(&r["router"]),
        text(&r["route"]),
        text(&r["target"]),
        match r["ab"].is_object() {
            true => "in its A/B stage".to_owned(),
            false => format!("at {}%", r["weight"]),
        },
        steps_text(r),
        r["failedChecks"],
        r["plan"]["maxFailedChecks"],
        r["requests"],
        r["failedRequests"],
    );
    if let Some(ab) = r["ab"].as_object() {
        let _ = writeln!(
            out,
            "  A/B stage: requests with {}: {} by route {} (the weights start once it passes)",
            escape(ab["header"].as_str().unwrap_or_default()),
            escape(ab["value"].as_str().unwrap_or_default()),
            escape(ab["route"].as_str().unwrap_or_default()),
        );
    }
    if let Some(lease) = r["lease"].as_object() {
        let _ = writeln!(
            out,
            "  driven by {}",
            escape(lease["holder"].as_str().unwrap_or_default())
        );
    }
    let all = r["events"].as_array().cloned().unwrap_or_default();
    for e in all.iter().skip(all.len().saturating_sub(events)) {
        let at = e["atMs"].as_u64().unwrap_or(0);
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
        );
        let _ = writeln!(
            out,
            "  {when}  {:<15} {}",
            text(&e["kind"]),
            text(&e["message"])
        );
    }
    out
}
