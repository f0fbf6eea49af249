//! `gophermesh export service-connect|lattice|gateway-api`: the mesh in another service's terms, and
//! what it loses.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::export;

use crate::cli::ExportWhat;

/// The script `export lattice` writes beside its inputs.
const LATTICE_APPLY: &str = include_str!("../../../deploy/lattice-apply.sh");

/// Writes the files (unless `--strict` and something is lost), then prints each loss.
pub(crate) fn run(what: &ExportWhat) -> anyhow::Result<ExitCode> {
    let (args, target, name) = match what {
        ExportWhat::ServiceConnect(a) => (a, Target::ServiceConnect, "ECS Service Connect"),
        ExportWhat::Lattice(a) => (a, Target::Lattice, "VPC Lattice"),
        ExportWhat::GatewayApi(a) => (a, Target::GatewayApi, "the Gateway API"),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| {
        std::path::PathBuf::from(match target {
            Target::ServiceConnect => "export/service-connect",
            Target::Lattice => "export/lattice",
            Target::GatewayApi => "export/gateway-api",
        })
    });
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
    let out = match target {
        Target::ServiceConnect => export::service_connect(&mesh, &tasks),
        Target::Lattice => export::lattice(&mesh),
        Target::GatewayApi => export::gateway_api(&mesh),
    };
    for loss in &out.losses {
        eprintln!("lost: {loss}");
    }
    if args.strict && !out.losses.is_empty() {
        eprintln!(
            "{} App Mesh field(s) cannot be carried by {name} (--strict); nothing was written",
            out.losses.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("--out {}: cannot create it", out_dir.display()))?;
    for (file, doc) in &out.files {
        let path = out_dir.join(file);
        let text = match target {
            Target::GatewayApi => serde_yaml::to_string(doc)?,
            _ => serde_json::to_string_pretty(doc)? + "\n",
        };
        std::fs::write(&path, text)
            .with_context(|| format!("--out: cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if target == Target::Lattice {
        use std::os::unix::fs::PermissionsExt as _;
        let script = out_dir.join("apply.sh");
        std::fs::write(&script, LATTICE_APPLY)
            .with_context(|| format!("--out: cannot write {}", script.display()))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        println!(
            "wrote {} (VPC_ID=vpc-... {} makes the calls)",
            script.display(),
            script.display()
        );
    }
    println!(
        "{} file(s); {} App Mesh field(s) not carried (listed above)",
        out.files.len(),
        out.losses.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    ServiceConnect,
    Lattice,
    GatewayApi,
}
