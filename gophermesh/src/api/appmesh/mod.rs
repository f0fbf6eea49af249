//! The App Mesh REST API (2019-01-25, as botocore's `appmesh` model defines it) for meshes,
//! virtual nodes, virtual routers, routes and virtual services, served from the same store
//! as everything else, so the AWS CLI drives the local mesh:
//! `aws appmesh create-virtual-node --endpoint-url http://127.0.0.1:9991 ...`.
//!
//! Requests are parsed by two pure functions, [`operation`] (method and path) and
//! [`input`] (the body), so they can be tested and fuzzed without a server. Errors are
//! AWS's: status, `x-amzn-ErrorType` header and `{"message": ...}` body.
//!
//! This control plane runs one mesh; creating a second one is refused with
//! `LimitExceededException`.

//!
//! ```text
//! mod.rs      the router: body limit, concurrency limit, SigV4, dispatch
//! request     method + path -> operation, body -> resource (pure, fuzzed)
//! service     each operation against the store
//! ```

pub mod request;
pub mod service;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use controlplane::Store;
use tokio::sync::Semaphore;

use super::sigv4::{self, Credentials};
pub use request::{AwsError, Operation, operation};
pub use service::serve;

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Requests handled at once; more are answered with TooManyRequestsException.
pub const MAX_IN_FLIGHT: usize = 64;

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct AppMeshState {
    pub store: Store,
    pub credentials: Option<Credentials>,
    pub limiter: Arc<Semaphore>,
}

pub fn router(state: AppMeshState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(s): State<AppMeshState>, request: Request) -> Response {
    let Ok(_permit) = s.limiter.clone().try_acquire_owned() else {
        return AwsError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            format!("more than {MAX_IN_FLIGHT} requests at once; retry with backoff"),
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return AwsError::bad_request(format!("the body is larger than {MAX_BODY} bytes"))
                .into_response();
        }
    };
    if let Some(creds) = &s.credentials {
        if let Err(refusal) = authenticate(&parts.method, &parts.uri, &parts.headers, &body, creds)
        {
            tracing::warn!(method = %parts.method, path = parts.uri.path(), kind = refusal.kind, "App Mesh API: refused an unsigned or wrongly signed request");
            return AwsError::new(StatusCode::FORBIDDEN, refusal.kind, refusal.message)
                .into_response();
        }
    }
    let result = match operation(&parts.method, parts.uri.path()) {
        Ok(op) => {
            let answer = serve(&s.store, &op, parts.uri.query().unwrap_or(""), &body);
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
        Err(e) => Err(e),
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

fn authenticate(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    creds: &Credentials,
) -> Result<(), sigv4::Refusal> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request = sigv4::SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
    };
    sigv4::verify(&request, creds, SystemTime::now())
}
