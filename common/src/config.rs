//! Flags shared by every binary, flattened into each binary's own `clap` struct.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// How log lines are written to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured when stdout is a terminal).
    #[default]
    Human,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Logging and trace-export settings.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Which log events to print, in tracing's EnvFilter syntax (e.g. `info`,
    /// `warn,distributor=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// OTLP/HTTP collector to export spans to (e.g. `http://127.0.0.1:4318`);
    /// `/v1/traces` is appended unless the URL already ends with it. Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
        }
    }
}

/// How a server treats its connections and how it stops.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// How long a client may take to send its request headers; the same limit closes a
    /// keep-alive connection left idle that long (e.g. `10s`).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// After SIGTERM or Ctrl-C, how long requests in flight may take to finish
    /// before the process exits anyway (e.g. `10s`, `500ms`).
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

impl Default for ServerArgs {
    fn default() -> Self {
        Self {
            header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Parses a human duration such as `250ms`, `2s` or `1m 30s`.
///
/// A bare number is refused, because it is ambiguous between seconds and milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write it with a unit, like 500ms or 2s")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("with a unit"), "{err}");
    }
}
