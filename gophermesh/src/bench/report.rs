//! bench.json, the terminal table, the budgets and bench.svg.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::load::Scenario;

/// The scenarios in the order they are shown.
pub const SCENARIOS: [(&str, &str); 8] = [
    ("hello_floor", "minimal hyper server"),
    ("distributor_direct", "distributor, direct"),
    ("requester_direct", "requester -> distributor, no Envoy"),
    ("mesh", "requester -> distributor via 2 Envoys"),
    ("mesh_floor", "same mesh, hyper stand-in apps"),
    ("mesh_metrics", "same mesh, a rollout reading its stats"),
    ("mesh_mtls", "same mesh, its own mutual TLS"),
    ("mesh_containers", "same mesh, pods, sidecar image"),
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub idle: f64,
    /// Peak resident memory (VmHWM) after the load scenario that used the process.
    pub load: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Shifts {
    pub shifts: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Shifts {
    /// The figures of `times` (milliseconds, in any order).
    pub fn of(mut times: Vec<f64>) -> Self {
        times.sort_by(f64::total_cmp);
        Self {
            shifts: times.len(),
            p50: super::nearest_rank(&times, 0.5),
            p99: super::nearest_rank(&times, 0.99),
            max: times.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    pub virtual_nodes: u32,
    pub resources: usize,
    /// Envoy's first request to its ACK of the last resource type.
    pub push_ms: f64,
    pub control_plane_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    pub name: String,
    pub value: f64,
    pub limit: String,
    pub ok: bool,
    /// For a ratio of two scenarios measured in turns: the ratio of each turn (turn `i`
    /// of one over turn `i` of the other). `value` is their median, so that one noisy
    /// turn can neither pass nor fail the budget by itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub scenarios: BTreeMap<String, Scenario>,
    pub rss_mib: BTreeMap<String, Memory>,
    pub ready_ms: BTreeMap<String, f64>,
    /// Image sizes in MB, or why there are none.
    pub image_mb: serde_json::Value,
    pub shift_propagation_ms: Shifts,
    /// Each step of a rollout from its stored change to every Envoy's ACK.
    pub rollout_step_ack_ms: Shifts,
    pub control_plane_scale: Vec<ScalePoint>,
    /// A large template evaluated and applied.
    pub import: super::import::ImportFigure,
    /// Each fleet run's figures, as `bench-fleet` writes them.
    pub fleet: Vec<serde_json::Value>,
    /// A route change with every node of a mesh connected: the nodes built again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<super::rebuild::RebuildFigure>,
    /// The sidecar image's figures beside Envoy run by hand (`--containers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<serde_json::Value>,
    pub budgets: Vec<Budget>,
}

impl Budget {
    /// A budget that `value` must not exceed.
    fn at_most(name: impl Into<String>, value: f64, limit: f64) -> Self {
        Self {
            name: name.into(),
            value,
            limit: format!("<= {limit}"),
            ok: value <= limit,
            turns: Vec::new(),
        }
    }

    /// A budget that `value` must reach.
    fn at_least(name: impl Into<String>, value: f64, limit: f64) -> Self {
        Self {
            name: name.into(),
            value,
            limit: format!(">= {limit:.2}"),
            ok: value >= limit,
            turns: Vec::new(),
        }
    }

    /// A budget that the median of `turns` (ratios, one per turn) must reach.
    fn median_at_least(name: impl Into<String>, mut turns: Vec<f64>, limit: f64) -> Self {
        let mut sorted = turns.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        let mut b = Self::at_least(name, median, limit);
        turns.retain(|t| t.is_finite());
        b.turns = turns;
        b
    }
}

/// The budgets of the benchmark, as ratios and limits.
pub fn budgets(r: &Report) -> Vec<Budget> {
    let mut out = Vec::new();
    // Turn by turn: the scenarios of a ratio took turns side by side.
    let ratios = |a: &str, b: &str| -> Vec<f64> {
        let (Some(a), Some(b)) = (r.scenarios.get(a), r.scenarios.get(b)) else {
            return vec![0.0];
        };
        a.turns_rps
            .iter()
            .zip(&b.turns_rps)
            .map(|(x, y)| if *y > 0.0 { x / y } else { 0.0 })
            .collect()
    };
    out.push(Budget::median_at_least(
        "distributor_direct rps / hello_floor rps",
        ratios("distributor_direct", "hello_floor"),
        0.80,
    ));
    out.push(Budget::median_at_least(
        "mesh rps / mesh_floor rps",
        ratios("mesh", "mesh_floor"),
        0.85,
    ));
    for (service, mem) in &r.rss_mib {
        if service != "envoy" {
            out.push(Budget::at_most(
                format!("{service} idle RSS MiB"),
                mem.idle,
                10.0,
            ));
        }
    }
    for (service, ms) in &r.ready_ms {
        out.push(Budget::at_most(format!("{service} ready ms"), *ms, 50.0));
    }
    if let Some(ratio) = r
        .sidecar
        .as_ref()
        .and_then(|s| s["image_over_envoy"].as_f64())
    {
        out.push(Budget::at_most("sidecar image / Envoy binary", ratio, 1.5));
    }
    out.push(Budget::at_most(
        "shift propagation p99 ms",
        r.shift_propagation_ms.p99,
        500.0,
    ));
    // Mesh size, push limit (ms), control plane RSS limit (MiB).
    for (nodes, push, rss) in [(1000, 1000.0, 100.0), (10_000, 3000.0, 300.0)] {
        if let Some(p) = r
            .control_plane_scale
            .iter()
            .find(|p| p.virtual_nodes == nodes)
        {
            out.push(Budget::at_most(
                format!("{nodes} virtual nodes pushed, ms"),
                p.push_ms,
                push,
            ));
            out.push(Budget::at_most(
                format!("{nodes} virtual nodes, control plane RSS MiB"),
                p.control_plane_rss_mib,
                rss,
            ));
        }
    }
    out.push(Budget::at_most(
        format!("{}-resource template applied, ms", r.import.resources),
        r.import.first_apply_ms,
        2000.0,
    ));
    if let Some(figure) = &r.rebuild {
        out.push(Budget::at_most(
            figure.budget_name(),
            figure.what_read_it.builds_per_change,
            f64::from(figure.backends_per_node),
        ));
    }
    for run in &r.fleet {
        let clients = run["clients"].as_u64().unwrap_or(0);
        let nodes = run["virtual_nodes"].as_u64().unwrap_or(0);
        let delta = run["protocol"] == "delta";
        let mut limits: Vec<(&str, &str, f64)> = match (clients, nodes) {
            (1000, 1000..) => vec![
                (
                    "change ACKed by all p99 ms",
                    "/change_acked_by_all_ms/p99",
                    500.0,
                ),
                ("connect storm ms", "/connect_storm_ms", 5000.0),
                ("serve RSS MiB", "/rss_mib/with_fleet", 150.0),
            ],
            (5000, _) => vec![
                (
                    "change ACKed by all p99 ms",
                    "/change_acked_by_all_ms/p99",
                    2000.0,
                ),
                ("serve RSS MiB", "/rss_mib/with_fleet", 400.0),
            ],
            (10_000, _) => vec![
                (
                    "change ACKed by all p99 ms",
                    "/change_acked_by_all_ms/p99",
                    1000.0,
                ),
                ("connect storm ms", "/connect_storm_ms", 10_000.0),
                ("serve RSS MiB", "/rss_mib/with_fleet", 1024.0),
                (
                    "change p99 ms while half reconnect",
                    "/storm_beside/change_acked_ms/p99",
                    2000.0,
                ),
            ],
            _ => Vec::new(),
        };
        if delta && clients >= 1000 {
            // A weight change is one virtual host to each sidecar on delta xDS.
            limits.push((
                "bytes per sidecar per change",
                "/bytes_sent_per_change_per_sidecar",
                1024.0,
            ));
        }
        // The state-of-the-world runs keep the budgets' old names.
        let protocol = if delta { " delta" } else { "" };
        for (what, pointer, limit) in limits {
            // A figure the run did not make counts as missed (NaN meets no limit).
            let value = run.pointer(pointer).and_then(serde_json::Value::as_f64);
            out.push(Budget::at_most(
                format!("fleet {clients}x{nodes}{protocol}: {what}"),
                value.unwrap_or(f64::NAN),
                limit,
            ));
        }
    }
    out
}

/// The terminal table.
/// The sidecar image's lines of the table (`--containers`); `ratio` is `mesh_containers`
/// req/s over `mesh`'s.
fn sidecar_lines(t: &mut String, s: &serde_json::Value, ratio: f64) {
    let f = |p: &str| {
        s.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let _ = writeln!(
        t,
        "sidecar image {:.1} MB = {:.2} x Envoy's binary ({:.1} MB)",
        f("/image_mb"),
        f("/image_over_envoy"),
        f("/envoy_binary_mb")
    );
    let _ = writeln!(
        t,
        "Envoy LIVE after start: by hand {:.0} ms (exec), sidecar image {:.0} ms (podman run)",
        f("/live_ms/by_hand"),
        f("/live_ms/sidecar_image")
    );
    let _ = writeln!(
        t,
        "RSS of one task's Envoy: by hand idle {:.1} / peak {:.1} MiB; sidecar image (with gophermesh sidecar) idle {:.1} / peak {:.1} MiB",
        f("/rss_mib/by_hand/idle"),
        f("/rss_mib/by_hand/load"),
        f("/rss_mib/sidecar_image/idle"),
        f("/rss_mib/sidecar_image/load")
    );
    let _ = writeln!(t, "mesh_containers req/s / mesh req/s: {ratio:.2}");
}

pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<20} {:<38} {:>9} {:>8} {:>8} {:>9} {:>11} {:>7}",
        "scenario", "path", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/req", "errors"
    );
    for (key, what) in SCENARIOS {
        if let Some(s) = r.scenarios.get(key) {
            let _ = writeln!(
                t,
                "{key:<20} {what:<38} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>11.1} {:>7}",
                s.rps, s.p50_ms, s.p99_ms, s.p999_ms, s.cpu_us_per_req, s.errors
            );
        }
    }
    t.push('\n');
    for (key, _) in SCENARIOS {
        if let Some(s) = r
            .scenarios
            .get(key)
            .filter(|s| s.cpu_us_per_req_by_process.len() > 1)
        {
            let parts: Vec<String> = s
                .cpu_us_per_req_by_process
                .iter()
                .map(|(n, us)| format!("{n} {us:.1}"))
                .collect();
            let _ = writeln!(t, "CPU µs/req of {key}: {}", parts.join(", "));
        }
    }
    t.push('\n');
    for (service, m) in &r.rss_mib {
        let _ = writeln!(
            t,
            "RSS {service:<12} idle {:>6.1} MiB   peak under load {:>6.1} MiB",
            m.idle, m.load
        );
    }
    for (service, ms) in &r.ready_ms {
        let _ = writeln!(
            t,
            "ready {service:<12} {ms:>6.1} ms from exec to the first answer"
        );
    }
    let _ = writeln!(t, "images: {}", r.image_mb);
    if let Some(s) = &r.sidecar {
        let rps = |k: &str| r.scenarios.get(k).map_or(f64::NAN, |s| s.rps);
        sidecar_lines(&mut t, s, rps("mesh_containers") / rps("mesh"));
    }
    let s = &r.shift_propagation_ms;
    let _ = writeln!(
        t,
        "route shift -> first request on the new weights: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} shifts",
        s.p50, s.p99, s.max, s.shifts
    );
    let rps = |k: &str| r.scenarios.get(k).map_or(f64::NAN, |s| s.rps);
    let _ = writeln!(
        t,
        "metrics a rollout reads (every Envoy's stats each second): mesh_metrics req/s / mesh req/s {:.2}",
        rps("mesh_metrics") / rps("mesh")
    );
    let _ = writeln!(
        t,
        "the mesh's own mutual TLS (Envoy to Envoy on mesh certificates): mesh_mtls req/s / mesh req/s {:.2}",
        rps("mesh_mtls") / rps("mesh")
    );
    let s = &r.rollout_step_ack_ms;
    let _ = writeln!(
        t,
        "rollout step (its decision stored) -> every Envoy's ACK: p50 {:.1} ms, max {:.1} ms over {} steps",
        s.p50, s.max, s.shifts
    );
    for p in &r.control_plane_scale {
        let _ = writeln!(
            t,
            "control plane, {:>5} virtual nodes ({:>5} resources): pushed to Envoy in {:>7.1} ms, RSS {:>6.1} MiB",
            p.virtual_nodes, p.resources, p.push_ms, p.control_plane_rss_mib
        );
    }
    let i = &r.import;
    let _ = writeln!(
        t,
        "template of {} resources ({:.0} KiB): evaluated in {:.1} ms; `apply -f` to serve {:.0} ms (first, creating all: {:.0} ms)",
        i.resources, i.template_kib, i.evaluate_ms, i.apply_ms, i.first_apply_ms
    );
    for run in &r.fleet {
        let _ = writeln!(
            t,
            "fleet, {:>5} sidecars x {:>5} virtual nodes, {:<5}: storm {:>7.0} ms, change ACKed by all p50 {:>6.1} / p99 {:>6.1} ms, {:.3} CPU s and {:.0} KiB per change ({:.0} B per sidecar), serve {:.0} MiB",
            run["clients"].as_u64().unwrap_or(0),
            run["virtual_nodes"].as_u64().unwrap_or(0),
            run["protocol"].as_str().unwrap_or("sotw"),
            run["connect_storm_ms"].as_f64().unwrap_or(f64::NAN),
            run["change_acked_by_all_ms"]["p50"]
                .as_f64()
                .unwrap_or(f64::NAN),
            run["change_acked_by_all_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::NAN),
            run["cpu_s_per_change"].as_f64().unwrap_or(f64::NAN),
            run["kib_sent_per_change"].as_f64().unwrap_or(f64::NAN),
            run["bytes_sent_per_change_per_sidecar"]
                .as_f64()
                .unwrap_or(f64::NAN),
            run["rss_mib"]["with_fleet"].as_f64().unwrap_or(f64::NAN),
        );
    }
    if let Some(figure) = &r.rebuild {
        let _ = writeln!(t, "{figure}");
    }
    t.push('\n');
    for b in &r.budgets {
        let spread = match b.turns.len() {
            0 => String::new(),
            n => {
                let low = b.turns.iter().copied().fold(f64::INFINITY, f64::min);
                let high = b.turns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(", median of {n} turns: {low:.2} to {high:.2}")
            }
        };
        let _ = writeln!(
            t,
            "{} {:<44} {:>9.2}  (budget {}{spread})",
            if b.ok { "ok  " } else { "MISS" },
            b.name,
            b.value,
            b.limit
        );
    }
    t
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two bar charts side by side: throughput and p99 latency per scenario.
pub fn svg(r: &Report) -> String {
    let rows: Vec<(&str, &Scenario)> = SCENARIOS
        .iter()
        .filter_map(|(k, _)| r.scenarios.get(*k).map(|s| (*k, s)))
        .collect();
    let (width, bar_h, gap, top, label_w, chart_w) = (960.0, 22.0, 10.0, 60.0, 170.0, 260.0);
    // Below the scenarios: each fleet's change-to-all-ACKed p99, and the bytes each
    // sidecar was sent per change.
    let fleet_top = top + rows.len() as f64 * (bar_h + gap) + 40.0;
    let fleet_rows: Vec<(String, f64, f64)> = r
        .fleet
        .iter()
        .map(|run| {
            (
                format!(
                    "{} x {} nodes, {}",
                    run["clients"].as_u64().unwrap_or(0),
                    run["virtual_nodes"].as_u64().unwrap_or(0),
                    run["protocol"].as_str().unwrap_or("sotw")
                ),
                run["change_acked_by_all_ms"]["p99"].as_f64().unwrap_or(0.0),
                run["bytes_sent_per_change_per_sidecar"]
                    .as_f64()
                    .unwrap_or(0.0),
            )
        })
        .collect();
    let height = if fleet_rows.is_empty() {
        fleet_top
    } else {
        fleet_top + fleet_rows.len() as f64 * (bar_h + gap) + 40.0
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="16" y="24" font-size="16" font-weight="bold">gophermesh bench: throughput and p99 latency per scenario</text>"##
    );
    type Figure<'a> = &'a dyn Fn(&Scenario) -> f64;
    let panels: [(&str, f64, Figure<'_>, &str); 2] = [
        (
            "requests per second (higher is better)",
            label_w,
            &|s: &Scenario| s.rps,
            "#3b7dd8",
        ),
        (
            "p99 latency, ms (lower is better)",
            label_w + chart_w + 200.0,
            &|s: &Scenario| s.p99_ms,
            "#d8703b",
        ),
    ];
    for (title, x0, value, color) in panels {
        let max = rows
            .iter()
            .map(|(_, s)| value(s))
            .fold(0.0_f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
            top - 12.0,
            escape(title)
        );
        for (i, (key, s)) in rows.iter().enumerate() {
            let y = top + i as f64 * (bar_h + gap);
            let v = value(s);
            let w = (v / max * chart_w).max(1.0);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{x0}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{color}"/><text x="{:.1}" y="{}">{}</text>"#,
                x0 - 8.0,
                y + bar_h * 0.7,
                escape(key),
                x0 + w + 6.0,
                y + bar_h * 0.7,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            );
        }
    }
    type FleetFigure = fn(&(String, f64, f64)) -> f64;
    let fleet_panels: [(&str, f64, FleetFigure, &str); 2] = [
        (
            "fleet: a route change ACKed by every sidecar, p99 ms",
            label_w,
            |row| row.1,
            "#5a9e4b",
        ),
        (
            "bytes sent to each sidecar per change",
            label_w + chart_w + 200.0,
            |row| row.2,
            "#8a5ad8",
        ),
    ];
    for (title, x0, value, color) in fleet_panels {
        if fleet_rows.is_empty() {
            break;
        }
        let _ = writeln!(
            out,
            r#"<text x="{x0}" y="{}" font-weight="bold">{title} (lower is better)</text>"#,
            fleet_top - 12.0
        );
        let max = fleet_rows
            .iter()
            .map(value)
            .fold(0.0_f64, f64::max)
            .max(f64::MIN_POSITIVE);
        for (i, row) in fleet_rows.iter().enumerate() {
            let y = fleet_top + i as f64 * (bar_h + gap);
            let v = value(row);
            let w = (v / max * chart_w).max(1.0);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{x0}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{color}"/><text x="{:.1}" y="{}">{v:.0}</text>"#,
                x0 - 8.0,
                y + bar_h * 0.7,
                escape(&row.0),
                x0 + w + 6.0,
                y + bar_h * 0.7,
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<text x="16" y="{}" font-size="11" fill="#555">{} connections, {} s per scenario; CPU per request and every other figure are in bench.json</text>"##,
        height - 14.0,
        escape(r.settings.get("concurrency").map_or("?", String::as_str)),
        escape(r.settings.get("duration_s").map_or("?", String::as_str)),
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(rps: f64, p99: f64) -> Scenario {
        Scenario {
            rps,
            p50_ms: p99 / 3.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            cpu_us_per_req: 10.0,
            requests: 1000,
            errors: 0,
            cpu_us_per_req_by_process: BTreeMap::new(),
            turns_rps: vec![rps * 0.9, rps, rps * 1.1],
        }
    }

    fn report() -> Report {
        let mut scenarios = BTreeMap::new();
        for (k, rps, p99) in [
            ("hello_floor", 40000.0, 1.0),
            ("distributor_direct", 30000.0, 1.5),
            ("requester_direct", 12000.0, 3.0),
            ("mesh", 5000.0, 6.0),
            ("mesh_floor", 5500.0, 5.0),
        ] {
            scenarios.insert(k.to_owned(), scenario(rps, p99));
        }
        let mut r = Report {
            machine: BTreeMap::new(),
            settings: BTreeMap::from([("concurrency".to_owned(), "16".to_owned())]),
            scenarios,
            rss_mib: BTreeMap::from([(
                "distributor".to_owned(),
                Memory {
                    idle: 5.0,
                    load: 7.0,
                },
            )]),
            ready_ms: BTreeMap::from([("distributor".to_owned(), 60.0)]),
            image_mb: serde_json::Value::Null,
            shift_propagation_ms: Shifts {
                shifts: 3,
                p50: 10.0,
                p99: 20.0,
                max: 20.0,
            },
            rollout_step_ack_ms: Shifts {
                shifts: 4,
                p50: 1.0,
                p99: 2.0,
                max: 2.0,
            },
            control_plane_scale: vec![
                ScalePoint {
                    virtual_nodes: 1000,
                    resources: 3998,
                    push_ms: 400.0,
                    control_plane_rss_mib: 30.0,
                },
                ScalePoint {
                    virtual_nodes: 10_000,
                    resources: 39_998,
                    push_ms: 3100.0,
                    control_plane_rss_mib: 200.0,
                },
            ],
            import: super::super::import::ImportFigure {
                resources: 1001,
                template_kib: 300.0,
                evaluate_ms: 40.0,
                apply_ms: 200.0,
                first_apply_ms: 2500.0,
            },
            fleet: vec![
                serde_json::json!({"clients": 1000, "virtual_nodes": 1000,
                    "connect_storm_ms": 900.0, "change_acked_by_all_ms": {"p50": 200.0, "p99": 250.0},
                    "rss_mib": {"with_fleet": 180.0}}),
                serde_json::json!({"clients": 5000, "virtual_nodes": 100,
                    "connect_storm_ms": 2000.0, "change_acked_by_all_ms": {"p50": 500.0, "p99": 600.0},
                    "rss_mib": {"with_fleet": 210.0}}),
                serde_json::json!({"clients": 100, "virtual_nodes": 1000,
                    "connect_storm_ms": 100.0, "change_acked_by_all_ms": {"p50": 50.0, "p99": 60.0},
                    "rss_mib": {"with_fleet": 40.0}}),
                serde_json::json!({"clients": 1000, "virtual_nodes": 1000, "protocol": "delta",
                    "connect_storm_ms": 800.0, "change_acked_by_all_ms": {"p50": 20.0, "p99": 30.0},
                    "bytes_sent_per_change_per_sidecar": 2048.0,
                    "rss_mib": {"with_fleet": 120.0}}),
            ],
            rebuild: None,
            sidecar: None,
            budgets: Vec::new(),
        };
        r.budgets = budgets(&r);
        r
    }

    #[test]
    fn budgets_compare_ratios_and_limits() {
        let r = report();
        let by_name = |n: &str| r.budgets.iter().find(|b| b.name == n).expect(n).clone();
        let d = by_name("distributor_direct rps / hello_floor rps");
        assert!((d.value - 0.75).abs() < 1e-9 && !d.ok);
        let m = by_name("mesh rps / mesh_floor rps");
        assert!((m.value - 5000.0 / 5500.0).abs() < 1e-9 && m.ok);
        assert!(!by_name("distributor ready ms").ok);
        assert!(by_name("distributor idle RSS MiB").ok);
        assert!(by_name("1000 virtual nodes pushed, ms").ok);
        assert!(!by_name("10000 virtual nodes pushed, ms").ok);
        assert!(by_name("10000 virtual nodes, control plane RSS MiB").ok);
        assert!(by_name("fleet 1000x1000: change ACKed by all p99 ms").ok);
        assert!(by_name("fleet 1000x1000: connect storm ms").ok);
        let rss = by_name("fleet 1000x1000: serve RSS MiB");
        assert!(!rss.ok && (rss.value - 180.0).abs() < 1e-9);
        assert!(by_name("fleet 5000x100: serve RSS MiB").ok);
        assert!(by_name("fleet 1000x1000 delta: change ACKed by all p99 ms").ok);
        let bytes = by_name("fleet 1000x1000 delta: bytes per sidecar per change");
        assert!(!bytes.ok && (bytes.value - 2048.0).abs() < 1e-9);
        assert!(
            !r.budgets.iter().any(|b| b.name.starts_with("fleet 100x")),
            "the issue sets no budget for 100 sidecars"
        );
    }

    #[test]
    fn the_chart_has_a_bar_per_scenario_and_panel() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            10 + 2 * 4,
            "two bars per fleet too: latency and bytes"
        );
        assert!(svg.contains(">5000 x 100 nodes, sotw<") && svg.contains(">600<"));
        assert!(svg.contains(">1000 x 1000 nodes, delta<"));
        assert!(svg.contains(">40000<") && svg.contains(">6.00<"));
        let table = table(&report());
        assert!(table.contains("MISS distributor_direct rps / hello_floor rps"));
    }
}
