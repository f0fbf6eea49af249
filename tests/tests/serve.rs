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
    CHI2_BOUND, LocalMesh, Mode, Service, TempDir, bin, chi_square, client, compare,
    copy_of_shipped, count, get_json, require_root_for_netns,
};

const KEY_ID: &str = "AKIDSERVETEST";
const SECRET: &str = "serve/test/secret";

/// `serve` on `host_ip` with TLS and SigV4, the control API on loopback.
fn start_serve(dir: &Path, host_ip: &str) -> Serve {
    Serve::start(
        dir,
        &[
            "--xds-listen",
            &format!("{host_ip}:0"),
            "--api-listen",
            &format!("{host_ip}:0"),
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
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_elsewhere_gets_its_node_from_serve_over_tls_and_splits_90_10() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("serve");
    certificates(&dir, &host.host_ip);
    let serve = start_serve(&dir, &host.host_ip);

    // The requester's task, elsewhere: its Envoy and its app; the distributors answer on
    // their own addresses (their DNS names), as other tasks would.
    let ns = Some(host.name.as_str());
    let _v1 = Service::start_in(
        ns,
        "distributor",
        &["--listen", "127.0.0.2:8080", "--version-tag", "v1"],
        &[],
    );
    let _v2 = Service::start_in(
        ns,
        "distributor",
        &["--listen", "127.0.0.3:8080", "--version-tag", "v2"],
        &[],
    );
    // Its bootstrap, from the variables the agent reads, as the sidecar would write it.
    let work = TempDir::new("serve-envoy");
    let boot = work.join("bootstrap.json");
    let (code, said) = tests::run_to_end(
        "gophermesh",
        &[
            "bootstrap",
            "--ca-file",
            &dir.join("ca.pem").display().to_string(),
            "--out",
            &boot.display().to_string(),
        ],
        &[
            (
                "APPMESH_RESOURCE_ARN",
                "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualNode/requester",
            ),
            ("APPMESH_XDS_ENDPOINT", &serve.xds),
        ],
    );
    assert_eq!(code, Some(0), "{said}");
    let _envoy = host.envoy(&boot);
    let listen = format!("{}:8080", host.task_ip);
    let requester = Service::start_in(
        ns,
        "requester",
        &[
            "--listen",
            &listen,
            "--distributor-url",
            "http://distributor.gophers.local:8080",
            "--egress-proxy",
            "http://127.0.0.1:15001",
        ],
        &[],
    );
    let _ = requester.addr;

    // serve shows the Envoy connected and in sync, with no problem.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = get_json(&format!("{}/v1/status", serve.control)).await;
        let e = &status["envoys"]["requester"];
        if e["connected"] == true && e["acked"]["routes"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &status["envoys"]["requester"];
    assert!(
        e["connected"] == true && e["acked"]["routes"].is_string() && e["problem"].is_null(),
        "the Envoy did not get its configuration: {status}\n{}",
        serve.said()
    );

    // Traffic: the requester, through its Envoy, to both versions by DNS, 90/10.
    let url = format!(
        "http://{}:8080/compare?n=2000&concurrency=8&format=json",
        host.task_ip
    );
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

/// Until every one of `nodes` is connected to `serve` and has ACKed its current version.
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
    let nodes = ["requester", "distributor-v1", "distributor-v2"];
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
