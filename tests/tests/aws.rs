//! The artifacts users take to AWS: the mesh JSON and task definitions pass botocore's own
//! validation, `gophermesh validate` catches what AWS cannot, and the deploy scripts
//! replay the walkthrough with the real AWS CLI against moto.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tests::edit_json as edit;
use tests::moto::{Moto, RENDER_ENV};
use tests::{TempDir, bin, repo_root, tool};

fn render_taskdefs(out: &Path) {
    let status = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args(["render", "taskdefs", "--out"])
        .arg(out)
        .envs(RENDER_ENV)
        .stdout(Stdio::null())
        .status()
        .expect("gophermesh runs");
    assert!(status.success(), "render failed");
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_file_passes_botocore_validation() {
    let root = repo_root();
    let rendered = tempdir("rendered");
    render_taskdefs(&rendered);
    let mut args: Vec<String> = Vec::new();
    let mut count = 0;
    let example = root.join("examples/grpc/mesh");
    for file in json_files(&root.join("mesh"))
        .into_iter()
        .chain(json_files(&example))
    {
        let dir = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let op = match dir {
            "mesh" => "CreateMesh",
            "virtual-nodes" => "CreateVirtualNode",
            "virtual-routers" => "CreateVirtualRouter",
            "routes" => "CreateRoute",
            "virtual-services" => "CreateVirtualService",
            "virtual-gateways" => "CreateVirtualGateway",
            "gateway-routes" => "CreateGatewayRoute",
            other => panic!("unexpected folder mesh/{other}"),
        };
        args.extend(["appmesh".into(), op.into(), file.display().to_string()]);
        count += 1;
    }
    for file in json_files(&rendered) {
        args.extend([
            "ecs".into(),
            "RegisterTaskDefinition".into(),
            file.display().to_string(),
        ]);
        count += 1;
    }
    assert_eq!(
        count, 31,
        "14 mesh files, 13 of the gRPC example and 4 task definitions"
    );
    let out = Command::new(tool("python"))
        .arg(root.join("tests/tools/botocore_validate.py"))
        .args(&args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "botocore rejected a file:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("valid ")).count(),
        count,
        "{text}"
    );

    // The validator is not a rubber stamp: a 2018 preview shape is refused.
    let bad = rendered.join("preview-node.json");
    std::fs::write(
        &bad,
        r#"{"meshName":"gophermesh","virtualNodeName":"x","spec":{"backends":["distributor.gophers.local"]}}"#,
    )
    .expect("write");
    let out = Command::new(tool("python"))
        .arg(root.join("tests/tools/botocore_validate.py"))
        .args(["appmesh", "CreateVirtualNode"])
        .arg(&bad)
        .output()
        .expect("python runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID"));
}

fn tempdir(label: &str) -> TempDir {
    TempDir::new(label)
}

/// A copy of mesh/ and taskdefs/ in a temp dir, for breaking one thing at a time.
fn copy_of_shipped() -> TempDir {
    let root = repo_root();
    let dir = tempdir("copy");
    for sub in ["mesh", "taskdefs"] {
        for file in json_files(&root.join(sub)) {
            let rel = file.strip_prefix(&root).expect("under root");
            let to = dir.join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&file, &to).expect("copy");
        }
    }
    dir
}

fn validate(dir: &Path) -> (i32, String) {
    let out = Command::new(bin("gophermesh"))
        .current_dir(dir)
        .arg("validate")
        .output()
        .expect("gophermesh runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn env_index(container: &Value, name: &str) -> usize {
    container["environment"]
        .as_array()
        .and_then(|env| env.iter().position(|kv| kv["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {container}"))
}

#[test]
fn validate_accepts_the_shipped_files_with_a_summary() {
    let (code, text) = validate(&repo_root());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "mesh gophermesh: 3 virtual nodes, 2 virtual routers, 3 routes, 2 virtual services"
        ),
        "{text}"
    );
    assert!(
        text.contains("route distributor/distributor: distributor-v1 90%, distributor-v2 10%"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("ok"), "{text}");
}

#[test]
fn validate_catches_each_defect_naming_file_and_field() {
    type Breakage = (&'static str, &'static str, fn(&mut Value), &'static str);
    let cases: [Breakage; 11] = [
        (
            "mesh/routes/distributor.json",
            "spec.httpRoute.action.weightedTargets[1].virtualNode",
            |d| {
                d["spec"]["httpRoute"]["action"]["weightedTargets"][1]["virtualNode"] =
                    "distributor-v3".into()
            },
            "virtual node `distributor-v3` does not exist",
        ),
        (
            "mesh/virtual-nodes/requester.json",
            "spec.backends[0].virtualService.virtualServiceName",
            |d| {
                d["spec"]["backends"][0]["virtualService"]["virtualServiceName"] =
                    "nowhere.gophers.local".into()
            },
            "virtual service `nowhere.gophers.local` does not exist",
        ),
        (
            "mesh/routes/distributor.json",
            "spec.httpRoute.action.weightedTargets",
            |d| {
                d["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 0.into();
                d["spec"]["httpRoute"]["action"]["weightedTargets"][1]["weight"] = 0.into();
            },
            "every weight is 0",
        ),
        (
            "mesh/routes/distributor.json",
            "spec.httpRoute.action.weightedTargets[0].weight",
            |d| d["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 150.into(),
            "150 is out of range; allowed: 0 to 100",
        ),
        (
            "taskdefs/distributor-v2.json",
            "proxyConfiguration.properties[3].value",
            |d| d["proxyConfiguration"]["properties"][3]["value"] = "9090".into(),
            "AppPorts [9090] differ from virtual node `distributor-v2`'s listener ports [8080]",
        ),
        (
            "taskdefs/requester.json",
            "containerDefinitions[0].portMappings[0].containerPort",
            |d| d["containerDefinitions"][0]["portMappings"][0]["containerPort"] = 9000.into(),
            "port 9000 is not in AppPorts",
        ),
        (
            "taskdefs/requester.json",
            "containerDefinitions[1].user",
            |d| d["containerDefinitions"][1]["user"] = "1000".into(),
            "Envoy runs as user `1000` but IgnoredUID is 1337",
        ),
        (
            "taskdefs/distributor-v1.json",
            "containerDefinitions[0].dependsOn",
            |d| {
                d["containerDefinitions"][0]["dependsOn"] =
                    serde_json::json!([{"containerName": "envoy", "condition": "START"}])
            },
            "must depend on `envoy` with condition HEALTHY",
        ),
        (
            "taskdefs/distributor-v2.json",
            "containerDefinitions[0].environment[1].value",
            |d| {
                let i = env_index(&d["containerDefinitions"][0], "GOPHER_VERSION");
                assert_eq!(i, 1);
                d["containerDefinitions"][0]["environment"][i]["value"] = "v1".into();
            },
            "GOPHER_VERSION=v1, but this task is virtual node `distributor-v2`",
        ),
        (
            "taskdefs/distributor-v2.json",
            "containerDefinitions[1].environment[0].value",
            |d| {
                d["containerDefinitions"][1]["environment"][0]["value"] =
                "arn:aws:appmesh:${AWS_REGION}:${AWS_ACCOUNT_ID}:mesh/gophermesh/virtualNode/distributor-v9".into()
            },
            "virtual node `distributor-v9` does not exist",
        ),
        (
            "mesh/virtual-nodes/distributor-v1.json",
            "spec.listeners[0].portMapping.protocol",
            |d| d["spec"]["listeners"][0]["portMapping"]["protocol"] = "https".into(),
            "unknown variant `https`",
        ),
    ];
    for (file, path, breakage, reason) in cases {
        let dir = copy_of_shipped();
        edit(&dir, file, breakage);
        let (code, text) = validate(&dir);
        assert_eq!(code, 1, "{file} {path}: {text}");
        let line = text
            .lines()
            .find(|l| l.contains(reason))
            .unwrap_or_else(|| panic!("no `{reason}` in:\n{text}"));
        assert!(
            line.starts_with(&format!("{file}: {path}: ")),
            "expected {file}: {path}: …, got\n{line}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The original demo's defect: v2 passed Tag=v1.
    let dir = copy_of_shipped();
    edit(&dir, "taskdefs/distributor-v2.json", |d| {
        d["containerDefinitions"][0]["environment"] =
            serde_json::json!([{"name": "Tag", "value": "v1"}]);
    });
    let (code, text) = validate(&dir);
    assert_eq!(code, 1);
    assert!(
        text.contains(
            "taskdefs/distributor-v2.json: containerDefinitions[0].environment[0].value: Tag=v1"
        ),
        "{text}"
    );

    // Two files defining the same node.
    let dir = copy_of_shipped();
    std::fs::copy(
        dir.join("mesh/virtual-nodes/requester.json"),
        dir.join("mesh/virtual-nodes/zz-copy.json"),
    )
    .expect("copy");
    let (code, text) = validate(&dir);
    assert_eq!(code, 1);
    assert!(text.contains("mesh/virtual-nodes/zz-copy.json: virtual node requester is already defined in mesh/virtual-nodes/requester.json"), "{text}");
}

fn weights(moto: &Moto) -> String {
    moto.aws(&[
        "appmesh",
        "describe-route",
        "--mesh-name",
        "gophermesh",
        "--virtual-router-name",
        "distributor",
        "--route-name",
        "distributor",
        "--query",
        "route.spec.httpRoute.action.weightedTargets[].[virtualNode,weight]",
        "--output",
        "text",
    ])
}

#[test]
fn the_deploy_scripts_replay_the_walkthrough_against_moto() {
    let moto = Moto::start();
    // moto has no virtual services; those calls are covered by botocore validation above.
    let first = moto.script("walkthrough.sh", &["--skip", "virtual-services"]);
    for expected in [
        "created mesh gophermesh",
        "created virtual-node distributor-v2",
        "created route distributor",
        "registered arn:aws:ecs:us-east-1:",
        "created namespace gophers.local",
        "created service gopher-requester",
    ] {
        assert!(
            first.contains(expected),
            "missing `{expected}` in:\n{first}"
        );
    }
    let again = moto.script("walkthrough.sh", &["--skip", "virtual-services"]);
    assert!(
        again.contains("updated virtual-node requester")
            && again.contains("cluster gophermesh exists"),
        "{again}"
    );

    let nodes = moto.aws(&[
        "appmesh",
        "list-virtual-nodes",
        "--mesh-name",
        "gophermesh",
        "--query",
        "virtualNodes[].virtualNodeName",
        "--output",
        "text",
    ]);
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["distributor-v1", "distributor-v2", "requester"]);
    assert_eq!(weights(&moto), "distributor-v1\t90\ndistributor-v2\t10");

    let proxy = moto.aws(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "gopher-distributor-v2",
        "--query",
        "taskDefinition.proxyConfiguration",
        "--output",
        "json",
    ]);
    let proxy: Value = serde_json::from_str(&proxy).expect("json");
    assert_eq!(proxy["type"], "APPMESH");
    assert_eq!(proxy["containerName"], "envoy");
    assert!(
        proxy["properties"].as_array().is_some_and(|p| p
            .iter()
            .any(|kv| kv["name"] == "IgnoredUID" && kv["value"] == "1337")),
        "{proxy}"
    );

    moto.script("shift.sh", &["50", "50"]);
    assert_eq!(weights(&moto), "distributor-v1\t50\ndistributor-v2\t50");
    moto.script("shift.sh", &["0", "100"]);
    assert_eq!(weights(&moto), "distributor-v1\t0\ndistributor-v2\t100");

    let down = moto.script("teardown.sh", &["--skip", "virtual-services"]);
    assert!(down.contains("deleted mesh gophermesh"), "{down}");
    assert_eq!(
        moto.aws(&["appmesh", "list-meshes", "--query", "length(meshes)"]),
        "0"
    );
    assert_eq!(
        moto.aws(&[
            "ecs",
            "list-task-definitions",
            "--status",
            "ACTIVE",
            "--query",
            "length(taskDefinitionArns)"
        ]),
        "0"
    );
    assert_eq!(
        moto.aws(&[
            "servicediscovery",
            "list-namespaces",
            "--query",
            "length(Namespaces)"
        ]),
        "0"
    );
    assert_eq!(
        moto.aws(&[
            "ecs",
            "describe-clusters",
            "--clusters",
            "gophermesh",
            "--query",
            "clusters[?status=='ACTIVE'] | length(@)"
        ]),
        "0"
    );
    // Teardown twice is fine.
    moto.script("teardown.sh", &["--skip", "virtual-services"]);
}

#[test]
fn shift_refuses_bad_weights_before_calling_aws() {
    for args in [&["90"][..], &["101", "0"], &["0", "0"], &["ten", "90"]] {
        let out = Command::new(repo_root().join("deploy/shift.sh"))
            .args(args)
            .env(
                "PATH",
                format!("/nonexistent:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("usage") || err.contains("weight") || err.contains("both weights are 0"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn render_names_the_missing_variable_and_writes_nothing() {
    let out_dir = tempdir("render-missing").join("out");
    let out = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args(["render", "taskdefs", "--out"])
        .arg(&out_dir)
        .env_remove("AWS_ACCOUNT_ID")
        .env("AWS_REGION", "us-east-1")
        .env("IMAGE_REPOSITORY", "x")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment variable AWS_ACCOUNT_ID is not set")
    );
    assert!(
        !out_dir.exists(),
        "nothing is written when a variable is missing"
    );
}

/// `render` with `--xds-endpoint HOST:PORT` and without it, into `out`.
fn render_with(out: &Path, taskdefs: &Path, xds: Option<&str>, extra_env: &[(&str, &str)]) {
    let mut command = Command::new(bin("gophermesh"));
    command
        .current_dir(repo_root())
        .args(["render", "taskdefs", "--taskdefs-dir"])
        .arg(taskdefs)
        .arg("--out")
        .arg(out)
        .envs(RENDER_ENV)
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null());
    if let Some(xds) = xds {
        command.args(["--xds-endpoint", xds]);
    }
    assert!(
        command.status().expect("gophermesh runs").success(),
        "render failed"
    );
}

/// Each of the four task definitions rendered into `plain`, with its twin in `other`.
fn rendered_pairs(plain: &Path, other: &Path) -> Vec<(std::ffi::OsString, Value, Value)> {
    let read = |p: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
    };
    let files = json_files(plain);
    assert_eq!(files.len(), 4);
    files
        .iter()
        .map(|file| {
            let name = file.file_name().expect("name").to_owned();
            let pair = (read(file), read(&other.join(&name)));
            (name, pair.0, pair.1)
        })
        .collect()
}

/// The Envoy container of task definition `doc`: the one the proxy configuration names; a
/// gateway's task has only Envoy.
fn envoy_container(doc: &mut Value) -> &mut Value {
    let envoy = match &doc["proxyConfiguration"]["containerName"] {
        Value::Null => doc["containerDefinitions"][0]["name"].clone(),
        name => name.clone(),
    };
    doc["containerDefinitions"]
        .as_array_mut()
        .expect("containers")
        .iter_mut()
        .find(|c| c["name"] == envoy)
        .expect("the Envoy container")
}

#[test]
fn the_xds_endpoint_is_the_only_difference_in_the_rendered_task_definitions() {
    let (plain, pointed) = (tempdir("render-plain"), tempdir("render-pointed"));
    let taskdefs = repo_root().join("taskdefs");
    render_with(&plain, &taskdefs, None, &[]);
    render_with(&pointed, &taskdefs, Some("xds.gophers.local:15010"), &[]);
    for (name, before, mut after) in rendered_pairs(&plain, &pointed) {
        // The container the proxy configuration names; a gateway's task has only Envoy.
        let container = envoy_container(&mut after);
        let env = container["environment"]
            .as_array_mut()
            .expect("environment");
        let at = env
            .iter()
            .position(|v| v["name"] == "APPMESH_XDS_ENDPOINT")
            .unwrap_or_else(|| panic!("{name:?}: no APPMESH_XDS_ENDPOINT on its Envoy"));
        assert_eq!(env[at]["value"], "xds.gophers.local:15010");
        env.remove(at);
        assert_eq!(
            after, before,
            "{name:?} differs in more than APPMESH_XDS_ENDPOINT"
        );
    }
    let (code, said) = tests::run_to_end(
        "gophermesh",
        &[
            "render",
            "taskdefs",
            "--out",
            "/nonexistent",
            "--xds-endpoint",
            "xds.gophers.local",
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(
        said.contains("`xds.gophers.local` is not HOST:PORT"),
        "{said}"
    );
}

/// `render --sidecar-image` swaps the Envoy container's image and nothing else: the rest
/// of each task definition (environment, health check, user, proxy configuration) stays.
#[test]
fn the_sidecar_image_is_the_only_difference_in_the_rendered_task_definitions() {
    let (plain, swapped) = (tempdir("render-plain-image"), tempdir("render-swapped"));
    let taskdefs = repo_root().join("taskdefs");
    render_with(&plain, &taskdefs, None, &[]);
    let image = "registry.example/gophermesh-envoy:1.0";
    render_with(
        &swapped,
        &taskdefs,
        None,
        &[("GOPHERMESH_SIDECAR_IMAGE", image)],
    );
    for (name, before, mut after) in rendered_pairs(&plain, &swapped) {
        let container = envoy_container(&mut after);
        assert_eq!(container["image"], image, "{name:?}");
        let original = envoy_container(&mut before.clone())["image"].clone();
        assert!(
            original
                .as_str()
                .is_some_and(|i| i.contains("aws-appmesh-envoy")),
            "{original}"
        );
        container["image"] = original;
        assert_eq!(
            after, before,
            "{name:?} differs in more than the sidecar's image"
        );
    }
}

#[test]
fn the_control_plane_task_definition_passes_botocore_validation() {
    let out = tempdir("render-control-plane");
    render_with(
        &out,
        &repo_root().join("deploy/control-plane"),
        None,
        &[
            ("STATE_TABLE", "gophermesh-state"),
            (
                "API_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:gophermesh/api-credentials-AbCdEf",
            ),
            ("CONTROL_PLANE_HOST", "xds.gophers.local"),
        ],
    );
    let file = out.join("gophermesh-control-plane.json");
    let output = Command::new(tool("python"))
        .arg(repo_root().join("tests/tools/botocore_validate.py"))
        .args(["ecs", "RegisterTaskDefinition"])
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "botocore rejected it:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The self-hosted path end to end against moto: `deploy/control-plane.sh` makes the
/// table, the secret, the task definition, the load balancer and the service; a real
/// `gophermesh serve` on that table answers the App Mesh calls of
/// `deploy/walkthrough.sh --self-hosted`; `deploy/teardown.sh --self-hosted` removes it all.
/// Every script runs twice.
#[test]
fn the_control_plane_deploys_and_the_walkthrough_runs_through_it_against_moto() {
    let mut moto = Moto::start();
    let work = tempdir("control-plane-deploy");
    let (key, cert) = (work.join("key.pem"), work.join("cert.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=xds.gophers.local", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let certificate = moto.aws(&[
        "acm",
        "import-certificate",
        "--certificate",
        &format!("fileb://{}", cert.display()),
        "--private-key",
        &format!("fileb://{}", key.display()),
        "--query",
        "CertificateArn",
        "--output",
        "text",
    ]);
    let (key_id, secret) = ("AKIDDEPLOYTEST", "deploy/test/secret");
    moto.env.extend([
        ("CERTIFICATE_ARN".to_owned(), certificate),
        ("GOPHERMESH_API_ACCESS_KEY_ID".to_owned(), key_id.to_owned()),
        (
            "GOPHERMESH_API_SECRET_ACCESS_KEY".to_owned(),
            secret.to_owned(),
        ),
    ]);

    // The first run makes everything but cannot wait for an API that no task runs here.
    let first = moto.script_routed(
        "control-plane.sh",
        &["--skip", "wait"],
        "http://127.0.0.1:9",
    );
    for expected in [
        "created table gophermesh-state",
        "created secret gophermesh/api-credentials",
        "registered arn:aws:ecs:",
        "created load balancer gophermesh-control-plane",
        "created TLS listener 15010 -> gophermesh-xds",
        "created TLS listener 443 -> gophermesh-api",
        "created service gophermesh-control-plane",
        "xds.gophers.local is an alias of",
    ] {
        assert!(
            first.contains(expected),
            "missing `{expected}` in:\n{first}"
        );
    }

    // The control plane itself, as a task would run it: on that table, with those keys.
    let mut env = moto.env.clone();
    env.extend([
        ("AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
    ]);
    let dir = tests::copy_of_shipped("control-plane-deploy");
    let serve = tests::serve::Serve::start(
        &dir,
        &[
            &["--state", "dynamodb://gophermesh-state", "--empty"],
            tests::SERVE_ON_LOOPBACK,
            &[
                "--api-access-key-id",
                key_id,
                "--api-secret-access-key",
                secret,
            ],
        ]
        .concat(),
        &env,
    );
    let again = moto.script_routed("control-plane.sh", &[], &serve.appmesh);
    for expected in [
        "table gophermesh-state exists",
        "secret gophermesh/api-credentials exists",
        "updated service gophermesh-control-plane",
        "it answers",
    ] {
        assert!(
            again.contains(expected),
            "missing `{expected}` in:\n{again}"
        );
    }
    // Run again with the maintained sidecar: a new revision of each task definition, its
    // Envoy container on the new image and nothing else changed.
    let image = "000000000000.dkr.ecr.us-east-1.amazonaws.com/gophermesh-envoy:1.40";
    for args in [
        &["--self-hosted"][..],
        &["--self-hosted", "--sidecar-image", image][..],
    ] {
        let walk = moto.script_routed("walkthrough.sh", args, &serve.appmesh);
        assert!(walk.contains("self-hosted control plane"), "{walk}");
    }
    let images = moto.aws(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "gopher-requester",
        "--query",
        "taskDefinition.containerDefinitions[].[name, image]",
        "--output",
        "text",
    ]);
    assert!(
        images.contains(&format!("envoy\t{image}")) && !images.contains("aws-appmesh-envoy"),
        "{images}"
    );
    assert!(images.contains("requester\t"), "{images}");
    let described = tests::aws_appmesh(
        &serve.appmesh,
        (key_id, secret),
        "us-east-1",
        &tests::DISTRIBUTOR_WEIGHTS,
    );
    assert_eq!(described.0, 0, "{described:?}");
    let weights: Value = serde_json::from_str(&described.1).expect("json");
    assert_eq!(weights, serde_json::json!([90, 10]));
    let xds = moto.aws(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "gopher-requester",
        "--query",
        "taskDefinition.containerDefinitions[?name=='envoy'].environment[] | [?name=='APPMESH_XDS_ENDPOINT'].value | [0]",
        "--output",
        "text",
    ]);
    assert_eq!(xds, "xds.gophers.local:15010");
    let service = moto.aws(&[
        "ecs",
        "describe-services",
        "--cluster",
        "gophermesh",
        "--services",
        "gophermesh-control-plane",
        "--query",
        "services[0].[desiredCount, length(loadBalancers)]",
        "--output",
        "text",
    ]);
    assert_eq!(service, "2\t2", "two tasks behind both target groups");
    moto.script_routed("shift.sh", &["--self-hosted", "0", "100"], &serve.appmesh);

    for _ in 0..2 {
        let down = moto.script_routed("teardown.sh", &["--self-hosted"], &serve.appmesh);
        assert!(down.contains("teardown done"), "{down}");
    }
    for (args, none) in [
        (
            vec!["dynamodb", "list-tables", "--query", "length(TableNames)"],
            "0",
        ),
        (
            vec![
                "secretsmanager",
                "list-secrets",
                "--query",
                "length(SecretList)",
            ],
            "0",
        ),
        (
            vec![
                "elbv2",
                "describe-load-balancers",
                "--query",
                "length(LoadBalancers)",
            ],
            "0",
        ),
        (
            vec![
                "elbv2",
                "describe-target-groups",
                "--query",
                "length(TargetGroups)",
            ],
            "0",
        ),
        (
            vec![
                "ecs",
                "list-task-definitions",
                "--status",
                "ACTIVE",
                "--query",
                "length(taskDefinitionArns)",
            ],
            "0",
        ),
        (
            vec![
                "servicediscovery",
                "list-namespaces",
                "--query",
                "length(Namespaces)",
            ],
            "0",
        ),
        (
            vec![
                "ecs",
                "describe-services",
                "--cluster",
                "gophermesh",
                "--services",
                "gophermesh-control-plane",
                "gopher-requester",
                "gopher-distributor-v1",
                "gopher-distributor-v2",
                "--query",
                "services[?status=='ACTIVE'] | length(@)",
            ],
            "0",
        ),
        (
            vec![
                "ecs",
                "describe-clusters",
                "--clusters",
                "gophermesh",
                "--query",
                "clusters[?status=='ACTIVE'] | length(@)",
            ],
            "0",
        ),
    ] {
        assert_eq!(moto.aws(&args), none, "left behind: {args:?}");
    }
}

/// Removes the member at `path` (`a.b[0].c`) from `doc`; whether it was there.
fn remove_path(doc: &mut Value, path: &str) -> bool {
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((name, rest)) => {
                parts.push(name.to_owned());
                parts.extend(
                    rest.trim_end_matches(']')
                        .split("][")
                        .map(|i| format!("#{i}")),
                );
            }
            None => parts.push(part.to_owned()),
        }
    }
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut at = doc;
    for p in parents {
        at = match p.strip_prefix('#') {
            Some(i) => match i.parse::<usize>().ok().and_then(|i| at.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            None => match at.get_mut(p.as_str()) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    at.as_object_mut().and_then(|o| o.remove(last)).is_some()
}

/// Every member of botocore's appmesh model, in the inputs of the create operations this
/// control plane serves, is known to the model (so it is implemented, or its check refuses
/// it by name where it is not): none is an "unknown
/// field", which would mean App Mesh JSON the model does not know exists.
#[test]
fn every_botocore_field_is_implemented_or_refused_by_name() {
    let ops = [
        "CreateMesh",
        "CreateVirtualNode",
        "CreateVirtualRouter",
        "CreateRoute",
        "CreateVirtualService",
        "CreateVirtualGateway",
        "CreateGatewayRoute",
    ];
    let out = Command::new(tool("python"))
        .arg(repo_root().join("tests/tools/appmesh_maximal.py"))
        .args(ops)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut unknown = Vec::new();
    let mut misread = Vec::new();
    for op in ops {
        let mut doc = docs[op].clone();
        for _ in 0..200 {
            let problems = match meshmodel::Resource::from_value("max.json", doc.clone()) {
                Ok(_) => break,
                Err(p) => p,
            };
            let Some(p) = problems
                .0
                .iter()
                .find(|p| p.reason.contains("unknown field"))
            else {
                // A shape botocore takes that the model cannot even read.
                misread.extend(problems.0.iter().map(|p| format!("{op}: {p}")));
                break;
            };
            let field = p
                .reason
                .split('`')
                .nth(1)
                .expect("the unknown field's name")
                .to_owned();
            let path = if p.path.is_empty() {
                field.clone()
            } else if p.path.ends_with(&field) {
                p.path.clone()
            } else {
                format!("{}.{field}", p.path)
            };
            unknown.push(format!("{op}: {path}"));
            assert!(
                remove_path(&mut doc, &path),
                "{op}: cannot remove {path} from {doc}"
            );
        }
    }
    assert!(
        unknown.is_empty(),
        "botocore fields the model does not know:\n  {}",
        unknown.join("\n  ")
    );
    assert!(
        misread.is_empty(),
        "botocore shapes the model cannot read:\n  {}",
        misread.join("\n  ")
    );
}

/// `export service-connect` on the shipped mesh: the files pass botocore's validation as
/// `RegisterTaskDefinition` and `CreateService` inputs, no task definition keeps an Envoy
/// or the APPMESH proxy, the split and the canary route are reported lost by file and
/// path, `--strict` writes nothing, and `--features` prints the table.
#[test]
fn service_connect_export_validates_and_names_what_it_loses() {
    let out = tempdir("service-connect");
    let run = |args: &[&str]| {
        Command::new(bin("gophermesh"))
            .current_dir(repo_root())
            .args(["export", "service-connect", "--out"])
            .arg(&*out)
            .args(args)
            .output()
            .expect("gophermesh runs")
    };
    let strict = run(&["--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(json_files(&out).is_empty(), "--strict wrote files");

    let done = run(&[]);
    assert!(done.status.success());
    let lost = String::from_utf8_lossy(&done.stderr);
    for expected in [
        "mesh/routes/distributor.json: spec.httpRoute.action.weightedTargets: weighted targets",
        "mesh/routes/distributor-canary.json: spec.httpRoute.match: route matches",
        "mesh/routes/distributor.json: spec.httpRoute.retryPolicy: retry policies",
    ] {
        assert!(
            lost.contains(expected),
            "`{expected}` not reported:\n{lost}"
        );
    }
    let mut args: Vec<String> = Vec::new();
    for file in json_files(&out) {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if let Some(family) = name.strip_suffix(".service-connect.json") {
            let input = serde_json::json!({
                "serviceName": family,
                "taskDefinition": family,
                "serviceConnectConfiguration": doc["serviceConnectConfiguration"],
            });
            let path = out.join(format!("{family}.create-service.json"));
            std::fs::write(&path, input.to_string()).expect("write");
            args.extend([
                "ecs".into(),
                "CreateService".into(),
                path.display().to_string(),
            ]);
        } else if !name.ends_with(".create-service.json") {
            assert!(doc.get("proxyConfiguration").is_none(), "{name}");
            assert!(
                !doc["containerDefinitions"]
                    .to_string()
                    .contains("aws-appmesh-envoy"),
                "{name} keeps its Envoy"
            );
            args.extend([
                "ecs".into(),
                "RegisterTaskDefinition".into(),
                file.display().to_string(),
            ]);
        }
    }
    assert_eq!(
        args.len(),
        3 * 6,
        "three task definitions and three services"
    );
    let checked = Command::new(tool("python"))
        .arg(repo_root().join("tests/tools/botocore_validate.py"))
        .args(&args)
        .output()
        .expect("python runs");
    assert!(
        checked.status.success(),
        "botocore rejected an export:\n{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    let broken = tempdir("service-connect-broken");
    let refused = run(&["--mesh-dir", broken.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("does not validate, so nothing was exported"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let unwritable = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args([
            "export",
            "service-connect",
            "--out",
            "/proc/gophermesh-export",
        ])
        .output()
        .expect("gophermesh runs");
    assert!(
        String::from_utf8_lossy(&unwritable.stderr)
            .contains("--out /proc/gophermesh-export: cannot create it"),
        "{}",
        String::from_utf8_lossy(&unwritable.stderr)
    );

    // The book's export table is checked against `--features` by the docs test.
    let table = run(&["--features"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("| weighted targets | lost: "),
        "--features prints the table"
    );
}

/// `export lattice` on the shipped mesh, applied with its own apply.sh and the real AWS CLI
/// to moto: the service network, three target groups, two services and their listeners,
/// the 90/10 split as 810/90 on the distributor's default action and the canary header rule
/// before it; the losses named by file and path; a refused call stops the script, which
/// says what it created so far.
#[test]
fn lattice_export_applies_to_moto_with_the_split_and_the_canary_rule() {
    let moto = Moto::start();
    let out = tempdir("lattice");
    let exported = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args(["export", "lattice", "--out"])
        .arg(&*out)
        .output()
        .expect("gophermesh runs");
    assert!(exported.status.success());
    let lost = String::from_utf8_lossy(&exported.stderr);
    for expected in [
        "mesh/routes/distributor.json: spec.httpRoute.retryPolicy: retry policies",
        "mesh/virtual-nodes/requester.json: spec.backends: backends",
    ] {
        assert!(
            lost.contains(expected),
            "`{expected}` not reported:\n{lost}"
        );
    }
    let apply = |dir: &Path| {
        Command::new(dir.join("apply.sh"))
            .envs(moto.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("PATH", moto.path_env())
            .output()
            .expect("apply.sh runs")
    };
    let applied = apply(&out);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let created = std::fs::read_to_string(out.join("created.txt")).expect("created.txt");
    let id = |reference: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{reference}=")))
            .unwrap_or_else(|| panic!("{reference} was not created:\n{created}"))
            .to_owned()
    };
    assert!(created.contains("rule-distributor-gophers-local-distributor-canary="));
    for (args, expected) in [
        (
            vec!["list-service-networks", "--query", "length(items)"],
            "1",
        ),
        (vec!["list-services", "--query", "length(items)"], "2"),
        (vec!["list-target-groups", "--query", "length(items)"], "3"),
    ] {
        let mut all = vec!["vpc-lattice"];
        all.extend(args.iter());
        assert_eq!(moto.aws(&all), expected, "{args:?}");
    }
    let service = id("svc-distributor-gophers-local");
    let listener = id("listener-distributor-gophers-local");
    let weights = moto.aws(&[
        "vpc-lattice",
        "get-listener",
        "--service-identifier",
        &service,
        "--listener-identifier",
        &listener,
        "--query",
        "defaultAction.forward.targetGroups[].weight",
        "--output",
        "text",
    ]);
    assert_eq!(weights, "810\t90", "90/10 as Lattice weights");
    let port = moto.aws(&[
        "vpc-lattice",
        "get-target-group",
        "--target-group-identifier",
        &id("tg-distributor-v2"),
        "--query",
        "config.port",
    ]);
    assert_eq!(port, "8080");

    // A refused call stops it, saying what was made.
    let broken = tempdir("lattice-broken");
    for file in std::fs::read_dir(&*out)
        .expect("dir")
        .map(|e| e.expect("entry").path())
    {
        std::fs::copy(&file, broken.join(file.file_name().expect("name"))).expect("copy");
    }
    let tg = broken.join("003-create-target-group--tg-distributor-v2.json");
    let text = std::fs::read_to_string(&tg)
        .expect("read")
        .replace("8080", "\"eighty\"");
    std::fs::write(&tg, text).expect("write");
    let refused = apply(&broken);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("003-create-target-group--tg-distributor-v2.json: aws vpc-lattice create-target-group was refused; created so far")
            && said.contains("tg-distributor-v1="),
        "{said}"
    );
}

/// `gophermesh export lattice` with `args`, run in `dir` against `moto`: (exit code,
/// stdout, stderr).
fn export_lattice(moto: &Moto, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("gophermesh"))
        .current_dir(dir)
        .args(["export", "lattice"])
        .args(args)
        .envs(moto.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("PATH", moto.path_env())
        .output()
        .expect("gophermesh runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lattice's target group ids by name, and the weights a forward action gives each name.
fn lattice_forward(moto: &Moto, action: &Value) -> Vec<(String, i64)> {
    let groups: Value =
        serde_json::from_str(&moto.aws(&["vpc-lattice", "list-target-groups", "--output", "json"]))
            .expect("json");
    let name_of = |id: &str| {
        groups["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|g| g["id"] == id)
            .map(|g| g["name"].as_str().expect("name").to_owned())
            .unwrap_or_else(|| panic!("no target group {id}"))
    };
    action["forward"]["targetGroups"]
        .as_array()
        .expect("a forward action")
        .iter()
        .map(|t| {
            (
                name_of(t["targetGroupIdentifier"].as_str().expect("id")),
                t["weight"].as_i64().expect("weight"),
            )
        })
        .collect()
}

/// `export lattice --apply` against moto (its Lattice completed by
/// tests/tools/moto_lattice.py), read back with the AWS CLI: the 90/10 split on the
/// distributor's listener and the canary header rule before it, to the right target
/// groups. A second apply changes nothing; a mesh without the canary and at 50/50 updates
/// the listener and deletes the rule; `--teardown` deletes everything, and again finds
/// nothing. A resource of the same name that is not the mesh's stops the apply, which says
/// what it had done, and so does one of the mesh's whose port Lattice cannot change.
#[test]
fn lattice_apply_reconciles_and_tears_down() {
    let moto = Moto::start();
    let dir = tests::copy_of_shipped("lattice-apply");
    let apply = || export_lattice(&moto, &dir, &["--apply"]);
    let (code, said, err) = apply();
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(
        said.contains("done: 11 created, 0 updated, 0 unchanged, 0 deleted"),
        "{said}"
    );
    assert!(
        err.contains("lost: mesh/routes/distributor.json: spec.httpRoute.retryPolicy"),
        "the losses are printed with --apply too:\n{err}"
    );
    let service = moto.aws(&[
        "vpc-lattice",
        "list-services",
        "--query",
        "items[?name=='distributor-gophers-local'].id | [0]",
        "--output",
        "text",
    ]);
    let listener = moto.aws(&[
        "vpc-lattice",
        "list-listeners",
        "--service-identifier",
        &service,
        "--query",
        "items[0].id",
        "--output",
        "text",
    ]);
    let get = |call: &str, more: &[&str]| -> Value {
        let mut args = vec![
            "vpc-lattice",
            call,
            "--service-identifier",
            &service,
            "--listener-identifier",
            &listener,
            "--output",
            "json",
        ];
        args.extend(more);
        serde_json::from_str(&moto.aws(&args)).expect("json")
    };
    let weights = |v1: i64, v2: i64| {
        vec![
            ("distributor-v1".to_owned(), v1),
            ("distributor-v2".to_owned(), v2),
        ]
    };
    let listener_doc = get("get-listener", &[]);
    assert_eq!(
        lattice_forward(&moto, &listener_doc["defaultAction"]),
        weights(810, 90)
    );
    let rules = get("list-rules", &[]);
    let rules: Vec<&Value> = rules["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["isDefault"] != true)
        .collect();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["name"], "distributor-canary");
    assert_eq!(rules[0]["priority"], 1);
    let rule = get(
        "get-rule",
        &["--rule-identifier", rules[0]["id"].as_str().expect("id")],
    );
    assert_eq!(
        rule["match"]["httpMatch"]["headerMatches"][0],
        serde_json::json!({"name": "x-gopher-version", "match": {"exact": "v2"}})
    );
    assert_eq!(
        lattice_forward(&moto, &rule["action"]),
        vec![("distributor-v2".to_owned(), 900)]
    );
    let tags = moto.aws(&[
        "vpc-lattice",
        "list-tags-for-resource",
        "--resource-arn",
        rule["arn"].as_str().expect("arn"),
        "--query",
        "tags",
        "--output",
        "json",
    ]);
    assert!(
        tags.contains("\"gophermesh:mesh\": \"gophermesh\""),
        "{tags}"
    );

    // Again: nothing changes.
    let (code, said, err) = apply();
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(
        said.contains("done: 0 created, 0 updated, 11 unchanged, 0 deleted"),
        "{said}"
    );
    assert_eq!(
        moto.aws(&[
            "vpc-lattice",
            "list-target-groups",
            "--query",
            "length(items)"
        ]),
        "3"
    );

    // The mesh changes: no canary, 50/50.
    std::fs::remove_file(dir.join("mesh/routes/distributor-canary.json")).expect("rm");
    edit(&dir, "mesh/routes/distributor.json", |r| {
        for t in r["spec"]["httpRoute"]["action"]["weightedTargets"]
            .as_array_mut()
            .expect("targets")
        {
            t["weight"] = 50.into();
        }
    });
    let (code, said, err) = apply();
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(
        said.contains("done: 0 created, 1 updated, 9 unchanged, 1 deleted"),
        "{said}"
    );
    assert!(
        said.contains("deleted   rule distributor-canary of service distributor-gophers-local"),
        "{said}"
    );
    assert_eq!(
        lattice_forward(&moto, &get("get-listener", &[])["defaultAction"]),
        weights(450, 450)
    );
    assert_eq!(
        get("list-rules", &["--query", "length(items[?!isDefault])"]),
        Value::from(0)
    );

    // Teardown: everything goes, in an order Lattice accepts; then there is nothing.
    let (code, said, err) = export_lattice(&moto, &dir, &["--teardown"]);
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(said.contains("done: 8 deleted"), "{said}");
    for list in [
        "list-services",
        "list-target-groups",
        "list-service-networks",
    ] {
        assert_eq!(
            moto.aws(&["vpc-lattice", list, "--query", "length(items)"]),
            "0",
            "{list}"
        );
    }
    let (code, said, _) = export_lattice(&moto, &dir, &["--teardown"]);
    assert_eq!(code, Some(0));
    assert!(
        said.contains("nothing of mesh gophermesh was there"),
        "{said}"
    );

    // A target group of that name that is not the mesh's: left alone, and the apply stops.
    let arn = moto.aws(&[
        "vpc-lattice",
        "create-target-group",
        "--name",
        "requester",
        "--type",
        "IP",
        "--config",
        "port=80,protocol=HTTP,vpcIdentifier=vpc-12345678",
        "--query",
        "arn",
        "--output",
        "text",
    ]);
    let (code, said, err) = apply();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        err.contains("target group requester: a Lattice resource of that name exists")
            && err.contains("without the tag gophermesh:mesh=gophermesh")
            && err.contains("created   target group distributor-v2"),
        "{err}"
    );
    // The mesh's, but on another port, which Lattice cannot change: named, and a stop.
    moto.aws(&[
        "vpc-lattice",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "gophermesh:mesh=gophermesh",
    ]);
    let (code, said, err) = apply();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        err.contains("target group requester: its config.port differs from the mesh's and Lattice cannot change it"),
        "{err}"
    );
}

/// `export lattice --apply` stops at the first call AWS refuses (here moto, told to check
/// credentials after five calls), naming it and what it created before; `--apply` without
/// a VPC is refused before any call.
#[test]
fn lattice_apply_stops_at_a_refused_call() {
    let moto = Moto::bare(&[("INITIAL_NO_AUTH_ACTION_COUNT", "5")]);
    let dir = tests::copy_of_shipped("lattice-refused");
    let (code, _, err) = export_lattice(&moto, &dir, &["--apply"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--apply needs --vpc-id"), "{err}");
    let (code, said, err) = export_lattice(&moto, &dir, &["--apply", "--vpc-id", "vpc-12345678"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        err.contains("target group requester: aws vpc-lattice create-target-group was refused")
            && err.contains("InvalidClientTokenId"),
        "{err}"
    );
    let before = err
        .split_once("changed before it:")
        .map(|(_, b)| b)
        .unwrap_or_default();
    for made in [
        "created   service network gophermesh",
        "created   target group distributor-v1",
        "created   target group distributor-v2",
    ] {
        assert!(before.contains(made), "`{made}` not reported:\n{err}");
    }
}

/// `export gateway-api` on the shipped mesh, read back: one object per file, each with its
/// apiVersion and kind; every backendRef and parentRef names a Service it wrote; each
/// HTTPRoute rule has the weights, header matches and per-request timeout of its App Mesh
/// route, in App Mesh's priority order.
#[test]
fn gateway_api_export_reads_back_as_the_mesh_routes() {
    let out = tempdir("gateway-api");
    let exported = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args(["export", "gateway-api", "--out"])
        .arg(&*out)
        .output()
        .expect("gophermesh runs");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let mut objects: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(&*out).expect("dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{doc}"
        );
        objects.push(doc);
    }
    let services: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let (mesh, _) = meshmodel::load(&repo_root().join("mesh"), &repo_root().join("taskdefs"))
        .expect("the shipped mesh");
    let on_gateway = |o: &Value| o["spec"]["parentRefs"][0]["kind"] == "Gateway";
    for route in objects
        .iter()
        .filter(|o| o["kind"] == "HTTPRoute" && !on_gateway(o))
    {
        let router = route["metadata"]["name"].as_str().expect("name");
        let parent = route["spec"]["parentRefs"][0]["name"]
            .as_str()
            .expect("parent");
        assert!(services.contains(&parent), "{router}: no Service {parent}");
        let mut expected: Vec<&meshmodel::appmesh::RouteInput> = mesh.routes_of(router);
        expected.sort_by_key(|r| r.spec.priority.unwrap_or(i64::MAX));
        let rules = route["spec"]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), expected.len(), "{router}");
        for (rule, r) in rules.iter().zip(expected) {
            let http = r.spec.http_route.as_ref().expect("an httpRoute");
            let weights: Vec<i64> = http
                .action
                .weighted_targets
                .iter()
                .map(|t| t.weight)
                .collect();
            let exported: Vec<i64> = rule["backendRefs"]
                .as_array()
                .expect("backendRefs")
                .iter()
                .map(|b| {
                    assert!(services.contains(&b["name"].as_str().expect("name")), "{b}");
                    b["weight"].as_i64().expect("weight")
                })
                .collect();
            assert_eq!(exported, weights, "{router}/{}", r.route_name);
            let headers: Vec<(String, String)> = http
                .route_match
                .headers
                .iter()
                .map(|h| {
                    let exact = h.header_match.as_ref().and_then(|m| m.exact.clone());
                    (
                        h.name.clone(),
                        exact.expect("the shipped headers match exactly"),
                    )
                })
                .collect();
            let read: Vec<(String, String)> = rule["matches"][0]["headers"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            assert_eq!(h["type"], "Exact");
                            (
                                h["name"].as_str().expect("name").to_owned(),
                                h["value"].as_str().expect("value").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(read, headers, "{router}/{}", r.route_name);
            let timeout = http
                .timeout
                .as_ref()
                .and_then(|t| t.per_request)
                .map(|d| format!("{}s", d.to_std().as_secs()));
            assert_eq!(
                rule["timeouts"]["request"].as_str().map(ToOwned::to_owned),
                timeout,
                "{router}/{}",
                r.route_name
            );
        }
    }
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["kind"] == "HTTPRoute" && !on_gateway(o))
            .count(),
        2,
        "the distributor's and the requester's routers"
    );
    // The ingress gateway: a Gateway with its listener, and an HTTPRoute on it per gateway
    // route, sending to the target service's Service with App Mesh's default rewrites.
    let gateway = objects
        .iter()
        .find(|o| o["kind"] == "Gateway")
        .expect("a Gateway");
    assert_eq!(gateway["metadata"]["name"], "ingress");
    assert_eq!(gateway["spec"]["listeners"][0]["port"], 9080);
    for (key, gr) in &mesh.gateway_routes {
        let name = format!("{}-{}", key.0, key.1);
        let route = objects
            .iter()
            .find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no HTTPRoute {name}"));
        assert_eq!(route["spec"]["parentRefs"][0]["name"], "ingress");
        let http = gr.value.spec.http_route.as_ref().expect("an httpRoute");
        let rule = &route["spec"]["rules"][0];
        let service = &http.action.target.virtual_service.virtual_service_name;
        let front = service.split('.').next().expect("a name");
        assert!(services.contains(&front), "{name}: no Service {front}");
        assert_eq!(rule["backendRefs"][0]["name"], front, "{name}");
        let prefix = http.route_match.prefix.clone().expect("a prefix");
        assert_eq!(
            rule["matches"][0]["path"]["value"],
            prefix.as_str(),
            "{name}"
        );
        let rewrite = &rule["filters"][0]["urlRewrite"];
        assert_eq!(rewrite["hostname"], service.as_str(), "{name}");
        // The matched prefix becomes `/`, unless it is `/` already.
        if prefix == "/" {
            assert!(rewrite["path"].is_null(), "{name}: {rewrite}");
        } else {
            assert_eq!(rewrite["path"]["replacePrefixMatch"], "/", "{name}");
        }
    }
}
