//! The App Mesh REST API (2019-01-25, as botocore's `appmesh` model defines it) for meshes,
//! virtual nodes, virtual routers, routes and virtual services, served from the same store
//! as everything else, so the AWS CLI drives the local mesh:
//! `aws appmesh create-virtual-node --endpoint-url http://127.0.0.1:9991 ...`.
//!
//! Requests are parsed by two pure functions, [`operation`] (method and path) and
//! [`input`] (the body), so they can be tested and fuzzed without a server. Errors are
//! AWS's: status, `x-amzn-ErrorType` header and `{"message": ...}` body.
//!
//! Several meshes: every mesh is held alike (the store's map of meshes, by name), and
//! served to the Envoys whose node ids name it.

//!
//! ```text
//! mod.rs      the router behind the guard (../guard: Host, body, SigV4, concurrency)
//! request     method + path -> operation, body -> resource (pure, fuzzed)
//! service     each operation against the store
//! ```

pub mod request;
pub mod service;
pub mod tags;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use controlplane::Store;

use super::guard::{self, Guard};
pub use request::{AwsError, Operation, operation};
pub use service::serve;

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct AppMeshState {
    pub store: Store,
}

/// The API behind `guard` (Host, body, SigV4 when the guard has credentials, concurrency).
pub fn router(state: AppMeshState, guard: Guard) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
}

/// How the guard's refusals look from this API: AWS errors.
pub fn render_refusal(r: &guard::Refusal) -> Response {
    AwsError::new(r.status, r.kind, r.message.clone()).into_response()
}

async fn handle(State(s): State<AppMeshState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The guard has read the body already (within its limit), so this cannot fail.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    // Reads answer from the current snapshot at once; a write waits for the store, on the
    // blocking pool, so that a slow store delays only writes.
    let result = match parts.method {
        axum::http::Method::GET => answer(&s.store, &parts.method, &parts.uri, &body),
        _ => s
            .store
            .writing(move |store| answer(store, &parts.method, &parts.uri, &body))
            .await
            .unwrap_or_else(|busy| Err(AwsError::unavailable(busy))),
    };
    match result {
        Ok(value) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The App Mesh operation a call of `method` on `path` is served as (`CreateVirtualNode`,
/// `TagResource`, ...), decided as a call is: `None` when the API serves no operation
/// there. The book's API coverage table is made from it.
pub fn operation_name(method: &axum::http::Method, path: &str) -> Option<String> {
    tags::operation_name(method, path)
        .map(str::to_owned)
        .or_else(|| operation(method, path).ok().map(|op| op.name()))
}

/// The answer to one call (`uri` and `body` already read and within the guard's limits).
fn answer(
    store: &Store,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    body: &[u8],
) -> Result<serde_json::Value, AwsError> {
    let query = uri.query().unwrap_or("");
    let tagging = tags::serve(store, method, uri.path(), query, body);
    match (tagging, operation(method, uri.path())) {
        (Some(answer), _) => {
            if let Err(e) = &answer {
                tracing::info!(
                    kind = e.kind,
                    message = e.message,
                    "App Mesh tagging call refused"
                );
            }
            answer
        }
        (None, Ok(op)) => {
            let answer = serve(store, &op, query, body);
            match &answer {
                Ok(_) => {
                    tracing::info!(operation = op.name(), name = ?op.name, "App Mesh API call")
                }
                Err(e) => tracing::info!(
                    operation = op.name(),
                    kind = e.kind,
                    message = e.message,
                    "App Mesh API call refused"
                ),
            }
            answer
        }
        (None, Err(e)) => Err(e),
    }
}
