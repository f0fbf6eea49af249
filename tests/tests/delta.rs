//! Delta xDS with real Envoys. (Every `up` in the other tests runs its Envoys on delta
//! xDS, the default; these check what only a side-by-side run shows.)
//!
//! - Envoys of one node on state of the world and on delta hold the same configuration
//!   (clusters, listeners, and route configurations once the delta one's virtual hosts,
//!   sent apart by VHDS, are merged back), before and after a live weight change.
//! - A resource a delta Envoy refuses is a NACK kept in status while the Envoy serves its
//!   last good configuration, and the next good change is taken.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controlplane::translate::{CLUSTER_TYPE, NodeResources};
use controlplane::xds::ads::{Ads, EnvoyStatus, EnvoyStatuses};
use controlplane::{Cache, Identity, MeshState, Store};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use gophermesh::runtime::envoy::{XdsProtocol, bootstrap};
use prost::Message as _;
use serde_json::{Value, json};
use tests::serve::Serve;
use tests::{Guard, TempDir, client, copy_of_shipped, tool};

/// A real Envoy on loopback, its admin address.
struct Envoy {
    _child: Guard,
    admin: String,
}

impl Envoy {
    /// Envoy `label` of `node` (of mesh `mesh`, `virtualGateway/NAME` for a gateway) on
    /// `protocol`, fetching from ADS at `xds`, as its own ECS task.
    fn start(
        work: &Path,
        label: &str,
        mesh: &str,
        node: &str,
        xds: &str,
        protocol: XdsProtocol,
    ) -> Self {
        let xds = xds.parse().expect("an ADS address");
        let mut boot = bootstrap(mesh, node, ([127, 0, 0, 1], 0).into(), xds, protocol);
        boot["node"]["metadata"] = json!({"aws.appmesh.platformInfo": {
            "ecsTaskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/delta/{label}")
        }});
        let path = work.join(format!("{label}.json"));
        std::fs::write(&path, boot.to_string()).expect("bootstrap written");
        let address = work.join(format!("{label}.admin"));
        let child = Command::new(tool("envoy"))
            .arg("-c")
            .arg(&path)
            .arg("--admin-address-path")
            .arg(&address)
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .args(["--log-level", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("envoy starts (scripts/setup.sh installs it)");
        let child = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = loop {
            if let Ok(text) = std::fs::read_to_string(&address) {
                if !text.trim().is_empty() {
                    break text.trim().to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "Envoy {label} wrote no admin address"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            _child: child,
            admin,
        }
    }

    async fn dump(&self) -> Value {
        client()
            .get(format!("http://{}/config_dump", self.admin))
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("a config dump")
    }
}

/// What a config dump holds, whichever protocol brought it: each dynamic cluster, listener
/// and route configuration (sorted by name; a route configuration's virtual hosts sorted,
/// named without the `CONFIG/` that VHDS puts before them, and no `vhds`), without versions
/// or times.
fn held(dump: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let by_name = |items: &mut Vec<Value>| {
        items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    };
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or_default();
        let list = |key: &str, inner: &str| -> Vec<Value> {
            config[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| item.pointer(inner).cloned().unwrap_or(Value::Null))
                .collect()
        };
        let (what, mut items) = if kind.ends_with("ClustersConfigDump") {
            ("clusters", list("dynamic_active_clusters", "/cluster"))
        } else if kind.ends_with("ListenersConfigDump") {
            (
                "listeners",
                list("dynamic_listeners", "/active_state/listener"),
            )
        } else if kind.ends_with("RoutesConfigDump") {
            let mut configs = list("dynamic_route_configs", "/route_config");
            for config in &mut configs {
                let name = config["name"].as_str().unwrap_or_default().to_owned();
                if let Some(o) = config.as_object_mut() {
                    o.remove("vhds");
                }
                let mut hosts: Vec<Value> = config["virtual_hosts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for host in &mut hosts {
                    let short = host["name"]
                        .as_str()
                        .map(|n| n.strip_prefix(&format!("{name}/")).unwrap_or(n).to_owned());
                    host["name"] = json!(short);
                }
                by_name(&mut hosts);
                config["virtual_hosts"] = json!(hosts);
            }
            ("routes", configs)
        } else {
            continue;
        };
        by_name(&mut items);
        out.insert(what.to_owned(), json!(items));
    }
    Value::Object(out)
}

/// Waits (up to 20 s) until the two Envoys hold the same configuration, and it passes
/// `check`; what they hold.
async fn until_same(
    sotw: &Envoy,
    delta: &Envoy,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (a, b) = (held(&sotw.dump().await), held(&delta.dump().await));
        if a == b && check(&a) {
            return a;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: the Envoys on state of the world and on delta differ (or not as expected)\nsotw:  {a}\ndelta: {b}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The weights route `distributor/distributor` gives its targets, in order.
fn weights(held: &Value) -> Vec<u64> {
    let route = held["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["virtual_hosts"].as_array().into_iter().flatten())
        .flat_map(|h| h["routes"].as_array().into_iter().flatten())
        .find(|r| r["name"] == "distributor/distributor");
    route
        .and_then(|r| r.pointer("/route/weighted_clusters/clusters"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["weight"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_on_delta_and_on_state_of_the_world_hold_the_same_configuration() {
    let dir = copy_of_shipped("delta-dumps");
    let serve = Serve::start(
        &dir,
        &[
            "--mesh-dir",
            "mesh",
            "--xds-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let work = TempDir::new("delta-envoys");
    let mut pairs = Vec::new();
    for node in ["requester", "distributor-v1", "virtualGateway/ingress"] {
        let label = node.replace('/', "-");
        let start = |protocol: XdsProtocol, suffix: &str| {
            let label = format!("{label}-{suffix}");
            Envoy::start(&work, &label, "gophermesh", node, &serve.xds, protocol)
        };
        pairs.push((
            node,
            start(XdsProtocol::Sotw, "sotw"),
            start(XdsProtocol::Delta, "delta"),
        ));
    }
    for (node, sotw, delta) in &pairs {
        let same = until_same(sotw, delta, node, |h| {
            ["clusters", "listeners"]
                .iter()
                .all(|k| h[k].as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
        if *node == "requester" {
            assert_eq!(weights(&same), [90, 10], "{same}");
        }
    }

    // A live weight change: both hold it, the delta one having been sent one virtual host.
    let token = std::fs::read_to_string(dir.join(".gophermesh/control-token")).expect("token");
    let response = client()
        .put(format!("{}/v1/routes/distributor/weights", serve.control))
        .bearer_auth(token.trim())
        .json(&json!({"weights": {"distributor-v1": 50, "distributor-v2": 50}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let (_, sotw, delta) = &pairs[0];
    let after = until_same(sotw, delta, "after the change", |h| weights(h) == [50, 50]).await;
    assert!(!after["routes"].as_array().expect("routes").is_empty());
    let stats = client()
        .get(format!("http://{}/stats?filter=vhds", delta.admin))
        .send()
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("stats");
    assert!(
        stats
            .lines()
            .any(|l| l.contains("vhds.") && l.ends_with("config_reload: 2")),
        "the delta Envoy took its virtual hosts by VHDS, and the change as one more: {stats}"
    );
}

/// Node `a` of mesh `m` has one cluster, whose connect timeout is the version in seconds;
/// at version 2 a negative one, which Envoy refuses.
fn builder(store: Store) -> impl Fn(&MeshState, &str) -> Option<NodeResources> + Send + Sync {
    move |_: &MeshState, node: &str| {
        let v = store.current().version;
        let cluster = Cluster {
            name: "c".to_owned(),
            connect_timeout: Some(PbDuration {
                seconds: if v == 2 {
                    -1
                } else {
                    i64::try_from(v).unwrap_or(0)
                },
                nanos: 0,
            }),
            ..Default::default()
        };
        (node == "a").then(|| NodeResources {
            clusters: vec![(
                cluster.name.clone(),
                Any {
                    type_url: CLUSTER_TYPE.to_owned(),
                    value: cluster.encode_to_vec(),
                },
            )],
            ..NodeResources::default()
        })
    }
}

/// A check of what an Envoy holds (its config dump) and what status says of it.
type Holds<'a> = dyn Fn(&Value, &EnvoyStatus) -> bool + Sync + 'a;

/// Waits (up to 20 s) until `check` holds for Envoy `envoy` of node `m/a`; its config dump
/// and status then.
async fn until_holds(
    envoy: &Envoy,
    statuses: &EnvoyStatuses,
    what: &str,
    check: &Holds<'_>,
) -> (Value, EnvoyStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dump = envoy.dump().await;
        let status = statuses.snapshot().remove("m/a").unwrap_or_default();
        if check(&dump, &status) {
            return (dump, status);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {status:?} {}",
            held(&dump)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_envoy_refuses_a_bad_cluster_keeps_its_last_good_one_and_takes_the_next() {
    let store = Store::in_memory(
        [meshmodel::Mesh::named("m").expect("a mesh")],
        Identity::default(),
    );
    let cache = Cache::with_builder(store.clone(), Arc::new(builder(store.clone())));
    let statuses = EnvoyStatuses::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let xds = listener.local_addr().expect("address").to_string();
    let server = tonic::transport::Server::builder()
        .add_service(Ads::new(cache, statuses.clone()).into_service())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let _server = tokio::spawn(server);
    let work = TempDir::new("delta-nack");
    assert_eq!(store.current().version, 1);
    let envoy = Envoy::start(&work, "a", "m", "a", &xds, XdsProtocol::Delta);
    // Each cluster held: its name and connect timeout.
    let clusters = |dump: &Value| -> Vec<String> {
        held(dump)["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["connect_timeout"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    let first = |d: &Value, _: &EnvoyStatus| clusters(d) == ["c 1s"];
    until_holds(&envoy, &statuses, "the first cluster", &first).await;

    store.set_placements("m", Default::default());
    let refused = |_: &Value, s: &EnvoyStatus| s.last_nack.is_some();
    let (dump, status) = until_holds(&envoy, &statuses, "the NACK of version 2", &refused).await;
    let nack = status.last_nack.expect("a NACK");
    assert_eq!(
        (nack.type_url.as_str(), nack.version.as_str()),
        (CLUSTER_TYPE, "2")
    );
    assert_eq!(clusters(&dump), ["c 1s"], "the last good cluster stays");

    store.set_placements("m", Default::default());
    let third = |d: &Value, s: &EnvoyStatus| {
        clusters(d) == ["c 3s"] && s.acked.get("clusters").map(String::as_str) == Some("3")
    };
    until_holds(&envoy, &statuses, "the good version 3", &third).await;
}
