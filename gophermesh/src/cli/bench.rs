//! The flags of `bench` and `bench-fleet`.

use clap::Args;
use std::path::PathBuf;

use super::SourceArgs;

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

    /// Also run the mesh with `up --containers` (as root, with podman), every Envoy from
    /// the sidecar image, in the same turns as `mesh`; and report the sidecar's image size
    /// against Envoy's binary, its start-to-LIVE time and memory beside Envoy run by hand.
    #[arg(long)]
    pub(crate) containers: bool,

    /// Route changes timed per fleet. Default 20, or 5 with --quick.
    #[arg(long)]
    pub(crate) fleet_changes: Option<u32>,

    /// The xDS protocols the simulated sidecars of each fleet speak, one run each
    /// (comma-separated: sotw, delta).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "sotw,delta")]
    pub(crate) fleet_protocols: Vec<gophermesh::runtime::envoy::XdsProtocol>,

    /// The Envoy binary. Default: `envoy` on PATH, else .venv/bin/envoy.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,

    /// Where the requester and distributor binaries are. Default: next to gophermesh.
    #[arg(long, env = "GOPHERMESH_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,
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

    /// The xDS protocols the simulated sidecars speak, one run per fleet size each
    /// (comma-separated: sotw, delta).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "sotw,delta")]
    pub(crate) protocols: Vec<gophermesh::runtime::envoy::XdsProtocol>,

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

    /// With 2 or more: after each fleet, the same fleet again over this many `serve`
    /// replicas sharing a DynamoDB table (moto's, which the bench starts on loopback:
    /// `moto_server` must be on PATH), split among them; one replica is then killed and
    /// its sidecars connect to the others. 1: no replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) replicas: u32,
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
