//! A change whose answer from DynamoDB is lost: the replica asks again (the same
//! transaction, the same token) until the store says, and answers what happened, with one
//! version more, not a 503 for a change that was in fact stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to `upstream` that, while `lose` holds, passes requests on and drops the
/// answers (it reads them, then closes the client's connection): what a client sees when
/// its connection breaks after the request was sent.
struct LossyProxy {
    addr: std::net::SocketAddr,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
}

impl LossyProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let addr = listener.local_addr().expect("its address");
        let (lose, lost) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (lose_in, lost_in) = (lose.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, lose_in.clone(), lost_in.clone()));
            }
        });
        Self { addr, lose, lost }
    }
}

async fn relay(client: TcpStream, server: TcpStream, lose: Arc<AtomicBool>, lost: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if lose.load(Ordering::SeqCst) {
            lost.fetch_add(1, Ordering::SeqCst);
            let _ = client_write.shutdown().await;
            return;
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The table's version item, read straight from moto.
fn stored_version(moto: &tests::moto::Moto) -> u64 {
    let out = moto.aws(&[
        "dynamodb",
        "get-item",
        "--table-name",
        tests::serve::TABLE,
        "--consistent-read",
        "--key",
        r##"{"pk": {"S": "#version"}}"##,
    ]);
    let item: Value = serde_json::from_str(&out).expect("json");
    item["Item"]["version"]["N"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_answer_is_lost_is_answered_as_it_happened() {
    let (moto, mut env) = tests::serve::moto_with_table(tests::serve::TABLE);
    let upstream: std::net::SocketAddr = moto
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("moto on an address");
    let proxy = LossyProxy::start(upstream).await;
    for (k, v) in &mut env {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://{}", proxy.addr);
        }
    }
    let dir = tests::copy_of_shipped("honest-writes");
    let replica = tests::serve::replica(&dir, "a", "127.0.0.1", &env);
    let before = stored_version(&moto);

    // The answers are lost for 3 s (the SDK's own retries give up sooner): the change is
    // stored by the first attempt, and the replica keeps asking until it hears so.
    proxy.lose.store(true, Ordering::SeqCst);
    let lose = proxy.lose.clone();
    let outage = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        lose.store(false, Ordering::SeqCst);
    });
    let token = std::fs::read_to_string(dir.join("a/control-token")).expect("control token");
    let response = tests::client()
        .put(format!("{}/v1/routes/distributor/weights", replica.control))
        .bearer_auth(token.trim())
        .json(&json!({"weights": {"distributor-v1": 10, "distributor-v2": 90}}))
        .send()
        .await
        .expect("answered");
    outage.await.expect("the outage ends");
    let status = response.status();
    let said = response.text().await.unwrap_or_default();
    let lost = proxy.lost.load(Ordering::SeqCst);
    println!("{lost} answers lost; the change answered {status}: {said}");
    assert!(lost >= 1, "no answer was lost: the test tested nothing");
    assert_eq!(status, 200, "{said}");
    assert_eq!(
        stored_version(&moto),
        before + 1,
        "the change is stored once, as one version"
    );
    let stored = tests::get_json(&format!("{}/v1/status", replica.control)).await;
    assert_eq!(tests::route_weights(&stored, "distributor"), [10, 90]);
}

/// How long a new ADS stream for the requester's Envoy takes to get its clusters.
async fn first_ads_answer(xds: &str) -> Duration {
    let started = std::time::Instant::now();
    let request = tests::ads::request(
        "mesh/gophermesh/virtualNode/requester",
        controlplane::translate::CLUSTER_TYPE,
        Vec::new(),
    );
    let first = tests::ads::first_answer(xds, request)
        .await
        .expect("an answer");
    assert!(!first.resources.is_empty(), "no clusters: {first:?}");
    started.elapsed()
}

/// DynamoDB hung (moto stopped: it takes connections and answers nothing) with six
/// changes queued on a replica: its reads, its status and a new ADS stream answer at once
/// from what it holds; when DynamoDB answers again, each change is answered as it happened
/// (as many versions stored as changes answered 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_dynamodb_holds_up_only_writes() {
    let (moto, env) = tests::serve::moto_with_table(tests::serve::TABLE);
    let dir = tests::copy_of_shipped("hung-dynamodb");
    let replica = tests::serve::replica(&dir, "a", "127.0.0.1", &env);
    let before = stored_version(&moto);
    let token = std::fs::read_to_string(dir.join("a/control-token")).expect("control token");

    moto.hang();
    let mut writes = Vec::new();
    for weight in 1..=6u64 {
        let (url, token) = (
            format!("{}/v1/routes/distributor/weights", replica.control),
            token.trim().to_owned(),
        );
        writes.push(tokio::spawn(async move {
            tests::client()
                .put(url)
                .bearer_auth(token)
                .json(
                    &json!({"weights": {"distributor-v1": 100 - weight, "distributor-v2": weight}}),
                )
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // The writes reach the replica and wait there (checked below: none had answered).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = tests::client();
    let mut slowest = Duration::ZERO;
    for url in [
        format!("{}/v1/status", replica.control),
        format!("{}/v20190125/meshes", replica.appmesh),
        format!(
            "{}/v20190125/meshes/gophermesh/virtualRouter/distributor/routes/distributor",
            replica.appmesh
        ),
    ] {
        let started = std::time::Instant::now();
        let answer = client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url} with DynamoDB hung: {e}"));
        assert_eq!(answer.status(), 200, "{url}");
        slowest = slowest.max(started.elapsed());
    }
    let ads = tokio::time::timeout(Duration::from_secs(5), first_ads_answer(&replica.xds))
        .await
        .expect("a new ADS stream is answered with DynamoDB hung");
    let pending = writes.iter().filter(|w| !w.is_finished()).count();
    println!(
        "DynamoDB hung, {pending} writes pending: slowest read {slowest:?}, new ADS stream answered in {ads:?}"
    );
    assert_eq!(
        pending, 6,
        "the writes had answered: the reads waited on nothing"
    );
    assert!(slowest < Duration::from_secs(1), "a read took {slowest:?}");
    assert!(ads < Duration::from_secs(1), "ADS took {ads:?}");

    moto.resume();
    let mut made = 0;
    for w in writes {
        let status = w.await.expect("joined").expect("answered");
        assert!(matches!(status, 200 | 503), "{status}");
        made += u64::from(status == 200);
    }
    println!("after DynamoDB answered again: {made} of 6 changes made");
    assert_eq!(
        stored_version(&moto),
        before + made,
        "as many versions as changes answered 200"
    );
}
