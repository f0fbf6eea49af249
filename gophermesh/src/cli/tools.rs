//! The flags of the commands that make files: `images`, `export`, `render` and `bootstrap`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::SourceArgs;
use super::run::parse_host_port;

#[derive(Debug, Subcommand)]
pub(crate) enum ImagesWhat {
    /// Build gophermesh/requester, gophermesh/distributor:v1/:v2 and the sidecar,
    /// gophermesh/gophermesh-envoy, offline with podman, FROM scratch (needs podman and
    /// runc; release binaries).
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

    /// Build only the images that are missing or were made from other builds of their
    /// binaries (as `up --containers` does before it starts).
    #[arg(long)]
    pub(crate) if_missing: bool,
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

    /// An image to run each Envoy container (the one `proxyConfiguration` names) from in
    /// place of aws-appmesh-envoy: its `image`, and nothing else, is replaced.
    #[arg(long, env = "GOPHERMESH_SIDECAR_IMAGE")]
    pub(crate) sidecar_image: Option<String>,
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

    /// The unix socket of the SDS server beside the Envoy (SPIRE's agent, say), which the
    /// mesh's `certificate.sds` and `trust.sds` secrets are asked of.
    #[arg(long, env = "APPMESH_SDS_SOCKET_PATH")]
    pub(crate) sds_socket_path: Option<String>,

    /// The xDS protocol the Envoy speaks: delta (only what changed) or sotw (state of the
    /// world, as the App Mesh agent's bootstrap).
    #[arg(long, env = "GOPHERMESH_XDS_PROTOCOL", value_enum, default_value_t)]
    pub(crate) xds_protocol: gophermesh::runtime::envoy::XdsProtocol,

    /// Write the bootstrap here instead of to standard output.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}
