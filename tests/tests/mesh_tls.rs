//! Mutual TLS the mesh sets up by itself (`gophermesh:mtls` on the mesh): the walkthrough
//! through its ingress gateway with every hop between Envoys on mesh certificates, from a
//! CA the test gives (`--mesh-ca-cert`, `--mesh-ca-key`) so that it can make certificates
//! of its own; plaintext, certificate-less and wrong-node callers refused; certificates
//! rotated every 20 s (a 30 s lifetime) with no failed request.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{LocalMesh, Mode, compare_at, copy_of_shipped, count, edit_json};

/// A certificate from the CA in `dir` whose URI is `uri`: `NAME.pem` and `NAME.key`.
fn issue_uri(dir: &Path, name: &str, uri: &str) {
    tests::serve::issue_leaf_with(
        dir,
        name,
        &format!("subjectAltName=URI:{uri}\nextendedKeyUsage=clientAuth,serverAuth\n"),
    );
}

/// The HTTP status of `GET https://ADDR/` at `reach` (a node's Envoy), checked against
/// `ca` (names not checked: the mesh's certificates carry URIs), showing `client`'s
/// certificate when given; 0 when there was no answer.
fn status_at(reach: &str, ca: &Path, client: Option<(&Path, &Path)>) -> u16 {
    let ca = ca.display().to_string();
    let url = format!("https://{reach}/");
    let mut args = vec!["--cacert", &ca, "--insecure"];
    let files = client.map(|(c, k)| (c.display().to_string(), k.display().to_string()));
    if let Some((cert, key)) = &files {
        args.extend(["--cert", cert, "--key", key]);
    }
    args.push(&url);
    tests::curl_status(&args)
}

/// The serial of distributor-v1's mesh certificate, as status shows it.
async fn mesh_serial(mesh: &LocalMesh) -> Option<String> {
    let status = mesh.status().await;
    tests::certificate_serial(
        &status,
        "mesh-certificate",
        Some("gophermesh/distributor-v1"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_on_its_own_mutual_tls_and_rotates_it() {
    let dir = copy_of_shipped("mesh-tls");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    tests::serve::issue_ca(&certs);
    edit_json(&dir, "mesh/mesh.json", |doc| {
        doc["tags"] = json!([{"key": "gophermesh:mtls", "value": "STRICT"}]);
    });
    let (ca_cert, ca_key) = (certs.join("ca.pem"), certs.join("ca.key"));
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Loopback,
        &[
            "--mesh-certificate-lifetime",
            "30s",
            "--mesh-ca-cert",
            &ca_cert.display().to_string(),
            "--mesh-ca-key",
            &ca_key.display().to_string(),
        ],
    );
    let gateway = mesh
        .gateway
        .clone()
        .expect("the ingress gateway is published");

    // Through the gateway: gateway -> requester -> distributors, each hop mutual TLS.
    let report = compare_at(&gateway, 300, 4).await;
    assert_eq!(report["ok"], 300, "{report}\n{}", mesh.output());
    assert!(count(&report, "v1") > 0.0, "{report}");
    assert!(
        mesh.listener_tls_handshakes("requester").await > 0,
        "the requester's Envoy took TLS from the gateway"
    );

    // Straight at distributor-v1's Envoy: plaintext, TLS without a certificate, and a mesh
    // certificate of a node that does not call it are refused; the requester's is taken.
    let reach = mesh.reach("distributor-v1").await;
    assert_eq!(
        tests::curl_status(&[&format!("http://{reach}/")]),
        0,
        "plaintext was answered"
    );
    assert_eq!(
        status_at(&reach, &ca_cert, None),
        0,
        "a caller without a certificate was answered"
    );
    issue_uri(
        &certs,
        "stranger",
        "spiffe://gophermesh/virtualNode/distributor-v2",
    );
    issue_uri(
        &certs,
        "caller",
        "spiffe://gophermesh/virtualNode/requester",
    );
    let pair = |n: &str| {
        (
            certs.join(format!("{n}.pem")),
            certs.join(format!("{n}.key")),
        )
    };
    let (s_cert, s_key) = pair("stranger");
    assert_eq!(
        status_at(&reach, &ca_cert, Some((&s_cert, &s_key))),
        0,
        "distributor-v2's identity (not a caller of distributor-v1) was answered"
    );
    let (c_cert, c_key) = pair("caller");
    assert_eq!(
        status_at(&reach, &ca_cert, Some((&c_cert, &c_key))),
        200,
        "the requester's identity was refused"
    );

    // Rotation: certificates of a 30 s lifetime are issued again every 20 s; calls go on
    // through two rotations of distributor-v1's certificate without one failing.
    let first = mesh_serial(&mesh)
        .await
        .expect("status shows distributor-v1's mesh certificate");
    let mut seen = vec![first];
    let (mut calls, started) = (0u64, Instant::now());
    while seen.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "two rotations within 75 s (saw {seen:?})"
        );
        let report = compare_at(&gateway, 400, 4).await;
        assert_eq!(
            report["ok"], 400,
            "a call failed across rotations: {report}"
        );
        calls += 400;
        let now = mesh_serial(&mesh).await.expect("serial");
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    assert!(
        calls >= 2000,
        "thousands of calls across the rotations ({calls})"
    );
    let status = mesh.status().await;
    for (node, envoy) in status["envoys"].as_object().expect("envoys") {
        assert!(
            envoy["last_nack"].is_null(),
            "{node}'s Envoy refused a configuration: {envoy:#}"
        );
    }
    eprintln!(
        "{calls} calls over {:?}, serials {seen:?}",
        started.elapsed()
    );
    let (code, text) = mesh.cli(&["status"]);
    assert_eq!(code, 0, "{text}");
    // The console's frame shows each node's certificate on its card.
    let frame = tests::get_json(&format!("{}/v1/live", mesh.control)).await;
    let card = frame["meshes"][0]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "distributor-v1"))
        .cloned()
        .expect("distributor-v1's card");
    let shown = &card["certificates"][0];
    assert_eq!(shown["kind"], "mesh-certificate", "{card:#}");
    assert!(
        shown["subject"]
            .as_str()
            .is_some_and(|s| s.contains("distributor-v1"))
            && shown["not_after"].is_string(),
        "{card:#}"
    );
    assert!(
        text.contains("mesh certificate of gophermesh/distributor-v1")
            && text.contains("spiffe://gophermesh/virtualNode/distributor-v1"),
        "status shows each node's mesh certificate:\n{text}"
    );
}

/// With `--mesh-ca-seal-key`, the mesh's CA is made once and kept in the store with its key
/// sealed (the store file holds no key in the clear): a restart over the same data issues
/// from the same CA, and the mesh runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_mesh_ca_in_the_store_outlives_a_restart() {
    let dir = copy_of_shipped("mesh-tls-sealed");
    edit_json(&dir, "mesh/mesh.json", |doc| {
        doc["tags"] = json!([{"key": "gophermesh:mtls", "value": "PERMISSIVE"}]);
    });
    let seal = dir.join("seal.key");
    std::fs::write(&seal, "ab".repeat(32)).expect("seal key written");
    let data = dir.join("data");
    let args = [
        "--data-dir",
        &data.display().to_string(),
        "--mesh-ca-seal-key",
        &seal.display().to_string(),
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut serials = Vec::new();
    for _ in 0..2 {
        let mut mesh = LocalMesh::start_with(&dir, Mode::Loopback, &args);
        let report = tests::compare(&mesh, 100, 4).await;
        assert_eq!(report["ok"], 100, "{report}\n{}", mesh.output());
        assert!(
            mesh.listener_tls_handshakes("requester").await == 0,
            "PERMISSIVE: the load enters plain"
        );
        assert!(
            mesh.listener_tls_handshakes("distributor-v1").await > 0,
            "the requester's Envoy called distributor-v1's on mesh certificates"
        );
        serials.push(
            tests::certificate_serial(&mesh.status().await, "mesh-ca", None)
                .expect("status shows the mesh CA"),
        );
        assert_eq!(mesh.stop(Duration::from_secs(20)), Some(0));
    }
    assert_eq!(serials[0], serials[1], "the same CA after the restart");
    let stored = std::fs::read(data.join("state.redb")).expect("the store file");
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("sealed_key"), "the CA is in the store");
    assert!(
        !text.contains("PRIVATE KEY"),
        "no key in the clear in the store"
    );
}
