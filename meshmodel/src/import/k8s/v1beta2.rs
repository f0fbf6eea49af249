//! `appmesh.k8s.aws/v1beta2` objects in the App Mesh API's shapes. Their specs are the
//! API's, but for the fields only the controller reads (`awsName`, selectors, `meshRef`,
//! `virtualGatewayRef`, `backendGroups`) and references in place of names.

use serde_json::{Map, Value, json};

use super::{Object, Objects};
use crate::problem::Problem;

/// What `object` becomes: one request body, or a router's and its routes'.
pub(super) fn convert(objects: &Objects<'_>, object: &Object) -> Result<Vec<Value>, Problem> {
    let mesh = objects.mesh_of(object)?;
    let name = Objects::aws_name(object);
    let mut spec = object.spec.clone();
    for controller_only in [
        "awsName",
        "meshRef",
        "podSelector",
        "namespaceSelector",
        "gatewayRouteSelector",
        "virtualGatewayRef",
    ] {
        spec.remove(controller_only);
    }
    Ok(match object.kind.as_str() {
        "Mesh" => {
            let owner = spec.remove("meshOwner");
            let mut body = json!({"meshName": name, "spec": spec});
            if let Some(owner) = owner {
                body["meshOwner"] = owner;
            }
            vec![body]
        }
        "VirtualNode" => {
            backends(objects, object, &mut spec)?;
            vec![json!({"meshName": mesh, "virtualNodeName": name, "spec": spec})]
        }
        "VirtualService" => {
            provider(objects, object, &mut spec)?;
            vec![json!({"meshName": mesh, "virtualServiceName": name, "spec": spec})]
        }
        "VirtualRouter" => {
            let routes = spec.remove("routes");
            let mut out = vec![json!({"meshName": mesh, "virtualRouterName": name, "spec": spec})];
            for (i, route) in routes
                .iter()
                .flat_map(|r| r.as_array().into_iter().flatten())
                .enumerate()
            {
                let path = format!("spec.routes[{i}]");
                let mut route = route.as_object().cloned().unwrap_or_default();
                let Some(Value::String(route_name)) = route.remove("name") else {
                    return Err(objects.problem(object, &path, "a route needs a name"));
                };
                targets(objects, object, &path, &mut route)?;
                out.push(json!({"meshName": mesh, "virtualRouterName": name,
                    "routeName": route_name, "spec": route}));
            }
            out
        }
        "VirtualGateway" => {
            vec![json!({"meshName": mesh, "virtualGatewayName": name, "spec": spec})]
        }
        "GatewayRoute" => {
            let gateway = gateway_of(objects, object)?;
            for kind in ["httpRoute", "http2Route", "grpcRoute"] {
                if let Some(target) = spec
                    .get_mut(kind)
                    .and_then(|r| r.pointer_mut("/action/target/virtualService"))
                {
                    let path = format!("spec.{kind}.action.target.virtualService");
                    *target = json!({"virtualServiceName":
                        reference(objects, object, &path, "VirtualService", target)?});
                }
            }
            vec![json!({"meshName": mesh, "virtualGatewayName": gateway,
                "gatewayRouteName": name, "spec": spec})]
        }
        // A BackendGroup makes no App Mesh resource: its services become backends of the
        // nodes that list it.
        "BackendGroup" => Vec::new(),
        other => {
            return Err(objects.problem(
                object,
                "kind",
                format!("{other} is not a kind of the controller's API"),
            ));
        }
    })
}

/// The App Mesh name a `{...Ref}` or `{...ARN}` pair at `path` of `holder` names: `holder`
/// holds `virtualServiceRef`/`virtualServiceARN` (or the node's or router's).
fn reference(
    objects: &Objects<'_>,
    from: &Object,
    path: &str,
    kind: &str,
    holder: &Value,
) -> Result<String, Problem> {
    let lower = match kind {
        "VirtualService" => "virtualService",
        "VirtualNode" => "virtualNode",
        _ => "virtualRouter",
    };
    if let Some(r) = holder.get(format!("{lower}Ref").as_str()) {
        return objects.resolve(from, &format!("{path}.{lower}Ref"), kind, r);
    }
    if let Some(arn) = holder.get(format!("{lower}ARN").as_str()) {
        return Objects::arn_name(from, objects, &format!("{path}.{lower}ARN"), arn);
    }
    Err(objects.problem(from, path, format!("give {lower}Ref or {lower}ARN")))
}

/// A node's backends by name, with those of its backend groups added.
fn backends(
    objects: &Objects<'_>,
    node: &Object,
    spec: &mut Map<String, Value>,
) -> Result<(), Problem> {
    let mut out = Vec::new();
    for (i, backend) in spec
        .get("backends")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.backends[{i}].virtualService");
        let Some(service) = backend.get("virtualService") else {
            return Err(objects.problem(
                node,
                &format!("spec.backends[{i}]"),
                "a backend names a virtualService",
            ));
        };
        let mut api = json!({"virtualServiceName": reference(objects, node, &path, "VirtualService", service)?});
        if let Some(policy) = service.get("clientPolicy") {
            api["clientPolicy"] = policy.clone();
        }
        out.push(json!({"virtualService": api}));
    }
    for (i, group) in spec
        .remove("backendGroups")
        .iter()
        .flat_map(|g| g.as_array().into_iter().flatten())
        .enumerate()
    {
        let path = format!("spec.backendGroups[{i}]");
        let name = group.get("name").and_then(Value::as_str).unwrap_or("");
        let namespace = group
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(&node.namespace);
        let Some(found) = objects.find("BackendGroup", namespace, name) else {
            return Err(objects.problem(
                node,
                &path,
                format!(
                    "names BackendGroup {namespace}/{name}, which is not among the objects given"
                ),
            ));
        };
        for (j, service) in found
            .spec
            .get("virtualServices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let from =
                format!("{path} (BackendGroup {namespace}/{name} spec.virtualServices[{j}])");
            let name = objects.resolve(found, &from, "VirtualService", service)?;
            if !out
                .iter()
                .any(|b| b["virtualService"]["virtualServiceName"] == name.as_str())
            {
                out.push(json!({"virtualService": {"virtualServiceName": name}}));
            }
        }
    }
    if out.is_empty() {
        spec.remove("backends");
    } else {
        spec.insert("backends".into(), Value::Array(out));
    }
    Ok(())
}

/// A service's provider by name.
fn provider(
    objects: &Objects<'_>,
    service: &Object,
    spec: &mut Map<String, Value>,
) -> Result<(), Problem> {
    let Some(provider) = spec.get_mut("provider") else {
        return Ok(());
    };
    if let Some(node) = provider.get_mut("virtualNode") {
        let name = reference(
            objects,
            service,
            "spec.provider.virtualNode",
            "VirtualNode",
            node,
        )?;
        *node = json!({"virtualNodeName": name});
    }
    if let Some(router) = provider.get_mut("virtualRouter") {
        let name = reference(
            objects,
            service,
            "spec.provider.virtualRouter",
            "VirtualRouter",
            router,
        )?;
        *router = json!({"virtualRouterName": name});
    }
    Ok(())
}

/// A route's weighted targets by name.
fn targets(
    objects: &Objects<'_>,
    router: &Object,
    path: &str,
    route: &mut Map<String, Value>,
) -> Result<(), Problem> {
    for kind in ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"] {
        let Some(list) = route
            .get_mut(kind)
            .and_then(|r| r.pointer_mut("/action/weightedTargets"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for (i, target) in list.iter_mut().enumerate() {
            let at = format!("{path}.{kind}.action.weightedTargets[{i}]");
            let node = reference(objects, router, &at, "VirtualNode", target)?;
            let mut api = json!({"virtualNode": node, "weight": target.get("weight").cloned().unwrap_or(Value::Null)});
            if let Some(port) = target.get("port") {
                api["port"] = port.clone();
            }
            *target = api;
        }
    }
    Ok(())
}

/// The gateway a gateway route belongs to: its `virtualGatewayRef`, else the one gateway
/// whose `namespaceSelector` (and `gatewayRouteSelector`, when it has one) selects it.
fn gateway_of(objects: &Objects<'_>, route: &Object) -> Result<String, Problem> {
    if let Some(r) = route.spec.get("virtualGatewayRef") {
        return objects.resolve(route, "spec.virtualGatewayRef", "VirtualGateway", r);
    }
    let labels = objects.namespace_labels(&route.namespace);
    let claims: Vec<&Object> = objects
        .all
        .iter()
        .filter(|g| g.kind == "VirtualGateway")
        .filter(|g| labels.is_some_and(|l| super::selects(g.spec.get("namespaceSelector"), l)))
        .filter(|g| {
            g.spec
                .get("gatewayRouteSelector")
                .is_none_or(|s| super::selects(Some(s), &route.labels))
        })
        .collect();
    match claims.as_slice() {
        [only] => Ok(Objects::aws_name(only)),
        [] => Err(objects.problem(
            route,
            "",
            "belongs to no virtual gateway: no virtualGatewayRef, and no VirtualGateway's namespaceSelector selects its namespace (give the Namespace objects)",
        )),
        several => Err(objects.problem(
            route,
            "",
            format!(
                "several virtual gateways select it ({}): give virtualGatewayRef",
                several.iter().map(|g| g.describe()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}
