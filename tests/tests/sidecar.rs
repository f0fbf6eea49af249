//! `gophermesh sidecar`, the aws-appmesh-envoy agent's job for a current Envoy: run in a
//! task's network namespace with the walkthrough task definition's environment (only
//! `APPMESH_XDS_ENDPOINT` added), against `serve` over TLS; the task definition's own
//! health check; its DogStatsD counted by serve's `/metrics` as the requester counted its
//! calls; a rollout serve drives on those counts, promoted; a killed Envoy restarted; the management server gone past the
//! disconnected timeout failing the health check; SIGTERM draining. And the environment
//! it refuses, naming the variable; and the bootstraps it writes, validated by Envoy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::serve::{Host, Serve, certificates, http_status_in};
use tests::{TempDir, bin, copy_of_shipped, get_json, require_root_for_netns, tool};

const ARN: &str = "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualNode/requester";

/// Runs `gophermesh sidecar` with only `env` (and PATH): exit code and what it said,
/// within 10 s.
fn refused_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(bin("gophermesh"))
        .arg("sidecar")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_environment_it_cannot_use_stops_it_at_once_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("APPMESH_XDS_ENDPOINT", "10.0.0.1:15010")],
            "APPMESH_RESOURCE_ARN: not set",
        ),
        (
            &[
                ("APPMESH_RESOURCE_ARN", "arn:aws:ecs:us-east-1:1:task/c/x"),
                ("APPMESH_XDS_ENDPOINT", "10.0.0.1:15010"),
            ],
            "APPMESH_RESOURCE_ARN: `arn:aws:ecs:us-east-1:1:task/c/x` is not a virtual node's or virtual gateway's ARN",
        ),
        (
            &[
                ("APPMESH_RESOURCE_ARN", ARN),
                ("APPMESH_XDS_ENDPOINT", "10.0.0.1:15010"),
                ("ENVOY_ADMIN_ACCESS_PORT", "ninety"),
            ],
            "ENVOY_ADMIN_ACCESS_PORT: `ninety` is not a port",
        ),
        (
            &[
                ("APPMESH_RESOURCE_ARN", ARN),
                ("APPMESH_XDS_ENDPOINT", "10.0.0.1:15010"),
                ("ENVOY_TRACING_CFG_FILE", "/nonexistent/tracing.yaml"),
            ],
            "ENVOY_TRACING_CFG_FILE: cannot read /nonexistent/tracing.yaml",
        ),
    ];
    for (env, said) in cases {
        let started = Instant::now();
        let (code, out) = refused_with(env);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(said), "`{said}` not in: {out}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

/// One row of the bootstrap table: variables added to the base environment, and what the
/// agent's bootstrap holds for them (JSON pointer, value), as its source and tests give it.
type Row<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, Value)>);

/// For each of the agent's variables the sidecar implements, the bootstrap it writes holds
/// what the agent's holds on the fields that matter, and Envoy accepts it (`--mode
/// validate`).
#[test]
fn every_bootstrap_it_writes_is_the_agents_and_accepted_by_envoy() {
    use serde_json::json;
    let dir = TempDir::new("sidecar-bootstraps");
    certificates(&dir, "127.0.0.1");
    let ca = dir.join("ca.pem").display().to_string();
    let path = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let stats = path(
        "stats.yaml",
        "stats_config:\n  stats_tags:\n    - tag_name: mesh\n      fixed_value: gophermesh\n",
    );
    let sinks = path(
        "sinks.json",
        r#"{"statsSinks": [{"name": "envoy.stat_sinks.statsd", "typed_config": {"@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8125}}}}],
            "static_resources": {"clusters": [{"name": "extra", "connect_timeout": "1s", "type": "STATIC", "load_assignment": {"cluster_name": "extra", "endpoints": []}}]}}"#,
    );
    let rules = path(
        "rules.json",
        r#"{"version": 2, "default": {"fixed_target": 1, "rate": 0.2}, "rules": []}"#,
    );
    let gateway = "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualGateway/ingress";
    let base = [
        ("APPMESH_RESOURCE_ARN", ARN),
        ("APPMESH_XDS_ENDPOINT", "127.0.0.1:15010"),
        ("APPMESH_XDS_CA_FILE", ca.as_str()),
    ];
    let table: Vec<Row<'_>> = vec![
        (
            vec![],
            vec![
                ("/node/cluster", json!(ARN)),
                ("/admin/address/socket_address/port_value", json!(9901)),
                (
                    "/admin/access_log/0/typed_config/path",
                    json!("/tmp/envoy_admin_access.log"),
                ),
                (
                    "/dynamic_resources/lds_config/initial_fetch_timeout",
                    json!("0s"),
                ),
                (
                    "/cluster_manager/outlier_detection/event_log_path",
                    json!("/dev/stdout"),
                ),
                (
                    "/layered_runtime/layers/0/static_layer/re2.max_program_size.error_level",
                    json!(1000),
                ),
                ("/layered_runtime/layers/1/name", json!("admin_layer")),
                (
                    "/stats_config/stats_tags/0/tag_name",
                    json!("appmesh.listener_protocol"),
                ),
                ("/stats_sinks", Value::Null),
                ("/tracing", Value::Null),
            ],
        ),
        (
            vec![("APPMESH_XDS_ENDPOINT", "control-plane.gophers.local:443")],
            vec![("/static_resources/clusters/0/type", json!("STRICT_DNS"))],
        ),
        (
            vec![
                ("ENVOY_ADMIN_ACCESS_PORT", "9911"),
                ("ENVOY_ADMIN_ACCESS_LOG_FILE", "/tmp/admin.log"),
                ("ENVOY_LOG_LEVEL", "debug"),
                (
                    "ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH",
                    "/tmp/outliers.log",
                ),
            ],
            vec![
                ("/admin/address/socket_address/port_value", json!(9911)),
                (
                    "/admin/access_log/0/typed_config/path",
                    json!("/tmp/admin.log"),
                ),
                (
                    "/cluster_manager/outlier_detection/event_log_path",
                    json!("/tmp/outliers.log"),
                ),
            ],
        ),
        (
            vec![
                ("ENVOY_INITIAL_FETCH_TIMEOUT", "30"),
                ("ENVOY_CONCURRENCY", "2"),
                ("APPMESH_RESOURCE_CLUSTER", "requester-cluster"),
                ("APPMESH_SET_TRACING_DECISION", "false"),
            ],
            vec![
                ("/node/cluster", json!("requester-cluster")),
                (
                    "/dynamic_resources/cds_config/initial_fetch_timeout",
                    json!("30s"),
                ),
                (
                    "/layered_runtime/layers/0/static_layer/envoy.reloadable_features.http_set_tracing_decision_in_request_id",
                    json!(false),
                ),
            ],
        ),
        (
            vec![
                ("ENABLE_ENVOY_STATS_TAGS", "1"),
                ("ENVOY_STATS_FLUSH_INTERVAL", "1m30s"),
            ],
            vec![
                (
                    "/stats_config/stats_tags/0",
                    json!({"tag_name": "appmesh.mesh", "fixed_value": "gophermesh"}),
                ),
                (
                    "/stats_config/stats_tags/1",
                    json!({"tag_name": "appmesh.virtual_node", "fixed_value": "requester"}),
                ),
                (
                    "/stats_config/stats_tags/4/tag_name",
                    json!("envoy_rds_route_config"),
                ),
                ("/stats_flush_interval", json!("90.000000000s")),
            ],
        ),
        (
            vec![
                ("APPMESH_RESOURCE_ARN", gateway),
                ("ENABLE_ENVOY_STATS_TAGS", "true"),
            ],
            vec![
                ("/node/id", json!(gateway)),
                (
                    "/stats_config/stats_tags/1",
                    json!({"tag_name": "appmesh.virtual_gateway", "fixed_value": "ingress"}),
                ),
            ],
        ),
        (
            vec![("ENABLE_ENVOY_DOG_STATSD", "1")],
            vec![
                ("/stats_sinks/0/name", json!("envoy.stat_sinks.dog_statsd")),
                (
                    "/stats_sinks/0/typed_config/address/socket_address",
                    json!({"protocol": "UDP", "address": "127.0.0.1", "port_value": 8125}),
                ),
            ],
        ),
        (
            vec![
                ("ENABLE_ENVOY_DOG_STATSD", "1"),
                ("STATSD_ADDRESS", "10.0.0.9"),
                ("STATSD_PORT", "9125"),
            ],
            vec![(
                "/stats_sinks/0/typed_config/address/socket_address",
                json!({"protocol": "UDP", "address": "10.0.0.9", "port_value": 9125}),
            )],
        ),
        (
            vec![
                ("ENABLE_ENVOY_DOG_STATSD", "1"),
                ("STATSD_SOCKET_PATH", "/var/run/datadog/dsd.socket"),
            ],
            vec![(
                "/stats_sinks/0/typed_config/address/pipe/path",
                json!("/var/run/datadog/dsd.socket"),
            )],
        ),
        (
            vec![("ENABLE_ENVOY_XRAY_TRACING", "1")],
            vec![
                ("/tracing/http/name", json!("envoy.tracers.xray")),
                (
                    "/tracing/http/typed_config/segment_name",
                    json!("gophermesh/requester"),
                ),
                (
                    "/tracing/http/typed_config/daemon_endpoint",
                    json!({"protocol": "UDP", "address": "127.0.0.1", "port_value": 2000}),
                ),
                (
                    "/tracing/http/typed_config/segment_fields/origin",
                    json!("AWS::AppMesh::Proxy"),
                ),
                (
                    "/tracing/http/typed_config/segment_fields/aws/app_mesh",
                    json!({"mesh_name": "gophermesh", "virtual_node_name": "requester"}),
                ),
                (
                    "/tracing/http/typed_config/sampling_rule_manifest",
                    Value::Null,
                ),
            ],
        ),
        (
            vec![
                ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                ("AWS_XRAY_DAEMON_ADDRESS", "169.254.170.2:2001"),
                ("XRAY_SEGMENT_NAME", "requester-segment"),
                ("XRAY_SAMPLING_RATE", "0.5"),
            ],
            vec![
                (
                    "/tracing/http/typed_config/daemon_endpoint/address",
                    json!("169.254.170.2"),
                ),
                (
                    "/tracing/http/typed_config/daemon_endpoint/port_value",
                    json!(2001),
                ),
                (
                    "/tracing/http/typed_config/segment_name",
                    json!("requester-segment"),
                ),
                (
                    "/tracing/http/typed_config/sampling_rule_manifest/inline_string",
                    json!({"version": 2, "default": {"fixed_target": 1, "rate": 0.5}, "rules": []}),
                ),
            ],
        ),
        (
            vec![
                ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                ("XRAY_DAEMON_PORT", "3000"),
                ("XRAY_SAMPLING_RULE_MANIFEST", rules.as_str()),
            ],
            vec![
                (
                    "/tracing/http/typed_config/daemon_endpoint/port_value",
                    json!(3000),
                ),
                (
                    "/tracing/http/typed_config/sampling_rule_manifest/filename",
                    json!(rules),
                ),
            ],
        ),
        (
            vec![("ENABLE_ENVOY_DATADOG_TRACING", "1")],
            vec![
                ("/tracing/http/name", json!("envoy.tracers.datadog")),
                (
                    "/tracing/http/typed_config/service_name",
                    json!("envoy-gophermesh/requester"),
                ),
                (
                    "/tracing/http/typed_config/collector_cluster",
                    json!("datadog_agent"),
                ),
                ("/static_resources/clusters/1/name", json!("datadog_agent")),
                (
                    "/static_resources/clusters/1/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value",
                    json!(8126),
                ),
            ],
        ),
        (
            vec![
                ("ENABLE_ENVOY_JAEGER_TRACING", "1"),
                ("JAEGER_TRACER_ADDRESS", "10.0.0.7"),
                ("JAEGER_TRACER_VERSION", "JSON"),
            ],
            vec![
                ("/tracing/http/name", json!("envoy.tracers.zipkin")),
                (
                    "/tracing/http/typed_config/collector_endpoint",
                    json!("/api/v2/spans"),
                ),
                (
                    "/tracing/http/typed_config/collector_endpoint_version",
                    json!("HTTP_JSON"),
                ),
                (
                    "/tracing/http/typed_config/shared_span_context",
                    json!(false),
                ),
                (
                    "/static_resources/clusters/1/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address",
                    json!({"address": "10.0.0.7", "port_value": 9411}),
                ),
            ],
        ),
        (
            vec![("APPMESH_SDS_SOCKET_PATH", "/run/spire/sockets/agent.sock")],
            vec![
                (
                    "/static_resources/clusters/1/name",
                    json!("static_cluster_sds_unix_socket"),
                ),
                (
                    "/static_resources/clusters/1/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/pipe/path",
                    json!("/run/spire/sockets/agent.sock"),
                ),
            ],
        ),
        (
            vec![
                ("ENVOY_STATS_CONFIG_FILE", stats.as_str()),
                ("ENVOY_STATS_SINKS_CFG_FILE", sinks.as_str()),
                ("ENABLE_ENVOY_DOG_STATSD", "1"),
                ("ENABLE_ENVOY_STATS_TAGS", "1"),
            ],
            vec![
                (
                    "/stats_config/stats_tags",
                    json!([{"tag_name": "mesh", "fixed_value": "gophermesh"}]),
                ),
                ("/stats_sinks/0/name", json!("envoy.stat_sinks.statsd")),
                ("/stats_sinks/1", Value::Null),
                ("/static_resources/clusters/1/name", json!("extra")),
            ],
        ),
    ];
    for (i, (extra, expected)) in table.iter().enumerate() {
        let mut env: BTreeMap<String, String> = base
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.insert("PATH".into(), String::new());
        let config =
            gophermesh::sidecar::env::read(&env).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let bootstrap = gophermesh::sidecar::bootstrap(&config).expect("a bootstrap");
        assert_eq!(
            bootstrap["node"]["id"],
            env["APPMESH_RESOURCE_ARN"].as_str(),
            "the node id is the ARN, as the agent's"
        );
        for (pointer, want) in expected {
            let mut got = bootstrap.pointer(pointer).cloned().unwrap_or(Value::Null);
            if let (Value::String(text), Value::Object(_)) = (&got, want) {
                // A sampling manifest written inline: compared as the JSON it holds.
                got = serde_json::from_str(text).unwrap_or(got);
            }
            assert_eq!(&got, want, "{extra:?}: {pointer}");
        }
        let file = dir.join(format!("bootstrap-{i}.json"));
        std::fs::write(&file, serde_json::to_string(&bootstrap).expect("json")).expect("write");
        let out = Command::new(tool("envoy"))
            .args(["--mode", "validate", "-c"])
            .arg(&file)
            .output()
            .expect("envoy runs");
        assert!(
            out.status.success(),
            "{extra:?}: Envoy refused the bootstrap: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `curl -s URL` in the task's namespace: what it printed.
fn get_in(host: &Host, url: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &host.name, "curl", "-s", url])
        .output()
        .expect("curl (scripts/setup.sh --tests installs it)")
}

/// The task definition's health check, run in the task's namespace.
fn taskdef_health_check(host: &Host) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.name,
            "sh",
            "-c",
            "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE",
        ])
        .status()
        .expect("sh runs")
        .success()
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `read` (counts, and what they were read from) until it counts `want`, for at
/// most 10 s; `what` names the reader when it never does.
async fn until_counted(
    what: &str,
    want: &[f64],
    mut read: impl AsyncFnMut() -> (Vec<f64>, String),
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, from) = read().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} counted {got:?}, the requester {want:?}:\n{from}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The requester's Envoy ACKed its routes, as `serve` tells.
async fn in_sync(serve: &Serve) -> bool {
    let status = get_json(&format!("{}/v1/status", serve.control)).await;
    let e = &status["envoys"]["gophermesh/requester"];
    e["connected"] == true && e["acked"]["routes"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_from_the_task_definitions_environment_runs_heals_and_drains() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("sidecar");
    certificates(&dir, &host.host_ip);
    // serve receives the sidecar's DogStatsD on the host's side.
    let statsd_listen = format!("{}:0", host.host_ip);
    let serve = Serve::start_tls_with(
        &dir,
        &host.host_ip,
        &["--statsd-listen", statsd_listen.as_str()],
    );
    let statsd: std::net::SocketAddr = serve
        .said()
        .lines()
        .find_map(|l| {
            l.split_once("udp://")
                .map(|(_, a)| a.split_whitespace().next().unwrap_or("").to_owned())
        })
        .and_then(|a| a.parse().ok())
        .expect("serve says where it receives DogStatsD");
    let work = TempDir::new("sidecar-run");
    let mut env = tests::sidecar_env("requester");
    env.extend([
        ("APPMESH_XDS_ENDPOINT".to_owned(), serve.xds.clone()),
        (
            "APPMESH_XDS_CA_FILE".to_owned(),
            dir.join("ca.pem").display().to_string(),
        ),
        ("APPNET_ENVOY_RESTART_COUNT".to_owned(), "2".to_owned()),
        ("LISTENER_DRAIN_WAIT_TIME_S".to_owned(), "5".to_owned()),
        (
            gophermesh::sidecar::env::TEST_DISCONNECTED_TIMEOUT_MS.to_owned(),
            "1500".to_owned(),
        ),
        ("ENVOY_LOG_LEVEL".to_owned(), "warning".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
        ("ENABLE_ENVOY_DOG_STATSD".to_owned(), "1".to_owned()),
        ("STATSD_ADDRESS".to_owned(), statsd.ip().to_string()),
        ("STATSD_PORT".to_owned(), statsd.port().to_string()),
        ("ENVOY_STATS_FLUSH_INTERVAL".to_owned(), "500ms".to_owned()),
        ("ENABLE_ENVOY_STATS_TAGS".to_owned(), "1".to_owned()),
    ]);
    assert!(
        env.iter()
            .any(|(k, v)| k == "APPMESH_RESOURCE_ARN" && v.ends_with("virtualNode/requester")),
        "{env:?}"
    );
    let bootstrap = work.join("bootstrap.json");
    // Envoy is the sidecar's child: were the test to fail and kill the sidecar, Envoy
    // would stay (in a container it would go with the sidecar, its PID 1).
    let _envoys = KillMatching(bootstrap.display().to_string());
    let mut sidecar = tests::Guard(
        Command::new("ip")
            .args(["netns", "exec", &host.name])
            .arg(bin("gophermesh"))
            .args(["sidecar", "--envoy-bin"])
            .arg(tool("envoy"))
            .arg("--bootstrap")
            .arg(&bootstrap)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the sidecar starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !in_sync(&serve).await {
        assert!(
            Instant::now() < deadline,
            "the requester's Envoy never got its configuration\n{}",
            serve.said()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(
        "the task definition's health check to pass",
        Duration::from_secs(10),
        || taskdef_health_check(&host),
    )
    .await;
    until(
        "the sidecar's /status to say healthy",
        Duration::from_secs(10),
        || http_status_in(&host.name, None, &["http://127.0.0.1:9902/status"]) == 200,
    )
    .await;
    let metrics = get_in(&host, "http://127.0.0.1:9902/stats/prometheus");
    assert!(
        String::from_utf8_lossy(&metrics.stdout).contains("envoy_control_plane_connected_state"),
        "no Envoy metrics"
    );
    // ENABLE_ENVOY_DOG_STATSD with ENABLE_ENVOY_STATS_TAGS: what the requester's Envoy
    // sent to each distributor reaches serve's /metrics, as the requester counted it.
    let (_gophers, listen) = host.gophers();
    let report = get_json(&format!(
        "http://{listen}/compare?n=100&concurrency=4&format=json"
    ))
    .await;
    assert_eq!(report["ok"], 100, "{report}");
    let want: Vec<f64> = ["v1", "v2"]
        .iter()
        .map(|v| report["versions"][v]["count"].as_f64().unwrap_or(0.0))
        .collect();
    until_counted("serve's /metrics", &want, async || {
        let text = tests::metrics_text(&serve.control).await;
        let count = |target: &str| {
            tests::requester_series(&text, "envoy_appmesh_RequestCountPerTarget", target)
        };
        (
            vec![count("distributor-v1"), count("distributor-v2")],
            text.clone(),
        )
    })
    .await;
    // And serve's console sees the same traffic, which it could not before.
    until_counted("the console", &want, async || {
        let frame = get_json(&format!("{}/v1/live", serve.control)).await;
        let observed = |node: &str| {
            frame["meshes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["name"] == "gophermesh")
                .flat_map(|m| m["nodes"].as_array().into_iter().flatten())
                .find(|n| n["name"] == node)
                .and_then(|n| n["observed"].as_f64())
                .unwrap_or(0.0)
        };
        (
            vec![observed("distributor-v1"), observed("distributor-v2")],
            frame.to_string(),
        )
    })
    .await;

    // A rollout driven by serve on what the sidecar's DogStatsD tells it: v2 is promoted
    // step by step while the requester calls, and its Envoy gets each step.
    let (code, said) =
        tests::cli_against(&serve.control, &dir, &tests::rollout_to_v2("50,100", &[]));
    assert_eq!(code, 0, "{said}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let promoted = loop {
        let all = get_json(&format!("{}/v1/rollouts", serve.control)).await;
        let r = all["rollouts"][0].clone();
        if r["phase"] == "succeeded" {
            break r;
        }
        assert!(Instant::now() < deadline, "not promoted: {r:#}");
        let report = get_json(&format!(
            "http://{listen}/compare?n=40&concurrency=4&format=json"
        ))
        .await;
        assert_eq!(report["ok"], 40, "{report}");
    };
    assert!(promoted["requests"].as_u64() >= Some(20), "{promoted:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = get_json(&format!(
            "http://{listen}/compare?n=40&concurrency=4&format=json"
        ))
        .await;
        if report["versions"]["v2"]["count"] == 40 {
            break;
        }
        assert!(Instant::now() < deadline, "v1 still answers: {report}");
    }

    // A killed Envoy is started again and gets its configuration again.
    let pid = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", &bootstrap.display().to_string()])
            .output()
            .expect("pgrep")
            .stdout,
    )
    .split_whitespace()
    .filter_map(|p| p.parse::<u32>().ok())
    .find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--disable-hot-restart"))
    })
    .expect("Envoy's pid");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    until(
        "Envoy to be restarted and live",
        Duration::from_secs(15),
        || taskdef_health_check(&host),
    )
    .await;
    let status = get_in(&host, "http://127.0.0.1:9902/status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["envoyRestarts"], 1, "{status}");

    // The management server gone past the disconnected timeout: the health check fails.
    drop(serve);
    until(
        "the health check to fail without a management server",
        Duration::from_secs(15),
        || !taskdef_health_check(&host),
    )
    .await;
    assert_eq!(
        http_status_in(&host.name, None, &["http://127.0.0.1:9902/status"]),
        503
    );

    // SIGTERM under load: the listeners drain for LISTENER_DRAIN_WAIT_TIME_S, a caller
    // that stops sending when told (a second after, as the task's app would on its own
    // SIGTERM) sees no failed request; then all stops.
    let (tell, told) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(load_until_told(listen, told));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &sidecar.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    tell.send(true).expect("the caller listens");
    let reports = load.await.expect("the caller");
    let after_sigterm = reports.iter().filter(|(at, _)| *at > started).count();
    assert!(after_sigterm > 0, "no call finished while draining");
    for (_, report) in &reports {
        assert_eq!(
            report["ok"], CALLS,
            "a failed request while draining: {report}"
        );
    }
    let exit = wait_exit(&mut sidecar.0, Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(exit, Some(0), "after {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "stopped after {took:?}, before the drain wait"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let _ = Path::new(&bootstrap);
}

/// Requests in each of the caller's rounds.
const CALLS: u32 = 20;

/// The requester at `listen`, asked for rounds of calls through its Envoy (each its own
/// request to the distributors, 4 at a time) until `told`: each round's report and when it
/// came back.
async fn load_until_told(
    listen: String,
    told: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Instant, Value)> {
    let url = format!("http://{listen}/compare?n={CALLS}&concurrency=4&format=json");
    let mut reports = Vec::new();
    while !*told.borrow() {
        reports.push((Instant::now(), get_json(&url).await));
        reports.last_mut().expect("pushed").0 = Instant::now();
    }
    reports
}

/// Kills, when dropped, every process whose command line holds its text.
struct KillMatching(String);

impl Drop for KillMatching {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.0])
            .status();
    }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
