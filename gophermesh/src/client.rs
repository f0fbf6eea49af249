//! The CLI side of the control API: `status`, `route set`, `apply`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::ControlArgs;

async fn call(
    control: &ControlArgs,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach the control API at {}: is `gophermesh up` running? (--control-url / GOPHERMESH_CONTROL_URL)",
            control.control_url
        )
    })?;
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .context("the control API answered something that is not JSON")?;
    Ok((status, body))
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

/// Prints refused changes' problems; exit 1.
fn refused(body: &Value) -> ExitCode {
    eprintln!("refused; nothing was changed:");
    for p in body["problems"].as_array().into_iter().flatten() {
        eprintln!("  {}", p.as_str().unwrap_or_default());
    }
    ExitCode::FAILURE
}

pub async fn route_set(
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

pub async fn apply(control: &ControlArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let origin = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {origin}"))?;
    let resource: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "{origin}: not valid JSON (line {}, column {}): {e}; nothing was changed",
                e.line(),
                e.column()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let url = format!("{}/v1/resources", control.control_url.trim_end_matches('/'));
    let (status, body) = call(
        control,
        client()?
            .post(url)
            .json(&json!({ "origin": origin, "resource": resource })),
    )
    .await?;
    if status != 200 {
        return Ok(refused(&body));
    }
    println!("applied {origin} (mesh version {})", body["version"]);
    Ok(ExitCode::SUCCESS)
}

pub async fn status(control: &ControlArgs, raw: bool) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/status", control.control_url.trim_end_matches('/'));
    let (_, s) = call(control, client()?.get(url)).await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "mesh {} at version {}",
        s["mesh"].as_str().unwrap_or("?"),
        s["version"]
    );
    println!("\nprocesses:");
    for p in s["processes"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<8} pid {:<8} restarts {}{}",
            p["name"].as_str().unwrap_or_default(),
            if p["running"].as_bool() == Some(true) {
                "running"
            } else {
                "down"
            },
            p["pid"].as_u64().map_or("-".to_owned(), |x| x.to_string()),
            p["restarts"],
            p["last_exit"]
                .as_str()
                .map(|e| format!(" (last exit: {e})"))
                .unwrap_or_default()
        );
    }
    println!("\nEnvoys:");
    for (node, e) in s["envoys"].as_object().into_iter().flatten() {
        let acked: Vec<String> = e["acked"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} v{}", v.as_str().unwrap_or_default()))
            .collect();
        println!(
            "  {:<20} {:<12} acked: {}",
            node,
            if e["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "disconnected"
            },
            acked.join(", ")
        );
        if let Some(n) = e["last_nack"].as_object() {
            println!(
                "    last NACK ({} at version {}, {}): {}",
                n["type_url"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default(),
                n["version"].as_str().unwrap_or_default(),
                n["at"].as_str().unwrap_or_default(),
                n["message"].as_str().unwrap_or_default()
            );
        }
    }
    println!("\nroutes (configured weights, and requests Envoy has completed per target):");
    let observed = &s["observed"];
    for r in s["routes"].as_array().into_iter().flatten() {
        let targets = r["targets"].as_array().cloned().unwrap_or_default();
        let total_w: i64 = targets.iter().filter_map(|t| t["weight"].as_i64()).sum();
        let total_seen: u64 = targets
            .iter()
            .filter_map(|t| observed[t["virtualNode"].as_str().unwrap_or_default()].as_u64())
            .sum();
        println!(
            "  {}/{}",
            r["virtualRouter"].as_str().unwrap_or_default(),
            r["route"].as_str().unwrap_or_default()
        );
        for t in &targets {
            let node = t["virtualNode"].as_str().unwrap_or_default();
            let w = t["weight"].as_i64().unwrap_or(0);
            let seen = observed[node].as_u64().unwrap_or(0);
            let share = |x: f64, total: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
            println!(
                "    {node:<20} weight {w:>3} ({:>5.1}%)   observed {seen:>7} ({:>5.1}%)",
                share(w as f64, total_w as f64),
                share(seen as f64, total_seen as f64)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
