//! What several kinds share: tags, port mappings and protocols, durations.

use serde::{Deserialize, Serialize};

/// An App Mesh tag (accepted and kept; the local mesh does not use tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `http`, `http2`, `grpc` or `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Protocol {
    /// The name used in JSON and in Envoy cluster names.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub port: i64,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    /// `http 8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.protocol.as_str(), self.port)
    }
}

/// `s` or `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationUnit {
    S,
    Ms,
}

/// An App Mesh duration: `{"value": 15, "unit": "s"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duration {
    pub value: i64,
    pub unit: DurationUnit,
}

impl Duration {
    /// The duration as a `std::time::Duration`; negative values become zero (the checks
    /// refuse them before this is used).
    pub fn to_std(self) -> std::time::Duration {
        let v = u64::try_from(self.value).unwrap_or(0);
        match self.unit {
            DurationUnit::S => std::time::Duration::from_secs(v),
            DurationUnit::Ms => std::time::Duration::from_millis(v),
        }
    }

    /// `{"value": ms, "unit": "ms"}`.
    pub fn millis(ms: i64) -> Self {
        Self {
            value: ms,
            unit: DurationUnit::Ms,
        }
    }
}
