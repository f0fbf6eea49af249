//! `gophermesh`: check the mesh and task definitions, render them for AWS, and run the
//! mesh on this machine with real Envoy sidecars.
//!
//! The binary is the command layer: `cli` (every flag) and `commands/` (one file per
//! subcommand, turning flags into the library's typed configuration). The library
//! (`gophermesh`, see its `lib.rs`) never imports it.
#![forbid(unsafe_code)]

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use common::config::TelemetryArgs;

use cli::{Cli, Command, ImagesWhat, RenderWhat, RouteWhat};

/// Runs a long-lived command with logging on (`RUST_LOG`, default `info`), flushed at the end.
async fn logged(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    let telemetry = TelemetryArgs {
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        ..TelemetryArgs::default()
    };
    let guard = common::telemetry::init("gophermesh", &telemetry)?;
    let result = command.await;
    guard.shutdown();
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Render {
            what: RenderWhat::Taskdefs(args),
        } => commands::render::run(&args),
        Command::Up(args) => {
            logged(async move {
                match commands::up::config(args) {
                    Ok(config) => commands::up::run(config).await,
                    Err(e) => Err(e),
                }
            })
            .await
        }
        Command::Export { what } => commands::export::run(&what),
        Command::Images {
            what: ImagesWhat::Build(args),
        } => commands::images::run(&args),
        Command::Bench(args) => commands::bench::run(args).await,
        Command::BenchHello {
            listen,
            distributor,
            forward,
            proxy,
        } => {
            match gophermesh::bench::hello::Answer::from_flags(
                distributor,
                forward.as_deref(),
                proxy.as_deref(),
            ) {
                Ok(answer) => gophermesh::bench::hello::run(listen, answer).await,
                Err(e) => Err(e),
            }
        }
        Command::Status { control, json } => commands::status::run(&control, json).await,
        Command::Route {
            what:
                RouteWhat::Set {
                    route,
                    weights,
                    router,
                    mesh,
                    save,
                    mesh_dir,
                    ack_timeout,
                    control,
                },
        } => {
            let save = save.then_some(mesh_dir.as_path());
            let route = commands::route::Target {
                mesh: mesh.as_deref(),
                router: router.as_deref(),
                route: &route,
            };
            commands::route::run(&control, &route, &weights, save, ack_timeout).await
        }
        Command::Rollout { what } => commands::rollout::run(what).await,
        Command::Apply(args) => commands::apply::run(&args).await,
        Command::Convert(args) => commands::convert::run(&args),
        Command::Console { control } => commands::console::run(&control),
        Command::Reference => cli::reference::run(&<Cli as clap::CommandFactory>::command()),
        Command::Serve(args) => logged(commands::serve::run(args)).await,
        Command::Bootstrap(args) => commands::bootstrap::run(&args),
        Command::Sidecar(args) => logged(commands::sidecar::run(args)).await,
        Command::BenchFleet(args) => {
            gophermesh::bench::fleet::run(&gophermesh::bench::fleet::FleetConfig {
                clients: args.clients,
                nodes: args.nodes,
                changes: args.changes,
                protocols: args.protocols,
                out: args.out,
                taskdefs_dir: args.taskdefs_dir,
                envoys: args.envoys,
                envoy_bin: args.envoy_bin,
                replicas: args.replicas,
            })
            .await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gophermesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
