//! A small SDS server on a unix socket, as SPIRE's agent serves Envoys beside it: it holds
//! TLS secrets by name (a certificate and key, or a CA bundle, from PEM files), answers each
//! Envoy's `StreamSecrets` with the ones it names, and pushes them again whenever one is
//! replaced (a rotation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Held = BTreeMap<String, Any>;

/// The server; stops when dropped.
#[derive(Debug)]
pub struct LocalSds {
    pub socket: PathBuf,
    secrets: watch::Sender<Held>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalSds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn inline(path: &Path) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineBytes(
            std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )),
        ..Default::default()
    }
}

impl LocalSds {
    /// Serves on a new unix socket at `socket` (mode 0666: Envoy may run as another user).
    pub fn start(socket: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("the SDS socket binds");
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("socket mode");
        let (secrets, _) = watch::channel(Held::new());
        let service = Sds(secrets.clone());
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            socket: socket.to_path_buf(),
            secrets,
            task,
        }
    }

    /// Holds (or replaces) certificate secret `name`: the chain and key in these files.
    pub fn certificate(&self, name: &str, chain: &Path, key: &Path) {
        self.put(tls::Secret {
            name: name.to_owned(),
            r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
                certificate_chain: Some(inline(chain)),
                private_key: Some(inline(key)),
                ..Default::default()
            })),
        });
    }

    /// Holds (or replaces) trust secret `name`: the CA bundle in `bundle`.
    pub fn trust(&self, name: &str, bundle: &Path) {
        self.put(tls::Secret {
            name: name.to_owned(),
            r#type: Some(tls::secret::Type::ValidationContext(
                tls::CertificateValidationContext {
                    trusted_ca: Some(inline(bundle)),
                    ..Default::default()
                },
            )),
        });
    }

    fn put(&self, secret: tls::Secret) {
        let any = Any {
            type_url: SECRET_TYPE.to_owned(),
            value: secret.encode_to_vec(),
        };
        self.secrets.send_modify(|held| {
            held.insert(secret.name.clone(), any);
        });
    }
}

struct Sds(watch::Sender<Held>);

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = Answers<DiscoveryResponse>;
    type DeltaSecretsStream = Answers<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let mut held = self.0.subscribe();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut names: Vec<String> = Vec::new();
            let mut version = 0u64;
            loop {
                tokio::select! {
                    message = inbound.next() => match message {
                        Some(Ok(r)) if r.resource_names != names || r.response_nonce.is_empty() => {
                            names = r.resource_names;
                        }
                        Some(Ok(_)) => continue,
                        _ => return,
                    },
                    changed = held.changed() => if changed.is_err() { return },
                }
                version += 1;
                let resources: Vec<Any> = {
                    let now = held.borrow_and_update();
                    names.iter().filter_map(|n| now.get(n).cloned()).collect()
                };
                let response = DiscoveryResponse {
                    version_info: version.to_string(),
                    resources,
                    type_url: SECRET_TYPE.to_owned(),
                    nonce: version.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "this SDS server speaks state of the world",
        ))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("this SDS server streams"))
    }
}
