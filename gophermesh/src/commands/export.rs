//! `gophermesh export service-connect|lattice|gateway-api`: the mesh in another service's terms, and
//! what it loses.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::export;
use gophermesh::export::lattice_apply as lattice;

use crate::cli::ExportWhat;

/// The script `export lattice` writes beside its inputs.
const LATTICE_APPLY: &str = include_str!("../../../deploy/lattice-apply.sh");

/// Writes the files (unless `--strict` and something is lost), then prints each loss.
pub(crate) fn run(what: &ExportWhat) -> anyhow::Result<ExitCode> {
    let (args, target, name) = match what {
        ExportWhat::ServiceConnect(a) => (a, Target::ServiceConnect, "ECS Service Connect"),
        ExportWhat::Lattice(a) => (&a.export, Target::Lattice, "VPC Lattice"),
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
    let calls = match what {
        ExportWhat::Lattice(a) if a.apply || a.teardown => Some(a),
        _ => None,
    };
    if let Some(a) = calls {
        if a.teardown {
            return lattice_teardown(&mesh);
        }
        if a.vpc_id.as_deref().is_none_or(str::is_empty) {
            anyhow::bail!("--apply needs --vpc-id (or VPC_ID): the VPC the target groups are in");
        }
    }
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
    if let Some(a) = calls {
        if a.export.out.is_some() {
            write(&out, &out_dir, target)?;
        }
        let vpc = a.vpc_id.as_deref().unwrap_or_default();
        return lattice_apply(&mesh, vpc);
    }
    write(&out, &out_dir, target)?;
    println!(
        "{} file(s); {} App Mesh field(s) not carried (listed above)",
        out.files.len(),
        out.losses.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `export lattice --apply`: the calls made through the AWS CLI.
fn lattice_apply(mesh: &meshmodel::Mesh, vpc: &str) -> anyhow::Result<ExitCode> {
    let aws = lattice::AwsCli::find()?;
    let name = mesh.name().unwrap_or("mesh");
    let (steps, _) = export::lattice_steps(mesh);
    println!(
        "==> applying mesh {name} to VPC Lattice ({} resources, target groups in {vpc}) with the AWS CLI",
        steps.len()
    );
    let tally = lattice::apply(&aws, name, &steps, vpc)?;
    println!("done: {tally}");
    Ok(ExitCode::SUCCESS)
}

/// `export lattice --teardown`: this mesh's Lattice resources deleted.
fn lattice_teardown(mesh: &meshmodel::Mesh) -> anyhow::Result<ExitCode> {
    let aws = lattice::AwsCli::find()?;
    let name = mesh.name().unwrap_or("mesh");
    println!(
        "==> deleting the VPC Lattice resources tagged {}={name} with the AWS CLI",
        export::LATTICE_MESH_TAG
    );
    let tally = lattice::teardown(&aws, name)?;
    if tally.deleted == 0 {
        println!("done: nothing of mesh {name} was there");
    } else {
        println!("done: {} deleted", tally.deleted);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the export's files (and, for Lattice, apply.sh) into `out_dir`.
fn write(out: &export::Export, out_dir: &std::path::Path, target: Target) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)
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
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    ServiceConnect,
    Lattice,
    GatewayApi,
}
