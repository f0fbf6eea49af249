//! Per-target metrics with the App Mesh metric extension's names, for `/metrics`: what
//! each caller's Envoy sent to each target virtual node, from the Envoys `up` runs (their
//! admin's Prometheus stats, read when asked) or from remote Envoys' DogStatsD sinks
//! (`serve --statsd-listen`, summed as they arrive).
//!
//! ```text
//! metrics.rs  the names, one target's figures, the registry, Prometheus text
//! statsd      DogStatsD datagrams from Envoys, into a registry of bounded size
//! scrape      an Envoy's /stats/prometheus, into the same figures
//! rollouts    what a rollout's checks read, and what /metrics shows of each rollout
//! ```
//!
//! Names and dimensions are the extension's (`envoy_appmesh_RequestCountPerTarget`,
//! `envoy_appmesh_HTTPCode_Target_2XX_Count` .. `5XX`, `envoy_appmesh_TargetResponseTime`
//! in milliseconds, with `Mesh`, `VirtualNode` (or `VirtualGateway`) and
//! `TargetVirtualNode`), so that dashboards and alarms built on them carry over.

pub mod rollouts;
pub mod scrape;
pub mod statsd;

pub use rollouts::{rollout_families, route_counts};

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Envoy's default histogram buckets (milliseconds), which `TargetResponseTime` keeps.
pub use controlplane::state::rollout::BUCKETS_MS;

/// Who sent to whom: the caller (mesh and virtual node or gateway) and the target node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub mesh: String,
    /// The caller's kind as the extension names its dimension: `VirtualNode` or
    /// `VirtualGateway`.
    pub kind: &'static str,
    pub node: String,
    pub target: String,
    /// `ROUTER~ROUTE` when the requests went by that route's own cluster (the target is
    /// the target of several routes of the router); `/metrics` sums over it.
    pub route: Option<String>,
}

/// What one caller sent to one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests sent (`upstream_rq_total`).
    pub requests: f64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx (`upstream_rq_xx`), as the callers got them
    /// (after the route's retries).
    pub by_class: [f64; 4],
    /// Attempts made again by the route's retry policy (`upstream_rq_retry`): each one
    /// follows a failed attempt (a 5xx, a reset, a per-try timeout).
    pub retries: f64,
    /// Hosts of the target its outlier detection ejected (`outlier_detection.
    /// ejections_enforced_total`).
    pub ejections: f64,
    /// Connections open to the target now (`upstream_cx_active`, a gauge).
    pub active_connections: f64,
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
        self.retries += other.retries;
        self.ejections += other.ejections;
        self.active_connections += other.active_connections;
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
    egress_target(cluster, mesh).map(|(node, _)| node)
}

/// The egress cluster `cds_egress_MESH_NODE_PROTOCOL_PORT[~ROUTER~ROUTE]` of mesh `mesh`:
/// its target node, and `ROUTER~ROUTE` when it is that route's own cluster (the node is
/// the target of several routes of the router).
pub fn egress_target(cluster: &str, mesh: &str) -> Option<(String, Option<String>)> {
    let rest = cluster.strip_prefix("cds_egress_")?.strip_prefix(mesh)?;
    let rest = rest.strip_prefix('_')?;
    let (rest, route) = match rest.split_once(controlplane::ROUTE_MARK) {
        Some((cluster, route)) => (cluster, Some(route.to_owned())),
        None => (rest, None),
    };
    Some((port_and_protocol_off(rest)?, route))
}

/// `NODE_PROTOCOL_PORT` without its protocol and port (the node's name may hold `_`).
fn port_and_protocol_off(rest: &str) -> Option<String> {
    let mut parts = rest.rsplitn(3, '_');
    let (Some(port), Some(_proto), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    (port.parse::<u16>().is_ok() && !node.is_empty()).then(|| node.to_owned())
}

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its samples are (name suffix, labels, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// What a counter's samples end with in the Prometheus format (the App Mesh names
    /// have no `_total`; ours have it). OpenMetrics always adds `_total`.
    pub counter_suffix: &'static str,
    pub samples: Vec<(&'static str, String, f64)>,
}

impl Family {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            counter_suffix: "",
            samples: Vec::new(),
        }
    }
}

/// Which text format `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0 (asked for with `Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn of(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A family of ours per caller and target: name, help, kind, and its value in figures.
type OwnFamily = (&'static str, &'static str, Kind, fn(&Figures) -> f64);

/// The App Mesh metric extension's families for `edges`.
pub fn families(edges: &BTreeMap<Edge, Figures>) -> Vec<Family> {
    let mut summed: BTreeMap<Edge, Figures> = BTreeMap::new();
    for (edge, f) in edges {
        let edge = Edge {
            route: None,
            ..edge.clone()
        };
        summed.entry(edge).or_default().add(f);
    }
    let edges = &summed;
    let labels = |e: &Edge| {
        format!(
            "Mesh=\"{}\",{}=\"{}\",TargetVirtualNode=\"{}\"",
            escape(&e.mesh),
            e.kind,
            escape(&e.node),
            escape(&e.target)
        )
    };
    let mut requests = Family::new(
        "envoy_appmesh_RequestCountPerTarget",
        "Requests a caller's Envoy sent to a target virtual node.",
        Kind::Counter,
    );
    requests.samples = edges
        .iter()
        .map(|(e, f)| ("", labels(e), f.requests))
        .collect();
    let mut out = vec![requests];
    for (i, class) in ["2XX", "3XX", "4XX", "5XX"].iter().enumerate() {
        let mut family = Family::new(
            format!("envoy_appmesh_HTTPCode_Target_{class}_Count"),
            format!("Responses of class {class} from a target virtual node."),
            Kind::Counter,
        );
        family.samples = edges
            .iter()
            .map(|(e, f)| ("", labels(e), f.by_class[i]))
            .collect();
        out.push(family);
    }
    // What App Mesh's extension had no name for, under ours.
    let ours: [OwnFamily; 3] = [
        (
            "gophermesh_target_retries",
            "Attempts a caller's Envoy made again to a target virtual node (its route's retry policy).",
            Kind::Counter,
            |f| f.retries,
        ),
        (
            "gophermesh_target_ejections",
            "Hosts of a target virtual node a caller's outlier detection ejected.",
            Kind::Counter,
            |f| f.ejections,
        ),
        (
            "gophermesh_target_active_connections",
            "Connections a caller's Envoy holds open to a target virtual node now.",
            Kind::Gauge,
            |f| f.active_connections,
        ),
    ];
    for (name, help, kind, value) in ours {
        let mut family = Family::new(name, help, kind);
        if kind == Kind::Counter {
            family.counter_suffix = "_total";
        }
        family.samples = edges
            .iter()
            .map(|(e, f)| ("", labels(e), value(f)))
            .collect();
        out.push(family);
    }
    let mut time = Family::new(
        "envoy_appmesh_TargetResponseTime",
        "Milliseconds from a request's start to its response's end, per target virtual node.",
        Kind::Histogram,
    );
    for (e, f) in edges {
        let l = labels(e);
        for (bound, count) in BUCKETS_MS.iter().zip(f.buckets) {
            time.samples
                .push(("_bucket", format!("{l},le=\"{bound}\""), count));
        }
        time.samples
            .push(("_bucket", format!("{l},le=\"+Inf\""), f.time_count));
        time.samples.push(("_sum", l.clone(), f.time_sum_ms));
        time.samples.push(("_count", l, f.time_count));
    }
    out.push(time);
    out
}

/// `families` as text in `format`.
pub fn render(families: &[Family], format: Format) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let name = match (format, f.kind) {
            (Format::Prometheus, Kind::Counter) => format!("{}{}", f.name, f.counter_suffix),
            _ => f.name.clone(),
        };
        let _ = writeln!(out, "# HELP {name} {}", f.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (suffix, labels, value) in &f.samples {
            let suffix = match (format, f.kind) {
                (Format::Prometheus, Kind::Counter) => f.counter_suffix,
                (Format::OpenMetrics, Kind::Counter) => "_total",
                _ => suffix,
            };
            if labels.is_empty() {
                let _ = writeln!(out, "{}{suffix} {value}", f.name);
            } else {
                let _ = writeln!(out, "{}{suffix}{{{labels}}} {value}", f.name);
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
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
        assert_eq!(
            egress_target(
                "cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor-canary",
                "gophermesh"
            ),
            Some((
                "distributor-v2".to_owned(),
                Some("distributor~distributor-canary".to_owned())
            ))
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
            route: None,
        };
        let edges = BTreeMap::from([(edge, f)]);
        let text = render(&families(&edges), Format::Prometheus);
        let open = render(&families(&edges), Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.lines()
                .any(|l| l.starts_with("envoy_appmesh_RequestCountPerTarget_total{")),
            "{open}"
        );
        assert!(open.contains("# TYPE envoy_appmesh_RequestCountPerTarget counter"));
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
