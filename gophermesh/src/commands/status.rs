//! `gophermesh status`: processes, Envoys, route weights and the split Envoy observed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use gophermesh::progress::escape;

use super::control::{call, request, url};
use crate::cli::ControlArgs;

/// `println!` into a `String` (writing to a `String` cannot fail).
macro_rules! out_line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

pub(crate) async fn run(control: &ControlArgs, raw: bool) -> anyhow::Result<ExitCode> {
    let mut out = String::new();
    let url = url(control, "/v1/status")?;
    let (_, s) = call(control, request(control, reqwest::Method::GET, url)?).await?;
    if raw {
        out_line!(out, "{}", serde_json::to_string_pretty(&s)?);
        let _ = std::io::stdout().write_all(out.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    out_line!(
        out,
        "mesh {} at version {}",
        escape(s["mesh"].as_str().unwrap_or("?")),
        s["version"]
    );
    let store = &s["store"];
    match (store["durable"].as_bool(), store["writable"].as_bool()) {
        (Some(false), _) => out_line!(out, "store: in memory"),
        (_, Some(true)) => out_line!(
            out,
            "store: {}, writing ({} failed writes, reopened {} times since start)",
            text(&store["location"]),
            store["failed_writes"],
            store["reopened"]
        ),
        _ => out_line!(
            out,
            "store: NOT WRITING; changes are refused until it can ({} failed writes): {}",
            store["failed_writes"],
            text(&store["last_error"])
        ),
    }
    out_line!(out, "\nprocesses:");
    for p in s["processes"].as_array().into_iter().flatten() {
        out_line!(
            out,
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
    out_line!(out, "\nEnvoys:");
    for (node, e) in s["envoys"].as_object().into_iter().flatten() {
        let acked: Vec<String> = e["acked"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} v{}", text(v)))
            .collect();
        out_line!(
            out,
            "  {:<20} {:<12} acked: {}",
            escape(node),
            if e["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "disconnected"
            },
            acked.join(", ")
        );
        if let Some(problem) = e["problem"].as_str() {
            out_line!(out, "    gets nothing: {}", escape(problem));
        }
        for o in e["open_streams"].as_array().into_iter().flatten() {
            out_line!(
                out,
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
            out_line!(
                out,
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
    out_line!(
        out,
        "\nroutes (configured weights, and requests Envoy has completed per target):"
    );
    let observed = &s["observed"];
    for r in s["routes"].as_array().into_iter().flatten() {
        let targets = r["targets"].as_array().cloned().unwrap_or_default();
        let total_w: i64 = targets.iter().filter_map(|t| t["weight"].as_i64()).sum();
        let total_seen: u64 = targets
            .iter()
            .filter_map(|t| observed[t["virtualNode"].as_str().unwrap_or_default()].as_u64())
            .sum();
        out_line!(out, "  {}/{}", text(&r["virtualRouter"]), text(&r["route"]));
        for t in &targets {
            let node = t["virtualNode"].as_str().unwrap_or_default();
            let w = t["weight"].as_i64().unwrap_or(0);
            let seen = observed[node].as_u64().unwrap_or(0);
            let share = |x: f64, total: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
            out_line!(
                out,
                "    {:<20} weight {w:>3} ({:>5.1}%)   observed {seen:>7} ({:>5.1}%)",
                escape(node),
                share(w as f64, total_w as f64),
                share(seen as f64, total_seen as f64)
            );
        }
    }
    // The other meshes' routes (traffic is observed for the first mesh's tasks only).
    for m in s["meshes"].as_array().into_iter().flatten().skip(1) {
        out_line!(
            out,
            "\nroutes of mesh {} (`route set --mesh {}` changes them):",
            text(&m["name"]),
            text(&m["name"])
        );
        for r in m["routes"].as_array().into_iter().flatten() {
            let split: Vec<String> = r["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}={}", text(&t["virtualNode"]), t["weight"]))
                .collect();
            out_line!(
                out,
                "  {}/{}   {}",
                text(&r["virtualRouter"]),
                text(&r["route"]),
                split.join(" ")
            );
        }
    }
    // All at once, and quietly when the reader has gone (`status | head`).
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// A JSON string as printable text (control characters escaped); empty when not a string.
fn text(v: &serde_json::Value) -> String {
    escape(v.as_str().unwrap_or_default())
}
