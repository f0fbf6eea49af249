//! Replicas of `gophermesh serve` sharing one DynamoDB table (moto's): they seed it once,
//! lose no write made through either, and each pushes what the other stored to its own
//! Envoys.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::moto::Moto;
use tests::serve::{Host, Serve};
use tests::{client, copy_of_shipped, get_json};

const TABLE: &str = tests::serve::TABLE;

fn moto_with_table() -> (Moto, Vec<(String, String)>) {
    tests::serve::moto_with_table(TABLE)
}

fn replica(dir: &Path, name: &str, xds_ip: &str, env: &[(String, String)]) -> Serve {
    tests::serve::replica(dir, name, xds_ip, env)
}

/// Both replicas, started at the same moment on the same empty table.
fn two_replicas(dir: &Path, xds_ip: &str, env: &[(String, String)]) -> (Serve, Serve) {
    std::thread::scope(|s| {
        let a = s.spawn(|| replica(dir, "a", xds_ip, env));
        let b = s.spawn(|| replica(dir, "b", xds_ip, env));
        (a.join().expect("a starts"), b.join().expect("b starts"))
    })
}

/// Every virtual node a replica's App Mesh API lists (following `nextToken`).
async fn listed_nodes(api: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{api}/v20190125/meshes/gophermesh/virtualNodes?limit=100");
        if let Some(t) = &token {
            url.push_str(&format!("&nextToken={t}"));
        }
        let page = get_json(&url).await;
        for n in page["virtualNodes"].as_array().expect("virtualNodes") {
            names.insert(n["virtualNodeName"].as_str().expect("name").to_owned());
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return names,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_seed_one_table_once_and_lose_none_of_200_concurrent_writes() {
    let (_moto, env) = moto_with_table();
    let dir = copy_of_shipped("replicas-writes");
    let (a, b) = two_replicas(&dir, "127.0.0.1", &env);
    let (said_a, said_b) = (a.said(), b.said());
    let seeded = [&said_a, &said_b]
        .iter()
        .filter(|s| s.contains("seeded from"))
        .count();
    let restored = [&said_a, &said_b]
        .iter()
        .filter(|s| s.contains("14 resources restored from dynamodb://"))
        .count();
    assert_eq!(
        (seeded, restored),
        (1, 1),
        "one replica seeds the table, the other finds it seeded:\n{said_a}\n{said_b}"
    );

    // 200 creates, half through each replica, 16 at a time on each (the API's limit per
    // client address).
    let http = client();
    let limits = [
        Arc::new(tokio::sync::Semaphore::new(16)),
        Arc::new(tokio::sync::Semaphore::new(16)),
    ];
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let (api, limit) = match i % 2 {
                0 => (a.appmesh.clone(), limits[0].clone()),
                _ => (b.appmesh.clone(), limits[1].clone()),
            };
            let http = http.clone();
            let name = format!("node-{i:03}");
            tokio::spawn(async move {
                let _place = limit.acquire_owned().await.expect("semaphore");
                let body = json!({
                    "virtualNodeName": name,
                    "spec": {
                        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                        "serviceDiscovery": {"dns": {"hostname": format!("{name}.gophers.local")}}
                    }
                });
                let response = http
                    .put(format!("{api}/v20190125/meshes/gophermesh/virtualNodes"))
                    .json(&body)
                    .send()
                    .await
                    .expect("sent");
                let status = response.status().as_u16();
                (name, status, response.text().await.unwrap_or_default())
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    let mut refused = Vec::new();
    for w in writes {
        let (name, status, text) = w.await.expect("joined");
        match status {
            200 => {
                acknowledged.insert(name);
            }
            _ => refused.push(format!("{name}: {status} {text}")),
        }
    }
    assert!(refused.is_empty(), "writes were refused: {refused:#?}");

    // Both replicas then describe one mesh: the shipped nodes and every acknowledged one.
    let mut expected: BTreeSet<String> = ["distributor-v1", "distributor-v2", "requester"]
        .map(str::to_owned)
        .into();
    expected.extend(acknowledged.iter().cloned());
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut on_a, mut on_b);
    loop {
        (on_a, on_b) = (
            listed_nodes(&a.appmesh).await,
            listed_nodes(&b.appmesh).await,
        );
        if (on_a == expected && on_b == expected) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(on_a, expected, "replica A lost or invented nodes");
    assert_eq!(on_b, expected, "replica B lost or invented nodes");
    let (status_a, status_b) = (
        get_json(&format!("{}/v1/status", a.control)).await,
        get_json(&format!("{}/v1/status", b.control)).await,
    );
    assert_eq!(
        status_a["store"]["failed_writes"], 0,
        "conflicts are not failures: {status_a}"
    );
    assert_eq!(status_b["store"]["failed_writes"], 0, "{status_b}");
}

/// Writes `value` as JSON to `path`.
fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("written");
}

/// A real Envoy in TCP proxy mode in front of both replicas' ADS, as the Network Load
/// Balancer is on ECS: round robin, a TCP health check every 250 ms, a second connect
/// attempt when one fails. Returns it and the port it listens on (all addresses).
fn load_balancer(work: &Path, replicas: [&str; 2]) -> (tests::Guard, u16) {
    let endpoint = |addr: &str| {
        let (ip, port) = addr.rsplit_once(':').expect("HOST:PORT");
        json!({"endpoint": {"address": {"socket_address": {
            "address": ip, "port_value": port.parse::<u16>().expect("port")}}}})
    };
    let config = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "nlb",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "nlb",
                        "cluster": "replicas",
                        "max_connect_attempts": 3
                    }
                }]}]
            }],
            "clusters": [{
                "name": "replicas",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "health_checks": [{
                    "timeout": "0.25s",
                    "interval": "0.25s",
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                    "tcp_health_check": {}
                }],
                "load_assignment": {"cluster_name": "replicas", "endpoints": [{
                    "lb_endpoints": [endpoint(replicas[0]), endpoint(replicas[1])]
                }]}
            }]
        }
    });
    let (config_path, admin_path) = (work.join("nlb.json"), work.join("nlb-admin"));
    write_json(&config_path, &config);
    let child = std::process::Command::new(tests::tool("envoy"))
        .args(["-c", &config_path.display().to_string()])
        .args(["--admin-address-path", &admin_path.display().to_string()])
        .args([
            "--disable-hot-restart",
            "--base-id",
            &std::process::id().to_string(),
        ])
        .args(["--concurrency", "1", "--log-level", "warning"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("envoy starts");
    let guard = tests::Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(admin) = std::fs::read_to_string(&admin_path) {
            let url = format!("http://{}/listeners?format=json", admin.trim());
            if let Ok(out) = std::process::Command::new("curl")
                .args(["-sf", &url])
                .output()
            {
                if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                    if let Some(port) = v["listener_statuses"][0]["local_address"]["socket_address"]
                        ["port_value"]
                        .as_u64()
                    {
                        return (guard, u16::try_from(port).expect("port"));
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "the load balancer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sidecar's bootstrap: virtual node `node` of task `task`, ADS (plaintext) at `xds`.
fn sidecar_bootstrap(path: &Path, node: &str, task: &str, xds: (&str, u16)) {
    let id = format!("mesh/gophermesh/virtualNode/{node}");
    write_json(
        path,
        &json!({
            "node": {
                "id": id,
                "cluster": id,
                "metadata": {"aws.appmesh.platformInfo": {"AwsEcsMetadata": {
                    "TaskArn": format!("arn:aws:ecs:us-east-1:111122223333:task/gophers/{task}")
                }}}
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"}
            },
            "static_resources": {"clusters": [{
                "name": "xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            "connection_keepalive": {"interval": "1s", "timeout": "1s"}
                        }}
                    }
                },
                "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": xds.0, "port_value": xds.1}}}
                }]}]}
            }]}
        }),
    );
}

/// Until the Envoy in `host` (admin on 127.0.0.1:9901 there) has completed at least `n`
/// requests to its upstream clusters, or fails after `limit`.
async fn until_completed(host: &Host, n: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &host.name, "curl", "-s"])
            .arg("http://127.0.0.1:9901/stats?filter=upstream_rq_completed$")
            .output()
            .expect("curl runs");
        let stats = String::from_utf8_lossy(&out.stdout);
        let completed: u64 = stats
            .lines()
            .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
            .sum();
        if completed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Envoy completed {completed} requests, not {n}, within {limit:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which of `nodes` have an Envoy connected to the replica whose status this is, and
/// whether each of those has ACKed everything up to its current version.
fn attached(status: &Value, nodes: &[&str]) -> Vec<(String, bool)> {
    let version = status["version"].as_u64().unwrap_or(u64::MAX);
    nodes
        .iter()
        .filter(|n| status["envoys"][tests::shipped_key(n)]["connected"] == true)
        .map(|n| {
            let synced = status["envoys"][tests::shipped_key(n)]["synced_version"]
                .as_u64()
                .is_some_and(|v| v >= version);
            ((*n).to_owned(), synced)
        })
        .collect()
}

/// Until each of `nodes` is connected to one of `replicas` and synced there; returns
/// which replica (index) each is on.
async fn until_attached(replicas: &[&Serve], nodes: &[&str], within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    let mut statuses = Vec::new();
    while Instant::now() < deadline {
        statuses.clear();
        for r in replicas {
            statuses.push(get_json(&format!("{}/v1/status", r.control)).await);
        }
        let on: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| {
                statuses
                    .iter()
                    .position(|s| attached(s, &[n]).first().is_some_and(|(_, synced)| *synced))
            })
            .collect();
        if on.iter().all(Option::is_some) {
            return on.into_iter().flatten().collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the Envoys did not attach and sync within {within:?}: {statuses:#?}");
}

/// Sets the distributor route's weights through `replica`'s control API.
async fn set_weights(replica: &Serve, dir: &Path, state_dir: &str, v1: i64) {
    let token =
        std::fs::read_to_string(dir.join(state_dir).join("control-token")).expect("control token");
    let response = client()
        .put(format!("{}/v1/routes/distributor/weights", replica.control))
        .bearer_auth(token.trim())
        .json(&json!({"weights": {"distributor-v1": v1, "distributor-v2": 100 - v1}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_behind_a_load_balancer_follow_changes_through_either_replica_and_survive_a_kill() {
    tests::require_root_for_netns();
    let (moto, env) = moto_with_table();
    let dir = copy_of_shipped("replicas-envoys");
    let (a, b) = two_replicas(&dir, "127.0.0.1", &env);
    let mut replicas = [Some(a), Some(b)];
    let state_dirs = ["a", "b"];

    // A second requester (another virtual node that routes to the distributor), so that
    // each Envoy is a node of its own in the replicas' status.
    let node = json!({
        "virtualNodeName": "requester-2",
        "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "requester-2.gophers.local"}},
            "backends": [{"virtualService": {"virtualServiceName": "distributor.gophers.local"}}]
        }
    });
    let created = client()
        .put(format!(
            "{}/v20190125/meshes/gophermesh/virtualNodes",
            replicas[0].as_ref().expect("a").appmesh
        ))
        .json(&node)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        created.status(),
        200,
        "{}",
        created.text().await.unwrap_or_default()
    );

    let work = tests::TempDir::new("replicas-envoys");
    let (_nlb, nlb_port) = load_balancer(
        &work,
        [
            replicas[0].as_ref().expect("a").xds.as_str(),
            replicas[1].as_ref().expect("b").xds.as_str(),
        ],
    );
    let hosts = [Host::create(), Host::create()];
    let nodes = ["requester", "requester-2"];
    let mut envoys = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let boot = work.join(format!("sidecar-{i}.json"));
        sidecar_bootstrap(
            &boot,
            nodes[i],
            &format!("task-{i}"),
            (&host.host_ip, nlb_port),
        );
        envoys.push(host.envoy(&boot));
    }
    let both: Vec<&Serve> = replicas.iter().flatten().collect();
    let on = until_attached(&both, &nodes, Duration::from_secs(30)).await;

    // 20 changes, each through the replica with fewer of the Envoys, timed until every
    // Envoy on the other one has ACKed it.
    let mut took = Vec::new();
    for change in 0..20 {
        let writer = usize::from(
            on.iter().filter(|r| **r == 1).count() < on.iter().filter(|r| **r == 0).count(),
        );
        let reader = 1 - writer;
        let watched: Vec<&str> = nodes
            .iter()
            .zip(&on)
            .filter(|(_, r)| **r == reader)
            .map(|(n, _)| *n)
            .collect();
        let v1 = 10 + change;
        let (w, r) = (
            replicas[writer].as_ref().expect("writer"),
            replicas[reader].as_ref().expect("reader"),
        );
        let started = Instant::now();
        set_weights(w, &dir, state_dirs[writer], v1).await;
        loop {
            let status = get_json(&format!("{}/v1/status", r.control)).await;
            let reached = tests::route_weights(&status, "distributor") == [v1, 100 - v1]
                && attached(&status, &watched)
                    .iter()
                    .all(|(_, synced)| *synced)
                && attached(&status, &watched).len() == watched.len();
            if reached {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "change {change} did not reach the Envoys on replica {reader}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = took[took.len() * 99 / 100];
    println!(
        "a change through one replica ACKed by the Envoys on the other: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} changes",
        ms(took[took.len() / 2]),
        ms(p99),
        ms(took[took.len() - 1]),
        took.len()
    );
    // The figure is printed, not budgeted: a timing budget on a shared machine flakes.
    // What must hold is above: every change reached every Envoy (within 10 s each).

    // Under load: the requester's task (app and distributors) in the first host, calls
    // flowing through its Envoy while the replica that Envoy is attached to is killed.
    let (_gophers, listen) = hosts[0].gophers();
    let url = format!("http://{listen}/compare?n=3000&concurrency=4&format=json");
    let load = tokio::spawn(async move {
        client()
            .get(&url)
            .send()
            .await
            .expect("the requester answers")
            .json::<Value>()
            .await
            .expect("json")
    });
    // The replica dies once the calls flow through the Envoy (some have completed).
    until_completed(&hosts[0], 100, Duration::from_secs(30)).await;
    let victim = on[0];
    let mut killed = replicas[victim].take().expect("victim");
    killed.child.0.kill().expect("kill -9");
    let _ = killed.child.0.wait();
    let report = load.await.expect("joined");
    assert_eq!(
        report["ok"], 3000,
        "requests failed while a replica died: {report}"
    );

    // Every Envoy reconnects (through the load balancer) to the survivor and converges
    // on a change made there.
    let survivor = replicas[1 - victim].as_ref().expect("survivor");
    set_weights(survivor, &dir, state_dirs[1 - victim], 50).await;
    let on = until_attached(&[survivor], &nodes, Duration::from_secs(30)).await;
    assert_eq!(on, [0, 0]);
    let status = get_json(&format!("{}/v1/status", survivor.control)).await;
    assert_eq!(
        tests::route_weights(&status, "distributor"),
        [50, 50],
        "{status}"
    );

    // DynamoDB goes away: a change is answered 503 and not made; the Envoys keep their
    // configuration and the requests keep flowing.
    drop(moto);
    let token = std::fs::read_to_string(dir.join(state_dirs[1 - victim]).join("control-token"))
        .expect("control token");
    let refused = client()
        .put(format!(
            "{}/v1/routes/distributor/weights",
            survivor.control
        ))
        .bearer_auth(token.trim())
        .json(&json!({"weights": {"distributor-v1": 0, "distributor-v2": 100}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 503);
    let said = refused.text().await.unwrap_or_default();
    assert!(said.contains("cannot reach DynamoDB"), "{said}");
    let status = get_json(&format!("{}/v1/status", survivor.control)).await;
    assert_eq!(
        tests::route_weights(&status, "distributor"),
        [50, 50],
        "{status}"
    );
    assert_eq!(status["store"]["writable"], false, "{status}");
    let url = format!("http://{listen}/compare?n=300&concurrency=4&format=json");
    let report: Value = client()
        .get(&url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        report["ok"], 300,
        "the data plane failed while DynamoDB was away: {report}"
    );
    assert!(tests::count(&report, "v2") > 0.0, "still 50/50: {report}");
}

/// A replica that cannot use its table says why and never starts serving: the table is
/// missing, keyed otherwise, or the credentials are refused.
#[test]
fn a_replica_names_a_missing_table_a_wrongly_keyed_one_and_refused_credentials() {
    // moto checks credentials after the first four calls (the setup below).
    let moto = Moto::bare(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    moto.aws(&[
        "dynamodb",
        "create-table",
        "--table-name",
        "keyed-by-id",
        "--attribute-definitions",
        "AttributeName=id,AttributeType=S",
        "--key-schema",
        "AttributeName=id,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    moto.aws(&["iam", "create-user", "--user-name", "gophermesh"]);
    moto.aws(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "gophermesh",
        "--policy-name",
        "state",
        "--policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:*","Resource":"*"}]}"#,
    ]);
    let keys = moto.aws(&[
        "iam",
        "create-access-key",
        "--user-name",
        "gophermesh",
        "--query",
        "AccessKey.[AccessKeyId,SecretAccessKey]",
        "--output",
        "text",
    ]);
    let (id, secret) = keys.split_once('\t').expect("key id and secret");
    let good = [("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)];
    let refused = [
        ("AWS_ACCESS_KEY_ID", "AKIDNOTAUSER"),
        ("AWS_SECRET_ACCESS_KEY", "not/a/secret"),
    ];
    let dir = copy_of_shipped("replicas-refused");
    let dir_text = dir.display().to_string();
    for (table, credentials, words) in [
        (
            "no-such-table",
            good,
            "DynamoDB table no-such-table: it does not exist; create it with: aws dynamodb create-table --table-name no-such-table --attribute-definitions AttributeName=pk,AttributeType=S",
        ),
        (
            "keyed-by-id",
            good,
            "DynamoDB table keyed-by-id: its key must be one string partition key `pk`",
        ),
        (
            "keyed-by-id",
            refused,
            "security token included in the request is invalid",
        ),
    ] {
        let state = format!("dynamodb://{table}");
        let mut env = vec![
            ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
        ];
        env.extend(credentials);
        let (code, said) = tests::run_to_end(
            "gophermesh",
            &[
                &[
                    "serve",
                    "--mesh-dir",
                    &format!("{dir_text}/mesh"),
                    "--state",
                    &state,
                ],
                tests::SERVE_ON_LOOPBACK,
                &["--state-dir", &format!("{dir_text}/state")],
            ]
            .concat(),
            &env,
        );
        assert_ne!(code, Some(0), "{table}: {said}");
        assert!(
            said.contains(words),
            "{table}: expected `{words}` in:\n{said}"
        );
        assert!(
            !said.contains("ready"),
            "{table}: it served anyway:\n{said}"
        );
    }
}

/// Two replicas given the same `--mesh-ca-seal-key` (here through its variable) on one
/// table issue from one mesh CA: whichever stored it first, the other reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_sealed_mesh_ca() {
    let (_moto, mut env) = moto_with_table();
    let dir = copy_of_shipped("replicas-mesh-ca");
    tests::edit_json(&dir, "mesh/mesh.json", |doc| {
        doc["tags"] = json!([{"key": "gophermesh:mtls", "value": "STRICT"}]);
    });
    let seal = dir.join("seal.key");
    std::fs::write(&seal, "5a".repeat(32)).expect("seal key written");
    env.push((
        "GOPHERMESH_MESH_CA_SEAL_KEY".to_owned(),
        seal.display().to_string(),
    ));
    let (a, b) = two_replicas(&dir, "127.0.0.1", &env);
    let ca_of = |status: &Value| tests::certificate_serial(status, "mesh-ca", None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ca_a, ca_b) = loop {
        let sa = get_json(&format!("{}/v1/status", a.control)).await;
        let sb = get_json(&format!("{}/v1/status", b.control)).await;
        if let (Some(x), Some(y)) = (ca_of(&sa), ca_of(&sb)) {
            break (x, y);
        }
        assert!(
            Instant::now() < deadline,
            "both replicas read a mesh CA within 20 s:\n{sa:#}\n{sb:#}\n{}\n{}",
            a.said(),
            b.said()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ca_a, ca_b, "one CA for both replicas");
}

/// A mesh of more resources than one DynamoDB transaction holds (97) seeds an empty table
/// in parts, and a replica started after loads all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_larger_than_one_transaction_seeds_the_table_in_parts() {
    let (_moto, env) = moto_with_table();
    let dir = copy_of_shipped("replicas-large-seed");
    let listener = json!([{"portMapping": {"port": 8080, "protocol": "http"}}]);
    for i in 0..60 {
        let name = format!("extra-{i:02}");
        let files = [
            (
                "virtual-nodes",
                json!({"meshName": "gophermesh", "virtualNodeName": name, "spec": {
                    "listeners": listener,
                    "serviceDiscovery": {"dns": {"hostname": format!("{name}.gophers.local")}}
                }}),
            ),
            (
                "virtual-routers",
                json!({"meshName": "gophermesh", "virtualRouterName": name, "spec": {"listeners": listener}}),
            ),
            (
                "routes",
                json!({"meshName": "gophermesh", "virtualRouterName": name, "routeName": name, "spec": {
                    "httpRoute": {"match": {"prefix": "/"},
                        "action": {"weightedTargets": [{"virtualNode": name, "weight": 1}]}}
                }}),
            ),
        ];
        for (folder, resource) in files {
            write_json(
                &dir.join("mesh").join(folder).join(format!("{name}.json")),
                &resource,
            );
        }
    }
    let a = replica(&dir, "a", "127.0.0.1", &env);
    assert!(a.said().contains("seeded from"), "{}", a.said());
    let b = replica(&dir, "b", "127.0.0.1", &env);
    assert!(
        b.said().contains("194 resources restored from dynamodb://"),
        "the shipped 14 and the 180 added, in parts: {}",
        b.said()
    );
    let (on_a, on_b) = (
        listed_nodes(&a.appmesh).await,
        listed_nodes(&b.appmesh).await,
    );
    assert_eq!(on_a, on_b);
    assert!(
        (0..60).all(|i| on_b.contains(&format!("extra-{i:02}"))),
        "{on_b:?}"
    );
}
