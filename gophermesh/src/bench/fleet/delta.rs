//! A simulated sidecar on delta xDS: it asks as a delta Envoy does (every cluster and
//! listener, the route configurations its listeners name, the virtual hosts of those
//! that say `vhds`), keeps what it reads again by name (adding what comes, dropping what
//! is removed), and ACKs every response by its nonce. It reads responses light
//! ([`super::light`]): bodies are decoded only where they are read.

use anyhow::{Context, bail};
use controlplane::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use controlplane::xds::vhds::{VHOST_TYPE, namespace};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use super::digest::digest_of;
use super::light;
use super::sidecar::{Acked, Received, channel, lock, node_of, rds_names, short};

/// What the sidecar holds of each type, by resource name.
type Held = BTreeMap<&'static str, BTreeMap<String, Any>>;

/// The route configurations held, each with the virtual hosts VHDS gave it (their names
/// without the configuration's), as a state-of-the-world response would carry them.
fn merged_routes(held: &Held) -> anyhow::Result<Vec<Any>> {
    let mut out = Vec::new();
    for (name, any) in held.get(ROUTE_TYPE).into_iter().flatten() {
        let mut config = RouteConfiguration::decode(any.value.as_slice())
            .context("a route configuration that does not decode")?;
        for (host_name, host) in held.get(VHOST_TYPE).into_iter().flatten() {
            if namespace(host_name) != Some(name.as_str()) {
                continue;
            }
            let mut host = VirtualHost::decode(host.value.as_slice())
                .context("a virtual host that does not decode")?;
            host.name = host_name[name.len() + 1..].to_owned();
            config.virtual_hosts.push(host);
        }
        config.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
        config.vhds = None;
        out.push(Any {
            type_url: ROUTE_TYPE.to_owned(),
            value: config.encode_to_vec(),
        });
    }
    Ok(out)
}

/// The route configurations held that take their virtual hosts by VHDS.
fn vhds_names(held: &Held) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for (name, any) in held.get(ROUTE_TYPE).into_iter().flatten() {
        let config = RouteConfiguration::decode(any.value.as_slice())
            .context("a route configuration that does not decode")?;
        if config.vhds.is_some() {
            names.push(name.clone());
        }
    }
    Ok(names)
}

/// Asks for `names` of `type_url` instead of `asked` (subscribing to the new ones and
/// unsubscribing from the others), when they differ.
async fn ask(
    tx: &mpsc::Sender<DeltaDiscoveryRequest>,
    type_url: &str,
    asked: &mut Vec<String>,
    names: Vec<String>,
) -> anyhow::Result<()> {
    if *asked == names {
        return Ok(());
    }
    let request = DeltaDiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names_subscribe: names
            .iter()
            .filter(|n| !asked.contains(n))
            .cloned()
            .collect(),
        resource_names_unsubscribe: asked
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect(),
        ..Default::default()
    };
    *asked = names;
    tx.send(request).await.context("the stream is closed")
}

/// One delta ADS stream of sidecar `index`, until it ends.
pub(super) async fn one_stream(
    xds: &str,
    index: usize,
    replica: usize,
    acks: &mpsc::UnboundedSender<Acked>,
    bytes: &AtomicU64,
    received: Option<&Received>,
) -> anyhow::Result<()> {
    let channel = channel(xds).await?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(8);
    let wildcard = |type_url: &str| DeltaDiscoveryRequest {
        type_url: type_url.to_owned(),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: Some(node_of(index)),
        ..wildcard(CLUSTER_TYPE)
    })
    .await?;
    tx.send(wildcard(LISTENER_TYPE)).await?;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut inbound = light::open::<_, light::Response>(channel, light::DELTA, requests)
        .await
        .context("the delta ADS stream was refused")?;
    let mut held = Held::new();
    let (mut routes_asked, mut hosts_asked) = (Vec::new(), Vec::new());
    while let Some((response, size)) = inbound.message().await.context("the ADS stream broke")? {
        bytes.fetch_add(size as u64, Ordering::Relaxed);
        let type_url = match response.type_url.as_str() {
            VHOST_TYPE => VHOST_TYPE,
            other => short(other)
                .with_context(|| format!("a response of a type never asked for: {other}"))?,
        };
        let of_type = held.entry(type_url).or_default();
        for name in &response.removed_resources {
            of_type.remove(name);
        }
        let nonce = response.nonce;
        let version = response.system_version_info.parse().unwrap_or(0);
        // What is read again is kept (listeners and route configurations, and everything
        // of the sidecar whose configuration is compared); of the rest, nothing, as the
        // state-of-the-world sidecars keep nothing of them.
        let keep = received.is_some() || matches!(type_url, LISTENER_TYPE | ROUTE_TYPE);
        for r in response.resources {
            if r.resource.is_empty() {
                bail!("a resource came without its body");
            }
            if keep {
                let name = r.name()?;
                let body = Any::decode(r.resource)
                    .with_context(|| format!("resource {name} is not an Any"))?;
                of_type.insert(name, body);
            }
        }
        match type_url {
            LISTENER_TYPE => {
                let wanted = rds_names(of_type.values())?;
                ask(&tx, ROUTE_TYPE, &mut routes_asked, wanted).await?;
            }
            ROUTE_TYPE => {
                let wanted = vhds_names(&held)?;
                ask(&tx, VHOST_TYPE, &mut hosts_asked, wanted).await?;
            }
            _ => {}
        }
        tx.send(DeltaDiscoveryRequest {
            response_nonce: nonce,
            ..wildcard(type_url)
        })
        .await?;
        // Routes are in place once their virtual hosts are (when they come by VHDS).
        let routes_done = match type_url {
            VHOST_TYPE => true,
            ROUTE_TYPE => hosts_asked.is_empty(),
            _ => false,
        };
        let reported = match type_url {
            VHOST_TYPE | ROUTE_TYPE if routes_done => ROUTE_TYPE,
            VHOST_TYPE | ROUTE_TYPE => continue,
            other => other,
        };
        if let Some(received) = received {
            let resources = match reported {
                ROUTE_TYPE => merged_routes(&held)?,
                other => held
                    .get(other)
                    .into_iter()
                    .flatten()
                    .map(|(_, a)| a.clone())
                    .collect(),
            };
            let whole = DiscoveryResponse {
                type_url: reported.to_owned(),
                resources,
                ..Default::default()
            };
            lock(received).insert(reported, (version, digest_of(&whole)?));
        }
        let _ = acks.send(Acked {
            client: index,
            replica,
            type_url: reported,
            version,
        });
    }
    Ok(())
}
