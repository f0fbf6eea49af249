//! `appmesh.k8s.aws/v1beta1` objects, the controller's first API, in the App Mesh API's
//! shapes. Its `VirtualService` held its router and routes (`spec.virtualRouter`,
//! `spec.routes[]` with `http`/`http2`/`grpc`/`tcp`); nodes were named `NAME-NAMESPACE`
//! and a target's `virtualNodeName` is `NAME` (same namespace) or `NAME.NAMESPACE`; a
//! service kept its object's name; a router without a name is named `SERVICE-router`.

use serde_json::{Map, Value, json};

use super::{Object, Objects};
use crate::problem::Problem;

pub(super) fn convert(objects: &Objects<'_>, object: &Object) -> Result<Vec<Value>, Problem> {
    let mesh = objects.mesh_of(object)?;
    let name = Objects::aws_name(object);
    let spec = &object.spec;
    Ok(match object.kind.as_str() {
        "Mesh" => {
            let mut api = Map::new();
            if let Some(filter) = spec.get("egressFilter") {
                api.insert("egressFilter".into(), filter.clone());
            }
            vec![json!({"meshName": name, "spec": api})]
        }
        "VirtualNode" => {
            vec![json!({"meshName": mesh, "virtualNodeName": name, "spec": node_spec(spec)})]
        }
        "VirtualService" => service(objects, object, &mesh)?,
        other => {
            return Err(objects.problem(
                object,
                "kind",
                format!("{other} is not a kind of v1beta1 (Mesh, VirtualNode, VirtualService)"),
            ));
        }
    })
}

/// A v1beta1 node's spec in the API's shape.
fn node_spec(spec: &Map<String, Value>) -> Value {
    let mut api = Map::new();
    for kept in ["listeners", "backends", "logging"] {
        if let Some(v) = spec.get(kept) {
            api.insert(kept.into(), v.clone());
        }
    }
    if let Some(discovery) = spec.get("serviceDiscovery") {
        let mut out = Map::new();
        if let Some(host) = discovery.pointer("/dns/hostName") {
            out.insert("dns".into(), json!({"hostname": host}));
        }
        if let Some(map) = discovery.get("cloudMap") {
            out.insert("awsCloudMap".into(), map.clone());
        }
        api.insert("serviceDiscovery".into(), Value::Object(out));
    }
    Value::Object(api)
}

/// A v1beta1 service: its router, its routes and itself.
fn service(objects: &Objects<'_>, object: &Object, mesh: &str) -> Result<Vec<Value>, Problem> {
    let spec = &object.spec;
    let service_name = Objects::aws_name(object);
    let router = match spec
        .get("virtualRouter")
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
    {
        Some(r) => format!("{r}-{}", object.namespace),
        None => format!("{service_name}-router"),
    };
    let mut routes = Vec::new();
    let mut first_node = None;
    for (i, route) in spec
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.routes[{i}]");
        let Some(route_name) = route.get("name").and_then(Value::as_str) else {
            return Err(objects.problem(object, &path, "a route needs a name"));
        };
        let mut api = Map::new();
        if let Some(priority) = route.get("priority") {
            api.insert("priority".into(), priority.clone());
        }
        for (old, new) in [
            ("http", "httpRoute"),
            ("http2", "http2Route"),
            ("grpc", "grpcRoute"),
            ("tcp", "tcpRoute"),
        ] {
            let Some(mut body) = route.get(old).cloned() else {
                continue;
            };
            if let Some(targets) = body
                .pointer_mut("/action/weightedTargets")
                .and_then(Value::as_array_mut)
            {
                for target in targets {
                    let given = target
                        .get("virtualNodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let node = match given.split_once('.') {
                        Some((n, ns)) => format!("{n}-{ns}"),
                        None => format!("{given}-{}", object.namespace),
                    };
                    first_node.get_or_insert_with(|| node.clone());
                    *target = json!({"virtualNode": node, "weight": target.get("weight").cloned().unwrap_or(Value::Null)});
                }
            }
            api.insert(new.into(), body);
        }
        routes.push(json!({"meshName": mesh, "virtualRouterName": router, "routeName": route_name, "spec": api}));
    }
    let listeners = match spec.get("virtualRouter").and_then(|r| r.get("listeners")) {
        Some(l) => l.clone(),
        None => {
            // The router listens as its first target listens.
            let node = first_node.as_deref().and_then(|n| {
                objects
                    .all
                    .iter()
                    .find(|o| o.kind == "VirtualNode" && Objects::aws_name(o) == n)
            });
            match node.and_then(|n| n.spec.get("listeners")).and_then(Value::as_array) {
                Some(l) => Value::Array(
                    l.iter()
                        .map(|l| json!({"portMapping": l.get("portMapping").cloned().unwrap_or(Value::Null)}))
                        .collect(),
                ),
                None => {
                    return Err(objects.problem(
                        object,
                        "spec.virtualRouter.listeners",
                        "give the router's listeners (its first target's node, to take them from, is not among the objects given)",
                    ));
                }
            }
        }
    };
    let mut out = vec![
        json!({"meshName": mesh, "virtualRouterName": router, "spec": {"listeners": listeners}}),
    ];
    out.extend(routes);
    out.push(json!({"meshName": mesh, "virtualServiceName": service_name,
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}}}));
    Ok(out)
}
