//! What the App Mesh API accepts, Envoy accepts: routes generated at random (well-formed
//! and malformed strings, numbers at and past their limits, regexes that RE2 takes and
//! ones it does not), each checked by the model as `create-route` checks it; every route
//! the model accepts is translated for its caller and a real Envoy validates the result
//! (`envoy --mode validate`), many routes to one Envoy run. A route Envoy refuses is
//! one that would freeze its router (every caller NACKs the whole route configuration).
//!
//! The seed is fixed (so CI checks the same cases each run) and printed;
//! `GOPHERMESH_PROPTEST_SEED=N` runs others, and `GOPHERMESH_PROPTEST_CASES=N` sets how many
//! cases are generated.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use controlplane::MeshState;
use controlplane::translate::for_node;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use meshmodel::{Mesh, Resource};
use prost::Message;
use serde_json::{Value, json};

/// The seed unless `GOPHERMESH_PROPTEST_SEED` says otherwise: fixed, so that a run in CI
/// checks what the last one did (other seeds explore further, as many as one likes).
const SEED: u64 = 20_261_207;

/// Routes generated per run unless `GOPHERMESH_PROPTEST_CASES` says otherwise.
const CASES: usize = 20_000;
/// Accepted routes validated by one Envoy run.
const BATCH: usize = 500;

/// Pieces strings are made of: the ordinary, and what Envoy (or HTTP) refuses.
const PIECES: &[&str] = &[
    "a", "Z", "9", "-", "_", ".", ":", "/", " ", "\t", "\n", "\r", "\0", "é", "\u{202e}", "*", "(",
    ")", "[", "]", "\\", "\"", "%", "?", "#", "{", "}", "|", "^", "$", "+", "~", "x-", "\u{7f}",
    "\u{1}", ";", ",", "=", "@", "'",
];

/// Regexes RE2 takes, for the share of cases that should pass the model.
const REGEXES: &[&str] = &[
    "^/v[0-9]+$",
    "[a-z]+",
    "(a|b)*",
    ".*",
    "^/gopher/.+",
    "x{2,5}",
    "(?i)abc",
    "a{1000}",
    "a{1001}",
    "(a+)+",
    "a+?",
    "a??",
    "a?+",
    "a*{2}",
];

/// The generator: its random numbers, and the directory its access log paths are in (a
/// validating Envoy opens its log files).
struct Gen(fastrand::Rng, std::path::PathBuf);

impl Gen {
    fn chance(&mut self, percent: u8) -> bool {
        self.0.u8(0..100) < percent
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.0.usize(0..from.len())]
    }

    fn nasty(&mut self) -> String {
        (0..self.0.usize(0..10))
            .map(|_| self.pick(PIECES))
            .collect()
    }

    fn token(&mut self) -> String {
        let len = self.0.usize(1..12);
        (0..len)
            .map(|_| {
                let c = self.0.usize(0..37);
                match c {
                    0..26 => char::from(b'a' + u8::try_from(c).unwrap_or(0)),
                    26..36 => char::from(b'0' + u8::try_from(c - 26).unwrap_or(0)),
                    _ => '-',
                }
            })
            .collect()
    }

    /// Mostly well-formed, sometimes anything.
    fn text(&mut self, well_formed: impl FnOnce(&mut Self) -> String) -> String {
        match self.chance(92) {
            true => well_formed(self),
            false => self.nasty(),
        }
    }

    fn number(&mut self, low: i64, high: i64) -> Value {
        match self.0.u8(0..24) {
            0 => json!(-1),
            1 => json!(i64::MAX),
            2 => json!(0),
            3 => json!(high + 1),
            _ => json!(self.0.i64(low..=high)),
        }
    }

    fn duration(&mut self) -> Value {
        let unit = match self.chance(95) {
            true => self.pick(&["ms", "s"]).to_owned(),
            false => self.nasty(),
        };
        let value = match self.0.u8(0..20) {
            0 => json!(-1),
            1 => json!(i64::MAX),
            2 => json!(0),
            3 => json!(i64::from(u32::MAX) * 1000),
            _ => json!(self.0.i64(1..=3_600_000)),
        };
        json!({"unit": unit, "value": value})
    }

    fn path(&mut self) -> String {
        self.text(|g| format!("/{}", g.token()))
    }

    fn regex(&mut self) -> String {
        match self.chance(85) {
            true => self.pick(REGEXES).to_owned(),
            false => self.nasty(),
        }
    }

    fn header_match(&mut self) -> Value {
        match self.0.u8(0..5) {
            0 => json!({"exact": self.text(Gen::token)}),
            1 => json!({"prefix": self.text(Gen::token)}),
            2 => json!({"suffix": self.text(Gen::token)}),
            3 => json!({"regex": self.regex()}),
            _ => json!({"range": {"start": self.number(0, 1000), "end": self.number(0, 2000)}}),
        }
    }

    fn route_match(&mut self) -> Value {
        let mut m = serde_json::Map::new();
        match self.0.u8(0..3) {
            0 => m.insert("prefix".into(), json!(self.path())),
            1 => m.insert("path".into(), json!({"exact": self.path()})),
            _ => m.insert("path".into(), json!({"regex": self.regex()})),
        };
        let headers: Vec<Value> = (0..self.0.usize(0..3))
            .map(|_| {
                let mut h = json!({"name": self.text(|g| format!("x-{}", g.token()))});
                if self.chance(70) {
                    h["match"] = self.header_match();
                }
                if self.chance(20) {
                    h["invert"] = json!(true);
                }
                h
            })
            .collect();
        if !headers.is_empty() {
            m.insert("headers".into(), json!(headers));
        }
        if self.chance(30) {
            let method = match self.chance(92) {
                true => self
                    .pick(&[
                        "GET", "POST", "PUT", "DELETE", "PATCH", "CONNECT", "OPTIONS", "TRACE",
                        "HEAD",
                    ])
                    .to_owned(),
                false => self.nasty(),
            };
            m.insert("method".into(), json!(method));
        }
        if self.chance(25) {
            let params: Vec<Value> = (0..self.0.usize(1..3))
                .map(|_| json!({"name": self.text(Gen::token), "match": {"exact": self.text(Gen::token)}}))
                .collect();
            m.insert("queryParameters".into(), json!(params));
        }
        Value::Object(m)
    }

    /// One route of router `distributor` (its targets are the shipped distributors).
    fn route(&mut self, i: usize) -> Value {
        let kind = match self.chance(80) {
            true => "httpRoute",
            false => "http2Route",
        };
        let mut route = json!({
            "match": self.route_match(),
            "action": {"weightedTargets": [
                {"virtualNode": "distributor-v1", "weight": self.number(0, 100)},
                {"virtualNode": "distributor-v2", "weight": self.number(0, 100)},
            ]},
        });
        if self.chance(40) {
            let events: Vec<String> = (0..self.0.usize(0..3))
                .map(|_| match self.chance(92) {
                    true => self
                        .pick(&[
                            "server-error",
                            "gateway-error",
                            "client-error",
                            "stream-error",
                        ])
                        .to_owned(),
                    false => self.nasty(),
                })
                .collect();
            let mut retry = json!({
                "maxRetries": self.number(0, 10),
                "perRetryTimeout": self.duration(),
                "httpRetryEvents": events,
            });
            if self.chance(50) {
                retry["tcpRetryEvents"] = json!(["connection-error"]);
            }
            route["retryPolicy"] = retry;
        }
        if self.chance(40) {
            route["timeout"] = json!({"idle": self.duration(), "perRequest": self.duration()});
        }
        let mut spec = json!({ kind: route });
        if self.chance(50) {
            spec["priority"] = self.number(0, 1000);
        }
        json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
            "routeName": format!("gen-{i}"), "spec": spec})
    }
}

/// Envoy access log command operators, known and not, for generated log formats.
const OPERATORS: &[&str] = &[
    "%START_TIME%",
    "%REQ(:PATH)%",
    "%RESPONSE_CODE%",
    "%DURATION%",
    "%UPSTREAM_HOST%",
    "%BYTES_SENT%",
    "%REQ(X-FORWARDED-FOR)%",
    "%BOGUS%",
    "%START_TIME(%s)%",
    "%%",
    "%",
    "%REQ()%",
    "%DOWNSTREAM_REMOTE_ADDRESS%",
    " ",
    "-",
    "\n",
];

impl Gen {
    /// One piece of a log format: mostly an operator the model knows (every one of them
    /// gets to a real Envoy over the run), with and without parameters and lengths, else
    /// anything.
    fn log_piece(&mut self) -> String {
        use meshmodel::mesh::{
            LOG_OPERATORS, LOG_OPERATORS_WITH_LENGTH, LOG_OPERATORS_WITH_PARAMETER,
        };
        match self.0.u8(0..10) {
            0..4 => format!("%{}%", self.pick(LOG_OPERATORS)),
            4 => format!("%{}()%", self.pick(LOG_OPERATORS)),
            5..7 => {
                let name = self.pick(LOG_OPERATORS_WITH_PARAMETER);
                let length = match self.chance(30) && LOG_OPERATORS_WITH_LENGTH.contains(&name) {
                    true => format!(":{}", self.0.u8(1..100)),
                    false => String::new(),
                };
                format!(
                    "%{name}({}){length}%",
                    self.text(|g| format!("x-{}", g.token()))
                )
            }
            7 => self.text(Gen::token),
            _ => self.pick(OPERATORS).to_owned(),
        }
    }

    fn log_format(&mut self) -> Value {
        let text: String = (0..self.0.usize(1..6)).map(|_| self.log_piece()).collect();
        match self.0.u8(0..3) {
            0 => json!({"text": text}),
            1 => json!({"json": [{"key": self.text(Gen::token), "value": text}]}),
            _ => json!({"text": self.nasty()}),
        }
    }

    /// A virtual node `node` listening on one port, with what App Mesh lets a listener,
    /// its service discovery and its logging say.
    fn node(&mut self, node: &str) -> Value {
        let protocol = self.pick(&["http", "http2", "grpc", "tcp"]);
        let port = self.number(1, 65535);
        let mut listener = json!({"portMapping": {"port": port, "protocol": protocol}});
        if self.chance(40) {
            let mut hc = json!({
                "protocol": self.pick(&["http", "http2", "grpc", "tcp"]),
                "healthyThreshold": self.number(2, 10),
                "unhealthyThreshold": self.number(2, 10),
                "timeoutMillis": self.number(2000, 60000),
                "intervalMillis": self.number(5000, 300_000),
            });
            if self.chance(70) {
                hc["path"] = json!(self.path());
            }
            if self.chance(30) {
                hc["port"] = port.clone();
            }
            listener["healthCheck"] = hc;
        }
        if self.chance(40) {
            listener["outlierDetection"] = json!({
                "maxServerErrors": self.number(1, 1000),
                "interval": self.duration(),
                "baseEjectionDuration": self.duration(),
                "maxEjectionPercent": self.number(0, 100),
            });
        }
        if self.chance(40) {
            let timeout = match protocol {
                "tcp" => json!({"tcp": {"idle": self.duration()}}),
                p => json!({ p: {"idle": self.duration(), "perRequest": self.duration()} }),
            };
            listener["timeout"] = timeout;
        }
        if self.chance(40) {
            let pool = match protocol {
                "http" => {
                    json!({"http": {"maxConnections": self.number(1, 100_000), "maxPendingRequests": self.number(1, 100_000)}})
                }
                "tcp" => json!({"tcp": {"maxConnections": self.number(1, 100_000)}}),
                p => json!({ p: {"maxRequests": self.number(1, 100_000)} }),
            };
            listener["connectionPool"] = pool;
        }
        let mut spec = json!({
            "listeners": [listener],
            "serviceDiscovery": {"dns": {"hostname": self.text(|g| format!("{}.gophers.local", g.token()))}},
        });
        if self.chance(50) {
            // Anything as a file name, in the test's own directory.
            let path = match self.chance(92) {
                true => format!("/dev/{}", self.pick(&["stdout", "stderr"])),
                false => {
                    let name: String = self.nasty().chars().filter(|c| *c != '/').collect();
                    format!("{}/log-{name}", self.1.display())
                }
            };
            let mut file = json!({"path": path});
            if self.chance(70) {
                file["format"] = self.log_format();
            }
            spec["logging"] = json!({"accessLog": {"file": file}});
        }
        json!({"meshName": "gophermesh", "virtualNodeName": node, "spec": spec})
    }
}

fn any<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value: message.encode_to_vec(),
    }
}

/// A listener on 127.0.0.1:`port` serving `routes` inline.
fn listener_with(port: u32, routes: RouteConfiguration) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: format!("case_{port}"),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                "envoy.extensions.filters.http.router.v3.Router",
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: format!("case-{port}"),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &hcm,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One accepted case: the route as the API took it, and its caller's route configurations.
struct Case {
    route: Value,
    routes: Vec<RouteConfiguration>,
}

/// The listeners that serve `cases`' route configurations, each on a port of its own.
fn route_listeners(cases: &[&Case]) -> Vec<Listener> {
    let mut listeners = Vec::new();
    let mut port = 20_000;
    for (i, case) in cases.iter().enumerate() {
        for rc in &case.routes {
            let mut rc = rc.clone();
            rc.name = format!("case{i}-{}", rc.name);
            listeners.push(listener_with(port, rc));
            port += 1;
        }
    }
    listeners
}

/// Whether a real Envoy takes `listeners` beside `clusters` (`envoy --mode validate`);
/// Envoy's complaint when it does not.
fn envoy_validates(
    dir: &Path,
    clusters: &[Cluster],
    listeners: Vec<Listener>,
) -> Result<(), String> {
    let bootstrap = Bootstrap {
        static_resources: Some(StaticResources {
            listeners,
            clusters: clusters.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let file = dir.join(format!("bootstrap-{}.pb", fastrand::u64(..)));
    std::fs::write(&file, bootstrap.encode_to_vec()).expect("write the bootstrap");
    // In the test's directory: a relative path in the configuration lands there.
    let out = Command::new(tests::tool("envoy"))
        .current_dir(dir)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&file)
        .output()
        .expect("envoy runs (scripts/setup.sh --tests installs it)");
    let _ = std::fs::remove_file(&file);
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The cases of `cases` that `validate` refuses, each with why: the whole batch first, and
/// when it is refused, each half again, down to the cases refused alone.
fn refused_by<'a, T>(
    cases: &[&'a T],
    validate: &dyn Fn(&[&'a T]) -> Result<(), String>,
) -> Vec<(&'a T, String)> {
    match validate(cases) {
        Ok(()) => Vec::new(),
        Err(said) if cases.len() == 1 => vec![(cases[0], said)],
        Err(_) => {
            let (a, b) = cases.split_at(cases.len() / 2);
            let mut found = refused_by(a, validate);
            found.extend(refused_by(b, validate));
            found
        }
    }
}

/// The seed of this run ([`SEED`], or `GOPHERMESH_PROPTEST_SEED`) and how many cases.
fn seed_and_cases(default: usize) -> (u64, usize) {
    let seed = std::env::var("GOPHERMESH_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let cases = std::env::var("GOPHERMESH_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (GOPHERMESH_PROPTEST_SEED={seed} replays it), {cases} cases");
    (seed, cases)
}

#[test]
fn every_route_the_api_accepts_a_real_envoy_accepts() {
    let (seed, cases) = seed_and_cases(CASES);
    let shipped = Mesh::load_dir(&tests::repo_root().join("mesh")).expect("the shipped mesh");
    let dir = tests::TempDir::new("envoy-accepts");
    let mut generate = Gen(fastrand::Rng::with_seed(seed), dir.to_path_buf());
    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..cases {
        let route = generate.route(i);
        let Ok(resource) = Resource::from_value("generated", route.clone()) else {
            refused += 1;
            continue;
        };
        let Ok(mesh) = shipped.apply("generated", resource) else {
            refused += 1;
            continue;
        };
        let resources = for_node(&MeshState::new(mesh, BTreeMap::new()), "requester")
            .expect("the requester's resources");
        for (name, c) in &resources.clusters {
            clusters
                .entry(name.clone())
                .or_insert_with(|| Cluster::decode(c.value.as_slice()).expect("a cluster"));
        }
        let routes = resources
            .routes
            .iter()
            .map(|(_, r)| RouteConfiguration::decode(r.value.as_slice()).expect("routes"))
            .collect();
        accepted.push(Case { route, routes });
    }
    println!(
        "{} routes accepted by the model, {refused} refused; validating the accepted with Envoy, {BATCH} to a run",
        accepted.len()
    );
    assert!(
        accepted.len() >= cases / 5 && refused >= cases / 10,
        "the generator should make both: {} accepted, {refused} refused",
        accepted.len()
    );
    let clusters: Vec<Cluster> = clusters.into_values().collect();
    let mut refused_by_envoy = Vec::new();
    for batch in accepted.chunks(BATCH) {
        let all: Vec<&Case> = batch.iter().collect();
        let validate = |cases: &[&Case]| envoy_validates(&dir, &clusters, route_listeners(cases));
        for (case, said) in refused_by(&all, &validate) {
            refused_by_envoy.push(format!("{}\n  Envoy: {}", case.route, said.trim()));
        }
    }
    assert!(
        refused_by_envoy.is_empty(),
        "seed {seed}: {} route(s) the API accepts but Envoy refuses:\n{}",
        refused_by_envoy.len(),
        refused_by_envoy.join("\n")
    );
}

/// `listener` (one of a node's, as translated) standing alone under `name` on `port`: its
/// route configurations (RDS, by name from `routes`) put inline.
fn standalone(listener: &Any, routes: &[(String, Any)], name: String, port: u32) -> Listener {
    let mut l = Listener::decode(listener.value.as_slice()).expect("a listener");
    l.name = name;
    if let Some(address::Address::SocketAddress(a)) =
        l.address.as_mut().and_then(|a| a.address.as_mut())
    {
        a.port_specifier = Some(socket_address::PortSpecifier::PortValue(port));
    }
    for chain in &mut l.filter_chains {
        for f in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(typed)) = &mut f.config_type else {
                continue;
            };
            if !typed.type_url.ends_with(".HttpConnectionManager") {
                continue;
            }
            let mut hcm = HttpConnectionManager::decode(typed.value.as_slice()).expect("an HCM");
            if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let rc = routes
                    .iter()
                    .find(|(n, _)| *n == rds.route_config_name)
                    .map(|(_, r)| RouteConfiguration::decode(r.value.as_slice()).expect("routes"))
                    .unwrap_or_else(|| panic!("no route configuration {}", rds.route_config_name));
                hcm.route_specifier =
                    Some(http_connection_manager::RouteSpecifier::RouteConfig(rc));
            }
            typed.value = hcm.encode_to_vec();
        }
    }
    l
}

/// One accepted virtual node: its spec as the API took it, and the listeners and clusters
/// of it and of a node that calls it.
struct NodeCase {
    node: Value,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
}

/// Virtual nodes generated at random, each with a virtual service it provides and a node
/// that calls that service: every one the model accepts is translated (the node's own
/// listeners and clusters, and the caller's, which carry the node's outlier detection and
/// connection pool) and validated by a real Envoy.
#[test]
fn every_virtual_node_the_api_accepts_a_real_envoy_accepts() {
    let (seed, cases) = seed_and_cases(CASES / 4);
    let shipped = Mesh::load_dir(&tests::repo_root().join("mesh")).expect("the shipped mesh");
    let dir = tests::TempDir::new("envoy-accepts-nodes");
    let mut generate = Gen(fastrand::Rng::with_seed(seed), dir.to_path_buf());
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut port = 20_000;
    for i in 0..cases {
        let node = generate.node(&format!("gen-{i}"));
        let service = json!({"meshName": "gophermesh", "virtualServiceName": format!("gen-{i}.svc"),
            "spec": {"provider": {"virtualNode": {"virtualNodeName": format!("gen-{i}")}}}});
        let caller = json!({"meshName": "gophermesh", "virtualNodeName": format!("caller-{i}"), "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": format!("caller-{i}.gophers.local")}},
            "backends": [{"virtualService": {"virtualServiceName": format!("gen-{i}.svc")}}]}});
        let mesh =
            [node.clone(), service, caller]
                .into_iter()
                .try_fold(shipped.clone(), |m, doc| {
                    let r = Resource::from_value("generated", doc).ok()?;
                    m.apply("generated", r).ok()
                });
        let Some(mesh) = mesh else {
            refused += 1;
            continue;
        };
        let state = MeshState::new(mesh, BTreeMap::new());
        let mut case = NodeCase {
            node,
            listeners: Vec::new(),
            clusters: Vec::new(),
        };
        for who in [format!("gen-{i}"), format!("caller-{i}")] {
            let resources = for_node(&state, &who).expect("the node's resources");
            for (name, l) in &resources.listeners {
                case.listeners.push(standalone(
                    l,
                    &resources.routes,
                    format!("{who}-{name}"),
                    port,
                ));
                port += 1;
            }
            case.clusters.extend(
                resources
                    .clusters
                    .iter()
                    .map(|(_, c)| Cluster::decode(c.value.as_slice()).expect("a cluster")),
            );
        }
        accepted.push(case);
    }
    println!(
        "{} virtual nodes accepted by the model, {refused} refused; validating the accepted with Envoy, {} to a run",
        accepted.len(),
        BATCH / 5
    );
    assert!(
        accepted.len() >= cases / 5 && refused >= cases / 10,
        "the generator should make both: {} accepted, {refused} refused",
        accepted.len()
    );
    let together = |cases: &[&NodeCase]| {
        let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
        for c in cases.iter().flat_map(|c| &c.clusters) {
            clusters.entry(c.name.clone()).or_insert_with(|| c.clone());
        }
        let clusters: Vec<Cluster> = clusters.into_values().collect();
        let listeners = cases.iter().flat_map(|c| c.listeners.clone()).collect();
        envoy_validates(&dir, &clusters, listeners)
    };
    let mut refused_by_envoy = Vec::new();
    for batch in accepted.chunks(BATCH / 5) {
        let all: Vec<&NodeCase> = batch.iter().collect();
        for (case, said) in refused_by(&all, &together) {
            refused_by_envoy.push(format!("{}\n  Envoy: {}", case.node, said.trim()));
        }
    }
    assert!(
        refused_by_envoy.is_empty(),
        "seed {seed}: {} virtual node(s) the API accepts but Envoy refuses:\n{}",
        refused_by_envoy.len(),
        refused_by_envoy.join("\n")
    );
}
