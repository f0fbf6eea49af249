//! One node's resources of one type as delta xDS sends them: each resource's name, its
//! version (a hash of its encoding) and its `resources` entry of a `DeltaDiscoveryResponse`,
//! encoded once and shared by every delta stream of the node; and what changed between two
//! listings, worked out once for every stream that moves from one to the other.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;

use super::encoded::version_of;

/// A type's resources for delta streams.
#[derive(Debug, Default)]
pub struct Listing {
    pub names: Vec<String>,
    pub versions: Vec<String>,
    /// Where each name is.
    pub index: HashMap<String, usize>,
    /// Every resource's entry (field 2 of a `DeltaDiscoveryResponse`, framed), one after
    /// the other: a response that carries them all shares these bytes.
    pub all: Bytes,
    /// Each entry's place in `all`.
    spans: Vec<(usize, usize)>,
}

impl Listing {
    /// The listing of `resources` (name, resource), each version a hash of its encoding.
    pub fn new(resources: &[(String, Any)]) -> Self {
        let versions: Vec<String> = resources.iter().map(|(_, a)| version_of(a)).collect();
        let mut buf = BytesMut::new();
        let mut spans = Vec::with_capacity(resources.len());
        for ((name, any), version) in resources.iter().zip(&versions) {
            let start = buf.len();
            let entry = Resource {
                name: name.clone(),
                version: version.clone(),
                resource: Some(any.clone()),
                ..Default::default()
            };
            prost::encoding::message::encode(2, &entry, &mut buf);
            spans.push((start, buf.len()));
        }
        let names: Vec<String> = resources.iter().map(|(n, _)| n.clone()).collect();
        Self {
            index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            names,
            versions,
            all: buf.freeze(),
            spans,
        }
    }

    /// The version of resource `name`, when there is one.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.versions[i].as_str())
    }

    /// The entries of resources `chosen` (indices, in order), as one run of bytes: the
    /// shared bytes when they are all of them.
    pub fn entries(&self, chosen: &[usize]) -> Bytes {
        if chosen.len() == self.names.len() && chosen.iter().enumerate().all(|(i, &c)| i == c) {
            return self.all.clone();
        }
        let mut out = BytesMut::new();
        for &i in chosen {
            let (start, end) = self.spans[i];
            out.extend_from_slice(&self.all[start..end]);
        }
        out.freeze()
    }

    /// What changed from `before` to this listing: the resources new or not as they were
    /// (indices here), and the names gone.
    pub fn changes_since(&self, before: &Listing) -> Changes {
        let changed = (0..self.names.len())
            .filter(|&i| before.version(&self.names[i]) != Some(self.versions[i].as_str()))
            .collect();
        let removed = before
            .names
            .iter()
            .filter(|n| !self.index.contains_key(*n))
            .cloned()
            .collect();
        Changes { changed, removed }
    }
}

/// What changed between two listings of a type.
#[derive(Debug, Default)]
pub struct Changes {
    /// Indices (in the newer listing) of the resources new or changed.
    pub changed: Vec<usize>,
    /// Names of the resources gone.
    pub removed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use prost::Message as _;

    fn any(text: &str) -> Any {
        Any {
            type_url: "t".into(),
            value: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn entries_decode_as_a_responses_resources_and_changes_are_told_apart() {
        let before = Listing::new(&[("a".into(), any("1")), ("b".into(), any("1"))]);
        let after = Listing::new(&[("b".into(), any("2")), ("c".into(), any("1"))]);
        let changes = after.changes_since(&before);
        assert_eq!(changes.changed, [0, 1], "b changed, c is new");
        assert_eq!(changes.removed, ["a"]);
        let same = Listing::new(&[("a".into(), any("1")), ("b".into(), any("1"))]);
        assert!(same.changes_since(&before).changed.is_empty());

        let response =
            DeltaDiscoveryResponse::decode(after.entries(&[1]).as_ref()).expect("decodes");
        assert_eq!(response.resources.len(), 1);
        assert_eq!(response.resources[0].name, "c");
        assert_eq!(response.resources[0].version, after.versions[1]);
        assert_eq!(response.resources[0].resource, Some(any("1")));
        let whole = after.entries(&[0, 1]);
        assert_eq!(
            whole.as_ptr(),
            after.all.as_ptr(),
            "all of them: the shared bytes"
        );
        let both = DeltaDiscoveryResponse::decode(whole.as_ref()).expect("decodes");
        assert_eq!(both.resources.len(), 2);
    }
}
