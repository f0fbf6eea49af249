//! A node's resources of one type, encoded once as the `resources` field of a
//! `DiscoveryResponse` and shared by every stream that sends them (the cache keeps them,
//! the ADS wire writes them).

use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::google::protobuf::Any;

/// One resource type's resources of one node, encoded once as the `resources` field of a
/// `DiscoveryResponse`, with a hash of them (to skip pushes that would change nothing).
pub struct Encoded {
    pub(crate) bytes: Bytes,
    hash: u64,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Encoded {
    pub fn new<'a>(resources: impl IntoIterator<Item = &'a Any>) -> Self {
        let mut buf = BytesMut::new();
        for any in resources {
            prost::encoding::message::encode(2, any, &mut buf);
        }
        let bytes = buf.freeze();
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        Self {
            bytes,
            hash: hasher.finish(),
        }
    }

    /// A hash of the resources (equal resources, equal hash).
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// The version delta xDS gives `resource`: a hash of its encoding.
pub fn version_of(resource: &envoy_types::pb::google::protobuf::Any) -> String {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut hasher = DefaultHasher::new();
    resource.type_url.hash(&mut hasher);
    resource.value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
