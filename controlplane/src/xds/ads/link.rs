//! What one ADS stream knows of the Envoy at its other end, whichever protocol it speaks
//! (state of the world or delta): who it is (from its first request's node), whether
//! it may speak for that Envoy, what it ACKed and refused, how far it is in sync, and
//! what status says of it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;

use super::{
    Closers, EnvoyStatuses, GATEWAY_PREFIX, Nack, StreamInfo, TAKEOVER_EVERY, Takeovers,
    humantime_now, instance_of, node_key, nothing_for, short_type, split_key,
};
use crate::secrets::Secrets;
use crate::state::lock;
use crate::state::snapshot::Snapshot;
use crate::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use crate::xds::cache::{Cache, Prepared};

/// One stream's Envoy, and what the control plane shares with every stream.
pub(super) struct Link {
    pub(super) cache: Cache,
    pub(super) secrets: Secrets,
    statuses: EnvoyStatuses,
    closers: Closers,
    takeovers: Takeovers,
    pub(super) id: u64,
    peer: Option<String>,
    /// The Envoy's node key (`MESH/NODE`), once its first request named it.
    pub(super) node: Option<String>,
    /// The mesh the node id names.
    mesh: String,
    /// Why this Envoy gets nothing, as status was last told.
    problem: Option<String>,
    /// Types sent and not yet ACKed.
    pub(super) pending: HashSet<String>,
    /// The newest snapshot version sent from.
    pub(super) version: u64,
    /// When the stream opened, and which types were ACKed since (until all three were).
    opened: Instant,
    first_acks: Vec<String>,
    /// The stream's turn to get its first configuration ([`super::JOINING_AT_ONCE`]).
    joining: Arc<tokio::sync::Semaphore>,
    /// Its turn, while it has it: dropping this gives it back (a task gives it back by
    /// itself after [`super::JOINING_TURN`]).
    turn: Option<tokio::sync::oneshot::Sender<()>>,
    /// Whether it had its turn (or waited for it as long as it may).
    joined: bool,
}

impl Link {
    pub(super) fn new(ads: &super::Ads, id: u64, peer: Option<String>) -> Self {
        Self {
            cache: ads.cache.clone(),
            secrets: ads.secrets.clone(),
            statuses: ads.statuses.clone(),
            closers: ads.closers.clone(),
            takeovers: ads.takeovers.clone(),
            id,
            peer,
            node: None,
            mesh: String::new(),
            problem: None,
            pending: HashSet::new(),
            version: 0,
            opened: Instant::now(),
            first_acks: Vec::new(),
            joining: ads.joining.clone(),
            turn: None,
            joined: false,
        }
    }

    /// On the stream's first request: waits for its turn to get its first configuration
    /// (at most [`super::JOINING_TURN`]), which it holds until it has ACKed everything it
    /// was sent, or for [`super::JOINING_TURN`] at most.
    pub(super) async fn join(&mut self) {
        if self.joined {
            return;
        }
        self.joined = true;
        let turn = self.joining.clone().acquire_owned();
        if let Ok(Ok(permit)) = tokio::time::timeout(super::JOINING_TURN, turn).await {
            let (give_back, given_back) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(super::JOINING_TURN, given_back).await;
                drop(permit);
            });
            self.turn = Some(give_back);
        }
    }

    /// The node key, or "" before the first request.
    pub(super) fn key(&self) -> String {
        self.node.clone().unwrap_or_default()
    }

    /// Takes the Envoy's identity from the first request's `node`: refused when it names
    /// no virtual node or gateway, or when another stream took this Envoy over too lately;
    /// an older stream of the same Envoy is closed.
    pub(super) fn identify(&mut self, node: Option<&Node>) -> Result<(), Status> {
        if self.node.is_some() {
            return Ok(());
        }
        let id = node.map(|n| n.id.as_str()).unwrap_or_default();
        // A virtual gateway's Envoy is kept (and shown) under `virtualGateway/NAME`.
        let (mesh, name) = match (meshmodel::node_from_id(id), meshmodel::gateway_from_id(id)) {
            (Some((mesh, node)), _) => (mesh, node.to_owned()),
            (None, Some((mesh, gateway))) => (mesh, format!("{GATEWAY_PREFIX}{gateway}")),
            (None, None) => {
                return Err(Status::invalid_argument(format!(
                    "node id `{id}` names no virtual node or gateway: give mesh/MESH/virtualNode/NODE, mesh/MESH/virtualGateway/GATEWAY or their ARNs"
                )));
            }
        };
        let snapshot = self.cache.current();
        let problem = nothing_for(&snapshot, mesh, &name);
        let key = node_key(mesh, &name);
        match &problem {
            Some(p) => tracing::warn!(node = key, peer = ?self.peer, "Envoy connected, but {p}"),
            None => tracing::info!(node = key, peer = ?self.peer, "Envoy connected"),
        }
        self.mesh = mesh.to_owned();
        self.problem = problem.clone();
        let instance = node.and_then(instance_of);
        self.may_take_over(&key, &instance)?;
        let mut replaced = Vec::new();
        self.statuses.update(&key, |s| {
            // The same Envoy again (same instance, or none told): its older stream is
            // stale or an impostor's; it is closed so that one stream speaks for it.
            replaced = s
                .open_streams
                .take_instance(&instance)
                .into_iter()
                .map(|o| (o.id, o.peer))
                .collect();
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
                node = key,
                old_stream = old,
                old_peer = ?old_peer,
                new_stream = self.id,
                new_peer = ?self.peer,
                "a second stream claims this Envoy; closing the older one"
            );
            if let Some(closer) = lock(&self.closers).remove(&old) {
                let _ = closer.send(format!(
                    "stream {} from {} now speaks for node {key}",
                    self.id,
                    self.peer.as_deref().unwrap_or("an unknown address")
                ));
            }
        }
        self.node = Some(key);
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

    /// The Envoy refused what was sent of `type_url` at `version`: logged and kept for
    /// status; it keeps serving its last good configuration.
    pub(super) fn refused(&self, type_url: &str, version: u64, message: &str) {
        let node = self.key();
        tracing::warn!(
            node,
            resource = short_type(type_url),
            message,
            "Envoy refused the configuration (NACK); it keeps serving its last good one"
        );
        self.statuses.update(&node, |s| {
            s.last_nack = Some(Nack {
                type_url: type_url.to_owned(),
                version: version.to_string(),
                message: message.to_owned(),
                at: humantime_now(),
            });
        });
    }

    /// The Envoy took what was sent of `type_url` (as `version_info`, shown in status).
    pub(super) fn acked(&mut self, type_url: &str, version_info: &str) {
        let node = self.key();
        // Virtual hosts sent apart (VHDS) are the routes' content: status shows them as
        // routes.
        let short = match type_url {
            crate::xds::vhds::VHOST_TYPE => short_type(ROUTE_TYPE),
            other => short_type(other),
        }
        .to_owned();
        tracing::debug!(node, resource = short, version = version_info, "ACK");
        let first = matches!(type_url, CLUSTER_TYPE | LISTENER_TYPE | ROUTE_TYPE);
        let complete = if first && self.first_acks.len() < 3 && !self.first_acks.contains(&short) {
            self.first_acks.push(short.clone());
            (self.first_acks.len() == 3).then(|| self.opened.elapsed().as_secs_f64() * 1000.0)
        } else {
            None
        };
        self.statuses.update(&node, |s| {
            s.acked.insert(short, version_info.to_owned());
            if complete.is_some() {
                s.first_config_ms = complete;
            }
        });
        self.pending.remove(type_url);
        if self.pending.is_empty() {
            // Everything sent is taken: the next new stream's turn.
            self.turn = None;
        }
        self.note_synced();
    }

    /// Once nothing sent waits for an ACK, this Envoy has every change up to `version`.
    pub(super) fn note_synced(&self) {
        if self.pending.is_empty() && self.version > 0 && self.first_acks.len() == 3 {
            if let Some(node) = &self.node {
                let version = self.version;
                self.statuses.update(node, |s| {
                    s.synced_version = Some(s.synced_version.map_or(version, |v| v.max(version)));
                });
            }
        }
    }

    /// This node's resources in `snapshot` (nothing for an Envoy of another mesh, or of
    /// no node); status says why it gets nothing, told only when that changes (this runs
    /// for every push).
    pub(super) fn resources(&mut self, snapshot: &Snapshot) -> Arc<Prepared> {
        let node = self.key();
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
        found.unwrap_or_else(Prepared::nothing)
    }

    /// The stream ended: status no longer counts it.
    pub(super) fn disconnected(&self) {
        lock(&self.closers).remove(&self.id);
        if let Some(node) = &self.node {
            tracing::info!(node, stream = self.id, "Envoy disconnected");
            self.statuses.update(node, |s| {
                s.open_streams.remove(self.id);
                s.connected = !s.open_streams.is_empty();
            });
        }
    }
}
