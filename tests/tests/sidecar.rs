//! `gophermesh sidecar`, the aws-appmesh-envoy agent's job for a current Envoy: run in a
//! task's network namespace with the walkthrough task definition's environment (only
//! `APPMESH_XDS_ENDPOINT` added), against `serve` over TLS; the task definition's own
//! health check; a killed Envoy restarted; the management server gone past the
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

/// For each of the agent's variables the sidecar implements, the bootstrap it writes is
/// one Envoy accepts (`--mode validate`).
#[test]
fn every_bootstrap_it_writes_is_accepted_by_envoy() {
    let dir = TempDir::new("sidecar-bootstraps");
    certificates(&dir, "127.0.0.1");
    let ca = dir.join("ca.pem").display().to_string();
    let stats = dir.join("stats.yaml");
    std::fs::write(
        &stats,
        "stats_config:\n  stats_tags:\n    - tag_name: mesh\n      fixed_value: gophermesh\n",
    )
    .expect("write");
    let sinks = dir.join("sinks.json");
    std::fs::write(&sinks, r#"{"stats_sinks": [{"name": "envoy.stat_sinks.statsd", "typed_config": {"@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8125}}}}]}"#).expect("write");
    let base = [
        ("APPMESH_RESOURCE_ARN", ARN),
        ("APPMESH_XDS_ENDPOINT", "127.0.0.1:15010"),
        ("APPMESH_XDS_CA_FILE", ca.as_str()),
    ];
    let variations: [&[(&str, &str)]; 6] = [
        &[],
        &[("APPMESH_XDS_ENDPOINT", "control-plane.gophers.local:443")],
        &[
            ("ENVOY_ADMIN_ACCESS_PORT", "9911"),
            ("ENVOY_ADMIN_ACCESS_LOG_FILE", "/tmp/admin.log"),
            ("ENVOY_LOG_LEVEL", "debug"),
        ],
        &[
            ("ENVOY_INITIAL_FETCH_TIMEOUT", "30"),
            ("ENVOY_CONCURRENCY", "2"),
            ("APPMESH_RESOURCE_CLUSTER", "requester-cluster"),
        ],
        &[
            ("ENVOY_STATS_CONFIG_FILE", stats.to_str().expect("utf-8")),
            ("ENVOY_STATS_SINKS_CFG_FILE", sinks.to_str().expect("utf-8")),
        ],
        &[(
            "APPMESH_RESOURCE_ARN",
            "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualGateway/ingress",
        )],
    ];
    for (i, extra) in variations.iter().enumerate() {
        let mut env: BTreeMap<String, String> = base
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config =
            gophermesh::sidecar::env::read(&env).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let bootstrap = gophermesh::sidecar::bootstrap(&config).expect("a bootstrap");
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
        assert_eq!(
            bootstrap["node"]["id"],
            env["APPMESH_RESOURCE_ARN"].as_str(),
            "the node id is the ARN, as the agent's"
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
    let serve = Serve::start_tls(&dir, &host.host_ip);
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

    // SIGTERM: the listeners drain for LISTENER_DRAIN_WAIT_TIME_S, then all stops.
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &sidecar.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
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
