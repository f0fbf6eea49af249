//! Every subcommand and flag of `gophermesh`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run an App Mesh-style service mesh: check its JSON, render it for AWS, or run it here
/// with real Envoy sidecars.
#[derive(Debug, Parser)]
#[command(name = "gophermesh", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check mesh/ and taskdefs/ for what the AWS API cannot catch: dangling references,
    /// all-zero weights, ports and users that disagree between a task and its node.
    Validate(SourceArgs),
    /// Fill the ${AWS_ACCOUNT_ID}, ${AWS_REGION} and ${IMAGE_REPOSITORY} placeholders.
    Render {
        #[command(subcommand)]
        what: RenderWhat,
    },
    /// Run the mesh here: a control plane, and every task with a real Envoy sidecar.
    Up(UpArgs),
    /// Carry the mesh to where App Mesh users go next, with a report, field by field, of
    /// what the target cannot carry.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Run the control plane alone, for Envoys elsewhere (ECS tasks whose sidecar has
    /// APPMESH_XDS_ENDPOINT): ADS, the App Mesh API, the control API and the console, with
    /// durable state. No tasks run here; each Envoy gets its node's configuration from the
    /// mesh alone, as App Mesh gave it.
    Serve(ServeArgs),
    /// Write the bootstrap of an App Mesh sidecar Envoy from the environment the
    /// aws-appmesh-envoy agent reads (APPMESH_RESOURCE_ARN, APPMESH_XDS_ENDPOINT,
    /// ENVOY_ADMIN_ACCESS_PORT), for a control plane such as `gophermesh serve`.
    Bootstrap(BootstrapArgs),
    /// Measure the control plane at fleet scale: N simulated sidecars against
    /// `gophermesh serve` on a generated mesh (connect storm, route changes ACKed by all,
    /// CPU, memory, bytes); writes OUT/fleet.json.
    BenchFleet(BenchFleetArgs),
    /// Measure what the mesh costs, side by side in one run: throughput, latency and CPU
    /// per request of five paths, service RSS and start time, route-shift propagation, and
    /// how the control plane scales. Needs `wrk` (apt-get install wrk).
    Bench(BenchArgs),
    /// The floors `bench` compares against: a minimal hyper HTTP/1 server that answers
    /// every request with `hello` (or, with --distributor or --forward, the minimal
    /// stand-ins for the gophers that the mesh floor runs in their place).
    BenchHello {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Answer with a fixed answer shaped as the requester's (its distributor part
        /// from host `hyper-floor`) instead of `hello`.
        #[arg(long, conflicts_with = "forward")]
        distributor: bool,
        /// Send every request on to this http:// URL, one upstream connection per
        /// inbound connection, and answer with its answer.
        #[arg(long, value_name = "URL")]
        forward: Option<String>,
        /// With --forward: connect to this HTTP proxy (HOST:PORT or http://HOST:PORT)
        /// instead of the URL's host, as the requester uses its Envoy's egress listener.
        #[arg(long, value_name = "HOST:PORT", requires = "forward")]
        proxy: Option<String>,
    },
    /// Container images of the services and of the Envoy sidecar.
    Images {
        #[command(subcommand)]
        what: ImagesWhat,
    },
    /// Show the running mesh: processes, Envoys, route weights and the split observed.
    Status {
        #[command(flatten)]
        control: ControlArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a route of the running mesh.
    Route {
        #[command(subcommand)]
        what: RouteWhat,
    },
    /// Print the web console's sign-in link (the console's address with the control token),
    /// so that weights can be shifted from the page.
    Console {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Create or replace any mesh resource in the running mesh from a --cli-input-json file.
    Apply {
        /// The resource file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        control: ControlArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RouteWhat {
    /// Set the weights of ROUTE's targets, e.g. `route set distributor distributor-v1=50 distributor-v2=50`.
    Set {
        /// The route's name.
        route: String,
        /// One NODE=WEIGHT per target (weights 0-100, relative, not all 0).
        #[arg(required = true, value_parser = parse_weight)]
        weights: Vec<(String, i64)>,
        /// The virtual router, when more than one has a route of that name.
        #[arg(long)]
        router: Option<String>,
        /// The mesh of the route, when the control plane holds several (`status` lists
        /// them); the first by default.
        #[arg(long)]
        mesh: Option<String>,
        /// Also write the new weights to the route's file under --mesh-dir (the file that
        /// holds this route, or MESH_DIR/routes/ROUTE.json).
        #[arg(long)]
        save: bool,
        /// The mesh directory --save writes into.
        #[arg(long, env = "GOPHERMESH_MESH_DIR", default_value = "mesh")]
        mesh_dir: PathBuf,
        #[command(flatten)]
        control: ControlArgs,
    },
}

fn parse_weight(s: &str) -> Result<(String, i64), String> {
    let (node, weight) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NODE=WEIGHT, like distributor-v1=50"))?;
    let weight: i64 = weight
        .parse()
        .map_err(|_| format!("`{s}`: the weight `{weight}` is not a whole number"))?;
    if node.is_empty() {
        return Err(format!("`{s}`: the virtual node name is empty"));
    }
    Ok((node.to_owned(), weight))
}

/// Where the mesh resources and the task definitions are.
#[derive(Debug, Clone, Args)]
pub(crate) struct SourceArgs {
    /// Directory of App Mesh resource files (one --cli-input-json per file).
    #[arg(long, env = "GOPHERMESH_MESH_DIR", default_value = "mesh")]
    pub(crate) mesh_dir: PathBuf,

    /// Directory of ECS task definitions (register-task-definition --cli-input-json).
    #[arg(long, env = "GOPHERMESH_TASKDEFS_DIR", default_value = "taskdefs")]
    pub(crate) taskdefs_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImagesWhat {
    /// Build gophermesh/requester, gophermesh/distributor:v1/:v2 and gophermesh/envoy
    /// offline with podman, FROM scratch (needs podman and runc; release binaries).
    Build(ImagesBuildArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ImagesBuildArgs {
    /// Where the requester and distributor binaries are (use release builds; debug
    /// builds make images far larger). Default: next to gophermesh.
    #[arg(long, env = "GOPHERMESH_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,

    /// The Envoy for the sidecar image. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,

    /// Where the build contexts and podman's containers.conf go.
    #[arg(long, env = "GOPHERMESH_STATE_DIR", default_value = ".gophermesh")]
    pub(crate) state_dir: PathBuf,

    /// Also build the control plane image, gophermesh/control-plane:latest (`gophermesh
    /// serve` for ECS, from the gophermesh binary in --bin-dir).
    #[arg(long)]
    pub(crate) control_plane: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExportWhat {
    /// ECS Service Connect: per task definition, FAMILY.json (without the Envoy and its
    /// APPMESH proxy) for register-task-definition, and FAMILY.service-connect.json, the
    /// service's serviceConnectConfiguration for create-service / update-service.
    ServiceConnect(ExportArgs),
    /// VPC Lattice: the `aws vpc-lattice --cli-input-json` inputs in creation order (a
    /// service network; per node listener a target group; per virtual service a service,
    /// its association and a listener per App Mesh listener; per conditional route a rule,
    /// weights times 9; each
    /// tagged gophermesh:mesh=MESH) and apply.sh, which makes the calls in order (VPC_ID from
    /// the environment). With --apply or --teardown, the calls are made here.
    Lattice(LatticeArgs),
    /// The Kubernetes Gateway API, mesh profile (GAMMA): a Service per virtual node and per
    /// virtual service, an HTTPRoute (or GRPCRoute) per router with matches, weighted
    /// backendRefs and the per-request timeout, one YAML file each.
    GatewayApi(ExportArgs),
}

/// `export lattice`: the export's flags and the Lattice calls.
#[derive(Debug, Clone, Args)]
pub(crate) struct LatticeArgs {
    #[command(flatten)]
    pub(crate) export: ExportArgs,

    /// Make the calls through the AWS CLI (so AWS_PROFILE, AWS_REGION and AWS_ENDPOINT_URL
    /// apply): create what is missing, update what differs, delete what an earlier apply of
    /// this mesh made that the mesh no longer has; run again, it changes nothing. Files
    /// are written only with --out.
    #[arg(long, conflicts_with = "teardown")]
    pub(crate) apply: bool,

    /// Delete every Lattice resource tagged gophermesh:mesh=MESH (what --apply or apply.sh
    /// made for this mesh), in the order Lattice allows.
    #[arg(long)]
    pub(crate) teardown: bool,

    /// The VPC the target groups are in (--apply).
    #[arg(long, env = "VPC_ID", value_name = "VPC")]
    pub(crate) vpc_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,

    /// Where the files go (created if missing); default export/TARGET.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,

    /// Fail (exit 1, nothing written) when anything cannot be carried.
    #[arg(long)]
    pub(crate) strict: bool,

    /// Print the table of what each target carries (markdown) and nothing else.
    #[arg(long)]
    pub(crate) features: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RenderWhat {
    /// Write the task definitions with placeholders filled from the environment.
    Taskdefs(RenderArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RenderArgs {
    /// Directory of task definitions with ${...} placeholders.
    #[arg(long, env = "GOPHERMESH_TASKDEFS_DIR", default_value = "taskdefs")]
    pub(crate) taskdefs_dir: PathBuf,

    /// Where to write the rendered files (created if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,

    /// HOST:PORT of a self-hosted control plane (`gophermesh serve`): added to each Envoy
    /// container (the one `proxyConfiguration` names) as `APPMESH_XDS_ENDPOINT`, the one
    /// variable that points the aws-appmesh-envoy sidecar at it. Nothing else changes.
    #[arg(long, env = "GOPHERMESH_XDS_ENDPOINT", value_parser = parse_host_port)]
    pub(crate) xds_endpoint: Option<String>,
}

/// `HOST:PORT`, a port 1-65535 and a host of letters, digits, `.`, `-` (or an IPv4).
fn parse_host_port(value: &str) -> Result<String, String> {
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
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,

    /// A short run (2 s per scenario, 10 shifts): checks that every figure can be made.
    #[arg(long)]
    pub(crate) quick: bool,

    /// Where bench.json and bench.svg go (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub(crate) out: PathBuf,

    /// Seconds of measured load per scenario (after a warm-up). Default 10, or 2 with --quick.
    #[arg(long)]
    pub(crate) duration: Option<u64>,

    /// Connections kept open by the load generator (the fixed concurrency).
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: u32,

    /// Threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub(crate) load_threads: u32,

    /// Route shifts to time. Default 50, or 10 with --quick.
    #[arg(long)]
    pub(crate) shifts: Option<u32>,

    /// Mesh sizes (virtual nodes) for the control-plane scaling run. Default
    /// 10,100,1000,10000, or 10,100,1000 with --quick.
    #[arg(long, value_delimiter = ',')]
    pub(crate) scale: Option<Vec<u32>>,

    /// Fleets of simulated sidecars to run against `gophermesh serve`, as SIDECARSxNODES
    /// (comma-separated; as `bench-fleet` measures them, two real Envoys beside each).
    /// Default 100x1000,1000x1000,5000x100, or 20x50 with --quick.
    #[arg(long, value_delimiter = ',', value_parser = parse_fleet, conflicts_with = "no_fleet")]
    pub(crate) fleet: Option<Vec<(u32, u32)>>,

    /// Measure no fleet.
    #[arg(long)]
    pub(crate) no_fleet: bool,

    /// Route changes timed per fleet. Default 20, or 5 with --quick.
    #[arg(long)]
    pub(crate) fleet_changes: Option<u32>,

    /// The Envoy binary. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,

    /// Where the requester and distributor binaries are. Default: next to gophermesh.
    #[arg(long, env = "GOPHERMESH_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,
}

/// How the CLI reaches a running `gophermesh up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ControlArgs {
    /// The control API of the running mesh.
    #[arg(
        long,
        env = "GOPHERMESH_CONTROL_URL",
        default_value = "http://127.0.0.1:9990"
    )]
    pub(crate) control_url: String,

    /// `up`'s state directory, where it wrote the control token (`control-token`) that
    /// changes must carry.
    #[arg(long, env = "GOPHERMESH_STATE_DIR", default_value = ".gophermesh")]
    pub(crate) state_dir: PathBuf,

    /// The control token itself, instead of reading it from the state directory.
    #[arg(long, env = "GOPHERMESH_CONTROL_TOKEN", hide_env_values = true)]
    pub(crate) control_token: Option<String>,
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

#[derive(Debug, Clone, Args)]
pub(crate) struct BootstrapArgs {
    /// The virtual node: its ARN (arn:aws:appmesh:REGION:ACCOUNT:mesh/M/virtualNode/N) or
    /// its name (mesh/M/virtualNode/N).
    #[arg(long, env = "APPMESH_RESOURCE_ARN")]
    pub(crate) resource_arn: Option<String>,

    /// The older name for the node, read when APPMESH_RESOURCE_ARN is not set.
    #[arg(long, env = "APPMESH_VIRTUAL_NODE_NAME", hide = true)]
    pub(crate) virtual_node_name: Option<String>,

    /// Envoy's node cluster; default: the node id.
    #[arg(long, env = "APPMESH_RESOURCE_CLUSTER")]
    pub(crate) resource_cluster: Option<String>,

    /// The control plane: HOST:PORT (spoken to over TLS) or unix://PATH (plain gRPC).
    #[arg(long, env = "APPMESH_XDS_ENDPOINT")]
    pub(crate) xds_endpoint: String,

    /// Envoy's admin port (on 127.0.0.1).
    #[arg(long, env = "ENVOY_ADMIN_ACCESS_PORT", default_value_t = 9901)]
    pub(crate) admin_port: u16,

    /// The CA bundle the control plane's certificate is checked against (the agent's
    /// image trusts /etc/pki/tls/cert.pem).
    #[arg(
        long,
        env = "APPMESH_XDS_CA_FILE",
        default_value = "/etc/pki/tls/cert.pem"
    )]
    pub(crate) ca_file: PathBuf,

    /// Write the bootstrap here instead of to standard output.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchFleetArgs {
    /// Fleet sizes, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub(crate) clients: Vec<u32>,

    /// Virtual nodes in the generated mesh (every sidecar routes to all of them).
    #[arg(long, default_value_t = 100)]
    pub(crate) nodes: u32,

    /// Route changes timed per run.
    #[arg(long, default_value_t = 20)]
    pub(crate) changes: u32,

    /// Where fleet.json goes (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub(crate) out: PathBuf,

    /// Directory of the shipped task definitions (the requester's is copied).
    #[arg(long, env = "GOPHERMESH_TASKDEFS_DIR", default_value = "taskdefs")]
    pub(crate) taskdefs_dir: PathBuf,

    /// Real Envoys connected beside the simulated sidecars as tasks of the same node;
    /// after the changes, what each holds (its config dump) must equal what a simulated
    /// sidecar received, or the run fails.
    #[arg(long, default_value_t = 2)]
    pub(crate) envoys: u32,

    /// The Envoy binary. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,
}

/// A fleet of `--fleet`: SIDECARSxNODES.
fn parse_fleet(value: &str) -> Result<(u32, u32), String> {
    let parsed = value.split_once('x').and_then(|(clients, nodes)| {
        Some((clients.trim().parse().ok()?, nodes.trim().parse().ok()?))
    });
    match parsed {
        Some((clients, nodes)) if clients > 0 && nodes > 1 => Ok((clients, nodes)),
        _ => Err(format!(
            "`{value}` is not SIDECARSxNODES (for example 1000x1000: 1,000 sidecars, 1,000 virtual nodes; at least 1 sidecar and 2 nodes)"
        )),
    }
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
