//! Incremental (delta) ADS: the same resources as the state-of-the-world stream, but each
//! response carries only the resources that changed for this Envoy and the names of those
//! that went. Envoy speaks it when its bootstrap's `ads_config.api_type` is `DELTA_GRPC`
//! (the bootstraps gophermesh writes); the App Mesh agent's bootstrap speaks state of the
//! world, served beside it on the same port.
//!
//! A resource's version is a hash of its encoding ([`crate::xds::encoded::version_of`]), so
//! a change that leaves a resource as it was sends nothing for it, and an Envoy that
//! reconnects (telling what it holds in `initial_resource_versions`) is sent only what
//! differs. Clusters and listeners are wildcard subscriptions (Envoy asks for all of
//! them); route configurations, endpoints and secrets are asked for by name, and virtual
//! hosts by their route configuration's name ([`crate::xds::vhds`]: a delta Envoy's
//! route configurations come without their virtual hosts, which come one by one).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use super::{Ads, Link, MAX_RESOURCE_NAMES, Outgoing, Protocol, serve, short_type, too_many_names};
use crate::secrets::SECRET_TYPE;
use crate::state::snapshot::Snapshot;
use crate::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use crate::xds::listing::Listing;
use crate::xds::vhds::VHOST_TYPE;

/// The order in which a change reaches a delta Envoy: as [`super::PUSH_ORDER`], with the
/// virtual hosts after their route configurations; `true` marks the second pass over
/// clusters that removes the ones the change dropped (make before break).
const DELTA_ORDER: [(&str, bool); 6] = [
    (CLUSTER_TYPE, false),
    (ENDPOINT_TYPE, false),
    (LISTENER_TYPE, false),
    (ROUTE_TYPE, false),
    (VHOST_TYPE, false),
    (CLUSTER_TYPE, true),
];

impl Ads {
    /// Serves one delta ADS stream of `inbound` requests from `peer`; the responses arrive
    /// on the receiver.
    pub(super) fn open_delta<S>(
        &self,
        inbound: S,
        peer: Option<String>,
    ) -> mpsc::Receiver<Result<Outgoing, Status>>
    where
        S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let (id, close_rx) = self.register();
        let stream = DeltaStream {
            link: Link::new(self, id, peer),
            tx,
            subscriptions: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(serve(stream, inbound, close_rx));
        rx
    }
}

struct DeltaStream {
    link: Link,
    tx: mpsc::Sender<Result<Outgoing, Status>>,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;

    fn link(&self) -> &Link {
        &self.link
    }

    fn tx(&self) -> &mpsc::Sender<Result<Outgoing, Status>> {
        &self.tx
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        self.request(request).await
    }

    async fn on_secrets(&mut self) -> bool {
        let snapshot = self.link.cache.current();
        self.send(&snapshot, SECRET_TYPE, Part::All, false).await
    }

    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> bool {
        self.push_change(&snapshot).await
    }
}

impl DeltaStream {
    /// Sends what `snapshot` changed for this Envoy, in [`DELTA_ORDER`]: new and changed
    /// clusters first, the clusters that went last. False when the stream is gone.
    async fn push_change(&mut self, snapshot: &Arc<Snapshot>) -> bool {
        for (type_url, second) in DELTA_ORDER {
            let part = match (type_url, second) {
                (_, true) => Part::Removals,
                (CLUSTER_TYPE, false) => Part::Updates,
                _ => Part::All,
            };
            if self.subscriptions.contains_key(type_url)
                && !self.send(snapshot, type_url, part, false).await
            {
                return false;
            }
        }
        self.link.version = snapshot.version;
        self.link.note_synced();
        true
    }

    async fn request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        let named = request.resource_names_subscribe.len()
            + request.resource_names_unsubscribe.len()
            + request.initial_resource_versions.len();
        if named > MAX_RESOURCE_NAMES {
            return Err(too_many_names(named));
        }
        self.link.join().await;
        self.link.identify(request.node.as_ref())?;
        let type_url = request.type_url.clone();
        let first = !self.subscriptions.contains_key(&type_url);
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        if let Some(sent) = sub.unanswered.remove(&request.response_nonce) {
            let version = sent.version;
            match &request.error_detail {
                Some(error) => {
                    // The Envoy keeps what it had: what was refused is not held as sent.
                    for &i in &sent.chosen {
                        sub.lacks(sent.listing.names[i].clone());
                    }
                    self.link.refused(&type_url, version, &error.message);
                }
                None if sub.unanswered.is_empty() => {
                    self.link.acked(&type_url, &version.to_string());
                }
                None => {}
            }
        }
        // Envoy asks for every cluster and listener by naming nothing in its first
        // request (or `*`).
        let mut asked = first;
        if first && request.resource_names_subscribe.is_empty() {
            sub.wildcard = true;
        }
        for (name, version) in request.initial_resource_versions {
            sub.holds(name, version);
        }
        for name in request.resource_names_subscribe {
            asked = true;
            if name == "*" {
                sub.wildcard = true;
                continue;
            }
            // A name asked for again is sent again (on a first request, the Envoy has
            // just said what it holds).
            if !first {
                sub.lacks(name.clone());
            }
            sub.names.insert(name);
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(&name);
            }
            sub.dropped(&name);
        }
        if !asked {
            return Ok(());
        }
        let snapshot = self.link.cache.current();
        if !self.send(&snapshot, &type_url, Part::All, true).await {
            return Err(Status::unavailable("the stream is closed"));
        }
        Ok(())
    }

    /// Sends the part of `type_url`'s resources of `snapshot` the Envoy does not hold;
    /// nothing when it holds them all, unless `always` (an answer to its request).
    /// Returns false when the stream is gone.
    async fn send(
        &mut self,
        snapshot: &Arc<Snapshot>,
        type_url: &str,
        part: Part,
        always: bool,
    ) -> bool {
        let found = self.link.resources(snapshot);
        let Some(sub) = self.subscriptions.get(type_url) else {
            return true;
        };
        let (current, listing) = if type_url == SECRET_TYPE {
            let names: Vec<String> = sub.names.iter().cloned().collect();
            let held = self.link.secrets.named_for(&self.link.key(), &names);
            (None, Arc::new(Listing::new(&held)))
        } else {
            let Some(listing) = found.listing(type_url) else {
                tracing::debug!(
                    node = self.link.node,
                    type_url,
                    "a resource type this control plane does not serve"
                );
                return true;
            };
            (Some(&found), listing)
        };
        let (chosen, mut removed) = sub.changes(type_url, current, &listing, part);
        if type_url == SECRET_TYPE {
            // A secret not held yet (an ACM read or the mesh CA still to come) is not
            // "gone": the Envoy waits for it.
            removed.retain(|n| !sub.wants(n));
        }
        if chosen.is_empty() && removed.is_empty() && !always {
            return true;
        }
        let version = snapshot.version;
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        sub.sent(type_url, current, &listing, &chosen, &removed, part);
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let entries = listing.entries(&chosen);
        let sent = chosen.len();
        // The names sent are kept as the listing and its indices (read again only if the
        // Envoy refuses them), not copied: a stream's first response names every resource.
        sub.unanswered.insert(
            nonce.clone(),
            Unanswered {
                version,
                listing: listing.clone(),
                chosen,
            },
        );
        self.link.pending.insert(type_url.to_owned());
        self.link.version = self.link.version.max(version);
        tracing::debug!(
            node = self.link.node,
            resource = short_type(type_url),
            version,
            sent,
            removed = removed.len(),
            "delta push"
        );
        let response = Outgoing::delta(&version.to_string(), entries, type_url, &nonce, &removed);
        self.tx.send(Ok(response)).await.is_ok()
    }
}

mod subscription;
use subscription::{Part, Subscription, Unanswered};

#[cfg(test)]
mod tests;
