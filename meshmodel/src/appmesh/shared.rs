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

/// An App Mesh duration: `{"value": 15, "unit": "s"}`. Read only when it is one Envoy
/// takes: not negative, and at most [`Duration::MAX_SECONDS`] (protobuf's longest
/// `Duration`, which Envoy refuses to go past), so that no duration the API accepts makes
/// an Envoy refuse its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawDuration")]
pub struct Duration {
    pub value: i64,
    pub unit: DurationUnit,
}

/// A duration as written, before its range is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuration {
    value: i64,
    unit: DurationUnit,
}

impl TryFrom<RawDuration> for Duration {
    type Error = String;

    fn try_from(raw: RawDuration) -> Result<Self, String> {
        let (max, unit) = match raw.unit {
            DurationUnit::S => (Duration::MAX_SECONDS, "s"),
            DurationUnit::Ms => (Duration::MAX_SECONDS * 1000, "ms"),
        };
        match raw.value {
            v if v < 0 => Err(format!("value {v}: a duration must not be negative")),
            v if v > max => Err(format!(
                "value {v}: at most {max} {unit} (10,000 years, the longest duration Envoy takes)"
            )),
            value => Ok(Duration {
                value,
                unit: raw.unit,
            }),
        }
    }
}

impl Duration {
    /// The longest duration, in seconds: protobuf's (and so Envoy's), 10,000 years.
    pub const MAX_SECONDS: i64 = 315_576_000_000;

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
