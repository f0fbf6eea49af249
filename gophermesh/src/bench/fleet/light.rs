//! How a simulated delta sidecar reads its stream cheaply: each response as the resources'
//! names with their bodies left encoded (slices of the received buffer, not copied), and
//! the size of the response as it came on the wire. The simulated fleet shares the
//! machine's cores with the control plane it measures; decoding every body of 10,000
//! sidecars' connect storm (757 KB each) into owned messages cost the fleet more CPU than
//! the control plane spent serving it.

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message as _;
use prost::bytes::Bytes;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A `DeltaDiscoveryResponse` with only what the sidecar reads (other fields skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Response {
    #[prost(string, tag = "1")]
    pub(super) system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub(super) resources: Vec<Entry>,
    #[prost(string, tag = "4")]
    pub(super) type_url: String,
    #[prost(string, tag = "5")]
    pub(super) nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub(super) removed_resources: Vec<String>,
}

/// A `Resource`: its name and its body (an encoded `Any`), both as received (the name is
/// read as bytes, so that reading it allocates nothing).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Entry {
    #[prost(bytes = "bytes", tag = "2")]
    pub(super) resource: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub(super) name: Bytes,
}

impl Entry {
    /// The resource's name.
    pub(super) fn name(&self) -> anyhow::Result<String> {
        String::from_utf8(self.name.to_vec())
            .map_err(|_| anyhow::anyhow!("a resource name that is not UTF-8"))
    }
}

/// The delta ADS call's codec: requests encoded as usual, responses read as
/// ([`Response`], its encoded size).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Light;

impl Codec for Light {
    type Encode = DeltaDiscoveryRequest;
    type Decode = (Response, usize);
    type Encoder = Light;
    type Decoder = Light;

    fn encoder(&mut self) -> Self::Encoder {
        Light
    }

    fn decoder(&mut self) -> Self::Decoder {
        Light
    }
}

impl Encoder for Light {
    type Item = DeltaDiscoveryRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode a request: {e}")))
    }
}

impl Decoder for Light {
    type Item = (Response, usize);
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let size = prost::bytes::Buf::remaining(src);
        let response = Response::decode(src)
            .map_err(|e| Status::internal(format!("a response that does not decode: {e}")))?;
        Ok(Some((response, size)))
    }
}

/// Opens the delta ADS stream of `requests` on `channel`.
pub(super) async fn open(
    channel: tonic::transport::Channel,
    requests: impl tokio_stream::Stream<Item = DeltaDiscoveryRequest> + Send + 'static,
) -> Result<tonic::Streaming<(Response, usize)>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the ADS server is not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let response = grpc
        .streaming(tonic::Request::new(requests), path, Light)
        .await?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    use envoy_types::pb::google::protobuf::Any;

    use super::*;

    #[test]
    fn the_light_response_reads_what_the_full_one_says() {
        let body = Any {
            type_url: "t".into(),
            value: vec![1, 2, 3],
        };
        let full = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: "t".into(),
            nonce: "3".into(),
            removed_resources: vec!["gone".into()],
            resources: vec![Resource {
                name: "a".into(),
                version: "v1".into(),
                resource: Some(body.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let light = Response::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(light.system_version_info, "7");
        assert_eq!((light.nonce.as_str(), light.type_url.as_str()), ("3", "t"));
        assert_eq!(light.removed_resources, ["gone"]);
        assert_eq!(light.resources[0].name().expect("a name"), "a");
        assert_eq!(
            Any::decode(light.resources[0].resource.clone()).expect("an Any"),
            body
        );
    }
}
