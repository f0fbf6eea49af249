//! A bare ADS client, as an Envoy opens its stream: for the tests that speak to the
//! control plane without an Envoy (its first answer, or what it refuses).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

/// A request of `type_url` from Envoy `node` (a node id such as
/// `mesh/gophermesh/virtualNode/requester`) naming `names`.
pub fn request(node: &str, type_url: &str, names: Vec<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            cluster: node.rsplit('/').next().unwrap_or(node).into(),
            ..Node::default()
        }),
        type_url: type_url.into(),
        resource_names: names,
        ..DiscoveryRequest::default()
    }
}

/// Opens a stream to the ADS server at `xds` (HOST:PORT, plaintext), sends `first` and
/// returns the first answer, or the status the stream ended with.
pub async fn first_answer(
    xds: &str,
    first: DiscoveryRequest,
) -> Result<DiscoveryResponse, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await.expect("queued");
    let mut answers = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Held open until the first answer (or the end): dropping it would end the stream.
    let answer = answers.message().await;
    drop(tx);
    answer?.ok_or_else(|| tonic::Status::cancelled("the stream ended without an answer"))
}
