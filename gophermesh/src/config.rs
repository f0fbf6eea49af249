//! Typed configuration of `gophermesh up`, `serve` and `bench`. The command layer turns
//! flags into these; the library takes nothing else, so tests can build them directly.

use std::path::PathBuf;

use controlplane::Identity;

use crate::api::sigv4::Credentials;
use crate::runtime::envoy::EnvoyOptions;

/// Where the mesh resources and the task definitions are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub mesh_dir: PathBuf,
    pub taskdefs_dir: PathBuf,
    /// Templates, manifests or App Mesh JSON files the mesh is read from instead of
    /// `mesh_dir` (`up -f`), with how to read them.
    pub files: Vec<PathBuf>,
    pub read: meshmodel::import::Options,
}

impl Source {
    /// What a store that holds nothing is seeded from.
    pub fn seed(&self) -> Seed<'_> {
        Seed::of(&self.mesh_dir, &self.files, &self.read)
    }
}

/// What a store that holds nothing is seeded from: a directory of App Mesh JSON files
/// (`--mesh-dir`), or files of any form `apply` takes (`up -f`, `serve --import`).
#[derive(Debug, Clone, Copy)]
pub enum Seed<'a> {
    Dir(&'a std::path::Path),
    Files(&'a [PathBuf], &'a meshmodel::import::Options),
}

impl<'a> Seed<'a> {
    /// The files when there are any, else the directory.
    pub fn of(
        dir: &'a std::path::Path,
        files: &'a [PathBuf],
        read: &'a meshmodel::import::Options,
    ) -> Self {
        match files.is_empty() {
            true => Seed::Dir(dir),
            false => Seed::Files(files, read),
        }
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Seed::Dir(dir) => dir.display().to_string(),
            Seed::Files(files, _) => files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The meshes it holds, each checked as a whole.
    pub fn meshes(&self) -> Result<Vec<meshmodel::Mesh>, meshmodel::Problems> {
        match self {
            Seed::Dir(dir) => meshmodel::Mesh::load_meshes(dir),
            Seed::Files(files, read) => {
                let resources = meshmodel::import::read_paths(files, read)?
                    .into_iter()
                    .flat_map(|i| i.resources)
                    .collect();
                meshmodel::Mesh::from_resources(&self.describe(), resources)
            }
        }
    }
}

/// How `up` runs the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Processes, each task on a loopback address of its own.
    #[default]
    Loopback,
    /// Processes, each task in a network namespace of its own (root).
    Netns,
    /// Each task definition as a podman pod, on the namespaces' network (root).
    Containers,
}

impl NetworkMode {
    /// The mode the `--netns` and `--containers` flags ask for (`--containers` implies
    /// the namespaces' network).
    pub fn from_flags(netns: bool, containers: bool) -> Self {
        match (netns, containers) {
            (_, true) => Self::Containers,
            (true, false) => Self::Netns,
            (false, false) => Self::Loopback,
        }
    }
}

/// When Cloud Map nodes are looked up (`--cloud-map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudMapMode {
    Auto,
    On,
    Off,
}

/// `--cloud-map` and `--cloud-map-interval` (`up` and `serve`).
#[derive(Debug, Clone, Copy)]
pub struct CloudMapConfig {
    pub mode: CloudMapMode,
    pub interval: std::time::Duration,
}

/// `gophermesh up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub source: Source,
    /// Where the requester is published on 127.0.0.1 (0: any free port).
    pub requester_port: u16,
    /// Where the first virtual gateway's task is published on 127.0.0.1 (0: any free port).
    pub gateway_port: u16,
    /// Loopback port of the control API (0: any free port).
    pub control_port: u16,
    /// Port of the ADS server (0: any free port).
    pub xds_port: u16,
    /// Loopback port of the App Mesh API (0: any free port).
    pub api_port: u16,
    pub envoy_bin: Option<PathBuf>,
    pub envoy: EnvoyOptions,
    pub bin_dir: Option<PathBuf>,
    pub network: NetworkMode,
    /// Bootstrap files, logs, podman's configuration and image build contexts.
    pub state_dir: PathBuf,
    /// Durable state in `DIR/state.redb`; in memory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Start with no mesh resources.
    pub empty: bool,
    /// When set, App Mesh API calls must be signed with these.
    pub api_credentials: Option<Credentials>,
    /// Region and account of the ARNs.
    pub identity: Identity,
    /// Host names the APIs answer to besides their own addresses.
    pub allow_hosts: Vec<String>,
    /// A control plane elsewhere (`--control-plane`): `HOST:PORT` and the CA to trust.
    pub control_plane: Option<(String, PathBuf)>,
    /// Cloud Map lookups for the nodes no task here runs.
    pub cloud_map: CloudMapConfig,
    pub certificates: CertificateConfig,
}

/// How often ACM material is read again by default: ACM renews a private certificate
/// weeks before it expires, so a renewal reaches the Envoys within minutes.
pub const DEFAULT_CERTIFICATE_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// The certificates the control plane serves (`up` and `serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// How often ACM certificates and Private CA trust the mesh names are read again.
    pub refresh: std::time::Duration,
    /// How long a mesh certificate (the mesh's own mutual TLS) is valid.
    pub mesh_lifetime: std::time::Duration,
    /// The CA mesh certificates are issued from (PEM certificate and key files); one made
    /// per mesh in memory when `None`.
    pub mesh_ca: Option<(PathBuf, PathBuf)>,
    /// A file holding the key that seals the mesh CAs kept in the store; when given, each
    /// mesh's CA is made once and kept there (every replica and restart issues from it).
    pub mesh_ca_seal_key: Option<PathBuf>,
}

impl Default for CertificateConfig {
    fn default() -> Self {
        Self {
            refresh: DEFAULT_CERTIFICATE_REFRESH,
            mesh_lifetime: controlplane::secrets::DEFAULT_LIFETIME,
            mesh_ca: None,
            mesh_ca_seal_key: None,
        }
    }
}

/// Where `serve` keeps the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// In memory only.
    Memory,
    /// `DIR/state.redb` (`--data-dir`).
    Dir(PathBuf),
    /// A DynamoDB table shared by replicas (`--state dynamodb://TABLE`), read for the
    /// others' changes this often (`--follow-interval`).
    Table(String, std::time::Duration),
}

/// `gophermesh serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The mesh the state is seeded from when it holds nothing.
    pub mesh_dir: PathBuf,
    /// Templates, manifests or App Mesh JSON files to seed from instead of `mesh_dir`
    /// (`--import`), with how to read them.
    pub imports: Vec<PathBuf>,
    pub read: meshmodel::import::Options,
    pub state: StateStore,
    /// Start with no mesh resources.
    pub empty: bool,
    /// Region and account of the ARNs.
    pub identity: Identity,
    /// When set, App Mesh API calls must be signed with these.
    pub api_credentials: Option<Credentials>,
    /// Host names the APIs answer to besides their own addresses.
    pub allow_hosts: Vec<String>,
    pub cloud_map: CloudMapConfig,
    pub certificates: CertificateConfig,
    pub xds_listen: std::net::SocketAddr,
    pub api_listen: std::net::SocketAddr,
    pub control_listen: std::net::SocketAddr,
    /// Where DogStatsD from the sidecars is received (UDP), if anywhere.
    pub statsd_listen: Option<std::net::SocketAddr>,
    /// A certificate chain and its key (PEM files), for what listens beyond loopback.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the control token is written.
    pub state_dir: PathBuf,
}

impl ServeConfig {
    /// `serve` in memory, on ports the system picks on loopback, without Cloud Map or
    /// TLS: seeded from `mesh_dir` (or holding nothing when `empty`), its control token
    /// under `state_dir`. What the bench and the tests start in-process.
    pub fn on_loopback(mesh_dir: PathBuf, empty: bool, state_dir: PathBuf) -> Self {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            mesh_dir,
            imports: Vec::new(),
            read: meshmodel::import::Options::default(),
            state: StateStore::Memory,
            empty,
            identity: Identity::default(),
            api_credentials: None,
            allow_hosts: Vec::new(),
            cloud_map: CloudMapConfig {
                mode: CloudMapMode::Off,
                interval: std::time::Duration::from_secs(30),
            },
            certificates: CertificateConfig::default(),
            xds_listen: any,
            api_listen: any,
            control_listen: any,
            statsd_listen: None,
            tls: None,
            state_dir,
        }
    }
}

/// `gophermesh bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub source: Source,
    /// A short run: every figure is made, none is precise.
    pub quick: bool,
    /// Where bench.json and bench.svg go.
    pub out: PathBuf,
    /// Measured seconds per scenario.
    pub duration: u64,
    /// Connections the load generator keeps open.
    pub concurrency: u32,
    /// Threads of the load generator.
    pub load_threads: u32,
    /// Route shifts to time.
    pub shifts: u32,
    /// Mesh sizes (virtual nodes) for the control-plane scaling run.
    pub scale: Vec<u32>,
    /// Fleets (sidecars, virtual nodes) to run against `serve`.
    pub fleet: Vec<(u32, u32)>,
    /// Route changes timed per fleet.
    pub fleet_changes: u32,
    /// The xDS protocols of each fleet's simulated sidecars, one run each.
    pub fleet_protocols: Vec<crate::runtime::envoy::XdsProtocol>,
    /// Also run the mesh with `up --containers` (the sidecar image).
    pub containers: bool,
    pub envoy_bin: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
}
