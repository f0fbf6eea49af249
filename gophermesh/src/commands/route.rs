//! `gophermesh route set`: new weights for a running route, optionally saved to its file.
//!
//! `--save` writes only inside `--mesh-dir`, and only the file that already holds this
//! route of this mesh (found by reading the directory, never by anything the control plane
//! says), or `MESH_DIR/routes/ROUTE.json` when no file holds it and that file is not there.
//! It never writes through a link.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use meshmodel::Resource;
use serde_json::json;

use super::control::{call, refused, request};
use crate::cli::ControlArgs;

/// Which route: its name, its router when several have one of that name, and its mesh
/// when the control plane holds several.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) mesh: Option<&'a str>,
    pub(crate) router: Option<&'a str>,
    pub(crate) route: &'a str,
}

pub(crate) async fn run(
    control: &ControlArgs,
    target: &Target<'_>,
    weights: &[(String, i64)],
    save: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let route = target.route;
    if let (Some(dir), Some(mesh)) = (save, target.mesh) {
        // --save writes the route beside the files of --mesh-dir's own mesh.
        if let Ok(loaded) = meshmodel::Mesh::load_dir(dir) {
            if let Some(held) = loaded.name().filter(|held| *held != mesh) {
                bail!(
                    "--save: --mesh-dir {} holds mesh `{}`, not `{}`; nothing was changed",
                    dir.display(),
                    gophermesh::progress::escape(held),
                    gophermesh::progress::escape(mesh)
                );
            }
        }
    }
    let weights: BTreeMap<&str, i64> = weights.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let mut url = reqwest::Url::parse(control.control_url.trim_end_matches('/'))
        .with_context(|| format!("--control-url `{}` is not a URL", control.control_url))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--control-url cannot take a path"))?
        .extend(["v1", "routes", route, "weights"]);
    if let Some(r) = target.router {
        url.query_pairs_mut().append_pair("router", r);
    }
    if let Some(m) = target.mesh {
        url.query_pairs_mut().append_pair("mesh", m);
    }
    let (status, body) = call(
        control,
        request(control, reqwest::Method::PUT, url)?.json(&json!({ "weights": weights })),
    )
    .await?;
    if status != 200 {
        return Ok(refused(&body));
    }
    let split: Vec<String> = weights.iter().map(|(n, w)| format!("{n}={w}")).collect();
    let of_mesh = target
        .mesh
        .map(|m| format!(" of mesh {}", gophermesh::progress::escape(m)))
        .unwrap_or_default();
    println!(
        "route {}{of_mesh}: {} (mesh version {})",
        gophermesh::progress::escape(route),
        gophermesh::progress::escape(&split.join(" ")),
        body["version"]
    );
    if let Some(mesh_dir) = save {
        let resource = Resource::from_value("<route set>", body["resource"].clone())
            .map_err(|p| anyhow::anyhow!("--save: the control plane answered no route: {p}"))?;
        let path = save_path(mesh_dir, &resource)?;
        let text = serde_json::to_string_pretty(&body["resource"])? + "\n";
        write_replacing(&path, &text)
            .with_context(|| format!("--save: cannot write {}", path.display()))?;
        println!("saved to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The file under `mesh_dir` that holds `resource`, or the one it would get.
fn save_path(mesh_dir: &Path, resource: &Resource) -> anyhow::Result<PathBuf> {
    let key = resource.key();
    let files = meshmodel::mesh::json_files(mesh_dir)
        .with_context(|| format!("--save: cannot read --mesh-dir {}", mesh_dir.display()))?;
    for file in files {
        let Ok(text) = meshmodel::input::read_text(&file, meshmodel::input::MAX_FILE) else {
            continue;
        };
        if let Ok(found) = Resource::parse(&file.display().to_string(), &text) {
            if found.key() == key && found.mesh_name() == resource.mesh_name() {
                return Ok(file);
            }
        }
    }
    let meshmodel::Key::Route(_, name) = &key else {
        bail!("--save: only routes are saved");
    };
    if !file_safe(name) {
        bail!(
            "--save: no file under {} holds route `{}`, and its name cannot be a file name (letters, digits, `-`, `_` and `.` only, not starting with `.`); nothing written",
            mesh_dir.display(),
            name.escape_debug()
        );
    }
    let path = mesh_dir.join("routes").join(format!("{name}.json"));
    if path.exists() {
        bail!(
            "--save: {} holds another resource (another mesh's route of that name?); nothing written",
            path.display()
        );
    }
    Ok(path)
}

fn file_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes `text` to `path` by renaming a new file over it, refusing when `path` is a link.
fn write_replacing(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            bail!("it is not a regular file (a link or a device); nothing written");
        }
    }
    let dir = path.parent().context("a file has a directory")?;
    std::fs::create_dir_all(dir)?;
    let fresh = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&fresh, text)?;
    std::fs::rename(&fresh, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_file_names() {
        for ok in ["distributor", "route-1", "a_b.c"] {
            assert!(file_safe(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "../x", "a/b", "$(touch x)", "a b", "é"] {
            assert!(!file_safe(bad), "{bad}");
        }
    }
}
