//! `gophermesh`: check the mesh and task definitions, render them for AWS, and run the
//! mesh on this machine with real Envoy sidecars.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use gophermesh::cli::{Cli, Command, RenderWhat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => gophermesh::validate::run(&args),
        Command::Render {
            what: RenderWhat::Taskdefs(args),
        } => gophermesh::render::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gophermesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
