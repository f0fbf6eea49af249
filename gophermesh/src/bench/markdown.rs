//! What a run writes beside its table: bench.json (every figure), bench.svg (the chart),
//! and the same figures as Markdown, made from bench.json alone (`bench.md`, every table;
//! `summary.md`, the few lines the README shows), so that the book and the README quote a
//! run's own file and a test can check that they still do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::report::{self, Report, SCENARIOS};

/// Writes the four files into `out`; the paths of bench.json and bench.svg.
pub fn write(out: &Path, report: &Report) -> anyhow::Result<(PathBuf, PathBuf)> {
    let json = serde_json::to_value(report)?;
    let files = [
        ("bench.json", serde_json::to_string_pretty(&json)? + "\n"),
        ("bench.svg", report::svg(report)),
        ("bench.md", tables(&json)),
        ("summary.md", summary(&json)),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok((out.join("bench.json"), out.join("bench.svg")))
}

fn num(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("?")
}

/// The run's machine and settings, in one sentence.
fn measured_on(r: &Value) -> String {
    format!(
        "One `gophermesh bench` run on {date} ({cpu}, {cpus} cores; {conns} connections, \
         {secs} s per scenario in {turns} turns{quick}).",
        date = text(r, "/machine/date"),
        cpu = text(r, "/machine/cpu"),
        cpus = text(r, "/machine/cpus"),
        conns = text(r, "/settings/concurrency"),
        secs = text(r, "/settings/duration_s"),
        turns = text(r, "/settings/turns"),
        quick = if text(r, "/settings/quick") == "true" {
            ", --quick"
        } else {
            ""
        },
    )
}

/// Every table of a run, from its bench.json.
pub fn tables(r: &Value) -> String {
    let mut t = format!("{}\n\n", measured_on(r));
    t.push_str("| scenario | path | req/s | p50 ms | p99 ms | CPU µs/req | errors |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for (key, what) in SCENARIOS {
        if let Some(s) = r.pointer(&format!("/scenarios/{key}")) {
            let _ = writeln!(
                t,
                "| `{key}` | {what} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
                num(s, "/rps"),
                num(s, "/p50_ms"),
                num(s, "/p99_ms"),
                num(s, "/cpu_us_per_req"),
                s.get("errors").and_then(Value::as_u64).unwrap_or(0)
            );
        }
    }
    t.push_str("\n| budget | value | limit | met |\n|---|---:|---|---|\n");
    for b in r
        .get("budgets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let turns = b
            .get("turns")
            .and_then(Value::as_array)
            .filter(|turns| !turns.is_empty())
            .map(|turns| {
                let values: Vec<f64> = turns.iter().filter_map(Value::as_f64).collect();
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(" (median of {} turns: {low:.2} to {high:.2})", values.len())
            })
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "| {} | {:.2}{turns} | {} | {} |",
            text(b, "/name"),
            num(b, "/value"),
            text(b, "/limit"),
            if b.get("ok").and_then(Value::as_bool) == Some(true) {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    let _ = write!(
        t,
        "\nA route change reaches every Envoy (control API call to the first request that \
         follows it): p50 {:.1} ms, p99 {:.1} ms over {} shifts.\n",
        num(r, "/shift_propagation_ms/p50"),
        num(r, "/shift_propagation_ms/p99"),
        num(r, "/shift_propagation_ms/shifts"),
    );
    t.push_str("\n| virtual nodes | resources | first request to ACK of all, ms | control plane RSS MiB |\n|---:|---:|---:|---:|\n");
    for p in r
        .get("control_plane_scale")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.0} |",
            num(p, "/virtual_nodes"),
            num(p, "/resources"),
            num(p, "/push_ms"),
            num(p, "/control_plane_rss_mib"),
        );
    }
    fleet(r, &mut t);
    t
}

fn fleet(r: &Value, t: &mut String) {
    let runs: Vec<&Value> = r
        .get("fleet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if runs.is_empty() {
        return;
    }
    t.push_str("\n| sidecars | virtual nodes | protocol | connect storm s | change ACKed by all p50 / p99 ms | sent per sidecar per change | serve CPU s per change | serve RSS MiB |\n|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for run in runs {
        let bytes = num(run, "/bytes_sent_per_change_per_sidecar");
        let bytes = if bytes >= 1024.0 {
            format!("{:.0} KB", bytes / 1000.0)
        } else {
            format!("{bytes:.0} B")
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {:.0} / {:.0} | {bytes} | {:.2} | {:.0} |",
            num(run, "/clients"),
            num(run, "/virtual_nodes"),
            run.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("sotw"),
            num(run, "/connect_storm_ms") / 1000.0,
            num(run, "/change_acked_by_all_ms/p50"),
            num(run, "/change_acked_by_all_ms/p99"),
            num(run, "/cpu_s_per_change"),
            num(run, "/rss_mib/with_fleet"),
        );
    }
}

/// The lines the README shows: the mesh against its floor, a shift's propagation, and the
/// largest fleet of each protocol.
pub fn summary(r: &Value) -> String {
    let mut t = String::from("| what | figure |\n|---|---|\n");
    let mesh = |key: &str| r.pointer(&format!("/scenarios/{key}"));
    if let (Some(m), Some(f)) = (mesh("mesh"), mesh("mesh_floor")) {
        let _ = writeln!(
            t,
            "| the walkthrough's mesh (requester and distributor, 3 Envoys) | {:.0} req/s, p99 {:.1} ms; its floor (the same Envoys, minimal apps) {:.0} req/s |",
            num(m, "/rps"),
            num(m, "/p99_ms"),
            num(f, "/rps"),
        );
    }
    let _ = writeln!(
        t,
        "| a route change, API call to the first request that follows it | p50 {:.1} ms, p99 {:.1} ms |",
        num(r, "/shift_propagation_ms/p50"),
        num(r, "/shift_propagation_ms/p99"),
    );
    let runs = r
        .get("fleet")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for protocol in ["sotw", "delta"] {
        let largest = runs
            .iter()
            .filter(|run| {
                run.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("sotw")
                    == protocol
            })
            .max_by(|a, b| num(a, "/clients").total_cmp(&num(b, "/clients")));
        if let Some(run) = largest {
            let _ = writeln!(
                t,
                "| {} simulated sidecars ({} virtual nodes, {protocol}): a weight change ACKed by all | p99 {:.0} ms, serve {:.0} MiB |",
                num(run, "/clients"),
                num(run, "/virtual_nodes"),
                num(run, "/change_acked_by_all_ms/p99"),
                num(run, "/rss_mib/with_fleet"),
            );
        }
    }
    let failed = r.get("budgets").and_then(Value::as_array).map_or(0, |b| {
        b.iter()
            .filter(|b| b.get("ok") != Some(&Value::Bool(true)))
            .count()
    });
    let total = r
        .get("budgets")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let _ = writeln!(
        t,
        "\n{} {} of {total} budgets met.",
        measured_on(r),
        total - failed
    );
    t
}
