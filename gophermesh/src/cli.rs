//! Every subcommand and flag of `gophermesh`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run an App Mesh-style service mesh: check its JSON, render it for AWS, or run it here
/// with real Envoy sidecars.
#[derive(Debug, Parser)]
#[command(name = "gophermesh", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check mesh/ and taskdefs/ for what the AWS API cannot catch: dangling references,
    /// all-zero weights, ports and users that disagree between a task and its node.
    Validate(SourceArgs),
    /// Fill the ${AWS_ACCOUNT_ID}, ${AWS_REGION} and ${IMAGE_REPOSITORY} placeholders.
    Render {
        #[command(subcommand)]
        what: RenderWhat,
    },
}

/// Where the mesh resources and the task definitions are.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Directory of App Mesh resource files (one --cli-input-json per file).
    #[arg(long, env = "GOPHERMESH_MESH_DIR", default_value = "mesh")]
    pub mesh_dir: PathBuf,

    /// Directory of ECS task definitions (register-task-definition --cli-input-json).
    #[arg(long, env = "GOPHERMESH_TASKDEFS_DIR", default_value = "taskdefs")]
    pub taskdefs_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum RenderWhat {
    /// Write the task definitions with placeholders filled from the environment.
    Taskdefs(RenderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Directory of task definitions with ${...} placeholders.
    #[arg(long, env = "GOPHERMESH_TASKDEFS_DIR", default_value = "taskdefs")]
    pub taskdefs_dir: PathBuf,

    /// Where to write the rendered files (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}
