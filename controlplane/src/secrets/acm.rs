//! ACM and AWS Private CA: a private certificate exported with its key
//! (`acm:DescribeCertificate`, `acm:ExportCertificate`) and an authority's certificate
//! (`acm-pca:GetCertificateAuthorityCertificate`), made into Envoy secrets.

use std::future::Future;
use std::pin::Pin;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;

use super::{CertInfo, Material, SECRET_TYPE};
use crate::state::aws::said;

/// A certificate exported from ACM: PEM text, the key decrypted (in memory only).
pub struct Exported {
    pub certificate: String,
    pub chain: String,
    pub key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Exported {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exported")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

/// An authority's certificate, and the chain above it (empty for a root), PEM.
#[derive(Debug)]
pub struct Authority {
    pub certificate: String,
    pub chain: String,
}

type Fetching<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where ACM material comes from: the AWS APIs, or a stand-in in unit tests.
pub trait Fetch: Send + Sync {
    /// The private certificate `arn`, with its chain and key; an error names the ARN.
    fn certificate<'a>(&'a self, arn: &'a str) -> Fetching<'a, Exported>;
    /// The certificate of Private CA authority `arn`; an error names the ARN.
    fn authority<'a>(&'a self, arn: &'a str) -> Fetching<'a, Authority>;
}

/// ACM and AWS Private CA through the AWS SDK (region and credentials from the
/// environment, `AWS_ENDPOINT_URL` honoured).
#[derive(Debug)]
pub struct Aws {
    acm: aws_sdk_acm::Client,
    pca: aws_sdk_acmpca::Client,
}

impl Aws {
    pub async fn from_env() -> Self {
        let config = crate::state::aws::sdk_config().await;
        Self {
            acm: aws_sdk_acm::Client::new(&config),
            pca: aws_sdk_acmpca::Client::new(&config),
        }
    }

    async fn export(&self, arn: &str) -> Result<Exported, String> {
        let described = self
            .acm
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| format!("{arn}: {}", said(&e, "ACM")))?;
        let detail = described
            .certificate
            .ok_or_else(|| format!("{arn}: ACM described no certificate"))?;
        let exportable = detail
            .options
            .as_ref()
            .and_then(|o| o.export.as_ref())
            .is_some_and(|e| e.as_str() == "ENABLED");
        let kind = detail.r#type.as_ref().map(|t| t.as_str().to_owned());
        if kind.as_deref() != Some("PRIVATE") && !exportable {
            return Err(format!(
                "{arn} is {} ACM certificate: ACM does not export its private key, so no Envoy can serve it; issue the listener's certificate from AWS Private CA (request-certificate --certificate-authority-arn)",
                match kind.as_deref() {
                    Some("IMPORTED") => "an imported",
                    _ => "a public (Amazon-issued)",
                }
            ));
        }
        if let Some(status) = detail.status.as_ref().filter(|s| s.as_str() != "ISSUED") {
            return Err(format!("{arn} is {} (not ISSUED)", status.as_str()));
        }
        let passphrase: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(32)
            .collect();
        let out = self
            .acm
            .export_certificate()
            .certificate_arn(arn)
            .passphrase(aws_sdk_acm::primitives::Blob::new(passphrase.as_bytes()))
            .send()
            .await
            .map_err(|e| format!("{arn}: {}", said(&e, "ACM")))?;
        let key = decrypt_key(out.private_key.as_deref().unwrap_or_default(), &passphrase)
            .map_err(|e| format!("{arn}: the exported private key cannot be read: {e}"))?;
        Ok(Exported {
            certificate: out.certificate.unwrap_or_default(),
            chain: out.certificate_chain.unwrap_or_default(),
            key,
        })
    }

    async fn authority_of(&self, arn: &str) -> Result<Authority, String> {
        let out = self
            .pca
            .get_certificate_authority_certificate()
            .certificate_authority_arn(arn)
            .send()
            .await
            .map_err(|e| format!("{arn}: {}", said(&e, "AWS Private CA")))?;
        Ok(Authority {
            certificate: out.certificate.unwrap_or_default(),
            chain: out.certificate_chain.unwrap_or_default(),
        })
    }
}

impl Fetch for Aws {
    fn certificate<'a>(&'a self, arn: &'a str) -> Fetching<'a, Exported> {
        Box::pin(self.export(arn))
    }

    fn authority<'a>(&'a self, arn: &'a str) -> Fetching<'a, Authority> {
        Box::pin(self.authority_of(arn))
    }
}

/// The PKCS#8 key ACM exports, encrypted with `passphrase`, as an unencrypted PEM.
pub(crate) fn decrypt_key(
    pem: &str,
    passphrase: &str,
) -> Result<zeroize::Zeroizing<String>, String> {
    use pkcs8::der::pem::LineEnding;
    let (label, doc) = pkcs8::der::Document::from_pem(pem).map_err(|e| e.to_string())?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(format!("a PEM `{label}`, not an ENCRYPTED PRIVATE KEY"));
    }
    let info =
        pkcs8::EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes()).map_err(|e| e.to_string())?;
    let plain = info.decrypt(passphrase).map_err(|e| e.to_string())?;
    plain
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// What each certificate of a PEM bundle says, in order; an error when one cannot be read.
pub fn describe(pem: &str) -> Result<Vec<CertInfo>, String> {
    use x509_parser::extensions::GeneralName;
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("a PEM block cannot be read: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("a certificate cannot be read: {e}"))?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let time = |t: x509_parser::time::ASN1Time| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64),
            )
            .to_string()
        };
        out.push(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            names,
        });
    }
    if out.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    Ok(out)
}

/// Seconds since the epoch at which `info` expires.
pub fn expires(info: &CertInfo) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(&info.not_after).ok()
}

pub(super) fn inline(text: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

pub(super) fn resource(secret: &tls::Secret) -> Any {
    Any {
        type_url: SECRET_TYPE.to_owned(),
        value: secret.encode_to_vec(),
    }
}

/// A certificate's secret `name`: its chain and key; refused when it has expired.
pub fn certificate_secret(name: &str, arn: &str, exported: &Exported) -> Result<Material, String> {
    let certificates = describe(&exported.certificate).map_err(|e| format!("{arn}: {e}"))?;
    if let Some(end) = certificates.first().and_then(expires) {
        if end <= std::time::SystemTime::now() {
            return Err(format!(
                "{arn} expired at {}; the last good certificate (if any) is kept",
                certificates[0].not_after
            ));
        }
    }
    let chain = format!("{}\n{}", exported.certificate.trim_end(), exported.chain);
    let secret = tls::Secret {
        name: name.to_owned(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(inline(&chain)),
            private_key: Some(inline(&exported.key)),
            ..Default::default()
        })),
    };
    Ok(Material {
        resource: resource(&secret),
        certificates,
    })
}

/// A trust secret `name`: the authorities' certificates (and the chains above them).
pub fn trust_secret(name: &str, authorities: &[(String, Authority)]) -> Result<Material, String> {
    let mut bundle = String::new();
    let mut certificates = Vec::new();
    for (arn, a) in authorities {
        let mut infos = describe(&a.certificate).map_err(|e| format!("{arn}: {e}"))?;
        certificates.push(infos.remove(0));
        bundle.push_str(a.certificate.trim_end());
        bundle.push('\n');
        if !a.chain.trim().is_empty() {
            bundle.push_str(a.chain.trim_end());
            bundle.push('\n');
        }
    }
    let secret = tls::Secret {
        name: name.to_owned(),
        r#type: Some(tls::secret::Type::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(inline(&bundle)),
                ..Default::default()
            },
        )),
    };
    Ok(Material {
        resource: resource(&secret),
        certificates,
    })
}
