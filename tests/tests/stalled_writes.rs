//! A slow store delays only writes: with every write held 2 s (the store's drill of a slow
//! disk or a hung DynamoDB) and several writes queued, the App Mesh API's reads and the
//! control API's status still answer at once. The APIs run in-process here, on a runtime of
//! two workers as on the machines this runs on, so that writes made on the async workers
//! would hold up every read behind them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use controlplane::{Identity, Store};
use gophermesh::api::appmesh::{self, AppMeshState};
use gophermesh::api::guard::{Auth, Guard, Limits};
use meshmodel::Mesh;

const DELAY: Duration = Duration::from_secs(2);
const WRITES: usize = 3;

fn shipped() -> Mesh {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
    Mesh::load_dir(&dir).expect("the shipped mesh loads")
}

/// Serves the App Mesh API of `store` on a loopback port of its own.
async fn serve_appmesh(store: Store) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let guard = Guard::new(
        "App Mesh",
        addr,
        &[],
        Auth::Open,
        Limits::default(),
        appmesh::render_refusal,
    );
    let app = appmesh::router(AppMeshState { store }, guard);
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.expect("serves");
    });
    addr
}

fn update_route(weight_v1: u32) -> serde_json::Value {
    serde_json::json!({"spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
        "weightedTargets": [
            {"virtualNode": "distributor-v1", "weight": weight_v1},
            {"virtualNode": "distributor-v2", "weight": 100 - weight_v1}]}}}})
}

/// What the clients saw.
struct Seen {
    slowest_read: Duration,
    pending_after_reads: usize,
    slowest_write: Duration,
}

/// `clients` run on a runtime of their own, as a client in another process would, so that
/// what they measure is the server's delay alone.
async fn as_another_process<T: Send + 'static>(
    clients: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a client runtime")
            .block_on(clients)
    })
    .await
    .expect("the clients ran")
}

/// The distributor route's URL on the App Mesh API at `addr`.
fn route_url(addr: SocketAddr) -> String {
    format!(
        "http://{addr}/v20190125/meshes/gophermesh/virtualRouter/distributor/routes/distributor"
    )
}

/// An update of the route at `route` to `weight_v1`/rest, sent now: its status, body and
/// how long it took.
fn spawn_update(
    client: &reqwest::Client,
    route: &str,
    weight_v1: u32,
) -> tokio::task::JoinHandle<(u16, String, Duration)> {
    let (client, route) = (client.clone(), route.to_owned());
    tokio::spawn(async move {
        let started = Instant::now();
        let answer = client
            .put(&route)
            .json(&update_route(weight_v1))
            .send()
            .await
            .expect("the update is answered");
        let status = answer.status().as_u16();
        (
            status,
            answer.text().await.unwrap_or_default(),
            started.elapsed(),
        )
    })
}

/// The clients, on a runtime of their own (as a client in another process would be), so
/// that what they measure is the server's delay alone: `WRITES` updates of the route at
/// once, then, while they are pending, 10 pairs of describe-route and list-meshes.
async fn clients(addr: SocketAddr) -> Seen {
    let route = route_url(addr);
    let client = reqwest::Client::new();
    let writes: Vec<_> = (0..WRITES as u32)
        .map(|n| spawn_update(&client, &route, 10 + 10 * n))
        .collect();
    // Every write is queued or being stored now; the reads go on beside them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest_read = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = client.get(&route).send().await.expect("describe-route");
        assert_eq!(answer.status(), 200);
        let listed = client
            .get(format!("http://{addr}/v20190125/meshes"))
            .send()
            .await
            .expect("list-meshes");
        assert_eq!(listed.status(), 200);
        slowest_read = slowest_read.max(started.elapsed());
    }
    let pending_after_reads = writes.iter().filter(|w| !w.is_finished()).count();
    let mut slowest_write = Duration::ZERO;
    for w in writes {
        let (status, body, took) = w.await.expect("a write task");
        assert_eq!(status, 200, "{body}");
        slowest_write = slowest_write.max(took);
    }
    Seen {
        slowest_read,
        pending_after_reads,
        slowest_write,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_the_app_mesh_api_do_not_wait_for_slow_writes() {
    let store = Store::in_memory([shipped()], Identity::default());
    store.delay_writes(DELAY);
    let addr = serve_appmesh(store.clone()).await;
    let seen = as_another_process(clients(addr)).await;
    let Seen {
        slowest_read,
        pending_after_reads,
        slowest_write,
    } = seen;
    println!(
        "with writes held {DELAY:?} each and {WRITES} queued: slowest of 10 describe-route + \
         list-meshes pairs {slowest_read:?} ({pending_after_reads} writes still pending after \
         the reads); slowest write {slowest_write:?}"
    );
    assert!(
        pending_after_reads > 0,
        "the reads must have run while writes were pending"
    );
    assert!(
        slowest_read < DELAY / 2,
        "a read waited {slowest_read:?} behind writes held {DELAY:?}"
    );
    // The writes themselves were made, one after another, each held DELAY.
    assert!(slowest_write >= DELAY * WRITES as u32 - Duration::from_millis(300));
    let snapshot = store.current();
    let route = snapshot
        .mesh("gophermesh")
        .expect("the shipped mesh")
        .mesh
        .routes
        .values()
        .find(|r| r.value.route_name == "distributor")
        .expect("the distributor route");
    assert_eq!(
        route.value.spec.weighted_targets().map(|(_, t)| t.len()),
        Some(2)
    );
}

/// Writes queued behind a store that does not answer are refused within the turn wait,
/// with 503 and nothing changed, instead of waiting for every write before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_are_refused_within_a_bound() {
    const TURN: Duration = Duration::from_millis(800);
    let store = Store::in_memory([shipped()], Identity::default());
    store.delay_writes(DELAY);
    store.bound_write_turns(TURN);
    let addr = serve_appmesh(store.clone()).await;
    let answers = as_another_process(async move {
        let (client, route) = (reqwest::Client::new(), route_url(addr));
        let writes: Vec<_> = (0..4u32)
            .map(|n| spawn_update(&client, &route, 10 + 10 * n))
            .collect();
        let mut answers = Vec::new();
        for w in writes {
            answers.push(w.await.expect("a write task"));
        }
        answers
    })
    .await;
    let made = answers.iter().filter(|(status, ..)| *status == 200).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    println!(
        "4 writes with each write held {DELAY:?} and a turn wait of {TURN:?}: {made} made, {} refused in {:?}",
        refused.len(),
        refused.iter().map(|(_, _, took)| *took).collect::<Vec<_>>()
    );
    assert_eq!(made, 1, "{answers:?}");
    assert_eq!(refused.len(), 3, "{answers:?}");
    for (_, body, took) in &refused {
        assert!(body.contains("still busy"), "{body}");
        assert!(*took < DELAY, "a refusal took {took:?}");
    }
    // Only the write that was made changed the route: one version more.
    let route = store
        .current()
        .mesh("gophermesh")
        .expect("the shipped mesh")
        .meta
        .get(&meshmodel::Key::Route(
            "distributor".into(),
            "distributor".into(),
        ))
        .map(|m| m.version);
    assert_eq!(route, Some(2));
}
