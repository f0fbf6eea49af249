//! The aggregated discovery service (ADS, state of the world, xDS v3): one gRPC stream per
//! Envoy, over which it receives its clusters, listeners and route configurations, and
//! answers each with an ACK or a NACK.
//!
//! Each stream follows the snapshot cache ([`crate::cache`]): a new snapshot is pushed to
//! every Envoy that subscribed, for each resource type whose content changed for that
//! Envoy. The server never translates; it asks the cache for the node's resources. A NACK is logged and kept
//! for `gophermesh status`; the Envoy keeps its last good configuration, and the store is
//! not rolled back (the next good change supersedes it).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::Cache;
use crate::store::Snapshot;
use crate::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// A configuration an Envoy refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub type_url: String,
    /// The snapshot version the Envoy refused.
    pub version: String,
    pub message: String,
    /// RFC 3339 time of the NACK.
    pub at: String,
}

/// One open ADS stream of a virtual node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Numbered from 1 in the order streams opened.
    pub id: u64,
    /// The address the stream came from, when known.
    pub peer: Option<String>,
    /// Which Envoy of the node it is, when the Envoy says (the ECS task ARN the App Mesh
    /// sidecar puts in its node metadata); several tasks of one virtual node share its id.
    pub instance: Option<String>,
    /// RFC 3339 time it opened.
    pub since: String,
}

/// What the control plane knows of one virtual node's Envoys.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnvoyStatus {
    /// Whether any stream of this node is open.
    pub connected: bool,
    /// Every open stream of this node.
    pub open_streams: Vec<StreamInfo>,
    /// Last version ACKed, by short type name (`clusters`, `listeners`, `routes`).
    pub acked: BTreeMap<String, String>,
    pub last_nack: Option<Nack>,
    /// Streams opened since start.
    pub streams: u64,
    /// On the current stream: milliseconds from Envoy's first request to its ACK of the
    /// last of clusters, listeners and routes (its whole first configuration).
    pub first_config_ms: Option<f64>,
    /// The last mesh version whose every change for this Envoy it has ACKed (types that
    /// did not change for it need no ACK). `None` until its first configuration is ACKed.
    pub synced_version: Option<u64>,
    /// Why this Envoy gets nothing, when it does not (its node id names no virtual node
    /// of the mesh served).
    pub problem: Option<String>,
}

/// Every Envoy's status, keyed by virtual node name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EnvoyStatuses(Arc<Mutex<BTreeMap<String, EnvoyStatus>>>);

/// How to end each open stream, by stream id (to close the older of two streams that
/// claim the same Envoy).
type Closers = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>>;

impl EnvoyStatuses {
    pub fn snapshot(&self) -> BTreeMap<String, EnvoyStatus> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, node: &str, f: impl FnOnce(&mut EnvoyStatus)) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(node.to_owned()).or_default());
    }
}

/// Short name of an xDS type URL, for logs and status.
pub fn short_type(type_url: &str) -> &str {
    match type_url {
        LISTENER_TYPE => "listeners",
        CLUSTER_TYPE => "clusters",
        ROUTE_TYPE => "routes",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

/// The ADS service over the snapshot cache.
#[derive(Debug, Clone)]
pub struct Ads {
    cache: Cache,
    statuses: EnvoyStatuses,
    closers: Closers,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
}

impl Ads {
    pub fn new(cache: Cache, statuses: EnvoyStatuses) -> Self {
        Self {
            cache,
            statuses,
            closers: Closers::default(),
            next_stream: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// Serves one ADS stream of `inbound` requests from `peer`; the responses arrive on
    /// the receiver.
    fn open<S>(
        &self,
        inbound: S,
        peer: Option<String>,
    ) -> mpsc::Receiver<Result<DiscoveryResponse, Status>>
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        lock(&self.closers).insert(id, close_tx);
        let stream = AdsStream {
            cache: self.cache.clone(),
            statuses: self.statuses.clone(),
            closers: self.closers.clone(),
            id,
            peer,
            tx,
            node: None,
            mesh: String::new(),
            subscriptions: HashMap::new(),
            pending: std::collections::HashSet::new(),
            version: 0,
            nonce: 0,
            opened: Instant::now(),
            first_acks: Vec::new(),
        };
        tokio::spawn(stream.run(inbound, close_rx));
        rx
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let rx = self.open(request.into_inner(), peer);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "this control plane serves state-of-the-world ADS; set ads_config.api_type to GRPC",
        ))
    }
}

#[derive(Debug, Default)]
struct Subscription {
    names: Vec<String>,
    /// Nonce of the last response sent for this type.
    nonce: String,
    /// Hash of the last resources sent, to skip pushes that change nothing.
    sent_hash: Option<u64>,
}

struct AdsStream {
    cache: Cache,
    statuses: EnvoyStatuses,
    closers: Closers,
    id: u64,
    peer: Option<String>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    node: Option<String>,
    /// The mesh the node id names.
    mesh: String,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
    /// Types sent and not yet ACKed, and the snapshot version last sent from.
    pending: std::collections::HashSet<String>,
    version: u64,
    /// When the stream opened, and which types were ACKed since (until all three were).
    opened: Instant,
    first_acks: Vec<String>,
}

impl AdsStream {
    async fn run<S>(mut self, mut inbound: S, mut close: tokio::sync::oneshot::Receiver<String>)
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin,
    {
        let mut snapshots = self.cache.subscribe();
        loop {
            tokio::select! {
                reason = &mut close => {
                    if let Ok(reason) = reason {
                        let _ = self.tx.send(Err(Status::aborted(reason))).await;
                    }
                    break;
                }
                message = inbound.next() => match message.transpose() {
                    Ok(Some(request)) => {
                        if let Err(status) = self.on_request(request).await {
                            let _ = self.tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(node = ?self.node, error = %e, "ADS stream ended");
                        break;
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let types: Vec<String> = self.subscriptions.keys().cloned().collect();
                    for type_url in [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
                        if types.iter().any(|t| t == type_url) && !self.send(&snapshot, type_url, false).await {
                            return self.disconnected();
                        }
                    }
                    self.version = snapshot.version;
                    self.note_synced();
                }
            }
        }
        self.disconnected();
    }

    fn disconnected(&self) {
        lock(&self.closers).remove(&self.id);
        if let Some(node) = &self.node {
            tracing::info!(node, stream = self.id, "Envoy disconnected");
            self.statuses.update(node, |s| {
                s.open_streams.retain(|o| o.id != self.id);
                s.connected = !s.open_streams.is_empty();
            });
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if self.node.is_none() {
            let id = request
                .node
                .as_ref()
                .map(|n| n.id.as_str())
                .unwrap_or_default();
            let Some((mesh, node)) = meshmodel::node_from_id(id) else {
                return Err(Status::invalid_argument(format!(
                    "node id `{id}` is not a virtual node name like mesh/MESH/virtualNode/NODE"
                )));
            };
            let node = node.to_owned();
            let snapshot = self.cache.current();
            let served = snapshot.mesh.name();
            let problem = if served.is_some_and(|m| m != mesh) {
                Some(format!(
                    "its node id `{id}` names mesh `{mesh}`; this control plane serves `{}`, so it gets nothing",
                    served.unwrap_or_default()
                ))
            } else if !snapshot.mesh.virtual_nodes.contains_key(&node) {
                Some(format!(
                    "its node id `{id}` names no virtual node of the mesh (yet); it gets nothing until one exists"
                ))
            } else {
                None
            };
            match &problem {
                Some(p) => tracing::warn!(node, peer = ?self.peer, "Envoy connected, but {p}"),
                None => tracing::info!(node, peer = ?self.peer, "Envoy connected"),
            }
            self.mesh = mesh.to_owned();
            let instance = request.node.as_ref().and_then(instance_of);
            let mut replaced = Vec::new();
            self.statuses.update(&node, |s| {
                // The same Envoy again (same instance, or none told): its older stream
                // is stale or an impostor's; it is closed so that one stream speaks for it.
                replaced = s
                    .open_streams
                    .iter()
                    .filter(|o| o.instance == instance)
                    .map(|o| (o.id, o.peer.clone()))
                    .collect();
                s.open_streams.retain(|o| o.instance != instance);
                s.open_streams.push(StreamInfo {
                    id: self.id,
                    peer: self.peer.clone(),
                    instance: instance.clone(),
                    since: humantime_now(),
                });
                s.connected = true;
                s.streams += 1;
                s.first_config_ms = None;
                s.synced_version = None;
                s.problem = problem.clone();
            });
            for (old, old_peer) in replaced {
                tracing::warn!(
                    node,
                    old_stream = old,
                    old_peer = ?old_peer,
                    new_stream = self.id,
                    new_peer = ?self.peer,
                    "a second stream claims this Envoy; closing the older one"
                );
                if let Some(closer) = lock(&self.closers).remove(&old) {
                    let _ = closer.send(format!(
                        "stream {} from {} now speaks for node {node}",
                        self.id,
                        self.peer.as_deref().unwrap_or("an unknown address")
                    ));
                }
            }
            self.node = Some(node);
        }
        let node = self.node.clone().unwrap_or_default();
        let type_url = request.type_url.clone();
        let short = short_type(&type_url).to_owned();
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        let names_changed = sub.names != request.resource_names;
        sub.names = request.resource_names.clone();

        if !request.response_nonce.is_empty() {
            if request.response_nonce != sub.nonce {
                // An answer to an older response; a newer one is on its way.
                return Ok(());
            }
            if let Some(error) = &request.error_detail {
                let version = self.cache.current().version.to_string();
                tracing::warn!(node, resource = short, message = %error.message, "Envoy refused the configuration (NACK); it keeps serving its last good one");
                self.statuses.update(&node, |s| {
                    s.last_nack = Some(Nack {
                        type_url: type_url.clone(),
                        version,
                        message: error.message.clone(),
                        at: humantime_now(),
                    });
                });
            } else {
                tracing::debug!(
                    node,
                    resource = short,
                    version = request.version_info,
                    "ACK"
                );
                let complete = if self.first_acks.len() < 3 && !self.first_acks.contains(&short) {
                    self.first_acks.push(short.clone());
                    (self.first_acks.len() == 3)
                        .then(|| self.opened.elapsed().as_secs_f64() * 1000.0)
                } else {
                    None
                };
                self.statuses.update(&node, |s| {
                    s.acked.insert(short.clone(), request.version_info.clone());
                    if complete.is_some() {
                        s.first_config_ms = complete;
                    }
                });
                self.pending.remove(&type_url);
                self.note_synced();
            }
            if !names_changed {
                return Ok(());
            }
        }
        let snapshot = self.cache.current();
        if !self.send(&snapshot, &type_url, true).await {
            return Err(Status::unavailable("the stream is closed"));
        }
        Ok(())
    }

    /// Once nothing sent waits for an ACK, this Envoy has every change up to `version`.
    fn note_synced(&self) {
        if self.pending.is_empty() && self.version > 0 && self.first_acks.len() == 3 {
            if let Some(node) = &self.node {
                let version = self.version;
                self.statuses.update(node, |s| {
                    s.synced_version = Some(s.synced_version.map_or(version, |v| v.max(version)));
                });
            }
        }
    }

    /// Sends the resources of `type_url` for this node. Unless `always`, skips sending when
    /// they are the same as last sent. Returns false when the stream is gone.
    async fn send(&mut self, snapshot: &Arc<Snapshot>, type_url: &str, always: bool) -> bool {
        let node = self.node.clone().unwrap_or_default();
        // An Envoy of another mesh gets nothing of this one.
        let ours = snapshot.mesh.name().is_none_or(|m| m == self.mesh);
        let found = ours
            .then(|| self.cache.resources(snapshot, &node))
            .flatten();
        let problem = match (&found, ours) {
            (Some(_), _) => None,
            (None, false) => Some(format!(
                "its node id names mesh `{}`; this control plane serves `{}`, so it gets nothing",
                self.mesh,
                snapshot.mesh.name().unwrap_or_default()
            )),
            (None, true) => Some(
                "its node id names no virtual node of the mesh (yet); it gets nothing until one exists"
                    .to_owned(),
            ),
        };
        self.statuses.update(&node, |s| s.problem = problem);
        let resources = found.unwrap_or_default();
        let Some(all) = resources.of_type(type_url) else {
            tracing::debug!(
                node,
                type_url,
                "a resource type this control plane does not serve"
            );
            return true;
        };
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let chosen: Vec<_> = all
            .iter()
            .filter(|(name, _)| {
                sub.names.is_empty() || type_url != ROUTE_TYPE || sub.names.contains(name)
            })
            .map(|(_, any)| any.clone())
            .collect();
        let mut hasher = DefaultHasher::new();
        for any in &chosen {
            any.value.hash(&mut hasher);
        }
        let hash = hasher.finish();
        if !always && sub.sent_hash == Some(hash) {
            return true;
        }
        self.nonce += 1;
        sub.nonce = self.nonce.to_string();
        sub.sent_hash = Some(hash);
        self.pending.insert(type_url.to_owned());
        self.version = self.version.max(snapshot.version);
        let response = DiscoveryResponse {
            version_info: snapshot.version.to_string(),
            resources: chosen,
            type_url: type_url.to_owned(),
            nonce: sub.nonce.clone(),
            ..Default::default()
        };
        tracing::debug!(
            node,
            resource = short_type(type_url),
            version = snapshot.version,
            "push"
        );
        self.tx.send(Ok(response)).await.is_ok()
    }
}

/// Which Envoy of a virtual node `node` is: the ECS task ARN in the App Mesh sidecar's
/// `aws.appmesh.platformInfo` metadata, when it is there.
fn instance_of(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let info = node
        .metadata
        .as_ref()?
        .fields
        .get("aws.appmesh.platformInfo")?;
    let Some(Kind::StructValue(info)) = &info.kind else {
        return None;
    };
    let mut found = None;
    let mut stack = vec![info];
    while let Some(s) = stack.pop() {
        for (key, value) in &s.fields {
            match &value.kind {
                Some(Kind::StringValue(v)) if key.to_ascii_lowercase().contains("taskarn") => {
                    found = Some(v.clone());
                }
                Some(Kind::StructValue(inner)) => stack.push(inner),
                _ => {}
            }
        }
    }
    found
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;
    use crate::meta::Identity;
    use crate::store::Store;
    use crate::translate::NodeResources;

    /// A cache whose clusters change with every snapshot version while the listeners
    /// stay the same, so the protocol is tested without the translation.
    fn fake_cache() -> (Store, Cache) {
        let store = Store::in_memory(meshmodel::Mesh::default(), Identity::default());
        let cache = Cache::with_builder(
            store.clone(),
            Arc::new(|s: &Snapshot, node: &str| {
                let any = |t: &str, v: String| Any {
                    type_url: t.to_owned(),
                    value: v.into_bytes(),
                };
                (node == "a").then(|| NodeResources {
                    clusters: vec![("c".into(), any(CLUSTER_TYPE, format!("v{}", s.version)))],
                    listeners: vec![("l".into(), any(LISTENER_TYPE, "same".into()))],
                    routes: Vec::new(),
                })
            }),
        );
        (store, cache)
    }

    struct Envoy {
        tx: mpsc::Sender<Result<DiscoveryRequest, Status>>,
        rx: mpsc::Receiver<Result<DiscoveryResponse, Status>>,
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
        }

        fn status(&self) -> EnvoyStatus {
            self.statuses
                .snapshot()
                .remove("a")
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
        store.set_placements(Default::default());
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
        assert!(!statuses.snapshot()["a"].connected);
        assert_eq!(statuses.snapshot()["a"].streams, 1);
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

        // The real Envoy reconnects; the impostor is closed in turn.
        let mut again = open_on(&ads, "10.0.0.1:5001");
        again.send(request(CLUSTER_TYPE, "", "")).await;
        again.next().await.expect("clusters");
        assert!(impostor.next().await.is_err());
        // The closed stream's end does not mark the node disconnected.
        tokio::time::timeout(Duration::from_secs(5), async {
            while again.status().open_streams.len() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("one open stream");
        assert!(again.status().connected);
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
        let store = Store::in_memory(mesh, Identity::default());
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
        assert_eq!(ads.statuses.snapshot()["requester"].problem, None);

        for (id, node, words) in [
            (
                "mesh/elsewhere/virtualNode/requester",
                "requester",
                "names mesh `elsewhere`",
            ),
            (
                "mesh/gophermesh/virtualNode/nobody",
                "nobody",
                "names no virtual node",
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
}
