//! `gophermesh convert -f FILE... --out DIR`: templates' and manifests' App Mesh
//! resources written as App Mesh JSON in the mesh/ layout (checked first as a mesh
//! directory is, so that `up --mesh-dir DIR` takes what is written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use gophermesh::mesh_files::{file_safe, write_replacing};
use meshmodel::{Key, Mesh, Resource};

use crate::cli::ConvertArgs;

pub(crate) fn run(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let options = args.read.options(&args.imports);
    let checked = meshmodel::import::read_paths(&args.files, &options).and_then(|read| {
        if !args.quiet {
            super::apply::say_not_applied(&read);
        }
        let resources = read.into_iter().flat_map(|i| i.resources).collect();
        Mesh::from_resources("what was given", resources)
    });
    let meshes = match checked {
        Ok(meshes) => meshes,
        Err(problems) => {
            return Ok(super::apply::say_problems(
                "not converted; nothing was written:",
                &problems,
            ));
        }
    };
    let out = &args.out;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "--out {}: not empty; give a new or empty directory (nothing written)",
            out.display()
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot make it", out.display()))?;
    let several = meshes.len() > 1;
    let mut written = 0;
    for mesh in &meshes {
        let name = mesh.name().unwrap_or_default();
        let dir = if several { out.join(name) } else { out.clone() };
        for (path, resource) in layout(&dir, mesh)? {
            let text = serde_json::to_string_pretty(&resource.to_json())? + "\n";
            write_replacing(out, &path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written += 1;
        }
    }
    println!(
        "wrote {written} resources of {} mesh(es) to {} (check them: gophermesh validate --mesh-dir {})",
        meshes.len(),
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where each resource of `mesh` goes under `dir`: `mesh.json`, `virtual-nodes/NAME.json`,
/// ...; a route or gateway route whose name another of the mesh shares is named
/// `PARENT.NAME.json`.
fn layout(dir: &Path, mesh: &Mesh) -> anyhow::Result<Vec<(PathBuf, Resource)>> {
    let resources: Vec<Resource> = mesh.resources().into_iter().map(|(_, r)| r).collect();
    let keys: Vec<Key> = resources.iter().map(Resource::key).collect();
    let shared = |key: &Key| {
        keys.iter()
            .filter(|k| match (k, key) {
                (Key::Route(_, a), Key::Route(_, b))
                | (Key::GatewayRoute(_, a), Key::GatewayRoute(_, b)) => a == b,
                _ => false,
            })
            .count()
            > 1
    };
    let mut out = Vec::new();
    for resource in resources {
        let key = resource.key();
        let twin = shared(&key);
        let (folder, file) = match key {
            Key::Mesh => (None, "mesh".to_owned()),
            Key::VirtualNode(n) => (Some("virtual-nodes"), n),
            Key::VirtualService(n) => (Some("virtual-services"), n),
            Key::VirtualRouter(n) => (Some("virtual-routers"), n),
            Key::VirtualGateway(n) => (Some("virtual-gateways"), n),
            Key::Route(router, n) if twin => (Some("routes"), format!("{router}.{n}")),
            Key::Route(_, n) => (Some("routes"), n),
            Key::GatewayRoute(gateway, n) if twin => {
                (Some("gateway-routes"), format!("{gateway}.{n}"))
            }
            Key::GatewayRoute(_, n) => (Some("gateway-routes"), n),
        };
        if !file_safe(&file) {
            bail!(
                "{}: its name cannot be a file name (letters, digits, `-`, `_` and `.` only, not starting with `.`); nothing more written",
                resource.describe()
            );
        }
        let path = match folder {
            Some(f) => dir.join(f).join(format!("{file}.json")),
            None => dir.join(format!("{file}.json")),
        };
        out.push((path, resource));
    }
    Ok(out)
}
