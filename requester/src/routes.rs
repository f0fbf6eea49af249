//! The requester's HTTP surface.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use common::shutdown::Health;
use common::tracecontext::{self, RequestId};
use serde_json::json;

use crate::client::{DistributorClient, UpstreamError};
use crate::compare::{self, MAX_CONCURRENCY, MAX_N};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) client: DistributorClient,
    /// Each version's picture, once fetched through the mesh.
    pub(crate) pictures: Arc<std::sync::Mutex<BTreeMap<String, axum::body::Bytes>>>,
    /// One permit per `/compare` allowed at once.
    pub(crate) compares: Arc<tokio::sync::Semaphore>,
    pub(crate) compare_deadline: std::time::Duration,
    pub(crate) compare_limit: usize,
    pub(crate) health: Health,
    pub(crate) host: Arc<str>,
}

type Params = Query<BTreeMap<String, String>>;
type AppState = axum::extract::State<State>;

/// The requester's routes, with request tracing.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(call_once))
        .route("/compare", get(compare))
        .route("/gopher/{picture}", get(gopher_picture))
        .route("/health", get(health))
        .layer(tracecontext::InboundLayer)
        .with_state(state)
}

/// A request the requester refuses, or a distributor failure; rendered as text or JSON.
#[derive(Debug)]
enum Failure {
    BadRequest { param: &'static str, reason: String },
    Busy { running: usize },
    Upstream(UpstreamError),
}

impl Failure {
    fn render(self, json: bool) -> Response {
        let (status, kind, message) = match &self {
            Failure::BadRequest { param, reason } => (
                StatusCode::BAD_REQUEST,
                "bad_request".to_owned(),
                format!("query parameter `{param}`: {reason}"),
            ),
            Failure::Busy { running } => (
                StatusCode::TOO_MANY_REQUESTS,
                "busy".to_owned(),
                format!(
                    "{running} compares are running, the most this requester runs at once (--max-compares); retry in a second"
                ),
            ),
            Failure::Upstream(e) => (
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
                e.kind(),
                e.to_string(),
            ),
        };
        let busy = matches!(self, Failure::Busy { .. });
        if json {
            let mut error = json!({ "kind": kind, "message": message });
            match &self {
                Failure::BadRequest { param, .. } => error["parameter"] = json!(param),
                Failure::Busy { .. } => {}
                Failure::Upstream(_) => error["upstream"] = json!("distributor"),
            }
            let mut response = (status, Json(json!({ "error": error }))).into_response();
            if busy {
                retry_in_a_second(&mut response);
            }
            response
        } else {
            let mut response = (status, format!("requester: {message}\n")).into_response();
            if busy {
                retry_in_a_second(&mut response);
            }
            response
        }
    }
}

fn retry_in_a_second(response: &mut Response) {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
}

/// JSON when `?format=json` or `Accept: application/json`; text otherwise.
fn wants_json(params: &BTreeMap<String, String>, headers: &HeaderMap) -> Result<bool, Failure> {
    match params.get("format").map(String::as_str) {
        Some("json") => Ok(true),
        Some("text") => Ok(false),
        Some(other) => Err(Failure::BadRequest {
            param: "format",
            reason: format!("`{other}` is not a format; use json or text"),
        }),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json"))),
    }
}

/// Refuses query parameters the endpoint does not know, so typos do not pass silently.
fn only_known(params: &BTreeMap<String, String>, known: &[&'static str]) -> Result<(), Failure> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(Failure::BadRequest {
            param: "query",
            reason: format!(
                "unknown parameter `{unknown}`; this endpoint takes {}",
                known.join(", ")
            ),
        }),
    }
}

fn bounded(
    params: &BTreeMap<String, String>,
    param: &'static str,
    default: u32,
    max: u32,
) -> Result<u32, Failure> {
    let Some(raw) = params.get(param) else {
        return Ok(default);
    };
    let out_of_range = || Failure::BadRequest {
        param,
        reason: format!("`{raw}` is out of range; give a whole number from 1 to {max}"),
    };
    match raw.parse::<u64>() {
        Ok(v) if (1..=u64::from(max)).contains(&v) => u32::try_from(v).map_err(|_| out_of_range()),
        _ => Err(out_of_range()),
    }
}

/// The page a browser gets at `/`: it calls `/?format=json` again and again and shows
/// each answer's gopher, with a running tally per version.
const PAGE: &str = include_str!("page.html");

/// Whether a request is a browser asking for a page (and nothing more specific).
fn wants_page(params: &BTreeMap<String, String>, headers: &HeaderMap) -> bool {
    params.is_empty()
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// How many calls `/gopher/VERSION.svg` makes to find that version's picture.
const PICTURE_TRIES: usize = 60;

/// `GET /gopher/VERSION.svg`: the picture of the distributor VERSION, fetched through the
/// mesh (the route decides who answers, so it asks until that version does) and kept.
async fn gopher_picture(
    axum::extract::State(s): AppState,
    axum::extract::Path(picture): axum::extract::Path<String>,
) -> Response {
    let Some(version) = picture.strip_suffix(".svg") else {
        return (
            StatusCode::NOT_FOUND,
            "requester: pictures are /gopher/VERSION.svg\n",
        )
            .into_response();
    };
    let svg = |bytes: axum::body::Bytes| {
        (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            bytes,
        )
            .into_response()
    };
    let cached = s
        .pictures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(version)
        .cloned();
    if let Some(bytes) = cached {
        return svg(bytes);
    }
    for _ in 0..PICTURE_TRIES {
        match s.client.picture().await {
            Ok((answered, bytes)) => {
                s.pictures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(answered.clone(), bytes.clone());
                if answered == version {
                    return svg(bytes);
                }
            }
            Err(e) => return Failure::Upstream(e).render(false),
        }
    }
    (
        StatusCode::NOT_FOUND,
        format!("requester: no {version} distributor answered in {PICTURE_TRIES} calls\n"),
    )
        .into_response()
}

async fn call_once(
    axum::extract::State(s): AppState,
    RequestId(request_id): RequestId,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if wants_page(&params, &headers) {
        return (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            PAGE,
        )
            .into_response();
    }
    let json = match wants_json(&params, &headers).and_then(|json| {
        only_known(&params, &["format"])?;
        Ok(json)
    }) {
        Ok(json) => json,
        Err(f) => return f.render(false),
    };
    let asking = headers.get(common::wire::X_GOPHER_VERSION);
    let answer = match s.client.call_asking(&request_id, asking).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(kind = %e.kind(), "{e}");
            return Failure::Upstream(e).render(json);
        }
    };
    let latency_ms = (answer.latency.as_secs_f64() * 1e5).round() / 100.0;
    tracing::info!(version = %answer.version, latency_ms, "distributor answered");
    if json {
        let trace_id = tracecontext::trace_id(&tracing::Span::current());
        return Json(json!({
            "requester": {
                "service": "requester",
                "host": &*s.host,
                "request_id": request_id,
                "trace_id": trace_id,
            },
            "distributor": answer.body,
            "latency_ms": latency_ms,
        }))
        .into_response();
    }
    let d = &answer.parsed;
    let mut line = format!(
        "distributor {} answered: {} the {} gopher, from host {} in {latency_ms:.2} ms",
        d.version, d.gopher.name, d.gopher.color, d.host
    );
    if let Some(greeting) = &d.greeting {
        line.push_str(&format!(": \"{greeting}\""));
    }
    line.push('\n');
    line.into_response()
}

async fn compare(
    axum::extract::State(s): AppState,
    RequestId(request_id): RequestId,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let parsed = wants_json(&params, &headers).and_then(|json| {
        only_known(&params, &["n", "concurrency", "format"])?;
        let n = bounded(&params, "n", 100, MAX_N)?;
        let concurrency = bounded(&params, "concurrency", 10, MAX_CONCURRENCY)?;
        Ok((json, n, concurrency))
    });
    let (json, n, concurrency) = match parsed {
        Ok(p) => p,
        Err(f) => {
            let json = params.get("format").is_some_and(|f| f == "json");
            return f.render(json);
        }
    };
    let Ok(_permit) = s.compares.clone().try_acquire_owned() else {
        let running = s.compare_limit;
        tracing::warn!(running, "compare refused: too many at once");
        return Failure::Busy { running }.render(json);
    };
    let asking = headers.get(common::wire::X_GOPHER_VERSION);
    let report = compare::run(
        &s.client,
        &request_id,
        n,
        concurrency,
        s.compare_deadline,
        asking,
    )
    .await;
    tracing::info!(n, concurrency, ok = report.ok, versions = ?report.versions.keys().collect::<Vec<_>>(), "compare finished");
    if json {
        Json(report).into_response()
    } else {
        report.to_text().into_response()
    }
}

async fn health(axum::extract::State(s): AppState) -> Response {
    s.health.response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn bounds_are_enforced_with_the_range_in_the_message() {
        let p = params(&[("n", "0")]);
        let Err(Failure::BadRequest { param, reason }) = bounded(&p, "n", 100, MAX_N) else {
            panic!("n=0 must be refused");
        };
        assert_eq!(param, "n");
        assert!(reason.contains("from 1 to 10000"), "{reason}");
        assert!(bounded(&params(&[("n", "10001")]), "n", 1, MAX_N).is_err());
        assert!(bounded(&params(&[("n", "-3")]), "n", 1, MAX_N).is_err());
        assert!(bounded(&params(&[("n", "ten")]), "n", 1, MAX_N).is_err());
        assert!(matches!(
            bounded(&params(&[("n", "10000")]), "n", 1, MAX_N),
            Ok(10_000)
        ));
        assert!(matches!(bounded(&params(&[]), "n", 7, MAX_N), Ok(7)));
    }

    #[test]
    fn format_comes_from_the_query_then_accept() {
        let mut headers = HeaderMap::new();
        assert!(matches!(wants_json(&params(&[]), &headers), Ok(false)));
        headers.insert(header::ACCEPT, "application/json".parse().expect("header"));
        assert!(matches!(wants_json(&params(&[]), &headers), Ok(true)));
        assert!(matches!(
            wants_json(&params(&[("format", "text")]), &headers),
            Ok(false)
        ));
        assert!(wants_json(&params(&[("format", "xml")]), &headers).is_err());
    }
}
