//! `gophermesh status`: processes, Envoys, route weights and the split Envoy observed.

use std::process::ExitCode;

use gophermesh::progress::escape;

use super::control::{call, request, url};
use crate::cli::ControlArgs;

pub(crate) async fn run(control: &ControlArgs, raw: bool) -> anyhow::Result<ExitCode> {
    let url = url(control, "/v1/status")?;
    let (_, s) = call(control, request(control, reqwest::Method::GET, url)?).await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "mesh {} at version {}",
        escape(s["mesh"].as_str().unwrap_or("?")),
        s["version"]
    );
    let store = &s["store"];
    match (store["durable"].as_bool(), store["writable"].as_bool()) {
        (Some(false), _) => println!("store: in memory"),
        (_, Some(true)) => println!(
            "store: durable, writing ({} failed writes, reopened {} times since start)",
            store["failed_writes"], store["reopened"]
        ),
        _ => println!(
            "store: NOT WRITING; changes are refused until it can ({} failed writes): {}",
            store["failed_writes"],
            text(&store["last_error"])
        ),
    }
    println!("\nprocesses:");
    for p in s["processes"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<8} pid {:<8} restarts {}{}",
            text(&p["name"]),
            if p["running"].as_bool() == Some(true) {
                "running"
            } else {
                "down"
            },
            p["pid"].as_u64().map_or("-".to_owned(), |x| x.to_string()),
            p["restarts"],
            p["last_exit"]
                .as_str()
                .map(|e| format!(" (last exit: {})", escape(e)))
                .unwrap_or_default()
        );
    }
    println!("\nEnvoys:");
    for (node, e) in s["envoys"].as_object().into_iter().flatten() {
        let acked: Vec<String> = e["acked"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} v{}", text(v)))
            .collect();
        println!(
            "  {:<20} {:<12} acked: {}",
            escape(node),
            if e["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "disconnected"
            },
            acked.join(", ")
        );
        for o in e["open_streams"].as_array().into_iter().flatten() {
            println!(
                "    stream {} from {} since {}{}",
                o["id"],
                text(&o["peer"]),
                text(&o["since"]),
                o["instance"]
                    .as_str()
                    .map(|i| format!(" (task {})", escape(i)))
                    .unwrap_or_default()
            );
        }
        if let Some(n) = e["last_nack"].as_object() {
            println!(
                "    last NACK ({} at version {}, {}): {}",
                escape(
                    n["type_url"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                ),
                text(&n["version"]),
                text(&n["at"]),
                text(&n["message"])
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
        println!("  {}/{}", text(&r["virtualRouter"]), text(&r["route"]));
        for t in &targets {
            let node = t["virtualNode"].as_str().unwrap_or_default();
            let w = t["weight"].as_i64().unwrap_or(0);
            let seen = observed[node].as_u64().unwrap_or(0);
            let share = |x: f64, total: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
            println!(
                "    {:<20} weight {w:>3} ({:>5.1}%)   observed {seen:>7} ({:>5.1}%)",
                escape(node),
                share(w as f64, total_w as f64),
                share(seen as f64, total_seen as f64)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON string as printable text (control characters escaped); empty when not a string.
fn text(v: &serde_json::Value) -> String {
    escape(v.as_str().unwrap_or_default())
}
