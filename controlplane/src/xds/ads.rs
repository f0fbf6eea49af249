//! The aggregated discovery service (ADS, state of the world, xDS v3): one gRPC stream per
//! Envoy, over which it receives its clusters, listeners and route configurations (and the
//! endpoints of its EDS clusters), and answers each with an ACK or a NACK.
//!
//! Each stream follows the snapshot cache ([`super::cache`]): a new snapshot is pushed to
//! every Envoy that subscribed, for each resource type whose content changed for that
//! Envoy. The server never translates; it asks the cache for the node's resources. A NACK is logged and kept
//! for `gophermesh status`; the Envoy keeps its last good configuration, and the store is
//! not rolled back (the next good change supersedes it).
//!
//! Here: the service and the state machine of one stream (subscriptions, nonces, ACKs,
//! who the Envoy is); what is known of each Envoy is kept in `ads/status.rs`, the unit
//! tests are in `ads/tests.rs`. TLS secrets (SDS) come from [`crate::secrets`] and are sent
//! on the same stream when they change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Status;

use super::cache::{Cache, Prepared};
use crate::secrets::{SECRET_TYPE, Secrets};
use crate::state::lock;
use crate::state::snapshot::Snapshot;
use crate::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// How to end each open stream, by stream id (to close the older of two streams that
/// claim the same Envoy).
type Closers = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>>;
/// Short name of an xDS type URL, for logs and status.
pub fn short_type(type_url: &str) -> &str {
    match type_url {
        LISTENER_TYPE => "listeners",
        CLUSTER_TYPE => "clusters",
        ROUTE_TYPE => "routes",
        ENDPOINT_TYPE => "endpoints",
        SECRET_TYPE => "secrets",
        crate::xds::vhds::VHOST_TYPE => "virtual hosts",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}

/// The most resource names one request may name: far more than a node of the largest
/// mesh subscribes to (its routes and its clusters' endpoints), far fewer than would let a
/// stream hold the control plane's memory.
pub const MAX_RESOURCE_NAMES: usize = 20_000;

/// How often a new stream may take an Envoy (a node id and instance) over from the stream
/// that speaks for it: two Envoys under one node id would otherwise evict each other
/// several times a second for as long as both run.
pub const TAKEOVER_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// When each Envoy (node key and instance) was last taken over, and how many takeovers of
/// it were refused since (logged once per burst).
type Takeovers = Arc<Mutex<HashMap<(String, Option<String>), (tokio::time::Instant, u64)>>>;

/// The ADS service over the snapshot cache.
#[derive(Debug, Clone)]
pub struct Ads {
    cache: Cache,
    secrets: Secrets,
    statuses: EnvoyStatuses,
    closers: Closers,
    takeovers: Takeovers,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
    /// Streams getting their first configuration at once (see [`JOINING_AT_ONCE`]).
    joining: Arc<tokio::sync::Semaphore>,
}

/// How many new streams get their first configuration at once. In a storm (a replica's
/// ten thousand sidecars reconnecting), the others wait at their first request, so the
/// streams already in sync still get changes promptly; a stream gives its turn back once
/// it has ACKed everything it was sent, or after [`JOINING_TURN`].
pub const JOINING_AT_ONCE: usize = 64;

/// The longest a new stream waits for its turn (or holds it): one that never ACKs keeps
/// no other waiting longer than this.
pub const JOINING_TURN: std::time::Duration = std::time::Duration::from_secs(5);

impl Ads {
    pub fn new(cache: Cache, statuses: EnvoyStatuses) -> Self {
        Self {
            cache,
            secrets: Secrets::default(),
            statuses,
            closers: Closers::default(),
            takeovers: Takeovers::default(),
            next_stream: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            joining: Arc::new(tokio::sync::Semaphore::new(JOINING_AT_ONCE)),
        }
    }

    /// Serves the TLS secrets of `secrets` (SDS over the same stream) beside the cache's
    /// resources.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// The gRPC service, ready for tonic's `Server::add_service`.
    pub fn into_service(self) -> AdsServer {
        AdsServer(self)
    }

    /// A new stream's number, and the way to close it.
    fn register(&self) -> (u64, tokio::sync::oneshot::Receiver<String>) {
        let id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        lock(&self.closers).insert(id, close_tx);
        (id, close_rx)
    }

    /// Serves one ADS stream of `inbound` requests from `peer`; the responses arrive on
    /// the receiver.
    fn open<S>(&self, inbound: S, peer: Option<String>) -> mpsc::Receiver<Result<Outgoing, Status>>
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let (id, close_rx) = self.register();
        let stream = AdsStream {
            link: Link::new(self, id, peer),
            tx,
            subscriptions: HashMap::new(),
            nonce: 0,
            clusters_sent: None,
        };
        tokio::spawn(serve(stream, inbound, close_rx));
        rx
    }
}

#[derive(Debug, Default)]
struct Subscription {
    names: Vec<String>,
    /// Nonce of the last response sent for this type.
    nonce: String,
    /// The snapshot version of that response (what a NACK of it refused).
    sent_version: u64,
    /// Hash of the last resources sent, to skip pushes that change nothing.
    sent_hash: Option<u64>,
}

struct AdsStream {
    link: Link,
    tx: mpsc::Sender<Result<Outgoing, Status>>,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
    /// The resources whose clusters were last sent whole: what a change's removals are
    /// told apart from.
    clusters_sent: Option<Arc<Prepared>>,
}

/// The order in which a change reaches an Envoy (xDS order: a cluster before its
/// endpoints, a listener before its routes); `true` marks the second pass over clusters
/// that removes the ones a change dropped, once nothing routes to them (make before
/// break).
pub(super) const PUSH_ORDER: [(&str, bool); 5] = [
    (CLUSTER_TYPE, false),
    (ENDPOINT_TYPE, false),
    (LISTENER_TYPE, false),
    (ROUTE_TYPE, false),
    (CLUSTER_TYPE, true),
];

/// One protocol's side of a stream (state of the world or delta): what it does with a
/// request, new secrets and a new snapshot; [`serve`] runs the loop around it.
trait Protocol: Send + 'static {
    type Request: Send + 'static;

    fn link(&self) -> &Link;

    fn tx(&self) -> &mpsc::Sender<Result<Outgoing, Status>>;

    /// A request of the Envoy's; an error ends the stream with it.
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// The secrets changed; false when the stream is gone.
    fn on_secrets(&mut self) -> impl Future<Output = bool> + Send;

    /// A new snapshot; false when the stream is gone.
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> impl Future<Output = bool> + Send;
}

/// Runs stream `protocol` over `inbound` until either side ends it (or another stream of
/// the same Envoy closes it through `close`).
async fn serve<P, S>(
    mut protocol: P,
    mut inbound: S,
    mut close: tokio::sync::oneshot::Receiver<String>,
) where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Send + Unpin,
{
    let mut snapshots = protocol.link().cache.subscribe();
    let mut secrets = protocol.link().secrets.subscribe();
    loop {
        tokio::select! {
            reason = &mut close => {
                if let Ok(reason) = reason {
                    let _ = protocol.tx().send(Err(Status::aborted(reason))).await;
                }
                break;
            }
            message = inbound.next() => match message.transpose() {
                Ok(Some(request)) => {
                    if let Err(status) = protocol.on_request(request).await {
                        let _ = protocol.tx().send(Err(status)).await;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(node = ?protocol.link().node, error = %e, "ADS stream ended");
                    break;
                }
            },
            changed = secrets.changed() => {
                if changed.is_err() {
                    break;
                }
                secrets.borrow_and_update();
                if !protocol.on_secrets().await {
                    break;
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                if !protocol.on_snapshot(snapshot).await {
                    break;
                }
            }
        }
    }
    protocol.link().disconnected();
}

impl Protocol for AdsStream {
    type Request = DiscoveryRequest;

    fn link(&self) -> &Link {
        &self.link
    }

    fn tx(&self) -> &mpsc::Sender<Result<Outgoing, Status>> {
        &self.tx
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        self.request(request).await
    }

    async fn on_secrets(&mut self) -> bool {
        let snapshot = self.link.cache.current();
        !self.subscriptions.contains_key(SECRET_TYPE)
            || self.send(&snapshot, SECRET_TYPE, false).await
    }

    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> bool {
        self.push_change(&snapshot).await
    }
}

impl AdsStream {
    /// Sends what `snapshot` changed for this Envoy, in [`PUSH_ORDER`]. When the change
    /// removes clusters, they are kept (beside the new ones) until the routes that sent
    /// to them are replaced, and only then go, so no request is routed to a cluster
    /// Envoy no longer has. False when the stream is gone.
    async fn push_change(&mut self, snapshot: &Arc<Snapshot>) -> bool {
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        let bridge = self.bridge(snapshot);
        let removes = bridge.is_some();
        let mut bridge = bridge;
        for (type_url, second) in PUSH_ORDER {
            if second && !removes {
                continue;
            }
            let instead = if type_url == CLUSTER_TYPE && !second {
                bridge.take()
            } else {
                None
            };
            if types.iter().any(|t| t == type_url)
                && !self.send_as(snapshot, type_url, false, instead).await
            {
                return false;
            }
        }
        self.link.version = snapshot.version;
        self.link.note_synced();
        true
    }

    async fn request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if request.resource_names.len() > MAX_RESOURCE_NAMES {
            return Err(too_many_names(request.resource_names.len()));
        }
        self.link.join().await;
        self.link.identify(request.node.as_ref())?;
        let type_url = request.type_url.clone();
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        let names_changed = sub.names != request.resource_names;
        sub.names = request.resource_names.clone();

        if !request.response_nonce.is_empty() {
            if request.response_nonce != sub.nonce {
                // An answer to an older response; a newer one is on its way.
                return Ok(());
            }
            if let Some(error) = &request.error_detail {
                // The version of the response refused: a newer snapshot may exist by now.
                let version = sub.sent_version;
                self.link.refused(&type_url, version, &error.message);
            } else {
                self.link.acked(&type_url, &request.version_info);
            }
            if !names_changed {
                return Ok(());
            }
        }
        let snapshot = self.link.cache.current();
        if !self.send(&snapshot, &type_url, true).await {
            return Err(Status::unavailable("the stream is closed"));
        }
        Ok(())
    }

    /// When `snapshot` removes clusters this stream last sent and its Envoy takes routes
    /// or listeners: the clusters to send first, the new ones and the removed ones.
    fn bridge(&self, snapshot: &Snapshot) -> Option<Arc<Encoded>> {
        let before = self.clusters_sent.as_ref()?;
        let subscribed = |t: &str| self.subscriptions.contains_key(t);
        if !subscribed(CLUSTER_TYPE) || !(subscribed(ROUTE_TYPE) || subscribed(LISTENER_TYPE)) {
            return None;
        }
        let node = self.link.node.as_deref()?;
        let after = self.link.cache.resources(snapshot, node)?;
        // The same clusters (the node kept, or built again alike): nothing removed. Both
        // encodings are made once per node and version, so this costs a stream nothing.
        let same = |b: &Prepared, a: &Prepared| {
            let hash = |p: &Prepared| p.encoded(CLUSTER_TYPE).map(|e| e.hash());
            hash(b) == hash(a)
        };
        if Arc::ptr_eq(before, &after) || same(before, &after) {
            return None;
        }
        let now = after.of_type(CLUSTER_TYPE)?;
        let kept: std::collections::HashSet<&str> = now.iter().map(|(n, _)| n.as_str()).collect();
        let removed: Vec<&envoy_types::pb::google::protobuf::Any> = before
            .of_type(CLUSTER_TYPE)?
            .iter()
            .filter(|(name, _)| !kept.contains(name.as_str()))
            .map(|(_, any)| any)
            .collect();
        (!removed.is_empty())
            .then(|| Arc::new(Encoded::new(now.iter().map(|(_, any)| any).chain(removed))))
    }

    /// Sends the resources of `type_url` for this node. Unless `always`, skips sending when
    /// they are the same as last sent. Returns false when the stream is gone.
    async fn send(&mut self, snapshot: &Arc<Snapshot>, type_url: &str, always: bool) -> bool {
        self.send_as(snapshot, type_url, always, None).await
    }

    /// Sends `type_url`'s resources of `snapshot` (or `instead`, a bridge of clusters) when
    /// they differ from what was last sent, or `always`.
    async fn send_as(
        &mut self,
        snapshot: &Arc<Snapshot>,
        type_url: &str,
        always: bool,
        instead: Option<Arc<Encoded>>,
    ) -> bool {
        let found = self.link.resources(snapshot);
        if type_url == SECRET_TYPE {
            return self.send_secrets(snapshot.version, always).await;
        }
        let Some(all) = found.of_type(type_url) else {
            tracing::debug!(
                node = self.link.node,
                type_url,
                "a resource type this control plane does not serve"
            );
            return true;
        };
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        // Route configurations and endpoints are sent by name when the Envoy names some;
        // all of them (the shared encoding) when it names none or every one.
        let wanted = |name: &String| sub.names.is_empty() || sub.names.contains(name);
        let by_name = type_url == ROUTE_TYPE || type_url == ENDPOINT_TYPE;
        let whole = instead.is_none();
        let encoded = if let Some(bridge) = instead {
            bridge
        } else if by_name && !all.iter().all(|(name, _)| wanted(name)) {
            Arc::new(Encoded::new(
                all.iter()
                    .filter(|(name, _)| wanted(name))
                    .map(|(_, any)| any),
            ))
        } else {
            found
                .encoded(type_url)
                .unwrap_or_else(|| Arc::new(Encoded::new([])))
        };
        let hash = encoded.hash();
        if type_url == CLUSTER_TYPE && whole {
            self.clusters_sent = Some(found.clone());
        }
        if !always && sub.sent_hash == Some(hash) {
            return true;
        }
        self.push(snapshot.version, type_url, &encoded).await
    }

    /// Sends the secrets this Envoy asks for (those held; one not held yet follows when
    /// it is) when they differ from what was last sent, or `always`.
    async fn send_secrets(&mut self, version: u64, always: bool) -> bool {
        let Some(sub) = self.subscriptions.get(SECRET_TYPE) else {
            return true;
        };
        let held = self.link.secrets.named_for(&self.link.key(), &sub.names);
        if held.is_empty() {
            // Nothing to give yet (an ACM read or the mesh CA still to come): the Envoy
            // waits, and gets them when they are here, rather than an empty answer.
            return true;
        }
        let encoded = Arc::new(Encoded::new(held.iter().map(|(_, any)| any)));
        if !always && sub.sent_hash == Some(encoded.hash()) {
            return true;
        }
        self.push(version, SECRET_TYPE, &encoded).await
    }

    /// Sends `encoded` as the resources of `type_url` at `version`, with a new nonce;
    /// returns false when the stream is gone.
    async fn push(&mut self, version: u64, type_url: &str, encoded: &Encoded) -> bool {
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        self.nonce += 1;
        sub.nonce = self.nonce.to_string();
        sub.sent_version = version;
        sub.sent_hash = Some(encoded.hash());
        self.link.pending.insert(type_url.to_owned());
        self.link.version = self.link.version.max(version);
        let response = Outgoing::new(&version.to_string(), encoded, type_url, &sub.nonce);
        tracing::debug!(
            node = self.link.node,
            resource = short_type(type_url),
            version,
            "push"
        );
        self.tx.send(Ok(response)).await.is_ok()
    }
}

/// Why a request naming `n` resources is refused.
fn too_many_names(n: usize) -> Status {
    Status::invalid_argument(format!(
        "a request names {n} resources; at most {MAX_RESOURCE_NAMES} are served to one stream"
    ))
}

pub use crate::translate::GATEWAY_PREFIX;

pub use crate::state::snapshot::{node_key, split_key};

/// Why an Envoy whose node id names `node` of `mesh` gets nothing from `snapshot`, when it
/// does not: a mesh not held, or no such virtual node or gateway (yet).
fn nothing_for(snapshot: &Snapshot, mesh: &str, node: &str) -> Option<String> {
    let Some(state) = snapshot.mesh(mesh) else {
        let served: Vec<String> = snapshot.meshes.keys().map(|n| format!("`{n}`")).collect();
        return Some(match served.is_empty() {
            true => format!(
                "its node id names mesh `{mesh}`; this control plane has no mesh yet, so it gets nothing until that one exists"
            ),
            false => format!(
                "its node id names mesh `{mesh}`; this control plane serves {}, so it gets nothing until that one exists",
                served.join(", ")
            ),
        });
    };
    match node.strip_prefix(GATEWAY_PREFIX) {
        Some(gateway) if !state.mesh.virtual_gateways.contains_key(gateway) => Some(format!(
            "its node id names no virtual gateway `{gateway}` of mesh `{mesh}` (yet); it gets nothing until one exists"
        )),
        Some(_) => None,
        None => (!state.mesh.virtual_nodes.contains_key(node)).then(|| format!(
            "its node id names no virtual node `{node}` of mesh `{mesh}` (yet); it gets nothing until one exists"
        )),
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

mod delta;
mod link;
mod status;
mod wire;
use link::Link;
pub use status::{EnvoyStatus, EnvoyStatuses, Nack, OpenStreams, StreamInfo};
pub use wire::{AdsServer, Outgoing};

pub use super::encoded::Encoded;

#[cfg(test)]
mod tests;
