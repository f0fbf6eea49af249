//! DogStatsD from Envoys (`serve --statsd-listen ADDR`): the sink the unchanged
//! aws-appmesh-envoy sidecar and `gophermesh sidecar` already have
//! (`ENABLE_ENVOY_DOG_STATSD=1`, `STATSD_ADDRESS`, `STATSD_PORT`). Envoy flushes its
//! counters as deltas and every response time as a sample; the receiver sums them per
//! caller and target. The caller is read from the tags `ENABLE_ENVOY_STATS_TAGS=1` adds
//! (`appmesh.mesh`, `appmesh.virtual_node` or `appmesh.virtual_gateway`), the target from
//! Envoy's own `envoy.cluster_name`.
//!
//! Memory is bounded whatever arrives: a line of any other name, without the tags, or
//! beyond [`MAX_EDGES`] pairs of caller and target is counted by reason and dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{BUCKETS_MS, Edge, Family, Figures, Kind, egress_target};
use controlplane::TargetTraffic;
use controlplane::state::rollout::bucket_quantile;

/// The receive buffer asked for (bytes): bursts of every sidecar's flush at once.
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// The most caller-and-target pairs held.
pub const MAX_EDGES: usize = 10_000;

/// The longest tag value kept (a mesh, node or cluster name is far shorter).
const MAX_VALUE: usize = 255;

/// What the receiver holds.
#[derive(Debug, Default)]
struct Held {
    edges: BTreeMap<Edge, Figures>,
    datagrams: u64,
    used: u64,
    /// Lines dropped, by reason.
    dropped: BTreeMap<&'static str, u64>,
    /// Each target's response-time buckets when [`Statsd::traffic`] last read them.
    read_buckets: BTreeMap<String, [f64; BUCKETS_MS.len()]>,
}

/// The DogStatsD receiver's figures. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Statsd(Arc<Mutex<Held>>);

/// What one line says, when it is one of ours.
enum Reading {
    Requests(f64),
    Retries(f64),
    Ejections(f64),
    /// A gauge: the value now, not an increment.
    ActiveConnections(f64),
    Class(usize, f64),
    Time(f64),
}

impl Statsd {
    /// One datagram: lines separated by newlines.
    pub fn datagram(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.datagrams += 1;
        for line in text.lines().filter(|l| !l.is_empty()) {
            match parse(line) {
                Ok((edge, reading)) => {
                    let full = held.edges.len() >= MAX_EDGES && !held.edges.contains_key(&edge);
                    if full {
                        *held.dropped.entry("full").or_default() += 1;
                        continue;
                    }
                    held.used += 1;
                    let f = held.edges.entry(edge).or_default();
                    match reading {
                        Reading::Requests(n) => f.requests += n,
                        Reading::Retries(n) => f.retries += n,
                        Reading::Ejections(n) => f.ejections += n,
                        Reading::ActiveConnections(n) => f.active_connections = n,
                        Reading::Class(i, n) => f.by_class[i] += n,
                        Reading::Time(ms) => f.observe(ms),
                    }
                }
                Err(reason) => *held.dropped.entry(reason).or_default() += 1,
            }
        }
    }

    /// Every pair's figures, and the receiver's own families.
    pub fn snapshot(&self) -> (BTreeMap<Edge, Figures>, Vec<Family>) {
        let held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counter = |name: &str, help: &str, samples: Vec<(&'static str, String, f64)>| {
            let mut f = Family::new(name, help, Kind::Counter);
            f.counter_suffix = "_total";
            f.samples = samples;
            f
        };
        let dropped = ["unknown", "untagged", "malformed", "too_long", "full"]
            .into_iter()
            .map(|reason| {
                let n = held.dropped.get(reason).copied().unwrap_or(0);
                ("", format!("reason=\"{reason}\""), n as f64)
            })
            .collect();
        let mut edges = Family::new(
            "gophermesh_statsd_edges",
            format!("Caller-and-target pairs held (at most {MAX_EDGES})."),
            Kind::Gauge,
        );
        edges.samples = vec![("", String::new(), held.edges.len() as f64)];
        let families = vec![
            counter(
                "gophermesh_statsd_datagrams",
                "DogStatsD datagrams received.",
                vec![("", String::new(), held.datagrams as f64)],
            ),
            counter(
                "gophermesh_statsd_lines_used",
                "DogStatsD lines counted in the figures above.",
                vec![("", String::new(), held.used as f64)],
            ),
            counter(
                "gophermesh_statsd_lines_dropped",
                "DogStatsD lines dropped: unknown (another stat), untagged (no appmesh.mesh and node tags: set ENABLE_ENVOY_STATS_TAGS=1), malformed, too_long, full.",
                dropped,
            ),
            edges,
        ];
        (held.edges.clone(), families)
    }

    /// The traffic to each target virtual node (keyed `MESH/NODE`), summed over its
    /// callers, as the console shows it: responses and 5xx so far, and the median and 99th
    /// percentile of the response times that arrived since the last read (estimated within
    /// Envoy's buckets, as Prometheus's `histogram_quantile` does; `None` when none did).
    pub fn traffic(&self) -> BTreeMap<String, TargetTraffic> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for (key, f) in by_target(&held.edges) {
            let before = held.read_buckets.insert(key.clone(), f.buckets);
            let delta: Vec<f64> = f
                .buckets
                .iter()
                .zip(before.unwrap_or([0.0; BUCKETS_MS.len()]))
                .map(|(now, then)| (now - then).max(0.0))
                .collect();
            // Responses with a class; the completed ones, as Envoy counts them.
            let completed: f64 = f.by_class.iter().sum();
            out.insert(
                key,
                TargetTraffic {
                    completed: completed as u64,
                    errors_5xx: f.by_class[3] as u64,
                    p50_ms: bucket_quantile(&delta, 0.5),
                    p99_ms: bucket_quantile(&delta, 0.99),
                },
            );
        }
        out
    }

    /// Responses so far per target virtual node (keyed `MESH/NODE`), summed over its
    /// callers (what [`Statsd::traffic`] counts, without starting a new percentile window).
    pub fn completed(&self) -> BTreeMap<String, u64> {
        let held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_target(&held.edges)
            .into_iter()
            .map(|(key, f)| (key, f.by_class.iter().sum::<f64>() as u64))
            .collect()
    }

    /// Receives on `socket` until `stop`.
    pub async fn receive(self, socket: tokio::net::UdpSocket, stop: impl Future<Output = ()>) {
        let mut buf = vec![0u8; 65_536];
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                got = socket.recv_from(&mut buf) => match got {
                    Ok((n, _)) => self.datagram(&buf[..n]),
                    Err(e) => tracing::debug!(error = %e, "statsd receive failed"),
                },
            }
        }
    }
}

/// The figures of `edges` summed per target (keyed `MESH/NODE`), and per route for the
/// routes with a cluster of their own (keyed `MESH/NODE~ROUTER~ROUTE`, as
/// [`controlplane::route_target_key`]).
fn by_target(edges: &BTreeMap<Edge, Figures>) -> BTreeMap<String, Figures> {
    let mut summed: BTreeMap<String, Figures> = BTreeMap::new();
    for (edge, f) in edges {
        let node = format!("{}/{}", edge.mesh, edge.target);
        if let Some(route) = &edge.route {
            let key = format!("{node}{}{route}", controlplane::ROUTE_MARK);
            summed.entry(key).or_default().add(f);
        }
        summed.entry(node).or_default().add(f);
    }
    summed
}

/// `NAME:VALUE|TYPE[|@RATE][|#TAG:V,...]`, when it is one of ours; else why not.
fn parse(line: &str) -> Result<(Edge, Reading), &'static str> {
    let (name, rest) = line.split_once(':').ok_or("malformed")?;
    if !matches!(
        name,
        "envoy.cluster.upstream_rq_total"
            | "envoy.cluster.upstream_rq_xx"
            | "envoy.cluster.upstream_rq_retry"
            | "envoy.cluster.outlier_detection.ejections_enforced_total"
            | "envoy.cluster.upstream_cx_active"
            | "envoy.cluster.upstream_rq_time"
    ) {
        return Err("unknown");
    }
    let mut fields = rest.split('|');
    let value: f64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or("malformed")?;
    let kind = fields.next().ok_or("malformed")?;
    let (mut rate, mut tags) = (1.0, "");
    for f in fields {
        if let Some(r) = f.strip_prefix('@') {
            rate = r
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or("malformed")?;
        } else if let Some(t) = f.strip_prefix('#') {
            tags = t;
        }
    }
    let tag = |key: &str| {
        tags.split(',')
            .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
    };
    if tags.len() > 4 * MAX_VALUE {
        return Err("too_long");
    }
    let (Some(mesh), Some(cluster)) = (tag("appmesh.mesh"), tag("envoy.cluster_name")) else {
        return Err("untagged");
    };
    let (kind_label, node) = match (tag("appmesh.virtual_node"), tag("appmesh.virtual_gateway")) {
        (Some(n), _) => ("VirtualNode", n),
        (None, Some(g)) => ("VirtualGateway", g),
        (None, None) => return Err("untagged"),
    };
    if [mesh, node, cluster].iter().any(|v| v.len() > MAX_VALUE) {
        return Err("too_long");
    }
    // Not an egress cluster of the caller's mesh (the xDS cluster, say): not a target.
    let (target, route) = egress_target(cluster, mesh).ok_or("unknown")?;
    let edge = Edge {
        mesh: mesh.to_owned(),
        kind: kind_label,
        node: node.to_owned(),
        target,
        route,
    };
    let reading = match (name, kind) {
        ("envoy.cluster.upstream_rq_total", "c") => Reading::Requests(value / rate),
        ("envoy.cluster.upstream_rq_retry", "c") => Reading::Retries(value / rate),
        ("envoy.cluster.outlier_detection.ejections_enforced_total", "c") => {
            Reading::Ejections(value / rate)
        }
        ("envoy.cluster.upstream_cx_active", "g") => Reading::ActiveConnections(value),
        ("envoy.cluster.upstream_rq_xx", "c") => {
            let class = tag("envoy.response_code_class")
                .and_then(|c| c.parse::<usize>().ok())
                .filter(|c| (2..=5).contains(c))
                .ok_or("unknown")?;
            Reading::Class(class - 2, value / rate)
        }
        ("envoy.cluster.upstream_rq_time", "ms" | "h" | "d") => Reading::Time(value),
        _ => return Err("malformed"),
    };
    Ok((edge, reading))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: &str = "appmesh.mesh:gophermesh,appmesh.virtual_node:requester,envoy.cluster_name:cds_egress_gophermesh_distributor-v1_http_8080";

    /// Retries and ejections add up; the connections are a gauge (the last value).
    #[test]
    fn retries_ejections_and_connections_are_kept_per_target() {
        let s = Statsd::default();
        for _ in 0..2 {
            s.datagram(
                format!(
                    "envoy.cluster.upstream_rq_retry:3|c|#{TAGS}\nenvoy.cluster.outlier_detection.ejections_enforced_total:1|c|#{TAGS}\nenvoy.cluster.upstream_cx_active:4|g|#{TAGS}"
                )
                .as_bytes(),
            );
        }
        let (edges, _) = s.snapshot();
        let f = edges.values().next().expect("one edge");
        assert_eq!(
            (f.retries, f.ejections, f.active_connections),
            (6.0, 2.0, 4.0)
        );
    }

    #[test]
    fn envoys_lines_become_the_callers_figures_per_target() {
        let s = Statsd::default();
        s.datagram(
            format!(
                "envoy.cluster.upstream_rq_total:5|c|#{TAGS}\nenvoy.cluster.upstream_rq_total:2|c|@0.5|#{TAGS}\nenvoy.cluster.upstream_rq_xx:4|c|#envoy.response_code_class:2,{TAGS}\nenvoy.cluster.upstream_rq_xx:1|c|#envoy.response_code_class:5,{TAGS}\nenvoy.cluster.upstream_rq_time:3|ms|#{TAGS}\nenvoy.cluster.upstream_rq_time:700|ms|#{TAGS}\nenvoy.server.uptime:9|g|#{TAGS}\nenvoy.cluster.upstream_rq_total:1|c"
            )
            .as_bytes(),
        );
        let (edges, families) = s.snapshot();
        let extra = super::super::render(&families, super::super::Format::Prometheus);
        let edge = Edge {
            mesh: "gophermesh".into(),
            kind: "VirtualNode",
            node: "requester".into(),
            target: "distributor-v1".into(),
            route: None,
        };
        let f = &edges[&edge];
        assert_eq!(f.requests, 9.0);
        assert_eq!(f.by_class, [4.0, 0.0, 0.0, 1.0]);
        assert_eq!((f.time_count, f.time_sum_ms), (2.0, 703.0));
        assert!(extra.contains("reason=\"unknown\"} 1"), "{extra}");
        assert!(extra.contains("reason=\"untagged\"} 1"), "{extra}");
    }

    #[test]
    fn traffic_per_target_sums_the_callers_and_takes_percentiles_of_what_arrived_since() {
        let s = Statsd::default();
        let lines: String = (0..100)
            .map(|i| {
                format!(
                    "envoy.cluster.upstream_rq_time:{}|ms|#{TAGS}\n",
                    if i < 90 { 2 } else { 40 }
                )
            })
            .collect();
        s.datagram(lines.as_bytes());
        s.datagram(
            format!("envoy.cluster.upstream_rq_xx:99|c|#envoy.response_code_class:2,{TAGS}\nenvoy.cluster.upstream_rq_xx:1|c|#envoy.response_code_class:5,{TAGS}").as_bytes(),
        );
        let t = &s.traffic()["gophermesh/distributor-v1"];
        assert_eq!((t.completed, t.errors_5xx), (100, 1));
        let (p50, p99) = (t.p50_ms.expect("p50"), t.p99_ms.expect("p99"));
        assert!((1.0..=5.0).contains(&p50), "{p50}");
        assert!((25.0..=50.0).contains(&p99), "{p99}");
        // Nothing arrived since: no percentiles, the counts stand.
        let t = &s.traffic()["gophermesh/distributor-v1"];
        assert_eq!((t.completed, t.p50_ms), (100, None));
    }

    #[test]
    fn a_routes_own_cluster_counts_for_the_route_and_for_the_node() {
        let s = Statsd::default();
        let tags = |cluster: &str| {
            format!(
                "envoy.response_code_class:2,appmesh.mesh:gophermesh,appmesh.virtual_node:requester,envoy.cluster_name:{cluster}"
            )
        };
        s.datagram(
            format!(
                "envoy.cluster.upstream_rq_xx:3|c|#{}\nenvoy.cluster.upstream_rq_xx:5|c|#{}",
                tags(
                    "cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor-canary"
                ),
                tags("cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor"),
            )
            .as_bytes(),
        );
        let done = s.completed();
        assert_eq!(done["gophermesh/distributor-v2"], 8);
        assert_eq!(
            done[&controlplane::route_target_key(
                "gophermesh",
                "distributor",
                "distributor-canary",
                "distributor-v2"
            )],
            3
        );
        // /metrics keeps App Mesh's dimensions: one series for the pair, summed.
        let (edges, _) = s.snapshot();
        let text = super::super::render(
            &super::super::families(&edges),
            super::super::Format::Prometheus,
        );
        let v2: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("envoy_appmesh_HTTPCode_Target_2XX_Count{"))
            .collect();
        assert_eq!(v2.len(), 1, "{text}");
        assert!(v2[0].ends_with(" 8"), "{text}");
    }

    #[test]
    fn a_flood_of_names_and_pairs_is_counted_and_dropped_not_held() {
        let s = Statsd::default();
        for i in 0..100_000 {
            s.datagram(format!("envoy.made_up.stat_{i}:1|c|#{TAGS}").as_bytes());
        }
        for i in 0..(MAX_EDGES + 500) {
            s.datagram(
                format!("envoy.cluster.upstream_rq_total:1|c|#appmesh.mesh:m,appmesh.virtual_node:n{i},envoy.cluster_name:cds_egress_m_t_http_80").as_bytes(),
            );
        }
        let (edges, families) = s.snapshot();
        let extra = super::super::render(&families, super::super::Format::Prometheus);
        assert_eq!(edges.len(), MAX_EDGES);
        assert!(extra.contains("reason=\"unknown\"} 100000"), "{extra}");
        assert!(extra.contains("reason=\"full\"} 500"), "{extra}");
    }
}
