//! Cloud Map discovery: the instances of each virtual node whose service discovery is
//! `awsCloudMap`, read with Cloud Map's `DiscoverInstances` and published in the store, so
//! that the callers' clusters hold them as their endpoints (App Mesh does the same through
//! EDS).
//!
//! A node's instances are those of its namespace and service whose attributes equal all of
//! the node's `attributes`, healthy ones first (`HEALTHY_OR_ELSE_ALL`: every instance when
//! none is healthy). Each is reached at its `AWS_INSTANCE_IPV4` (or `AWS_INSTANCE_IPV6`)
//! and `AWS_INSTANCE_PORT` ([`Instance`]). A node whose lookup fails keeps the instances
//! it had, and the failure is logged with the node's name; a lookup that succeeds and finds
//! none empties it (its callers answer 503, as App Mesh's Envoy does).
//!
//! The client is the AWS SDK's, configured from the environment as the DynamoDB store's is
//! (region, credentials from the environment, a profile or the task role). With an endpoint
//! of one's own (`AWS_ENDPOINT_URL_SERVICEDISCOVERY` or `AWS_ENDPOINT_URL`, e.g. moto), the
//! calls go to that endpoint as it is: the SDK would put `DiscoverInstances`'s `data-` host
//! prefix in front of it (`data-127.0.0.1`), which only AWS's own endpoints have.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_servicediscovery::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_servicediscovery::error::BoxError;
use aws_sdk_servicediscovery::types::HealthStatusFilter;
use meshmodel::appmesh::AwsCloudMapServiceDiscovery;

use crate::state::placement::Instance;
use crate::state::store::Store;

/// The instance of Cloud Map's attributes, if they give an address.
fn instance_of(attributes: &std::collections::HashMap<String, String>) -> Option<Instance> {
    let ip = attributes
        .get("AWS_INSTANCE_IPV4")
        .or_else(|| attributes.get("AWS_INSTANCE_IPV6"))?
        .parse()
        .ok()?;
    let port = attributes
        .get("AWS_INSTANCE_PORT")
        .and_then(|p| p.parse().ok());
    Some(Instance { ip, port })
}

/// The Cloud Map client.
#[derive(Debug, Clone)]
pub struct CloudMap {
    client: Client,
}

/// Strips the `data-` host prefix the SDK puts in front of an endpoint of one's own
/// (before the request is signed, so the signature is for the host it goes to).
#[derive(Debug)]
struct NoHostPrefix;

impl Intercept for NoHostPrefix {
    fn name(&self) -> &'static str {
        "NoHostPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_owned();
        if let Some((scheme, host)) = uri.split_once("://") {
            if let Some(own) = host.strip_prefix("data-") {
                request.set_uri(format!("{scheme}://{own}"))?;
            }
        }
        Ok(())
    }
}

impl CloudMap {
    /// A client configured from the environment; `None` when no region is configured.
    pub async fn from_env() -> Option<Self> {
        let config = crate::state::aws::sdk_config().await;
        config.region()?;
        let own_endpoint = ["AWS_ENDPOINT_URL_SERVICEDISCOVERY", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        let mut builder = aws_sdk_servicediscovery::config::Builder::from(&config);
        if own_endpoint {
            builder = builder.interceptor(NoHostPrefix);
        }
        Some(Self {
            client: Client::from_conf(builder.build()),
        })
    }

    /// The instances `discovery` names, sorted.
    pub async fn discover(
        &self,
        discovery: &AwsCloudMapServiceDiscovery,
    ) -> Result<Vec<Instance>, String> {
        let mut call = self
            .client
            .discover_instances()
            .namespace_name(&discovery.namespace_name)
            .service_name(&discovery.service_name)
            .health_status(HealthStatusFilter::HealthyOrElseAll)
            .max_results(1000);
        for a in &discovery.attributes {
            call = call.query_parameters(&a.key, &a.value);
        }
        let answer = call
            .send()
            .await
            .map_err(|e| crate::state::aws::said(&e, "Cloud Map"))?;
        let mut instances: Vec<Instance> = answer
            .instances()
            .iter()
            .filter_map(|i| i.attributes().and_then(instance_of))
            .collect();
        instances.sort();
        instances.dedup();
        Ok(instances)
    }
}

/// The virtual nodes of `mesh` that Cloud Map discovers, by name.
pub fn discovered_nodes(mesh: &meshmodel::Mesh) -> Vec<(String, AwsCloudMapServiceDiscovery)> {
    mesh.virtual_nodes
        .iter()
        .filter_map(|(name, node)| {
            let sd = node.value.spec.service_discovery.as_ref()?;
            Some((name.clone(), sd.aws_cloud_map.clone()?))
        })
        .collect()
}

/// Looks up every Cloud Map node of every mesh of the store every `every`, and publishes
/// what changed, mesh by mesh. Runs until the task is dropped.
pub async fn follow(store: Store, cloud_map: CloudMap, every: Duration) {
    // Per mesh and node, the reason its last lookup failed (said once per streak).
    let mut failing: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        let snapshot = store.current();
        for (mesh, state) in &snapshot.meshes {
            let mut found = state.discovered.clone();
            let nodes = discovered_nodes(&state.mesh);
            found.retain(|name, _| nodes.iter().any(|(n, _)| n == name));
            for (name, discovery) in &nodes {
                let which = (mesh.clone(), name.clone());
                match cloud_map.discover(discovery).await {
                    Ok(instances) => {
                        if failing.remove(&which).is_some() {
                            tracing::info!(%mesh, node = %name, "Cloud Map answers again");
                        }
                        found.insert(name.clone(), instances);
                    }
                    Err(reason) => {
                        // The node keeps what it had.
                        if failing.get(&which) != Some(&reason) {
                            tracing::warn!(
                                %mesh,
                                node = %name,
                                namespace = %discovery.namespace_name,
                                service = %discovery.service_name,
                                "Cloud Map lookup failed, keeping the last instances found: {reason}"
                            );
                            failing.insert(which, reason);
                        }
                    }
                }
            }
            let now = store.current();
            if now.mesh(mesh).is_some_and(|m| m.discovered != found) {
                tracing::info!(
                    %mesh,
                    nodes = found.len(),
                    instances = found.values().map(Vec::len).sum::<usize>(),
                    "Cloud Map instances changed"
                );
                store.set_discovered(mesh, found);
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_read_from_their_attributes() {
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let i = instance_of(&attrs(&[
            ("AWS_INSTANCE_IPV4", "10.0.0.7"),
            ("AWS_INSTANCE_PORT", "9080"),
            ("version", "v2"),
        ]))
        .expect("an instance");
        assert_eq!(i.at(8080), "10.0.0.7:9080".parse().expect("addr"));
        let v6 = instance_of(&attrs(&[("AWS_INSTANCE_IPV6", "fd00::7")])).expect("an instance");
        assert_eq!(v6.at(8080), "[fd00::7]:8080".parse().expect("addr"));
        assert_eq!(
            instance_of(&attrs(&[("AWS_INSTANCE_IPV4", "not-an-ip")])),
            None
        );
        assert_eq!(instance_of(&attrs(&[("version", "v1")])), None);
    }
}
