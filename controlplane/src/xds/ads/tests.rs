//! Unit tests of [crate::ads].
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::state::meta::Identity;
use crate::state::snapshot::MeshState;
use crate::state::store::{Next, Store};
use crate::translate::{ENDPOINT_TYPE, NodeResources};

/// A store holding mesh `m` alone (the fake Envoys' node ids name `m`).
fn mesh_m() -> Store {
    let mesh = meshmodel::Mesh::named("m").expect("a mesh");
    Store::in_memory([mesh], Identity::default())
}

/// A cache whose clusters (and endpoints `e1`) change with every snapshot version while
/// the listeners (and endpoints `e2`) stay the same, so the protocol is tested without the
/// translation.
fn fake_cache() -> (Store, Cache) {
    let store = mesh_m();
    let current = store.clone();
    let cache = Cache::with_builder(
        store.clone(),
        Arc::new(move |_: &MeshState, node: &str| {
            let s = current.current();
            let any = |t: &str, v: String| Any {
                type_url: t.to_owned(),
                value: v.into_bytes(),
            };
            (node == "a").then(|| NodeResources {
                clusters: vec![("c".into(), any(CLUSTER_TYPE, format!("v{}", s.version)))],
                listeners: vec![("l".into(), any(LISTENER_TYPE, "same".into()))],
                routes: Vec::new(),
                endpoints: vec![
                    (
                        "e1".into(),
                        any(ENDPOINT_TYPE, format!("e1 v{}", s.version)),
                    ),
                    ("e2".into(), any(ENDPOINT_TYPE, "e2".into())),
                ],
            })
        }),
    );
    (store, cache)
}

struct Envoy {
    tx: mpsc::Sender<Result<DiscoveryRequest, Status>>,
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    statuses: EnvoyStatuses,
}

fn connect(cache: &Cache) -> Envoy {
    let statuses = EnvoyStatuses::default();
    let ads = Ads::new(cache.clone(), statuses.clone());
    let (tx, inbound) = mpsc::channel(16);
    let rx = ads.open(ReceiverStream::new(inbound), None);
    Envoy { tx, rx, statuses }
}

fn request(type_url: &str, nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "mesh/m/virtualNode/a".to_owned(),
            ..Default::default()
        }),
        type_url: type_url.to_owned(),
        response_nonce: nonce.to_owned(),
        version_info: version.to_owned(),
        ..Default::default()
    }
}

impl Envoy {
    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(Ok(r)).await.expect("stream open");
    }

    async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a response within 5 s")
            .expect("stream open")
            .map(|out| out.decode().expect("a response that decodes"))
    }

    fn status(&self) -> EnvoyStatus {
        self.statuses
            .snapshot()
            .remove("m/a")
            .expect("a has a status")
    }
}

#[tokio::test]
async fn acks_record_versions_and_stale_nonces_are_ignored() {
    let (_store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    let clusters = envoy.next().await.expect("clusters");
    assert_eq!(clusters.type_url, CLUSTER_TYPE);
    assert_eq!(clusters.nonce, "1");
    assert_eq!(clusters.resources.len(), 1);
    let version = clusters.version_info.clone();

    // An answer to a nonce that is not the latest is ignored: no ACK recorded.
    envoy.send(request(CLUSTER_TYPE, "0", &version)).await;
    // The ACK of nonce 1 is recorded, and nothing is sent back for it: the next
    // response is the one to the listeners request that follows.
    envoy.send(request(CLUSTER_TYPE, "1", &version)).await;
    envoy.send(request(LISTENER_TYPE, "", "")).await;
    let listeners = envoy.next().await.expect("listeners");
    assert_eq!(listeners.type_url, LISTENER_TYPE);
    assert_eq!(listeners.nonce, "2");
    let status = envoy.status();
    assert!(status.connected);
    assert_eq!(status.acked.get("clusters"), Some(&version));
    assert_eq!(status.acked.get("listeners"), None);
    assert_eq!(status.last_nack, None);
}

#[tokio::test]
async fn a_nack_is_kept_and_the_next_change_is_pushed_only_where_it_differs() {
    let (store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    let first = envoy.next().await.expect("clusters");
    envoy.send(request(LISTENER_TYPE, "", "")).await;
    let listeners = envoy.next().await.expect("listeners");
    envoy
        .send(DiscoveryRequest {
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad cluster".to_owned(),
                ..Default::default()
            }),
            ..request(CLUSTER_TYPE, &first.nonce, "")
        })
        .await;
    envoy
        .send(request(
            LISTENER_TYPE,
            &listeners.nonce,
            &listeners.version_info,
        ))
        .await;
    // Requests are handled in order: once the routes answer is here, the NACK and the
    // ACK before it have been handled.
    envoy.send(request(ROUTE_TYPE, "", "")).await;
    let routes = envoy.next().await.expect("routes");
    assert_eq!(
        (routes.type_url.as_str(), routes.nonce.as_str()),
        (ROUTE_TYPE, "3")
    );

    // A new snapshot changes the clusters only: exactly one push, of clusters.
    store.set_placements("m", Default::default());
    let pushed = envoy.next().await.expect("a push");
    assert_eq!(pushed.type_url, CLUSTER_TYPE);
    assert_ne!(pushed.version_info, first.version_info);
    assert_eq!(pushed.nonce, "4");
    envoy
        .send(request(CLUSTER_TYPE, &pushed.nonce, &pushed.version_info))
        .await;
    // A change's pushes are sent together; the next answer is the one to this request
    // (new route names), so the unchanged listeners and routes were not pushed.
    envoy
        .send(DiscoveryRequest {
            resource_names: vec!["rds_egress".to_owned()],
            ..request(ROUTE_TYPE, &routes.nonce, &routes.version_info)
        })
        .await;
    let next = envoy.next().await.expect("routes");
    assert_eq!(
        (next.type_url.as_str(), next.nonce.as_str()),
        (ROUTE_TYPE, "5")
    );

    let status = envoy.status();
    let nack = status.last_nack.expect("the NACK is kept");
    assert_eq!(nack.message, "bad cluster");
    assert_eq!(nack.type_url, CLUSTER_TYPE);
    assert_eq!(status.acked.get("clusters"), Some(&pushed.version_info));
    assert_eq!(status.acked.get("listeners"), Some(&listeners.version_info));
}

/// Endpoints (EDS) go by the names the Envoy asks for, and a change pushes a cluster before
/// its endpoints; their ACK shows in the status as `endpoints`.
#[tokio::test]
async fn endpoints_go_by_name_after_their_clusters() {
    let (store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    let clusters = envoy.next().await.expect("clusters");
    envoy
        .send(request(
            CLUSTER_TYPE,
            &clusters.nonce,
            &clusters.version_info,
        ))
        .await;
    envoy
        .send(DiscoveryRequest {
            resource_names: vec!["e1".to_owned()],
            ..request(ENDPOINT_TYPE, "", "")
        })
        .await;
    let eds = envoy.next().await.expect("endpoints");
    assert_eq!(eds.type_url, ENDPOINT_TYPE);
    assert_eq!(eds.resources.len(), 1, "only e1 was asked for");
    assert_eq!(
        eds.resources[0].value,
        format!("e1 v{}", clusters.version_info).into_bytes()
    );
    envoy
        .send(DiscoveryRequest {
            resource_names: vec!["e1".to_owned()],
            ..request(ENDPOINT_TYPE, &eds.nonce, &eds.version_info)
        })
        .await;

    store.set_placements("m", Default::default());
    let first = envoy.next().await.expect("a push");
    let second = envoy.next().await.expect("a push");
    assert_eq!(
        (first.type_url.as_str(), second.type_url.as_str()),
        (CLUSTER_TYPE, ENDPOINT_TYPE)
    );
    assert_eq!(
        second
            .resources
            .iter()
            .map(|r| r.value.clone())
            .collect::<Vec<_>>(),
        vec![format!("e1 v{}", second.version_info).into_bytes()]
    );
    envoy
        .send(DiscoveryRequest {
            resource_names: vec!["e1".to_owned()],
            ..request(ENDPOINT_TYPE, &second.nonce, &second.version_info)
        })
        .await;
    // Requests are handled in order: the listeners' answer comes after the ACK is kept.
    envoy.send(request(LISTENER_TYPE, "", "")).await;
    envoy.next().await.expect("listeners");
    assert_eq!(
        envoy.status().acked.get("endpoints"),
        Some(&second.version_info)
    );
}

#[tokio::test]
async fn a_node_id_that_is_not_a_virtual_node_ends_the_stream() {
    let (_store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    let mut bad = request(CLUSTER_TYPE, "", "");
    bad.node = Some(Node {
        id: "not-a-node".to_owned(),
        ..Default::default()
    });
    envoy.send(bad).await;
    let status = envoy.next().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not-a-node"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_closed_stream_marks_the_envoy_disconnected() {
    let (_store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    envoy.next().await.expect("clusters");
    assert!(envoy.status().connected);
    let Envoy {
        tx,
        mut rx,
        statuses,
    } = envoy;
    drop(tx);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the stream ends within 5 s")
            .is_none()
    );
    assert!(!statuses.snapshot()["m/a"].connected);
    assert_eq!(statuses.snapshot()["m/a"].streams, 1);
}

fn open_on(ads: &Ads, peer: &str) -> Envoy {
    let (tx, inbound) = mpsc::channel(16);
    let rx = ads.open(ReceiverStream::new(inbound), Some(peer.to_owned()));
    Envoy {
        tx,
        rx,
        statuses: ads.statuses.clone(),
    }
}

/// A cache that serves any node one cluster whose content is the snapshot version (so
/// every change is a push), with its store and the statuses to give its ADS.
fn any_node_cache() -> (EnvoyStatuses, Store, Cache) {
    let store = mesh_m();
    let current = store.clone();
    let cache = Cache::with_builder(
        store.clone(),
        Arc::new(move |_: &MeshState, _node: &str| {
            let s = current.current();
            Some(NodeResources {
                clusters: vec![(
                    "c".into(),
                    Any {
                        type_url: CLUSTER_TYPE.to_owned(),
                        value: format!("v{}", s.version).into_bytes(),
                    },
                )],
                ..NodeResources::default()
            })
        }),
    );
    (EnvoyStatuses::default(), store, cache)
}

/// Node `node`'s request for clusters, answering `nonce` at `version`.
fn clusters_of(node: &str, nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: format!("mesh/m/virtualNode/{node}"),
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.to_owned(),
        response_nonce: nonce.to_owned(),
        version_info: version.to_owned(),
        ..Default::default()
    }
}

/// Waits (5 s at most) until the statuses say `what`.
async fn until_status(
    statuses: &EnvoyStatuses,
    what: String,
    holds: impl Fn(&std::collections::BTreeMap<String, EnvoyStatus>) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !holds(&statuses.snapshot()) {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::task::yield_now().await;
    }
}

fn from_task(task_arn: &str) -> DiscoveryRequest {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let text = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    };
    let info = Struct {
        fields: [("ecsTaskArn".to_owned(), text(task_arn))].into(),
    };
    let mut r = request(CLUSTER_TYPE, "", "");
    if let Some(node) = r.node.as_mut() {
        node.metadata = Some(Struct {
            fields: [(
                "aws.appmesh.platformInfo".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(info)),
                },
            )]
            .into(),
        });
    }
    r
}

/// An impostor (or a stale stream) and the real Envoy under one node id: the older
/// stream is closed, status lists the one open stream, and it says connected as long
/// as that one is.
#[tokio::test]
async fn a_second_stream_for_the_same_envoy_closes_the_first() {
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let mut real = open_on(&ads, "10.0.0.1:5000");
    real.send(request(CLUSTER_TYPE, "", "")).await;
    real.next().await.expect("clusters");
    let mut impostor = open_on(&ads, "10.0.0.66:6666");
    impostor.send(request(CLUSTER_TYPE, "", "")).await;
    impostor.next().await.expect("clusters");
    let closed = real.next().await.expect_err("the older stream is closed");
    assert_eq!(closed.code(), tonic::Code::Aborted);
    assert!(
        closed.message().contains("10.0.0.66:6666"),
        "{}",
        closed.message()
    );
    let status = impostor.status();
    assert!(status.connected);
    assert_eq!(status.open_streams.len(), 1, "{status:?}");
    assert_eq!(
        status.open_streams[0].peer.as_deref(),
        Some("10.0.0.66:6666")
    );

    // The real Envoy reconnects at once: a second takeover within TAKEOVER_EVERY is
    // refused, and the stream that speaks for the node keeps it.
    let mut again = open_on(&ads, "10.0.0.1:5001");
    again.send(request(CLUSTER_TYPE, "", "")).await;
    let refused = again.next().await.expect_err("refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let status = impostor.status();
    assert_eq!(status.open_streams.len(), 1, "{status:?}");
    assert_eq!(
        status.open_streams[0].peer.as_deref(),
        Some("10.0.0.66:6666")
    );

    // Once it has passed, the real Envoy takes the node back; the impostor is closed.
    tokio::time::pause();
    tokio::time::advance(TAKEOVER_EVERY).await;
    let mut later = open_on(&ads, "10.0.0.1:5002");
    later.send(request(CLUSTER_TYPE, "", "")).await;
    later.next().await.expect("clusters");
    assert!(impostor.next().await.is_err());
    // The closed stream's end does not mark the node disconnected.
    tokio::time::timeout(Duration::from_secs(5), async {
        while later.status().open_streams.len() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("one open stream");
    assert!(later.status().connected);
}

/// Two Envoys under one node id, reconnecting as fast as they can: one takeover per
/// TAKEOVER_EVERY at most, not one per reconnection.
#[tokio::test]
async fn two_envoys_with_one_node_id_do_not_evict_each_other_in_a_loop() {
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let mut first = open_on(&ads, "10.0.0.1:5000");
    first.send(request(CLUSTER_TYPE, "", "")).await;
    first.next().await.expect("clusters");
    let mut served = 0;
    // Every stream is kept open, as its Envoy would keep it.
    let mut open = vec![first];
    for round in 0..20 {
        let mut next = open_on(&ads, &format!("10.0.0.{}:6000", 2 + round % 2));
        next.send(request(CLUSTER_TYPE, "", "")).await;
        match next.next().await {
            Ok(_) => served += 1,
            Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}"),
        }
        open.push(next);
    }
    assert_eq!(
        served, 1,
        "one takeover, then refusals until {TAKEOVER_EVERY:?} pass"
    );
}

/// Several ECS tasks of one virtual node share its node id; each is its own Envoy.
#[tokio::test]
async fn tasks_of_one_node_each_keep_their_stream() {
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let mut one = open_on(&ads, "10.0.0.1:5000");
    one.send(from_task("arn:aws:ecs:us-east-1:1:task/c/one"))
        .await;
    one.next().await.expect("clusters");
    let mut two = open_on(&ads, "10.0.0.2:5000");
    two.send(from_task("arn:aws:ecs:us-east-1:1:task/c/two"))
        .await;
    two.next().await.expect("clusters");
    let status = two.status();
    let mut instances: Vec<_> = status
        .open_streams
        .iter()
        .filter_map(|o| o.instance.clone())
        .collect();
    instances.sort();
    assert_eq!(
        instances,
        [
            "arn:aws:ecs:us-east-1:1:task/c/one",
            "arn:aws:ecs:us-east-1:1:task/c/two"
        ]
    );
    drop(one.tx);
    tokio::time::timeout(Duration::from_secs(5), async {
        while two.status().open_streams.len() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("one stream left");
    assert!(two.status().connected, "the other task is still connected");
}

/// An ECS sidecar's node id (ARN form) for a node no task here runs gets the node's
/// whole configuration from the mesh; one of another mesh, or of no node, gets nothing
/// and status says why.
#[tokio::test]
async fn node_ids_are_served_from_the_mesh_alone_or_told_why_not() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
    let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh");
    let store = Store::in_memory([mesh], Identity::default());
    let ads = Ads::new(Cache::new(store), EnvoyStatuses::default());
    let ask = |id: &str| DiscoveryRequest {
        node: Some(Node {
            id: id.to_owned(),
            ..Default::default()
        }),
        type_url: LISTENER_TYPE.to_owned(),
        ..Default::default()
    };
    let mut ecs = open_on(&ads, "10.0.1.5:40000");
    ecs.send(ask(
        "arn:aws:appmesh:us-east-1:111122223333:mesh/gophermesh/virtualNode/requester",
    ))
    .await;
    let listeners = ecs.next().await.expect("listeners");
    assert_eq!(listeners.resources.len(), 2);
    assert_eq!(
        ads.statuses.snapshot()["gophermesh/requester"].problem,
        None
    );
    // The shipped ingress gateway's Envoy gets its listener.
    let mut gateway = open_on(&ads, "10.0.1.7:40000");
    gateway
        .send(ask(
            "arn:aws:appmesh:us-east-1:111122223333:mesh/gophermesh/virtualGateway/ingress",
        ))
        .await;
    let listeners = gateway.next().await.expect("listeners");
    assert_eq!(listeners.resources.len(), 1);
    assert_eq!(
        ads.statuses.snapshot()["gophermesh/virtualGateway/ingress"].problem,
        None
    );

    for (id, node, words) in [
        (
            "mesh/elsewhere/virtualNode/requester",
            "elsewhere/requester",
            "names mesh `elsewhere`; this control plane serves `gophermesh`",
        ),
        (
            "mesh/gophermesh/virtualNode/nobody",
            "gophermesh/nobody",
            "names no virtual node `nobody` of mesh `gophermesh`",
        ),
        (
            "arn:aws:appmesh:us-east-1:111122223333:mesh/gophermesh/virtualGateway/nowhere",
            "gophermesh/virtualGateway/nowhere",
            "names no virtual gateway `nowhere`",
        ),
    ] {
        let mut stray = open_on(&ads, "10.0.1.6:40000");
        stray.send(ask(id)).await;
        let got = stray.next().await.expect("an answer");
        assert!(got.resources.is_empty(), "{id} got resources");
        let problem = ads.statuses.snapshot()[node]
            .problem
            .clone()
            .unwrap_or_default();
        assert!(problem.contains(words), "{id}: {problem}");
    }
}

/// A second mesh made beside the first is served to the Envoys whose node ids name it
/// (known as `MESH/NODE`), with its own resources; the other mesh's Envoys are unchanged,
/// and once the second mesh is emptied its Envoys are told it is gone.
#[tokio::test]
async fn an_envoy_of_a_second_mesh_gets_that_mesh() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
    let first = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh");
    let store = Store::in_memory([first], Identity::default());
    let mut second = meshmodel::Mesh::default();
    for doc in [
        serde_json::json!({"meshName": "shop", "spec": {}}),
        serde_json::json!({"meshName": "shop", "virtualNodeName": "web", "spec": {
            "listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}}}}),
    ] {
        let r = meshmodel::Resource::from_value("doc.json", doc).expect("a resource");
        second = second.apply("doc.json", r).expect("accepted");
    }
    store
        .update_with(|_| Ok::<_, ()>(Next::mesh("shop", second.clone())))
        .expect("stored");
    let ads = Ads::new(Cache::new(store.clone()), EnvoyStatuses::default());
    let ask = |id: &str| DiscoveryRequest {
        node: Some(Node {
            id: id.to_owned(),
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.to_owned(),
        ..Default::default()
    };
    let names = |r: &DiscoveryResponse| -> Vec<String> {
        r.resources
            .iter()
            .map(|a| {
                <envoy_types::pb::envoy::config::cluster::v3::Cluster as prost::Message>::decode(
                    a.value.as_slice(),
                )
                .expect("a cluster")
                .name
            })
            .collect()
    };
    let mut web = open_on(&ads, "10.0.2.5:40000");
    web.send(ask("mesh/shop/virtualNode/web")).await;
    let got = web.next().await.expect("clusters");
    // Its own ingress, and the passthrough to AWS's APIs (DROP_ALL lets them out).
    assert_eq!(
        names(&got),
        ["cds_ingress_shop_web_http_9000", "cds_egress_passthrough"]
    );
    assert_eq!(ads.statuses.snapshot()["shop/web"].problem, None);
    let mut requester = open_on(&ads, "10.0.2.6:40000");
    requester
        .send(ask("mesh/gophermesh/virtualNode/requester"))
        .await;
    let got = requester.next().await.expect("clusters");
    assert!(
        names(&got).iter().any(|n| n.contains("distributor-v1")),
        "{:?}",
        names(&got)
    );

    // The second mesh emptied (as deleting its node and then itself does): gone.
    store
        .update_with(|_| Ok::<_, ()>(Next::mesh("shop", meshmodel::Mesh::default())))
        .expect("stored");
    assert_eq!(store.current().names(), ["gophermesh"]);
    until_status(
        &ads.statuses,
        "the second mesh's Envoy is told it is gone".into(),
        |all| {
            all["shop/web"]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("names mesh `shop`"))
        },
    )
    .await;
}

/// An Envoy that stops reading holds up no other: each stream pushes from its own task
/// into its own bounded queue, and reads the latest snapshot when it can go on, so it
/// skips the versions it could not take instead of queueing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_envoy_delays_no_other_and_then_gets_the_latest_only() {
    let (_, store, cache) = any_node_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let ask = clusters_of;
    let mut stalled = open_on(&ads, "10.0.0.1:1");
    stalled.send(ask("stalled", "", "")).await;
    stalled.next().await.expect("its first clusters");
    let mut live = open_on(&ads, "10.0.0.2:1");
    live.send(ask("live", "", "")).await;
    let first = live.next().await.expect("clusters");
    live.send(ask("live", &first.nonce, &first.version_info))
        .await;

    // 200 changes: the live Envoy gets every one at once while the other reads nothing.
    let changes = 200;
    let mut slowest = Duration::ZERO;
    for _ in 0..changes {
        let started = std::time::Instant::now();
        store.set_placements("m", Default::default());
        let version = store.current().version.to_string();
        let pushed = live.next().await.expect("a push");
        slowest = slowest.max(started.elapsed());
        assert_eq!(pushed.version_info, version);
        live.send(ask("live", &pushed.nonce, &pushed.version_info))
            .await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a change took {slowest:?} to reach the live Envoy"
    );

    // The stalled one, reading again, finds at most its queue's worth and then the latest.
    let latest = store.current().version.to_string();
    let mut waiting = 0;
    let last = loop {
        let pushed = stalled.next().await.expect("a push");
        waiting += 1;
        if pushed.version_info == latest {
            break pushed;
        }
    };
    assert!(
        waiting <= 18,
        "{waiting} responses were queued for the stalled Envoy over {changes} changes"
    );
    assert_eq!(last.resources.len(), 1);
}

/// Two streams of one node send the very same bytes for a type (one encoding per node,
/// type and version, shared), and what they send decodes to the node's resources.
#[tokio::test]
async fn streams_of_one_node_share_one_encoding() {
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache.clone(), EnvoyStatuses::default());
    let mut outs = Vec::new();
    for peer in ["10.0.0.1:1", "10.0.0.2:1"] {
        let mut envoy = open_on(&ads, peer);
        envoy.send(from_task(peer)).await;
        let out = tokio::time::timeout(Duration::from_secs(5), envoy.rx.recv())
            .await
            .expect("a response within 5 s")
            .expect("stream open")
            .expect("clusters");
        outs.push(out);
    }
    let snapshot = cache.current();
    let encoded = cache
        .resources(&snapshot, "m/a")
        .and_then(|p| p.encoded(CLUSTER_TYPE))
        .expect("a's clusters");
    for out in &outs {
        assert!(out.shares(&encoded), "a stream copied the clusters");
        let response = out.decode().expect("decodes");
        assert_eq!(response.type_url, CLUSTER_TYPE);
        assert_eq!(response.version_info, snapshot.version.to_string());
        assert_eq!(
            response.resources,
            vec![Any {
                type_url: CLUSTER_TYPE.to_owned(),
                value: format!("v{}", snapshot.version).into_bytes(),
            }]
        );
    }
    assert_eq!(cache.builds(), 1);
}

/// Over a real socket, tonic's generated client (as Envoy's gRPC client would) reads the
/// hand-framed responses, of either protocol.
#[tokio::test]
async fn a_grpc_client_reads_the_stream_over_a_socket() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

    let (store, cache) = fake_cache();
    let statuses = EnvoyStatuses::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .add_service(Ads::new(cache, statuses.clone()).into_service())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, requests) = mpsc::channel(4);
    tx.send(request(CLUSTER_TYPE, "", "")).await.expect("open");
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
        .expect("a stream")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("a response")
        .expect("not ended");
    let version = store.current().version.to_string();
    assert_eq!(first.version_info, version);
    assert_eq!(first.type_url, CLUSTER_TYPE);
    assert_eq!(first.resources.len(), 1);
    assert_eq!(first.resources[0].value, format!("v{version}").into_bytes());
    tx.send(request(CLUSTER_TYPE, &first.nonce, &first.version_info))
        .await
        .expect("ACK");
    store.set_placements("m", Default::default());
    let pushed = responses
        .message()
        .await
        .expect("a push")
        .expect("not ended");
    assert_eq!(pushed.version_info, store.current().version.to_string());
    assert_ne!(pushed.nonce, first.nonce);
    let peer = statuses.snapshot()["m/a"].open_streams[0].peer.clone();
    assert!(
        peer.is_some_and(|p| p.starts_with("127.0.0.1:")),
        "the peer address reaches the status"
    );

    // When the Envoy closes its side, the stream ends with status OK in the trailers.
    drop(tx);
    assert!(responses.message().await.expect("a clean end").is_none());

    // The delta protocol on the same service: the clusters, then only what changed.
    let (delta_tx, delta_requests) = mpsc::channel(4);
    let hello = DeltaDiscoveryRequest {
        node: Some(Node {
            id: "mesh/m/virtualNode/a".to_owned(),
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.to_owned(),
        ..Default::default()
    };
    delta_tx.send(hello).await.expect("open");
    let mut delta = client
        .delta_aggregated_resources(ReceiverStream::new(delta_requests))
        .await
        .expect("a delta stream")
        .into_inner();
    let first = delta
        .message()
        .await
        .expect("a response")
        .expect("not ended");
    assert_eq!(first.type_url, CLUSTER_TYPE);
    assert_eq!(first.resources.len(), 1);
    assert_eq!(first.resources[0].name, "c");
    assert!(first.removed_resources.is_empty());
    drop(delta_tx);
    assert!(delta.message().await.expect("a clean end").is_none());

    // A node id that names nothing ends its stream with the reason, as a gRPC status.
    let bad = DiscoveryRequest {
        node: Some(Node {
            id: "not-a-node".to_owned(),
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.to_owned(),
        ..Default::default()
    };
    let mut refused = client
        .stream_aggregated_resources(futures::stream::iter([bad]))
        .await
        .expect("a stream")
        .into_inner();
    let status = refused.message().await.expect_err("the stream is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`not-a-node`"), "{status:?}");
    server.abort();
}

/// An Envoy that refuses a change keeps its last good version (its status says which, and
/// why), while another Envoy of the mesh takes the change and the next one; the refusal
/// stops nothing.
#[tokio::test]
async fn a_nacking_envoy_keeps_its_last_good_version_while_others_move_on() {
    let (statuses, store, cache) = any_node_cache();
    let ads = Ads::new(cache, statuses.clone());
    let ask = |node: &str, nonce: &str, version: &str, nack: bool| DiscoveryRequest {
        error_detail: nack.then(|| RpcStatus {
            code: 3,
            message: "cluster refused".to_owned(),
            ..Default::default()
        }),
        ..clusters_of(node, nonce, version)
    };
    let mut envoys = Vec::new();
    for (node, peer) in [("live", "10.0.0.1:1"), ("nacker", "10.0.0.2:1")] {
        let mut envoy = open_on(&ads, peer);
        envoy.send(ask(node, "", "", false)).await;
        let first = envoy.next().await.expect("clusters");
        envoy
            .send(ask(node, &first.nonce, &first.version_info, false))
            .await;
        envoys.push((node, envoy, first.version_info));
    }
    let good = envoys[1].2.clone();
    let acked = |node: &str, version: &str| {
        let (node, version) = (node.to_owned(), version.to_owned());
        until_status(&statuses, format!("{node} ACKed {version}"), move |all| {
            all.get(&format!("m/{node}"))
                .is_some_and(|s| s.acked.get("clusters") == Some(&version))
        })
    };
    // An ACK that crosses a newer push is stale, as for Envoy: wait until both count.
    acked("live", &good).await;
    acked("nacker", &good).await;

    // A change: the live Envoy takes it, the other refuses it.
    store.set_placements("m", Default::default());
    let v2 = store.current().version.to_string();
    for (node, envoy, _) in &mut envoys {
        let pushed = envoy.next().await.expect("a push");
        assert_eq!(pushed.version_info, v2);
        envoy
            .send(ask(
                node,
                &pushed.nonce,
                &pushed.version_info,
                *node == "nacker",
            ))
            .await;
    }
    until_status(&statuses, "the NACK is recorded".to_owned(), |all| {
        all.get("m/nacker").is_some_and(|s| s.last_nack.is_some())
    })
    .await;
    // The next change reaches both: the refusal held nothing up.
    store.set_placements("m", Default::default());
    let v3 = store.current().version.to_string();
    for (node, envoy, _) in &mut envoys {
        let pushed = envoy.next().await.expect("the next push");
        assert_eq!(pushed.version_info, v3, "{node}");
        if *node == "live" {
            envoy
                .send(ask(node, &pushed.nonce, &pushed.version_info, false))
                .await;
        }
    }
    acked("live", &v3).await;
    let all = statuses.snapshot();
    let nacker = &all["m/nacker"];
    assert_eq!(
        nacker.acked.get("clusters"),
        Some(&good),
        "its last good version"
    );
    let nack = nacker.last_nack.as_ref().expect("the refusal is kept");
    assert_eq!(
        (nack.message.as_str(), nack.version.as_str()),
        ("cluster refused", v2.as_str())
    );
    assert_eq!(all["m/live"].last_nack, None);
}

/// A write the store holds (a slow disk, a hung DynamoDB) delays neither a new Envoy's
/// first configuration nor the push of what changes beside it (placements, Cloud Map
/// instances), nor that push's ACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_delays_no_stream_and_no_other_change() {
    const HELD: Duration = Duration::from_secs(2);
    let (store, cache) = fake_cache();
    store.delay_writes(HELD);
    let write = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .writing(|s| {
                    // A real change (a mesh made): one that changes nothing writes nothing.
                    s.update_with(|_| {
                        Ok::<_, ()>(Next::mesh(
                            "n",
                            meshmodel::Mesh::named("n").expect("a mesh"),
                        ))
                    })
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    let first = envoy.next().await.expect("clusters");
    let first_config = started.elapsed();
    envoy
        .send(request(CLUSTER_TYPE, &first.nonce, &first.version_info))
        .await;

    let started = std::time::Instant::now();
    store.set_placements("m", Default::default());
    let placed = store.current().version;
    let pushed = envoy.next().await.expect("a push");
    envoy
        .send(request(CLUSTER_TYPE, &pushed.nonce, &pushed.version_info))
        .await;
    until_status(&envoy.statuses, "the push is ACKed".into(), |m| {
        m.get("m/a")
            .is_some_and(|s| s.acked.get("clusters") == Some(&pushed.version_info))
    })
    .await;
    let push_acked = started.elapsed();
    assert!(!write.is_finished(), "the write is still held");
    println!(
        "with a write held {HELD:?}: first configuration in {first_config:?}, a placement change pushed and ACKed in {push_acked:?}"
    );
    assert!(first_config < HELD / 4, "{first_config:?}");
    assert!(push_acked < HELD / 4, "{push_acked:?}");
    assert_ne!(pushed.version_info, first.version_info);

    // The held write lands after it, at a later version.
    let written = write
        .await
        .expect("the write task")
        .expect("its turn")
        .expect("stored");
    assert!(
        written.version > placed,
        "{} after {placed}",
        written.version
    );
    assert_eq!(store.current().version, written.version);
}

/// A request naming more resources than any node subscribes to ends its stream, naming
/// the cap; the names are not kept.
#[tokio::test]
async fn a_request_naming_too_many_resources_ends_its_stream() {
    let (_store, cache) = fake_cache();
    let mut envoy = connect(&cache);
    envoy
        .send(DiscoveryRequest {
            resource_names: (0..=MAX_RESOURCE_NAMES).map(|i| format!("r{i}")).collect(),
            ..request(ROUTE_TYPE, "", "")
        })
        .await;
    let refused = envoy.next().await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("20000"), "{}", refused.message());
    // Within the cap, the same request is served.
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, "", "")).await;
    envoy.next().await.expect("clusters");
    envoy
        .send(DiscoveryRequest {
            resource_names: (0..MAX_RESOURCE_NAMES).map(|i| format!("r{i}")).collect(),
            ..request(ROUTE_TYPE, "", "")
        })
        .await;
    assert_eq!(envoy.next().await.expect("routes").type_url, ROUTE_TYPE);
}

/// Over a socket, a request larger than the wire's cap ends its stream before it is read
/// whole (a request names resources; it carries none).
#[tokio::test]
async fn a_request_over_the_size_cap_ends_its_stream() {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

    let (_store, cache) = fake_cache();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .add_service(Ads::new(cache, EnvoyStatuses::default()).into_service())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let big = DiscoveryRequest {
        resource_names: vec!["x".repeat(super::wire::MAX_REQUEST)],
        ..request(CLUSTER_TYPE, "", "")
    };
    let (tx, requests) = mpsc::channel(4);
    tx.send(big).await.expect("sent");
    let answer = match client
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
    {
        Ok(stream) => stream.into_inner().message().await,
        Err(e) => Err(e),
    };
    // The stream ends (with an error, or with none) and serves nothing.
    assert!(
        matches!(answer, Ok(None) | Err(_)),
        "the request over the cap was served: {answer:?}"
    );
    server.abort();
}

/// Make before break: a change that removes a cluster (and adds another) sends the clusters
/// with both, then the routes that no longer send to the old one, and only then the
/// clusters without it; a change that removes none sends the clusters once, first (here,
/// none: they did not change). A removal alone needs no first push: Envoy has them all.
#[tokio::test]
async fn a_removed_cluster_goes_only_after_the_routes_that_used_it() {
    let store = mesh_m();
    let current = store.clone();
    let cache = Cache::with_builder(
        store.clone(),
        Arc::new(move |_: &MeshState, _: &str| {
            let v = current.current().version;
            let any = |t: &str, v: String| Any {
                type_url: t.to_owned(),
                value: v.into_bytes(),
            };
            let mut clusters = vec![("keep".to_owned(), any(CLUSTER_TYPE, "keep".into()))];
            let other = if v < 2 { "gone" } else { "new" };
            clusters.push((other.to_owned(), any(CLUSTER_TYPE, other.into())));
            Some(NodeResources {
                clusters,
                listeners: Vec::new(),
                routes: vec![("r".into(), any(ROUTE_TYPE, format!("r v{v}")))],
                endpoints: Vec::new(),
            })
        }),
    );
    let mut envoy = connect(&cache);
    let names = |r: &DiscoveryResponse| -> Vec<String> {
        r.resources
            .iter()
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
            .collect()
    };
    for type_url in [CLUSTER_TYPE, ROUTE_TYPE] {
        envoy.send(request(type_url, "", "")).await;
        let first = envoy.next().await.expect("an answer");
        envoy
            .send(request(type_url, &first.nonce, &first.version_info))
            .await;
    }
    store.set_placements("m", Default::default());
    let pushed: Vec<(String, Vec<String>)> =
        [envoy.next().await, envoy.next().await, envoy.next().await]
            .into_iter()
            .map(|r| {
                let r = r.expect("a push");
                (r.type_url.clone(), names(&r))
            })
            .collect();
    assert_eq!(
        pushed,
        [
            (
                CLUSTER_TYPE.to_owned(),
                vec!["keep".into(), "new".into(), "gone".into()]
            ),
            (ROUTE_TYPE.to_owned(), vec!["r v2".into()]),
            (CLUSTER_TYPE.to_owned(), vec!["keep".into(), "new".into()]),
        ]
    );
    // The next change removes nothing: the routes alone.
    store.set_placements("m", Default::default());
    let next = envoy.next().await.expect("a push");
    assert_eq!(
        (next.type_url.as_str(), names(&next)),
        (ROUTE_TYPE, vec!["r v3".to_owned()])
    );
}

/// New streams take turns for their first configuration: with every turn held by Envoys
/// that never ACK, the next new one waits, but no longer than one turn lasts.
#[tokio::test(start_paused = true)]
async fn envoys_that_never_ack_keep_a_new_one_waiting_no_longer_than_a_turn() {
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let mut stalled = Vec::new();
    for i in 0..JOINING_AT_ONCE {
        let mut envoy = open_on(&ads, "10.0.0.1:5000");
        envoy
            .send(from_task(&format!("arn:aws:ecs:us-east-1:1:task/c/{i}")))
            .await;
        envoy.next().await.expect("clusters, never ACKed");
        stalled.push(envoy);
    }
    let started = tokio::time::Instant::now();
    let mut late = open_on(&ads, "10.0.0.2:5000");
    late.send(from_task("arn:aws:ecs:us-east-1:1:task/c/late"))
        .await;
    let first = tokio::time::timeout(JOINING_TURN * 2, late.rx.recv())
        .await
        .expect("answered within two turns")
        .expect("stream open");
    assert!(first.is_ok());
    let waited = started.elapsed();
    assert!(
        waited >= JOINING_TURN - Duration::from_millis(100)
            && waited <= JOINING_TURN + Duration::from_secs(1),
        "waited {waited:?}"
    );
    // One that ACKs gives its turn back at once.
    let (_store, cache) = fake_cache();
    let ads = Ads::new(cache, EnvoyStatuses::default());
    let mut prompt = Vec::new();
    for i in 0..JOINING_AT_ONCE + 1 {
        let mut envoy = open_on(&ads, "10.0.0.1:5000");
        envoy
            .send(from_task(&format!("arn:aws:ecs:us-east-1:1:task/d/{i}")))
            .await;
        let started = tokio::time::Instant::now();
        let clusters = envoy.next().await.expect("clusters");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stream {i} waited"
        );
        let mut ack = from_task(&format!("arn:aws:ecs:us-east-1:1:task/d/{i}"));
        ack.response_nonce = clusters.nonce.clone();
        ack.version_info = clusters.version_info.clone();
        envoy.send(ack).await;
        prompt.push(envoy);
    }
}
