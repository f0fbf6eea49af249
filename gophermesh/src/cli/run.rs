//! The flags of the long-running commands: `up` and `serve`, with the store, the APIs'
//! credentials and hosts, and Cloud Map lookups they share.

use clap::Args;
use std::path::PathBuf;

use super::SourceArgs;

/// `HOST:PORT`, a port 1-65535 and a host of letters, digits, `.`, `-` (or an IPv4).
pub(super) fn parse_host_port(value: &str) -> Result<String, String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("`{value}` is not HOST:PORT"));
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if !host_ok {
        return Err(format!("`{host}` is not a host name or IPv4 address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(value.to_owned()),
        _ => Err(format!("`{port}` is not a port (1-65535)")),
    }
}

/// Flags of `gophermesh up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,

    /// Read the mesh from this file instead of --mesh-dir: a CloudFormation template, the
    /// EKS controller's Kubernetes manifests or App Mesh JSON (as `apply` takes them);
    /// repeatable.
    #[arg(short = 'f', long = "file")]
    pub(crate) files: Vec<PathBuf>,

    #[command(flatten)]
    pub(crate) template: super::TemplateArgs,

    /// Another stack's export, NAME=VALUE: what `Fn::ImportValue` of NAME gives in the
    /// templates of -f (repeatable).
    #[arg(long = "import", value_name = "NAME=VALUE", value_parser = super::parse_pair)]
    pub(crate) imports: Vec<(String, String)>,

    /// Where the requester task is published on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "REQUESTER_PORT", default_value_t = 8080)]
    pub(crate) requester_port: u16,

    /// Where a virtual gateway's task (the first, when there are several) is published on
    /// 127.0.0.1, on its first listener; 0 picks a free one.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 9080)]
    pub(crate) gateway_port: u16,

    /// Loopback port of the control API (`status`, `route set`, `apply` talk to it); 0 picks
    /// a free one.
    #[arg(long, env = "GOPHERMESH_CONTROL_PORT", default_value_t = 9990)]
    pub(crate) control_port: u16,

    /// Loopback port of the ADS (xDS) server the Envoys connect to; 0 picks a free one.
    #[arg(long, env = "GOPHERMESH_XDS_PORT", default_value_t = 0)]
    pub(crate) xds_port: u16,

    /// The Envoy binary. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,

    /// Worker threads per Envoy.
    #[arg(long, default_value_t = 1)]
    pub(crate) envoy_concurrency: u16,

    /// Envoy's log level (trace, debug, info, warning, error, critical, off).
    #[arg(long, default_value = "warning")]
    pub(crate) envoy_log_level: String,

    /// The xDS protocol the Envoys speak with the control plane: delta (only what
    /// changed) or sotw (state of the world, as the App Mesh agent's bootstrap).
    #[arg(long, env = "GOPHERMESH_XDS_PROTOCOL", value_enum, default_value_t)]
    pub(crate) xds_protocol: gophermesh::runtime::envoy::XdsProtocol,

    /// Where the requester and distributor binaries are. Default: next to gophermesh.
    #[arg(long, env = "GOPHERMESH_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,

    /// Run each task in its own network namespace, as `awsvpc` does on ECS (needs root):
    /// names resolve through /etc/netns/NS/hosts, the task definition's APPMESH
    /// proxyConfiguration becomes the CNI plugin's iptables rules, Envoy runs as its
    /// container's user (1337), and apps call their backends with no proxy setting.
    #[arg(long)]
    pub(crate) netns: bool,

    /// Run each task definition as a podman pod of containers from the gophermesh images
    /// (built first when missing), on the --netns network (needs root, podman and runc).
    #[arg(long)]
    pub(crate) containers: bool,

    /// With --netns: the tasks' Envoys fetch their configuration from this control plane
    /// (HOST:PORT of a `gophermesh serve`, over TLS, as APPMESH_XDS_ENDPOINT) instead of
    /// one this run starts; no local control plane or API runs. HOST must be an address
    /// of this machine (the tasks reach the host through an uplink) or a name resolving
    /// to one.
    #[arg(
        long,
        env = "GOPHERMESH_CONTROL_PLANE",
        value_name = "HOST:PORT",
        requires = "control_plane_ca"
    )]
    pub(crate) control_plane: Option<String>,

    /// The CA certificate (PEM) that --control-plane's certificate is checked against.
    #[arg(
        long,
        env = "GOPHERMESH_CONTROL_PLANE_CA",
        value_name = "FILE",
        requires = "control_plane"
    )]
    pub(crate) control_plane_ca: Option<PathBuf>,

    /// Where bootstrap files and logs go.
    #[arg(long, env = "GOPHERMESH_STATE_DIR", default_value = ".gophermesh")]
    pub(crate) state_dir: PathBuf,

    /// Loopback port of the App Mesh API (`aws appmesh ... --endpoint-url
    /// http://127.0.0.1:PORT`); 0 picks a free one.
    #[arg(long, env = "GOPHERMESH_API_PORT", default_value_t = 9991)]
    pub(crate) api_port: u16,

    #[command(flatten)]
    pub(crate) store: StoreArgs,

    #[command(flatten)]
    pub(crate) api: ApiArgs,

    #[command(flatten)]
    pub(crate) cloud_map: CloudMapArgs,

    #[command(flatten)]
    pub(crate) certificates: CertificateArgs,
}

/// Where the mesh state lives (`up` and `serve`).
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// Keep the mesh in a durable store in DIR: every accepted change is written there
    /// before it is acknowledged, and the next run with `--data-dir DIR` starts from it (mesh/ is
    /// only read to seed an empty store). Without it the state lives in memory.
    #[arg(long, env = "GOPHERMESH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Start with no mesh resources at all (mesh/ is not read): the tasks start and their
    /// sidecars wait until the mesh is created through the App Mesh API.
    #[arg(long)]
    pub(crate) empty: bool,
}

/// Who may call the APIs, and what their ARNs say (`up` and `serve`).
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// With --api-secret-access-key: App Mesh API calls must be signed (SigV4) with these
    /// credentials; unsigned or wrongly signed calls get 403.
    #[arg(
        long,
        env = "GOPHERMESH_API_ACCESS_KEY_ID",
        requires = "api_secret_access_key"
    )]
    pub(crate) api_access_key_id: Option<String>,

    /// The secret key that goes with --api-access-key-id.
    #[arg(
        long,
        env = "GOPHERMESH_API_SECRET_ACCESS_KEY",
        requires = "api_access_key_id",
        hide_env_values = true
    )]
    pub(crate) api_secret_access_key: Option<String>,

    /// The region in the ARNs the App Mesh API reports, and the one SigV4 signatures must
    /// be scoped to.
    #[arg(long, env = "GOPHERMESH_API_REGION", default_value = "us-east-1")]
    pub(crate) api_region: String,

    /// Another host name the App Mesh and control APIs answer to (as `NAME` with their own
    /// port, or `NAME:PORT`); repeatable. Requests whose Host is neither one of these nor
    /// the address an API listens on get 421. `NAME:443` also admits the bare `NAME`
    /// (the default port of HTTPS, as behind a load balancer's TLS listener).
    #[arg(
        long,
        value_name = "NAME",
        env = "GOPHERMESH_ALLOW_HOST",
        value_delimiter = ','
    )]
    pub(crate) allow_host: Vec<String>,

    /// The account id in the ARNs the App Mesh API reports.
    #[arg(
        long,
        env = "GOPHERMESH_API_ACCOUNT_ID",
        default_value = "000000000000"
    )]
    pub(crate) api_account_id: String,
}

impl ApiArgs {
    /// The credentials SigV4 signatures must be made with, when set.
    pub(crate) fn credentials(&self) -> Option<gophermesh::api::sigv4::Credentials> {
        match (&self.api_access_key_id, &self.api_secret_access_key) {
            (Some(id), Some(secret)) => Some(gophermesh::api::sigv4::Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                region: self.api_region.clone(),
            }),
            _ => None,
        }
    }

    /// The region and account the ARNs name.
    pub(crate) fn identity(&self) -> controlplane::Identity {
        controlplane::Identity {
            region: self.api_region.clone(),
            account: self.api_account_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Directory of App Mesh resource files (one --cli-input-json per file) that seed an
    /// empty store.
    #[arg(long, env = "GOPHERMESH_MESH_DIR", default_value = "mesh")]
    pub(crate) mesh_dir: PathBuf,

    /// Seed an empty store from this file instead of --mesh-dir: a CloudFormation
    /// template, the EKS controller's Kubernetes manifests or App Mesh JSON (as `apply`
    /// takes them); repeatable.
    #[arg(long = "import", value_name = "FILE")]
    pub(crate) imports: Vec<PathBuf>,

    #[command(flatten)]
    pub(crate) template: super::TemplateArgs,

    /// Another stack's export, NAME=VALUE: what `Fn::ImportValue` of NAME gives in the
    /// templates of --import (repeatable).
    #[arg(long = "import-value", value_name = "NAME=VALUE", value_parser = super::parse_pair)]
    pub(crate) import_values: Vec<(String, String)>,

    #[command(flatten)]
    pub(crate) store: StoreArgs,

    /// Keep the mesh in a DynamoDB table shared by replicas: `dynamodb://TABLE`. Every
    /// change is one conditional transaction on the stored version, and each replica loads
    /// what the others store (see --follow-interval). The table needs one string partition
    /// key `pk`; credentials, region and AWS_ENDPOINT_URL come from the environment as for
    /// the AWS CLI. Instead of --data-dir.
    #[arg(long, env = "GOPHERMESH_STATE", value_parser = parse_state, conflicts_with = "data_dir")]
    pub(crate) state: Option<String>,

    /// With --state: how often this replica reads the table's version to learn of changes
    /// made through other replicas.
    #[arg(long, env = "GOPHERMESH_FOLLOW_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration, requires = "state")]
    pub(crate) follow_interval: std::time::Duration,

    #[command(flatten)]
    pub(crate) cloud_map: CloudMapArgs,

    #[command(flatten)]
    pub(crate) certificates: CertificateArgs,

    #[command(flatten)]
    pub(crate) api: ApiArgs,

    /// HOST:PORT of the ADS (xDS) server the Envoys connect to (`APPMESH_XDS_ENDPOINT`);
    /// port 0 picks a free one.
    #[arg(long, env = "GOPHERMESH_XDS_LISTEN", default_value = "127.0.0.1:15010")]
    pub(crate) xds_listen: std::net::SocketAddr,

    /// HOST:PORT of the App Mesh API; port 0 picks a free one. Beyond loopback it needs
    /// --api-access-key-id and --api-secret-access-key.
    #[arg(long, env = "GOPHERMESH_API_LISTEN", default_value = "127.0.0.1:9991")]
    pub(crate) api_listen: std::net::SocketAddr,

    /// HOST:PORT of the control API and the console; port 0 picks a free one.
    #[arg(
        long,
        env = "GOPHERMESH_CONTROL_LISTEN",
        default_value = "127.0.0.1:9990"
    )]
    pub(crate) control_listen: std::net::SocketAddr,

    /// HOST:PORT (UDP) where the sidecars' DogStatsD sinks send their stats
    /// (ENABLE_ENVOY_DOG_STATSD=1, ENABLE_ENVOY_STATS_TAGS=1, STATSD_ADDRESS and
    /// STATSD_PORT pointing here): the control API's /metrics then counts what each
    /// sent to each target. Unset: no receiver.
    #[arg(long, env = "GOPHERMESH_STATSD_LISTEN", value_name = "HOST:PORT")]
    pub(crate) statsd_listen: Option<std::net::SocketAddr>,

    /// PEM certificate chain for ADS and both APIs (with --tls-key): they then speak TLS
    /// only.
    #[arg(long, env = "GOPHERMESH_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "GOPHERMESH_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Where the control token is written (`control-token`, mode 0600).
    #[arg(long, env = "GOPHERMESH_STATE_DIR", default_value = ".gophermesh")]
    pub(crate) state_dir: PathBuf,
}

/// Cloud Map lookups (`up` and `serve`).
#[derive(Debug, Clone, Args)]
pub(crate) struct CloudMapArgs {
    /// Whether the instances of Cloud Map nodes (`awsCloudMap` service discovery) that no
    /// task here runs are looked up with Cloud Map's DiscoverInstances and become their
    /// callers' endpoints: `auto` when AWS_REGION or AWS_DEFAULT_REGION is set or the mesh
    /// has Cloud Map nodes at start (and a region is found), `on` (refuses to start without
    /// a region), or `off` (their callers answer 503). Credentials, region and
    /// AWS_ENDPOINT_URL_SERVICEDISCOVERY or AWS_ENDPOINT_URL come from the environment as
    /// for the AWS CLI.
    #[arg(long, env = "GOPHERMESH_CLOUD_MAP", value_enum, default_value = "auto")]
    pub(crate) cloud_map: gophermesh::config::CloudMapMode,

    /// How often Cloud Map nodes are looked up again.
    #[arg(long, env = "GOPHERMESH_CLOUD_MAP_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub(crate) cloud_map_interval: std::time::Duration,
}

/// ACM certificates and Private CA trust named by the mesh (`up` and `serve`).
#[derive(Debug, Clone, Args)]
pub(crate) struct CertificateArgs {
    /// How often the ACM certificates (`certificate.acm`) and Private CA certificates
    /// (`trust.acm`) the mesh names are read again, so that a certificate ACM renewed
    /// reaches the Envoys (each is also read an hour before it expires, and a failed read
    /// is retried within 15 s, the last good one served meanwhile). Credentials, region
    /// and AWS_ENDPOINT_URL come from the environment as for the AWS CLI; nothing is read
    /// while no mesh names ACM material.
    #[arg(long, env = "GOPHERMESH_CERTIFICATE_REFRESH", default_value = "5m", value_parser = parse_refresh)]
    pub(crate) certificate_refresh: std::time::Duration,

    /// How long the certificates of a mesh's own mutual TLS (a mesh tagged
    /// `gophermesh:mtls`) are valid; each is issued again at two thirds of it.
    #[arg(long, env = "GOPHERMESH_MESH_CERTIFICATE_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    pub(crate) mesh_certificate_lifetime: std::time::Duration,

    /// The CA (PEM certificate) a mesh's own mutual TLS issues from, with --mesh-ca-key;
    /// without them each mesh gets a CA made in memory (replicas of `serve` must share
    /// one: give them the same files).
    #[arg(long, env = "GOPHERMESH_MESH_CA_CERT", requires = "mesh_ca_key")]
    pub(crate) mesh_ca_cert: Option<std::path::PathBuf>,

    /// The key (PEM) of --mesh-ca-cert.
    #[arg(long, env = "GOPHERMESH_MESH_CA_KEY", requires = "mesh_ca_cert")]
    pub(crate) mesh_ca_key: Option<std::path::PathBuf>,

    /// A file of 32 random bytes (or 64 hex digits: `openssl rand -hex 32`) that seals the
    /// mesh CAs kept in the store: each mesh's CA is then made once and stored with the
    /// mesh, its key encrypted (AES-256-GCM), so that every replica and every restart given
    /// the same file issues from it.
    #[arg(
        long,
        env = "GOPHERMESH_MESH_CA_SEAL_KEY",
        conflicts_with = "mesh_ca_cert"
    )]
    pub(crate) mesh_ca_seal_key: Option<std::path::PathBuf>,
}

impl CertificateArgs {
    pub(crate) fn config(&self) -> gophermesh::config::CertificateConfig {
        gophermesh::config::CertificateConfig {
            refresh: self.certificate_refresh,
            mesh_lifetime: self.mesh_certificate_lifetime,
            mesh_ca: self.mesh_ca_cert.clone().zip(self.mesh_ca_key.clone()),
            mesh_ca_seal_key: self.mesh_ca_seal_key.clone(),
        }
    }
}

/// A certificate lifetime of at least 30 seconds (`30s`, `1h`, `24h`).
fn parse_lifetime(value: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| format!("`{value}`: {e}"))?;
    if d < std::time::Duration::from_secs(30) {
        return Err(format!("`{value}`: give at least 30s"));
    }
    Ok(d)
}

/// A refresh interval of at least one second (`1s`, `5m`, `1h`).
fn parse_refresh(value: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| format!("`{value}`: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{value}`: give at least 1s"));
    }
    Ok(d)
}

impl CloudMapArgs {
    pub(crate) fn config(&self) -> gophermesh::config::CloudMapConfig {
        gophermesh::config::CloudMapConfig {
            mode: self.cloud_map,
            interval: self.cloud_map_interval,
        }
    }
}

/// A duration of at least 10 ms (`500ms`, `10s`, `1m`).
fn parse_interval(value: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| format!("`{value}`: {e}"))?;
    if d < std::time::Duration::from_millis(10) {
        return Err(format!("`{value}`: give at least 10ms"));
    }
    Ok(d)
}

/// The table of `--state dynamodb://TABLE`.
fn parse_state(value: &str) -> Result<String, String> {
    let Some(table) = value.strip_prefix("dynamodb://") else {
        return Err(format!(
            "`{value}` is not a state store this serves; give dynamodb://TABLE (or --data-dir DIR for a file on this machine)"
        ));
    };
    let valid = (3..=255).contains(&table.len())
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    match valid {
        true => Ok(table.to_owned()),
        false => Err(format!(
            "`{table}` is not a DynamoDB table name: 3 to 255 letters, digits, `_`, `-` or `.`"
        )),
    }
}
