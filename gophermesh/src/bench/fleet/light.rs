//! How a simulated sidecar reads its stream cheaply: each response with the resources'
//! bodies left encoded (slices of the received buffer, not copied), and the size of the
//! response as it came on the wire. The simulated fleet shares the
//! machine's cores with the control plane it measures; decoding every body of 10,000
//! sidecars' connect storm (757 KB each) into owned messages cost the fleet more CPU than
//! the control plane spent serving it.

use std::marker::PhantomData;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
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

/// A `DiscoveryResponse` (state of the world) with only what the sidecar reads.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Whole {
    #[prost(string, tag = "1")]
    pub(super) version_info: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub(super) resources: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub(super) type_url: String,
    #[prost(string, tag = "5")]
    pub(super) nonce: String,
}

impl Whole {
    /// The resources, decoded (for those the sidecar reads again).
    pub(super) fn anys(&self) -> anyhow::Result<Vec<Any>> {
        self.resources
            .iter()
            .map(|r| Any::decode(r.clone()).map_err(|e| anyhow::anyhow!("a resource: {e}")))
            .collect()
    }

    /// The response as a `DiscoveryResponse` of decoded resources.
    pub(super) fn decoded(&self) -> anyhow::Result<DiscoveryResponse> {
        Ok(DiscoveryResponse {
            version_info: self.version_info.clone(),
            resources: self.anys()?,
            type_url: self.type_url.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        })
    }
}

/// An ADS call's codec: requests `Q` encoded as usual, responses read as (`R`, its
/// encoded size).
pub(super) struct Light<Q, R>(PhantomData<fn() -> (Q, R)>);

impl<Q, R> Light<Q, R> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<Q, R> Codec for Light<Q, R>
where
    Q: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    type Encode = Q;
    type Decode = (R, usize);
    type Encoder = Light<Q, R>;
    type Decoder = Light<Q, R>;

    fn encoder(&mut self) -> Self::Encoder {
        Light::new()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Light::new()
    }
}

impl<Q: prost::Message + Send + 'static, R: Send + 'static> Encoder for Light<Q, R> {
    type Item = Q;
    type Error = Status;

    fn encode(&mut self, item: Q, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode a request: {e}")))
    }
}

impl<Q: Send + 'static, R: prost::Message + Default + Send + 'static> Decoder for Light<Q, R> {
    type Item = (R, usize);
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let size = prost::bytes::Buf::remaining(src);
        let response = R::decode(src)
            .map_err(|e| Status::internal(format!("a response that does not decode: {e}")))?;
        Ok(Some((response, size)))
    }
}

/// The state-of-the-world ADS call.
pub(super) const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The delta ADS call.
pub(super) const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Opens the ADS stream `path` of `requests` on `channel`, its responses read as `R`.
pub(super) async fn open<Q, R>(
    channel: tonic::transport::Channel,
    path: &'static str,
    requests: impl tokio_stream::Stream<Item = Q> + Send + 'static,
) -> Result<tonic::Streaming<(R, usize)>, Status>
where
    Q: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the ADS server is not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let response = grpc
        .streaming(tonic::Request::new(requests), path, Light::<Q, R>::new())
        .await?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};

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

    #[test]
    fn the_light_whole_response_reads_what_the_full_one_says() {
        let body = Any {
            type_url: "t".into(),
            value: vec![4, 5],
        };
        let full = DiscoveryResponse {
            version_info: "9".into(),
            resources: vec![body.clone(), body.clone()],
            type_url: "t".into(),
            nonce: "1".into(),
            ..Default::default()
        };
        let light = Whole::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(light.decoded().expect("decoded"), full);
    }
}
