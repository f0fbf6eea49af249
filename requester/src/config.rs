//! The requester's flags. Every flag is also an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::config::{ServerArgs, TelemetryArgs, parse_duration};
use reqwest::Url;

/// The Gopher requester: calls the distributor and reports which version answered.
#[derive(Debug, Clone, Parser)]
#[command(name = "requester", version, about, long_about = None, after_help = "Container health check: `requester healthcheck [--addr ADDR] [--path /health] [--timeout 2s]` exits 0 when the service answers 200.")]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The distributor to call. In a mesh this is the virtual service name; the sidecar
    /// (or `--egress-proxy`) decides which version answers.
    #[arg(
        long,
        env = "DISTRIBUTOR_URL",
        default_value = "http://distributor.gophers.local:8080"
    )]
    pub distributor_url: Url,

    /// How to ask the distributor: `http` (`GET /`) or `grpc` (`gophers.Gopher/Answer`
    /// over HTTP/2 without TLS). The answer is the same; a mesh routes the two with an
    /// httpRoute or a grpcRoute.
    #[arg(long, env = "DISTRIBUTOR_PROTOCOL", value_enum, default_value = "http")]
    pub distributor_protocol: DistributorProtocol,

    /// Send distributor calls through this HTTP proxy (e.g. the sidecar's egress listener,
    /// `http://127.0.0.1:15001`) instead of connecting directly. For running beside a
    /// sidecar without iptables interception. Unset: connect directly; the usual
    /// HTTP_PROXY variables are ignored.
    #[arg(long, env = "EGRESS_PROXY")]
    pub egress_proxy: Option<Url>,

    /// How long to wait for a TCP connection to the distributor (or the proxy).
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long one distributor call may take in all, connection included.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How many `/compare` requests may run at once; more get 429 with `Retry-After`.
    #[arg(long, env = "MAX_COMPARES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_compares: u32,

    /// How long one `/compare` may run; calls still running then are abandoned and the
    /// report is marked partial. Below the mesh's 15 s per-request timeout, so the report
    /// always gets back.
    #[arg(long, env = "COMPARE_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub compare_deadline: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// How the requester asks the distributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributorProtocol {
    Http,
    Grpc,
}

impl Config {
    /// A configuration that calls `distributor_url` directly, with default timeouts.
    pub fn new(listen: SocketAddr, distributor_url: Url) -> Self {
        Self {
            listen,
            distributor_url,
            distributor_protocol: DistributorProtocol::Http,
            egress_proxy: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_compares: 4,
            compare_deadline: Duration::from_secs(10),
            telemetry: TelemetryArgs::default(),
            server: ServerArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_names_the_flag() {
        let err = Config::try_parse_from(["requester", "--distributor-url", "not a url"])
            .expect_err("must fail");
        assert!(err.to_string().contains("--distributor-url"), "{err}");
    }

    #[test]
    fn timeouts_need_units() {
        let err =
            Config::try_parse_from(["requester", "--request-timeout", "5"]).expect_err("must fail");
        assert!(err.to_string().contains("--request-timeout"), "{err}");
    }
}
