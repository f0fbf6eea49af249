//! The walk of [`super::reads`] against the translation, on meshes made at random (fixed
//! seeds): cut down to what the walk names, a state translates every node as the whole
//! state does; and after a random change, every node whose reads are the same translates
//! as before.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Value, json};

use super::*;
use crate::state::placement::{Instance, Placement};
use crate::translate::{GATEWAY_PREFIX, callers_of, for_node};
use meshmodel::mesh::{Sourced, owned_by};

const NODES: usize = 6;
const SERVICES: usize = 6;
const ROUTERS: usize = 3;
const GATEWAYS: usize = 2;

/// One random document of a mesh `m` (App Mesh `--cli-input-json`), of any kind; some are
/// refused by the model (a route of the wrong protocol for its router, ...), which is fine.
fn random_doc(rng: &mut fastrand::Rng) -> Value {
    let node = |rng: &mut fastrand::Rng| format!("n{}", rng.usize(..NODES));
    let service = |rng: &mut fastrand::Rng| format!("s{}.local", rng.usize(..SERVICES));
    let router = |rng: &mut fastrand::Rng| format!("r{}", rng.usize(..ROUTERS));
    let protocol = |rng: &mut fastrand::Rng| {
        rng.choice(["http", "http2", "grpc", "tcp"])
            .unwrap_or("http")
    };
    let listener = |rng: &mut fastrand::Rng| {
        let p = protocol(rng);
        let port = match p {
            "tcp" => 9000,
            "grpc" => 50051,
            _ => rng.choice([8080, 8081]).unwrap_or(8080),
        };
        json!({"portMapping": {"port": port, "protocol": p}})
    };
    match rng.usize(..10) {
        0 => {
            let mut spec = json!({"egressFilter": {"type": rng.choice(["ALLOW_ALL", "DROP_ALL"]).unwrap_or("DROP_ALL")}});
            if rng.bool() {
                spec["serviceDiscovery"] = json!({"ipPreference": "IPv6_PREFERRED"});
            }
            let mut doc = json!({"meshName": "m", "spec": spec});
            if rng.bool() {
                let mode = rng.choice(["STRICT", "PERMISSIVE"]).unwrap_or("STRICT");
                doc["tags"] = json!([{"key": "gophermesh:mtls", "value": mode}]);
            }
            doc
        }
        1 | 2 => {
            let name = node(rng);
            let listeners: Vec<Value> = (0..rng.usize(..3)).map(|_| listener(rng)).collect();
            let discovery = if rng.bool() {
                json!({"dns": {"hostname": format!("{name}.local")}})
            } else {
                json!({"awsCloudMap": {"namespaceName": "ns", "serviceName": name}})
            };
            let backends: Vec<Value> = (0..rng.usize(..4))
                .map(|_| json!({"virtualService": {"virtualServiceName": service(rng)}}))
                .collect();
            json!({"meshName": "m", "virtualNodeName": name, "spec": {
                "listeners": listeners, "serviceDiscovery": discovery, "backends": backends}})
        }
        3 => json!({"meshName": "m", "virtualRouterName": router(rng),
            "spec": {"listeners": [listener(rng)]}}),
        4 | 5 => {
            let targets: Vec<Value> = (0..rng.usize(1..3))
                .map(|_| json!({"virtualNode": node(rng), "weight": rng.i64(0..=100)}))
                .collect();
            let action = json!({"weightedTargets": targets});
            let spec = match protocol(rng) {
                "tcp" => json!({"tcpRoute": {"action": action}}),
                "grpc" => json!({"grpcRoute": {"match": {"serviceName": "svc"}, "action": action}}),
                p => {
                    let key = if p == "http2" {
                        "http2Route"
                    } else {
                        "httpRoute"
                    };
                    json!({key: {"match": {"prefix": rng.choice(["/", "/a"]).unwrap_or("/")}, "action": action}})
                }
            };
            json!({"meshName": "m", "virtualRouterName": router(rng),
                "routeName": format!("route{}", rng.usize(..2)), "spec": spec})
        }
        6 | 7 => {
            let provider = if rng.bool() {
                json!({"virtualRouter": {"virtualRouterName": router(rng)}})
            } else {
                json!({"virtualNode": {"virtualNodeName": node(rng)}})
            };
            json!({"meshName": "m", "virtualServiceName": service(rng),
                "spec": {"provider": provider}})
        }
        8 => json!({"meshName": "m", "virtualGatewayName": format!("g{}", rng.usize(..GATEWAYS)),
            "spec": {"listeners": [{"portMapping": {"port": 8088, "protocol": "http"}}]}}),
        _ => json!({"meshName": "m", "virtualGatewayName": format!("g{}", rng.usize(..GATEWAYS)),
            "gatewayRouteName": format!("gr{}", rng.usize(..2)), "spec": {"httpRoute": {
                "match": {"prefix": rng.choice(["/", "/b"]).unwrap_or("/")},
                "action": {"target": {"virtualService": {"virtualServiceName": service(rng)}}}}}}),
    }
}

/// `mesh` with `doc` applied, or as it was when the model refuses `doc`.
fn applied(mesh: &meshmodel::Mesh, doc: Value) -> meshmodel::Mesh {
    let Ok(resource) = meshmodel::Resource::from_value("doc.json", doc) else {
        return mesh.clone();
    };
    mesh.apply("doc.json", resource)
        .unwrap_or_else(|_| mesh.clone())
}

fn placement(rng: &mut fastrand::Rng) -> Placement {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let base = rng.choice([20000u16, 21000]).unwrap_or(20000);
    Placement {
        ingress: at(base),
        egress: at(base + 1),
        app: at(base + 2),
        reach: at(base),
        admin: at(base + 3),
    }
}

fn random_state(rng: &mut fastrand::Rng) -> MeshState {
    let mut mesh = meshmodel::Mesh {
        backends_may_dangle: true,
        ..meshmodel::Mesh::default()
    };
    mesh = applied(&mesh, json!({"meshName": "m"}));
    for _ in 0..rng.usize(10..60) {
        mesh = applied(&mesh, random_doc(rng));
    }
    let mut state = MeshState {
        mesh,
        ..MeshState::default()
    };
    for i in 0..NODES {
        if rng.u8(..3) == 0 {
            state.placements.insert(format!("n{i}"), placement(rng));
        }
        if rng.bool() {
            let ip = std::net::IpAddr::from([10, 0, 0, rng.u8(1..4)]);
            state
                .discovered
                .insert(format!("n{i}"), vec![Instance { ip, port: None }]);
        }
    }
    state
}

/// Whether `read` reads the same in `a` and `b`, compared on its own: the check that
/// [`super::changed`] and [`Reads::touched_by`] are held to.
fn same_in(read: &Read, a: &MeshState, b: &MeshState) -> bool {
    let (ma, mb) = (&a.mesh, &b.mesh);
    // The entries of a router's routes or a gateway's gateway routes, in both.
    fn same_range<T: PartialEq>(
        a: &BTreeMap<(String, String), Sourced<T>>,
        b: &BTreeMap<(String, String), Sourced<T>>,
        owner: &str,
    ) -> bool {
        let (mut a, mut b) = (owned_by(a, owner), owned_by(b, owner));
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some((ka, va)), Some((kb, vb))) if ka == kb && same_sourced(va, vb) => {}
                _ => return false,
            }
        }
    }
    fn same_at<T: PartialEq>(
        a: &BTreeMap<String, Sourced<T>>,
        b: &BTreeMap<String, Sourced<T>>,
        key: &str,
    ) -> bool {
        same(a.get(key).map(|s| &s.value), b.get(key).map(|s| &s.value))
    }
    match read {
        Read::Mesh => same(
            ma.mesh.as_ref().map(|m| &m.value),
            mb.mesh.as_ref().map(|m| &m.value),
        ),
        Read::Node(n) => same_at(&ma.virtual_nodes, &mb.virtual_nodes, n),
        Read::Service(n) => same_at(&ma.virtual_services, &mb.virtual_services, n),
        Read::Router(n) => same_at(&ma.virtual_routers, &mb.virtual_routers, n),
        Read::Gateway(n) => same_at(&ma.virtual_gateways, &mb.virtual_gateways, n),
        Read::RoutesOf(r) => same_range(&ma.routes, &mb.routes, r),
        Read::GatewayRoutesOf(g) => same_range(&ma.gateway_routes, &mb.gateway_routes, g),
        Read::Placement(n) => a.placements.get(n) == b.placements.get(n),
        Read::Discovered(n) => a.discovered.get(n) == b.discovered.get(n),
        Read::Callers(n) => callers_of(a, n) == callers_of(b, n),
    }
}

/// Whether everything `reads` names reads the same in `a` and `b`.
fn all_same_in(reads: &Reads, a: &MeshState, b: &MeshState) -> bool {
    reads.0.iter().all(|r| same_in(r, a, b))
}

/// `state` cut down to what `reads` names: what a node is translated from to check the walk.
fn cut(reads: &Reads, state: &MeshState) -> MeshState {
    let mesh = &state.mesh;
    let mut cut = meshmodel::Mesh {
        backends_may_dangle: mesh.backends_may_dangle,
        ..meshmodel::Mesh::default()
    };
    let mut placements = BTreeMap::new();
    let mut discovered = BTreeMap::new();
    let mut callers = crate::state::snapshot::Callers::new();
    fn copy<K: Ord + Clone, V: Clone>(from: &BTreeMap<K, V>, to: &mut BTreeMap<K, V>, key: &K) {
        if let Some(v) = from.get(key) {
            to.insert(key.clone(), v.clone());
        }
    }
    for read in &reads.0 {
        match read {
            Read::Mesh => cut.mesh.clone_from(&mesh.mesh),
            Read::Node(n) => copy(&mesh.virtual_nodes, &mut cut.virtual_nodes, n),
            Read::Service(n) => copy(&mesh.virtual_services, &mut cut.virtual_services, n),
            Read::Router(n) => copy(&mesh.virtual_routers, &mut cut.virtual_routers, n),
            Read::Gateway(n) => copy(&mesh.virtual_gateways, &mut cut.virtual_gateways, n),
            Read::RoutesOf(r) => {
                for (k, _) in owned_by(&mesh.routes, r) {
                    copy(&mesh.routes, &mut cut.routes, k);
                }
            }
            Read::GatewayRoutesOf(g) => {
                for (k, _) in owned_by(&mesh.gateway_routes, g) {
                    copy(&mesh.gateway_routes, &mut cut.gateway_routes, k);
                }
            }
            Read::Placement(n) => copy(&state.placements, &mut placements, n),
            Read::Discovered(n) => copy(&state.discovered, &mut discovered, n),
            Read::Callers(n) => {
                if let Some(c) = callers_of(state, n) {
                    callers.insert(n.clone(), c.clone());
                }
            }
        }
    }
    let out = MeshState {
        mesh: cut,
        placements,
        discovered,
        ..MeshState::default()
    };
    let _ = out.callers.set(callers);
    out
}

/// Every node and gateway a random mesh may have, and one it never has.
fn every_key() -> Vec<String> {
    let nodes = (0..NODES).map(|i| format!("n{i}"));
    let gateways = (0..GATEWAYS).map(|i| format!("{GATEWAY_PREFIX}g{i}"));
    nodes.chain(gateways).chain(["nobody".to_owned()]).collect()
}

#[test]
fn a_state_cut_to_what_a_node_reads_translates_that_node_the_same() {
    let mut translated = 0;
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let state = random_state(&mut rng);
        for key in every_key() {
            let reads = reads(&state, &key);
            let whole = for_node(&state, &key);
            translated += usize::from(whole.is_some());
            assert_eq!(
                for_node(&cut(&reads, &state), &key),
                whole,
                "seed {seed}, {key}: the translation reads more than {reads:?}"
            );
        }
    }
    assert!(translated > 1000, "only {translated} nodes were translated");
}

/// `state` after one random change: a document applied, a resource deleted, a node
/// placed elsewhere or its instances changed.
fn changed(rng: &mut fastrand::Rng, state: &MeshState) -> MeshState {
    let mut next = MeshState {
        mesh: state.mesh.clone(),
        placements: state.placements.clone(),
        discovered: state.discovered.clone(),
        ..MeshState::default()
    };
    let node = format!("n{}", rng.usize(..NODES));
    match rng.usize(..6) {
        0 => {
            next.placements.insert(node, placement(rng));
        }
        1 => {
            let ip = std::net::IpAddr::from([10, 0, 1, rng.u8(1..4)]);
            next.discovered
                .insert(node, vec![Instance { ip, port: None }]);
        }
        2 => {
            let m = &mut next.mesh;
            let services: Vec<String> = m.virtual_services.keys().cloned().collect();
            if let Some(s) = rng.choice(services) {
                m.virtual_services.remove(&s);
            }
        }
        _ => next.mesh = applied(&next.mesh, random_doc(rng)),
    }
    next
}

#[test]
fn a_change_leaves_every_node_that_reads_none_of_it_as_it_was() {
    let (mut kept, mut rebuilt) = (0, 0);
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(1000 + seed);
        let before = random_state(&mut rng);
        for _ in 0..5 {
            let after = changed(&mut rng, &before);
            let difference = super::changed(&before, &after);
            for key in every_key() {
                let read = reads(&before, &key);
                assert_eq!(
                    read.touched_by(&difference),
                    !all_same_in(&read, &before, &after),
                    "seed {seed}, {key}: {difference:?} against {read:?}"
                );
                if all_same_in(&read, &before, &after) {
                    kept += 1;
                    assert_eq!(
                        for_node(&before, &key),
                        for_node(&after, &key),
                        "seed {seed}, {key}: kept, yet it translates otherwise"
                    );
                    assert_eq!(reads(&before, &key), reads(&after, &key), "{key}");
                } else {
                    rebuilt += 1;
                }
            }
        }
    }
    // Neither answer alone: most nodes read nothing of one change, some read it.
    assert!(
        kept > rebuilt && rebuilt > 500,
        "kept {kept}, rebuilt {rebuilt}"
    );
}

#[test]
fn a_route_change_reads_as_changed_only_for_the_callers_of_its_router() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
    let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh loads");
    let before = MeshState {
        mesh: mesh.clone(),
        ..MeshState::default()
    };
    let weights: BTreeMap<String, i64> = [
        ("distributor-v1".to_owned(), 50),
        ("distributor-v2".to_owned(), 50),
    ]
    .into();
    let shifted = crate::state::weights::set_weights(&mesh, None, "distributor", &weights)
        .expect("weights set");
    let after = MeshState {
        mesh: shifted,
        ..MeshState::default()
    };
    let keys = [
        "requester",
        "distributor-v1",
        "distributor-v2",
        "virtualGateway/ingress",
    ];
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|n| !all_same_in(&reads(&before, n), &before, &after))
        .collect();
    // The requester calls the distributor; the gateway routes to it too.
    assert_eq!(changed, ["requester", "virtualGateway/ingress"]);
    for key in keys {
        let same = for_node(&before, key) == for_node(&after, key);
        assert_eq!(same, !changed.contains(&key), "{key}");
    }
}
