//! `gophermesh serve`, the control plane alone, as the Envoys of ECS tasks elsewhere would
//! use it: a real Envoy in a network namespace of its own (another "host", reached over a
//! veth pair), with a node id in ARN form, fetches its configuration over TLS and carries
//! the requester's traffic to both distributors by their DNS names, 90/10.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::serve::{Host, Serve, certificates};
use tests::{
    CHI2_BOUND, LocalMesh, Mode, TempDir, bin, chi_square, client, compare, copy_of_shipped, count,
    get_json, require_root_for_netns,
};

const KEY_ID: &str = "AKIDSERVETEST";
const SECRET: &str = "serve/test/secret";

/// `serve` on `host_ip` with TLS and SigV4, the control API on loopback.
fn start_serve(dir: &Path, host_ip: &str) -> Serve {
    start_serve_with(dir, host_ip, host_ip, &[], &[])
}

/// [`start_serve`] with the App Mesh API on `api_ip`, more flags and an environment.
fn start_serve_with(
    dir: &Path,
    host_ip: &str,
    api_ip: &str,
    more: &[&str],
    env: &[(String, String)],
) -> Serve {
    let (xds, api) = (format!("{host_ip}:0"), format!("{api_ip}:0"));
    let mut args = vec![
        "--xds-listen",
        &xds,
        "--api-listen",
        &api,
        "--control-listen",
        "127.0.0.1:0",
        "--tls-cert",
        "server.pem",
        "--tls-key",
        "server.key",
        "--api-access-key-id",
        KEY_ID,
        "--api-secret-access-key",
        SECRET,
    ];
    args.extend_from_slice(more);
    Serve::start(dir, &args, env)
}

/// The requester's Envoy elsewhere, with the agent's bootstrap for `serve`, connected and
/// in sync (or the test fails with what serve said).
async fn requester_envoy(host: &Host, dir: &Path, serve: &Serve) -> (TempDir, tests::Guard) {
    envoy_in_sync(
        host,
        dir,
        serve,
        "gophermesh/virtualNode/requester",
        "gophermesh/requester",
        "routes",
    )
    .await
}

/// A real Envoy elsewhere for `MESH/virtualNode/NODE` (`node`), with the agent's bootstrap,
/// until `status` shows it as `key` connected, with `acked` ACKed and no problem (or the
/// test fails with what serve said).
async fn envoy_in_sync(
    host: &Host,
    dir: &Path,
    serve: &Serve,
    node: &str,
    key: &str,
    acked: &str,
) -> (TempDir, tests::Guard) {
    let work = TempDir::new("serve-envoy");
    let boot = work.join("bootstrap.json");
    tests::serve::agent_bootstrap(
        &dir.join("ca.pem"),
        &format!("arn:aws:appmesh:us-east-1:000000000000:mesh/{node}"),
        &serve.xds,
        &boot,
    );
    let envoy = host.envoy(&boot);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = get_json(&format!("{}/v1/status", serve.control)).await;
        let e = &status["envoys"][key];
        if e["connected"] == true && e["acked"][acked].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &status["envoys"][key];
    assert!(
        e["connected"] == true && e["acked"][acked].is_string() && e["problem"].is_null(),
        "the Envoy of {node} did not get its configuration: {status}\n{}",
        serve.said()
    );
    (work, envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_elsewhere_gets_its_node_from_serve_over_tls_and_splits_90_10() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("serve");
    certificates(&dir, &host.host_ip);
    let serve = start_serve(&dir, &host.host_ip);

    // The requester's task, elsewhere: its Envoy (with the bootstrap the agent would write
    // from its variables), connected and in sync with no problem, and its app; the
    // distributors answer on their own addresses (their DNS names), as other tasks would.
    let (_work, _envoy) = requester_envoy(&host, &dir, &serve).await;
    let (_gophers, listen) = host.gophers();

    // Traffic: the requester, through its Envoy, to both versions by DNS, 90/10.
    let url = format!("http://{listen}/compare?n=2000&concurrency=8&format=json");
    let report: Value = client()
        .get(&url)
        .send()
        .await
        .expect("the requester answers across the veth")
        .json()
        .await
        .expect("json");
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = chi_square(&report, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );
    assert!(count(&report, "v2") > 0.0, "{report}");
}

/// An open App Mesh API beyond loopback is refused before anything listens.
#[test]
fn serve_refuses_an_open_api_beyond_loopback() {
    let dir = copy_of_shipped("serve-open");
    let out = Command::new(bin("gophermesh"))
        .current_dir(&dir)
        .args([
            "serve",
            "--api-listen",
            "0.0.0.0:0",
            "--xds-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_ne!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--api-listen 0.0.0.0:0") && said.contains("--api-access-key-id"),
        "{said}"
    );
}

/// A connection to ADS over TLS that never completes its handshake (it sends nothing) is
/// closed after the handshake timeout, and one that does is served meanwhile.
#[test]
fn a_silent_connection_to_ads_over_tls_is_closed() {
    use std::io::Read as _;
    let dir = copy_of_shipped("serve-silent");
    certificates(&dir, "127.0.0.1");
    let serve = start_serve_with(&dir, "0.0.0.0", "127.0.0.1", &[], &[]);
    let port = serve.xds.rsplit_once(':').expect("HOST:PORT").1;
    let xds = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(&xds).expect("connects");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    // A client that does complete its handshake is not held up by the silent one.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &xds, "-alpn", "h2", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ALPN protocol: h2"), "{said}");
    let mut byte = [0u8; 1];
    // A signal to this process (a child of another test exiting) interrupts the wait.
    let read = loop {
        match silent.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?} after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "closed only after {waited:?}"
    );
}

/// Idle connections to ADS beyond its share of the descriptor budget are closed at once,
/// so that the APIs and the console still have descriptors to answer with: `serve` with
/// 400 descriptors and 600 idle connections held to ADS (before the budget, ADS took
/// every descriptor and the APIs stopped accepting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_to_ads_leave_the_apis_descriptors() {
    let dir = copy_of_shipped("serve-files");
    let serve = Serve::start_with_files(400, &dir, tests::SERVE_ON_LOOPBACK, &[]);
    let mut held = Vec::new();
    for _ in 0..600 {
        match std::net::TcpStream::connect(&serve.xds) {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect {}: {e}", held.len()),
        }
    }
    // ADS closes what is beyond its share: some of the held connections read their end.
    let closed = held
        .iter_mut()
        .map(|c| {
            use std::io::Read as _;
            c.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("a read timeout");
            loop {
                match c.read(&mut [0u8; 1]) {
                    Ok(0) => break true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => break false,
                }
            }
        })
        .filter(|&closed| closed)
        .count();
    let client = client();
    for url in [
        format!("{}/v20190125/meshes", serve.appmesh),
        format!("{}/", serve.control),
        format!("{}/console.js", serve.control),
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
            .await
            .unwrap_or_else(|_| panic!("{url} did not answer with ADS held\n{}", serve.said()));
        let status = answer.unwrap_or_else(|e| panic!("{url}: {e}")).status();
        assert_eq!(status, 200, "{url}");
    }
    assert!(
        closed >= 600 - 200,
        "ADS closed only {closed} of 600 held connections"
    );
}

/// The bootstrap refuses what the agent would choke on, naming the variable.
#[test]
fn bootstrap_names_the_variable_that_is_wrong() {
    for (arn, endpoint, words) in [
        (
            "arn:aws:appmesh:us-east-1:1:mesh/m/virtualRouter/r",
            "10.0.0.5:15010",
            "APPMESH_RESOURCE_ARN",
        ),
        (
            "mesh/m/virtualNode/n",
            "10.0.0.5",
            "APPMESH_XDS_ENDPOINT `10.0.0.5` is not HOST:PORT",
        ),
    ] {
        let (code, said) = tests::run_to_end(
            "gophermesh",
            &["bootstrap", "--ca-file", "/dev/null"],
            &[
                ("APPMESH_RESOURCE_ARN", arn),
                ("APPMESH_XDS_ENDPOINT", endpoint),
            ],
        );
        assert_ne!(code, Some(0), "{arn} {endpoint}: {said}");
        assert!(said.contains(words), "{arn} {endpoint}: {said}");
    }
}

/// With `APPMESH_SDS_SOCKET_PATH`, the bootstrap has the agent's cluster of the SDS server
/// on that socket (what `certificate.sds` and `trust.sds` secrets are asked of); without
/// it, none.
#[test]
fn bootstrap_adds_the_sds_socket_the_agent_names() {
    let bootstrap = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
            ("APPMESH_XDS_ENDPOINT", "unix:///run/xds.sock"),
        ];
        env.extend_from_slice(extra);
        let (code, said) = tests::run_to_end("gophermesh", &["bootstrap"], &env);
        assert_eq!(code, Some(0), "{said}");
        let doc: serde_json::Value = serde_json::from_str(&said).expect("a JSON bootstrap");
        doc["static_resources"]["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .find(|c| c["name"] == "static_cluster_sds_unix_socket")
            .cloned()
    };
    let sds = bootstrap(&[("APPMESH_SDS_SOCKET_PATH", "/run/spire/agent.sock")])
        .expect("the SDS cluster");
    assert_eq!(
        sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"],
        "/run/spire/agent.sock"
    );
    assert!(bootstrap(&[]).is_none());
}

/// A certificate refresh shorter than a second stops `serve` and `up` at once, naming the
/// flag.
#[test]
fn a_too_short_certificate_refresh_is_refused_at_start() {
    let serve = [&["serve"], tests::SERVE_ON_LOOPBACK].concat();
    let up = [&["up"], tests::UP_ON_FREE_PORTS].concat();
    for command in [serve, up] {
        let args = [&command[..], &["--certificate-refresh", "500ms"]].concat();
        let (code, said) = tests::run_to_end("gophermesh", &args, &[]);
        assert_eq!(code, Some(2), "{command:?}: {said}");
        assert!(
            said.contains("--certificate-refresh") && said.contains("at least 1s"),
            "{command:?}: {said}"
        );
    }
}

/// Cloud Map flags that cannot work stop `serve` and `up` at once, naming the flag or the
/// variable.
#[test]
fn bad_cloud_map_flags_are_refused_at_start() {
    let dir = copy_of_shipped("serve-cloud-map-flags");
    let run = |command: &[&str], args: &[&str]| {
        let out = Command::new(bin("gophermesh"))
            .current_dir(&dir)
            .args(command)
            .args(args)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .output()
            .expect("gophermesh runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let serve = [&["serve"], tests::SERVE_ON_LOOPBACK].concat();
    let up = [&["up"], tests::UP_ON_FREE_PORTS].concat();
    for command in [&serve, &up] {
        let (code, said) = run(command, &["--cloud-map-interval", "0s"]);
        assert_eq!(code, Some(2), "{command:?}: {said}");
        assert!(
            said.contains("--cloud-map-interval") && said.contains("at least 10ms"),
            "{command:?}: {said}"
        );
        let (code, said) = run(command, &["--cloud-map", "sometimes"]);
        assert_eq!(code, Some(2), "{command:?}: {said}");
        assert!(
            said.contains("--cloud-map") && said.contains("auto, on, off"),
            "{command:?}: {said}"
        );
        let (code, said) = run(command, &["--cloud-map", "on"]);
        assert_eq!(code, Some(1), "{command:?}: {said}");
        assert!(
            said.contains("--cloud-map on") && said.contains("AWS_REGION"),
            "{command:?}: {said}"
        );
    }
}

/// Until every one of `nodes` (keyed `MESH/NODE`) is connected to `serve` and has ACKed
/// its current version.
async fn until_synced(serve: &Serve, nodes: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(&format!("{}/v1/status", serve.control)).await;
        let version = status["version"].as_u64();
        let synced = nodes.iter().all(|n| {
            let e = &status["envoys"][*n];
            e["connected"] == true && e["synced_version"].as_u64() >= version
        });
        if synced {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the tasks' Envoys did not sync with serve: {status}\n{}",
            serve.said()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `up --netns --control-plane`: the tasks run here, each in its own namespace, and their
/// Envoys are configured by a `serve` elsewhere (over TLS, with the agent's bootstrap), as
/// ECS tasks would be; a change made on serve reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_its_tasks_against_a_control_plane_elsewhere() {
    require_root_for_netns();
    // An address of this machine other than loopback, for serve to listen on.
    let host = Host::create();
    let dir = copy_of_shipped("up-remote");
    certificates(&dir, &host.host_ip);
    let serve = start_serve(&dir, &host.host_ip);
    let ca = dir.join("ca.pem").display().to_string();
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Netns,
        &["--control-plane", &serve.xds, "--control-plane-ca", &ca],
    );
    assert!(
        mesh.output()
            .contains(&format!("elsewhere, at {}", serve.xds)),
        "{}",
        mesh.output()
    );
    let nodes = [
        "gophermesh/requester",
        "gophermesh/distributor-v1",
        "gophermesh/distributor-v2",
    ];
    until_synced(&serve, &nodes).await;
    let report = compare(&mesh, 2000, 8).await;
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = chi_square(&report, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );

    // A change on serve reaches the tasks here.
    let token = std::fs::read_to_string(dir.join(".gophermesh/control-token")).expect("token");
    let response = client()
        .put(format!("{}/v1/routes/distributor/weights", serve.control))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"weights": {"distributor-v1": 0, "distributor-v2": 100}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    until_synced(&serve, &nodes).await;
    let report = compare(&mesh, 300, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (300.0, 0.0),
        "{report}"
    );
}

/// Writes `docs` into `dir/mesh/` as one `--cli-input-json` file each.
fn write_mesh(dir: &Path, docs: &[Value]) {
    let mesh = dir.join("mesh");
    let _ = std::fs::remove_dir_all(&mesh);
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(
            mesh.join(format!("{i:02}.json")),
            serde_json::to_vec_pretty(doc).expect("json"),
        )
        .expect("written");
    }
}

/// Every App Mesh feature the translation takes reaches a real Envoy and is ACKed (no
/// NACK): a grpcRoute with service, method, metadata and gRPC retry events; HTTP matches
/// on path regex, headers of each kind, query parameters, scheme, method and port alone;
/// connection pools, outlier detection, health checks, timeouts and retries; access logs
/// in text and JSON formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_translated_feature_is_acked_by_a_real_envoy() {
    use serde_json::json;
    require_root_for_netns();
    let node = |name: &str, protocol: &str, backends: Value| {
        json!({"meshName": "features", "virtualNodeName": name, "spec": {
            "listeners": [{
                "portMapping": {"port": 8080, "protocol": protocol},
                "connectionPool": if protocol == "grpc" {
                    json!({"grpc": {"maxRequests": 64}})
                } else {
                    json!({"http": {"maxConnections": 32, "maxPendingRequests": 8}})
                },
                "outlierDetection": {"maxServerErrors": 5, "interval": {"value": 10, "unit": "s"},
                    "baseEjectionDuration": {"value": 30, "unit": "s"}, "maxEjectionPercent": 50},
                "healthCheck": {"protocol": if protocol == "grpc" { "grpc" } else { "http" },
                    "path": "/health", "healthyThreshold": 2, "unhealthyThreshold": 3,
                    "timeoutMillis": 2000, "intervalMillis": 5000},
                "timeout": {protocol: {"perRequest": {"value": 5, "unit": "s"}, "idle": {"value": 60, "unit": "s"}}}
            }],
            "serviceDiscovery": {"dns": {"hostname": format!("{name}.features.local")}},
            "backends": backends,
            "logging": {"accessLog": {"file": {"path": "/dev/stdout", "format": if protocol == "grpc" {
                json!({"json": [{"key": "status", "value": "%RESPONSE_CODE%"}, {"key": "path", "value": "%REQ(:PATH)%"}]})
            } else {
                json!({"text": "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%"})
            }}}}
        }})
    };
    let router = |name: &str, protocol: &str| {
        json!({"meshName": "features", "virtualRouterName": name, "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": protocol}}]}})
    };
    let service = |name: &str, router: &str| {
        json!({"meshName": "features", "virtualServiceName": name, "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": router}}}})
    };
    let targets = json!({"weightedTargets": [
        {"virtualNode": "web-v1", "weight": 3}, {"virtualNode": "web-v2", "weight": 1}]});
    let grpc_targets = json!({"weightedTargets": [
        {"virtualNode": "rpc-v1", "weight": 9}, {"virtualNode": "rpc-v2", "weight": 1}]});
    let http_route = |name: &str, priority: i64, m: Value| {
        json!({"meshName": "features", "virtualRouterName": "web", "routeName": name, "spec": {
            "priority": priority,
            "httpRoute": {"match": m, "action": targets,
                "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"value": 500, "unit": "ms"},
                    "httpRetryEvents": ["server-error", "gateway-error", "client-error", "stream-error"],
                    "tcpRetryEvents": ["connection-error"]},
                "timeout": {"perRequest": {"value": 3, "unit": "s"}, "idle": {"value": 30, "unit": "s"}}}}})
    };
    let docs = vec![
        json!({"meshName": "features", "spec": {"egressFilter": {"type": "DROP_ALL"}}}),
        node("web-v1", "http", json!([])),
        node("web-v2", "http", json!([])),
        node("rpc-v1", "grpc", json!([])),
        node("rpc-v2", "grpc", json!([])),
        router("web", "http"),
        router("rpc", "grpc"),
        http_route(
            "regex",
            1,
            json!({"path": {"regex": "/api/v[0-9]+/.*"},
            "headers": [
                {"name": "x-exact", "match": {"exact": "a"}},
                {"name": "x-prefix", "match": {"prefix": "b"}},
                {"name": "x-suffix", "match": {"suffix": "c"}},
                {"name": "x-regex", "match": {"regex": "d+"}},
                {"name": "x-range", "match": {"range": {"start": 1, "end": 9}}},
                {"name": "x-present"},
                {"name": "x-not", "invert": true, "match": {"exact": "e"}}
            ]}),
        ),
        http_route(
            "query",
            2,
            json!({"prefix": "/", "method": "POST", "scheme": "https",
            "queryParameters": [{"name": "canary", "match": {"exact": "1"}}, {"name": "debug"}]}),
        ),
        http_route("by-port", 3, json!({"port": 8080})),
        json!({"meshName": "features", "virtualRouterName": "rpc", "routeName": "rpc", "spec": {
            "grpcRoute": {
                "match": {"serviceName": "gopher.Gopher", "methodName": "Get",
                    "metadata": [{"name": "x-canary", "match": {"prefix": "y"}}]},
                "action": grpc_targets,
                "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"value": 1, "unit": "s"},
                    "grpcRetryEvents": ["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]},
                "timeout": {"perRequest": {"value": 2, "unit": "s"}}}}}),
        service("web.features.local", "web"),
        service("rpc.features.local", "rpc"),
        // Several listeners: a node and a router on an http and a grpc port, each route
        // and target naming its port.
        json!({"meshName": "features", "virtualNodeName": "multi", "spec": {
            "listeners": [
                {"portMapping": {"port": 8080, "protocol": "http"},
                 "connectionPool": {"http": {"maxConnections": 16}}},
                {"portMapping": {"port": 9090, "protocol": "grpc"},
                 "healthCheck": {"protocol": "grpc", "port": 9091, "healthyThreshold": 2, "unhealthyThreshold": 2,
                     "timeoutMillis": 2000, "intervalMillis": 5000}}
            ],
            "serviceDiscovery": {"dns": {"hostname": "multi.features.local"}}}}),
        json!({"meshName": "features", "virtualRouterName": "both", "spec": {"listeners": [
            {"portMapping": {"port": 8080, "protocol": "http"}},
            {"portMapping": {"port": 9090, "protocol": "grpc"}}]}}),
        json!({"meshName": "features", "virtualRouterName": "both", "routeName": "web", "spec": {
            "httpRoute": {"match": {"prefix": "/", "port": 8080}, "action": {"weightedTargets": [
                {"virtualNode": "multi", "weight": 1, "port": 8080}]}}}}),
        json!({"meshName": "features", "virtualRouterName": "both", "routeName": "rpc", "spec": {
            "grpcRoute": {"match": {"port": 9090}, "action": {"weightedTargets": [
                {"virtualNode": "multi", "weight": 1, "port": 9090}]}}}}),
        service("both.features.local", "both"),
        // TCP: a node whose listener is tcp, a router with a weighted tcpRoute.
        json!({"meshName": "features", "virtualNodeName": "db", "spec": {
            "listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"},
                "timeout": {"tcp": {"idle": {"value": 600, "unit": "s"}}},
                "healthCheck": {"protocol": "tcp", "healthyThreshold": 2, "unhealthyThreshold": 2,
                    "timeoutMillis": 2000, "intervalMillis": 5000}}],
            "serviceDiscovery": {"dns": {"hostname": "db.features.local"}}}}),
        json!({"meshName": "features", "virtualRouterName": "data", "spec": {
            "listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}]}}),
        json!({"meshName": "features", "virtualRouterName": "data", "routeName": "data", "spec": {
            "tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "db", "weight": 1}]},
                "timeout": {"idle": {"value": 30, "unit": "s"}}}}}),
        service("data.features.local", "data"),
        node(
            "client",
            "http",
            json!([{"virtualService": {"virtualServiceName": "web.features.local"}},
                   {"virtualService": {"virtualServiceName": "rpc.features.local"}},
                   {"virtualService": {"virtualServiceName": "both.features.local"}},
                   {"virtualService": {"virtualServiceName": "data.features.local"}}]),
        ),
        // A virtual gateway with an http and a grpc listener.
        json!({"meshName": "features", "virtualGatewayName": "edge", "spec": {
            "listeners": [
                {"portMapping": {"port": 8000, "protocol": "http"},
                 "connectionPool": {"http": {"maxConnections": 64}}},
                {"portMapping": {"port": 8001, "protocol": "grpc"}}],
            "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}}}}),
        json!({"meshName": "features", "virtualGatewayName": "edge", "gatewayRouteName": "web",
            "spec": {"priority": 1, "httpRoute": {
                "match": {"prefix": "/web/", "method": "GET",
                    "headers": [{"name": "x-canary", "match": {"exact": "1"}}],
                    "queryParameters": [{"name": "q", "match": {"exact": "1"}}]},
                "action": {"target": {"virtualService": {"virtualServiceName": "web.features.local"}},
                    "rewrite": {"prefix": {"value": "/api/"}, "hostname": {"defaultTargetHostname": "DISABLED"}}}}}}),
        json!({"meshName": "features", "virtualGatewayName": "edge", "gatewayRouteName": "both",
            "spec": {"httpRoute": {
                "match": {"hostname": {"suffix": ".example"}, "path": {"exact": "/old"}},
                "action": {"target": {"virtualService": {"virtualServiceName": "both.features.local"}, "port": 8080},
                    "rewrite": {"path": {"exact": "/new"}}}}}}),
        json!({"meshName": "features", "virtualGatewayName": "edge", "gatewayRouteName": "rpc",
            "spec": {"grpcRoute": {
                "match": {"serviceName": "gopher.Gopher", "metadata": [{"name": "x-canary", "match": {"prefix": "y"}}]},
                "action": {"target": {"virtualService": {"virtualServiceName": "rpc.features.local"}}}}}}),
    ];
    let host = Host::create();
    let dir = copy_of_shipped("features");
    write_mesh(&dir, &docs);
    certificates(&dir, &host.host_ip);
    let serve = start_serve(&dir, &host.host_ip);

    // The client's Envoy, one server's of each protocol, the node of several listeners and
    // the gateway, each in a namespace of its own.
    let nodes = [
        "client",
        "web-v1",
        "rpc-v1",
        "multi",
        "db",
        "virtualGateway/edge",
    ];
    let hosts: Vec<Host> = nodes[1..]
        .iter()
        .map(|_| {
            let other = Host::create();
            other.reach(&host.host_ip);
            other
        })
        .collect();
    let work = TempDir::new("features-envoys");
    let mut envoys = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let boot = work.join(format!("{}.json", node.replace('/', "-")));
        tests::serve::agent_bootstrap(
            &dir.join("ca.pem"),
            &match node.strip_prefix("virtualGateway/") {
                Some(gateway) => format!("mesh/features/virtualGateway/{gateway}"),
                None => format!("mesh/features/virtualNode/{node}"),
            },
            &serve.xds,
            &boot,
        );
        envoys.push(match i {
            0 => host.envoy(&boot),
            _ => hosts[i - 1].envoy(&boot),
        });
    }
    let keys: Vec<String> = nodes.iter().map(|n| format!("features/{n}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let status = until_synced(&serve, &keys).await;
    for node in keys {
        let e = &status["envoys"][node];
        assert!(e["last_nack"].is_null(), "{node} NACKed: {e}");
        for kind in ["clusters", "listeners", "routes"] {
            assert!(
                e["acked"][kind].is_string(),
                "{node} did not ACK {kind}: {e}"
            );
        }
    }
}

/// Cloud Map discovery under `serve`: the distributors' nodes are found in Cloud Map
/// (moto's, set up with the AWS CLI: one service, an instance per version with a `version`
/// attribute) instead of by DNS. serve looks them up, and a real Envoy elsewhere sends the
/// requester's traffic to those instances 90/10, its endpoints sent by EDS; once v2's
/// instance is deregistered, the next lookup empties v2's endpoints (by EDS alone, the
/// clusters unchanged) and no answer comes from v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_map_nodes_are_reached_at_the_instances_serve_looks_up() {
    require_root_for_netns();
    let moto = tests::moto::Moto::bare(&[]);
    moto.aws(&[
        "servicediscovery",
        "create-http-namespace",
        "--name",
        "gophers.local",
    ]);
    let namespace = moto.aws(&[
        "servicediscovery",
        "list-namespaces",
        "--query",
        "Namespaces[?Name=='gophers.local'].Id",
        "--output",
        "text",
    ]);
    let service = moto.aws(&[
        "servicediscovery",
        "create-service",
        "--name",
        "distributor",
        "--namespace-id",
        &namespace,
        "--query",
        "Service.Id",
        "--output",
        "text",
    ]);
    for (version, ip) in [("v1", "127.0.0.2"), ("v2", "127.0.0.3")] {
        moto.aws(&[
            "servicediscovery",
            "register-instance",
            "--service-id",
            &service,
            "--instance-id",
            &format!("distributor-{version}"),
            "--attributes",
            &format!("AWS_INSTANCE_IPV4={ip},AWS_INSTANCE_PORT=8080,version={version}"),
        ]);
    }

    let host = Host::create();
    let dir = copy_of_shipped("serve-cloud-map");
    for version in ["v1", "v2"] {
        let file = dir.join(format!("mesh/virtual-nodes/distributor-{version}.json"));
        let mut node: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("node")).expect("JSON");
        node["spec"]["serviceDiscovery"] = serde_json::json!({"awsCloudMap": {
            "namespaceName": "gophers.local", "serviceName": "distributor",
            "attributes": [{"key": "version", "value": version}]}});
        std::fs::write(&file, node.to_string()).expect("write");
    }
    certificates(&dir, &host.host_ip);
    let mut env = moto.env.clone();
    env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()));
    let serve = start_serve_with(
        &dir,
        &host.host_ip,
        &host.host_ip,
        &["--cloud-map", "on", "--cloud-map-interval", "200ms"],
        &env,
    );
    assert!(
        serve
            .said()
            .contains("Cloud Map: looking up its nodes (2 now)"),
        "{}",
        serve.said()
    );
    let (_work, _envoy) = requester_envoy(&host, &dir, &serve).await;
    let (_gophers, listen) = host.gophers();

    let url = format!("http://{listen}/compare?n=1000&concurrency=8&format=json");
    let compare = || get_json(&url);
    // The first lookup may land after the Envoy's first configuration: until then, the
    // distributors have no endpoints and the requester reports failures.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut report = compare().await;
    while report["ok"] != 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        report = compare().await;
    }
    assert_eq!(report["ok"], 1000, "{report}\n{}", serve.said());
    let chi = chi_square(&report, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );
    assert!(count(&report, "v2") > 0.0, "{report}");
    // The instances came by EDS (the requester's Envoy ACKed endpoints).
    let acked = |status: &Value, kind: &str| {
        status["envoys"]["gophermesh/requester"]["acked"][kind].clone()
    };
    let before = get_json(&format!("{}/v1/status", serve.control)).await;
    assert!(acked(&before, "endpoints").is_string(), "{before}");

    moto.aws(&[
        "servicediscovery",
        "deregister-instance",
        "--service-id",
        &service,
        "--instance-id",
        "distributor-v2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut report = compare().await;
    while count(&report, "v2") > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        report = compare().await;
    }
    assert_eq!(count(&report, "v2"), 0.0, "{report}\n{}", serve.said());
    // v2's share has nowhere to go: the route still sends it there, and Envoy answers 503.
    assert!(count(&report, "v1") > 800.0, "{report}");
    assert!(report["ok"].as_f64().unwrap_or(0.0) < 1000.0, "{report}");
    // The change of instances was a change of endpoints only: the clusters the Envoy
    // ACKed are those it had.
    let after = get_json(&format!("{}/v1/status", serve.control)).await;
    assert_eq!(
        acked(&after, "clusters"),
        acked(&before, "clusters"),
        "{after}"
    );
    assert_ne!(
        acked(&after, "endpoints"),
        acked(&before, "endpoints"),
        "{after}"
    );
}

/// A second mesh made through `serve`'s App Mesh API (the AWS CLI, signed) beside the
/// shipped one: a real Envoy elsewhere whose node id names a node of that mesh gets the
/// node's configuration and ACKs it, shown as `@shop/web`, while the shipped mesh's
/// requester is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_of_a_second_mesh_gets_it_from_serve() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("serve-second-mesh");
    certificates(&dir, &host.host_ip);
    // The App Mesh API on loopback (plain there), for the AWS CLI on this machine.
    let serve = start_serve_with(&dir, &host.host_ip, "127.0.0.1", &[], &[]);
    let api = |args: &[&str]| {
        let (code, out, err) =
            tests::aws_appmesh(&serve.appmesh, (KEY_ID, SECRET), "us-east-1", args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    api(&["create-mesh", "--mesh-name", "shop"]);
    let web = serde_json::json!({"meshName": "shop", "virtualNodeName": "web", "spec": {
        "listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}}}});
    api(&["create-virtual-node", "--cli-input-json", &web.to_string()]);

    let (_work, _envoy) = envoy_in_sync(
        &host,
        &dir,
        &serve,
        "shop/virtualNode/web",
        "shop/web",
        "listeners",
    )
    .await;
    let status = get_json(&format!("{}/v1/status", serve.control)).await;
    let held: Vec<&Value> = status["meshes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(held, ["gophermesh", "shop"], "{status}");
}

/// This process's resident memory in MiB (`VmRSS`).
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// 60 streams each sending a 3.9 MB request (100,000 resource names) do not take the
/// control plane's memory: each is refused at its length, and memory stays near where it
/// was (before the cap: 41 MB to 686 MB, kept after the streams closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_ads_requests_are_refused_without_holding_memory() {
    let dir = copy_of_shipped("serve-huge-requests");
    let serve = Serve::start(&dir, tests::SERVE_ON_LOOPBACK, &[]);
    let pid = serve.child.0.id();
    let names: Vec<String> = (0..100_000)
        .map(|i| format!("cds_egress_gophermesh_resource_{i:08}"))
        .collect();
    let request = tests::ads::request(
        "mesh/gophermesh/virtualNode/requester",
        controlplane::translate::ENDPOINT_TYPE,
        names,
    );
    let size = prost::Message::encoded_len(&request);
    let before = resident_mib(pid);
    // The peak, sampled every 2 ms on a thread of its own while the streams run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(resident_mib(pid));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let streams: Vec<_> = (0..60)
        .map(|_| {
            let (xds, request) = (serve.xds.clone(), request.clone());
            tokio::spawn(async move { tests::ads::first_answer(&xds, request).await })
        })
        .collect();
    let mut refused = 0;
    for stream in streams {
        match stream.await.expect("joined") {
            Ok(answer) => panic!("a {size}-byte request was answered: {answer:?}"),
            Err(status) => refused += usize::from(status.code() != tonic::Code::Unavailable),
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampled");
    let after = resident_mib(pid);
    println!(
        "60 requests of {:.1} MB: serve {before:.1} MiB before, {peak:.1} MiB at most while they were refused, {after:.1} MiB after",
        size as f64 / 1e6
    );
    assert_eq!(refused, 60, "every stream is refused by the server");
    assert!(
        peak - before < 64.0 && after - before < 32.0,
        "memory grew from {before:.1} to {peak:.1} MiB (after: {after:.1})"
    );
}
