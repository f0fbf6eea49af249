//! The application assembled: what `up` and `serve` share (the store opened from
//! `--data-dir`/`mesh/` or a DynamoDB table, the ADS server, both HTTP APIs behind their
//! guards with the control token, over TLS when given, Cloud Map lookups); `up` ([`up`]),
//! which adds the runtime's tasks; and `serve` ([`serve`]), which adds none.
//!
//! ```text
//! plane.rs  the store, the APIs, TLS, Cloud Map, the descriptor budget
//! ads       the ADS listener: plain or TLS, its connections within the budget
//! rollouts  the rollout driver: each rollout in progress looked at every second
//! up        `gophermesh up`: the control plane and the tasks on this machine
//! serve     `gophermesh serve`: the control plane alone, for Envoys elsewhere
//! ```

mod ads;
pub mod rollouts;
pub mod serve;
pub mod up;

pub use ads::{ADS_HANDSHAKE_TIMEOUT, secrets, spawn_ads, spawn_secrets};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::guard::{self, Auth, Guard};
use crate::api::live::Live;
use crate::api::sigv4::Credentials;
use crate::api::token::ControlToken;
use crate::api::{appmesh, control, tasks};
use crate::config::{CloudMapConfig, CloudMapMode};
use crate::progress::say;
use anyhow::{Context, bail};
use controlplane::xds::ads::EnvoyStatuses;
use controlplane::{Identity, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The store a run serves, and a few words on where it came from.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub provenance: String,
    /// Whether the mesh came from `mesh/` just now (so every task must fit it exactly).
    pub seeded_from_files: bool,
}

/// Where the durable state lives.
#[derive(Debug, Clone, Copy)]
pub enum StateAt<'a> {
    /// In memory only.
    Memory,
    /// `DIR/state.redb`.
    Dir(&'a Path),
    /// A DynamoDB table shared by replicas, read for others' changes this often.
    Table(&'a str, Duration),
}

/// Opens the store: in `state` (seeded from `mesh_dir` when empty, unless `empty`), or in
/// memory from `mesh_dir` (or nothing).
pub fn open_store(
    seed_from: crate::config::Seed<'_>,
    state: StateAt<'_>,
    empty: bool,
    identity: Identity,
    refuse: impl Fn(&meshmodel::Problems, &str) -> anyhow::Error,
) -> anyhow::Result<Opened> {
    let shown = seed_from.describe();
    let seed = || -> anyhow::Result<Vec<meshmodel::Mesh>> {
        if empty {
            return Ok(Vec::new());
        }
        seed_from.meshes().map_err(|p| refuse(&p, &shown))
    };
    let (opened, stored) = match state {
        StateAt::Memory => {
            let mut meshes = seed()?;
            for mesh in &mut meshes {
                mesh.backends_may_dangle = true;
            }
            let provenance = if empty {
                "empty, in memory".to_owned()
            } else {
                format!("from {shown}, in memory")
            };
            return Ok(Opened {
                store: Store::in_memory(meshes, identity),
                provenance,
                seeded_from_files: !empty,
            });
        }
        StateAt::Dir(dir) => {
            let path = std::path::absolute(dir.join("state.redb"))?;
            (
                Store::open(&path, seed, identity),
                path.display().to_string(),
            )
        }
        StateAt::Table(table, every) => (
            Store::open_dynamo(table, seed, identity, every),
            format!("dynamodb://{table}"),
        ),
    };
    let (store, restored) = opened.map_err(|e| match e {
        controlplane::state::store::OpenError::Seed(e) => e,
        e @ controlplane::state::store::OpenError::Storage(_) => anyhow::anyhow!("{e}"),
    })?;
    let (provenance, seeded_from_files) = if restored > 0 {
        (
            format!("{restored} resources restored from {stored}"),
            false,
        )
    } else if empty {
        (format!("empty, stored in {stored}"), false)
    } else {
        (format!("seeded from {shown}, stored in {stored}"), true)
    };
    Ok(Opened {
        store,
        provenance,
        seeded_from_files,
    })
}

/// The meshes of `snapshot` in a few words: `mesh NAME: N virtual nodes, M routes` each,
/// or that there is none yet.
pub fn describe_meshes(snapshot: &controlplane::Snapshot) -> String {
    if snapshot.meshes.is_empty() {
        return "no mesh yet".to_owned();
    }
    let each: Vec<String> = snapshot
        .meshes
        .iter()
        .map(|(name, m)| {
            format!(
                "mesh {name}: {} virtual nodes, {} routes",
                m.mesh.virtual_nodes.len(),
                m.mesh.routes.len()
            )
        })
        .collect();
    each.join("; ")
}

/// What tells a plane's servers to stop: each waits on a clone of it.
#[derive(Debug, Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// What stops the servers that wait on its [`Stop`]s, when told to (or dropped).
#[derive(Debug)]
pub struct Stopper(tokio::sync::watch::Sender<bool>);

impl Stop {
    /// A stop signal and what gives it.
    pub fn new() -> (Stopper, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (Stopper(tx), Self(rx))
    }

    /// Resolves once the servers are told to stop (or whatever tells them is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl Stopper {
    /// Tells every server waiting on a [`Stop`] of this to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A server certificate and key, ready for the APIs and for ADS (ALPN `h2` and
/// `http/1.1`).
#[derive(Clone)]
pub struct Tls {
    pub https: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// Reads a PEM certificate chain and its private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let read = |path: &Path, what: &str| {
            meshmodel::input::read_text(path, meshmodel::input::MAX_FILE)
                .with_context(|| format!("--tls-{what} {}: cannot read", path.display()))
        };
        let (cert_pem, key_pem) = (read(cert, "cert")?, read(key, "key")?);
        Self::from_pem(
            &cert_pem,
            &key_pem,
            (
                &format!("--tls-cert {}", cert.display()),
                &format!("--tls-key {}", key.display()),
            ),
        )
    }

    /// A PEM certificate chain and its private key; `origin` names each in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: (&str, &str)) -> anyhow::Result<Self> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = origin;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .with_context(|| format!("{cert}: not PEM certificates"))?;
        anyhow::ensure!(!chain.is_empty(), "{cert}: no certificate in it");
        let private = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .with_context(|| format!("{key}: not a PEM private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .with_context(|| format!("{cert} and {key} do not go together"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            https: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// TLS for one run's ADS at `ip`: a CA made for the run (its key never leaves this
    /// process) and a certificate for `ip` from it; the TLS and the CA's PEM, which the
    /// sidecars are given to check the server against.
    pub fn for_run(ip: std::net::IpAddr) -> anyhow::Result<(Self, String)> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().context("a key for the run's CA")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("the run's CA")?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "gophermesh up: this run's CA");
        let ca_cert = ca.self_signed(&ca_key).context("the run's CA")?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().context("a key for the run's ADS")?;
        let mut server = CertificateParams::new(vec![ip.to_string()]).context("ADS certificate")?;
        server
            .distinguished_name
            .push(DnType::CommonName, "gophermesh up: ADS");
        let cert = server
            .signed_by(&key, &issuer)
            .context("the run's ADS certificate")?;
        let tls = Self::from_pem(
            &cert.pem(),
            &key.serialize_pem(),
            ("the run's ADS certificate", "its key"),
        )?;
        Ok((tls, ca_cert.pem()))
    }
}

/// How the APIs are guarded.
#[derive(Debug)]
pub struct ApiConfig<'a> {
    pub credentials: Option<Credentials>,
    pub allow_hosts: &'a [String],
    /// Where the control token is written.
    pub state_dir: &'a Path,
    pub tls: Option<&'a Tls>,
    /// The DogStatsD receiver's figures, for `/metrics`, when one runs.
    pub statsd: Option<crate::metrics::statsd::Statsd>,
}

/// Where the APIs ended up: their URLs (`https://` where they speak TLS).
#[derive(Debug)]
pub struct Apis {
    pub control: String,
    pub appmesh: String,
    pub token_file: PathBuf,
}

/// The largest request body the control API takes (`apply` of a large template).
pub const CONTROL_MAX_BODY: usize = 8 << 20;

/// Starts the control API on `control_listener` and the App Mesh API on
/// `appmesh_listener`, each behind its guard, until `stop`; writes a new control token.
pub fn start_apis(
    store: &Store,
    (envoys, secrets): (EnvoyStatuses, controlplane::secrets::Secrets),
    tasks: Arc<dyn tasks::Tasks>,
    config: &ApiConfig<'_>,
    (control_listener, appmesh_listener): (TcpListener, TcpListener),
    background: &mut Vec<JoinHandle<()>>,
    stop: &Stop,
) -> anyhow::Result<Apis> {
    let token = ControlToken::generate().context("cannot make the control token")?;
    let token_file = token.write(config.state_dir).with_context(|| {
        format!(
            "cannot write the control token under {}",
            config.state_dir.display()
        )
    })?;
    let control_addr = control_listener.local_addr()?;
    let control_guard = Guard::new(
        "control",
        control_addr,
        config.allow_hosts,
        Auth::Token {
            token,
            sigv4: config.credentials.clone(),
        },
        guard::Limits {
            // A template of thousands of resources is applied in one request.
            max_body: CONTROL_MAX_BODY,
            ..guard::Limits::default()
        },
        control::render_refusal,
    );
    let live = Live::start(
        store.clone(),
        (envoys.clone(), secrets.clone()),
        tasks.clone(),
    );
    background.push(rollouts::spawn(
        store.clone(),
        tasks.clone(),
        config.statsd.clone(),
        stop.clone(),
    ));
    let control_api = control::router(
        control::ControlState {
            store: store.clone(),
            envoys,
            secrets,
            tasks,
            live,
            statsd: config.statsd.clone(),
        },
        control_guard,
    );
    // TLS where it crosses a network; a loopback listener stays plain (the CLI on the
    // same machine speaks to it).
    let tls_for = |addr: SocketAddr| {
        config
            .tls
            .filter(|_| !addr.ip().is_loopback())
            .map(|t| t.https.clone())
    };
    let control_tls = tls_for(control_addr);
    let control_scheme = if control_tls.is_some() {
        "https"
    } else {
        "http"
    };
    background.push(spawn_api(
        "the control API",
        control_listener,
        control_api,
        control_tls,
        stop.clone(),
    ));
    let appmesh_addr = appmesh_listener.local_addr()?;
    let appmesh_guard = Guard::new(
        "App Mesh",
        appmesh_addr,
        config.allow_hosts,
        match &config.credentials {
            Some(creds) => Auth::SigV4(creds.clone()),
            None => Auth::Open,
        },
        guard::Limits::default(),
        appmesh::render_refusal,
    );
    let appmesh_api = appmesh::router(
        appmesh::AppMeshState {
            store: store.clone(),
        },
        appmesh_guard,
    );
    let appmesh_tls = tls_for(appmesh_addr);
    let appmesh_scheme = if appmesh_tls.is_some() {
        "https"
    } else {
        "http"
    };
    background.push(spawn_api(
        "the App Mesh API",
        appmesh_listener,
        appmesh_api,
        appmesh_tls,
        stop.clone(),
    ));
    Ok(Apis {
        control: format!("{control_scheme}://{control_addr}"),
        appmesh: format!("{appmesh_scheme}://{appmesh_addr}"),
        token_file,
    })
}

/// The most connections an API listener holds from one address: one client holding idle
/// connections cannot take the listener's whole budget (its idlest connection is closed to
/// make room for its next).
pub const API_CONNECTIONS_PER_PEER: usize = 1024;

/// Serves `api` on `listener` (over TLS when given) until `stop`.
fn spawn_api(
    what: &'static str,
    listener: TcpListener,
    api: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: Stop,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let cap = crate::runtime::budget().per_api;
        let limits = common::server::Limits {
            max_connections: cap,
            max_per_peer: API_CONNECTIONS_PER_PEER.min(cap),
            ..common::server::Limits::default()
        };
        let stop = stop.wait();
        let served = match tls {
            Some(acceptor) => {
                common::server::serve_tls(listener, api, limits, stop, Duration::ZERO, acceptor)
                    .await
            }
            None => common::server::serve(listener, api, limits, stop, Duration::ZERO).await,
        };
        if let Err(e) = served {
            tracing::error!("{what} stopped: {e}");
        }
    })
}

/// Starts looking up the Cloud Map nodes as `--cloud-map` says (and says so).
pub async fn follow_cloud_map(
    config: CloudMapConfig,
    store: &controlplane::Store,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let nodes: usize = store
        .current()
        .meshes
        .values()
        .map(|m| controlplane::state::cloudmap::discovered_nodes(&m.mesh).len())
        .sum();
    let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if config.mode == CloudMapMode::Auto && nodes == 0 && !region_set {
        // Nothing to look up, and no sign of AWS: not even the instance metadata is asked.
        return Ok(None);
    }
    if config.mode == CloudMapMode::Off {
        if nodes > 0 {
            say(format!(
                "Cloud Map: not looked up (--cloud-map off); the callers of its {nodes} node(s) answer 503"
            ));
        }
        return Ok(None);
    }
    let Some(cloud_map) = controlplane::state::cloudmap::CloudMap::from_env().await else {
        if config.mode == CloudMapMode::On {
            bail!(
                "--cloud-map on: no AWS region is configured; set AWS_REGION (or AWS_DEFAULT_REGION)"
            );
        }
        if nodes > 0 {
            say(format!(
                "Cloud Map: not looked up (no AWS region is configured: set AWS_REGION, or --cloud-map off to silence this); the callers of its {nodes} node(s) answer 503"
            ));
        }
        return Ok(None);
    };
    say(format!(
        "Cloud Map: looking up its nodes ({nodes} now) every {}",
        humantime::format_duration(config.interval)
    ));
    Ok(Some(tokio::spawn(controlplane::state::cloudmap::follow(
        store.clone(),
        cloud_map,
        config.interval,
    ))))
}
