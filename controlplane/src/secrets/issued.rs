//! The certificates the mesh CAs issued to the Envoys of meshes with mutual TLS of their
//! own: made when an Envoy first asks, reissued at two thirds of their lifetime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Material;
use super::mesh_ca::MeshCa;
use crate::state::snapshot::split_key;
use crate::translate::{MESH_CERTIFICATE, MESH_TRUST, spiffe_id};

/// How long a mesh certificate is valid by default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct Issued {
    material: Material,
    at: SystemTime,
    renew_at: SystemTime,
}

/// Where the mesh CAs come from.
#[derive(Debug)]
pub enum CaSource {
    /// Made in memory for each mesh when first needed.
    PerMesh,
    /// One given, for every mesh.
    Given(Box<MeshCa>),
    /// Made once per mesh and kept in the store, its key sealed with this.
    Stored(super::seal::SealKey),
}

/// The mesh CAs and what they issued.
pub(super) struct Issuing {
    lifetime: Duration,
    /// The CA every mesh issues from, when one is given.
    given: Option<Arc<MeshCa>>,
    /// What seals the CAs kept in the store, when they are.
    pub(super) seal: Option<super::seal::SealKey>,
    cas: BTreeMap<String, (Arc<MeshCa>, Material)>,
    certs: BTreeMap<String, Issued>,
}

impl Default for Issuing {
    fn default() -> Self {
        Self::new(DEFAULT_LIFETIME, CaSource::PerMesh)
    }
}

impl Issuing {
    pub(super) fn new(lifetime: Duration, source: CaSource) -> Self {
        let (given, seal) = match source {
            CaSource::PerMesh => (None, None),
            CaSource::Given(ca) => (Some(Arc::new(*ca)), None),
            CaSource::Stored(seal) => (None, Some(seal)),
        };
        Self {
            lifetime,
            given,
            seal,
            cas: BTreeMap::new(),
            certs: BTreeMap::new(),
        }
    }

    /// Takes `ca` as mesh `mesh`'s (read from the store); whether it is new here (the
    /// certificates issued from another CA are then issued again).
    pub(super) fn adopt(&mut self, mesh: &str, ca: MeshCa) -> Result<bool, String> {
        if self
            .cas
            .get(mesh)
            .is_some_and(|(held, _)| held.certificate() == ca.certificate())
        {
            return Ok(false);
        }
        let trust = ca.trust(MESH_TRUST)?;
        self.cas.insert(mesh.to_owned(), (Arc::new(ca), trust));
        let prefix = format!("{mesh}/");
        self.certs.retain(|key, _| !key.starts_with(&prefix));
        Ok(true)
    }

    /// Whether mesh `mesh` has its CA here (the one whose certificate is `certificate`,
    /// when given).
    pub(super) fn has_ca(&self, mesh: &str, certificate: Option<&str>) -> bool {
        self.cas
            .get(mesh)
            .is_some_and(|(ca, _)| certificate.is_none_or(|c| ca.certificate() == c))
    }

    /// Mesh `mesh`'s CA and its trust secret, made on first use.
    fn ca(&mut self, mesh: &str) -> Result<&(Arc<MeshCa>, Material), String> {
        if !self.cas.contains_key(mesh) {
            let ca = match (&self.given, &self.seal) {
                (Some(ca), _) => ca.clone(),
                (None, Some(_)) => {
                    return Err(format!("mesh `{mesh}`'s CA is not read from the store yet"));
                }
                (None, None) => Arc::new(MeshCa::generate(mesh)?),
            };
            let trust = ca.trust(MESH_TRUST)?;
            tracing::info!(mesh, "mesh CA ready for mutual TLS");
            self.cas.insert(mesh.to_owned(), (ca, trust));
        }
        Ok(&self.cas[mesh])
    }

    /// The trust secret of the mesh of node `key` (`MESH/NODE`).
    pub(super) fn trust(&mut self, key: &str) -> Result<Material, String> {
        let (mesh, _) = split_key(key).ok_or_else(|| format!("`{key}` names no node"))?;
        Ok(self.ca(mesh)?.1.clone())
    }

    /// Node `key`'s certificate: the one issued while it is not due, else a new one (and
    /// whether it is new).
    pub(super) fn certificate(&mut self, key: &str) -> Result<(Material, bool), String> {
        let now = SystemTime::now();
        if let Some(held) = self.certs.get(key).filter(|i| i.renew_at > now) {
            return Ok((held.material.clone(), false));
        }
        Ok((self.issue(key, now)?, true))
    }

    fn issue(&mut self, key: &str, now: SystemTime) -> Result<Material, String> {
        let (mesh, node) = split_key(key).ok_or_else(|| format!("`{key}` names no node"))?;
        let lifetime = self.lifetime;
        let (ca, _) = self.ca(mesh)?;
        let material = ca.issue(MESH_CERTIFICATE, &spiffe_id(mesh, node), node, lifetime)?;
        self.certs.insert(
            key.to_owned(),
            Issued {
                material: material.clone(),
                at: now,
                renew_at: now + lifetime * 2 / 3,
            },
        );
        Ok(material)
    }

    /// When the next certificate is due to be reissued.
    pub(super) fn next_due(&self) -> Option<SystemTime> {
        self.certs.values().map(|i| i.renew_at).min()
    }

    /// Reissues every certificate that is due; whether any was.
    pub(super) fn rotate_due(&mut self) -> bool {
        let now = SystemTime::now();
        let due: Vec<String> = self
            .certs
            .iter()
            .filter(|(_, i)| i.renew_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            if let Err(e) = self.issue(key, now) {
                tracing::warn!(node = key, error = %e, "cannot reissue a mesh certificate");
            }
        }
        !due.is_empty()
    }

    /// What `status` shows: each mesh CA, and each certificate issued with its node.
    pub(super) fn status(&self) -> Vec<super::SecretStatus> {
        let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let cas = self
            .cas
            .iter()
            .map(|(mesh, (_, trust))| super::SecretStatus {
                name: MESH_TRUST.to_owned(),
                kind: "mesh-ca".to_owned(),
                used_by: vec![mesh.clone()],
                served: true,
                certificates: trust.certificates.clone(),
                fetched_at: None,
                error: None,
                warnings: Vec::new(),
            });
        let certs = self.certs.iter().map(|(key, i)| super::SecretStatus {
            name: MESH_CERTIFICATE.to_owned(),
            kind: "mesh-certificate".to_owned(),
            used_by: vec![key.clone()],
            served: true,
            certificates: i.material.certificates.clone(),
            fetched_at: Some(stamp(i.at)),
            error: None,
            warnings: Vec::new(),
        });
        cas.chain(certs).collect()
    }
}
