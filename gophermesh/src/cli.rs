//! Every subcommand and flag of `gophermesh`.
//!
//! ```text
//! cli.rs  the command, its subcommands, and the flags several share
//! run     `up` and `serve`: the store, the APIs, Cloud Map
//! read    reading templates and manifests: parameters, pseudo parameters, mesh
//! tools   `images`, `export`, `render`, `bootstrap`
//! bench   `bench` and `bench-fleet`
//! rollout `rollout start|status|pause|resume|abort`
//! ```

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod bench;
mod read;
pub(crate) mod reference;
mod rollout;
mod run;
mod tools;

pub(crate) use bench::{BenchArgs, BenchFleetArgs};
pub(crate) use read::{ReadArgs, TemplateArgs, parse_pair};
pub(crate) use rollout::{RolloutActArgs, RolloutStartArgs, RolloutWhat};
pub(crate) use run::{ServeArgs, UpArgs};
pub(crate) use tools::{
    BootstrapArgs, ExportWhat, ImagesBuildArgs, ImagesWhat, RenderArgs, RenderWhat,
};

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
    /// Run a sidecar Envoy as the aws-appmesh-envoy image's agent runs it, from the same
    /// environment (APPMESH_RESOURCE_ARN, APPMESH_XDS_ENDPOINT, ENVOY_*, APPNET_*,
    /// HC_DISCONNECTED_TIMEOUT_S, LISTENER_DRAIN_WAIT_TIME_S): the bootstrap written, Envoy
    /// started and restarted, /status and /stats/prometheus on APPNET_AGENT_HTTP_PORT, and
    /// listeners drained on SIGTERM. A variable it cannot use stops it at once, named.
    Sidecar(SidecarArgs),
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
    /// Move a route's traffic to a new version step by step, checked on the Envoys'
    /// counts, rolled back by itself on failure.
    Rollout {
        #[command(subcommand)]
        what: RolloutWhat,
    },
    /// Print the web console's sign-in link (the console's address with the control token),
    /// so that weights can be shifted from the page.
    Console {
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Create or replace mesh resources in the running mesh: App Mesh JSON (a
    /// --cli-input-json file, or a directory of them), a CloudFormation template (YAML or
    /// JSON, `cdk synth` output too) or the EKS controller's Kubernetes manifests, told
    /// apart by content. Everything given is checked first and applied as one change.
    Apply(ApplyArgs),
    /// Write templates' or manifests' App Mesh resources as App Mesh JSON in the mesh/
    /// layout, for `up`, `validate`, `render`, `export` and the deploy scripts.
    Convert(ConvertArgs),
    /// Print the command-line reference of the book (docs/src/reference/cli.md) as
    /// Markdown, from these very flag definitions.
    #[command(hide = true)]
    Reference,
}

/// `sidecar`'s flags (everything else comes from the agent's environment).
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// The Envoy binary. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,
    /// Where the bootstrap is written.
    #[arg(
        long,
        env = "ENVOY_CONFIG_FILE",
        default_value = "/tmp/envoy-bootstrap.json"
    )]
    pub(crate) bootstrap: PathBuf,
}

/// `apply`'s flags.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// A file (or directory of App Mesh JSON files) to apply; repeatable.
    #[arg(short = 'f', long = "file", required = true)]
    pub(crate) files: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// Another stack's export, NAME=VALUE: what `Fn::ImportValue` of NAME gives
    /// (repeatable).
    #[arg(long = "import", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub(crate) imports: Vec<(String, String)>,
    /// Print what would be created, updated and left alone (as App Mesh JSON), and change
    /// nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not list what is not applied (other resource types and kinds).
    #[arg(long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) control: ControlArgs,
}

/// `convert`'s flags.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// A template or manifest to convert; repeatable.
    #[arg(short = 'f', long = "file", required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// The directory to write (new, or empty): mesh.json, virtual-nodes/, routes/, ...
    /// (a directory per mesh when there are several).
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// Another stack's export, NAME=VALUE: what `Fn::ImportValue` of NAME gives
    /// (repeatable).
    #[arg(long = "import", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub(crate) imports: Vec<(String, String)>,
    /// Do not list what is not converted (other resource types and kinds).
    #[arg(long)]
    pub(crate) quiet: bool,
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
        /// The mesh of the route: needed when the control plane holds several (`status`
        /// lists them); the only one by default.
        #[arg(long)]
        mesh: Option<String>,
        /// Also write the new weights to the route's file under --mesh-dir (the file that
        /// holds this route, or MESH_DIR/routes/ROUTE.json).
        #[arg(long)]
        save: bool,
        /// The mesh directory --save writes into.
        #[arg(long, env = "GOPHERMESH_MESH_DIR", default_value = "mesh")]
        mesh_dir: PathBuf,
        /// How long to wait for every connected Envoy to ACK the change (0s: do not wait).
        /// An Envoy that refuses it (NACK), or one that has not ACKed it by then, makes
        /// `route set` exit non-zero, naming it.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ack_timeout: std::time::Duration,
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
