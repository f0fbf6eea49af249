//! Unit tests of [crate::translate].
use super::*;
use crate::state::placement::Placement;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;

#[test]
fn retry_events_map_to_envoy_retry_on() {
    let (on, codes) = retry_on(
        &["server-error".into(), "client-error".into()],
        &["connection-error".into()],
    );
    assert_eq!(on, "5xx,retriable-status-codes,connect-failure,reset");
    assert_eq!(codes, [409]);
}

/// The socket addresses of a cluster's endpoints, as (address, port).
fn socket_addresses(
    c: &cluster::Cluster,
) -> Vec<(String, Option<core::socket_address::PortSpecifier>)> {
    assigned_addresses(c.load_assignment.as_ref().expect("endpoints"))
}

fn assigned_addresses(
    assignment: &endpoint::ClusterLoadAssignment,
) -> Vec<(String, Option<core::socket_address::PortSpecifier>)> {
    assignment.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|lb| {
            let Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier
            else {
                panic!("no endpoint");
            };
            let Some(core::address::Address::SocketAddress(a)) =
                &e.address.as_ref().expect("address").address
            else {
                panic!("not a socket address");
            };
            (a.address.clone(), a.port_specifier.clone())
        })
        .collect()
}

/// The requester's egress cluster to distributor-v1 in `snapshot`.
fn requesters_v1_cluster(snapshot: &MeshState) -> cluster::Cluster {
    let res = for_node(snapshot, "requester").expect("resources");
    let (_, any) = res
        .clusters
        .iter()
        .find(|(n, _)| n == "cds_egress_gophermesh_distributor-v1_http_8080")
        .expect("the cluster");
    cluster::Cluster::decode(any.value.as_slice()).expect("decodes")
}

fn shipped_snapshot() -> MeshState {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
    let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh loads");
    let placements = ["distributor-v1", "distributor-v2", "requester"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let port = |k: u16| {
                SocketAddr::from((
                    [127, 0, 0, 1],
                    20000 + 10 * u16::try_from(i).unwrap_or(0) + k,
                ))
            };
            (
                (*node).to_owned(),
                Placement {
                    ingress: port(0),
                    egress: port(1),
                    app: port(2),
                    reach: port(0),
                    admin: port(3),
                },
            )
        })
        .collect();
    MeshState {
        mesh,
        placements,
        ..MeshState::default()
    }
}

#[test]
fn the_requester_gets_the_weighted_route_to_both_distributors() {
    let snapshot = shipped_snapshot();
    let res = for_node(&snapshot, "requester").expect("requester has resources");
    let clusters: Vec<&str> = res.clusters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        clusters,
        [
            "cds_ingress_gophermesh_requester_http_8080",
            "cds_egress_gophermesh_distributor-v1_http_8080",
            // distributor-v2 is the target of both routes: each route has its own cluster
            // for it, so that Envoy counts what each sends it apart.
            "cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor",
            "cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor-canary",
        ]
    );
    let listeners: Vec<&str> = res.listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        listeners,
        ["lds_ingress_127.0.0.1_20020", "lds_egress_127.0.0.1_20021"]
    );
    // Each HTTP connection manager normalizes paths, merges slashes and upgrades websockets.
    for (_, any) in &res.listeners {
        let l = listener::Listener::decode(any.value.as_slice()).expect("decodes");
        let Some(listener::filter::ConfigType::TypedConfig(config)) =
            &l.filter_chains[0].filters[0].config_type
        else {
            panic!("no typed config");
        };
        let manager = hcm::HttpConnectionManager::decode(config.value.as_slice()).expect("hcm");
        assert_eq!(manager.normalize_path.map(|b| b.value), Some(true));
        assert!(manager.merge_slashes);
        assert_eq!(manager.upgrade_configs[0].upgrade_type, "websocket");
    }

    let (name, any) = &res.routes[0];
    assert_eq!(name, "rds_egress_http_8080");
    let config = route::RouteConfiguration::decode(any.value.as_slice()).expect("decodes");
    let vhost = &config.virtual_hosts[0];
    assert_eq!(
        vhost.domains,
        [
            "distributor.gophers.local",
            "distributor.gophers.local:8080"
        ]
    );
    // The canary route (priority 1, a header match) comes first; then the weighted one.
    let names: Vec<&str> = vhost.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["distributor/distributor-canary", "distributor/distributor"]
    );
    assert_eq!(
        vhost.routes[0].r#match.as_ref().map(|m| m
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()),
        Some(vec!["x-gopher-version"])
    );
    // The canary route has no retry policy: App Mesh's default one.
    let Some(route::route::Action::Route(canary)) = &vhost.routes[0].action else {
        panic!("not a route action: {vhost:?}");
    };
    let default = canary
        .retry_policy
        .as_ref()
        .expect("the default retry policy");
    assert_eq!(
        default.retry_on,
        "unavailable,connect-failure,refused-stream,reset,retriable-status-codes"
    );
    assert_eq!(default.retriable_status_codes, [503]);
    assert_eq!(default.num_retries.as_ref().map(|n| n.value), Some(2));
    assert_eq!(default.host_selection_retry_max_attempts, 5);
    assert_eq!(
        default.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
    let Some(route::route::Action::Route(action)) = &vhost.routes[1].action else {
        panic!("not a route action: {vhost:?}");
    };
    let Some(route::route_action::ClusterSpecifier::WeightedClusters(weighted)) =
        &action.cluster_specifier
    else {
        panic!("not weighted: {action:?}");
    };
    let split: Vec<(&str, u32)> = weighted
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().map_or(0, |w| w.value)))
        .collect();
    assert_eq!(
        split,
        [
            ("cds_egress_gophermesh_distributor-v1_http_8080", 90),
            (
                "cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor",
                10
            )
        ]
    );
    let retry = action.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.retry_on, "5xx,gateway-error,connect-failure,reset");
    assert_eq!(retry.num_retries.as_ref().map(|n| n.value), Some(2));
    assert_eq!(
        retry.per_try_timeout.as_ref().map(|d| (d.seconds, d.nanos)),
        Some((2, 0))
    );
    assert_eq!(action.timeout.as_ref().map(|d| d.seconds), Some(15));

    // The v1 cluster reaches distributor-v1's Envoy ingress and health-checks /health.
    let v1 = cluster::Cluster::decode(res.clusters[1].1.value.as_slice()).expect("decodes");
    assert_eq!(v1.health_checks.len(), 1);
    let endpoint = &v1.load_assignment.expect("endpoints").endpoints[0].lb_endpoints[0];
    let Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
        panic!("no endpoint");
    };
    assert_eq!(
        e.address,
        Some(socket_address(SocketAddr::from(([127, 0, 0, 1], 20000))))
    );
}

#[test]
fn distributors_have_no_backends_and_unknown_nodes_get_nothing() {
    let snapshot = shipped_snapshot();
    let res = for_node(&snapshot, "distributor-v2").expect("resources");
    let config =
        route::RouteConfiguration::decode(res.routes[0].1.value.as_slice()).expect("decodes");
    assert!(config.virtual_hosts.is_empty());
    assert_eq!(res.clusters.len(), 1);
    assert!(for_node(&snapshot, "distributor-v9").is_none());
}

/// A node no task here runs (an ECS task elsewhere) is served as App Mesh serves it:
/// its proxy ports on every address, its app on loopback, its targets by DNS.
#[test]
fn a_node_without_a_task_is_placed_as_app_mesh_places_it() {
    let snapshot = MeshState {
        placements: BTreeMap::new(),
        ..shipped_snapshot()
    };
    let res = for_node(&snapshot, "requester").expect("resources");
    let listeners: Vec<&str> = res.listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        listeners,
        ["lds_ingress_0.0.0.0_15000", "lds_egress_0.0.0.0_15001"]
    );
    let cluster = |name: &str| {
        let (_, any) = res
            .clusters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no cluster {name}"));
        cluster::Cluster::decode(any.value.as_slice()).expect("decodes")
    };
    let endpoint = |c: &cluster::Cluster| socket_addresses(c).remove(0);
    let ingress = cluster("cds_ingress_gophermesh_requester_http_8080");
    assert_eq!(
        endpoint(&ingress),
        (
            "127.0.0.1".to_owned(),
            Some(core::socket_address::PortSpecifier::PortValue(8080))
        )
    );
    let v1 = cluster("cds_egress_gophermesh_distributor-v1_http_8080");
    assert_eq!(
        v1.cluster_discovery_type,
        Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::LogicalDns as i32
        ))
    );
    assert_eq!(
        endpoint(&v1),
        (
            "distributor-v1.gophers.local".to_owned(),
            Some(core::socket_address::PortSpecifier::PortValue(8080))
        )
    );
    // No ipPreference: Envoy's default lookup family.
    assert_eq!(v1.dns_lookup_family, 0);
}

/// `ipPreference` (the node's, else the mesh's) is the DNS lookup family of the clusters
/// that resolve the node's hostname.
#[test]
fn ip_preference_is_the_dns_lookup_family() {
    let mut snapshot = MeshState {
        placements: BTreeMap::new(),
        ..shipped_snapshot()
    };
    let family = |snapshot: &MeshState| requesters_v1_cluster(snapshot).dns_lookup_family;
    let mesh = snapshot.mesh.mesh.as_mut().expect("the mesh");
    std::sync::Arc::make_mut(&mut mesh.value)
        .spec
        .service_discovery = Some(meshmodel::appmesh::MeshServiceDiscovery {
        ip_preference: Some("IPv6_ONLY".into()),
    });
    assert_eq!(
        family(&snapshot),
        cluster::cluster::DnsLookupFamily::V6Only as i32
    );
    let node = snapshot
        .mesh
        .virtual_nodes
        .get_mut("distributor-v1")
        .expect("v1");
    if let Some(dns) = std::sync::Arc::make_mut(&mut node.value)
        .spec
        .service_discovery
        .as_mut()
        .and_then(|d| d.dns.as_mut())
    {
        dns.ip_preference = Some("IPv4_ONLY".into());
    }
    assert_eq!(
        family(&snapshot),
        cluster::cluster::DnsLookupFamily::V4Only as i32,
        "the node's preference over the mesh's"
    );
}

/// A listener's `connectionPool` limits the node's own local ingress cluster (whoever
/// calls), not its callers' egress clusters; the ingress cluster connects within 0.25 s.
#[test]
fn a_connection_pool_limits_the_nodes_own_ingress_cluster() {
    let mut snapshot = shipped_snapshot();
    let v1 = snapshot
        .mesh
        .virtual_nodes
        .get_mut("distributor-v1")
        .expect("distributor-v1");
    std::sync::Arc::make_mut(&mut v1.value).spec.listeners[0].connection_pool = Some(
        serde_json::from_value(serde_json::json!({
            "http": {"maxConnections": 7, "maxPendingRequests": 3}
        }))
        .expect("a connection pool"),
    );
    let limits = |c: &cluster::Cluster| {
        let t = &c
            .circuit_breakers
            .as_ref()
            .expect("circuit breakers")
            .thresholds[0];
        (
            t.max_connections.as_ref().map(|v| v.value),
            t.max_pending_requests.as_ref().map(|v| v.value),
        )
    };
    let decode = |res: &NodeResources, name: &str| {
        let (_, any) = res
            .clusters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no cluster {name}"));
        cluster::Cluster::decode(any.value.as_slice()).expect("decodes")
    };
    let own = for_node(&snapshot, "distributor-v1").expect("resources");
    let ingress = decode(&own, "cds_ingress_gophermesh_distributor-v1_http_8080");
    assert_eq!(limits(&ingress), (Some(7), Some(3)));
    assert_eq!(
        ingress
            .connect_timeout
            .as_ref()
            .map(|d| (d.seconds, d.nanos)),
        Some((0, 250_000_000))
    );
    let caller = for_node(&snapshot, "requester").expect("resources");
    let egress = decode(&caller, "cds_egress_gophermesh_distributor-v1_http_8080");
    assert_eq!(limits(&egress), (Some(UNLIMITED), Some(UNLIMITED)));
    assert_eq!(egress.connect_timeout.as_ref().map(|d| d.seconds), Some(1));
    assert_eq!(
        egress.health_checks.len(),
        1,
        "health checks stay on the callers' side"
    );
}

/// A match on the port alone matches every path (App Mesh accepts it); `scheme` and
/// `queryParameters` become Envoy's `:scheme` header and query parameter matchers; a scheme
/// that is neither http nor https is refused, naming the field.
#[test]
fn port_scheme_and_query_parameter_matches_reach_envoy() {
    let snapshot = shipped_snapshot();
    let route = |m: serde_json::Value| {
        meshmodel::Resource::from_value(
            "test.json",
            serde_json::json!({
                "meshName": "gophermesh",
                "virtualRouterName": "distributor",
                "routeName": "distributor-canary",
                "spec": {"priority": 1, "httpRoute": {
                    "match": m,
                    "action": {"weightedTargets": [{"virtualNode": "distributor-v2", "weight": 1}]}
                }}
            }),
        )
        .expect("a route")
    };
    let mesh = snapshot
        .mesh
        .apply(
            "test.json",
            route(serde_json::json!({
                "port": 8080,
                "scheme": "https",
                "queryParameters": [{"name": "canary", "match": {"exact": "1"}}, {"name": "debug"}]
            })),
        )
        .expect("accepted");
    let snapshot = MeshState { mesh, ..snapshot };
    let res = for_node(&snapshot, "requester").expect("resources");
    let config = route::RouteConfiguration::decode(res.routes[0].1.value.as_slice()).expect("rds");
    let canary = config.virtual_hosts[0].routes[0]
        .r#match
        .as_ref()
        .expect("match");
    assert_eq!(
        canary.path_specifier,
        Some(route::route_match::PathSpecifier::Prefix("/".to_owned()))
    );
    let scheme = canary
        .headers
        .iter()
        .find(|h| h.name == ":scheme")
        .expect(":scheme");
    assert!(format!("{scheme:?}").contains("\"https\""), "{scheme:?}");
    let names: Vec<&str> = canary
        .query_parameters
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    assert_eq!(names, ["canary", "debug"]);
    assert_eq!(
        canary.query_parameters[1].query_parameter_match_specifier,
        Some(route::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true))
    );

    let refused = snapshot
        .mesh
        .apply(
            "test.json",
            route(serde_json::json!({"prefix": "/", "scheme": "ftp"})),
        )
        .expect_err("refused");
    assert!(
        refused
            .0
            .iter()
            .any(|p| p.path.ends_with("match.scheme") && p.reason.contains("ftp")),
        "{refused:?}"
    );
}

/// A mesh made of `docs` (App Mesh `--cli-input-json` documents), applied in order.
fn mesh_of(docs: &[serde_json::Value]) -> Result<meshmodel::Mesh, meshmodel::Problems> {
    let mut mesh = meshmodel::Mesh::default();
    for (i, doc) in docs.iter().enumerate() {
        let origin = format!("doc{i}.json");
        let resource = meshmodel::Resource::from_value(&origin, doc.clone())?;
        mesh = mesh.apply(&origin, resource)?;
    }
    Ok(mesh)
}

/// A gRPC service `gophers` (router `gophers`, port 50051) with nodes v1 and v2 and a
/// `client` calling it; the route is `grpc_route`.
fn grpc_mesh(
    router_protocol: &str,
    grpc_route: serde_json::Value,
) -> Result<meshmodel::Mesh, meshmodel::Problems> {
    use serde_json::json;
    let node = |name: &str, backends: serde_json::Value| {
        json!({"meshName": "m", "virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": 50051, "protocol": "grpc"}}],
            "serviceDiscovery": {"dns": {"hostname": format!("{name}.local")}},
            "backends": backends
        }})
    };
    mesh_of(&[
        json!({"meshName": "m"}),
        node("v1", json!([])),
        node("v2", json!([])),
        json!({"meshName": "m", "virtualRouterName": "gophers", "spec": {
            "listeners": [{"portMapping": {"port": 50051, "protocol": router_protocol}}]}}),
        json!({"meshName": "m", "virtualRouterName": "gophers", "routeName": "split",
            "spec": {"grpcRoute": grpc_route}}),
        json!({"meshName": "m", "virtualServiceName": "gophers.local", "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": "gophers"}}}}),
        node(
            "client",
            json!([{"virtualService": {"virtualServiceName": "gophers.local"}}]),
        ),
    ])
}

/// A grpcRoute is an HTTP/2 route on `/SERVICE/METHOD` with its metadata as headers and
/// its gRPC retry events as Envoy's gRPC retry conditions, to HTTP/2 clusters; it serves
/// only a grpc router, and a methodName needs a serviceName.
#[test]
fn a_grpc_route_matches_service_method_and_metadata() {
    use serde_json::json;
    let route = json!({
        "match": {
            "serviceName": "gopher.Gopher",
            "methodName": "Get",
            "metadata": [{"name": "x-canary", "match": {"exact": "1"}}]
        },
        "action": {"weightedTargets": [
            {"virtualNode": "v1", "weight": 90}, {"virtualNode": "v2", "weight": 10}]},
        "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"value": 1, "unit": "s"},
            "grpcRetryEvents": ["unavailable", "deadline-exceeded"],
            "tcpRetryEvents": ["connection-error"]}
    });
    let mesh = grpc_mesh("grpc", route.clone()).expect("accepted");
    let snapshot = MeshState {
        mesh,
        ..MeshState::default()
    };
    let res = for_node(&snapshot, "client").expect("resources");
    let config = route::RouteConfiguration::decode(res.routes[0].1.value.as_slice()).expect("rds");
    let r = &config.virtual_hosts[0].routes[0];
    let m = r.r#match.as_ref().expect("match");
    assert_eq!(
        m.path_specifier,
        Some(route::route_match::PathSpecifier::Path(
            "/gopher.Gopher/Get".to_owned()
        ))
    );
    assert_eq!(m.headers[0].name, "x-canary");
    let Some(route::route::Action::Route(action)) = &r.action else {
        panic!("not a route: {r:?}");
    };
    let retry = action.retry_policy.as_ref().expect("retry");
    assert_eq!(
        retry.retry_on,
        "connect-failure,reset,unavailable,deadline-exceeded"
    );
    let (_, v1) = res
        .clusters
        .iter()
        .find(|(n, _)| n == "cds_egress_m_v1_grpc_50051")
        .expect("the v1 cluster");
    let v1 = cluster::Cluster::decode(v1.value.as_slice()).expect("cluster");
    assert!(
        v1.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        "gRPC goes upstream over HTTP/2"
    );
    assert!(v1.health_checks.is_empty(), "no health check was asked for");

    let on_http = grpc_mesh("http", route.clone()).expect_err("refused");
    assert!(
        on_http
            .0
            .iter()
            .any(|p| p.reason.contains("a grpcRoute cannot serve")),
        "{on_http:?}"
    );
    let mut no_service = route;
    no_service["match"] = json!({"methodName": "Get"});
    let refused = grpc_mesh("grpc", no_service).expect_err("refused");
    assert!(
        refused
            .0
            .iter()
            .any(|p| p.path == "spec.grpcRoute.match.methodName"),
        "{refused:?}"
    );
}

/// PERMISSIVE takes TLS and plain connections on two filter chains told apart by the TLS
/// inspector; a client policy applies only where enforced and on its ports.
#[test]
fn permissive_tls_client_policy_ports_and_refused_modes() {
    use serde_json::json;
    let tls = |mode: &str| {
        json!({"mode": mode, "certificate": {"file": {
            "certificateChain": "/certs/server.pem", "privateKey": "/certs/server.key"}}})
    };
    let policy = |ports: Vec<i64>, enforce: bool| {
        json!({"clientPolicy": {"tls": {"enforce": enforce, "ports": ports,
            "validation": {"trust": {"file": {"certificateChain": "/certs/ca.pem"}}}}}})
    };
    let mesh = |mode: &str, defaults: serde_json::Value| {
        mesh_of(&[
            json!({"meshName": "m"}),
            json!({"meshName": "m", "virtualNodeName": "server", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}, "tls": tls(mode)}],
                "serviceDiscovery": {"dns": {"hostname": "server.local"}}}}),
            json!({"meshName": "m", "virtualServiceName": "server.local", "spec": {
                "provider": {"virtualNode": {"virtualNodeName": "server"}}}}),
            json!({"meshName": "m", "virtualNodeName": "client", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "client.local"}},
                "backendDefaults": defaults,
                "backends": [{"virtualService": {"virtualServiceName": "server.local"}}]}}),
        ])
    };
    let snapshot_of = |m| MeshState {
        mesh: m,
        ..MeshState::default()
    };

    let permissive = snapshot_of(mesh("PERMISSIVE", policy(vec![], true)).expect("accepted"));
    let server = for_node(&permissive, "server").expect("resources");
    let ingress =
        listener::Listener::decode(server.listeners[0].1.value.as_slice()).expect("listener");
    let chains: Vec<(String, bool)> = ingress
        .filter_chains
        .iter()
        .map(|c| {
            (
                c.filter_chain_match
                    .as_ref()
                    .map(|m| m.transport_protocol.clone())
                    .unwrap_or_default(),
                c.transport_socket.is_some(),
            )
        })
        .collect();
    assert_eq!(
        chains,
        [("tls".to_owned(), true), ("raw_buffer".to_owned(), false)]
    );
    assert_eq!(
        ingress.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    let egress_tls = |s: &MeshState| {
        let client = for_node(s, "client").expect("resources");
        let (_, c) = client
            .clusters
            .iter()
            .find(|(n, _)| n == "cds_egress_m_server_http_8080")
            .expect("the server cluster");
        cluster::Cluster::decode(c.value.as_slice())
            .expect("cluster")
            .transport_socket
            .is_some()
    };
    assert!(egress_tls(&permissive), "enforced on every port");
    let other_port = snapshot_of(mesh("STRICT", policy(vec![9443], true)).expect("accepted"));
    assert!(!egress_tls(&other_port), "the policy names another port");
    let not_enforced = snapshot_of(mesh("STRICT", policy(vec![], false)).expect("accepted"));
    assert!(!egress_tls(&not_enforced), "not enforced");

    let refused = mesh("SOMETIMES", policy(vec![], true)).expect_err("refused");
    assert!(
        refused
            .0
            .iter()
            .any(|p| p.path == "spec.listeners[0].tls.mode"),
        "{refused:?}"
    );
}

/// ALLOW_ALL passes other destinations through to their original address where the
/// APPMESH rules redirect connections (proxy ports on every address), and where the app
/// uses Envoy as an explicit proxy (the loopback mode), to the host the request (or a
/// CONNECT) names, through the dynamic forward proxy.
#[test]
fn allow_all_passes_through_to_the_original_or_the_named_destination() {
    let mut snapshot = shipped_snapshot();
    let mesh = snapshot.mesh.mesh.as_mut().expect("the mesh");
    std::sync::Arc::make_mut(&mut mesh.value).spec.egress_filter =
        Some(meshmodel::appmesh::EgressFilter {
            kind: meshmodel::appmesh::EgressFilterType::AllowAll,
        });
    let vhost = |res: &NodeResources| {
        let config =
            route::RouteConfiguration::decode(res.routes[0].1.value.as_slice()).expect("rds");
        config
            .virtual_hosts
            .into_iter()
            .find(|v| v.name == "allow_all")
            .expect("an allow_all virtual host")
    };
    let proxied = for_node(&snapshot, "requester").expect("resources");
    let forwarding = vhost(&proxied);
    let to = |r: &route::Route| match &r.action {
        Some(route::route::Action::Route(a)) => a.cluster_specifier.clone(),
        other => panic!("{other:?}"),
    };
    let forward = Some(route::route_action::ClusterSpecifier::Cluster(
        FORWARD_PROXY.to_owned(),
    ));
    assert!(matches!(
        forwarding.routes[0]
            .r#match
            .as_ref()
            .and_then(|m| m.path_specifier.clone()),
        Some(route::route_match::PathSpecifier::ConnectMatcher(_))
    ));
    assert_eq!(
        (to(&forwarding.routes[0]), to(&forwarding.routes[1])),
        (forward.clone(), forward)
    );
    assert!(!proxied.clusters.iter().any(|(n, _)| n == PASSTHROUGH));
    let (_, any) = proxied
        .clusters
        .iter()
        .find(|(n, _)| n == FORWARD_PROXY)
        .expect("the forward proxy's cluster");
    let c = cluster::Cluster::decode(any.value.as_slice()).expect("decodes");
    assert!(matches!(
        c.cluster_discovery_type,
        Some(cluster::cluster::ClusterDiscoveryType::ClusterType(t)) if t.name == "envoy.clusters.dynamic_forward_proxy"
    ));
    // Its egress listener takes CONNECT and has the forward proxy's filter first.
    let egress =
        listener::Listener::decode(proxied.listeners[1].1.value.as_slice()).expect("listener");
    let Some(listener::filter::ConfigType::TypedConfig(config)) =
        &egress.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config");
    };
    let manager = hcm::HttpConnectionManager::decode(config.value.as_slice()).expect("hcm");
    assert!(
        manager
            .upgrade_configs
            .iter()
            .any(|u| u.upgrade_type == "CONNECT")
    );
    assert_eq!(
        manager.http_filters[0].name,
        "envoy.filters.http.dynamic_forward_proxy"
    );

    let redirected = MeshState {
        placements: BTreeMap::new(),
        ..snapshot
    };
    let res = for_node(&redirected, "requester").expect("resources");
    let passing = vhost(&res);
    assert_eq!(passing.domains, ["*"]);
    assert!(res.clusters.iter().any(|(n, _)| n == PASSTHROUGH));
    let egress = listener::Listener::decode(res.listeners[1].1.value.as_slice()).expect("listener");
    assert_eq!(
        egress.listener_filters[0].name,
        "envoy.filters.listener.original_dst"
    );
    // Other TCP (HTTPS, a database) passes through too: HTTP is told apart by its first
    // bytes, and what is not HTTP takes the default chain, a TCP proxy to the original
    // destination.
    assert_eq!(
        egress.listener_filters[1].name,
        "envoy.filters.listener.http_inspector"
    );
    assert!(egress.continue_on_listener_filters_timeout);
    let http = egress.filter_chains[0]
        .filter_chain_match
        .as_ref()
        .expect("the HTTP chain matches HTTP");
    assert_eq!(http.application_protocols, ["http/1.0", "http/1.1", "h2c"]);
    let other = egress.default_filter_chain.expect("a default chain");
    assert_eq!(other.filters[0].name, "envoy.filters.network.tcp_proxy");
    let Some(listener::filter::ConfigType::TypedConfig(config)) = &other.filters[0].config_type
    else {
        panic!("no typed config");
    };
    let proxy =
        envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::decode(
            config.value.as_slice(),
        )
        .expect("a tcp proxy");
    assert_eq!(
        proxy.cluster_specifier,
        Some(
            envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier::Cluster(
                PASSTHROUGH.to_owned()
            )
        )
    );
}

/// DROP_ALL where connections are redirected keeps other destinations in, but lets TLS to
/// AWS's APIs (server name `*.amazonaws.com`) through to its original destination, as App
/// Mesh does; the loopback mode has no such chain (its apps call AWS directly).
#[test]
fn drop_all_lets_tls_to_aws_apis_out_where_connections_are_redirected() {
    let snapshot = shipped_snapshot();
    let redirected = MeshState {
        placements: BTreeMap::new(),
        ..snapshot.clone()
    };
    let res = for_node(&redirected, "requester").expect("resources");
    let egress = listener::Listener::decode(res.listeners[1].1.value.as_slice()).expect("listener");
    let names: Vec<&str> = egress
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.tls_inspector"
        ]
    );
    assert_eq!(
        egress.listener_filters[1].filter_disabled, None,
        "no TCP backend here"
    );
    let aws = egress
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match.as_ref().is_some_and(|m| {
                m.server_names == ["*.amazonaws.com"] && m.transport_protocol == "tls"
            })
        })
        .expect("a chain for AWS's APIs");
    assert_eq!(aws.filters[0].name, "envoy.filters.network.tcp_proxy");
    assert!(res.clusters.iter().any(|(n, _)| n == PASSTHROUGH));
    assert_eq!(egress.default_filter_chain, None, "nothing else passes");

    let proxied = for_node(&snapshot, "requester").expect("resources");
    let egress =
        listener::Listener::decode(proxied.listeners[1].1.value.as_slice()).expect("listener");
    assert!(egress.listener_filters.is_empty());
    assert_eq!(egress.filter_chains.len(), 1);
}

/// A health check on its own `port` checks each endpoint of the callers' cluster there.
#[test]
fn a_health_check_port_is_each_endpoints_health_check_port() {
    let mut snapshot = shipped_snapshot();
    let v1 = snapshot
        .mesh
        .virtual_nodes
        .get_mut("distributor-v1")
        .expect("v1");
    let listener = &mut std::sync::Arc::make_mut(&mut v1.value).spec.listeners[0];
    listener.health_check.as_mut().expect("a health check").port = Some(8081);
    let res = for_node(&snapshot, "requester").expect("resources");
    let (_, any) = res
        .clusters
        .iter()
        .find(|(n, _)| n == "cds_egress_gophermesh_distributor-v1_http_8080")
        .expect("the cluster");
    let c = cluster::Cluster::decode(any.value.as_slice()).expect("decodes");
    let lb = &c.load_assignment.as_ref().expect("endpoints").endpoints[0].lb_endpoints[0];
    let Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
        panic!("no endpoint");
    };
    assert_eq!(
        e.health_check_config.as_ref().map(|h| h.port_value),
        Some(8081)
    );
    assert_eq!(c.health_checks.len(), 1);
}

/// A listener's http timeout holds on the node's own ingress route: per request and idle.
#[test]
fn a_listener_timeout_bounds_the_ingress_route() {
    let mut snapshot = shipped_snapshot();
    let requester = snapshot
        .mesh
        .virtual_nodes
        .get_mut("requester")
        .expect("requester");
    std::sync::Arc::make_mut(&mut requester.value)
        .spec
        .listeners[0]
        .timeout = Some(meshmodel::appmesh::ListenerTimeout {
        http: Some(meshmodel::appmesh::HttpTimeout {
            per_request: Some(meshmodel::appmesh::Duration::millis(2500)),
            idle: Some(meshmodel::appmesh::Duration::millis(60_000)),
        }),
        http2: None,
        grpc: None,
        tcp: None,
    });
    let res = for_node(&snapshot, "requester").expect("resources");
    let l = listener::Listener::decode(res.listeners[0].1.value.as_slice()).expect("decodes");
    let Some(listener::filter::ConfigType::TypedConfig(config)) =
        &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config");
    };
    let manager = hcm::HttpConnectionManager::decode(config.value.as_slice()).expect("hcm");
    let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
        manager.route_specifier
    else {
        panic!("no inline routes");
    };
    let Some(route::route::Action::Route(action)) = &routes.virtual_hosts[0].routes[0].action
    else {
        panic!("no route action");
    };
    let ms = |d: &Option<envoy_types::pb::google::protobuf::Duration>| {
        d.as_ref()
            .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    };
    assert_eq!(ms(&action.timeout), Some(2500));
    assert_eq!(ms(&action.idle_timeout), Some(60_000));
}

/// A node Cloud Map discovers (here distributor-v1, as if its task ran elsewhere) is
/// reached at the instances looked up, each at its own port or the listener's, sent by EDS
/// as App Mesh sends them; before a lookup, or when it found none, its callers' cluster has
/// no endpoint (503).
#[test]
fn cloud_map_instances_are_the_endpoints_of_the_callers_cluster() {
    use crate::state::placement::Instance;
    let mut snapshot = shipped_snapshot();
    snapshot.placements.remove("distributor-v1");
    let node = snapshot
        .mesh
        .virtual_nodes
        .get_mut("distributor-v1")
        .expect("v1");
    std::sync::Arc::make_mut(&mut node.value)
        .spec
        .service_discovery = Some(meshmodel::appmesh::ServiceDiscovery {
        dns: None,
        aws_cloud_map: Some(meshmodel::appmesh::AwsCloudMapServiceDiscovery {
            namespace_name: "gophers.local".into(),
            service_name: "distributor".into(),
            attributes: vec![],
            ip_preference: None,
        }),
    });
    let name = "cds_egress_gophermesh_distributor-v1_http_8080";
    let endpoints = |snapshot: &MeshState| {
        // An EDS cluster over ADS, without endpoints of its own: they come by EDS.
        let c = requesters_v1_cluster(snapshot);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::Eds as i32
            ))
        );
        let eds = c.eds_cluster_config.expect("an EDS config");
        assert_eq!(eds.service_name, name);
        assert!(matches!(
            eds.eds_config.and_then(|s| s.config_source_specifier),
            Some(core::config_source::ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(c.load_assignment, None);
        let res = for_node(snapshot, "requester").expect("resources");
        let (_, any) = res
            .endpoints
            .iter()
            .find(|(n, _)| n == name)
            .expect("the cluster's load assignment");
        assert_eq!(any.type_url, ENDPOINT_TYPE);
        let assignment =
            endpoint::ClusterLoadAssignment::decode(any.value.as_slice()).expect("decodes");
        assert_eq!(assignment.cluster_name, name);
        assigned_addresses(&assignment)
            .into_iter()
            .map(|(address, port)| match port {
                Some(core::socket_address::PortSpecifier::PortValue(port)) => {
                    format!("{address}:{port}")
                }
                other => panic!("{address}: no port value: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        endpoints(&snapshot),
        Vec::<String>::new(),
        "not looked up yet"
    );
    snapshot.discovered.insert(
        "distributor-v1".into(),
        vec![
            Instance {
                ip: [10, 0, 1, 7].into(),
                port: None,
            },
            Instance {
                ip: [10, 0, 1, 8].into(),
                port: Some(9080),
            },
        ],
    );
    assert_eq!(endpoints(&snapshot), ["10.0.1.7:8080", "10.0.1.8:9080"]);
    snapshot.discovered.insert("distributor-v1".into(), vec![]);
    assert_eq!(endpoints(&snapshot), Vec::<String>::new(), "none found");
}

/// A gateway route that matches only a port (a gateway with several listeners, as App
/// Mesh's multiple-listeners walkthrough has it) takes every path on that listener, and
/// nothing on the others.
#[test]
fn a_gateway_route_of_only_a_port_takes_that_listener() {
    use serde_json::json;
    let mut snapshot = shipped_snapshot();
    let mesh = snapshot.mesh.clone();
    let gateway = meshmodel::Resource::from_value(
        "g.json",
        json!({"meshName": "gophermesh", "virtualGatewayName": "ingress", "spec": {"listeners": [
            {"portMapping": {"port": 9080, "protocol": "http"}},
            {"portMapping": {"port": 9081, "protocol": "http"}}]}}),
    )
    .expect("a gateway");
    let by_port = meshmodel::Resource::from_value(
        "r.json",
        json!({"meshName": "gophermesh", "virtualGatewayName": "ingress", "gatewayRouteName": "second",
            "spec": {"priority": 0, "httpRoute": {"match": {"port": 9081},
                "action": {"target": {"virtualService": {"virtualServiceName": "distributor.gophers.local"}}}}}}),
    )
    .expect("a gateway route");
    snapshot.mesh = mesh
        .apply_all(&[("g.json".into(), gateway), ("r.json".into(), by_port)])
        .expect("App Mesh took a match of only a port");
    let shipped =
        for_node(&shipped_snapshot(), &format!("{GATEWAY_PREFIX}ingress")).expect("resources");
    let res = for_node(&snapshot, &format!("{GATEWAY_PREFIX}ingress")).expect("resources");
    let paths = |res: &NodeResources, port: &str| -> Vec<String> {
        let (_, any) = res
            .routes
            .iter()
            .find(|(name, _)| name.ends_with(port))
            .unwrap_or_else(|| panic!("no route configuration for {port}: {:?}", res.routes));
        let config = route::RouteConfiguration::decode(any.value.as_slice()).expect("decodes");
        config.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{:?}",
                    r.r#match.as_ref().and_then(|m| m.path_specifier.clone())
                )
            })
            .collect()
    };
    let second = paths(&res, "9081");
    assert!(
        second.iter().any(|p| p
            == &format!(
                "{:?}",
                Some(route::route_match::PathSpecifier::Prefix("/".into()))
            )),
        "{second:?}"
    );
    assert_eq!(
        paths(&res, "9080"),
        paths(&shipped, "9080"),
        "the first listener keeps its routes, without the port's"
    );
}

/// The TLS context of `node`'s first listener (downstream) or of its cluster `cluster`
/// (upstream), as Envoy gets it.
fn common_context(
    resources: &NodeResources,
    cluster: Option<&str>,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let socket = match cluster {
        None => listener::Listener::decode(resources.listeners[0].1.value.as_slice())
            .expect("listener")
            .filter_chains[0]
            .transport_socket
            .clone(),
        Some(name) => {
            let (_, c) = resources
                .clusters
                .iter()
                .find(|(n, _)| n == name)
                .expect("the cluster");
            cluster::Cluster::decode(c.value.as_slice())
                .expect("cluster")
                .transport_socket
        }
    };
    let Some(ConfigType::TypedConfig(any)) = socket.expect("a TLS socket").config_type else {
        panic!("a typed config");
    };
    match cluster {
        None => {
            tls::DownstreamTlsContext::decode(any.value.as_slice())
                .expect("downstream")
                .common_tls_context
        }
        Some(_) => {
            tls::UpstreamTlsContext::decode(any.value.as_slice())
                .expect("upstream")
                .common_tls_context
        }
    }
    .expect("a common context")
}

/// ACM material is served by the control plane over ADS (the certificate by its ARN, the
/// trust by the authorities' ARNs), SDS secrets by the local SDS server on its unix socket;
/// the names to check stay beside the trust that arrives as a secret. ARNs of the wrong
/// kind, and ACM where App Mesh does not take it, are refused, naming the field.
#[test]
fn acm_and_sds_sources_become_sds_secrets() {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    use serde_json::json;
    const CERT: &str = "arn:aws:acm:us-east-1:111122223333:certificate/abc";
    const CA: &str = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca1";
    let mesh = |certificate: serde_json::Value,
                trust: serde_json::Value,
                client_cert: Option<serde_json::Value>| {
        let mut tls = json!({"validation": {"trust": trust,
            "subjectAlternativeNames": {"match": {"exact": ["server.local"]}}}});
        if let Some(c) = client_cert {
            tls["certificate"] = c;
        }
        mesh_of(&[
            json!({"meshName": "m"}),
            json!({"meshName": "m", "virtualNodeName": "server", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                    "tls": {"mode": "STRICT", "certificate": certificate}}],
                "serviceDiscovery": {"dns": {"hostname": "server.local"}}}}),
            json!({"meshName": "m", "virtualServiceName": "server.local", "spec": {
                "provider": {"virtualNode": {"virtualNodeName": "server"}}}}),
            json!({"meshName": "m", "virtualNodeName": "client", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "client.local"}},
                "backendDefaults": {"clientPolicy": {"tls": tls}},
                "backends": [{"virtualService": {"virtualServiceName": "server.local"}}]}}),
        ])
    };
    let state = |m| MeshState {
        mesh: m,
        ..MeshState::default()
    };
    let acm = state(
        mesh(
            json!({"acm": {"certificateArn": CERT}}),
            json!({"acm": {"certificateAuthorityArns": [CA]}}),
            None,
        )
        .expect("accepted"),
    );
    let server = common_context(&for_node(&acm, "server").expect("server"), None);
    let secret = &server.tls_certificate_sds_secret_configs[0];
    assert_eq!(secret.name, CERT);
    assert!(matches!(
        secret
            .sds_config
            .as_ref()
            .and_then(|c| c.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    assert!(server.tls_certificates.is_empty());
    let client = common_context(
        &for_node(&acm, "client").expect("client"),
        Some("cds_egress_m_server_http_8080"),
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        client.validation_context_type
    else {
        panic!("trust arrives as a secret: {client:?}");
    };
    assert_eq!(
        combined
            .validation_context_sds_secret_config
            .as_ref()
            .expect("secret")
            .name,
        CA
    );
    let names = combined
        .default_validation_context
        .expect("the names to check");
    assert_eq!(names.match_typed_subject_alt_names.len(), 1);
    assert!(names.trusted_ca.is_none());
    let material = crate::translate::acm_material(&acm.mesh);
    assert_eq!(
        material.keys().collect::<Vec<_>>(),
        [CA, CERT],
        "what the control plane must fetch (by name)"
    );
    assert_eq!(material[CERT].1.iter().collect::<Vec<_>>(), ["server"]);
    assert_eq!(material[CA].1.iter().collect::<Vec<_>>(), ["client"]);

    let sds = state(
        mesh(
            json!({"sds": {"secretName": "server-cert"}}),
            json!({"sds": {"secretName": "spiffe://m/bundle"}}),
            Some(json!({"sds": {"secretName": "client-cert"}})),
        )
        .expect("accepted"),
    );
    let server = common_context(&for_node(&sds, "server").expect("server"), None);
    let local =
        |c: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig| {
            match c
                .sds_config
                .as_ref()
                .and_then(|s| s.config_source_specifier.as_ref())
            {
                Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
                    match api.grpc_services[0].target_specifier.as_ref() {
                    Some(envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier::EnvoyGrpc(g)) => {
                        g.cluster_name.clone()
                    }
                    other => panic!("{other:?}"),
                }
                }
                other => panic!("{other:?}"),
            }
        };
    assert_eq!(
        server.tls_certificate_sds_secret_configs[0].name,
        "server-cert"
    );
    assert_eq!(
        local(&server.tls_certificate_sds_secret_configs[0]),
        crate::translate::LOCAL_SDS_CLUSTER
    );
    let client = common_context(
        &for_node(&sds, "client").expect("client"),
        Some("cds_egress_m_server_http_8080"),
    );
    assert_eq!(
        client.tls_certificate_sds_secret_configs[0].name,
        "client-cert"
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        client.validation_context_type
    else {
        panic!("trust arrives as a secret");
    };
    let bundle = combined
        .validation_context_sds_secret_config
        .expect("secret");
    assert_eq!(
        (bundle.name.as_str(), local(&bundle).as_str()),
        ("spiffe://m/bundle", crate::translate::LOCAL_SDS_CLUSTER)
    );
    assert!(crate::translate::acm_material(&sds.mesh).is_empty());

    // Refused, naming the field and the ARN.
    let refused = |certificate, trust, client_cert| {
        mesh(certificate, trust, client_cert)
            .expect_err("refused")
            .0
    };
    let wrong = refused(
        json!({"acm": {"certificateArn": CA}}),
        json!({"acm": {"certificateAuthorityArns": [CA]}}),
        None,
    );
    assert!(
        wrong.iter().any(
            |p| p.path == "spec.listeners[0].tls.certificate.acm.certificateArn"
                && p.reason.contains(CA)
                && p.reason.contains("Private CA authority")
        ),
        "{wrong:?}"
    );
    let wrong = refused(
        json!({"acm": {"certificateArn": CERT}}),
        json!({"acm": {"certificateAuthorityArns": [CERT]}}),
        None,
    );
    assert!(
        wrong.iter().any(|p| p.path
            == "spec.backendDefaults.clientPolicy.tls.validation.trust.acm.certificateAuthorityArns[0]"
            && p.reason.contains(CERT)
            && p.reason.contains("an ACM certificate")),
        "{wrong:?}"
    );
    let client_acm = refused(
        json!({"acm": {"certificateArn": CERT}}),
        json!({"acm": {"certificateAuthorityArns": [CA]}}),
        Some(json!({"acm": {"certificateArn": CERT}})),
    );
    assert!(
        client_acm.iter().any(|p| p.path
            == "spec.backendDefaults.clientPolicy.tls.certificate.acm"
            && p.reason.contains("listeners only")),
        "{client_acm:?}"
    );
    let none = refused(
        json!({"acm": {"certificateArn": CERT}}),
        json!({"acm": {"certificateAuthorityArns": []}}),
        None,
    );
    assert!(none.iter().any(|p| p.reason.contains("1 to 3")), "{none:?}");
}

/// With the mesh's `gophermesh:mtls` tag, every listener without TLS of its own takes mesh
/// certificates from its callers only (checked by URI), and every caller's cluster shows
/// its own and checks the target's; a listener with its own TLS keeps it; PERMISSIVE also
/// takes plain callers; a value other than STRICT, PERMISSIVE or DISABLED is refused.
#[test]
fn the_mesh_tag_sets_up_mutual_tls_between_callers_and_targets() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    use serde_json::json;
    let mesh = |mode: &str, server_tls: Option<serde_json::Value>| {
        let mut server = json!({"meshName": "m", "virtualNodeName": "server", "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "server.local"}}}});
        if let Some(t) = server_tls {
            server["spec"]["listeners"][0]["tls"] = t;
        }
        mesh_of(&[
            json!({"meshName": "m", "tags": [{"key": "gophermesh:mtls", "value": mode}]}),
            server,
            json!({"meshName": "m", "virtualServiceName": "server.local", "spec": {
                "provider": {"virtualNode": {"virtualNodeName": "server"}}}}),
            json!({"meshName": "m", "virtualNodeName": "client", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "client.local"}},
                "backends": [{"virtualService": {"virtualServiceName": "server.local"}}]}}),
        ])
    };
    let state = |m| MeshState {
        mesh: m,
        ..MeshState::default()
    };
    let uris =
        |c: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext| {
            let Some(ValidationContextType::CombinedValidationContext(v)) =
                &c.validation_context_type
            else {
                panic!("mesh trust arrives as a secret: {c:?}");
            };
            assert_eq!(
                v.validation_context_sds_secret_config
                    .as_ref()
                    .expect("trust")
                    .name,
                crate::translate::MESH_TRUST
            );
            assert_eq!(
                c.tls_certificate_sds_secret_configs[0].name,
                crate::translate::MESH_CERTIFICATE
            );
            v.default_validation_context
            .as_ref()
            .expect("names")
            .match_typed_subject_alt_names
            .iter()
            .map(|m| match m.matcher.as_ref().and_then(|s| s.match_pattern.as_ref()) {
                Some(envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(e)) => e.clone(),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
        };
    let strict = state(mesh("STRICT", None).expect("accepted"));
    let server = for_node(&strict, "server").expect("server");
    assert_eq!(
        uris(&common_context(&server, None)),
        ["spiffe://m/virtualNode/client"]
    );
    let ingress =
        listener::Listener::decode(server.listeners[0].1.value.as_slice()).expect("listener");
    assert_eq!(ingress.filter_chains.len(), 1, "STRICT: TLS only");
    let client = for_node(&strict, "client").expect("client");
    assert_eq!(
        uris(&common_context(
            &client,
            Some("cds_egress_m_server_http_8080")
        )),
        ["spiffe://m/virtualNode/server"]
    );
    // No one calls the client: its listener takes no mesh certificate.
    assert_eq!(
        uris(&common_context(&client, None)),
        ["spiffe://m/no-caller"]
    );

    let permissive = state(mesh("PERMISSIVE", None).expect("accepted"));
    let server = for_node(&permissive, "server").expect("server");
    let ingress =
        listener::Listener::decode(server.listeners[0].1.value.as_slice()).expect("listener");
    assert_eq!(ingress.filter_chains.len(), 2, "PERMISSIVE: TLS and plain");

    let own = json!({"mode": "STRICT", "certificate": {"file": {
        "certificateChain": "/c.pem", "privateKey": "/c.key"}}});
    let kept = state(mesh("STRICT", Some(own)).expect("accepted"));
    let server = common_context(&for_node(&kept, "server").expect("server"), None);
    assert!(
        server.tls_certificate_sds_secret_configs.is_empty(),
        "the node's own TLS is kept"
    );
    assert_eq!(server.tls_certificates.len(), 1);
    let client = for_node(&kept, "client").expect("client");
    let (_, c) = client
        .clusters
        .iter()
        .find(|(n, _)| n == "cds_egress_m_server_http_8080")
        .expect("cluster");
    assert!(
        cluster::Cluster::decode(c.value.as_slice())
            .expect("cluster")
            .transport_socket
            .is_none(),
        "a target with TLS of its own is not called with the mesh's"
    );

    let off = state(mesh("DISABLED", None).expect("accepted"));
    let server = for_node(&off, "server").expect("server");
    let ingress =
        listener::Listener::decode(server.listeners[0].1.value.as_slice()).expect("listener");
    assert!(ingress.filter_chains[0].transport_socket.is_none());
    let refused = mesh("ON", None).expect_err("refused").0;
    assert!(
        refused
            .iter()
            .any(|p| p.path == "tags[0].value" && p.reason.contains("`ON`")),
        "{refused:?}"
    );
}

/// The callers of a node through a router's routes and a gateway's routes, worked out
/// once per mesh version and kept with it.
#[test]
fn callers_come_through_routers_and_gateways_once_per_version() {
    use serde_json::json;
    let node = |name: &str, backends: serde_json::Value| {
        json!({"meshName": "m", "virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": format!("{name}.local")}},
            "backends": backends}})
    };
    let mesh = mesh_of(&[
        json!({"meshName": "m"}),
        node("v1", json!([])),
        node("v2", json!([])),
        node("alone", json!([])),
        json!({"meshName": "m", "virtualRouterName": "r", "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}),
        json!({"meshName": "m", "virtualRouterName": "r", "routeName": "split", "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
                {"virtualNode": "v1", "weight": 90}, {"virtualNode": "v2", "weight": 10}]}}}}),
        json!({"meshName": "m", "virtualServiceName": "svc.local", "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": "r"}}}}),
        node(
            "a",
            json!([{"virtualService": {"virtualServiceName": "svc.local"}}]),
        ),
        node(
            "b",
            json!([{"virtualService": {"virtualServiceName": "svc.local"}}]),
        ),
        json!({"meshName": "m", "virtualGatewayName": "in", "spec": {
            "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}}),
        json!({"meshName": "m", "virtualGatewayName": "in", "gatewayRouteName": "g", "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {
                "target": {"virtualService": {"virtualServiceName": "svc.local"}}}}}}),
    ])
    .expect("accepted");
    let state = MeshState {
        mesh,
        ..MeshState::default()
    };
    let of = |node: &str| {
        crate::translate::callers_of(&state, node)
            .map(|c| c.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(of("v1"), ["a", "b", "virtualGateway/in"]);
    assert_eq!(of("v2"), ["a", "b", "virtualGateway/in"]);
    assert!(of("alone").is_empty());
    assert!(state.callers.get().is_some(), "kept with the mesh state");
}
