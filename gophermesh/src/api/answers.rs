//! The control API's answers, shared by its handlers: a change made (`{"version": N}`),
//! refused (400 with the problems) or not stored (503, to retry).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use controlplane::{Snapshot, UpdateError};
use meshmodel::Problems;
use serde_json::{Value, json};

/// 400 with every problem, each as `FILE: PATH: REASON`.
pub(super) fn refused(problems: &Problems) -> Response {
    let list: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "problems": list }))).into_response()
}

/// A change made: the mesh version it made, and the resource as it is now when given.
pub(super) fn accepted(snapshot: &Snapshot, resource: Option<Value>) -> Value {
    let mut body = json!({ "version": snapshot.version });
    if let Some(value) = resource {
        body["resource"] = value;
    }
    body
}

/// A change that was not made: 400 with the problems, or 503 when the store cannot write.
pub(super) fn not_made(e: UpdateError<Problems>) -> Response {
    match e {
        UpdateError::Refused(problems) => refused(&problems),
        UpdateError::Storage(e) => unavailable(e.outcome()),
    }
}

/// 503 with `said` as the one problem, to retry in a few seconds: the store could not
/// take the change (it failed to write, or was still busy with earlier changes).
pub(super) fn unavailable(said: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "5")],
        Json(json!({ "problems": [said] })),
    )
        .into_response()
}
