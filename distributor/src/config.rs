//! The distributor's flags. Every flag is also an environment variable.

use std::net::SocketAddr;

use clap::Parser;
use common::config::{ServerArgs, TelemetryArgs};
use common::wire::Version;

/// The Gopher distributor: answers `GET /` with its version's gopher.
#[derive(Debug, Clone, Parser)]
#[command(name = "distributor", version, about, long_about = None, after_help = "Container health check: `distributor healthcheck [--addr ADDR] [--path /health] [--timeout 2s]` exits 0 when the service answers 200.")]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Which gopher to be. When neither this flag nor GOPHER_VERSION is set, the original
    /// demo's `Tag` variable is read; when that is unset too, v1.
    #[arg(long, env = "GOPHER_VERSION", value_enum)]
    pub version_tag: Option<Version>,

    /// Demo knob: wait this many milliseconds before answering `GET /`. Off (0) by default.
    #[arg(long, env = "LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Demo knob: answer this fraction of `GET /` requests with 503 (0.0 to 1.0), to show
    /// retries and outlier detection. Off (0) by default.
    #[arg(long, env = "ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// ECS task metadata endpoint (v4). ECS sets it; when present, answers carry the task
    /// ARN and availability zone. Read once at start, in the background.
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4")]
    pub ecs_metadata_uri: Option<String>,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    /// Parses flags and environment, exiting with a message naming the flag on bad input.
    pub fn from_args_and_env() -> Self {
        let mut config = Self::parse();
        if config.version_tag.is_none()
            && let Ok(tag) = std::env::var("Tag")
        {
            match tag.parse() {
                Ok(v) => config.version_tag = Some(v),
                Err(e) => clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("environment variable Tag: {e}\n"),
                )
                .exit(),
            }
        }
        config
    }

    /// The version this process serves.
    pub fn version(&self) -> Version {
        self.version_tag.unwrap_or(Version::V1)
    }

    /// A configuration for `version` on `listen` with every knob off, for tests and embedding.
    pub fn new(listen: SocketAddr, version: Version) -> Self {
        Self {
            listen,
            version_tag: Some(version),
            latency_ms: 0,
            error_rate: 0.0,
            ecs_metadata_uri: None,
            telemetry: TelemetryArgs::default(),
            server: ServerArgs::default(),
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number; give a fraction from 0.0 to 1.0"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "`{s}` is out of range; give a fraction from 0.0 to 1.0"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_must_be_a_fraction() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").unwrap_err().contains("0.0 to 1.0"));
        assert!(parse_rate("lots").unwrap_err().contains("not a number"));
    }

    #[test]
    fn version_flag_rejects_unknown_versions() {
        let err = Config::try_parse_from(["distributor", "--version-tag", "v3"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--version-tag") && text.contains("v1, v2"),
            "{text}"
        );
    }

    #[test]
    fn version_defaults_to_v1() {
        let c = Config::try_parse_from(["distributor"]);
        assert_eq!(c.map(|c| c.version()).ok(), Some(Version::V1));
    }
}
