//! `gophermesh export service-connect`: the mesh as ECS Service Connect, and what it loses.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::export;

use crate::cli::ExportArgs;

/// Writes the files (unless `--strict` and something is lost), then prints each loss.
pub(crate) fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    if args.features {
        print!("{}", export::features_table());
        return Ok(ExitCode::SUCCESS);
    }
    let (mesh, tasks) =
        meshmodel::load(&args.source.mesh_dir, &args.source.taskdefs_dir).map_err(|p| {
            anyhow::anyhow!(
                "the mesh does not validate, so nothing was exported:\n  {}",
                p.0.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )
        })?;
    let out = export::service_connect(&mesh, &tasks);
    for loss in &out.losses {
        eprintln!("lost: {loss}");
    }
    if args.strict && !out.losses.is_empty() {
        eprintln!(
            "{} App Mesh field(s) cannot be carried by ECS Service Connect (--strict); nothing was written",
            out.losses.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create it", args.out.display()))?;
    for (name, doc) in &out.files {
        let path = args.out.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(doc)? + "\n")
            .with_context(|| format!("--out: cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "{} file(s); {} App Mesh field(s) not carried (listed above)",
        out.files.len(),
        out.losses.len()
    );
    Ok(ExitCode::SUCCESS)
}
