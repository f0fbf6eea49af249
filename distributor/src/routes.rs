//! The distributor's HTTP surface.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use common::grpc;
use common::shutdown::Health;
use common::wire::{Gopher, TaskInfo, Version, X_GOPHER_VERSION};
use serde_json::json;

use crate::Config;
use crate::gophers;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct State {
    version: Version,
    svg: Arc<str>,
    latency: Duration,
    error_rate: f64,
    health: Health,
    /// Filled in by the background metadata fetch, if it succeeds.
    pub(crate) task: Arc<OnceLock<TaskInfo>>,
    /// The answer's JSON up to (not including) its closing brace, without the fields that
    /// change per request (`served_at`, `task`): made once, so a request costs one string.
    head: Arc<str>,
}

/// The answer's fixed fields, serialized once.
#[derive(serde::Serialize)]
struct Fixed<'a> {
    service: &'static str,
    version: Version,
    gopher: Gopher,
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    greeting: Option<&'static str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    features: &'static [&'static str],
}

fn answer_head(version: Version, host: &str) -> String {
    let id = gophers::identity(version);
    let fixed = Fixed {
        service: "distributor",
        version,
        gopher: Gopher {
            name: id.name.to_owned(),
            color: id.color.to_owned(),
            image: "/gopher.svg".to_owned(),
        },
        host,
        greeting: id.greeting,
        features: id.features,
    };
    let mut json = serde_json::to_string(&fixed).unwrap_or_else(|_| "{".to_owned());
    json.pop();
    json
}

impl State {
    /// State for `config`, reporting shutdown through `health`.
    pub fn new(config: &Config, health: Health) -> Self {
        let version = config.version();
        let host = common::hostname();
        Self {
            version,
            head: answer_head(version, &host).into(),
            svg: gophers::svg(version).into(),
            latency: Duration::from_millis(config.latency_ms),
            error_rate: config.error_rate,
            health,
            task: Arc::default(),
        }
    }
}

/// The distributor's routes, with request tracing.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(answer))
        .route(grpc::ANSWER_PATH, post(grpc_answer))
        .route("/gopher.svg", get(picture))
        .route("/health", get(health))
        .layer(common::tracecontext::InboundLayer)
        .with_state(state)
}

fn version_header(version: Version) -> [(&'static str, HeaderValue); 1] {
    [(X_GOPHER_VERSION, HeaderValue::from_static(version.as_str()))]
}

/// Holds the answer for `--latency-ms`; then whether to fail it (`--error-rate`).
async fn delay_or_fail(s: &State) -> bool {
    if !s.latency.is_zero() {
        tracing::info!(
            latency_ms = s.latency.as_millis(),
            "holding the answer (--latency-ms)"
        );
        tokio::time::sleep(s.latency).await;
    }
    let fail = s.error_rate > 0.0 && fastrand::f64() < s.error_rate;
    if fail {
        tracing::info!(error_rate = s.error_rate, "injecting a failure");
    }
    fail
}

async fn answer(axum::extract::State(s): axum::extract::State<State>) -> Response {
    if delay_or_fail(&s).await {
        let body = Json(json!({
            "error": "injected failure",
            "reason": format!("--error-rate {} is set on this distributor", s.error_rate),
            "version": s.version,
        }));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            version_header(s.version),
            body,
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        version_header(s.version),
        answer_json(&s),
    )
        .into_response()
}

/// `gophers.Gopher/Answer`, served by tonic: the same answer as `GET /`, in the reply's
/// `json` (with `x-gopher-version` too). An injected failure is gRPC's UNAVAILABLE,
/// trailers-only, with the reason.
async fn grpc_answer(
    axum::extract::State(s): axum::extract::State<State>,
    request: axum::extract::Request,
) -> Response {
    let mut server = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
    let answered = server.unary(Answer(s.clone()), request).await;
    let (mut parts, body) = answered.into_parts();
    let [(name, value)] = version_header(s.version);
    parts.headers.insert(name, value);
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// The `Answer` method.
#[derive(Debug, Clone)]
struct Answer(State);

impl tonic::server::UnaryService<grpc::AnswerRequest> for Answer {
    type Response = grpc::AnswerReply;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<tonic::Response<grpc::AnswerReply>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, _: tonic::Request<grpc::AnswerRequest>) -> Self::Future {
        let s = self.0.clone();
        Box::pin(async move {
            if delay_or_fail(&s).await {
                return Err(tonic::Status::unavailable(format!(
                    "--error-rate {} is set on this distributor",
                    s.error_rate
                )));
            }
            Ok(tonic::Response::new(grpc::AnswerReply {
                json: answer_json(&s),
            }))
        })
    }
}

/// The answer's JSON: the fixed fields, when it is served, and the task when known.
fn answer_json(s: &State) -> String {
    let mut body = String::with_capacity(s.head.len() + 48);
    body.push_str(&s.head);
    body.push_str(",\"served_at\":\"");
    push_rfc3339_millis(&mut body, SystemTime::now());
    body.push('"');
    if let Some(task) = s.task.get() {
        body.push_str(",\"task\":");
        body.push_str(&serde_json::to_string(task).unwrap_or_else(|_| "null".to_owned()));
    }
    body.push('}');
    body
}

/// Appends `at` as RFC 3339 UTC with milliseconds (`2026-11-26T13:10:24.123Z`), as
/// `humantime::format_rfc3339_millis` writes it, without the formatting machinery: this
/// runs once per answer.
fn push_rfc3339_millis(out: &mut String, at: SystemTime) {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut digits = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day % 3_600 / 60);
    put(17, 2, of_day % 60);
    put(20, 3, u64::from(since.subsec_millis()));
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

async fn picture(axum::extract::State(s): axum::extract::State<State>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        version_header(s.version),
        s.svg.to_string(),
    )
        .into_response()
}

async fn health(axum::extract::State(s): axum::extract::State<State>) -> Response {
    s.health.response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(version: Version, error_rate: f64) -> (Router, Health) {
        let mut config = Config::new(([127, 0, 0, 1], 0).into(), version);
        config.error_rate = error_rate;
        let health = Health::default();
        (router(State::new(&config, health.clone())), health)
    }

    async fn get(app: Router, path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let request = axum::http::Request::get(path).body(Body::empty());
        let Ok(request) = request else {
            panic!("bad request")
        };
        let Ok(response) = app.oneshot(request).await;
        let status = response.status();
        let version = response
            .headers()
            .get(X_GOPHER_VERSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec());
        (status, version, body.unwrap_or_default())
    }

    #[tokio::test]
    async fn the_answer_is_the_wire_type_with_and_without_task_info() {
        let config = Config::new(([127, 0, 0, 1], 0).into(), Version::V2);
        let state = State::new(&config, Health::default());
        let task = state.task.clone();
        let app = router(state);
        let (status, _, body) = get(app.clone(), "/").await;
        assert_eq!(status, StatusCode::OK);
        let answer: common::wire::DistributorAnswer =
            serde_json::from_slice(&body).expect("a DistributorAnswer");
        assert_eq!(
            (answer.version, answer.gopher.name.as_str()),
            (Version::V2, "Goldie")
        );
        assert!(answer.task.is_none() && answer.greeting.is_some() && !answer.features.is_empty());
        let info = TaskInfo {
            task_arn: "arn:aws:ecs:us-east-1:1:task/c/abc".into(),
            availability_zone: Some("us-east-1a".into()),
        };
        assert!(task.set(info.clone()).is_ok());
        let (_, _, body) = get(app, "/").await;
        let answer: common::wire::DistributorAnswer =
            serde_json::from_slice(&body).expect("a DistributorAnswer");
        assert_eq!(answer.task, Some(info));
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        let mut at = SystemTime::UNIX_EPOCH;
        // Every day of 1970-2100 at a different hour and millisecond, leap years included.
        for step in 0..(131 * 366) {
            at += Duration::from_millis(86_400_000 + 3_600_007 * (step % 24) / 24 + 13);
            let mut ours = String::new();
            push_rfc3339_millis(&mut ours, at);
            assert_eq!(ours, humantime::format_rfc3339_millis(at).to_string());
        }
    }

    #[tokio::test]
    async fn v2_adds_fields_v1_lacks() {
        let (status, header, body) = get(app(Version::V1, 0.0).0, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header.as_deref(), Some("v1"));
        let v1: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["gopher"]["image"], "/gopher.svg");
        assert!(v1.get("greeting").is_none());

        let (_, header, body) = get(app(Version::V2, 0.0).0, "/").await;
        assert_eq!(header.as_deref(), Some("v2"));
        let v2: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v2["version"], "v2");
        assert!(v2["greeting"].is_string());
        assert_ne!(v1["gopher"]["name"], v2["gopher"]["name"]);
    }

    /// `gophers.Gopher/Answer` answers the same JSON as `GET /` as a gRPC reply with
    /// status OK in the trailers; an injected failure is UNAVAILABLE, trailers-only.
    #[tokio::test]
    async fn grpc_answers_the_same_answer_and_fails_as_grpc() {
        let call = |app: Router| async move {
            let request = axum::http::Request::post(grpc::ANSWER_PATH)
                .header(header::CONTENT_TYPE, grpc::CONTENT_TYPE)
                .body(Body::from(grpc::frame(&grpc::AnswerRequest {})))
                .expect("a request");
            let Ok(response) = app.oneshot(request).await;
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.expect("a body");
            let trailers = collected.trailers().cloned();
            (parts, trailers, collected.to_bytes())
        };
        let (parts, trailers, body) = call(app(Version::V2, 0.0).0).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.headers[header::CONTENT_TYPE], grpc::CONTENT_TYPE);
        assert_eq!(parts.headers[X_GOPHER_VERSION], "v2");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        let reply: grpc::AnswerReply = grpc::unframe(&body).expect("a reply");
        let answer: common::wire::DistributorAnswer =
            serde_json::from_str(&reply.json).expect("a DistributorAnswer");
        assert_eq!(answer.version, Version::V2);

        let (parts, trailers, body) = call(app(Version::V1, 1.0).0).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.headers["grpc-status"], "14");
        assert!(
            parts.headers["grpc-message"]
                .to_str()
                .is_ok_and(|m| m.contains("--error-rate"))
        );
        assert!(trailers.is_none() && body.is_empty());
    }

    #[tokio::test]
    async fn error_rate_one_always_fails() {
        let (status, header, _) = get(app(Version::V2, 1.0).0, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header.as_deref(), Some("v2"));
    }

    #[tokio::test]
    async fn health_turns_503_on_shutdown() {
        let (router, health) = app(Version::V1, 0.0);
        assert_eq!(get(router.clone(), "/health").await.0, StatusCode::OK);
        health.begin_shutdown();
        assert_eq!(
            get(router, "/health").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn the_picture_is_svg() {
        let (status, _, body) = get(app(Version::V1, 0.0).0, "/gopher.svg").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(b"<svg"));
    }
}
