//! What the agent adds to a bootstrap beyond the node's identity and its management
//! server: stats tags, the stats flush interval, a DogStatsD sink, one tracer (X-Ray,
//! Datadog or Jaeger), the SDS socket's cluster, the outlier event log, the runtime
//! layers; and the files named by `ENVOY_STATS_CONFIG_FILE`, `ENVOY_STATS_SINKS_CFG_FILE`
//! and `ENVOY_TRACING_CFG_FILE`, merged as the agent merges them. Each is read from the
//! agent's variables with the agent's defaults; a value the agent would refuse is refused
//! here too, naming the variable.

use serde_json::{Map, Value, json};

use super::vars::{EnvError, Vars, refuse};

/// The files of bootstrap configuration, in the agent's order of merging.
const FILES: [&str; 3] = [
    "ENVOY_TRACING_CFG_FILE",
    "ENVOY_STATS_CONFIG_FILE",
    "ENVOY_STATS_SINKS_CFG_FILE",
];

/// The bootstrap fields the environment sets, and the files merged over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Additions {
    /// Fields set from variables (an object of bootstrap fields).
    fields: Map<String, Value>,
    /// The files' contents, each with the variable that named it.
    files: Vec<(&'static str, Map<String, Value>)>,
}

/// The node a bootstrap is for: its mesh, kind (`virtualNode` or `virtualGateway`), name.
struct Resource<'a> {
    mesh: &'a str,
    kind: &'a str,
    name: &'a str,
}

impl<'a> Resource<'a> {
    /// As the agent splits an id: `…mesh/MESH/KIND/NAME`.
    fn of(node_id: &'a str) -> Option<Self> {
        let mut bits = node_id.split('/').skip(1);
        Some(Resource {
            mesh: bits.next()?,
            kind: bits.next()?,
            name: bits.next()?,
        })
    }

    fn snake_kind(&self) -> &'static str {
        if self.kind == "virtualGateway" {
            "virtual_gateway"
        } else {
            "virtual_node"
        }
    }
}

/// The tag specifiers the agent always sets: a listener's protocol and port, and its
/// route configuration, from stat prefixes `ingress.PROTOCOL.PORT`.
const LISTENER_TAGS: [(&str, &str); 3] = [
    (
        "appmesh.listener_protocol",
        r".*?\.ingress\.((\w+?)\.)[0-9]+?\.(.+?)$",
    ),
    (
        "appmesh.listener_port",
        r".*?\.ingress\.\w+?\.(([0-9]+?)\.)(.+?)$",
    ),
    (
        "envoy_rds_route_config",
        r".*?\.ingress\.\w+?\.[0-9]+?\.rds\.((.*?)\.)(.+?)$",
    ),
];

/// Reads the additions for the node `node_id` (one [`crate::runtime::envoy::check_node_id`]
/// accepts), from the variable `variable`.
pub(super) fn read(
    vars: &Vars<'_>,
    node_id: &str,
    variable: &'static str,
) -> Result<Additions, EnvError> {
    let resource = &Resource::of(node_id)
        .ok_or_else(|| refuse(variable, format!("`{node_id}` names no mesh and node")))?;
    let mut fields = Map::new();
    fields.insert("layered_runtime".into(), runtime(vars)?);
    fields.insert(
        "cluster_manager".into(),
        json!({"outlier_detection": {"event_log_path":
            vars.get("ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH").unwrap_or("/dev/stdout")}}),
    );
    let mut clusters = Vec::new();
    if vars.get("ENVOY_TRACING_CFG_FILE").is_none() {
        if let Some((tracing, cluster)) = tracer(vars, resource)? {
            fields.insert("tracing".into(), tracing);
            clusters.extend(cluster);
        }
    }
    if let Some(path) = vars.get("APPMESH_SDS_SOCKET_PATH") {
        clusters.push(sds_cluster(path));
    }
    if vars.get("ENVOY_STATS_CONFIG_FILE").is_none() {
        let tags = stats_tags(vars, resource)?;
        fields.insert("stats_config".into(), json!({"stats_tags": tags}));
    }
    if let Some(v) = vars.get("ENVOY_STATS_FLUSH_INTERVAL") {
        let interval = go_duration(v)
            .filter(|d| (1_000_000..=300_000_000_000).contains(d))
            .ok_or_else(|| {
                refuse(
                    "ENVOY_STATS_FLUSH_INTERVAL",
                    format!("`{v}` is not a duration from 1ms to 5m (such as 10s or 500ms)"),
                )
            })?;
        fields.insert(
            "stats_flush_interval".into(),
            json!(format!(
                "{}.{:09}s",
                interval / 1_000_000_000,
                interval % 1_000_000_000
            )),
        );
    }
    if vars.truthy("ENABLE_ENVOY_DOG_STATSD")? && vars.get("ENVOY_STATS_SINKS_CFG_FILE").is_none() {
        fields.insert("stats_sinks".into(), json!([dog_statsd(vars)?]));
    }
    if !clusters.is_empty() {
        fields.insert("static_resources".into(), json!({"clusters": clusters}));
    }
    let mut files = Vec::new();
    for name in FILES {
        if let Some(path) = vars.get(name) {
            files.push((name, config_file(name, path)?));
        }
    }
    Ok(Additions { fields, files })
}

impl Additions {
    /// Merges the additions into the agent's bootstrap `b`: the variables' fields, then
    /// the files in the agent's order (tracing and stats configuration given once, stats
    /// sinks and static listeners, clusters and secrets appended, anything else replaced).
    pub fn merge_into(&self, b: &mut Value) -> Result<(), EnvError> {
        let fields = Value::Object(self.fields.clone());
        merge(b, &fields, "the agent's variables")?;
        for (name, file) in &self.files {
            merge(b, &Value::Object(file.clone()), name)?;
            if *name == "ENVOY_STATS_SINKS_CFG_FILE" && b.get("stats_sinks").is_none() {
                return Err(refuse(name, "holds no stats_sinks"));
            }
        }
        Ok(())
    }
}

/// `fragment` merged into `b` as the agent merges a custom configuration.
fn merge(b: &mut Value, fragment: &Value, from: &'static str) -> Result<(), EnvError> {
    let Some(fragment) = fragment.as_object() else {
        return Ok(());
    };
    for (key, value) in fragment {
        match key.as_str() {
            "tracing" | "stats_config" if b.get(key).is_some() => {
                return Err(refuse(
                    from,
                    format!(
                        "a second {key}: only one may be given (by a file or by the variables)"
                    ),
                ));
            }
            "stats_sinks" => append(&mut b[key], value),
            "static_resources" => {
                for (list, items) in value.as_object().into_iter().flatten() {
                    append(&mut b[key][list], items);
                }
            }
            _ => {
                if b.get(key).is_some() {
                    tracing::warn!(field = key, from, "replaces the bootstrap's own");
                }
                b[key] = value.clone();
            }
        }
    }
    Ok(())
}

/// `items` (a list) appended to `list` (a list, or nothing yet).
fn append(list: &mut Value, items: &Value) {
    let items = items.as_array().cloned().unwrap_or_default();
    match list {
        Value::Array(existing) => existing.extend(items),
        _ => *list = Value::Array(items),
    }
}

/// A file of bootstrap configuration (JSON or YAML), its top-level keys in snake_case as
/// the bootstrap's own (the agent takes both cases, and refuses a key given in both).
fn config_file(name: &'static str, path: &str) -> Result<Map<String, Value>, EnvError> {
    let text = meshmodel::input::read_text(std::path::Path::new(path), meshmodel::input::MAX_FILE)
        .map_err(|e| refuse(name, format!("cannot read {path}: {e}")))?;
    let value: Value = serde_yaml::from_str(&text)
        .map_err(|e| refuse(name, format!("{path} is not JSON or YAML: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(refuse(
            name,
            format!("{path} is not a map of bootstrap fields"),
        ));
    };
    if fields.is_empty() {
        return Err(refuse(name, format!("{path} is empty")));
    }
    let mut snake = Map::new();
    for (key, mut value) in fields {
        let key = snake_case(&key);
        if key == "static_resources" {
            if let Value::Object(inner) = &value {
                value = Value::Object(
                    inner
                        .iter()
                        .map(|(k, v)| (snake_case(k), v.clone()))
                        .collect(),
                );
            }
        }
        if snake.insert(key.clone(), value).is_some() {
            return Err(refuse(
                name,
                format!("{path} gives {key} twice (in snake_case and in camelCase): give one"),
            ));
        }
    }
    Ok(snake)
}

/// `statsConfig` → `stats_config`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The agent's runtime: a static layer of its feature switches, and an admin layer.
fn runtime(vars: &Vars<'_>) -> Result<Value, EnvError> {
    let layer = json!({
        "envoy.features.enable_all_deprecated_features": true,
        "re2.max_program_size.error_level": 1000,
        "envoy.reloadable_features.http_set_tracing_decision_in_request_id":
            vars.truthy_or("APPMESH_SET_TRACING_DECISION", true)?,
        "envoy.reloadable_features.no_extension_lookup_by_name":
            vars.truthy_or("ENVOY_NO_EXTENSION_LOOKUP_BY_NAME", true)?,
        "envoy.reloadable_features.tcp_pool_idle_timeout":
            vars.truthy_or("ENVOY_ENABLE_TCP_POOL_IDLE_TIMEOUT", true)?,
        "envoy.reloadable_features.sanitize_original_path":
            vars.truthy_or("ENVOY_SANITIZE_ORIGINAL_PATH", true)?,
    });
    Ok(json!({"layers": [
        {"name": "static_layer_0", "static_layer": layer},
        {"name": "admin_layer", "admin_layer": {}}
    ]}))
}

/// The stats tags: the mesh and the node's name (`ENABLE_ENVOY_STATS_TAGS`), and the
/// listener tags the agent always sets.
fn stats_tags(vars: &Vars<'_>, r: &Resource<'_>) -> Result<Vec<Value>, EnvError> {
    let mut tags = Vec::new();
    if vars.truthy("ENABLE_ENVOY_STATS_TAGS")? {
        tags.push(json!({"tag_name": "appmesh.mesh", "fixed_value": r.mesh}));
        tags.push(
            json!({"tag_name": format!("appmesh.{}", r.snake_kind()), "fixed_value": r.name}),
        );
    }
    tags.extend(
        LISTENER_TAGS
            .iter()
            .map(|(name, regex)| json!({"tag_name": name, "regex": regex})),
    );
    Ok(tags)
}

/// The DogStatsD sink: `STATSD_SOCKET_PATH`, else UDP to `STATSD_ADDRESS`:`STATSD_PORT`.
fn dog_statsd(vars: &Vars<'_>) -> Result<Value, EnvError> {
    let address = match vars.get("STATSD_SOCKET_PATH") {
        Some(path) => json!({"pipe": {"path": path}}),
        None => json!({"socket_address": {
            "protocol": "UDP",
            "address": vars.get("STATSD_ADDRESS").unwrap_or("127.0.0.1"),
            "port_value": vars.port("STATSD_PORT", 8125)?
        }}),
    };
    Ok(json!({
        "name": "envoy.stat_sinks.dog_statsd",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink",
            "address": address
        }
    }))
}

/// The one tracer enabled, with the cluster it sends to (none for X-Ray, which sends UDP).
fn tracer(vars: &Vars<'_>, r: &Resource<'_>) -> Result<Option<(Value, Option<Value>)>, EnvError> {
    let enabled: Vec<&'static str> = [
        "ENABLE_ENVOY_XRAY_TRACING",
        "ENABLE_ENVOY_DATADOG_TRACING",
        "ENABLE_ENVOY_JAEGER_TRACING",
    ]
    .into_iter()
    .filter_map(|v| vars.truthy(v).map(|on| on.then_some(v)).transpose())
    .collect::<Result<_, _>>()?;
    let http = |name: &str, config: Value| json!({"http": {"name": name, "typed_config": config}});
    Ok(match enabled.as_slice() {
        [] => None,
        ["ENABLE_ENVOY_XRAY_TRACING"] => Some((http("envoy.tracers.xray", xray(vars, r)?), None)),
        ["ENABLE_ENVOY_DATADOG_TRACING"] => {
            let service = format!("envoy-{}/{}", r.mesh, r.name);
            let config = json!({
                "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig",
                "collector_cluster": "datadog_agent",
                "service_name": vars.get("DD_SERVICE").unwrap_or(&service)
            });
            let address = vars.get("DATADOG_TRACER_ADDRESS").unwrap_or("127.0.0.1");
            let port = vars.port("DATADOG_TRACER_PORT", 8126)?;
            Some((
                http("envoy.tracers.datadog", config),
                Some(tracer_cluster("datadog_agent", address, port)),
            ))
        }
        ["ENABLE_ENVOY_JAEGER_TRACING"] => {
            let json_spans = vars
                .get("JAEGER_TRACER_VERSION")
                .is_some_and(|v| v.to_lowercase().contains("json"));
            let config = json!({
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "jaeger",
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": if json_spans { "HTTP_JSON" } else { "HTTP_PROTO" },
                "shared_span_context": false
            });
            let address = vars.get("JAEGER_TRACER_ADDRESS").unwrap_or("127.0.0.1");
            let port = vars.port("JAEGER_TRACER_PORT", 9411)?;
            Some((
                http("envoy.tracers.zipkin", config),
                Some(tracer_cluster("jaeger", address, port)),
            ))
        }
        several => {
            return Err(refuse(
                several[1],
                format!(
                    "only one tracer may be enabled, and {} are: enable one of ENABLE_ENVOY_XRAY_TRACING, ENABLE_ENVOY_DATADOG_TRACING or ENABLE_ENVOY_JAEGER_TRACING",
                    several.join(" and ")
                ),
            ));
        }
    })
}

/// The X-Ray tracer: the daemon's UDP address, the segment's name and fields, and the
/// sampling rules (a manifest file, or a fixed rate written as one, inline).
fn xray(vars: &Vars<'_>, r: &Resource<'_>) -> Result<Value, EnvError> {
    let mut port = vars.port("XRAY_DAEMON_PORT", 2000)?;
    let mut address = "127.0.0.1".to_owned();
    if let Some(v) = vars.get("AWS_XRAY_DAEMON_ADDRESS") {
        let (host, p) = match v.parse::<std::net::SocketAddr>() {
            Ok(s) => (s.ip().to_string(), Some(s.port())),
            Err(_) => (v.trim_matches(['[', ']']).to_owned(), None),
        };
        if host.parse::<std::net::IpAddr>().is_err() {
            return Err(refuse(
                "AWS_XRAY_DAEMON_ADDRESS",
                format!(
                    "`{v}` is not an IP address (with an optional port), such as 127.0.0.1:2000"
                ),
            ));
        }
        address = host;
        port = p.unwrap_or(port);
    }
    let segment = vars
        .get("XRAY_SEGMENT_NAME")
        .map_or_else(|| format!("{}/{}", r.mesh, r.name), str::to_owned);
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.config.trace.v3.XRayConfig",
        "segment_name": segment,
        "daemon_endpoint": {"protocol": "UDP", "address": address, "port_value": port},
        "segment_fields": {
            "origin": "AWS::AppMesh::Proxy",
            "aws": {"app_mesh": {"mesh_name": r.mesh, "virtual_node_name": r.name}}
        }
    });
    if let Some(manifest) = sampling_rules(vars)? {
        config["sampling_rule_manifest"] = manifest;
    }
    Ok(config)
}

/// `XRAY_SAMPLING_RULE_MANIFEST` (a version 2 manifest), else `XRAY_SAMPLING_RATE` (0 to
/// 1, rounded to 0.01; 0.05 is X-Ray's own default and needs no manifest).
fn sampling_rules(vars: &Vars<'_>) -> Result<Option<Value>, EnvError> {
    const MANIFEST: &str = "XRAY_SAMPLING_RULE_MANIFEST";
    if let Some(path) = vars.get(MANIFEST) {
        let text =
            meshmodel::input::read_text(std::path::Path::new(path), meshmodel::input::MAX_FILE)
                .map_err(|e| refuse(MANIFEST, format!("cannot read {path}: {e}")))?;
        let manifest: Value = serde_json::from_str(&text)
            .map_err(|e| refuse(MANIFEST, format!("{path} is not JSON: {e}")))?;
        match manifest.get("version").and_then(Value::as_i64) {
            Some(2) => {}
            Some(1) => {
                return Err(refuse(
                    MANIFEST,
                    format!(
                        "{path}: version 1 is not supported by Envoy's X-Ray tracer; give version 2"
                    ),
                ));
            }
            _ => {
                return Err(refuse(MANIFEST, format!("{path} has no version (2)")));
            }
        }
        return Ok(Some(json!({"filename": path})));
    }
    let Some(v) = vars.get("XRAY_SAMPLING_RATE") else {
        return Ok(None);
    };
    let rate = v
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| {
            refuse(
                "XRAY_SAMPLING_RATE",
                format!("`{v}` is not a decimal from 0 to 1.00 (100%)"),
            )
        })?;
    let rate = (rate * 100.0).round() / 100.0;
    if (rate - 0.05).abs() < f64::EPSILON {
        return Ok(None);
    }
    let manifest = json!({"version": 2, "default": {"fixed_target": 1, "rate": rate}, "rules": []});
    Ok(Some(json!({"inline_string": manifest.to_string()})))
}

/// A tracer's collector: one endpoint, found by DNS.
fn tracer_cluster(name: &str, address: &str, port: u16) -> Value {
    json!({
        "name": name,
        "connect_timeout": "1s",
        "type": "STRICT_DNS",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]}
    })
}

/// The cluster of the local SDS server (SPIRE's agent, say) on its unix socket.
pub fn sds_cluster(path: &str) -> Value {
    const NAME: &str = controlplane::translate::LOCAL_SDS_CLUSTER;
    json!({
        "name": NAME,
        "connect_timeout": "1s",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {"cluster_name": NAME, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}]}
    })
}

/// A Go duration (`1m30s`, `500ms`, `10s`) in nanoseconds.
fn go_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|n| *n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    // Rounded to whole nanoseconds; bounded by the caller's range check.
    Some(total.round().min(u64::MAX as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("10s"), Some(10_000_000_000));
        assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration("500ms"), Some(500_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        for bad in ["", "10", "s", "10x", "-1s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn camel_case_keys_become_snake_case() {
        assert_eq!(snake_case("statsConfig"), "stats_config");
        assert_eq!(snake_case("stats_sinks"), "stats_sinks");
        assert_eq!(snake_case("tracing"), "tracing");
    }
}
