//! Per-target metrics with the App Mesh metric extension's names, for `/metrics`: what
//! each caller's Envoy sent to each target virtual node, from the Envoys `up` runs (their
//! admin's Prometheus stats, read when asked) or from remote Envoys' DogStatsD sinks
//! (`serve --statsd-listen`, summed as they arrive).
//!
//! ```text
//! metrics.rs  the names, one target's figures, the registry, Prometheus text
//! statsd      DogStatsD datagrams from Envoys, into a registry of bounded size
//! scrape      an Envoy's /stats/prometheus, into the same figures
//! ```
//!
//! Names and dimensions are the extension's (`envoy_appmesh_RequestCountPerTarget`,
//! `envoy_appmesh_HTTPCode_Target_2XX_Count` .. `5XX`, `envoy_appmesh_TargetResponseTime`
//! in milliseconds, with `Mesh`, `VirtualNode` (or `VirtualGateway`) and
//! `TargetVirtualNode`), so that dashboards and alarms built on them carry over.

pub mod scrape;
pub mod statsd;

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Envoy's default histogram buckets (milliseconds), which `TargetResponseTime` keeps.
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Who sent to whom: the caller (mesh and virtual node or gateway) and the target node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub mesh: String,
    /// The caller's kind as the extension names its dimension: `VirtualNode` or
    /// `VirtualGateway`.
    pub kind: &'static str,
    pub node: String,
    pub target: String,
}

/// What one caller sent to one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests sent (`upstream_rq_total`).
    pub requests: f64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx (`upstream_rq_xx`).
    pub by_class: [f64; 4],
    /// Response times: cumulative counts per [`BUCKETS_MS`] bucket, then their sum and
    /// count (`upstream_rq_time`).
    pub buckets: [f64; BUCKETS_MS.len()],
    pub time_sum_ms: f64,
    pub time_count: f64,
}

impl Figures {
    /// One response time, in milliseconds.
    pub fn observe(&mut self, ms: f64) {
        for (bound, count) in BUCKETS_MS.iter().zip(self.buckets.iter_mut()) {
            if ms <= *bound {
                *count += 1.0;
            }
        }
        self.time_sum_ms += ms;
        self.time_count += 1.0;
    }

    /// `other` added to these.
    pub fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.time_sum_ms += other.time_sum_ms;
        self.time_count += other.time_count;
    }
}

/// The egress cluster `cds_egress_MESH_NODE_PROTOCOL_PORT` of mesh `mesh`: its target node.
pub fn target_of(cluster: &str, mesh: &str) -> Option<String> {
    let rest = cluster.strip_prefix("cds_egress_")?.strip_prefix(mesh)?;
    let rest = rest.strip_prefix('_')?;
    let mut parts = rest.rsplitn(3, '_');
    let (Some(port), Some(_proto), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    (port.parse::<u16>().is_ok() && !node.is_empty()).then(|| node.to_owned())
}

/// The text of `/metrics` for `edges` (Prometheus text format 0.0.4), with `extra` lines
/// (the receiver's own counters) after them.
pub fn render(edges: &BTreeMap<Edge, Figures>, extra: &str) -> String {
    let mut out = String::new();
    let labels = |e: &Edge| {
        format!(
            "Mesh=\"{}\",{}=\"{}\",TargetVirtualNode=\"{}\"",
            escape(&e.mesh),
            e.kind,
            escape(&e.node),
            escape(&e.target)
        )
    };
    let _ = writeln!(
        out,
        "# HELP envoy_appmesh_RequestCountPerTarget Requests a caller's Envoy sent to a target virtual node.\n# TYPE envoy_appmesh_RequestCountPerTarget counter"
    );
    for (e, f) in edges {
        let _ = writeln!(
            out,
            "envoy_appmesh_RequestCountPerTarget{{{}}} {}",
            labels(e),
            f.requests
        );
    }
    for (i, class) in ["2XX", "3XX", "4XX", "5XX"].iter().enumerate() {
        let name = format!("envoy_appmesh_HTTPCode_Target_{class}_Count");
        let _ = writeln!(
            out,
            "# HELP {name} Responses of class {class} from a target virtual node.\n# TYPE {name} counter"
        );
        for (e, f) in edges {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(e), f.by_class[i]);
        }
    }
    let name = "envoy_appmesh_TargetResponseTime";
    let _ = writeln!(
        out,
        "# HELP {name} Milliseconds from a request's start to its response's end, per target virtual node.\n# TYPE {name} histogram"
    );
    for (e, f) in edges {
        let l = labels(e);
        for (bound, count) in BUCKETS_MS.iter().zip(f.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", f.time_count);
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", f.time_sum_ms);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", f.time_count);
    }
    out.push_str(extra);
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_egress_cluster_names() {
        assert_eq!(
            target_of(
                "cds_egress_gophermesh_distributor-v1_http_8080",
                "gophermesh"
            ),
            Some("distributor-v1".to_owned())
        );
        assert_eq!(
            target_of("cds_egress_my_mesh_node_a_grpc_9090", "my_mesh"),
            Some("node_a".to_owned())
        );
        assert_eq!(
            target_of("cds_egress_other_node_http_8080", "gophermesh"),
            None
        );
        assert_eq!(
            target_of("cds_ingress_gophermesh_x_http_8080", "gophermesh"),
            None
        );
    }

    #[test]
    fn the_text_format_has_one_sample_per_line_and_cumulative_buckets() {
        let mut f = Figures {
            requests: 3.0,
            by_class: [2.0, 0.0, 0.0, 1.0],
            ..Figures::default()
        };
        for ms in [0.4, 7.0, 700.0] {
            f.observe(ms);
        }
        let edge = Edge {
            mesh: "gophermesh".into(),
            kind: "VirtualNode",
            node: "requester".into(),
            target: "distributor-\"v1\"".into(),
        };
        let text = render(&BTreeMap::from([(edge, f)]), "");
        let l =
            r#"Mesh="gophermesh",VirtualNode="requester",TargetVirtualNode="distributor-\"v1\"""#;
        for line in [
            format!("envoy_appmesh_RequestCountPerTarget{{{l}}} 3"),
            format!("envoy_appmesh_HTTPCode_Target_5XX_Count{{{l}}} 1"),
            format!("envoy_appmesh_TargetResponseTime_bucket{{{l},le=\"0.5\"}} 1"),
            format!("envoy_appmesh_TargetResponseTime_bucket{{{l},le=\"10\"}} 2"),
            format!("envoy_appmesh_TargetResponseTime_bucket{{{l},le=\"+Inf\"}} 3"),
            format!("envoy_appmesh_TargetResponseTime_count{{{l}}} 3"),
        ] {
            assert!(text.lines().any(|t| t == line), "no `{line}` in:\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("NAME{LABELS} VALUE");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
