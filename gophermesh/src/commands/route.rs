//! `gophermesh route set`: new weights for a running route, optionally saved to its file.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::control::{call, client, refused};
use crate::cli::ControlArgs;

pub(crate) async fn run(
    control: &ControlArgs,
    router: Option<&str>,
    route: &str,
    weights: &[(String, i64)],
    save: bool,
) -> anyhow::Result<ExitCode> {
    let weights: BTreeMap<&str, i64> = weights.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let mut url = format!(
        "{}/v1/routes/{route}/weights",
        control.control_url.trim_end_matches('/')
    );
    if let Some(r) = router {
        url.push_str(&format!("?router={r}"));
    }
    let (status, body) = call(
        control,
        client()?.put(url).json(&json!({ "weights": weights })),
    )
    .await?;
    if status != 200 {
        return Ok(refused(&body));
    }
    let split: Vec<String> = weights.iter().map(|(n, w)| format!("{n}={w}")).collect();
    println!(
        "route {route}: {} (mesh version {})",
        split.join(" "),
        body["version"]
    );
    if save {
        let origin = body["origin"].as_str().unwrap_or_default();
        if origin.starts_with('<') || origin.is_empty() {
            eprintln!("--save: the route did not come from a file; nothing written");
        } else {
            let text = serde_json::to_string_pretty(&body["resource"])? + "\n";
            std::fs::write(origin, text)
                .with_context(|| format!("--save: cannot write {origin}"))?;
            println!("saved to {origin}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
