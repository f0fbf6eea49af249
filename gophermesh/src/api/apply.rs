//! `POST /v1/resources` of the control API: what `gophermesh apply` sends.
//!
//! - `{"origin": "...", "resource": <--cli-input-json>}`: one resource created or
//!   replaced.
//! - `{"resources": [{"origin": "...", "resource": {...}}, ...], "dryRun": false}`:
//!   several, of one mesh or several, as one change: they land whole or not at all. The
//!   answer says which were `created`, `updated` and `unchanged` (by description); with
//!   `"dryRun": true` nothing is changed and `created` and `updated` hold the resources
//!   as App Mesh JSON.
//!
//! An origin is a label for messages (the file the CLI read and the resource in it),
//! never a path anything writes. Refused: 400 with `{"problems": [...]}`, nothing changed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use controlplane::Store;
use controlplane::state::batch::Sorted;
use meshmodel::{Problem, Problems, Resource};
use serde::Deserialize;
use serde_json::{Value, json};

use super::answers::{accepted, not_made, refused, unavailable};

/// The longest `origin` label accepted.
const MAX_ORIGIN: usize = 512;

/// The most resources one change may hold.
pub const MAX_RESOURCES: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ApplyBody {
    origin: Option<String>,
    resource: Option<Value>,
    resources: Option<Vec<Labelled>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Labelled {
    origin: Option<String>,
    resource: Value,
}

const SHAPE: &str = "body: expected {\"origin\": \"FILE\", \"resource\": {...}} or {\"resources\": [{\"origin\": \"FILE\", \"resource\": {...}}, ...], \"dryRun\": false}";

fn bad(problem: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"problems": [problem.into()]})),
    )
        .into_response()
}

/// `origin` checked as a label (see the module doc); `None` when it is not one.
fn label(origin: Option<String>) -> Option<String> {
    let origin = origin.unwrap_or_else(|| "<apply>".to_owned());
    (origin.len() <= MAX_ORIGIN && !origin.chars().any(char::is_control)).then_some(origin)
}

/// Why an origin is not a label.
fn not_a_label() -> String {
    format!(
        "a label of at most {MAX_ORIGIN} printable characters (it names the source in messages; nothing is written to it)"
    )
}

pub(super) async fn apply(
    State(store): State<Store>,
    body: Result<Json<ApplyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return bad(SHAPE);
    };
    match (body.resource, body.resources) {
        (Some(resource), None) if !body.dry_run => one(&store, body.origin, resource).await,
        (None, Some(list)) if body.origin.is_none() => many(&store, list, body.dry_run).await,
        _ => bad(SHAPE),
    }
}

async fn one(store: &Store, origin: Option<String>, resource: Value) -> Response {
    let Some(origin) = label(origin) else {
        return bad(format!("origin: {}", not_a_label()));
    };
    let resource = match Resource::from_value(&origin, resource) {
        Ok(r) => r,
        Err(problems) => return refused(&problems),
    };
    let described = resource.describe();
    let made = store
        .writing(move |store| store.apply(&origin, resource))
        .await;
    match made {
        Err(busy) => unavailable(busy.to_string()),
        Ok(Ok(snapshot)) => {
            tracing::info!(resource = described, version = snapshot.version, "applied");
            Json(accepted(&snapshot, None)).into_response()
        }
        Ok(Err(e)) => not_made(e),
    }
}

async fn many(store: &Store, list: Vec<Labelled>, dry_run: bool) -> Response {
    if list.is_empty() || list.len() > MAX_RESOURCES {
        return bad(format!(
            "resources: 1 to {MAX_RESOURCES} resources, not {}",
            list.len()
        ));
    }
    let mut resources = Vec::with_capacity(list.len());
    let mut problems = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let Some(origin) = label(item.origin) else {
            problems.push(Problem::new(
                "<request>",
                format!("resources[{i}].origin"),
                not_a_label(),
            ));
            continue;
        };
        match Resource::from_value(&origin, item.resource) {
            Ok(r) => resources.push((origin, r)),
            Err(Problems(mut p)) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return refused(&Problems(problems));
    }
    if dry_run {
        return match store.preview_all(&resources) {
            Ok(sorted) => Json(answer(&sorted, true)).into_response(),
            Err(problems) => refused(&problems),
        };
    }
    let count = resources.len();
    let made = store
        .writing(move |store| store.apply_all(&resources))
        .await;
    match made {
        Err(busy) => unavailable(busy.to_string()),
        Ok(Ok((snapshot, sorted))) => {
            tracing::info!(
                resources = count,
                created = sorted.created.len(),
                updated = sorted.updated.len(),
                version = snapshot.version,
                "applied as one change"
            );
            let mut body = answer(&sorted, false);
            body["version"] = json!(snapshot.version);
            Json(body).into_response()
        }
        Ok(Err(e)) => not_made(e),
    }
}

/// `{"created": [...], "updated": [...], "unchanged": [...]}`: descriptions, or (in a dry
/// run) the created and updated resources as App Mesh JSON.
fn answer(sorted: &Sorted, dry_run: bool) -> Value {
    let list = |items: &[(String, Resource)], whole: bool| -> Vec<Value> {
        items
            .iter()
            .map(|(origin, r)| match whole {
                true => json!({"origin": origin, "resource": r.to_json()}),
                false => json!(r.describe()),
            })
            .collect()
    };
    json!({
        "dryRun": dry_run,
        "created": list(&sorted.created, dry_run),
        "updated": list(&sorted.updated, dry_run),
        "unchanged": list(&sorted.unchanged, false),
    })
}
