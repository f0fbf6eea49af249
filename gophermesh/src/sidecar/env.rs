//! The aws-appmesh-envoy agent's environment, read as the agent reads it, into what the
//! sidecar runs with. Where the agent would quietly fall back on a default for a value it
//! cannot use (a port that is not a number, a file it cannot read, a node identity that is
//! no App Mesh node), the sidecar refuses to start, naming the variable; where the agent
//! clamps a timer into its range, so does the sidecar (and says so). A variable the agent
//! reads and the sidecar does not implement is logged once by name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::additions::Additions;
pub use super::vars::EnvError;
use super::vars::Vars;
use super::vars::refuse;
use crate::runtime::envoy::AgentSettings;

/// What the sidecar runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarConfig {
    /// The bootstrap's identity, management server and admin port.
    pub agent: AgentSettings,
    /// `ENVOY_LOG_LEVEL` (info).
    pub log_level: String,
    /// `ENVOY_CONCURRENCY` (Envoy's own default when unset or -1).
    pub concurrency: Option<u16>,
    /// `ENVOY_ADMIN_ACCESS_LOG_FILE` (/tmp/envoy_admin_access.log).
    pub admin_access_log: PathBuf,
    /// `ENVOY_INITIAL_FETCH_TIMEOUT` in seconds (0: wait for the configuration).
    pub initial_fetch_timeout: Duration,
    /// What the agent adds to the bootstrap: stats, tracing, the SDS socket, runtime, and
    /// the files of `ENVOY_STATS_CONFIG_FILE`, `ENVOY_STATS_SINKS_CFG_FILE`,
    /// `ENVOY_TRACING_CFG_FILE`.
    pub additions: Additions,
    /// `APPNET_AGENT_HTTP_PORT` (9902): the sidecar's own `/status` and `/stats/prometheus`.
    pub agent_port: u16,
    /// `APPNET_ENVOY_RESTART_COUNT` (0; at most 10): restarts of an Envoy that died.
    pub restarts: u32,
    /// `LISTENER_DRAIN_WAIT_TIME_S` (20; 5 to 110): how long listeners drain on SIGTERM.
    pub drain: Duration,
    /// `HC_DISCONNECTED_TIMEOUT_S` (604800; 3600 to 604800): the health check fails once
    /// the management server has been unreachable this long.
    pub disconnected_timeout: Duration,
    /// Variables that were set and that this sidecar does not implement.
    pub not_implemented: Vec<&'static str>,
}

/// The agent's variables this sidecar reads but does not act on yet (logged once each).
pub const NOT_IMPLEMENTED: &[&str] = &[
    "APPMESH_SIGNING_NAME",
    "APPMESH_DUALSTACK_ENDPOINT",
    "APPMESH_METRIC_EXTENSION_VERSION",
    "MAX_REQUESTS_PER_IO_CYCLE",
];

/// The CA bundle of the agent's image, which the management server's certificate is
/// checked against (mount a private CA there); `APPMESH_XDS_CA_FILE` points elsewhere.
pub const CA_BUNDLE: &str = "/etc/pki/tls/cert.pem";

/// A knob of this project's tests, not of the agent: the disconnected timeout in
/// milliseconds, unclamped (the agent's range starts at an hour).
pub const TEST_DISCONNECTED_TIMEOUT_MS: &str = "GOPHERMESH_SIDECAR_TEST_HC_DISCONNECTED_TIMEOUT_MS";

impl Vars<'_> {
    /// The node identity and the variable it came from.
    fn node_id(&self) -> Result<(&'static str, String), EnvError> {
        let (variable, node_id) = ["APPMESH_RESOURCE_ARN", "APPMESH_RESOURCE_NAME", "APPMESH_VIRTUAL_NODE_NAME"]
            .into_iter()
            .find_map(|v| self.get(v).map(|id| (v, id.to_owned())))
            .ok_or_else(|| {
                refuse(
                    "APPMESH_RESOURCE_ARN",
                    "not set (nor APPMESH_RESOURCE_NAME, APPMESH_VIRTUAL_NODE_NAME): give the virtual node's or virtual gateway's ARN",
                )
            })?;
        crate::runtime::envoy::check_node_id(&node_id).map_err(|why| refuse(variable, why))?;
        Ok((variable, node_id))
    }

    /// `APPMESH_XDS_ENDPOINT`, else App Mesh's own endpoint in `AWS_REGION`.
    fn xds_endpoint(&self) -> Result<String, EnvError> {
        if let Some(e) = self.get("APPMESH_XDS_ENDPOINT") {
            return Ok(e.to_owned());
        }
        let region = self.get("AWS_REGION").ok_or_else(|| {
            refuse(
                "APPMESH_XDS_ENDPOINT",
                "not set, and no AWS_REGION to name App Mesh's endpoint by (which is gone since 2026-09-30): point it at your control plane, HOST:PORT",
            )
        })?;
        Ok(format!(
            "appmesh-envoy-management.{region}.amazonaws.com:443"
        ))
    }

    /// `ENVOY_LOG_LEVEL`: one Envoy knows, else info (as the agent).
    fn log_level(&self) -> String {
        const KNOWN: [&str; 8] = [
            "trace", "debug", "info", "warn", "warning", "error", "critical", "off",
        ];
        match self.get("ENVOY_LOG_LEVEL").map(str::to_lowercase) {
            None => "info".to_owned(),
            Some(l) if l == "warn" => "warning".to_owned(),
            Some(l) if KNOWN.contains(&l.as_str()) => l,
            Some(l) => {
                tracing::warn!(
                    variable = "ENVOY_LOG_LEVEL",
                    value = l,
                    "not a log level Envoy knows: info taken, as the agent takes it"
                );
                "info".to_owned()
            }
        }
    }

    /// `ENVOY_CONCURRENCY`: -1 (or unset) leaves Envoy's default.
    fn concurrency(&self) -> Result<Option<u16>, EnvError> {
        match self.number("ENVOY_CONCURRENCY", -1)? {
            -1 => Ok(None),
            n => u16::try_from(n).ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                refuse("ENVOY_CONCURRENCY", format!("`{n}` is not a number of worker threads (1 or more, or -1 for Envoy's default)"))
            }),
        }
    }

    /// `GOPHERMESH_XDS_PROTOCOL`: delta unless `sotw` is asked for.
    fn xds_protocol(&self) -> Result<crate::runtime::envoy::XdsProtocol, EnvError> {
        self.get("GOPHERMESH_XDS_PROTOCOL")
            .map_or(Ok(Default::default()), |v| {
                crate::runtime::envoy::XdsProtocol::parse(v)
                    .map_err(|why| refuse("GOPHERMESH_XDS_PROTOCOL", why))
            })
    }

    /// `APPNET_ENVOY_RESTART_COUNT`: 0 by default; negative is the agent's 3, at most 10.
    fn restarts(&self) -> Result<u32, EnvError> {
        Ok(match self.number("APPNET_ENVOY_RESTART_COUNT", 0)? {
            r if r < 0 => 3,
            r => u32::try_from(r.min(10)).unwrap_or(10),
        })
    }

    /// `HC_DISCONNECTED_TIMEOUT_S` as the agent clamps it, or the tests' knob.
    fn disconnected_timeout(&self) -> Result<Duration, EnvError> {
        match self.get(TEST_DISCONNECTED_TIMEOUT_MS) {
            Some(ms) => ms.parse().map(Duration::from_millis).map_err(|_| {
                refuse(
                    "GOPHERMESH_SIDECAR_TEST_HC_DISCONNECTED_TIMEOUT_MS",
                    "milliseconds",
                )
            }),
            None => Ok(Duration::from_secs(self.clamped(
                "HC_DISCONNECTED_TIMEOUT_S",
                604_800,
                (3600, 604_800),
            )?)),
        }
    }
}

/// Reads the sidecar's configuration from `env` (the process environment, as a map).
pub fn read(env: &BTreeMap<String, String>) -> Result<SidecarConfig, EnvError> {
    let vars = Vars(env);
    let (node_variable, node_id) = vars.node_id()?;
    let additions = super::additions::read(&vars, &node_id, node_variable)?;
    let cluster = vars
        .get("APPMESH_RESOURCE_CLUSTER")
        .or_else(|| vars.get("APPMESH_VIRTUAL_NODE_CLUSTER"))
        .map_or_else(|| node_id.clone(), str::to_owned);
    let initial_fetch = vars.number("ENVOY_INITIAL_FETCH_TIMEOUT", 0)?;
    let initial_fetch_timeout = Duration::from_secs(
        u64::try_from(initial_fetch)
            .map_err(|_| refuse("ENVOY_INITIAL_FETCH_TIMEOUT", "seconds, 0 or more"))?,
    );
    Ok(SidecarConfig {
        agent: AgentSettings {
            node_id,
            cluster,
            xds_endpoint: vars.xds_endpoint()?,
            admin_port: vars.port("ENVOY_ADMIN_ACCESS_PORT", 9901)?,
            ca_file: vars
                .get("APPMESH_XDS_CA_FILE")
                .map_or_else(|| PathBuf::from(CA_BUNDLE), PathBuf::from),
            protocol: vars.xds_protocol()?,
        },
        log_level: vars.log_level(),
        concurrency: vars.concurrency()?,
        admin_access_log: PathBuf::from(
            vars.get("ENVOY_ADMIN_ACCESS_LOG_FILE")
                .unwrap_or("/tmp/envoy_admin_access.log"),
        ),
        initial_fetch_timeout,
        additions,
        agent_port: vars.port("APPNET_AGENT_HTTP_PORT", 9902)?,
        restarts: vars.restarts()?,
        drain: Duration::from_secs(vars.clamped("LISTENER_DRAIN_WAIT_TIME_S", 20, (5, 110))?),
        disconnected_timeout: vars.disconnected_timeout()?,
        not_implemented: NOT_IMPLEMENTED
            .iter()
            .copied()
            .filter(|v| vars.get(v).is_some())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ARN: &str =
        "arn:aws:appmesh:us-east-1:111122223333:mesh/gophermesh/virtualNode/requester";

    #[test]
    fn the_agents_defaults() {
        let c = read(&env(&[
            ("APPMESH_RESOURCE_ARN", ARN),
            ("AWS_REGION", "eu-west-1"),
        ]))
        .expect("runs");
        assert_eq!(
            c.agent.xds_endpoint,
            "appmesh-envoy-management.eu-west-1.amazonaws.com:443"
        );
        assert_eq!((c.agent.admin_port, c.agent_port), (9901, 9902));
        assert_eq!(c.agent.cluster, ARN);
        assert_eq!(c.log_level, "info");
        assert_eq!(
            (c.restarts, c.drain, c.disconnected_timeout),
            (0, Duration::from_secs(20), Duration::from_secs(604_800))
        );
        assert_eq!(c.concurrency, None);
    }

    #[test]
    fn timers_out_of_range_take_the_agents_default_and_the_knob_shortens_the_timeout() {
        let c = read(&env(&[
            ("APPMESH_VIRTUAL_NODE_NAME", "mesh/m/virtualNode/n"),
            ("APPMESH_XDS_ENDPOINT", "cp.local:15010"),
            ("LISTENER_DRAIN_WAIT_TIME_S", "1"),
            ("HC_DISCONNECTED_TIMEOUT_S", "60"),
            ("APPNET_ENVOY_RESTART_COUNT", "50"),
            ("ENVOY_LOG_LEVEL", "WARN"),
            ("APPMESH_SIGNING_NAME", "appmesh"),
        ]))
        .expect("runs");
        assert_eq!(c.drain, Duration::from_secs(20));
        assert_eq!(c.disconnected_timeout, Duration::from_secs(604_800));
        assert_eq!(c.restarts, 10);
        assert_eq!(c.log_level, "warning");
        assert_eq!(c.not_implemented, ["APPMESH_SIGNING_NAME"]);
        let c = read(&env(&[
            ("APPMESH_VIRTUAL_NODE_NAME", "mesh/m/virtualNode/n"),
            ("APPMESH_XDS_ENDPOINT", "cp.local:15010"),
            (TEST_DISCONNECTED_TIMEOUT_MS, "1500"),
        ]))
        .expect("runs");
        assert_eq!(c.disconnected_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (
                &[("APPMESH_XDS_ENDPOINT", "x:1")],
                "APPMESH_RESOURCE_ARN: not set",
            ),
            (
                &[("APPMESH_RESOURCE_ARN", "arn:aws:ecs:us-east-1:1:task/x")],
                "APPMESH_RESOURCE_ARN: `arn:aws:ecs",
            ),
            (
                &[("APPMESH_RESOURCE_ARN", ARN)],
                "APPMESH_XDS_ENDPOINT: not set, and no AWS_REGION",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENVOY_ADMIN_ACCESS_PORT", "nine"),
                ],
                "ENVOY_ADMIN_ACCESS_PORT: `nine` is not a port",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("APPNET_AGENT_HTTP_PORT", "70000"),
                ],
                "APPNET_AGENT_HTTP_PORT: `70000` is not a port",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENVOY_STATS_CONFIG_FILE", "/nonexistent/stats.yaml"),
                ],
                "ENVOY_STATS_CONFIG_FILE: cannot read /nonexistent/stats.yaml",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                    ("ENABLE_ENVOY_JAEGER_TRACING", "true"),
                ],
                "ENABLE_ENVOY_JAEGER_TRACING: only one tracer may be enabled",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENABLE_ENVOY_DOG_STATSD", "yes"),
                ],
                "ENABLE_ENVOY_DOG_STATSD: `yes` is not a boolean",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENVOY_STATS_FLUSH_INTERVAL", "10"),
                ],
                "ENVOY_STATS_FLUSH_INTERVAL: `10` is not a duration",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                    ("XRAY_SAMPLING_RATE", "1.5"),
                ],
                "XRAY_SAMPLING_RATE: `1.5` is not a decimal from 0 to 1.00",
            ),
            (
                &[
                    ("APPMESH_RESOURCE_ARN", ARN),
                    ("APPMESH_XDS_ENDPOINT", "x:1"),
                    ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                    ("AWS_XRAY_DAEMON_ADDRESS", "xray.local:2000"),
                ],
                "AWS_XRAY_DAEMON_ADDRESS: `xray.local:2000` is not an IP address",
            ),
        ];
        for (pairs, said) in cases {
            let e = read(&env(pairs)).expect_err(said);
            assert!(e.to_string().starts_with(said), "{e} / {said}");
        }
    }
}
