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
use std::time::{Instant, SystemTime};

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
}

impl Ads {
    pub fn new(cache: Cache, statuses: EnvoyStatuses) -> Self {
        Self {
            cache,
            secrets: Secrets::default(),
            statuses,
            closers: Closers::default(),
            takeovers: Takeovers::default(),
            next_stream: Arc::new(std::sync::atomic::AtomicU64::new(1)),
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

    /// Serves one ADS stream of `inbound` requests from `peer`; the responses arrive on
    /// the receiver.
    fn open<S>(&self, inbound: S, peer: Option<String>) -> mpsc::Receiver<Result<Outgoing, Status>>
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
            secrets: self.secrets.clone(),
            statuses: self.statuses.clone(),
            closers: self.closers.clone(),
            takeovers: self.takeovers.clone(),
            id,
            peer,
            tx,
            node: None,
            mesh: String::new(),
            problem: None,
            subscriptions: HashMap::new(),
            pending: std::collections::HashSet::new(),
            version: 0,
            nonce: 0,
            opened: Instant::now(),
            first_acks: Vec::new(),
            clusters_sent: None,
        };
        tokio::spawn(stream.run(inbound, close_rx));
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
    cache: Cache,
    secrets: Secrets,
    statuses: EnvoyStatuses,
    closers: Closers,
    takeovers: Takeovers,
    id: u64,
    peer: Option<String>,
    tx: mpsc::Sender<Result<Outgoing, Status>>,
    node: Option<String>,
    /// The mesh the node id names.
    mesh: String,
    /// Why this Envoy gets nothing, as status was last told.
    problem: Option<String>,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
    /// Types sent and not yet ACKed, and the snapshot version last sent from.
    pending: std::collections::HashSet<String>,
    version: u64,
    /// When the stream opened, and which types were ACKed since (until all three were).
    opened: Instant,
    first_acks: Vec<String>,
    /// The resources whose clusters were last sent whole: what a change's removals are
    /// told apart from.
    clusters_sent: Option<Arc<Prepared>>,
}

impl AdsStream {
    async fn run<S>(mut self, mut inbound: S, mut close: tokio::sync::oneshot::Receiver<String>)
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin,
    {
        let mut snapshots = self.cache.subscribe();
        let mut secrets = self.secrets.subscribe();
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
                changed = secrets.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    secrets.borrow_and_update();
                    let snapshot = self.cache.current();
                    if self.subscriptions.contains_key(SECRET_TYPE)
                        && !self.send(&snapshot, SECRET_TYPE, false).await
                    {
                        return self.disconnected();
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let types: Vec<String> = self.subscriptions.keys().cloned().collect();
                    // xDS order: a cluster before its endpoints, a listener before its
                    // routes. Make before break: when the change removes clusters, they
                    // are kept (beside the new ones) until the routes that sent to them
                    // are replaced, and only then go, so no request is routed to a
                    // cluster Envoy no longer has.
                    let bridge = self.bridge(&snapshot);
                    let removes = bridge.is_some();
                    let mut order = vec![
                        (CLUSTER_TYPE, bridge),
                        (ENDPOINT_TYPE, None),
                        (LISTENER_TYPE, None),
                        (ROUTE_TYPE, None),
                    ];
                    if removes {
                        order.push((CLUSTER_TYPE, None));
                    }
                    for (type_url, instead) in order {
                        if types.iter().any(|t| t == type_url)
                            && !self.send_as(&snapshot, type_url, false, instead).await
                        {
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
        if request.resource_names.len() > MAX_RESOURCE_NAMES {
            return Err(Status::invalid_argument(format!(
                "a request names {} resources; at most {MAX_RESOURCE_NAMES} are served to one stream",
                request.resource_names.len()
            )));
        }
        if self.node.is_none() {
            let id = request
                .node
                .as_ref()
                .map(|n| n.id.as_str())
                .unwrap_or_default();
            // A virtual gateway's Envoy is kept (and shown) under `virtualGateway/NAME`.
            let (mesh, node) = match (meshmodel::node_from_id(id), meshmodel::gateway_from_id(id)) {
                (Some((mesh, node)), _) => (mesh, node.to_owned()),
                (None, Some((mesh, gateway))) => (mesh, format!("{GATEWAY_PREFIX}{gateway}")),
                (None, None) => {
                    return Err(Status::invalid_argument(format!(
                        "node id `{id}` names no virtual node or gateway: give mesh/MESH/virtualNode/NODE, mesh/MESH/virtualGateway/GATEWAY or their ARNs"
                    )));
                }
            };
            let snapshot = self.cache.current();
            let problem = nothing_for(&snapshot, mesh, &node);
            let node = node_key(mesh, &node);
            match &problem {
                Some(p) => tracing::warn!(node, peer = ?self.peer, "Envoy connected, but {p}"),
                None => tracing::info!(node, peer = ?self.peer, "Envoy connected"),
            }
            self.mesh = mesh.to_owned();
            self.problem = problem.clone();
            let instance = request.node.as_ref().and_then(instance_of);
            self.may_take_over(&node, &instance)?;
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
                // The version of the response refused: a newer snapshot may exist by now.
                let version = sub.sent_version.to_string();
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
                let first = matches!(type_url.as_str(), CLUSTER_TYPE | LISTENER_TYPE | ROUTE_TYPE);
                let complete =
                    if first && self.first_acks.len() < 3 && !self.first_acks.contains(&short) {
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

    /// Whether this stream may speak for Envoy `instance` of `node`: always when no other
    /// stream does; when one does, at most once per [`TAKEOVER_EVERY`] (a refused stream is
    /// ended with `RESOURCE_EXHAUSTED`; Envoy retries). A burst of refusals is logged once.
    fn may_take_over(&self, node: &str, instance: &Option<String>) -> Result<(), Status> {
        if !self.statuses.held(node, instance) {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let mut takeovers = lock(&self.takeovers);
        let key = (node.to_owned(), instance.clone());
        match takeovers.get_mut(&key) {
            Some((last, refused)) if now.duration_since(*last) < TAKEOVER_EVERY => {
                *refused += 1;
                if *refused == 1 {
                    tracing::warn!(
                        node,
                        peer = ?self.peer,
                        "another stream claims this Envoy again within {TAKEOVER_EVERY:?} of the last takeover (two Envoys with one node id?); refusing such streams until then"
                    );
                }
                let wait = TAKEOVER_EVERY.saturating_sub(now.duration_since(*last));
                Err(Status::resource_exhausted(format!(
                    "node {node} was taken over by another stream less than {TAKEOVER_EVERY:?} ago; try again in {:.1} s",
                    wait.as_secs_f64()
                )))
            }
            Some((last, refused)) => {
                if *refused > 0 {
                    tracing::warn!(
                        node,
                        refused = *refused,
                        "streams refused in the last takeover burst"
                    );
                }
                *last = now;
                *refused = 0;
                Ok(())
            }
            None => {
                // Entries of Envoys not taken over lately are of no use any more.
                takeovers.retain(|_, (last, _)| now.duration_since(*last) < TAKEOVER_EVERY);
                takeovers.insert(key, (now, 0));
                Ok(())
            }
        }
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
    /// When `snapshot` removes clusters this stream last sent and its Envoy takes routes
    /// or listeners: the clusters to send first, the new ones and the removed ones.
    fn bridge(&self, snapshot: &Snapshot) -> Option<Arc<Encoded>> {
        let before = self.clusters_sent.as_ref()?;
        let subscribed = |t: &str| self.subscriptions.contains_key(t);
        if !subscribed(CLUSTER_TYPE) || !(subscribed(ROUTE_TYPE) || subscribed(LISTENER_TYPE)) {
            return None;
        }
        let node = self.node.as_deref()?;
        let after = self.cache.resources(snapshot, node)?;
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
        let node = self.node.clone().unwrap_or_default();
        // An Envoy of another mesh, or of no node, gets nothing; status says why, and is
        // told only when that changes (this runs for every push).
        let found = self.cache.resources(snapshot, &node);
        let problem = match found {
            Some(_) => None,
            None => nothing_for(
                snapshot,
                &self.mesh,
                split_key(&node).map_or("", |(_, n)| n),
            ),
        };
        if problem != self.problem {
            self.statuses
                .update(&node, |s| s.problem.clone_from(&problem));
            self.problem = problem;
        }
        let found = found.unwrap_or_else(Prepared::nothing);
        if type_url == SECRET_TYPE {
            return self.send_secrets(snapshot.version, always).await;
        }
        let Some(all) = found.of_type(type_url) else {
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
        let node = self.node.clone().unwrap_or_default();
        let held = self.secrets.named_for(&node, &sub.names);
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
        let node = self.node.clone().unwrap_or_default();
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        self.nonce += 1;
        sub.nonce = self.nonce.to_string();
        sub.sent_version = version;
        sub.sent_hash = Some(encoded.hash());
        self.pending.insert(type_url.to_owned());
        self.version = self.version.max(version);
        let response = Outgoing::new(&version.to_string(), encoded, type_url, &sub.nonce);
        tracing::debug!(node, resource = short_type(type_url), version, "push");
        self.tx.send(Ok(response)).await.is_ok()
    }
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

mod status;
mod wire;
pub use status::{EnvoyStatus, EnvoyStatuses, Nack, StreamInfo};
pub use wire::{AdsServer, Outgoing};

pub use super::encoded::Encoded;

#[cfg(test)]
mod tests;
