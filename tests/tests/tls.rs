//! TLS and mutual TLS between the gophers, as App Mesh's listener `tls` and client policy
//! program them, on real Envoys in `up --netns`: the distributors' listeners take TLS only
//! (STRICT) and ask callers for a certificate from the test CA; the requester trusts that
//! CA, checks the distributors' names and shows its own certificate.

use std::path::Path;

use serde_json::{Value, json};
use tests::serve::{http_status_in, issue};
use tests::{LocalMesh, Mode, compare, copy_of_shipped, count};

fn edit(path: &Path, change: impl FnOnce(&mut Value)) {
    let mut doc: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    change(&mut doc);
    std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("json")).expect("written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mutual_tls_carries_the_mesh_and_refuses_plaintext_and_strangers() {
    tests::require_root_for_netns();
    let dir = copy_of_shipped("tls");
    let certs = dir.join("tls");
    std::fs::create_dir_all(&certs).expect("tls dir");
    issue(
        &certs,
        &[
            (
                "distributor",
                &[
                    "DNS:distributor-v1.gophers.local",
                    "DNS:distributor-v2.gophers.local",
                ][..],
            ),
            ("requester", &["DNS:requester.gophers.local"][..]),
        ],
    );
    let file = |f: &str| certs.join(f).display().to_string();
    for node in ["distributor-v1", "distributor-v2"] {
        edit(
            &dir.join(format!("mesh/virtual-nodes/{node}.json")),
            |doc| {
                doc["spec"]["listeners"][0]["tls"] = json!({
                    "mode": "STRICT",
                    "certificate": {"file": {
                        "certificateChain": file("distributor.pem"),
                        "privateKey": file("distributor.key")}},
                    "validation": {
                        "trust": {"file": {"certificateChain": file("ca.pem")}},
                        "subjectAlternativeNames": {"match": {"exact": ["requester.gophers.local"]}}
                    }
                });
            },
        );
    }
    edit(&dir.join("mesh/virtual-nodes/requester.json"), |doc| {
        doc["spec"]["backendDefaults"] = json!({"clientPolicy": {"tls": {
            "certificate": {"file": {
                "certificateChain": file("requester.pem"),
                "privateKey": file("requester.key")}},
            "validation": {
                "trust": {"file": {"certificateChain": file("ca.pem")}},
                "subjectAlternativeNames": {"match": {"exact": [
                    "distributor-v1.gophers.local", "distributor-v2.gophers.local"]}}
            }
        }}});
    });
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);

    // The mesh still works, over mutual TLS between the Envoys.
    let report = compare(&mesh, 300, 8).await;
    assert_eq!(report["ok"], 300, "{report}");
    assert!(count(&report, "v1") > 0.0, "{report}");

    // From the hub (outside every task), straight at distributor-v1's task address, which
    // its rules send to its Envoy: plaintext gets nothing, TLS without a certificate gets
    // nothing, TLS with the requester's certificate gets the answer.
    let reach = mesh.reach("distributor-v1").await;
    let hub = format!("{}hub", mesh.namespace_prefix());
    assert_eq!(
        http_status_in(&hub, None, &[&format!("http://{reach}/")]),
        0,
        "plaintext was answered"
    );
    let ip = reach.split(':').next().expect("ip");
    let resolve = format!("distributor-v1.gophers.local:8080:{ip}");
    let url = "https://distributor-v1.gophers.local:8080/";
    let ca = file("ca.pem");
    assert_eq!(
        http_status_in(&hub, None, &["--cacert", &ca, "--resolve", &resolve, url]),
        0,
        "a caller without a certificate was answered"
    );
    let (cert, key) = (file("requester.pem"), file("requester.key"));
    assert_eq!(
        http_status_in(
            &hub,
            None,
            &[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "--cert",
                &cert,
                "--key",
                &key,
                url
            ]
        ),
        200,
        "the requester's certificate was refused"
    );
}
