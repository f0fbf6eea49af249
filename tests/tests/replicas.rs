//! Replicas of `gophermesh serve` sharing one DynamoDB table (moto's): they seed it once,
//! lose no write made through either, and each pushes what the other stored to its own
//! Envoys.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::moto::Moto;
use tests::serve::Serve;
use tests::{client, copy_of_shipped, get_json};

const TABLE: &str = "gophermesh-state";

/// moto with the state table made as the deploy script makes it; the environment that
/// points the AWS SDK at it.
fn moto_with_table() -> (Moto, Vec<(String, String)>) {
    let moto = Moto::start();
    moto.aws(&[
        "dynamodb",
        "create-table",
        "--table-name",
        TABLE,
        "--attribute-definitions",
        "AttributeName=pk,AttributeType=S",
        "--key-schema",
        "AttributeName=pk,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    let mut env = moto.env.clone();
    env.extend([
        ("AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
    ]);
    (moto, env)
}

/// A replica on loopback with its own state directory (its own control token).
fn replica(dir: &Path, name: &str, xds_ip: &str, env: &[(String, String)]) -> Serve {
    Serve::start(
        dir,
        &[
            "--state",
            &format!("dynamodb://{TABLE}"),
            "--xds-listen",
            &format!("{xds_ip}:0"),
            "--api-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--state-dir",
            name,
        ],
        env,
    )
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
        .filter(|s| s.contains("11 resources restored from dynamodb://"))
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
