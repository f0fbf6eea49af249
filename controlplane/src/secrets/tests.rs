use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use super::CaSource;
use super::acm::{self, Authority, Exported, Fetch};
use super::refresh::{RETRY, fetch_one};
use super::*;

/// A key encrypted as ACM exports one (PKCS#8, PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC),
/// with the passphrase `correct-horse`.
const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAjKkR4bYNjCRwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEIg7rrsrTnOj7xQ+JO+iz34EgZBk
oNQugAFRRNOSFteWutlad0M8MZ4tZn2B9hELcg6luGNfpCPWXHEzXKKKzYL/1AQN
XWVo1O1Dn58hGfq7lfsh/8eDgYlvfqVtd4d3fwcAFsk9iFlSS8gVv6ROYqF4huR/
9JhMc0yrlAJ4fTFgkxXSIHz+PJnnPJ3zF0ghgJk9zuDbyA8XG4+s7DUml4tj/3c=
-----END ENCRYPTED PRIVATE KEY-----
";

const ARN: &str = "arn:aws:acm:us-east-1:111122223333:certificate/abc";
const CA: &str = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca1";

/// A self-signed certificate for `name`, valid for `days` from now (negative: expired).
fn certificate(name: &str, days: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let at = |secs: i64| {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
        let text = humantime::format_rfc3339_seconds(t).to_string();
        let (y, m, d) = (&text[0..4], &text[5..7], &text[8..10]);
        rcgen::date_time_ymd(
            y.parse().expect("y"),
            m.parse().expect("m"),
            d.parse().expect("d"),
        )
    };
    params.not_before = at(today - 10 * 86_400);
    params.not_after = at(today + days * 86_400);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A fetcher that answers from what the test sets, and counts calls.
#[derive(Default)]
struct Fake {
    certificate: Mutex<Option<Result<(String, String), String>>>,
    calls: Mutex<u32>,
}

impl Fetch for Fake {
    fn certificate<'a>(
        &'a self,
        _arn: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Exported, String>> + Send + 'a>>
    {
        *self.calls.lock().expect("lock") += 1;
        let answer = self.certificate.lock().expect("lock").clone().expect("set");
        Box::pin(async move {
            let (certificate, key) = answer?;
            Ok(Exported {
                certificate,
                chain: String::new(),
                key: zeroize::Zeroizing::new(key),
            })
        })
    }

    fn authority<'a>(
        &'a self,
        _arn: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Authority, String>> + Send + 'a>>
    {
        let (certificate, _) = certificate("Gopher CA", 30);
        Box::pin(async move {
            Ok(Authority {
                certificate,
                chain: String::new(),
            })
        })
    }
}

fn wanting(secrets: &Secrets, name: &str, what: AcmMaterial) {
    let mut wanted = BTreeMap::new();
    wanted.insert(
        name.to_owned(),
        (what, BTreeSet::from(["m/distributor".to_owned()])),
    );
    secrets.want(wanted);
}

#[test]
fn an_exported_key_is_decrypted_with_its_passphrase_and_not_without() {
    let key = acm::decrypt_key(ENCRYPTED_KEY, "correct-horse").expect("decrypted");
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{}",
        &key[..30]
    );
    let wrong = acm::decrypt_key(ENCRYPTED_KEY, "battery-staple");
    assert!(wrong.is_err());
    let plain = acm::decrypt_key(&key, "correct-horse");
    assert!(
        plain
            .expect_err("not encrypted")
            .contains("not an ENCRYPTED PRIVATE KEY")
    );
}

#[tokio::test]
async fn a_fetched_certificate_is_served_and_a_failed_fetch_keeps_it() {
    let secrets = Secrets::default();
    let fake = Fake::default();
    let mut changes = secrets.subscribe();
    wanting(&secrets, ARN, AcmMaterial::Certificate(ARN.to_owned()));
    assert!(
        secrets.named(&[ARN.to_owned()]).is_empty(),
        "nothing held yet"
    );

    *fake.certificate.lock().expect("lock") =
        Some(Ok(certificate("distributor.gophers.local", 30)));
    let next = fetch_one(&secrets, &fake, ARN, Duration::from_secs(300)).await;
    assert_eq!(
        next,
        Duration::from_secs(300),
        "a month from expiry: the schedule"
    );
    assert!(changes.has_changed().expect("open"), "streams are told");
    changes.borrow_and_update();
    let served = secrets.named(&[ARN.to_owned()]);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].1.type_url, SECRET_TYPE);
    let status = &secrets.status()[0];
    assert!(status.served && status.error.is_none(), "{status:?}");
    assert_eq!(status.kind, "acm-certificate");
    assert!(
        status.certificates[0]
            .subject
            .contains("distributor.gophers.local"),
        "{status:?}"
    );
    assert_eq!(status.used_by, ["m/distributor"]);

    // The same certificate again: nothing to tell.
    fetch_one(&secrets, &fake, ARN, Duration::from_secs(300)).await;
    assert!(!changes.has_changed().expect("open"));

    // ACM unreachable: the last good one stays, status says why, and it is tried sooner.
    *fake.certificate.lock().expect("lock") = Some(Err(format!("{ARN}: cannot reach ACM")));
    let next = fetch_one(&secrets, &fake, ARN, Duration::from_secs(300)).await;
    assert_eq!(next, RETRY);
    assert_eq!(secrets.named(&[ARN.to_owned()]), served);
    let status = &secrets.status()[0];
    assert!(status.served, "{status:?}");
    assert!(
        status.error.as_deref().is_some_and(|e| e.contains(ARN)),
        "{status:?}"
    );

    // An expired certificate is refused, naming the ARN; the good one stays.
    *fake.certificate.lock().expect("lock") =
        Some(Ok(certificate("distributor.gophers.local", -1)));
    fetch_one(&secrets, &fake, ARN, Duration::from_secs(300)).await;
    let status = &secrets.status()[0];
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains(ARN) && e.contains("expired")),
        "{status:?}"
    );
    assert_eq!(secrets.named(&[ARN.to_owned()]), served);
    assert_eq!(*fake.calls.lock().expect("lock"), 4);
}

#[tokio::test]
async fn a_certificate_near_expiry_is_fetched_again_before_it_ends() {
    let secrets = Secrets::default();
    let fake = Fake::default();
    wanting(&secrets, ARN, AcmMaterial::Certificate(ARN.to_owned()));
    *fake.certificate.lock().expect("lock") = Some(Ok(certificate("d", 2)));
    let next = fetch_one(&secrets, &fake, ARN, Duration::from_secs(7 * 86_400)).await;
    let left = humantime::parse_rfc3339(&secrets.status()[0].certificates[0].not_after)
        .expect("a time")
        .duration_since(std::time::SystemTime::now())
        .expect("not yet expired");
    assert!(
        (next.as_secs_f64() - (left - super::refresh::BEFORE_EXPIRY).as_secs_f64()).abs() < 5.0,
        "under two days left: fetched an hour before it ends ({left:?}), not in a week: {next:?}"
    );
}

#[tokio::test]
async fn trust_is_the_authorities_certificates() {
    let secrets = Secrets::default();
    let name = crate::translate::trust_secret_name(&[CA.to_owned()]);
    wanting(&secrets, &name, AcmMaterial::Trust(vec![CA.to_owned()]));
    fetch_one(&secrets, &Fake::default(), &name, Duration::from_secs(60)).await;
    let status = &secrets.status()[0];
    assert_eq!(status.kind, "acm-trust");
    assert!(
        status.certificates[0].subject.contains("Gopher CA"),
        "{status:?}"
    );
    let resource = &secrets.named(&[])[0].1;
    let secret = <envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret as prost::Message>::decode(
        resource.value.as_slice(),
    )
    .expect("a Secret");
    assert_eq!(secret.name, CA);
    assert!(matches!(
        secret.r#type,
        Some(envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type::ValidationContext(_))
    ));
}

#[test]
fn a_secret_no_mesh_names_any_more_is_dropped() {
    let secrets = Secrets::default();
    wanting(&secrets, ARN, AcmMaterial::Certificate(ARN.to_owned()));
    assert_eq!(secrets.status().len(), 1);
    let changes = secrets.subscribe();
    secrets.want(BTreeMap::new());
    assert!(secrets.status().is_empty());
    assert!(changes.has_changed().expect("open"));
}

#[test]
fn a_mesh_certificate_names_its_node_and_is_issued_by_the_mesh_ca() {
    let secrets = Secrets::with_mesh_ca(Duration::from_secs(60), CaSource::PerMesh);
    let names = [
        crate::translate::MESH_CERTIFICATE.to_owned(),
        crate::translate::MESH_TRUST.to_owned(),
    ];
    let first = secrets.named_for("m/server", &names);
    assert_eq!(first.len(), 2, "a certificate and the trust");
    // Asked again before it is due: the same one.
    assert_eq!(secrets.named_for("m/server", &names), first);
    let status = secrets.status();
    let ca = status
        .iter()
        .find(|s| s.kind == "mesh-ca")
        .expect("the mesh CA");
    let cert = status
        .iter()
        .find(|s| s.kind == "mesh-certificate")
        .expect("the certificate");
    assert_eq!(cert.used_by, ["m/server"]);
    let info = &cert.certificates[0];
    assert_eq!(info.names, ["spiffe://m/virtualNode/server"]);
    assert_eq!(info.issuer, ca.certificates[0].subject);
    let lifetime = humantime::parse_rfc3339(&info.not_after)
        .expect("a time")
        .duration_since(humantime::parse_rfc3339(&info.not_before).expect("a time"))
        .expect("after");
    assert_eq!(
        lifetime,
        Duration::from_secs(120),
        "60 s, from a minute back"
    );
    // A gateway's names it as a gateway; another mesh gets another CA.
    secrets.named_for("m/virtualGateway/in", &names[..1]);
    secrets.named_for("other/server", &names);
    let status = secrets.status();
    let uris: Vec<&str> = status
        .iter()
        .filter(|s| s.kind == "mesh-certificate")
        .map(|s| s.certificates[0].names[0].as_str())
        .collect();
    assert_eq!(
        uris,
        [
            "spiffe://m/virtualNode/server",
            "spiffe://m/virtualGateway/in",
            "spiffe://other/virtualNode/server"
        ]
    );
    assert_eq!(status.iter().filter(|s| s.kind == "mesh-ca").count(), 2);
}

#[test]
fn a_given_ca_issues_for_every_mesh() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Given CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("signed");
    let ca = super::mesh_ca::MeshCa::from_pem(&cert.pem(), &key.serialize_pem()).expect("reads");
    let secrets = Secrets::with_mesh_ca(Duration::from_secs(3600), CaSource::Given(Box::new(ca)));
    secrets.named_for("a/x", &[crate::translate::MESH_CERTIFICATE.to_owned()]);
    secrets.named_for("b/y", &[crate::translate::MESH_CERTIFICATE.to_owned()]);
    for s in secrets
        .status()
        .iter()
        .filter(|s| s.kind == "mesh-certificate")
    {
        assert!(s.certificates[0].issuer.contains("Given CA"), "{s:?}");
    }
    assert!(super::mesh_ca::MeshCa::from_pem("not a certificate", &key.serialize_pem()).is_err());
}

#[test]
fn a_sealed_key_opens_with_its_seal_key_only() {
    let seal = super::seal::SealKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    let hex = super::seal::SealKey::from_bytes(
        b"  0707070707070707070707070707070707070707070707070707070707070707\n",
    )
    .expect("64 hex digits");
    let sealed = seal.seal(b"-----BEGIN PRIVATE KEY-----").expect("sealed");
    assert!(!sealed.contains("PRIVATE"), "sealed is not plain");
    assert_eq!(
        &*hex.unseal(&sealed).expect("opens"),
        b"-----BEGIN PRIVATE KEY-----"
    );
    assert_ne!(
        seal.seal(b"x").expect("sealed"),
        seal.seal(b"x").expect("sealed"),
        "a new nonce each time"
    );
    let other = super::seal::SealKey::from_bytes(&[8u8; 32]).expect("32 bytes");
    assert!(
        other
            .unseal(&sealed)
            .expect_err("another key")
            .contains("another key sealed it")
    );
    let short = super::seal::SealKey::from_bytes(b"too short").expect_err("refused");
    assert!(short.contains("32 random bytes"), "{short}");
}

/// With a seal key, a mesh's CA is made once and kept in the store (its key sealed); a
/// second control plane over the same store (a replica, a restart) issues from it.
#[tokio::test]
async fn a_stored_mesh_ca_is_made_once_and_shared() {
    use crate::state::meta::Identity;
    use crate::state::store::Store;
    let mesh = meshmodel::Resource::from_value(
        "mesh.json",
        serde_json::json!({"meshName": "m", "tags": [{"key": "gophermesh:mtls", "value": "STRICT"}]}),
    )
    .expect("a mesh");
    let mesh = meshmodel::Mesh::default()
        .apply("mesh.json", mesh)
        .expect("accepted");
    let store = Store::in_memory([mesh], Identity::default());
    let seal = || super::seal::SealKey::from_bytes(&[9u8; 32]).expect("key");
    let names = [crate::translate::MESH_CERTIFICATE.to_owned()];
    let first = Secrets::with_mesh_ca(Duration::from_secs(3600), CaSource::Stored(seal()));
    assert!(
        first.named_for("m/a", &names).is_empty(),
        "no CA before the store has one"
    );
    super::refresh::keep_mesh_cas_for_tests(&first, &store).await;
    let stored = store
        .current()
        .mesh("m")
        .and_then(|m| m.mesh_ca.clone())
        .expect("stored");
    assert!(!stored.sealed_key.contains("PRIVATE"));
    assert_eq!(
        first.named_for("m/a", &names).len(),
        1,
        "issued once the CA is read"
    );

    let second = Secrets::with_mesh_ca(Duration::from_secs(3600), CaSource::Stored(seal()));
    super::refresh::keep_mesh_cas_for_tests(&second, &store).await;
    second.named_for("m/b", &names);
    let ca_of = |s: &Secrets| {
        s.status()
            .into_iter()
            .find(|s| s.kind == "mesh-ca")
            .expect("a CA")
            .certificates[0]
            .serial
            .clone()
    };
    assert_eq!(ca_of(&first), ca_of(&second), "one CA for both");
    assert_eq!(
        store.current().mesh("m").and_then(|m| m.mesh_ca.clone()),
        Some(stored),
        "not made again"
    );
}
