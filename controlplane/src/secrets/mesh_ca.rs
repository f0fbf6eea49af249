//! The mesh's own CA, for the mutual TLS the mesh sets up by itself: it issues each Envoy a
//! short-lived certificate naming its node (`spiffe://MESH/virtualNode/NAME`, ECDSA P-256,
//! for both server and client use). Generated in memory per mesh, or one given as PEM files
//! (what replicas share: each must issue from the same CA).

use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Material;
use super::acm::{describe, inline, resource};

/// How long before now a certificate is valid from (clocks of hosts differ a little).
const SKEW: Duration = Duration::from_secs(60);

/// A mesh CA: its certificate (PEM) and what signs with its key.
pub struct MeshCa {
    pem: String,
    /// The key, to seal it for the store.
    key_pem: zeroize::Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for MeshCa {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa").finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl MeshCa {
    /// A new CA for mesh `mesh`, valid ten years, its key in memory only.
    pub fn generate(mesh: &str) -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make the mesh CA's key: {e}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("gophermesh mesh CA {mesh}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "gophermesh");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - SKEW);
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 86_400));
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the mesh CA: {e}"))?;
        Ok(Self {
            pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
            issuer: Issuer::new(params, key),
        })
    }

    /// This CA as the store keeps it: its key sealed with `seal`.
    pub fn sealed(
        &self,
        seal: &super::seal::SealKey,
    ) -> Result<crate::state::snapshot::SealedCa, String> {
        Ok(crate::state::snapshot::SealedCa {
            certificate: self.pem.clone(),
            sealed_key: seal.seal(self.key_pem.as_bytes())?,
        })
    }

    /// The CA the store keeps, its key unsealed with `seal`.
    pub fn unsealed(
        stored: &crate::state::snapshot::SealedCa,
        seal: &super::seal::SealKey,
    ) -> Result<Self, String> {
        let key = seal.unseal(&stored.sealed_key)?;
        let key = std::str::from_utf8(&key).map_err(|_| "the unsealed key is not PEM")?;
        Self::from_pem(&stored.certificate, key)
    }

    /// The CA's certificate (PEM).
    pub fn certificate(&self) -> &str {
        &self.pem
    }

    /// A CA given as PEM (its certificate and its key), to issue from.
    pub fn from_pem(cert: &str, key: &str) -> Result<Self, String> {
        let key_pem = zeroize::Zeroizing::new(key.to_owned());
        let key = KeyPair::from_pem(key).map_err(|e| format!("the CA key does not read: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(cert, key)
            .map_err(|e| format!("the CA certificate does not read: {e}"))?;
        Ok(Self {
            pem: cert.to_owned(),
            key_pem,
            issuer,
        })
    }

    /// The trust secret `name`: this CA's certificate.
    pub fn trust(&self, name: &str) -> Result<Material, String> {
        let secret = tls::Secret {
            name: name.to_owned(),
            r#type: Some(tls::secret::Type::ValidationContext(
                tls::CertificateValidationContext {
                    trusted_ca: Some(inline(&self.pem)),
                    ..Default::default()
                },
            )),
        };
        Ok(Material {
            resource: resource(&secret),
            certificates: describe(&self.pem)?,
        })
    }

    /// A certificate secret `name` for the Envoy whose URI is `spiffe` (common name `cn`),
    /// valid for `lifetime` from now, with a new key.
    pub fn issue(
        &self,
        name: &str,
        spiffe: &str,
        cn: &str,
        lifetime: Duration,
    ) -> Result<Material, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let uri = spiffe
            .try_into()
            .map_err(|e| format!("`{spiffe}` cannot be a certificate's URI: {e}"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = offset(now - SKEW);
        params.not_after = offset(now + lifetime);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign {spiffe}'s certificate: {e}"))?;
        let pem = cert.pem();
        let secret = tls::Secret {
            name: name.to_owned(),
            r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
                certificate_chain: Some(inline(&pem)),
                private_key: Some(inline(&key.serialize_pem())),
                ..Default::default()
            })),
        };
        Ok(Material {
            resource: resource(&secret),
            certificates: describe(&pem)?,
        })
    }
}
