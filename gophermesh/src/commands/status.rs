//! `gophermesh status`: processes, Envoys, route weights and the split Envoy observed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use std::collections::BTreeMap;

use controlplane::xds::ads::EnvoyStatus;
use gophermesh::api::status::{Status, StoreStatus};
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
    let url = url(control, "/v1/status")?;
    let (_, answer) = call(control, request(control, reqwest::Method::GET, url)?).await?;
    let out = if raw {
        format!("{}\n", serde_json::to_string_pretty(&answer)?)
    } else {
        let status: Status = serde_json::from_value(answer)
            .map_err(|e| anyhow::anyhow!("the control API's status does not read: {e}"))?;
        render(&status)
    };
    // All at once, and quietly when the reader has gone (`status | head`).
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// The status as `gophermesh status` prints it.
fn render(s: &Status) -> String {
    let mut out = String::new();
    let names: Vec<String> = s.meshes.iter().map(|m| escape(&m.name)).collect();
    out_line!(
        out,
        "{} at version {}",
        match names.is_empty() {
            true => "no mesh yet".to_owned(),
            false => format!("mesh {}", names.join(", ")),
        },
        s.version
    );
    store(&mut out, &s.store);
    processes(&mut out, &s.processes);
    envoys(&mut out, &s.envoys);
    super::certificates::render(&mut out, &s.certificates);
    routes(&mut out, s);
    out
}

fn store(out: &mut String, store: &StoreStatus) {
    match (store.durable, store.writable) {
        (false, _) => out_line!(out, "store: in memory"),
        (true, true) => out_line!(
            out,
            "store: {}, writing ({} failed writes, reopened {} times since start)",
            escape(store.location.as_deref().unwrap_or_default()),
            store.failed_writes,
            store.reopened
        ),
        (true, false) => out_line!(
            out,
            "store: NOT WRITING; changes are refused until it can ({} failed writes): {}",
            store.failed_writes,
            escape(store.last_error.as_deref().unwrap_or_default())
        ),
    }
}

fn processes(out: &mut String, processes: &serde_json::Value) {
    out_line!(out, "\nprocesses:");
    for p in processes.as_array().into_iter().flatten() {
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
}

fn envoys(out: &mut String, envoys: &BTreeMap<String, EnvoyStatus>) {
    out_line!(out, "\nEnvoys:");
    for (node, e) in envoys {
        let acked: Vec<String> = e
            .acked
            .iter()
            .map(|(k, v)| format!("{k} v{}", escape(v)))
            .collect();
        out_line!(
            out,
            "  {:<32} {:<12} acked: {}",
            escape(node),
            if e.connected {
                "connected"
            } else {
                "disconnected"
            },
            acked.join(", ")
        );
        if let Some(problem) = &e.problem {
            out_line!(out, "    gets nothing: {}", escape(problem));
        }
        for o in e.open_streams.iter() {
            out_line!(
                out,
                "    stream {} from {} since {}{}",
                o.id,
                escape(o.peer.as_deref().unwrap_or_default()),
                escape(&o.since),
                o.instance
                    .as_deref()
                    .map(|i| format!(" (task {})", escape(i)))
                    .unwrap_or_default()
            );
        }
        if let Some(n) = &e.last_nack {
            out_line!(
                out,
                "    last NACK ({} at version {}, {}): {}",
                escape(n.type_url.rsplit('.').next().unwrap_or_default()),
                escape(&n.version),
                escape(&n.at),
                escape(&n.message)
            );
        }
    }
}

/// Every mesh's routes, with the split observed (by the Envoys that run here).
fn routes(out: &mut String, s: &Status) {
    for m in &s.meshes {
        let name = escape(&m.name);
        out_line!(
            out,
            "\nroutes of mesh {name} (configured weights, and requests Envoy has completed per target; `route set --mesh {name}` changes them):"
        );
        for r in &m.routes {
            let total_w: i64 = r.targets.iter().map(|t| t.weight).sum();
            let seen = |node: &str| {
                controlplane::on_route(&s.observed, &m.name, (&r.virtual_router, &r.route), node)
                    .copied()
                    .unwrap_or(0)
            };
            let total_seen: u64 = r.targets.iter().map(|t| seen(&t.virtual_node)).sum();
            out_line!(out, "  {}/{}", escape(&r.virtual_router), escape(&r.route));
            for t in &r.targets {
                let share = |x: f64, total: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
                let observed = seen(&t.virtual_node);
                out_line!(
                    out,
                    "    {:<20} weight {:>3} ({:>5.1}%)   observed {observed:>7} ({:>5.1}%)",
                    escape(&t.virtual_node),
                    t.weight,
                    share(t.weight as f64, total_w as f64),
                    share(observed as f64, total_seen as f64)
                );
            }
        }
    }
}

/// A JSON string as printable text (control characters escaped); empty when not a string.
fn text(v: &serde_json::Value) -> String {
    escape(v.as_str().unwrap_or_default())
}
