//! `gophermesh bench`: flags to [`BenchConfig`], then the library's benchmark.

use std::process::ExitCode;

use gophermesh::config::{BenchConfig, Source};

use crate::cli::BenchArgs;

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let config = BenchConfig {
        source: Source {
            mesh_dir: args.source.mesh_dir,
            taskdefs_dir: args.source.taskdefs_dir,
            files: Vec::new(),
            read: meshmodel::import::Options::default(),
        },
        quick: args.quick,
        out: args.out,
        duration: args.duration.unwrap_or(if args.quick { 2 } else { 10 }),
        concurrency: args.concurrency,
        load_threads: args.load_threads,
        shifts: args.shifts.unwrap_or(if args.quick { 10 } else { 50 }),
        scale: args.scale.unwrap_or_else(|| {
            if args.quick {
                vec![10, 100, 1000]
            } else {
                vec![10, 100, 1000, 10_000]
            }
        }),
        fleet: match (args.no_fleet, args.fleet) {
            (true, _) => Vec::new(),
            (false, Some(fleet)) => fleet,
            (false, None) if args.quick => vec![(20, 50)],
            (false, None) => vec![(100, 1000), (1000, 1000), (5000, 100)],
        },
        fleet_changes: args
            .fleet_changes
            .unwrap_or(if args.quick { 5 } else { 20 }),
        fleet_protocols: args.fleet_protocols,
        containers: args.containers,
        envoy_bin: args.envoy_bin,
        bin_dir: args.bin_dir,
    };
    gophermesh::bench::run(&config).await
}
