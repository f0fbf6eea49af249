//! W3C trace context and request ids, on the way in and on the way out.
//!
//! [`inbound`] is an axum middleware: it continues the caller's trace (from
//! `traceparent`) or starts one, makes sure the request has an `x-request-id`, opens a
//! server span carrying both, and echoes the request id in the response. [`inject`] writes
//! the current span's context and the request id into an outbound request's headers.
//!
//! When spans are exported (an OTLP endpoint is set), the trace context lives in the
//! OpenTelemetry spans of `tracing-opentelemetry`. When they are not, building those spans
//! would only cost time, so the context is kept in a task-local [`Local`] instead: the
//! caller's trace id is continued and logged, and outbound calls carry a `traceparent`
//! with a fresh span id, exactly as with export on, at a fraction of the cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceFlags, TraceId};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported; set once by `telemetry::init`.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Tells this module whether the OpenTelemetry layer is installed (spans exported).
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The trace context of the request being served when spans are not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

tokio::task_local! {
    static CURRENT: Local;
}

fn random_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request id header, propagated end to end and echoed in responses.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being served, put in its extensions by [`inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

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
    if exporting() {
        return span.context().span().span_context().trace_id().to_string();
    }
    CURRENT
        .try_with(|l| l.trace_id)
        .unwrap_or(TraceId::INVALID)
        .to_string()
}

/// Axum middleware: one server span per request, continuing the caller's trace.
pub async fn inbound(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Without a `traceparent` there is no trace to continue (and the propagator, behind
    // a global lock, would find none).
    let parent = if request.headers().contains_key(TRACEPARENT) {
        global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())))
    } else {
        opentelemetry::Context::current()
    };
    let request_id = accept_request_id(request.headers()).unwrap_or_else(new_request_id);
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
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));

    let mut response = if exporting() {
        // Setting a parent can only fail when the span is disabled, in which case there
        // is nothing to continue.
        let _ = span.set_parent(parent);
        span.record("trace_id", trace_id(&span));
        next.run(request).instrument(span.clone()).await
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
        CURRENT
            .scope(local, next.run(request).instrument(span.clone()))
            .await
    };
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        );
    });
    if let Ok(value) = HeaderValue::try_from(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// Writes `span`'s trace context (`traceparent`) and `request_id` into outbound headers.
/// When spans are not exported, the outbound call is a new span id in the trace of the
/// request being served.
pub fn inject(span: &Span, request_id: &str, headers: &mut HeaderMap) {
    if exporting() {
        let cx = span.context();
        global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
    } else if let Ok(local) = CURRENT.try_with(|l| *l) {
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

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
