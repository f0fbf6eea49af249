//! `gophermesh route set`: new weights for a running route, optionally saved to its file.
//!
//! `--save` writes only inside `--mesh-dir`, and only the file that already holds this
//! route of this mesh (found by reading the directory, never by anything the control plane
//! says), or `MESH_DIR/routes/ROUTE.json` when no file holds it and that file is not there.
//! It never writes through a link.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use meshmodel::Resource;
use serde_json::json;

use controlplane::xds::ads::short_type;
use gophermesh::api::status::{Reached, Status};
use gophermesh::progress::escape;

use super::control::{call, refused, request, url};
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
    ack_timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let route = target.route;
    if let (Some(dir), Some(mesh)) = (save, target.mesh) {
        // --save writes the route beside the files of a mesh --mesh-dir holds.
        if let Ok(loaded) = meshmodel::Mesh::load_meshes(dir) {
            let held: Vec<String> = loaded
                .iter()
                .filter_map(|m| m.name())
                .map(|n| format!("`{}`", gophermesh::progress::escape(n)))
                .collect();
            if !held.is_empty() && !loaded.iter().any(|m| m.name() == Some(mesh)) {
                bail!(
                    "--save: --mesh-dir {} holds mesh {}, not `{}`; nothing was changed",
                    dir.display(),
                    held.join(", "),
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
        let path = gophermesh::mesh_files::save_path(mesh_dir, &resource)?;
        let text = serde_json::to_string_pretty(&body["resource"])? + "\n";
        gophermesh::mesh_files::write_replacing(mesh_dir, &path, &text)
            .with_context(|| format!("--save: cannot write {}", path.display()))?;
        println!("saved to {}", path.display());
    }
    match body["version"].as_u64() {
        Some(version) if !ack_timeout.is_zero() => {
            until_reached(control, version, ack_timeout).await
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Waits up to `limit` for mesh version `version` to reach every connected Envoy, and
/// says how it went: success when all ACKed it, failure naming each Envoy that refused it
/// (with Envoy's reason) or that had not ACKed it in time.
async fn until_reached(
    control: &ControlArgs,
    version: u64,
    limit: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    loop {
        let url = url(control, "/v1/status")?;
        let (_, answer) = call(control, request(control, reqwest::Method::GET, url)?).await?;
        let status: Status = serde_json::from_value(answer)
            .map_err(|e| anyhow::anyhow!("the control API's status does not read: {e}"))?;
        match status.reached(version) {
            Reached::All => {
                println!(
                    "every connected Envoy has it ({:.0} ms)",
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(ExitCode::SUCCESS);
            }
            Reached::Refused(refused) => {
                for (node, nack) in refused {
                    eprintln!(
                        "gophermesh: Envoy {} refused mesh version {} ({}): {}",
                        escape(&node),
                        escape(&nack.version),
                        escape(short_type(&nack.type_url)),
                        escape(&nack.message)
                    );
                }
                eprintln!(
                    "gophermesh: the change is stored, but those Envoys keep their last configuration; `gophermesh status` shows them"
                );
                return Ok(ExitCode::FAILURE);
            }
            Reached::Waiting(waiting) if started.elapsed() >= limit => {
                eprintln!(
                    "gophermesh: the change is stored, but not every Envoy has ACKed it after {}: {}",
                    humantime::format_duration(limit),
                    waiting
                        .iter()
                        .map(|n| escape(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
            Reached::Waiting(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
}
