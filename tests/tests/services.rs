//! The requester and the distributor as real processes over real HTTP on loopback.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use tests::fakes::{self, OtlpReceiver, PatternProxy};
use tests::{Service, client, run_to_end};

fn distributor(version: &str, extra: &[&str]) -> Service {
    let mut args = vec!["--listen", "127.0.0.1:0", "--version-tag", version];
    args.extend_from_slice(extra);
    Service::start("distributor", &args, &[])
}

fn requester(distributor_url: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--distributor-url",
        distributor_url,
    ];
    args.extend_from_slice(extra);
    Service::start("requester", &args, &[])
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = client().get(url).send().await.expect("request sent");
    let status = response.status();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

async fn get_text(url: &str) -> (StatusCode, String) {
    let response = client().get(url).send().await.expect("request sent");
    (response.status(), response.text().await.expect("text body"))
}

#[tokio::test]
async fn the_requester_says_who_answered_in_text_and_json() {
    let v1 = distributor("v1", &[]);
    let v2 = distributor("v2", &[]);
    let r1 = requester(&v1.url(), &[]);
    let r2 = requester(&v2.url(), &[]);

    let (status, text) = get_text(&r1.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.starts_with("distributor v1 answered: Gordon the blue gopher"),
        "{text}"
    );

    let (status, body) = get_json(&format!("{}/?format=json", r2.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["distributor"]["version"], "v2");
    assert_eq!(body["distributor"]["gopher"]["name"], "Goldie");
    assert!(body["distributor"]["greeting"].is_string(), "{body}");
    assert_eq!(body["requester"]["service"], "requester");
    assert!(body["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));

    let response = client()
        .get(r1.url())
        .header("accept", "application/json")
        .send()
        .await
        .expect("sent");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["distributor"]["version"], "v1");
}

/// With `--distributor-protocol grpc` the requester asks over gRPC (HTTP/2 without TLS)
/// and says the same; a distributor that fails answers gRPC UNAVAILABLE, which the
/// requester reports as a 502 naming the gRPC status and its message.
#[tokio::test]
async fn the_requester_asks_over_grpc_when_told() {
    let v2 = distributor("v2", &[]);
    let r = requester(&v2.url(), &["--distributor-protocol", "grpc"]);
    let (status, body) = get_json(&format!("{}/?format=json", r.url())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["distributor"]["version"], "v2");
    assert_eq!(body["distributor"]["gopher"]["name"], "Goldie");

    let failing = distributor("v1", &["--error-rate", "1"]);
    let r = requester(&failing.url(), &["--distributor-protocol", "grpc"]);
    let (status, body) = get_json(&format!("{}/?format=json", r.url())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let said = body.to_string();
    assert!(
        said.contains("gRPC status 14") && said.contains("--error-rate"),
        "{said}"
    );
}

#[tokio::test]
async fn the_distributor_serves_its_answer_picture_and_health() {
    let v2 = distributor("v2", &[]);
    let response = client().get(v2.url()).send().await.expect("sent");
    assert_eq!(response.headers()["x-gopher-version"], "v2");
    let body: Value = response.json().await.expect("json");
    for field in ["service", "version", "gopher", "host", "served_at"] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    let svg = client()
        .get(format!("{}/gopher.svg", v2.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.expect("svg").contains("Goldie"));
    assert_eq!(
        get_text(&format!("{}/health", v2.url())).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn compare_reports_the_split_the_proxy_made() {
    let v1 = distributor("v1", &[]);
    let v2 = distributor("v2", &[]);
    // Three calls to v1, then one to v2, over and over: exactly 75/25.
    let proxy = PatternProxy::new(vec![v1.url(), v2.url()], vec![0, 0, 0, 1]);
    let proxy_addr = proxy.start().await;
    let r = requester(
        "http://distributor.gophers.local:8080",
        &["--egress-proxy", &format!("http://{proxy_addr}")],
    );

    let (status, report) = get_json(&format!(
        "{}/compare?n=200&concurrency=8&format=json",
        r.url()
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["n"], 200);
    assert_eq!(report["ok"], 200);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(report["versions"]["v1"]["count"], 150);
    assert_eq!(report["versions"]["v2"]["count"], 50);
    assert_eq!(report["versions"]["v1"]["percent"], 75.0);
    for p in ["p50", "p90", "p99"] {
        assert!(
            report["versions"]["v2"]["latency_ms"][p].as_f64().is_some(),
            "{report}"
        );
    }
    // The requester did not resolve the name itself: the proxy got it.
    let seen = proxy.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 200);
    assert!(
        seen[0].uri.contains("distributor.gophers.local:8080"),
        "{:?}",
        seen[0].uri
    );

    let (_, table) = get_text(&format!("{}/compare?n=8", r.url())).await;
    assert!(
        table.contains("version") && table.contains("p99 ms"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("v1 ")), "{table}");
}

#[tokio::test]
async fn trace_context_and_request_id_reach_the_distributor_and_its_logs() {
    let v1 = distributor("v1", &[]);
    let proxy = PatternProxy::new(vec![v1.url()], vec![0]);
    let proxy_addr = proxy.start().await;
    let r = requester(
        "http://distributor.gophers.local:8080",
        &["--egress-proxy", &format!("http://{proxy_addr}")],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = client()
        .get(r.url())
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-e2e-1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-e2e-1");

    let seen = proxy.seen.lock().expect("lock").clone();
    let traceparent = seen[0].headers["traceparent"].to_str().expect("ascii");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the requester's own span is the parent"
    );
    assert_eq!(seen[0].headers["x-request-id"], "req-e2e-1");

    // Both services log the trace id and the request id (logs arrive through a pipe, so
    // give them up to 5 s).
    for service in [&r, &v1] {
        let has_ids = || {
            service.logs().iter().any(|e| {
                e["span"]["trace_id"] == trace_id && e["span"]["request_id"] == "req-e2e-1"
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !has_ids() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let logged = has_ids();
        assert!(
            logged,
            "{} did not log the ids: {:#?}",
            service.name,
            service.logs()
        );
    }

    // Without them, the requester makes up both.
    let response = client().get(r.url()).send().await.expect("sent");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32);
    let last = proxy
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a call");
    assert_eq!(last.headers["x-request-id"], id.as_str());
    assert!(last.headers.contains_key("traceparent"));
}

#[tokio::test]
async fn spans_are_exported_over_otlp_with_the_propagated_trace_id() {
    let receiver = OtlpReceiver::default();
    let otlp = format!("http://{}", receiver.start().await);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let v1 = Service::start("distributor", &["--listen", "127.0.0.1:0"], &env);
    let r = Service::start(
        "requester",
        &["--listen", "127.0.0.1:0", "--distributor-url", &v1.url()],
        &env,
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .get(r.url())
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.spans();
        let services: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| s.service.as_str())
            .collect();
        if services.contains(&"requester") && services.contains(&"distributor") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let server = ours
        .iter()
        .find(|s| s.service == "requester" && s.parent_span_id == "b7ad6b7169203331")
        .unwrap_or_else(|| panic!("no requester server span under the caller's: {spans:#?}"));
    let call = ours
        .iter()
        .find(|s| s.service == "requester" && s.parent_span_id == server.span_id)
        .unwrap_or_else(|| panic!("no client span under the server span: {spans:#?}"));
    let downstream = ours
        .iter()
        .find(|s| s.service == "distributor")
        .unwrap_or_else(|| panic!("no distributor span in the trace: {spans:#?}"));
    assert_eq!(
        downstream.parent_span_id, call.span_id,
        "the distributor continues the client span"
    );
}

#[tokio::test]
async fn upstream_failures_are_502_or_504_naming_the_cause() {
    // Nothing listens: connection refused.
    let (_held, closed) = tests::refusing_port();
    let closed_url = format!("http://{closed}");
    let r = requester(&closed_url, &[]);
    let (status, body) = get_json(&format!("{}/?format=json", r.url())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["kind"], "connection_refused");
    assert_eq!(body["error"]["upstream"], "distributor");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&closed_url)),
        "{body}"
    );

    // A name that cannot resolve (RFC 6761 reserves .invalid).
    let r = requester("http://distributor.gophers.invalid:8080", &[]);
    let (status, text) = get_text(&r.url()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(text.contains("cannot resolve"), "{text}");

    // Too slow: timeout.
    let slow = distributor("v1", &["--latency-ms", "3000"]);
    let r = requester(&slow.url(), &["--request-timeout", "300ms"]);
    let (status, body) = get_json(&format!("{}/?format=json", r.url())).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"]["kind"], "timeout");

    // Garbage and errors from upstream.
    let garbage = fakes::fixed_upstream(StatusCode::OK, "<html>not a gopher</html>").await;
    let r = requester(&format!("http://{garbage}"), &[]);
    let (status, body) = get_json(&format!("{}/?format=json", r.url())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["kind"], "bad_body");

    let failing = distributor("v2", &["--error-rate", "1.0"]);
    let r = requester(&failing.url(), &[]);
    let (status, text) = get_text(&r.url()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(text.contains("answered HTTP 503"), "{text}");
    let (_, report) = get_json(&format!("{}/compare?n=10&format=json", r.url())).await;
    assert_eq!(report["ok"], 0);
    assert_eq!(report["errors"]["http_503"], 10);
}

#[tokio::test]
async fn out_of_range_input_is_a_400_that_gives_the_range() {
    let v1 = distributor("v1", &[]);
    let r = requester(&v1.url(), &[]);
    for (query, expect) in [
        ("n=0", "from 1 to 10000"),
        ("n=10001", "from 1 to 10000"),
        ("n=abc", "from 1 to 10000"),
        ("concurrency=0", "from 1 to 256"),
        ("concurrency=257", "from 1 to 256"),
        ("format=xml", "use json or text"),
        ("m=5", "unknown parameter `m`"),
    ] {
        let (status, text) = get_text(&format!("{}/compare?{query}", r.url())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        assert!(text.contains(expect), "{query}: {text}");
    }
    let (status, body) = get_json(&format!("{}/compare?n=0&format=json", r.url())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["parameter"], "n");
}

#[test]
fn bad_flags_exit_at_once_naming_the_flag() {
    let (code, out) = run_to_end("distributor", &["--version-tag", "v3"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--version-tag") && out.contains("v1, v2"),
        "{out}"
    );

    let (code, out) = run_to_end(
        "distributor",
        &["--listen", "127.0.0.1:0"],
        &[("Tag", "v3")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("Tag"), "{out}");

    let (code, out) = run_to_end("distributor", &["--error-rate", "2"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--error-rate"), "{out}");

    let (code, out) = run_to_end("requester", &["--connect-timeout", "soon"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--connect-timeout"), "{out}");
}

#[tokio::test]
async fn the_original_demos_tag_variable_picks_the_version() {
    let v2 = Service::start(
        "distributor",
        &["--listen", "127.0.0.1:0"],
        &[("Tag", "v2")],
    );
    let (_, body) = get_json(&v2.url()).await;
    assert_eq!(body["version"], "v2");
    // GOPHER_VERSION wins over Tag.
    let v1 = Service::start(
        "distributor",
        &["--listen", "127.0.0.1:0"],
        &[("Tag", "v2"), ("GOPHER_VERSION", "v1")],
    );
    let (_, body) = get_json(&v1.url()).await;
    assert_eq!(body["version"], "v1");
}

#[tokio::test]
async fn ecs_task_metadata_is_included_when_present_and_never_blocks() {
    let meta = fakes::ecs_metadata(
        "arn:aws:ecs:us-east-1:111122223333:task/gophers/abc",
        "us-east-1a",
    )
    .await;
    let d = distributor("v1", &["--ecs-metadata-uri", &format!("http://{meta}")]);
    let mut body = Value::Null;
    for _ in 0..50 {
        body = get_json(&d.url()).await.1;
        if body.get("task").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        body["task"]["task_arn"],
        "arn:aws:ecs:us-east-1:111122223333:task/gophers/abc"
    );
    assert_eq!(body["task"]["availability_zone"], "us-east-1a");

    // A metadata endpoint that is not there: still serving, without the field.
    // (Port 1, tcpmux, is closed on any machine these tests run on.)
    let d = distributor("v1", &["--ecs-metadata-uri", "http://127.0.0.1:1"]);
    let (status, body) = get_json(&d.url()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("task").is_none(), "{body}");
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish_then_exits_zero() {
    let mut d = distributor("v1", &["--latency-ms", "800"]);
    let url = d.url();
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    // Terminate only once the request is being served (its handler has logged).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d
        .logs()
        .iter()
        .any(|l| l["message"] == "holding the answer (--latency-ms)")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.terminate();
    let status = in_flight
        .await
        .expect("joined")
        .expect("the request in flight finished");
    assert_eq!(status, StatusCode::OK);
    let exit = d
        .wait_exit(Duration::from_secs(5))
        .expect("exited after draining");
    assert_eq!(exit.code(), Some(0));
    // New connections are refused once draining began.
    assert!(client().get(d.url()).send().await.is_err());
}
