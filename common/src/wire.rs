//! The distributor's answer, as it goes over the wire.
//!
//! The requester parses it to check it and to read the version, but forwards the
//! distributor's JSON as it came, so fields added by a newer distributor are not lost.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A distributor version. Each version is a different gopher.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The first gopher.
    V1,
    /// The second gopher; its answer carries fields v1 lacks.
    V2,
}

impl Version {
    /// `"v1"` or `"v2"`, as in headers, JSON and image tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!(
                "`{other}` is not a distributor version; use v1 or v2"
            )),
        }
    }
}

/// The response header that names the version that answered.
pub const X_GOPHER_VERSION: &str = "x-gopher-version";

/// Which gopher answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gopher {
    pub name: String,
    pub color: String,
    /// Path of the gopher's picture on the distributor that answered.
    pub image: String,
}

/// Where the distributor runs on ECS, from the task metadata endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_arn: String,
    pub availability_zone: Option<String>,
}

/// What `GET /` on the distributor answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributorAnswer {
    /// Always `"distributor"`.
    pub service: String,
    pub version: Version,
    pub gopher: Gopher,
    /// The host (or container) name of the instance that answered.
    pub host: String,
    /// RFC 3339 time the answer was made.
    pub served_at: String,
    /// Present when the distributor runs as an ECS task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskInfo>,
    /// v2 only: what the gopher has to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// v2 only: what this version added, so clients can see the API evolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&Version::V2).ok().as_deref(),
            Some("\"v2\"")
        );
        assert_eq!("v1".parse::<Version>(), Ok(Version::V1));
        let err = "v3".parse::<Version>().unwrap_err();
        assert!(err.contains("use v1 or v2"), "{err}");
    }

    #[test]
    fn v1_answers_omit_the_v2_fields() {
        let answer = DistributorAnswer {
            service: "distributor".into(),
            version: Version::V1,
            gopher: Gopher {
                name: "n".into(),
                color: "c".into(),
                image: "/gopher.svg".into(),
            },
            host: "h".into(),
            served_at: "t".into(),
            task: None,
            greeting: None,
            features: vec![],
        };
        let json = serde_json::to_value(&answer).unwrap_or_default();
        assert!(json.get("greeting").is_none());
        assert!(json.get("features").is_none());
        assert!(json.get("task").is_none());
    }
}
