use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message as _;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::state::meta::Identity;
use crate::state::snapshot::MeshState;
use crate::state::store::Store;
use crate::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, NodeResources};
use crate::xds::ads::EnvoyStatuses;
use crate::xds::cache::Cache;

/// A store of mesh `m` and a cache whose node `a` has cluster `c` (changing with every
/// version), cluster `old` until version `drop_old_at`, listener `l` (never changing),
/// and endpoints `e1` (changing) and `e2` (not).
fn cache(drop_old_at: u64) -> (Store, Cache) {
    let store = Store::in_memory(
        [meshmodel::Mesh::named("m").expect("a mesh")],
        Identity::default(),
    );
    let current = store.clone();
    let cache = Cache::with_builder(
        store.clone(),
        Arc::new(move |_: &MeshState, node: &str| {
            let v = current.current().version;
            let any = |t: &str, text: String| Any {
                type_url: t.to_owned(),
                value: text.into_bytes(),
            };
            let mut clusters = vec![("c".into(), any(CLUSTER_TYPE, format!("c v{v}")))];
            if v < drop_old_at {
                clusters.push(("old".into(), any(CLUSTER_TYPE, "old".into())));
            }
            (node == "a").then(|| NodeResources {
                clusters,
                listeners: vec![("l".into(), any(LISTENER_TYPE, "same".into()))],
                routes: Vec::new(),
                endpoints: vec![
                    ("e1".into(), any(ENDPOINT_TYPE, format!("e1 v{v}"))),
                    ("e2".into(), any(ENDPOINT_TYPE, "e2".into())),
                ],
            })
        }),
    );
    (store, cache)
}

struct Envoy {
    tx: mpsc::Sender<Result<DeltaDiscoveryRequest, Status>>,
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    statuses: EnvoyStatuses,
}

fn connect(cache: &Cache) -> Envoy {
    let statuses = EnvoyStatuses::default();
    let ads = Ads::new(cache.clone(), statuses.clone());
    let (tx, inbound) = mpsc::channel(16);
    let rx = ads.open_delta(ReceiverStream::new(inbound), None);
    Envoy { tx, rx, statuses }
}

fn request(type_url: &str, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "mesh/m/virtualNode/a".to_owned(),
            ..Default::default()
        }),
        type_url: type_url.to_owned(),
        resource_names_subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

impl Envoy {
    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(Ok(r)).await.expect("stream open");
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        let out = tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a response within 5 s")
            .expect("stream open")
            .expect("not an error");
        DeltaDiscoveryResponse::decode(out.bytes().as_slice()).expect("decodes")
    }

    /// Nothing more arrives within a while.
    async fn quiet(&mut self) {
        let more = tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await;
        assert!(more.is_err(), "nothing more was to come: {more:?}");
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(request(&r.type_url, &[], &r.nonce)).await;
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test]
async fn a_change_sends_only_the_resources_it_changed() {
    let (store, cache) = cache(u64::MAX);
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, &[], "")).await;
    let clusters = envoy.next().await;
    assert_eq!(names(&clusters), ["c", "old"], "all clusters: a wildcard");
    envoy.ack(&clusters).await;
    envoy.send(request(LISTENER_TYPE, &[], "")).await;
    let listeners = envoy.next().await;
    assert_eq!(names(&listeners), ["l"]);
    envoy.ack(&listeners).await;
    envoy.send(request(ENDPOINT_TYPE, &["e1", "e2"], "")).await;
    let endpoints = envoy.next().await;
    assert_eq!(names(&endpoints), ["e1", "e2"]);
    envoy.ack(&endpoints).await;
    envoy.quiet().await;

    store.set_placements("m", Default::default());
    let changed = envoy.next().await;
    assert_eq!(changed.type_url, CLUSTER_TYPE);
    assert_eq!(
        names(&changed),
        ["c"],
        "the cluster that did not change is not sent"
    );
    assert_eq!(
        changed.system_version_info,
        store.current().version.to_string()
    );
    let changed_endpoints = envoy.next().await;
    assert_eq!(changed_endpoints.type_url, ENDPOINT_TYPE);
    assert_eq!(names(&changed_endpoints), ["e1"]);
    envoy.quiet().await;
    envoy.ack(&changed).await;
    envoy.ack(&changed_endpoints).await;
    let now = store.current().version.to_string();
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = envoy.statuses.snapshot().remove("m/a").expect("a status");
            if s.acked.get("clusters") == Some(&now) {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the ACK of the change reaches status");
    assert_eq!(status.acked["listeners"], listeners.system_version_info);
}

#[tokio::test]
async fn clusters_that_go_are_removed_after_the_rest_of_the_change() {
    let (store, cache) = cache(3);
    let version = store.current().version;
    assert!(version < 3, "the test expects to start below version 3");
    let mut envoy = connect(&cache);
    envoy.send(request(CLUSTER_TYPE, &[], "")).await;
    let clusters = envoy.next().await;
    envoy.ack(&clusters).await;
    envoy.send(request(LISTENER_TYPE, &[], "")).await;
    let listeners = envoy.next().await;
    envoy.ack(&listeners).await;
    while store.current().version < 3 {
        store.set_placements("m", Default::default());
    }
    // Whatever versions were passed through, the last response removes `old`, and no
    // response before it did.
    let mut removed_in = Vec::new();
    let mut n = 0;
    loop {
        let r = envoy.next().await;
        n += 1;
        if !r.removed_resources.is_empty() {
            assert_eq!(r.removed_resources, ["old"]);
            assert!(
                r.resources.is_empty(),
                "removals go in a response of their own"
            );
            removed_in.push(n);
            break;
        }
        assert_eq!(names(&r), ["c"]);
    }
    assert_eq!(removed_in.len(), 1);
    envoy.quiet().await;
}

#[tokio::test]
async fn a_reconnecting_envoy_is_sent_only_what_it_does_not_hold() {
    let (_store, cache) = cache(u64::MAX);
    let mut first = connect(&cache);
    first.send(request(CLUSTER_TYPE, &[], "")).await;
    let clusters = first.next().await;
    let held: HashMap<String, String> = clusters
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(first);

    let mut again = connect(&cache);
    let mut hello = request(CLUSTER_TYPE, &[], "");
    hello.initial_resource_versions = held;
    hello
        .initial_resource_versions
        .insert("gone".into(), "1".into());
    hello
        .initial_resource_versions
        .insert("old".into(), "not this version".into());
    again.send(hello).await;
    let answer = again.next().await;
    assert_eq!(
        names(&answer),
        ["old"],
        "c is held as it is; old is held at another version"
    );
    assert_eq!(answer.removed_resources, ["gone"]);
}

#[tokio::test]
async fn a_refusal_is_kept_and_what_was_refused_is_sent_again() {
    let (store, cache) = cache(u64::MAX);
    let mut envoy = connect(&cache);
    envoy.send(request(ENDPOINT_TYPE, &["e2"], "")).await;
    let endpoints = envoy.next().await;
    assert_eq!(names(&endpoints), ["e2"], "only what is asked for by name");
    let mut nack = request(ENDPOINT_TYPE, &[], &endpoints.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad endpoints".into(),
        ..Default::default()
    });
    envoy.send(nack).await;
    // Asking for e1 as well: e2, refused, is not held, so it comes again beside e1.
    envoy.send(request(ENDPOINT_TYPE, &["e1"], "")).await;
    let again = envoy.next().await;
    assert_eq!(names(&again), ["e1", "e2"]);
    let status = envoy.statuses.snapshot().remove("m/a").expect("a status");
    let refused = status.last_nack.expect("the NACK is kept");
    assert_eq!(refused.message, "bad endpoints");
    assert_eq!(refused.version, store.current().version.to_string());

    // Unsubscribed: e1 goes from what the Envoy is sent on a change.
    let mut leave = request(ENDPOINT_TYPE, &[], &again.nonce);
    leave.resource_names_unsubscribe = vec!["e1".into()];
    envoy.send(leave).await;
    // (Asking for e2 again is answered: the unsubscription before it was taken.)
    envoy.send(request(ENDPOINT_TYPE, &["e2"], "")).await;
    assert_eq!(names(&envoy.next().await), ["e2"]);
    store.set_placements("m", Default::default());
    envoy.quiet().await;
}
