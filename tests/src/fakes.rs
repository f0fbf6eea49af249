//! Small in-process servers the tests put around the real services: an HTTP proxy that
//! routes by a fixed pattern, a misbehaving upstream, an OTLP receiver, and an ECS task
//! metadata endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Serves `app` on 127.0.0.1, port 0, in the background; returns the address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// What the routing proxy saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub headers: HeaderMap,
}

/// An HTTP forward proxy that sends call `i` to `upstreams[pattern[i % pattern.len()]]`,
/// recording what it saw. Stands in for the sidecar in the service tests.
#[derive(Debug, Clone)]
pub struct PatternProxy {
    upstreams: Arc<Vec<String>>,
    pattern: Arc<Vec<usize>>,
    next: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    client: reqwest::Client,
}

impl PatternProxy {
    pub fn new(upstreams: Vec<String>, pattern: Vec<usize>) -> Self {
        Self {
            upstreams: Arc::new(upstreams),
            pattern: Arc::new(pattern),
            next: Arc::default(),
            seen: Arc::default(),
            client: crate::client(),
        }
    }

    pub async fn start(&self) -> SocketAddr {
        serve(Router::new().fallback(forward).with_state(self.clone())).await
    }
}

async fn forward(State(p): State<PatternProxy>, request: Request) -> Response {
    p.seen.lock().expect("lock").push(Seen {
        uri: request.uri().to_string(),
        headers: request.headers().clone(),
    });
    let i = p.next.fetch_add(1, Ordering::SeqCst);
    let upstream = &p.upstreams[p.pattern[i % p.pattern.len()]];
    let mut outbound = p.client.get(format!("{upstream}{}", request.uri().path()));
    for (name, value) in request.headers() {
        if name != "host" && name != "proxy-connection" {
            outbound = outbound.header(name, value);
        }
    }
    match outbound.send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap_or_default();
            (status, headers, body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// An upstream that answers every request with `status` and `body`.
pub async fn fixed_upstream(status: StatusCode, body: &'static str) -> SocketAddr {
    serve(Router::new().fallback(move || async move { (status, body) })).await
}

/// An ECS task metadata endpoint (v4) serving `GET /task`.
pub async fn ecs_metadata(task_arn: &'static str, zone: &'static str) -> SocketAddr {
    let body =
        serde_json::json!({ "TaskARN": task_arn, "AvailabilityZone": zone, "Family": "gopher" });
    serve(Router::new().route("/task", get(move || async move { axum::Json(body) }))).await
}

/// One exported span, flattened from OTLP.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
}

/// An OTLP/HTTP (protobuf) trace receiver at `/v1/traces`.
#[derive(Debug, Clone, Default)]
pub struct OtlpReceiver {
    pub spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl OtlpReceiver {
    pub async fn start(&self) -> SocketAddr {
        serve(
            Router::new()
                .route("/v1/traces", post(receive))
                .with_state(self.clone()),
        )
        .await
    }

    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().expect("lock").clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(r): State<OtlpReceiver>, body: Bytes) -> Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    let mut spans = r.spans.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|res| res.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}
