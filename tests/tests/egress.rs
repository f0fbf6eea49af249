//! The mesh's egress filter on real Envoys in `up --netns`: DROP_ALL keeps an app's traffic
//! to destinations outside the mesh from leaving, ALLOW_ALL passes it through to where it
//! was going (the original destination of the redirected connection), switched live
//! through the App Mesh API.

use tests::serve::http_status_in;
use tests::{LocalMesh, Mode, Service, copy_of_shipped, require_root_for_netns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_all_keeps_traffic_in_the_mesh_and_allow_all_passes_it_through() {
    require_root_for_netns();
    let dir = copy_of_shipped("egress");
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);
    let status = mesh.status().await;
    let task = status["placements"]["requester"]["netns"]
        .as_str()
        .expect("the requester's namespace")
        .to_owned();
    // A server outside the mesh: in the hub, which is no task.
    let hub = format!("{}hub", mesh.namespace_prefix());
    let _outside = Service::start_in(
        Some(&hub),
        "distributor",
        &["--listen", "10.213.0.1:18080", "--version-tag", "v1"],
        &[],
    );
    let url = "http://10.213.0.1:18080/";
    assert_eq!(
        http_status_in(&task, Some(10001), &[url]),
        404,
        "DROP_ALL let it out"
    );

    let (code, out, err) = tests::aws_appmesh(
        &mesh.api,
        ("AKIDLOCAL", "local/secret"),
        "us-east-1",
        &[
            "update-mesh",
            "--mesh-name",
            "gophermesh",
            "--spec",
            r#"{"egressFilter": {"type": "ALLOW_ALL"}}"#,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    tests::until_routes_acked(&mesh, "requester").await;
    assert_eq!(
        http_status_in(&task, Some(10001), &[url]),
        200,
        "ALLOW_ALL did not pass it through"
    );
    // The mesh's own traffic still goes by the routes.
    let report = tests::compare(&mesh, 100, 4).await;
    assert_eq!(report["ok"], 100, "{report}");
}

/// A virtual router whose listener is tcp: the requester's connections to the
/// distributor's name go through its Envoy as a TCP proxy (a filter chain on the original
/// destination port, weighted clusters per connection), here all to v2; the HTTP the
/// requester speaks passes through it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_proxies_connections_to_its_targets() {
    require_root_for_netns();
    let dir = copy_of_shipped("tcp-route");
    let mesh_dir = dir.join("mesh");
    // The distributor's router as tcp, with one tcpRoute sending every connection to v2.
    for file in [
        "routes/distributor-canary.json",
        "gateway-routes/distributor.json",
    ] {
        std::fs::remove_file(mesh_dir.join(file)).expect("remove");
    }
    let write = |file: &str, doc: serde_json::Value| {
        std::fs::write(mesh_dir.join(file), doc.to_string()).expect("write");
    };
    write(
        "virtual-routers/distributor.json",
        serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "tcp"}}]}}),
    );
    write(
        "routes/distributor.json",
        serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
            "routeName": "distributor", "spec": {"tcpRoute": {"action": {"weightedTargets": [
                {"virtualNode": "distributor-v1", "weight": 0},
                {"virtualNode": "distributor-v2", "weight": 1}]}}}}),
    );
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);
    let report = tests::compare(&mesh, 200, 8).await;
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(
        (tests::count(&report, "v2"), tests::count(&report, "v1")),
        (200.0, 0.0),
        "not all through the tcp route to v2: {report}"
    );
    // The requester's Envoy carried them as TCP: its tcp proxy counted the connections.
    let tcp = mesh
        .envoy_stat("requester", "tcp.egress_tcp_8080.downstream_cx_total")
        .await;
    assert!(tcp > 0, "no connection went through the tcp proxy");
}
