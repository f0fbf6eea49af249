//! Templates and manifests in the shapes users write, read into the API's resources; and
//! the refusals, each naming the file, the resource and the path.

use super::*;
use crate::resource::Key;

fn options() -> Options {
    let mut o = Options::default();
    o.cfn.stack_name = "gophers".into();
    o
}

fn read(text: &str, options: &Options) -> Imported {
    read_text("t.yaml", text, options).unwrap_or_else(|p| panic!("{p}"))
}

fn refusal(text: &str, options: &Options) -> String {
    match read_text("t.yaml", text, options) {
        Ok(i) => panic!("accepted: {:?}", i.resources),
        Err(p) => p.to_string(),
    }
}

fn json_of(imported: &Imported, key: &Key) -> serde_json::Value {
    imported
        .resources
        .iter()
        .find(|(_, r)| r.key() == *key)
        .map(|(_, r)| r.to_json())
        .unwrap_or_else(|| panic!("no {key:?} in {:?}", imported.resources))
}

const TEMPLATE: &str = r#"
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Port: {Type: Number, Default: 8080}
  Names: {Type: CommaDelimitedList, Default: "a,b"}
Mappings:
  Sizes: {dev: {Retries: 1}, prod: {Retries: 3}}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  NotProd: !Not [!Condition IsProd]
Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
  Node:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      Spec:
        Listeners:
          - PortMapping: {Port: !Ref Port, Protocol: http}
        ServiceDiscovery:
          DNS:
            Hostname: !Sub
              - "${First}.${AWS::Region}.${Zone}"
              - First: !Select [0, !Ref Names]
                Zone: !Join ["-", !Split [".", "x.y"]]
      Tags:
        - Key: arn
          Value: !Ref Mesh
        - Key: uid
          Value: !GetAtt Mesh.Uid
  Router:
    Type: AWS::AppMesh::VirtualRouter
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: r
      Spec: {Listeners: [{PortMapping: {Port: "8080", Protocol: http}}]}
  Route:
    Type: AWS::AppMesh::Route
    DependsOn: Node
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: !GetAtt Router.VirtualRouterName
      RouteName: !If [IsProd, prod-route, !Sub "${AWS::StackName}-route"]
      Spec:
        HttpRoute:
          Match: {Prefix: /}
          Action:
            WeightedTargets: [{VirtualNode: !GetAtt Node.VirtualNodeName, Weight: 1}]
          RetryPolicy:
            MaxRetries: !FindInMap [Sizes, !Ref Env, Retries]
            PerRetryTimeout: {Unit: ms, Value: 100}
            HttpRetryEvents: [server-error]
  OnlyInProd:
    Type: AWS::AppMesh::VirtualNode
    Condition: IsProd
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      Spec: {}
  Queue:
    Type: AWS::SQS::Queue
"#;

#[test]
fn a_template_is_evaluated_as_cloudformation_would() {
    let imported = read(TEMPLATE, &options());
    assert_eq!(imported.format, Format::CloudFormation);
    // Names CloudFormation would make: STACK-LOGICALID.
    let node = json_of(&imported, &Key::VirtualNode("gophers-Node".into()));
    assert_eq!(node["meshName"], "gophers-Mesh");
    assert_eq!(node["spec"]["listeners"][0]["portMapping"]["port"], 8080);
    assert_eq!(
        node["spec"]["serviceDiscovery"]["dns"]["hostname"],
        "a.us-east-1.x-y"
    );
    assert_eq!(
        node["tags"][0]["value"],
        "arn:aws:appmesh:us-east-1:000000000000:mesh/gophers-Mesh"
    );
    assert_eq!(node["tags"][1]["value"].as_str().map(str::len), Some(36));
    let route = json_of(&imported, &Key::Route("r".into(), "gophers-route".into()));
    assert_eq!(route["spec"]["httpRoute"]["retryPolicy"]["maxRetries"], 1);
    assert_eq!(
        route["spec"]["httpRoute"]["action"]["weightedTargets"][0]["virtualNode"],
        "gophers-Node"
    );
    assert_eq!(imported.resources.len(), 4, "OnlyInProd is not created");
    assert!(
        imported
            .not_applied
            .iter()
            .any(|l| l.starts_with("OnlyInProd")),
        "{:?}",
        imported.not_applied
    );
    assert!(
        imported
            .not_applied
            .iter()
            .any(|l| l.contains("AWS::SQS::Queue"))
    );
}

#[test]
fn parameters_given_choose_conditions_and_mappings() {
    let mut o = options();
    o.cfn.parameters.insert("Env".into(), "prod".into());
    o.cfn.region = "eu-west-1".into();
    let imported = read(TEMPLATE, &o);
    let route = json_of(&imported, &Key::Route("r".into(), "prod-route".into()));
    assert_eq!(route["spec"]["httpRoute"]["retryPolicy"]["maxRetries"], 3);
    assert_eq!(imported.resources.len(), 5, "OnlyInProd is created in prod");
    let node = json_of(&imported, &Key::VirtualNode("gophers-Node".into()));
    assert_eq!(
        node["spec"]["serviceDiscovery"]["dns"]["hostname"],
        "a.eu-west-1.x-y"
    );
}

#[test]
fn bad_templates_are_refused_naming_file_resource_and_path() {
    let o = options();
    let mut bad_value = o.clone();
    bad_value.cfn.parameters.insert("Env".into(), "qa".into());
    let said = refusal(TEMPLATE, &bad_value);
    assert!(
        said.contains("t.yaml: Parameters.Env: \"qa\" is not one of the AllowedValues (dev, prod)"),
        "{said}"
    );
    let mut unknown = o.clone();
    unknown.cfn.parameters.insert("Nope".into(), "1".into());
    assert!(
        refusal(TEMPLATE, &unknown)
            .contains("--parameter Nope: the template declares no such parameter")
    );

    let said = refusal(
        "Resources:\n  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: !Frobnicate x}}\n",
        &o,
    );
    assert!(
        said.contains("t.yaml: Resources.M.Properties.MeshName.Fn::Frobnicate: unknown intrinsic function Fn::Frobnicate"),
        "{said}"
    );
    let said = refusal(
        "Resources:\n  A: {Type: AWS::AppMesh::Mesh, DependsOn: B}\n  B: {Type: AWS::AppMesh::Mesh, DependsOn: [A]}\n",
        &o,
    );
    assert!(
        said.contains("t.yaml: Resources.A: circular dependency: A -> B -> A"),
        "{said}"
    );
    let said = refusal(
        "Parameters: {Env: {Type: String}}\nResources:\n  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: !Ref Env}}\n",
        &o,
    );
    assert!(
        said.contains(
            "t.yaml: Parameters.Env: no value (and no Default): give it with --parameter Env=VALUE"
        ),
        "{said}"
    );
    let said = refusal(
        "Resources:\n  N: {Type: AWS::AppMesh::VirtualNode, Properties: {MeshName: !GetAtt Nope.MeshName, Spec: {}}}\n",
        &o,
    );
    assert!(
        said.contains("t.yaml: Resources.N.Properties.MeshName.Fn::GetAtt: Nope.MeshName: no resource \"Nope\" in this template"),
        "{said}"
    );
    let said = refusal(
        "Resources:\n  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: !ImportValue net-Mesh}}\n",
        &o,
    );
    assert!(
        said.contains("give its value with --import net-Mesh=VALUE"),
        "{said}"
    );
    let said = refusal(
        "Resources:\n  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: m, Colour: red}}\n",
        &o,
    );
    assert!(
        said.contains(
            "t.yaml: Resources.M.Properties.Colour: AWS::AppMesh::Mesh has no property Colour"
        ),
        "{said}"
    );
    // The model's own refusal names the resource and the API's path.
    let said = refusal(
        "Resources:\n  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: m}}\n  N:\n    Type: AWS::AppMesh::VirtualNode\n    Properties:\n      MeshName: m\n      Spec: {Listeners: [{PortMapping: {Port: 80, Protocol: htttp}}]}\n",
        &o,
    );
    assert!(
        said.contains("t.yaml: N: spec.listeners[0].portMapping.protocol"),
        "{said}"
    );
}

const MANIFESTS: &str = include_str!("../../../tests/data/kubernetes/shop.yaml");

#[test]
fn manifests_become_what_the_controller_made() {
    let imported = read(MANIFESTS, &Options::default());
    assert_eq!(imported.format, Format::Kubernetes);
    let front = json_of(&imported, &Key::VirtualNode("front_shop".into()));
    assert_eq!(
        front["meshName"], "shop",
        "placed by the namespace's labels"
    );
    let backends: Vec<&str> = front["spec"]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["virtualService"]["virtualServiceName"].as_str())
        .collect();
    assert_eq!(
        backends,
        ["cart.shop", "charge.pay"],
        "the group adds charge, not cart twice"
    );
    let charge = json_of(&imported, &Key::VirtualService("charge.pay".into()));
    assert_eq!(
        charge["spec"]["provider"]["virtualNode"]["virtualNodeName"],
        "charge-v1"
    );
    let route = json_of(&imported, &Key::Route("cart_shop".into(), "all".into()));
    assert_eq!(
        route["spec"]["httpRoute"]["action"]["weightedTargets"][0]["virtualNode"],
        "charge-v1"
    );
    assert!(
        imported
            .not_applied
            .iter()
            .any(|l| l.starts_with("Deployment front"))
    );
}

#[test]
fn manifests_without_a_mesh_or_with_dangling_refs_are_refused() {
    let dangling = MANIFESTS.replace(
        "virtualServiceRef: {name: cart}",
        "virtualServiceRef: {name: gone}",
    );
    let said = refusal(&dangling, &Options::default());
    assert!(
        said.contains("t.yaml: VirtualNode shop/front: spec.backends[0].virtualService.virtualServiceRef: names VirtualService shop/gone, which is not among the objects given"),
        "{said}"
    );
    let unplaced = "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualNode\nmetadata: {name: n, namespace: x}\nspec: {}\n";
    let said = refusal(unplaced, &Options::default());
    assert!(
        said.contains("t.yaml: VirtualNode x/n: belongs to no mesh: it has no meshRef, and no Namespace object for x was given"),
        "{said}"
    );
    let placed = Options {
        mesh: Some("m".into()),
        ..Options::default()
    };
    let imported = read(unplaced, &placed);
    assert_eq!(imported.resources[0].1.mesh_name(), "m");
}

#[test]
fn v1beta1_services_bring_their_router_and_routes() {
    let text = include_str!("../../../tests/data/kubernetes/color-v1beta1.yaml");
    let imported = read(text, &Options::default());
    let node = json_of(&imported, &Key::VirtualNode("colorteller-blue-demo".into()));
    assert_eq!(
        node["spec"]["serviceDiscovery"]["dns"]["hostname"],
        "colorteller-blue.demo.svc.cluster.local"
    );
    let router = json_of(
        &imported,
        &Key::VirtualRouter("colorteller-router-demo".into()),
    );
    assert_eq!(router["spec"]["listeners"][0]["portMapping"]["port"], 9080);
    let route = json_of(
        &imported,
        &Key::Route("colorteller-router-demo".into(), "color-route".into()),
    );
    assert_eq!(
        route["spec"]["httpRoute"]["action"]["weightedTargets"][0]["virtualNode"],
        "colorteller-blue-demo"
    );
    let service = json_of(
        &imported,
        &Key::VirtualService("colorteller.demo.svc.cluster.local".into()),
    );
    assert_eq!(
        service["spec"]["provider"]["virtualRouter"]["virtualRouterName"],
        "colorteller-router-demo"
    );
}
