//! The simulated sidecars: one ADS stream each, as an Envoy opens it, that ACKs what it
//! receives and records when each version arrived.

use anyhow::{Context, bail};
use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use super::digest::digest_of;

/// What a simulated sidecar last received, by type: the version, and what the resources
/// say in the terms a real Envoy's config dump can be read in ([`Digest`]).
pub(super) type Received = Arc<std::sync::Mutex<BTreeMap<&'static str, (u64, Vec<String>)>>>;

/// One ACK a sidecar sent.
#[derive(Debug)]
pub(super) struct Acked {
    pub(super) client: usize,
    /// Which control plane the sidecar's stream is on (see `Addresses`).
    pub(super) replica: usize,
    pub(super) type_url: &'static str,
    pub(super) version: u64,
}

pub(super) fn short(type_url: &str) -> Option<&'static str> {
    match type_url {
        CLUSTER_TYPE => Some(CLUSTER_TYPE),
        LISTENER_TYPE => Some(LISTENER_TYPE),
        ROUTE_TYPE => Some(ROUTE_TYPE),
        _ => None,
    }
}

/// The route configuration names `listeners` ask for (as Envoy reads them from each HTTP
/// connection manager's `rds`).
pub(super) fn rds_names<'a>(
    listeners: impl IntoIterator<Item = &'a envoy_types::pb::google::protobuf::Any>,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for any in listeners {
        let listener =
            Listener::decode(any.value.as_slice()).context("a listener that does not decode")?;
        for chain in &listener.filter_chains {
            for filter in &chain.filters {
                let Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        typed,
                    ),
                ) = &filter.config_type
                else {
                    continue;
                };
                if typed.type_url.ends_with("HttpConnectionManager") {
                    let hcm = HttpConnectionManager::decode(typed.value.as_slice())
                        .context("an HTTP connection manager that does not decode")?;
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        names.push(rds.route_config_name);
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to the ADS server at `xds`.
pub(super) async fn channel(xds: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
        .connect()
        .await
        .context("cannot connect to ADS")
}

/// The node sidecar `index` says it is: a task of the `requester` node, with its own ECS
/// task ARN, as the App Mesh sidecar sends it.
pub(super) fn node_of(index: usize) -> Node {
    let text = |v: String| PbValue {
        kind: Some(Kind::StringValue(v)),
    };
    let info = Struct {
        fields: [(
            "ecsTaskArn".to_owned(),
            text(format!(
                "arn:aws:ecs:us-east-1:000000000000:task/fleet/{index}"
            )),
        )]
        .into(),
    };
    Node {
        id: "mesh/gophermesh/virtualNode/requester".to_owned(),
        cluster: "requester".to_owned(),
        metadata: Some(Struct {
            fields: [(
                "aws.appmesh.platformInfo".to_owned(),
                PbValue {
                    kind: Some(Kind::StructValue(info)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

/// One ADS stream of sidecar `index`, until it ends.
pub(super) async fn one_stream(
    xds: &str,
    index: usize,
    replica: usize,
    acks: &mpsc::UnboundedSender<Acked>,
    bytes: &AtomicU64,
    received: Option<&Received>,
) -> anyhow::Result<()> {
    let channel = channel(xds).await?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    let node = node_of(index);
    let ask = |type_url: &str, names: Vec<String>| DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names,
        ..Default::default()
    };
    tx.send(DiscoveryRequest {
        node: Some(node),
        ..ask(CLUSTER_TYPE, Vec::new())
    })
    .await?;
    tx.send(ask(LISTENER_TYPE, Vec::new())).await?;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut inbound =
        super::light::open::<_, super::light::Whole>(channel, super::light::SOTW, requests)
            .await
            .context("the ADS stream was refused")?;
    let mut routes_asked: Option<Vec<String>> = None;
    // Responses are read light (`super::light`): bodies decoded only where they are read.
    while let Some((response, size)) = inbound.message().await.context("the ADS stream broke")? {
        bytes.fetch_add(size as u64, Ordering::Relaxed);
        let Some(type_url) = short(&response.type_url) else {
            bail!(
                "a response of a type never asked for: {}",
                response.type_url
            );
        };
        let mut names = Vec::new();
        if type_url == LISTENER_TYPE {
            let wanted = rds_names(&response.anys()?)?;
            if routes_asked.as_ref() != Some(&wanted) {
                tx.send(ask(ROUTE_TYPE, wanted.clone())).await?;
                routes_asked = Some(wanted);
            }
        }
        if type_url == ROUTE_TYPE {
            names = routes_asked.clone().unwrap_or_default();
        }
        tx.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..ask(type_url, names)
        })
        .await?;
        let version = response.version_info.parse().unwrap_or(0);
        if let Some(received) = received {
            let digest = digest_of(&response.decoded()?)?;
            lock(received).insert(type_url, (version, digest));
        }
        let _ = acks.send(Acked {
            client: index,
            replica,
            type_url,
            version,
        });
    }
    Ok(())
}
