//! Several meshes in one `up`: one mesh directory holds two meshes' resources and task
//! definitions; both run, each mesh's traffic follows its own routes, and `route set
//! --mesh`, `status` and the console work on either.

use serde_json::Value;
use tests::{CHI2_BOUND, LocalMesh, TempDir, chi_square, client, copy_of_shipped, count, get_json};

/// The shipped walkthrough as a second mesh `shop` beside it in `dir`: the same resources
/// and task definitions with the mesh, the node names (`shop-…`), the services
/// (`….shop.local`) and the task families renamed (no ingress gateway).
fn add_shop(dir: &TempDir) {
    let root = tests::repo_root();
    for sub in ["mesh", "taskdefs"] {
        let files = meshmodel::mesh::json_files(&root.join(sub)).expect("the shipped files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            if text.contains("virtualGateway") || text.contains("gatewayRouteName") {
                continue;
            }
            let shop = text
                .replace(".gophers.local", ".shop.local")
                .replace(
                    "mesh/gophermesh/virtualNode/",
                    "mesh/shop/virtualNode/shop-",
                )
                .replace("\"meshName\": \"gophermesh\"", "\"meshName\": \"shop\"")
                .replace("\"virtualNodeName\": \"", "\"virtualNodeName\": \"shop-")
                .replace("\"virtualNode\": \"", "\"virtualNode\": \"shop-")
                .replace("\"family\": \"", "\"family\": \"shop-");
            let relative = file.strip_prefix(root.join(sub)).expect("below");
            let target = dir.join(sub).join("shop").join(relative);
            std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
            std::fs::write(target, shop).expect("write");
        }
    }
}

/// A `/compare` report of `n` calls through the requester of mesh `mesh` (its task's
/// address as `status` gives it).
async fn compare_in(mesh: &LocalMesh, key: &str, n: u32) -> Value {
    let status = mesh.status().await;
    let reach = status["placements"][key]["reach"]
        .as_str()
        .unwrap_or_else(|| panic!("no placement for {key}: {status}"))
        .to_owned();
    let url = format!("http://{reach}/compare?n={n}&concurrency=8&format=json");
    let response = client().get(url).send().await.expect("compare answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_two_meshes_from_one_directory_each_on_its_own_routes() {
    let dir = copy_of_shipped("two-meshes");
    add_shop(&dir);
    let mesh = LocalMesh::start(&dir);

    // Both meshes' tasks run, and every Envoy of both is in sync.
    let (code, status) = mesh.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{status}");
    let status: Value = serde_json::from_str(&status).expect("status json");
    let names: Vec<&Value> = status["meshes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(names, ["gophermesh", "shop"], "{status}");
    assert_eq!(
        status["processes"].as_array().map(Vec::len),
        Some(7 + 6),
        "{status}"
    );
    let shop_nodes = [
        "shop/shop-requester",
        "shop/shop-distributor-v1",
        "shop/shop-distributor-v2",
    ];
    for key in shop_nodes {
        tests::until_routes_acked_by(&mesh, key).await;
    }
    tests::until_routes_acked(&mesh, "requester").await;

    // shop's distributor route to v2 alone, by name of its mesh; gophermesh stays 90/10.
    let (code, out) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "shop-distributor-v1=0",
        "shop-distributor-v2=100",
        "--mesh",
        "shop",
    ]);
    assert_eq!(code, 0, "{out}");
    tests::until_routes_acked_by(&mesh, "shop/shop-requester").await;
    let shop = compare_in(&mesh, "shop/shop-requester", 300).await;
    assert_eq!(
        (count(&shop, "v2"), count(&shop, "v1")),
        (300.0, 0.0),
        "{shop}"
    );
    let walkthrough = compare_in(&mesh, "gophermesh/requester", 2000).await;
    let chi = chi_square(&walkthrough, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "gophermesh is not 90/10: chi-square {chi:.2} for {walkthrough}"
    );

    // Without --mesh, a change is refused: there are two meshes to choose from.
    let (code, out) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=50",
        "distributor-v2=50",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("`gophermesh`, `shop`"), "{out}");

    // The console's frame holds both meshes, each with its own weights and traffic.
    let frame = get_json(&format!("{}/v1/live", mesh.control)).await;
    let weights = |name: &str| -> Vec<i64> {
        let m = frame["meshes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no mesh {name} in {frame}"));
        let route = m["routers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["name"] == "distributor")
            .flat_map(|r| r["routes"].as_array().into_iter().flatten())
            .find(|r| r["name"] == "distributor")
            .unwrap_or_else(|| panic!("no distributor route in {m}"));
        route["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["weight"].as_i64())
            .collect()
    };
    assert_eq!(weights("gophermesh"), [90, 10]);
    assert_eq!(weights("shop"), [0, 100]);
    // The console shifts shop's route back, through the control API as its page does,
    // waiting for every Envoy's ACK (a `wait` that is no duration is refused first, and
    // changes nothing).
    let token = std::fs::read_to_string(dir.join(".gophermesh/control-token")).expect("token");
    let shift = |wait: &str| {
        client()
            .put(format!(
                "{}/v1/routes/distributor/weights?router=distributor&mesh=shop&wait={wait}",
                mesh.control
            ))
            .bearer_auth(token.trim())
            .json(
                &serde_json::json!({"weights": {"shop-distributor-v1": 100, "shop-distributor-v2": 0}}),
            )
            .send()
    };
    let refused = shift("soon").await.expect("sent");
    assert_eq!(refused.status(), 400);
    let said = refused.text().await.unwrap_or_default();
    assert!(said.contains("wait: `soon` is not a duration"), "{said}");
    let typed: gophermesh::api::status::Status =
        serde_json::from_value(mesh.status().await).expect("a status");
    assert_eq!(
        typed.route_weights_in("shop", "distributor"),
        Some(vec![0, 100]),
        "the refused change changed nothing"
    );
    let response = shift("10s").await.expect("sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["reached"], "all", "{answer}");
    tests::until_routes_acked_by(&mesh, "shop/shop-requester").await;
    let shop = compare_in(&mesh, "shop/shop-requester", 300).await;
    assert_eq!(
        (count(&shop, "v1"), count(&shop, "v2")),
        (300.0, 0.0),
        "{shop}"
    );
    let status = mesh.status().await;
    assert_eq!(tests::route_weights(&status, "distributor"), [90, 10]);
    // Traffic is sampled for both meshes' tasks: after this last change, shop's v1 and
    // then gophermesh's v1 get requests, and a frame shows both (the live view samples
    // once a second while it is watched, so this waits for a frame that has them).
    compare_in(&mesh, "gophermesh/requester", 200).await;
    let observed = |frame: &Value, name: &str, node: &str| {
        frame["meshes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .and_then(|m| m["nodes"].as_array())
            .into_iter()
            .flatten()
            .find(|n| n["name"] == node)
            .and_then(|n| n["observed"].as_u64())
            .unwrap_or(0)
    };
    let version = mesh.status().await["version"].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let frame = get_json(&format!("{}/v1/live", mesh.control)).await;
        let seen = (
            observed(&frame, "shop", "shop-distributor-v1"),
            observed(&frame, "gophermesh", "distributor-v1"),
        );
        if frame["version"] == version && seen.0 >= 300 && seen.1 > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no frame observed both meshes' traffic since version {version} within 10 s: {seen:?} in {frame}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
