//! The ADS wire, written here rather than by tonic's generated server, so that a
//! response's resources are encoded once and shared: every stream that sends a node's
//! clusters, listeners or route configurations of one mesh version sends the same bytes
//! (reference-counted, down to the HTTP/2 frames), instead of copying and encoding them
//! once per stream. A fleet of sidecars of one virtual node holds one copy of their
//! configuration in the control plane, not one per sidecar.
//!
//! A `DiscoveryResponse` goes out as two pieces of one gRPC message: a head (the gRPC
//! message prefix, `version_info`, `type_url` and `nonce`) and the shared `resources`
//! (field 2, repeated). Protocol buffers read fields in any order, and so do Envoy, prost
//! and every conforming parser. (The pieces are written one after the other, so the
//! server's sockets need TCP_NODELAY, or the second waits for the Envoy's delayed ACK.)

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use http_body::Frame;
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::metadata::MetadataMap;

use super::Ads;
use crate::xds::encoded::Encoded;

/// The gRPC service name Envoy's `ads_config` calls.
const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const STREAM_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The largest request read: a request names resources, it carries none (20,000 names of
/// 50 bytes fit; a larger one ends the stream before it is read whole).
pub(super) const MAX_REQUEST: usize = 1 << 20;

/// One `DiscoveryResponse` on its way to an Envoy, already in gRPC framing.
#[derive(Debug, Clone)]
pub struct Outgoing {
    head: Bytes,
    resources: Bytes,
}

impl Outgoing {
    pub fn new(version: &str, resources: &Encoded, type_url: &str, nonce: &str) -> Self {
        Self::framed(
            head_fields(version, type_url, nonce),
            resources.bytes.clone(),
        )
    }

    /// A `DeltaDiscoveryResponse`: its `resources` entries already encoded (shared when
    /// they are all of a node's), the names `removed`. Its fields 1, 2, 4 and 5 are those
    /// of a `DiscoveryResponse`.
    pub fn delta(
        version: &str,
        entries: Bytes,
        type_url: &str,
        nonce: &str,
        removed: &[String],
    ) -> Self {
        let mut fields = head_fields(version, type_url, nonce);
        prost::encoding::string::encode_repeated(6, removed, &mut fields);
        Self::framed(fields, entries)
    }

    /// A message of `fields` and then `resources`, behind the gRPC message prefix.
    fn framed(fields: BytesMut, resources: Bytes) -> Self {
        let length = fields.len() + resources.len();
        let mut head = BytesMut::with_capacity(5 + fields.len());
        head.put_u8(0); // not compressed
        // A message over 4 GiB cannot be framed; the translation's output is far smaller.
        head.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
        head.extend_from_slice(&fields);
        Self {
            head: head.freeze(),
            resources,
        }
    }

    /// The message's bytes, without the gRPC prefix.
    pub fn bytes(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.head.len() + self.resources.len());
        message.extend_from_slice(&self.head[5..]);
        message.extend_from_slice(&self.resources);
        message
    }

    /// The response as a message again (what an Envoy reads).
    pub fn decode(&self) -> Result<DiscoveryResponse, prost::DecodeError> {
        DiscoveryResponse::decode(self.bytes().as_slice())
    }

    /// Whether its resources are the very bytes of `encoded` (shared, not copied).
    #[cfg(test)]
    pub(crate) fn shares(&self, encoded: &Encoded) -> bool {
        self.resources.as_ptr() == encoded.bytes.as_ptr()
            && self.resources.len() == encoded.bytes.len()
    }
}

/// A response's version (field 1), type URL (4) and nonce (5), encoded: the same fields
/// in a `DiscoveryResponse` and a `DeltaDiscoveryResponse`.
fn head_fields(version: &str, type_url: &str, nonce: &str) -> BytesMut {
    let mut fields = BytesMut::new();
    prost::encoding::string::encode(1, &version.to_owned(), &mut fields);
    prost::encoding::string::encode(4, &type_url.to_owned(), &mut fields);
    prost::encoding::string::encode(5, &nonce.to_owned(), &mut fields);
    fields
}

/// Reads the requests (`DiscoveryRequest`s, or delta ones) of a stream.
#[derive(Debug)]
struct RequestDecoder<M>(std::marker::PhantomData<M>);

impl<M> RequestDecoder<M> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<M: prost::Message + Default + Send + 'static> Decoder for RequestDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "a {} that does not decode: {e}",
                std::any::type_name::<M>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("request")
            ))
        })
    }
}

/// The requests of type `M` in a stream's `body`.
fn requests<M, B>(body: B) -> Streaming<M>
where
    M: prost::Message + Default + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    Streaming::new_request(RequestDecoder::<M>::new(), body, None, Some(MAX_REQUEST))
}

/// A streaming gRPC response whose messages arrive on `rx`.
fn streaming(rx: mpsc::Receiver<Result<Outgoing, Status>>) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
        rx,
        queued: None,
        finished: false,
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The body of one ADS stream's response: each [`Outgoing`] as its two pieces, then the
/// gRPC status as trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    queued: Option<Bytes>,
    finished: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(chunk) = this.queued.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let status = match std::task::ready!(this.rx.poll_recv(cx)) {
            Some(Ok(out)) => {
                this.queued = Some(out.resources).filter(|b| !b.is_empty());
                return Poll::Ready(Some(Ok(Frame::data(out.head))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.finished = true;
        let mut trailers = http::HeaderMap::new();
        // A status whose message cannot be a header keeps its code.
        if let Err(plain) = status.add_header(&mut trailers) {
            let _ = Status::new(plain.code(), "").add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

/// The ADS gRPC service, ready for tonic's `Server::add_service`.
#[derive(Debug, Clone)]
pub struct AdsServer(pub(super) Ads);

impl tonic::server::NamedService for AdsServer {
    const NAME: &'static str = SERVICE;
}

impl<B> tower_service::Service<http::Request<B>> for AdsServer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if path != STREAM_PATH && path != DELTA_PATH {
            let other = Status::unimplemented(format!("{SERVICE} has no method {path}"));
            return std::future::ready(Ok(other.into_http()));
        }
        let (parts, body) = request.into_parts();
        // tonic's transport puts the peer's address in the extensions.
        let peer = tonic::Request::from_parts(MetadataMap::new(), parts.extensions, ())
            .remote_addr()
            .map(|a| a.to_string());
        let rx = if path == DELTA_PATH {
            self.0
                .open_delta(requests::<DeltaDiscoveryRequest, _>(body), peer)
        } else {
            self.0.open(requests::<DiscoveryRequest, _>(body), peer)
        };
        std::future::ready(Ok(streaming(rx)))
    }
}
