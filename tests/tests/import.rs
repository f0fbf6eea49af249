//! App Mesh as its users wrote it, end to end: the walkthrough as a CloudFormation template
//! and as the EKS controller's manifests, run by `up` with real Envoys and split 90/10; a
//! CDK app synthesized with aws-cdk-lib and served; every resource listed back with the
//! AWS CLI; cfn-lint accepting the templates; and bad input refused whole, naming the
//! file, the resource and the path, with what ran before unchanged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tests::serve::Serve;
use tests::{
    CHI2_BOUND, LocalMesh, Mode, aws_appmesh, chi_square, compare, copy_of_shipped, count,
    repo_root, tool, until_routes_acked,
};

/// The walkthrough template's imports (another stack's exports).
const IMPORTS: [&str; 4] = [
    "--import",
    "gophers-network-DomainSuffix=local",
    "--import",
    "gophers-network-VpcId=vpc-0123",
];

fn example(path: &str) -> PathBuf {
    repo_root().join("examples").join(path)
}

/// Every resource of mesh `mesh` as the AWS CLI lists it from the App Mesh API at
/// `endpoint`: `virtualNode/NAME`, `route/ROUTER/NAME`, ...
fn listed(endpoint: &str, mesh: &str) -> BTreeSet<String> {
    let cli = |args: &[&str]| -> Value {
        let (code, out, err) = aws_appmesh(endpoint, ("AKID", "secret"), "us-east-1", args);
        assert_eq!(code, 0, "aws appmesh {args:?}: {err}");
        serde_json::from_str(&out).expect("json")
    };
    let names = |v: &Value, list: &str, field: &str| -> Vec<String> {
        v[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r[field].as_str().map(str::to_owned))
            .collect()
    };
    let m = ["--mesh-name", mesh];
    let mut out = BTreeSet::new();
    for (command, list, field, kind) in [
        (
            "list-virtual-nodes",
            "virtualNodes",
            "virtualNodeName",
            "virtualNode",
        ),
        (
            "list-virtual-services",
            "virtualServices",
            "virtualServiceName",
            "virtualService",
        ),
        (
            "list-virtual-routers",
            "virtualRouters",
            "virtualRouterName",
            "virtualRouter",
        ),
        (
            "list-virtual-gateways",
            "virtualGateways",
            "virtualGatewayName",
            "virtualGateway",
        ),
    ] {
        for name in names(&cli(&[&[command][..], &m].concat()), list, field) {
            let parent = name.clone();
            if kind == "virtualRouter" {
                let routes =
                    cli(&[&["list-routes", "--virtual-router-name", &parent][..], &m].concat());
                out.extend(
                    names(&routes, "routes", "routeName")
                        .into_iter()
                        .map(|r| format!("route/{parent}/{r}")),
                );
            }
            if kind == "virtualGateway" {
                let routes = cli(&[
                    &["list-gateway-routes", "--virtual-gateway-name", &parent][..],
                    &m,
                ]
                .concat());
                out.extend(
                    names(&routes, "gatewayRoutes", "gatewayRouteName")
                        .into_iter()
                        .map(|r| format!("gatewayRoute/{parent}/{r}")),
                );
            }
            out.insert(format!("{kind}/{name}"));
        }
    }
    out
}

/// The walkthrough's resources as `listed` names them.
fn walkthrough_resources(routers: [&str; 2]) -> BTreeSet<String> {
    [
        "virtualNode/distributor-v1".to_owned(),
        "virtualNode/distributor-v2".into(),
        "virtualNode/requester".into(),
        "virtualService/distributor.gophers.local".into(),
        "virtualService/requester.gophers.local".into(),
        format!("virtualRouter/{}", routers[0]),
        format!("virtualRouter/{}", routers[1]),
        format!("route/{}/distributor", routers[0]),
        format!("route/{}/requester", routers[1]),
        "virtualGateway/ingress".into(),
        "gatewayRoute/ingress/distributor".into(),
        "gatewayRoute/ingress/requester".into(),
    ]
    .into()
}

/// 600 calls split as 90/10 (chi-square within the bound).
async fn splits_90_10(mesh: &LocalMesh) {
    until_routes_acked(mesh, "requester").await;
    let report = compare(mesh, 600, 8).await;
    assert_eq!(report["ok"], 600, "{report}");
    let chi2 = chi_square(&report, 0.9);
    assert!(chi2 < CHI2_BOUND, "not 90/10 (chi2 {chi2}): {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_as_a_cloudformation_stack_runs_and_shifts() {
    let dir = copy_of_shipped("cfn-walkthrough");
    std::fs::remove_dir_all(dir.join("mesh")).expect("no mesh/: the template is the mesh");
    let template = example("cloudformation/walkthrough.yaml");
    let template = template.to_str().expect("utf-8");
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Loopback,
        &[&["-f", template][..], &IMPORTS].concat(),
    );
    assert!(
        mesh.output().contains("from ") && mesh.output().contains("walkthrough.yaml"),
        "{}",
        mesh.output()
    );
    assert_eq!(
        listed(&mesh.api, "gophermesh"),
        walkthrough_resources(["distributor", "requester"])
    );
    splits_90_10(&mesh).await;

    // A dry run of another split says what it would change, and changes nothing.
    let before = mesh.status().await["version"].clone();
    let shift = [
        &[
            "apply",
            "-f",
            template,
            "--parameter",
            "Split=done",
            "--quiet",
        ][..],
        &IMPORTS,
    ]
    .concat();
    let (code, said) = mesh.cli(&[&shift[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("# would update: ") && said.contains(": DistributorRoute"),
        "{said}"
    );
    assert!(
        said.contains("dry run: 0 to create, 1 to update, 12 unchanged"),
        "{said}"
    );
    assert_eq!(mesh.status().await["version"], before);

    let (code, said) = mesh.cli(&shift);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("0 created, 1 updated, 12 unchanged"),
        "{said}"
    );
    until_routes_acked(&mesh, "requester").await;
    let report = compare(&mesh, 200, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (200.0, 0.0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_as_kubernetes_manifests_runs_and_splits() {
    let dir = copy_of_shipped("k8s-walkthrough");
    std::fs::remove_dir_all(dir.join("mesh")).expect("no mesh/: the manifests are the mesh");
    let manifests = example("kubernetes/walkthrough.yaml");
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Loopback,
        &["-f", manifests.to_str().expect("utf-8")],
    );
    assert_eq!(
        listed(&mesh.api, "gophermesh"),
        walkthrough_resources(["distributor_gophers", "requester_gophers"])
    );
    splits_90_10(&mesh).await;
}

/// `serve` with nothing in it (no tasks, so no Envoys: bad input reaches only the store).
fn empty_serve(dir: &Path) -> Serve {
    Serve::start(
        dir,
        &[&["--empty"][..], tests::SERVE_ON_LOOPBACK].concat(),
        &[],
    )
}

/// `gophermesh ARGS` against `serve`'s control API, from `dir` (`.gophermesh` there holds
/// its token): exit code and all it printed.
fn cli(serve: &Serve, dir: &Path, args: &[&str]) -> (i32, String) {
    tests::cli_against(&serve.control, dir, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdk_app_is_synthesized_served_and_listed_back_whole() {
    let dir = copy_of_shipped("cdk");
    let out = dir.join("cdk.out");
    let synth = Command::new("node")
        .arg(repo_root().join("tests/cdk/app.js"))
        .arg(&out)
        .current_dir(repo_root().join("tests/cdk"))
        .output()
        .unwrap_or_else(|e| {
            panic!("node runs (install Node.js 20+, then scripts/setup.sh --tests): {e}")
        });
    assert!(
        synth.status.success(),
        "cdk synth failed (aws-cdk-lib is installed into tests/cdk by scripts/setup.sh --tests): {}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let template = out.join("GophersCdk.template.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&template).expect("synthesized"))
            .expect("json");
    let app_mesh: BTreeSet<&str> = doc["Resources"]
        .as_object()
        .expect("resources")
        .values()
        .filter_map(|r| r["Type"].as_str())
        .filter(|t| t.starts_with("AWS::AppMesh::"))
        .collect();
    assert_eq!(app_mesh.len(), 7, "every construct kind: {app_mesh:?}");
    lint(&[&template]);

    let serve = empty_serve(&dir);
    let (code, said) = cli(
        &serve,
        &dir,
        &["apply", "-f", template.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0, "{said}");
    let count = doc["Resources"]
        .as_object()
        .expect("resources")
        .values()
        .filter(|r| {
            r["Type"]
                .as_str()
                .is_some_and(|t| t.starts_with("AWS::AppMesh::") && t != "AWS::AppMesh::Mesh")
        })
        .count();
    assert!(said.contains(&format!("{} created", count + 1)), "{said}");
    let listed = listed(&serve.appmesh, "gophers-cdk");
    assert_eq!(listed.len(), count, "{listed:?}");
    for expected in [
        "virtualNode/distributor-v2",
        "route/tcp/",
        "gatewayRoute/ingress-grpc/",
        "virtualService/direct.gophers.cdk",
    ] {
        assert!(
            listed.iter().any(|l| l.starts_with(expected)),
            "{expected} not in {listed:?}"
        );
    }
}

/// cfn-lint finds nothing wrong in `templates` but App Mesh's end of support (W3696).
fn lint(templates: &[&Path]) {
    let out = Command::new(tool("cfn-lint"))
        .args(["--ignore-checks", "W3696", "--"])
        .args(templates)
        .output()
        .expect("cfn-lint runs (scripts/setup.sh --tests installs it)");
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cfn_lint_accepts_the_templates() {
    let dir = repo_root().join("examples/cloudformation");
    let templates: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/cloudformation")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    assert!(!templates.is_empty());
    lint(&templates.iter().map(PathBuf::as_path).collect::<Vec<_>>());
}

/// Each bad file is refused before anything is stored: the answer names the file, the
/// resource (logical id, or kind namespace/name) and the path; the stored version and the
/// mesh that was applied before stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_and_manifests_are_refused_whole() {
    let dir = copy_of_shipped("import-refusals");
    let serve = empty_serve(&dir);
    let template = example("cloudformation/walkthrough.yaml");
    let (code, said) = cli(
        &serve,
        &dir,
        &[
            &["apply", "--quiet", "-f", template.to_str().expect("utf-8")][..],
            &IMPORTS,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{said}");
    let status = tests::get_json(&format!("{}/v1/status", serve.control)).await;
    let version = status["version"].clone();

    let good_node = "  Node:\n    Type: AWS::AppMesh::VirtualNode\n    Properties:\n      MeshName: gophermesh\n      VirtualNodeName: extra\n      Spec:\n        Listeners: [{PortMapping: {Port: 8080, Protocol: http}}]\n        ServiceDiscovery: {DNS: {Hostname: extra.gophers.local}}\n";
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "unknown-intrinsic.yaml",
            format!("Resources:\n{good_node}  Bad:\n    Type: AWS::AppMesh::VirtualNode\n    Properties:\n      MeshName: gophermesh\n      Spec:\n        ServiceDiscovery: {{DNS: {{Hostname: !Frobnicate x}}}}\n"),
            &["Bad", "Resources.Bad.Properties.Spec.ServiceDiscovery.DNS.Hostname.Fn::Frobnicate", "unknown intrinsic function Fn::Frobnicate"],
        ),
        (
            "circular.yaml",
            format!("Resources:\n{good_node}  A:\n    Type: AWS::AppMesh::VirtualRouter\n    DependsOn: B\n    Properties: {{MeshName: gophermesh, Spec: {{Listeners: [{{PortMapping: {{Port: 80, Protocol: http}}}}]}}}}\n  B:\n    Type: AWS::AppMesh::VirtualRouter\n    DependsOn: A\n    Properties: {{MeshName: gophermesh, Spec: {{Listeners: [{{PortMapping: {{Port: 80, Protocol: http}}}}]}}}}\n"),
            &["Resources.A", "circular dependency: A -> B -> A"],
        ),
        (
            "missing-parameter.yaml",
            format!("Parameters:\n  Env: {{Type: String}}\nResources:\n{good_node}"),
            &["Parameters.Env", "give it with --parameter Env=VALUE"],
        ),
        (
            "missing-resource.yaml",
            format!("Resources:\n{good_node}  Route:\n    Type: AWS::AppMesh::VirtualRouter\n    Properties:\n      MeshName: !GetAtt Gone.MeshName\n      Spec: {{Listeners: [{{PortMapping: {{Port: 80, Protocol: http}}}}]}}\n"),
            &["Resources.Route.Properties.MeshName.Fn::GetAtt", "no resource \"Gone\" in this template"],
        ),
        (
            "dangling.yaml",
            "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualNode\nmetadata: {name: extra, namespace: gophers}\nspec:\n  meshRef: {name: gophermesh}\n  listeners: [{portMapping: {port: 8080, protocol: http}}]\n  serviceDiscovery: {dns: {hostname: extra.gophers.local}}\n  backends:\n    - virtualService: {virtualServiceRef: {name: gone}}\n".to_owned(),
            &["VirtualNode gophers/extra", "spec.backends[0].virtualService.virtualServiceRef", "names VirtualService gophers/gone, which is not among the objects given"],
        ),
    ];
    for (name, text, expected) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write");
        let (code, said) = cli(
            &serve,
            &dir,
            &["apply", "-f", file.to_str().expect("utf-8")],
        );
        assert_eq!(code, 1, "{name} was applied: {said}");
        assert!(
            said.contains(&format!("{}", file.display())),
            "{name}: the file is not named: {said}"
        );
        for e in expected {
            assert!(said.contains(e), "{name}: `{e}` not in: {said}");
        }
        let now = tests::get_json(&format!("{}/v1/status", serve.control)).await;
        assert_eq!(now["version"], version, "{name} changed the store");
        assert_eq!(tests::route_weights(&now, "distributor"), [90, 10]);
    }
    assert!(
        !listed(&serve.appmesh, "gophermesh").contains("virtualNode/extra"),
        "the good node of a refused file was not applied either"
    );
}

/// `serve --import` seeds an empty store from a template (with its parameters and
/// exports) as `--mesh-dir` does from App Mesh JSON.
#[test]
fn serve_seeds_from_a_template() {
    let dir = copy_of_shipped("serve-import");
    let template = example("cloudformation/walkthrough.yaml");
    let serve = Serve::start(
        &dir,
        &[
            "--import",
            template.to_str().expect("utf-8"),
            "--parameter",
            "MeshName=from-template",
            "--import-value",
            "gophers-network-DomainSuffix=local",
            "--import-value",
            "gophers-network-VpcId=vpc-0123",
        ]
        .iter()
        .copied()
        .chain(tests::SERVE_ON_LOOPBACK.iter().copied())
        .collect::<Vec<_>>(),
        &[],
    );
    assert!(
        serve.said().contains("walkthrough.yaml"),
        "{}",
        serve.said()
    );
    assert_eq!(
        listed(&serve.appmesh, "from-template"),
        walkthrough_resources(["distributor", "requester"])
    );
}

/// The controller's objects across namespaces (a Mesh's namespaceSelector, a
/// BackendGroup elsewhere, a target by ARN) and in the old v1beta1 shapes are applied to
/// `serve` and listed back as the controller made them.
#[test]
fn manifests_across_namespaces_and_of_v1beta1_are_listed_back() {
    let dir = copy_of_shipped("k8s-shapes");
    let serve = empty_serve(&dir);
    let data = repo_root().join("tests/data/kubernetes");
    for file in ["shop.yaml", "color-v1beta1.yaml"] {
        let path = data.join(file);
        let (code, said) = cli(
            &serve,
            &dir,
            &["apply", "-f", path.to_str().expect("utf-8")],
        );
        assert_eq!(code, 0, "{file}: {said}");
    }
    assert_eq!(
        listed(&serve.appmesh, "shop"),
        [
            "route/cart_shop/all",
            "virtualNode/charge-v1",
            "virtualNode/front_shop",
            "virtualRouter/cart_shop",
            "virtualService/cart.shop",
            "virtualService/charge.pay",
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(
        listed(&serve.appmesh, "color-mesh"),
        [
            "route/colorteller-router-demo/color-route",
            "virtualNode/colorteller-blue-demo",
            "virtualRouter/colorteller-router-demo",
            "virtualService/colorteller.demo.svc.cluster.local",
        ]
        .map(str::to_owned)
        .into()
    );
}

/// `convert` writes the manifests' mesh in the mesh/ layout: `validate` takes it with the
/// walkthrough's task definitions, and each node is the shipped file's resource.
#[test]
fn convert_writes_the_mesh_layout_validate_takes() {
    let dir = copy_of_shipped("convert");
    let out = dir.join("converted");
    let manifests = example("kubernetes/walkthrough.yaml");
    let convert = || {
        tests::run_to_end(
            "gophermesh",
            &[
                "convert",
                "-f",
                manifests.to_str().expect("utf-8"),
                "--out",
                out.to_str().expect("utf-8"),
            ],
            &[],
        )
    };
    let (code, said) = convert();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("Deployment distributor-v1 (apps/v1): not App Mesh"),
        "{said}"
    );
    let (code, said) = tests::run_to_end(
        "gophermesh",
        &[
            "validate",
            "--mesh-dir",
            out.to_str().expect("utf-8"),
            "--taskdefs-dir",
            dir.join("taskdefs").to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{said}");
    for node in ["distributor-v1", "distributor-v2", "requester"] {
        let read = |p: PathBuf| -> Value {
            serde_json::from_str(
                &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
            .expect("json")
        };
        let file = format!("virtual-nodes/{node}.json");
        assert_eq!(
            read(out.join(&file)),
            read(repo_root().join("mesh").join(&file)),
            "{file}"
        );
    }
    // A second convert into the same directory writes nothing.
    let (code, said) = convert();
    assert_ne!(code, Some(0));
    assert!(said.contains("not empty"), "{said}");
}
