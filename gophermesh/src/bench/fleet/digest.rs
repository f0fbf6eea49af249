//! A digest of a configuration, the same whether read from the ADS responses a simulated
//! sidecar received or from a real Envoy's config dump, so that the two can be compared.

use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message as _;
use std::collections::BTreeMap;

/// A digest line of a route target: route configuration, virtual host, cluster and, for
/// weighted clusters, the weight. Both digests write them here, so that they compare.
fn target_line(config: &str, host: &str, cluster: &str, weight: Option<u64>) -> String {
    match weight {
        Some(w) => format!("{config} {host} -> {cluster} x{w}"),
        None => format!("{config} {host} -> {cluster}"),
    }
}

/// What a response's resources say, as lines that a real Envoy's config dump gives too:
/// each cluster's and listener's name, and each route configuration's name with every
/// route's target clusters and weights, by virtual host. Sorted.
pub(super) fn digest_of(response: &DiscoveryResponse) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for any in &response.resources {
        match response.type_url.as_str() {
            CLUSTER_TYPE => lines.push(format!(
                "cluster {}",
                Cluster::decode(any.value.as_slice())?.name
            )),
            LISTENER_TYPE => lines.push(format!(
                "listener {}",
                Listener::decode(any.value.as_slice())?.name
            )),
            _ => {
                let config = RouteConfiguration::decode(any.value.as_slice())?;
                lines.push(format!("routes {}", config.name));
                for host in &config.virtual_hosts {
                    for route in &host.routes {
                        let Some(Action::Route(action)) = &route.action else {
                            continue;
                        };
                        match &action.cluster_specifier {
                            Some(ClusterSpecifier::Cluster(c)) => {
                                lines.push(target_line(&config.name, &host.name, c, None));
                            }
                            Some(ClusterSpecifier::WeightedClusters(w)) => {
                                for c in &w.clusters {
                                    let weight = c.weight.map_or(0, |w| u64::from(w.value));
                                    lines.push(target_line(
                                        &config.name,
                                        &host.name,
                                        &c.name,
                                        Some(weight),
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    lines.sort();
    Ok(lines)
}

/// The same lines from a real Envoy's `/config_dump`, with each type's version.
pub(super) fn digest_of_dump(
    dump: &serde_json::Value,
) -> BTreeMap<&'static str, (u64, Vec<String>)> {
    let version = |v: &serde_json::Value| v.as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = BTreeMap::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or_default();
        let (type_url, items) = if kind.ends_with("ClustersConfigDump") {
            (CLUSTER_TYPE, &config["dynamic_active_clusters"])
        } else if kind.ends_with("ListenersConfigDump") {
            (LISTENER_TYPE, &config["dynamic_listeners"])
        } else if kind.ends_with("RoutesConfigDump") {
            (ROUTE_TYPE, &config["dynamic_route_configs"])
        } else {
            continue;
        };
        let mut lines = Vec::new();
        let mut newest = 0;
        for item in items.as_array().into_iter().flatten() {
            match type_url {
                CLUSTER_TYPE => {
                    newest = newest.max(version(&item["version_info"]));
                    lines.push(format!("cluster {}", text(&item["cluster"]["name"])));
                }
                LISTENER_TYPE => {
                    let active = &item["active_state"];
                    newest = newest.max(version(&active["version_info"]));
                    lines.push(format!("listener {}", text(&active["listener"]["name"])));
                }
                _ => {
                    newest = newest.max(version(&item["version_info"]));
                    let config = &item["route_config"];
                    let name = text(&config["name"]);
                    lines.push(format!("routes {name}"));
                    for host in config["virtual_hosts"].as_array().into_iter().flatten() {
                        // A delta Envoy's virtual hosts came by VHDS, named
                        // `CONFIG/HOST`; the digest names the host alone.
                        let full = text(&host["name"]);
                        let host_name = full
                            .strip_prefix(&format!("{name}/"))
                            .unwrap_or(&full)
                            .to_owned();
                        for route in host["routes"].as_array().into_iter().flatten() {
                            let action = &route["route"];
                            if let Some(c) = action["cluster"].as_str() {
                                lines.push(target_line(&name, &host_name, c, None));
                            }
                            for c in action["weighted_clusters"]["clusters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                            {
                                lines.push(target_line(
                                    &name,
                                    &host_name,
                                    &text(&c["name"]),
                                    Some(c["weight"].as_u64().unwrap_or(0)),
                                ));
                            }
                        }
                    }
                }
            }
        }
        lines.sort();
        out.insert(type_url, (newest, lines));
    }
    out
}
