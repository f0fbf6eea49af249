//! An Envoy's own Prometheus stats (`/stats/prometheus`, its egress clusters only), read
//! into one caller's figures per target: the Envoys `up` runs are asked when `/metrics`
//! is.

use std::collections::BTreeMap;

use super::{BUCKETS_MS, Edge, Figures, egress_target};

/// The admin path: egress clusters' stats only (`filter=^cluster\.cds_egress_`), those
/// that were used.
pub const PATH: &str = "/stats/prometheus?usedonly&filter=%5Ecluster%5C.cds_egress_";

/// The figures in `text` (Envoy's Prometheus output) of the caller `kind` `node` in `mesh`,
/// per target.
pub fn read(text: &str, mesh: &str, kind: &'static str, node: &str) -> BTreeMap<Edge, Figures> {
    let mut out: BTreeMap<Edge, Figures> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.strip_suffix('}').and_then(|s| s.split_once('{')) else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(key)
                    .and_then(|v| v.strip_prefix("=\""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        let Some((target, route)) =
            label("envoy_cluster_name").and_then(|c| egress_target(c, mesh))
        else {
            continue;
        };
        let edge = Edge {
            mesh: mesh.to_owned(),
            kind,
            node: node.to_owned(),
            target,
            route,
        };
        let f = out.entry(edge).or_default();
        match name {
            "envoy_cluster_upstream_rq_total" => f.requests += value,
            "envoy_cluster_upstream_rq_retry" => f.retries += value,
            "envoy_cluster_outlier_detection_ejections_enforced_total" => f.ejections += value,
            "envoy_cluster_upstream_cx_active" => f.active_connections += value,
            "envoy_cluster_upstream_rq_xx" => {
                if let Some(i) = label("envoy_response_code_class")
                    .and_then(|c| c.parse::<usize>().ok())
                    .filter(|c| (2..=5).contains(c))
                {
                    f.by_class[i - 2] += value;
                }
            }
            "envoy_cluster_upstream_rq_time_bucket" => {
                let le = label("le").and_then(|l| l.parse::<f64>().ok());
                if let Some(i) =
                    le.and_then(|le| BUCKETS_MS.iter().position(|b| (b - le).abs() < 1e-9))
                {
                    f.buckets[i] += value;
                }
            }
            "envoy_cluster_upstream_rq_time_sum" => f.time_sum_ms += value,
            "envoy_cluster_upstream_rq_time_count" => f.time_count += value,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envoys_cluster_stats_become_figures_per_target() {
        let text = r#"# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080"} 90
envoy_cluster_upstream_rq_total{envoy_cluster_name="cds_egress_gophermesh_distributor-v2_http_8080"} 10
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080"} 89
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080",le="5"} 80
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080",le="+Inf"} 90
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080"} 310.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="cds_egress_gophermesh_distributor-v1_http_8080"} 90
envoy_cluster_upstream_rq_total{envoy_cluster_name="xds_cluster"} 3
"#;
        let got = read(text, "gophermesh", "VirtualNode", "requester");
        assert_eq!(got.len(), 2);
        let v1 = got
            .iter()
            .find(|(e, _)| e.target == "distributor-v1")
            .map(|(_, f)| f)
            .expect("v1");
        assert_eq!(v1.requests, 90.0);
        assert_eq!(v1.by_class, [89.0, 0.0, 0.0, 1.0]);
        assert_eq!(v1.buckets[2], 80.0);
        assert_eq!((v1.time_sum_ms, v1.time_count), (310.5, 90.0));
    }
}
