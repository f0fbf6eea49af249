//! TLS secrets the control plane serves to Envoys over SDS on their ADS stream, as App
//! Mesh served ACM material: a listener's private certificate (exported from ACM with its
//! key) and the certificates of the Private CA authorities a client policy trusts.
//!
//! The book ([`Secrets`]) holds the last good secret of each name, in memory only (a key
//! is never stored, logged or shown); the refresher ([`refresh`]) keeps it filled with what
//! the meshes name, re-reads each on a schedule and before it expires, and keeps the last
//! good one when a fetch fails (status says why). Streams watch the book and send a
//! node's secrets when they change.
//!
//! A layer beside the xDS serving: it reads the state and the translation (which names
//! the secrets), and only `xds` imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use envoy_types::pb::google::protobuf::Any;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::lock;
use crate::translate::{AcmMaterial, MESH_CERTIFICATE, MESH_TRUST};

pub mod acm;
mod issued;
pub mod mesh_ca;
pub mod refresh;
pub mod seal;

pub use issued::{CaSource, DEFAULT_LIFETIME};

/// The xDS type of a TLS secret.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What a certificate says about itself (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Hex, colon-separated, as openssl prints it.
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    /// DNS names and URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// One secret as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStatus {
    /// The secret's name in Envoy's configuration (the certificate's ARN, or the
    /// authorities' ARNs joined by commas).
    pub name: String,
    /// `acm-certificate`, `acm-trust`, `mesh-ca` or `mesh-certificate`.
    pub kind: String,
    /// The meshes' nodes and gateways that use it (`MESH/NODE`).
    pub used_by: Vec<String>,
    /// Whether a good secret is held (and served).
    pub served: bool,
    /// The certificate served (first), or the authorities trusted.
    pub certificates: Vec<CertInfo>,
    /// RFC 3339 time of the last good fetch.
    pub fetched_at: Option<String>,
    /// Why the last fetch failed, naming the ARN; the last good secret (if any) is kept.
    pub error: Option<String>,
    /// What is wrong with it though it was read: a trust whose authorities did not issue
    /// the certificate of a node its users call (naming both ARNs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A secret, ready to serve: its resource and what its certificates say.
#[derive(Clone)]
pub struct Material {
    pub resource: Any,
    pub certificates: Vec<CertInfo>,
}

impl std::fmt::Debug for Material {
    // The resource holds a private key: it is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Held {
    what: AcmMaterial,
    used_by: BTreeSet<String>,
    good: Option<Material>,
    fetched_at: Option<String>,
    error: Option<String>,
    warnings: Vec<String>,
}

/// The secrets held, by name, and the mesh certificates issued. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    held: Arc<Mutex<BTreeMap<String, Held>>>,
    issuing: Arc<Mutex<issued::Issuing>>,
    /// Told when a mesh certificate is first issued (the refresher then knows when to
    /// reissue it).
    issued: Arc<tokio::sync::Notify>,
    changed: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("held", &lock(&self.held).len())
            .finish_non_exhaustive()
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Self::with_mesh_ca(DEFAULT_LIFETIME, CaSource::PerMesh)
    }
}

impl Secrets {
    /// A book whose mesh certificates last `lifetime` and are issued by the CAs `source`
    /// gives.
    pub fn with_mesh_ca(lifetime: std::time::Duration, source: CaSource) -> Self {
        Self {
            held: Arc::default(),
            issuing: Arc::new(Mutex::new(issued::Issuing::new(lifetime, source))),
            issued: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// The secrets among `names` for the Envoy of node `node` (`MESH/NODE`): ACM material
    /// held, and its mesh certificate and the mesh CA's trust when it names them (issued on
    /// first ask).
    pub fn named_for(&self, node: &str, names: &[String]) -> Vec<(String, Any)> {
        let mut out = self.named(names);
        for name in [MESH_CERTIFICATE, MESH_TRUST] {
            if !names.iter().any(|n| n == name) {
                continue;
            }
            let mut issuing = lock(&self.issuing);
            let made = match name {
                MESH_CERTIFICATE => issuing.certificate(node),
                _ => issuing.trust(node).map(|m| (m, false)),
            };
            match made {
                Ok((m, new)) => {
                    if new {
                        self.issued.notify_one();
                    }
                    out.push((name.to_owned(), m.resource));
                }
                Err(e) => tracing::warn!(node, secret = name, error = %e, "cannot issue"),
            }
        }
        out
    }

    /// Waits until a mesh certificate is first issued.
    pub(crate) async fn first_issue(&self) {
        self.issued.notified().await;
    }

    /// What seals the mesh CAs kept in the store, when they are kept there.
    pub(crate) fn seal(&self) -> Option<seal::SealKey> {
        lock(&self.issuing).seal.clone()
    }

    /// Whether mesh `mesh`'s CA is here (given, made, or read from the store), and is the
    /// one whose certificate is `certificate` when given.
    pub(crate) fn has_ca(&self, mesh: &str, certificate: Option<&str>) -> bool {
        lock(&self.issuing).has_ca(mesh, certificate)
    }

    /// Takes `ca` (read from the store) as mesh `mesh`'s CA; the streams are told when it
    /// is new here.
    pub(crate) fn adopt_ca(&self, mesh: &str, ca: mesh_ca::MeshCa) -> Result<(), String> {
        if lock(&self.issuing).adopt(mesh, ca)? {
            tracing::info!(mesh, "mesh CA read from the store");
            self.changed.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// When the next mesh certificate is due to be reissued.
    pub(crate) fn next_rotation(&self) -> Option<std::time::SystemTime> {
        lock(&self.issuing).next_due()
    }

    /// Reissues the mesh certificates that are due, and tells the streams.
    pub(crate) fn rotate_due(&self) {
        if lock(&self.issuing).rotate_due() {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// A receiver that sees each change of a served secret (a version number).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The good secrets among `names` (all of them when `names` is empty), by name.
    pub fn named(&self, names: &[String]) -> Vec<(String, Any)> {
        let held = lock(&self.held);
        let good =
            |(name, h): (&String, &Held)| Some((name.clone(), h.good.as_ref()?.resource.clone()));
        if names.is_empty() {
            held.iter().filter_map(good).collect()
        } else {
            names
                .iter()
                .filter_map(|n| held.get_key_value(n))
                .filter_map(good)
                .collect()
        }
    }

    /// Every secret the meshes name, and every mesh CA and certificate issued, as
    /// `status` shows them.
    pub fn status(&self) -> Vec<SecretStatus> {
        let mut all = self.acm_status();
        all.extend(lock(&self.issuing).status());
        all
    }

    fn acm_status(&self) -> Vec<SecretStatus> {
        lock(&self.held)
            .iter()
            .map(|(name, h)| SecretStatus {
                name: name.clone(),
                kind: match h.what {
                    AcmMaterial::Certificate(_) => "acm-certificate",
                    AcmMaterial::Trust(_) => "acm-trust",
                }
                .to_owned(),
                used_by: h.used_by.iter().cloned().collect(),
                served: h.good.is_some(),
                certificates: h
                    .good
                    .as_ref()
                    .map(|g| g.certificates.clone())
                    .unwrap_or_default(),
                fetched_at: h.fetched_at.clone(),
                error: h.error.clone(),
                warnings: h.warnings.clone(),
            })
            .collect()
    }

    /// Makes the book hold exactly the secrets `wanted` names (keeping what is held of
    /// them); returns the names newly wanted.
    pub(crate) fn want(
        &self,
        wanted: BTreeMap<String, (AcmMaterial, BTreeSet<String>)>,
    ) -> Vec<String> {
        let mut held = lock(&self.held);
        let before = held.len();
        held.retain(|name, h| wanted.get(name).is_some_and(|(what, _)| *what == h.what));
        let dropped = held.len() != before;
        let mut new = Vec::new();
        for (name, (what, used_by)) in wanted {
            match held.get_mut(&name) {
                Some(h) => h.used_by = used_by,
                None => {
                    new.push(name.clone());
                    held.insert(
                        name,
                        Held {
                            what,
                            used_by,
                            good: None,
                            fetched_at: None,
                            error: None,
                            warnings: Vec::new(),
                        },
                    );
                }
            }
        }
        drop(held);
        if dropped {
            self.changed.send_modify(|v| *v += 1);
        }
        new
    }

    /// Sets the warnings of each secret held: those in `warnings`, none for the others.
    pub(crate) fn warn(&self, mut warnings: BTreeMap<String, Vec<String>>) {
        for (name, h) in lock(&self.held).iter_mut() {
            h.warnings = warnings.remove(name).unwrap_or_default();
        }
    }

    /// What `name` is, while it is wanted.
    pub(crate) fn what(&self, name: &str) -> Option<AcmMaterial> {
        lock(&self.held).get(name).map(|h| h.what.clone())
    }

    /// The certificates of the good secret `name`, when one is held.
    pub(crate) fn certificates(&self, name: &str) -> Option<Vec<CertInfo>> {
        lock(&self.held)
            .get(name)?
            .good
            .as_ref()
            .map(|g| g.certificates.clone())
    }

    /// Records a fetch of `name`: a good secret replaces the last one (and streams are
    /// told); a failure is kept beside the last good one.
    pub(crate) fn fetched(&self, name: &str, result: Result<Material, String>) {
        let mut held = lock(&self.held);
        let Some(h) = held.get_mut(name) else { return };
        match result {
            Ok(material) => {
                let same = h
                    .good
                    .as_ref()
                    .is_some_and(|g| g.resource.value == material.resource.value);
                h.good = Some(material);
                h.error = None;
                h.fetched_at = Some(
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                );
                drop(held);
                if !same {
                    self.changed.send_modify(|v| *v += 1);
                }
            }
            Err(why) => h.error = Some(why),
        }
    }
}

#[cfg(test)]
mod tests;
