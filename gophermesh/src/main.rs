//! `gophermesh`: check the mesh and task definitions, render them for AWS, and run the
//! mesh on this machine with real Envoy sidecars.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use common::config::TelemetryArgs;
use gophermesh::cli::{Cli, Command, ImagesWhat, RenderWhat, RouteWhat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => gophermesh::validate::run(&args),
        Command::Render {
            what: RenderWhat::Taskdefs(args),
        } => gophermesh::render::run(&args),
        Command::Up(args) => {
            let telemetry = TelemetryArgs {
                log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
                ..TelemetryArgs::default()
            };
            let guard = match common::telemetry::init("gophermesh", &telemetry) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("gophermesh: {e}");
                    return ExitCode::from(2);
                }
            };
            let result = gophermesh::up::run(&args).await;
            guard.shutdown();
            result
        }
        Command::Images {
            what: ImagesWhat::Build(args),
        } => gophermesh::images::run(&args),
        Command::Bench(args) => gophermesh::bench::run(&args).await,
        Command::BenchHello { listen } => gophermesh::hello::run(listen).await,
        Command::Status { control, json } => gophermesh::client::status(&control, json).await,
        Command::Route {
            what:
                RouteWhat::Set {
                    route,
                    weights,
                    router,
                    save,
                    control,
                },
        } => {
            gophermesh::client::route_set(&control, router.as_deref(), &route, &weights, save).await
        }
        Command::Apply { file, control } => gophermesh::client::apply(&control, &file).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gophermesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
