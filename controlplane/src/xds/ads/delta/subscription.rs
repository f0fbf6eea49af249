//! One resource type on a delta stream: what the Envoy asked for, and what it holds.
//!
//! What it holds is kept as a base (the node's resources it was last brought up to) and
//! the exceptions to it (what it refused, what it told on reconnecting, what it asked for
//! anew, removals not yet sent), so that a stream holds a reference, not a copy of every
//! name and version: the streams of one node share their base. In the common case (no
//! exceptions), what a change sends is worked out once per node
//! ([`crate::xds::cache::Prepared::changes_since`]) and only filtered here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::xds::cache::Prepared;
use crate::xds::listing::Listing;
use crate::xds::vhds::namespace;

/// Which part of a change one response carries: everything, or (make before break)
/// first what is new or changed and, once the routes are replaced, what went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    All,
    Updates,
    Removals,
}

#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// Every resource of the type (how Envoy asks for clusters and listeners).
    pub(super) wildcard: bool,
    /// The resources asked for by name.
    pub(super) names: BTreeSet<String>,
    /// The node's resources the Envoy was last brought up to: it holds those it wants,
    /// at their versions, except as `exceptions` say.
    base: Option<Arc<Prepared>>,
    /// Where what it holds differs from `base`: the version it holds, or `None` (it holds
    /// none).
    exceptions: HashMap<String, Option<String>>,
    /// Responses not answered yet, by nonce.
    pub(super) unanswered: HashMap<String, Unanswered>,
}

/// A response not answered yet: the snapshot version it was sent from, and what it
/// carried (indices of `listing`).
#[derive(Debug)]
pub(super) struct Unanswered {
    pub(super) version: u64,
    pub(super) listing: Arc<Listing>,
    pub(super) chosen: Vec<usize>,
}

impl Subscription {
    /// Whether the Envoy asked for resource `name`: all of them, it by name, or (a virtual
    /// host) its route configuration.
    pub(super) fn wants(&self, name: &str) -> bool {
        self.wildcard
            || self.names.contains(name)
            || namespace(name).is_some_and(|ns| self.names.contains(ns))
    }

    /// The version of `name` the Envoy holds (of `type_url`).
    fn held(&self, type_url: &str, name: &str) -> Option<String> {
        if let Some(exception) = self.exceptions.get(name) {
            return exception.clone();
        }
        let listing = self.base.as_ref()?.listing(type_url)?;
        let version = listing.version(name)?;
        self.wants(name).then(|| version.to_owned())
    }

    /// The Envoy holds `name` at `version` (it said so on reconnecting).
    pub(super) fn holds(&mut self, name: String, version: String) {
        self.exceptions.insert(name, Some(version));
    }

    /// The Envoy holds none of `name` (it refused it, or asks for it anew).
    pub(super) fn lacks(&mut self, name: String) {
        self.exceptions.insert(name, None);
    }

    /// The Envoy no longer asks for `name`: it dropped it.
    pub(super) fn dropped(&mut self, name: &str) {
        if !self.wants(name) {
            self.exceptions.remove(name);
        }
    }

    /// What of `listing` (the resources of `current`, or secrets when `current` is none)
    /// the Envoy does not hold as it is (indices), and what it holds that is gone or no
    /// longer wanted (names); only the `part` asked for.
    pub(super) fn changes(
        &self,
        type_url: &str,
        current: Option<&Arc<Prepared>>,
        listing: &Listing,
        part: Part,
    ) -> (Vec<usize>, Vec<String>) {
        let (mut send, mut removed) = match (&self.base, current) {
            (Some(base), Some(current)) if self.exceptions.is_empty() => {
                if Arc::ptr_eq(base, current) {
                    return (Vec::new(), Vec::new());
                }
                match current.changes_since(base, type_url) {
                    Some(c) => (
                        c.changed
                            .iter()
                            .copied()
                            .filter(|&i| self.wants(&listing.names[i]))
                            .collect(),
                        c.removed
                            .iter()
                            .filter(|n| self.wants(n))
                            .cloned()
                            .collect(),
                    ),
                    None => self.compared(type_url, listing),
                }
            }
            _ => self.compared(type_url, listing),
        };
        match part {
            Part::All => {}
            Part::Updates => removed.clear(),
            Part::Removals => send.clear(),
        }
        removed.sort();
        (send, removed)
    }

    /// [`Subscription::changes`] the long way: every resource compared with what is held
    /// (or, when the Envoy holds nothing yet, every resource it wants).
    fn compared(&self, type_url: &str, listing: &Listing) -> (Vec<usize>, Vec<String>) {
        if self.base.is_none() && self.exceptions.is_empty() {
            let send = match self.wildcard {
                true => (0..listing.names.len()).collect(),
                false => (0..listing.names.len())
                    .filter(|&i| self.wants(&listing.names[i]))
                    .collect(),
            };
            return (send, Vec::new());
        }
        let send = (0..listing.names.len())
            .filter(|&i| {
                let name = &listing.names[i];
                self.wants(name)
                    && self.held(type_url, name).as_deref() != Some(listing.versions[i].as_str())
            })
            .collect();
        let gone = |name: &String| !listing.index.contains_key(name) || !self.wants(name);
        let mut removed: Vec<String> = self
            .exceptions
            .iter()
            .filter(|(name, held)| held.is_some() && gone(name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(base) = self.base.as_ref().and_then(|b| b.listing(type_url)) {
            removed.extend(
                base.names
                    .iter()
                    .filter(|n| !self.exceptions.contains_key(*n) && self.wants(n) && gone(n))
                    .cloned(),
            );
        }
        (send, removed)
    }

    /// `sent` (indices of `listing`) and `removed` went to the Envoy as `part` of bringing
    /// it to `current` (none: secrets, held as exceptions alone).
    pub(super) fn sent(
        &mut self,
        type_url: &str,
        current: Option<&Arc<Prepared>>,
        listing: &Listing,
        sent: &[usize],
        removed: &[String],
        part: Part,
    ) {
        let Some(current) = current else {
            for &i in sent {
                self.holds(listing.names[i].clone(), listing.versions[i].clone());
            }
            for name in removed {
                self.exceptions.remove(name);
            }
            return;
        };
        // What it still holds and `current` lacks (a removal still to send) stays.
        let pending: Vec<(String, String)> = match part {
            Part::Updates => {
                let (_, gone) = self.changes(type_url, Some(current), listing, Part::All);
                gone.into_iter()
                    .filter_map(|n| self.held(type_url, &n).map(|v| (n, v)))
                    .collect()
            }
            Part::All | Part::Removals => {
                let gone: BTreeSet<&String> = removed.iter().collect();
                self.exceptions
                    .iter()
                    .filter(|(n, held)| {
                        held.is_some() && !listing.index.contains_key(*n) && !gone.contains(n)
                    })
                    .map(|(n, v)| (n.clone(), v.clone().unwrap_or_default()))
                    .collect()
            }
        };
        self.base = Some(current.clone());
        self.exceptions.clear();
        for (name, version) in pending {
            self.holds(name, version);
        }
    }
}
