//! W3C trace context and request ids, on the way in and on the way out.
//!
//! [`InboundLayer`] is a tower layer for axum routers: it continues the caller's trace (from
//! `traceparent`) or starts one, makes sure the request has an `x-request-id`, opens a
//! server span carrying both, and echoes the request id in the response. [`inject`] writes
//! the current span's context and the request id into an outbound request's headers.
//!
//! When spans are exported (an OTLP endpoint is set), the trace context lives in the
//! OpenTelemetry spans of `tracing-opentelemetry`. When they are not, building those spans
//! would only cost time, so the context is kept in a task-local [`Local`] instead: the
//! caller's trace id is continued and logged, and outbound calls carry a `traceparent`
//! with a fresh span id, exactly as with export on, at a fraction of the cost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceFlags, TraceId};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported; set once by `telemetry::init`.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Tells this module whether the OpenTelemetry layer is installed (spans exported).
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans leave the process (an OTLP endpoint is set). Without, a span that no log
/// line shows need not be built at all.
pub fn spans_exported() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The trace context of the request being served when spans are not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

/// What [`Inbound`] keeps for the request being served.
#[derive(Debug, Clone)]
pub struct Served {
    request_id: Arc<str>,
    /// The trace context, when spans are not exported (they carry it otherwise).
    local: Option<Local>,
}

tokio::task_local! {
    static CURRENT: Served;
}

fn random_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request id header, propagated end to end and echoed in responses.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being served: an extractor for handlers behind
/// [`InboundLayer`] (which refuses, with a 500 naming the cause, elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        CURRENT
            .try_with(|served| Self(served.request_id.to_string()))
            .map_err(|_| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no request id: this route is not behind tracecontext::InboundLayer",
                )
            })
    }
}

/// A fresh request id: 32 random hex digits.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

/// Keeps a caller's request id when it is reasonable (1-128 visible ASCII characters).
fn accept_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(X_REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The trace id of `span` (or, when spans are not exported, of the request being served)
/// as 32 hex digits; all zeros when there is none.
pub fn trace_id(span: &Span) -> String {
    if spans_exported() {
        return span.context().span().span_context().trace_id().to_string();
    }
    CURRENT
        .try_with(|served| served.local.map(|l| l.trace_id))
        .ok()
        .flatten()
        .unwrap_or(TraceId::INVALID)
        .to_string()
}

/// The tower layer that puts [`Inbound`] around every route: `router.layer(InboundLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InboundLayer;

impl<S> Layer<S> for InboundLayer {
    type Service = Inbound<S>;

    fn layer(&self, inner: S) -> Inbound<S> {
        Inbound { inner }
    }
}

/// One server span per request, continuing the caller's trace; the request id is kept or
/// made, readable by handlers as [`RequestId`], and echoed in the response.
///
/// A hand-written service rather than `axum::middleware::from_fn`: it calls the route it
/// wraps directly (no clone of the route and no boxed future per request), which is most
/// of what serving a small answer costs in user space.
#[derive(Debug, Clone)]
pub struct Inbound<S> {
    inner: S,
}

impl<S> Service<Request> for Inbound<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = InboundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        // Without a `traceparent` there is no trace to continue (and the propagator, behind
        // a global lock, would find none).
        let parent = if request.headers().contains_key(TRACEPARENT) {
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())))
        } else {
            opentelemetry::Context::current()
        };
        let request_id: Arc<str> = match accept_request_id(request.headers()) {
            Some(id) => id.into(),
            None => new_request_id().into(),
        };
        let span = tracing::info_span!(
            "request",
            otel.name = %format!("{} {}", request.method(), request.uri().path()),
            otel.kind = "server",
            http.request.method = %request.method(),
            url.path = %request.uri().path(),
            http.response.status_code = Empty,
            trace_id = Empty,
            request_id = %request_id,
        );
        let local = if spans_exported() {
            // Setting a parent can only fail when the span is disabled, in which case there
            // is nothing to continue.
            let _ = span.set_parent(parent);
            span.record("trace_id", trace_id(&span));
            None
        } else {
            let remote = parent.span().span_context().clone();
            let local = if remote.is_valid() {
                Local {
                    trace_id: remote.trace_id(),
                    span_id: random_span_id(),
                    flags: remote.trace_flags(),
                }
            } else {
                Local {
                    trace_id: TraceId::from(fastrand::u128(1..)),
                    span_id: random_span_id(),
                    flags: TraceFlags::SAMPLED,
                }
            };
            if !span.is_disabled() {
                span.record("trace_id", local.trace_id.to_string());
            }
            Some(local)
        };
        let served = Served {
            request_id: request_id.clone(),
            local,
        };
        InboundFuture {
            inner: CURRENT.scope(served, self.inner.call(request).instrument(span.clone())),
            span,
            started,
            request_id,
        }
    }
}

pin_project_lite::pin_project! {
    /// What [`Inbound`] returns: the route's answer, with the request id and the log line.
    pub struct InboundFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Served, Instrumented<F>>,
        span: Span,
        started: Instant,
        request_id: Arc<str>,
    }
}

impl<F, E> Future for InboundFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        this.span.record("http.response.status_code", status);
        this.span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = this.started.elapsed().as_secs_f64() * 1e3,
                "served"
            );
        });
        if let Ok(value) = HeaderValue::from_str(this.request_id) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// Writes `span`'s trace context (`traceparent`) and `request_id` into outbound headers.
/// When spans are not exported, the outbound call is a new span id in the trace of the
/// request being served.
pub fn inject(span: &Span, request_id: &str, headers: &mut HeaderMap) {
    if spans_exported() {
        let cx = span.context();
        global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
    } else if let Some(local) = CURRENT.try_with(|served| served.local).ok().flatten() {
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            local.trace_id,
            random_span_id(),
            local.flags.to_u8()
        );
        if let Ok(value) = HeaderValue::try_from(traceparent) {
            headers.insert(TRACEPARENT, value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(request_id) {
        headers.insert(X_REQUEST_ID, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = HeaderMap::new();
        assert_eq!(accept_request_id(&h), None);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(accept_request_id(&h).as_deref(), Some("abc-123"));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(accept_request_id(&h), None);
        let long = "a".repeat(129);
        h.insert(
            X_REQUEST_ID,
            HeaderValue::try_from(long).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(accept_request_id(&h), None);
    }

    async fn answer_of(
        app: axum::Router,
        id: Option<&'static str>,
    ) -> (StatusCode, String, String) {
        use tower::ServiceExt as _;
        let mut request = http::Request::get("/").body(axum::body::Body::empty());
        if let (Ok(request), Some(id)) = (&mut request, id) {
            request
                .headers_mut()
                .insert(X_REQUEST_ID, HeaderValue::from_static(id));
        }
        let Ok(response) = app.oneshot(request.expect("a request")).await;
        let status = response.status();
        let echoed = response
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 10)
            .await
            .unwrap_or_default();
        (status, echoed, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn handlers_read_the_request_id_that_is_echoed() {
        let handler = |RequestId(id): RequestId| async move { id };
        let app = axum::Router::new()
            .route("/", axum::routing::get(handler))
            .layer(InboundLayer);
        let (status, echoed, body) = answer_of(app.clone(), Some("abc-123")).await;
        assert_eq!(
            (status, echoed.as_str(), body.as_str()),
            (StatusCode::OK, "abc-123", "abc-123")
        );
        let (_, echoed, body) = answer_of(app, None).await;
        assert_eq!((echoed.len(), &echoed), (32, &body));

        let bare = axum::Router::new().route("/", axum::routing::get(handler));
        let (status, echoed, body) = answer_of(bare, Some("abc-123")).await;
        assert_eq!(
            (status, echoed.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "")
        );
        assert!(body.contains("InboundLayer"), "{body}");
    }

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
