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
