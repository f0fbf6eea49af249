//! App Mesh's metadata of each resource: ARN, uid, version (bumped by every change to it),
//! creation and update times, and the client token of the last write.

use meshmodel::Key;
use serde::{Deserialize, Serialize};

/// App Mesh's metadata of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub arn: String,
    pub uid: String,
    pub version: i64,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub last_updated_at: f64,
    /// The client token of the write that made this version, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Who owns the resources and where they live, for ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub account: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
        }
    }
}

impl Identity {
    /// The ARN of `key` in mesh `mesh`.
    pub fn arn(&self, mesh: &str, key: &Key) -> String {
        format!(
            "arn:aws:appmesh:{}:{}:mesh/{mesh}{}",
            self.region,
            self.account,
            key.arn_suffix()
        )
    }

    /// Metadata for a resource made now: version 1, a fresh uid.
    pub fn new_meta(&self, mesh: &str, key: &Key, token: Option<String>) -> Meta {
        let at = now();
        Meta {
            arn: self.arn(mesh, key),
            uid: format!("{:032x}", fastrand::u128(..)),
            version: 1,
            created_at: at,
            last_updated_at: at,
            client_token: token,
        }
    }
}

impl Meta {
    /// The metadata of the next version of this resource, written with `token`.
    pub fn next_version(&self, token: Option<String>) -> Self {
        Self {
            version: self.version + 1,
            last_updated_at: now(),
            client_token: token,
            ..self.clone()
        }
    }
}

/// Now, in seconds since the Unix epoch, to the millisecond (as App Mesh reports times).
fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_versions_follow_app_mesh() {
        let identity = Identity {
            region: "eu-west-1".to_owned(),
            account: "111122223333".to_owned(),
        };
        let key = Key::VirtualNode("requester".to_owned());
        let meta = identity.new_meta("gophers", &key, Some("t1".to_owned()));
        assert_eq!(
            meta.arn,
            "arn:aws:appmesh:eu-west-1:111122223333:mesh/gophers/virtualNode/requester"
        );
        assert_eq!(meta.version, 1);
        assert_eq!(meta.uid.len(), 32);
        let next = meta.next_version(None);
        assert_eq!(
            (next.version, &next.uid, next.client_token.as_deref()),
            (2, &meta.uid, None)
        );
        assert!(next.last_updated_at >= meta.created_at);
    }
}
