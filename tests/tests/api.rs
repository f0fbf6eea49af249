//! The App Mesh API of `gophermesh up`, driven by the real AWS CLI: the walkthrough's own
//! commands build the mesh, the deploy scripts run against it, errors are AWS's, SigV4 is
//! checked, and acknowledged writes survive `kill -9`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::moto::Moto;
use tests::{LocalMesh, Mode, client, compare, copy_of_shipped, count, until_routes_acked};

const KEY_ID: &str = "AKIDGOPHERMESHTEST";
const SECRET: &str = "gophermesh/test/secret+key";

/// Runs `aws appmesh ARGS` against `endpoint` with `secret`; (exit code, stdout, stderr).
fn aws_with(endpoint: &str, secret: &str, args: &[&str]) -> (i32, String, String) {
    tests::aws_appmesh(endpoint, (KEY_ID, secret), "us-east-1", args)
}

fn aws(endpoint: &str, args: &[&str]) -> Value {
    let (code, out, err) = aws_with(endpoint, SECRET, args);
    assert_eq!(code, 0, "aws appmesh {args:?}: {err}");
    if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

/// `aws appmesh ARGS` must fail with AWS error `kind` and a message containing `words`.
/// `update-route` of the distributor route with `spec` fails with `kind`, saying `words`.
fn distributor_route_update_fails(endpoint: &str, spec: &str, kind: &str, words: &str) {
    aws_fails(
        endpoint,
        &[
            "update-route",
            "--mesh-name",
            "gophermesh",
            "--virtual-router-name",
            "distributor",
            "--route-name",
            "distributor",
            "--spec",
            spec,
        ],
        kind,
        words,
    );
}

fn aws_fails(endpoint: &str, args: &[&str], kind: &str, words: &str) {
    let (code, out, err) = aws_with(endpoint, SECRET, args);
    assert_ne!(code, 0, "{args:?} succeeded: {out}");
    assert!(
        err.contains(&format!("({kind})")) && err.contains(words),
        "{args:?}: expected {kind} mentioning `{words}`, got: {err}"
    );
}

fn file_arg(dir: &Path, rel: &str) -> String {
    format!("file://{}", dir.join(rel).display())
}

/// The walkthrough's App Mesh calls, in its order, from the files under `mesh/`.
fn create_everything(endpoint: &str, dir: &Path) {
    let calls = [
        ("create-mesh", "mesh/mesh.json"),
        (
            "create-virtual-node",
            "mesh/virtual-nodes/distributor-v1.json",
        ),
        (
            "create-virtual-node",
            "mesh/virtual-nodes/distributor-v2.json",
        ),
        ("create-virtual-node", "mesh/virtual-nodes/requester.json"),
        (
            "create-virtual-router",
            "mesh/virtual-routers/distributor.json",
        ),
        (
            "create-virtual-router",
            "mesh/virtual-routers/requester.json",
        ),
        ("create-route", "mesh/routes/distributor.json"),
        ("create-route", "mesh/routes/distributor-canary.json"),
        ("create-route", "mesh/routes/requester.json"),
        (
            "create-virtual-service",
            "mesh/virtual-services/distributor.gophers.local.json",
        ),
        (
            "create-virtual-service",
            "mesh/virtual-services/requester.gophers.local.json",
        ),
    ];
    for (call, file) in calls {
        let out = aws(endpoint, &[call, "--cli-input-json", &file_arg(dir, file)]);
        let data = out
            .as_object()
            .and_then(|o| o.values().next())
            .expect("one member");
        assert_eq!(data["status"]["status"], "ACTIVE", "{call} {file}: {out}");
        assert_eq!(data["metadata"]["version"], 1, "{call} {file}: {out}");
    }
}

/// Waits until the requester answers through the mesh (its Envoy got the listeners).
async fn until_answering(mesh: &LocalMesh) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client().get(&mesh.requester).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the requester never answered:\n{}",
            mesh.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shifted_route(dir: &Path, v1: i64, v2: i64) -> String {
    let path = dir.join("mesh/routes/distributor.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = v1.into();
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][1]["weight"] = v2.into();
    doc.as_object_mut().expect("object").remove("tags");
    let out = dir.join(format!("route-{v1}-{v2}.json"));
    std::fs::write(&out, doc.to_string()).expect("write");
    format!("file://{}", out.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_builds_the_local_mesh_through_the_api() {
    walkthrough_through_the_api(Mode::Loopback).await;
}

/// The same with a namespace per task: names the API creates reach the tasks' hosts files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_builds_the_local_mesh_through_the_api_with_netns() {
    walkthrough_through_the_api(Mode::Netns).await;
}

async fn walkthrough_through_the_api(mode: Mode) {
    let dir = copy_of_shipped("api-walkthrough");
    let mesh = LocalMesh::start_with(&dir, mode, &["--empty"]);
    let api = mesh.api.clone();
    // Nothing is configured yet: the requester's Envoy has no listener.
    assert!(client().get(&mesh.requester).send().await.is_err());
    assert_eq!(aws(&api, &["list-meshes"])["meshes"], serde_json::json!([]));

    create_everything(&api, &dir);
    let nodes = aws(
        &api,
        &[
            "list-virtual-nodes",
            "--mesh-name",
            "gophermesh",
            "--query",
            "virtualNodes[].virtualNodeName",
        ],
    );
    assert_eq!(
        nodes,
        serde_json::json!(["distributor-v1", "distributor-v2", "requester"])
    );
    let routers = aws(
        &api,
        &[
            "list-virtual-routers",
            "--mesh-name",
            "gophermesh",
            "--query",
            "virtualRouters[].virtualRouterName",
        ],
    );
    assert_eq!(routers, serde_json::json!(["distributor", "requester"]));
    // Paging: one per page, the CLI follows nextToken.
    let paged = aws(
        &api,
        &[
            "list-virtual-nodes",
            "--mesh-name",
            "gophermesh",
            "--page-size",
            "1",
            "--query",
            "virtualNodes[].virtualNodeName",
        ],
    );
    assert_eq!(paged, nodes);

    until_answering(&mesh).await;
    let report = compare(&mesh, 2000, 8).await;
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = tests::chi_square(&report, 0.9);
    assert!(
        chi < tests::CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );

    // update-route to 0/100: every answer is v2; the version went up.
    let updated = aws(
        &api,
        &[
            "update-route",
            "--cli-input-json",
            &shifted_route(&dir, 0, 100),
        ],
    );
    assert_eq!(updated["route"]["metadata"]["version"], 2, "{updated}");
    until_routes_acked(&mesh, "requester").await;
    let report = compare(&mesh, 300, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (300.0, 0.0),
        "{report}"
    );
    // The control API and `status` see the same store.
    let (code, status) = mesh.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{status}");
    let status: Value = serde_json::from_str(&status).expect("json");
    assert_eq!(
        status["meshes"][0]["routes"][0]["targets"][1]["weight"], 100,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_aws_errors_that_name_the_field() {
    let dir = copy_of_shipped("api-errors");
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &["--empty"]);
    let api = mesh.api.clone();
    aws_fails(
        &api,
        &["describe-mesh", "--mesh-name", "gophermesh"],
        "NotFoundException",
        "mesh `gophermesh` does not exist",
    );
    create_everything(&api, &dir);

    // A duplicate create.
    aws_fails(
        &api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &file_arg(&dir, "mesh/virtual-nodes/requester.json"),
        ],
        "ConflictException",
        "virtual node `requester` already exists",
    );
    // The same create with the same client token is idempotent.
    let token_file = dir.join("node-with-token.json");
    let mut node: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("mesh/virtual-nodes/distributor-v1.json")).expect("read"),
    )
    .expect("json");
    node["virtualNodeName"] = "extra".into();
    node["spec"]["serviceDiscovery"]["dns"]["hostname"] = "extra.gophers.local".into();
    node["clientToken"] = "token-1".into();
    std::fs::write(&token_file, node.to_string()).expect("write");
    let first = aws(
        &api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &format!("file://{}", token_file.display()),
        ],
    );
    let again = aws(
        &api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &format!("file://{}", token_file.display()),
        ],
    );
    assert_eq!(
        first["virtualNode"]["metadata"],
        again["virtualNode"]["metadata"]
    );
    // A describe of something missing.
    aws_fails(
        &api,
        &[
            "describe-virtual-node",
            "--mesh-name",
            "gophermesh",
            "--virtual-node-name",
            "nope",
        ],
        "NotFoundException",
        "virtual node `nope` does not exist",
    );
    aws_fails(
        &api,
        &[
            "list-routes",
            "--mesh-name",
            "gophermesh",
            "--virtual-router-name",
            "nope",
        ],
        "NotFoundException",
        "virtual router `nope` does not exist",
    );
    // An out-of-range weight names the field.
    distributor_route_update_fails(
        &api,
        r#"{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"distributor-v1","weight":0},{"virtualNode":"distributor-v2","weight":101}]}}}"#,
        "BadRequestException",
        "UpdateRoute: spec.httpRoute.action.weightedTargets[1].weight: 101 is out of range",
    );
    // A target that does not exist.
    distributor_route_update_fails(
        &api,
        r#"{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"distributor-v9","weight":1}]}}}"#,
        "BadRequestException",
        "virtual node `distributor-v9` does not exist",
    );
    // Deletes of what is still in use.
    aws_fails(
        &api,
        &[
            "delete-virtual-node",
            "--mesh-name",
            "gophermesh",
            "--virtual-node-name",
            "distributor-v1",
        ],
        "ResourceInUseException",
        "route distributor/distributor",
    );
    aws_fails(
        &api,
        &[
            "delete-virtual-router",
            "--mesh-name",
            "gophermesh",
            "--virtual-router-name",
            "distributor",
        ],
        "ResourceInUseException",
        "in use by route distributor/distributor",
    );
    aws_fails(
        &api,
        &["delete-mesh", "--mesh-name", "gophermesh"],
        "ResourceInUseException",
        "in use",
    );
    // A call on a mesh that does not exist.
    aws_fails(
        &api,
        &["list-virtual-nodes", "--mesh-name", "nowhere"],
        "NotFoundException",
        "mesh `nowhere` does not exist",
    );

    // Malformed JSON and unknown fields, sent as raw HTTP (the CLI would refuse them first).
    let http = client();
    let r = http
        .put(format!("{api}/v20190125/meshes/gophermesh/virtualNodes"))
        .body("{ not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "BadRequestException");
    let body: Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON (line 1"),
        "{body}"
    );
    let r = http
        .put(format!("{api}/v20190125/meshes/gophermesh/virtualNodes"))
        .body(r#"{"virtualNodeName":"x","spec":{"listners":[]}}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.listners"),
        "{body}"
    );

    // None of that changed the mesh: traffic still follows 90/10 and nothing was lost.
    until_answering(&mesh).await;
    let report = compare(&mesh, 200, 8).await;
    assert_eq!(report["ok"], 200, "{report}");
    assert!(count(&report, "v1") > count(&report, "v2"), "{report}");
    let nodes = aws(
        &api,
        &[
            "list-virtual-nodes",
            "--mesh-name",
            "gophermesh",
            "--query",
            "length(virtualNodes)",
        ],
    );
    assert_eq!(nodes, 4);

    // A flood of API calls is refused or served, and the data plane keeps answering.
    let flood: Vec<_> = (0..400)
        .map(|_| {
            let http = http.clone();
            let url = format!("{api}/v20190125/meshes/gophermesh/virtualNodes");
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let during = compare(&mesh, 200, 8).await;
    let mut statuses = Vec::new();
    for f in flood {
        statuses.push(f.await.expect("joined").unwrap_or(0));
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        during["ok"], 200,
        "the data plane failed during the flood: {during}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_must_be_signed_when_credentials_are_set() {
    let dir = copy_of_shipped("api-sigv4");
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Loopback,
        &[
            "--empty",
            "--api-access-key-id",
            KEY_ID,
            "--api-secret-access-key",
            SECRET,
        ],
    );
    let api = mesh.api.clone();
    // The AWS CLI signs with the right secret: accepted.
    let made = aws(
        &api,
        &[
            "create-mesh",
            "--cli-input-json",
            &file_arg(&dir, "mesh/mesh.json"),
        ],
    );
    assert_eq!(made["mesh"]["meshName"], "gophermesh");
    // A wrong secret: 403 InvalidSignatureException, and nothing changes.
    let (code, _, err) = aws_with(
        &api,
        "wrong-secret",
        &["delete-mesh", "--mesh-name", "gophermesh"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("(InvalidSignatureException)") && err.contains("signature"),
        "{err}"
    );
    // Unsigned: 403 with an AWS-style body.
    let r = client()
        .get(format!("{api}/v20190125/meshes"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    let body: Value = r.json().await.expect("json");
    assert!(body["message"].as_str().is_some(), "{body}");
    let meshes = aws(&api, &["list-meshes", "--query", "meshes[].meshName"]);
    assert_eq!(meshes, serde_json::json!(["gophermesh"]));
}

/// A virtual node of mesh `mesh`, named `node`, on `port`.
fn node_json(mesh: &str, node: &str, port: u16) -> String {
    serde_json::json!({"meshName": mesh, "virtualNodeName": node, "spec": {
        "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": format!("{node}.{mesh}.local")}}}})
    .to_string()
}

/// Meshes beside the first, through the AWS CLI: each has its own resources (a node of
/// the same name in two meshes is two nodes, with their own ARNs), lists are per mesh,
/// `list-meshes` lists them all, `route set --mesh`, `apply` and `status` reach the second
/// mesh, a mesh is deleted once empty, and the mesh `up` loaded is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_meshes_through_the_aws_cli() {
    let dir = copy_of_shipped("api-meshes");
    let mesh = LocalMesh::start(&dir);
    let api = mesh.api.clone();
    let made = aws(&api, &["create-mesh", "--mesh-name", "shop"]);
    assert_eq!(made["mesh"]["status"]["status"], "ACTIVE", "{made}");
    aws_fails(
        &api,
        &["create-mesh", "--mesh-name", "shop"],
        "ConflictException",
        "already exists",
    );
    let node = aws(
        &api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &node_json("shop", "distributor-v1", 9000),
        ],
    );
    let arn = node["virtualNode"]["metadata"]["arn"]
        .as_str()
        .unwrap_or_default();
    assert!(
        arn.ends_with(":mesh/shop/virtualNode/distributor-v1"),
        "{node}"
    );
    let describe = |mesh_name: &str| {
        aws(
            &api,
            &[
                "describe-virtual-node",
                "--mesh-name",
                mesh_name,
                "--virtual-node-name",
                "distributor-v1",
                "--query",
                "virtualNode.spec.listeners[0].portMapping.port",
            ],
        )
    };
    assert_eq!(
        (describe("shop"), describe("gophermesh")),
        (9000.into(), 8080.into())
    );
    let meshes = aws(&api, &["list-meshes", "--query", "meshes[].meshName"]);
    assert_eq!(meshes, serde_json::json!(["gophermesh", "shop"]));
    let nodes = |mesh_name: &str| {
        aws(
            &api,
            &[
                "list-virtual-nodes",
                "--mesh-name",
                mesh_name,
                "--query",
                "virtualNodes[].virtualNodeName",
            ],
        )
    };
    assert_eq!(nodes("shop"), serde_json::json!(["distributor-v1"]));
    assert_eq!(
        nodes("gophermesh"),
        serde_json::json!(["distributor-v1", "distributor-v2", "requester"])
    );
    // The control surfaces reach the second mesh: `route set --mesh` and `apply` (by the
    // file's meshName), and `status` lists its routes; the mesh `up` loaded keeps its own.
    aws(
        &api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &node_json("shop", "distributor-v2", 9000),
        ],
    );
    let router = serde_json::json!({"meshName": "shop", "virtualRouterName": "distributor",
        "spec": {"listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}]}});
    aws(
        &api,
        &[
            "create-virtual-router",
            "--cli-input-json",
            &router.to_string(),
        ],
    );
    let route = |v1: i64, v2: i64| {
        serde_json::json!({"meshName": "shop", "virtualRouterName": "distributor",
            "routeName": "distributor", "spec": {"httpRoute": {"match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "distributor-v1", "weight": v1},
                {"virtualNode": "distributor-v2", "weight": v2}]}}}})
    };
    aws(
        &api,
        &[
            "create-route",
            "--cli-input-json",
            &route(90, 10).to_string(),
        ],
    );
    // The shipped route's query, in mesh `mesh_name`.
    let weights = |mesh_name: &str| {
        let mut args = tests::DISTRIBUTOR_WEIGHTS;
        args[2] = mesh_name;
        aws(&api, &args)
    };
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=30",
        "distributor-v2=70",
        "--mesh",
        "shop",
    ]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("route distributor of mesh shop:"), "{said}");
    assert_eq!(weights("shop"), serde_json::json!([30, 70]));
    assert_eq!(weights("gophermesh"), serde_json::json!([90, 10]));
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=1",
        "--mesh",
        "nope",
    ]);
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("no mesh `nope` here"), "{said}");
    // --save writes beside --mesh-dir's own mesh only.
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=50",
        "distributor-v2=50",
        "--mesh",
        "shop",
        "--save",
    ]);
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("holds mesh `gophermesh`, not `shop`; nothing was changed"),
        "{said}"
    );
    assert_eq!(weights("shop"), serde_json::json!([30, 70]));
    let file = dir.join("shop-route.json");
    std::fs::write(&file, route(0, 100).to_string()).expect("write");
    let (code, said) = mesh.cli(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(weights("shop"), serde_json::json!([0, 100]));
    let (_, said) = mesh.cli(&["status"]);
    let shop = said
        .split_once("routes of mesh shop")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no shop routes in {said}"));
    assert!(
        shop.lines()
            .any(|l| l.trim_start().starts_with("distributor-v2") && l.contains("weight 100")),
        "{said}"
    );
    for (call, args) in [
        (
            "delete-route",
            vec![
                "--virtual-router-name",
                "distributor",
                "--route-name",
                "distributor",
            ],
        ),
        (
            "delete-virtual-router",
            vec!["--virtual-router-name", "distributor"],
        ),
        (
            "delete-virtual-node",
            vec!["--virtual-node-name", "distributor-v2"],
        ),
    ] {
        let mut all = vec![call, "--mesh-name", "shop"];
        all.extend(args);
        aws(&api, &all);
    }
    // Tags by ARN reach a resource of the second mesh.
    aws(
        &api,
        &[
            "tag-resource",
            "--resource-arn",
            arn,
            "--tags",
            "key=team,value=shop",
        ],
    );
    let tags = aws(
        &api,
        &[
            "list-tags-for-resource",
            "--resource-arn",
            arn,
            "--query",
            "tags[].key",
        ],
    );
    assert_eq!(tags, serde_json::json!(["team"]));
    // A mesh with something in it is not deleted; empty, it is.
    aws_fails(
        &api,
        &["delete-mesh", "--mesh-name", "shop"],
        "ResourceInUseException",
        "in use",
    );
    aws(
        &api,
        &[
            "delete-virtual-node",
            "--mesh-name",
            "shop",
            "--virtual-node-name",
            "distributor-v1",
        ],
    );
    let gone = aws(&api, &["delete-mesh", "--mesh-name", "shop"]);
    assert_eq!(gone["mesh"]["status"]["status"], "DELETED", "{gone}");
    let meshes = aws(&api, &["list-meshes", "--query", "meshes[].meshName"]);
    assert_eq!(meshes, serde_json::json!(["gophermesh"]));
    // The local mesh carried traffic all along.
    until_answering(&mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = copy_of_shipped("api-durable");
    let data = dir.join("data");
    let data_arg = data.display().to_string();
    let mut mesh =
        LocalMesh::start_with(&dir, Mode::Loopback, &["--empty", "--data-dir", &data_arg]);
    create_everything(&mesh.api, &dir);
    aws(
        &mesh.api,
        &[
            "update-route",
            "--cli-input-json",
            &shifted_route(&dir, 0, 100),
        ],
    );
    let before = aws(
        &mesh.api,
        &[
            "describe-route",
            "--mesh-name",
            "gophermesh",
            "--virtual-router-name",
            "distributor",
            "--route-name",
            "distributor",
        ],
    );
    // A second mesh, kept beside the first.
    aws(&mesh.api, &["create-mesh", "--mesh-name", "shop"]);
    let shop_node = aws(
        &mesh.api,
        &[
            "create-virtual-node",
            "--cli-input-json",
            &node_json("shop", "web", 9000),
        ],
    );
    let pids: Vec<u64> = {
        let (_, status) = mesh.cli(&["status", "--json"]);
        let status: Value = serde_json::from_str(&status).expect("json");
        status["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .collect()
    };
    // Three tasks of an Envoy and an app, and the ingress gateway's Envoy.
    assert_eq!(pids.len(), 7);
    // kill -9 of the control plane: its children follow it (parent-death signal).
    assert!(
        Command::new("kill")
            .args(["-KILL", &mesh.pid().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        assert!(
            Instant::now() < deadline,
            "children of the killed up are still running: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mesh.forget();

    // Restart on the same data dir, without --empty: the store has the mesh.
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &["--data-dir", &data_arg]);
    assert!(
        mesh.output().contains("13 resources restored from"),
        "{}",
        mesh.output()
    );
    let shop_after = aws(
        &mesh.api,
        &[
            "describe-virtual-node",
            "--mesh-name",
            "shop",
            "--virtual-node-name",
            "web",
        ],
    );
    assert_eq!(
        shop_node, shop_after,
        "the second mesh changed across the restart"
    );
    let after = aws(
        &mesh.api,
        &[
            "describe-route",
            "--mesh-name",
            "gophermesh",
            "--virtual-router-name",
            "distributor",
            "--route-name",
            "distributor",
        ],
    );
    assert_eq!(before, after, "the route changed across the restart");
    until_answering(&mesh).await;
    let report = compare(&mesh, 200, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (200.0, 0.0),
        "traffic does not follow the last route: {report}"
    );
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn the_deploy_scripts_run_against_the_api_and_moto() {
    let dir = copy_of_shipped("api-deploy");
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &["--empty"]);
    let moto = Moto::start();
    // Every App Mesh call (virtual services included) goes to the local API, ECS and Cloud
    // Map calls to moto.
    let first = moto.script_routed("walkthrough.sh", &[], &mesh.api);
    assert!(first.contains("create-virtual-service"), "{first}");
    let again = moto.script_routed("walkthrough.sh", &[], &mesh.api);
    assert!(again.contains("update"), "{again}");
    let weights = |api: &str| aws(api, &tests::DISTRIBUTOR_WEIGHTS);
    assert_eq!(weights(&mesh.api), serde_json::json!([90, 10]));
    let services = aws(
        &mesh.api,
        &[
            "list-virtual-services",
            "--mesh-name",
            "gophermesh",
            "--query",
            "virtualServices[].virtualServiceName",
        ],
    );
    assert_eq!(
        services,
        serde_json::json!(["distributor.gophers.local", "requester.gophers.local"])
    );
    moto.script_routed("shift.sh", &["0", "100"], &mesh.api);
    assert_eq!(weights(&mesh.api), serde_json::json!([0, 100]));
    let down = moto.script_routed("teardown.sh", &[], &mesh.api);
    assert!(down.contains("deleted mesh gophermesh"), "{down}");
    assert_eq!(
        aws(&mesh.api, &["list-meshes", "--query", "length(meshes)"]),
        0
    );
    assert!(down_ok(&moto));
}

/// Teardown left no task definition, namespace or cluster in moto.
fn down_ok(moto: &Moto) -> bool {
    moto.aws(&[
        "ecs",
        "list-task-definitions",
        "--status",
        "ACTIVE",
        "--query",
        "length(taskDefinitionArns)",
    ]) == "0"
        && moto.aws(&[
            "servicediscovery",
            "list-namespaces",
            "--query",
            "length(Namespaces)",
        ]) == "0"
}

/// TagResource, ListTagsForResource and UntagResource by ARN, with App Mesh's limits; an
/// update call keeps the tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_tagged_by_arn_and_keep_their_tags_through_updates() {
    let dir = copy_of_shipped("api-tags");
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &[]);
    let api = mesh.api.as_str();
    let route = tests::DISTRIBUTOR_ROUTE;
    let mut describe = vec!["describe-route"];
    describe.extend(route);
    let arn = aws(api, &describe)["route"]["metadata"]["arn"]
        .as_str()
        .expect("an ARN")
        .to_owned();
    let tags = |api: &str| -> Vec<(String, String)> {
        let listed = aws(api, &["list-tags-for-resource", "--resource-arn", &arn]);
        listed["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_owned(),
                    t["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert!(tags(api).is_empty());
    aws(
        api,
        &[
            "tag-resource",
            "--resource-arn",
            &arn,
            "--tags",
            "key=team,value=gophers",
            "key=stage,value=canary",
        ],
    );
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        tags(api),
        [pair("team", "gophers"), pair("stage", "canary")]
    );
    aws(
        api,
        &[
            "untag-resource",
            "--resource-arn",
            &arn,
            "--tag-keys",
            "stage",
        ],
    );
    assert_eq!(tags(api), [pair("team", "gophers")]);

    // An update (a weight shift) keeps them.
    let mut update = vec!["update-route"];
    update.extend(route);
    let spec = r#"{"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "distributor-v1", "weight": 50}, {"virtualNode": "distributor-v2", "weight": 50}]}}}"#;
    update.extend(["--spec", spec]);
    aws(api, &update);
    assert_eq!(tags(api), [pair("team", "gophers")]);

    // App Mesh's limits and errors.
    let many: Vec<String> = (0..50).map(|i| format!("key=k{i},value=v")).collect();
    let mut too_many = vec!["tag-resource", "--resource-arn", arn.as_str(), "--tags"];
    too_many.extend(many.iter().map(String::as_str));
    aws_fails(api, &too_many, "TooManyTagsException", "51 tags");
    let long = format!("key={},value=v", "k".repeat(129));
    aws_fails(
        api,
        &["tag-resource", "--resource-arn", &arn, "--tags", &long],
        "BadRequestException",
        "tags[0].key",
    );
    let nobody = arn.replace("/route/distributor", "/route/nobody");
    aws_fails(
        api,
        &["list-tags-for-resource", "--resource-arn", &nobody],
        "NotFoundException",
        "no resource has the ARN",
    );
    assert_eq!(
        tags(api),
        [pair("team", "gophers")],
        "refusals changed nothing"
    );
}

/// Virtual gateways and gateway routes through the AWS CLI: the ten operations, with App
/// Mesh's metadata, paging and errors; a gateway or a service in use is not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_gateways_and_gateway_routes_through_the_aws_cli() {
    let dir = copy_of_shipped("api-gateways");
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &[]);
    let api = mesh.api.clone();
    let write = |name: &str, doc: Value| {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).expect("write");
        format!("file://{}", path.display())
    };
    let gateway = write(
        "gateway.json",
        serde_json::json!({"meshName": "gophermesh", "virtualGatewayName": "edge", "spec": {
            "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]
        }}),
    );
    let route = |name: &str, prefix: &str, service: &str| {
        serde_json::json!({"meshName": "gophermesh", "virtualGatewayName": "edge",
        "gatewayRouteName": name, "spec": {"httpRoute": {
            "match": {"prefix": prefix},
            "action": {"target": {"virtualService": {"virtualServiceName": service}}}
        }}})
    };
    let created = aws(
        &api,
        &["create-virtual-gateway", "--cli-input-json", &gateway],
    );
    let data = &created["virtualGateway"];
    assert_eq!(data["status"]["status"], "ACTIVE", "{created}");
    assert_eq!(data["metadata"]["version"], 1);
    assert!(
        data["metadata"]["arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":mesh/gophermesh/virtualGateway/edge")),
        "{created}"
    );
    for i in 0..3 {
        let file = write(
            &format!("gr{i}.json"),
            route(
                &format!("r{i}"),
                &format!("/p{i}/"),
                "distributor.gophers.local",
            ),
        );
        let out = aws(&api, &["create-gateway-route", "--cli-input-json", &file]);
        assert_eq!(out["gatewayRoute"]["virtualGatewayName"], "edge", "{out}");
        assert_eq!(
            out["gatewayRoute"]["spec"]["httpRoute"]["match"]["prefix"],
            format!("/p{i}/")
        );
    }
    // The CLI pages through them (one per page here) and sees all three.
    let listed = aws(
        &api,
        &[
            "list-gateway-routes",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "edge",
            "--page-size",
            "1",
        ],
    );
    let names: Vec<&str> = listed["gatewayRoutes"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["gatewayRouteName"].as_str())
        .collect();
    assert_eq!(names, ["r0", "r1", "r2"], "{listed}");
    let gateway_names = |gateways: &Value| -> Vec<String> {
        gateways["virtualGateways"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|g| g["virtualGatewayName"].as_str().map(str::to_owned))
            .collect()
    };
    let gateways = aws(
        &api,
        &["list-virtual-gateways", "--mesh-name", "gophermesh"],
    );
    assert_eq!(
        gateway_names(&gateways),
        ["edge", "ingress"],
        "the new gateway and the shipped one"
    );

    // Update bumps the version; describe shows the change.
    let changed = write(
        "gr0b.json",
        route("r0", "/moved/", "distributor.gophers.local"),
    );
    aws(
        &api,
        &["update-gateway-route", "--cli-input-json", &changed],
    );
    let described = aws(
        &api,
        &[
            "describe-gateway-route",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "edge",
            "--gateway-route-name",
            "r0",
        ],
    );
    assert_eq!(described["gatewayRoute"]["metadata"]["version"], 2);
    assert_eq!(
        described["gatewayRoute"]["spec"]["httpRoute"]["match"]["prefix"],
        "/moved/"
    );

    // Errors name the field and the reason.
    let nowhere = write("gr-bad.json", route("bad", "/x/", "nowhere.gophers.local"));
    aws_fails(
        &api,
        &["create-gateway-route", "--cli-input-json", &nowhere],
        "BadRequestException",
        "spec.httpRoute.action.target.virtualService.virtualServiceName: virtual service `nowhere.gophers.local` does not exist",
    );
    let mut grpc = route("bad", "/x/", "distributor.gophers.local");
    grpc["spec"] = serde_json::json!({"grpcRoute": {"match": {"serviceName": "Gopher"},
        "action": {"target": {"virtualService": {"virtualServiceName": "distributor.gophers.local"}}}}});
    let grpc = write("gr-grpc.json", grpc);
    aws_fails(
        &api,
        &["create-gateway-route", "--cli-input-json", &grpc],
        "BadRequestException",
        "virtual gateway `edge` has no grpc listener (it has: http 9080)",
    );
    aws_fails(
        &api,
        &[
            "describe-gateway-route",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "nope",
            "--gateway-route-name",
            "r0",
        ],
        "NotFoundException",
        "virtual gateway `nope` does not exist",
    );
    // In use: the gateway has routes; the service is a gateway route's target.
    aws_fails(
        &api,
        &[
            "delete-virtual-gateway",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "edge",
        ],
        "ResourceInUseException",
        "gateway route edge/r0",
    );
    aws_fails(
        &api,
        &[
            "delete-virtual-service",
            "--mesh-name",
            "gophermesh",
            "--virtual-service-name",
            "distributor.gophers.local",
        ],
        "ResourceInUseException",
        "gateway route edge/r1",
    );
    for i in 0..3 {
        let out = aws(
            &api,
            &[
                "delete-gateway-route",
                "--mesh-name",
                "gophermesh",
                "--virtual-gateway-name",
                "edge",
                "--gateway-route-name",
                &format!("r{i}"),
            ],
        );
        assert_eq!(out["gatewayRoute"]["status"]["status"], "DELETED");
    }
    let out = aws(
        &api,
        &[
            "delete-virtual-gateway",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "edge",
        ],
    );
    assert_eq!(out["virtualGateway"]["status"]["status"], "DELETED");
    let gateways = aws(
        &api,
        &["list-virtual-gateways", "--mesh-name", "gophermesh"],
    );
    assert_eq!(gateway_names(&gateways), ["ingress"]);
    // --mesh-owner: this account's is taken, another's is not found.
    let owned = aws(
        &api,
        &[
            "describe-virtual-gateway",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "ingress",
            "--mesh-owner",
            "000000000000",
        ],
    );
    assert_eq!(
        owned["virtualGateway"]["metadata"]["meshOwner"],
        "000000000000"
    );
    aws_fails(
        &api,
        &[
            "describe-virtual-gateway",
            "--mesh-name",
            "gophermesh",
            "--virtual-gateway-name",
            "ingress",
            "--mesh-owner",
            "111122223333",
        ],
        "NotFoundException",
        "meshOwner 111122223333: mesh `gophermesh` of account 111122223333 does not exist here",
    );
}
