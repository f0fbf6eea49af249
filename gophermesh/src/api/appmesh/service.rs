//! Serving a parsed App Mesh API call from the store: describe, list (with paging),
//! create, update and delete, with App Mesh's metadata, status and errors.

use meshmodel::mesh::RemoveError;
use meshmodel::{Key, Kind, Mesh, Resource};
use serde_json::{Map, Value, json};

use controlplane::{Meta, Next, Snapshot, Store, UpdateError};

/// The metadata of a mesh's resources.
type Metas = std::collections::BTreeMap<Key, Meta>;

use super::request::{
    Action, AwsError, Input, Operation, decode_segment, input, list_field, name_field, param,
    parent_field,
};
use crate::api::sigv4;

/// Serves one parsed call against the store.
pub fn serve(store: &Store, op: &Operation, query: &str, body: &[u8]) -> Result<Value, AwsError> {
    check_owner(store, op, query)?;
    match op.action {
        Action::List => list(&store.current(), op, query),
        Action::Describe => {
            let snapshot = store.current();
            let (mesh, meta) = named_mesh(&snapshot, op)?;
            check_parents(mesh, op)?;
            let key = op
                .key()
                .ok_or_else(|| AwsError::bad_request("no name in the path"))?;
            data(mesh, meta, &key, "ACTIVE")
        }
        Action::Create | Action::Update => write(store, op, body),
        Action::Delete => delete(store, op),
    }
}

/// `meshOwner` (the AWS CLI's `--mesh-owner`, a query parameter) names an account: with one
/// account here, its own is the only one whose meshes exist.
fn check_owner(store: &Store, op: &Operation, query: &str) -> Result<(), AwsError> {
    let owner = param(query, "meshOwner")?;
    let account = &store.identity().account;
    match owner {
        Some(owner) if &owner != account => Err(AwsError::not_found(format!(
            "meshOwner {owner}: mesh `{}` of account {owner} does not exist here; this control plane's account is {account}",
            op.mesh.as_deref().unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

/// The mesh the call's path names, with its resources' metadata; NotFound when there is
/// none of that name.
fn named_mesh<'a>(
    snapshot: &'a Snapshot,
    op: &Operation,
) -> Result<(&'a Mesh, &'a Metas), AwsError> {
    let name = op.mesh.as_deref().unwrap_or_default();
    snapshot
        .mesh(name)
        .map(|m| (&m.mesh, &m.meta))
        .ok_or_else(|| AwsError::not_found(format!("mesh `{name}` does not exist")))
}

/// The mesh (and router or gateway) named in the path must exist.
fn check_parents(mesh: &Mesh, op: &Operation) -> Result<(), AwsError> {
    let Some(wanted) = &op.mesh else {
        return Ok(());
    };
    match mesh.name() {
        Some(name) if name == wanted => {}
        _ => {
            return Err(AwsError::not_found(format!(
                "mesh `{wanted}` does not exist"
            )));
        }
    }
    if let Some(parent) = &op.parent {
        let (exists, what) = match op.kind {
            Kind::GatewayRoute => (
                mesh.virtual_gateways.contains_key(parent),
                "virtual gateway",
            ),
            _ => (mesh.virtual_routers.contains_key(parent), "virtual router"),
        };
        if !exists {
            return Err(AwsError::not_found(format!(
                "{what} `{parent}` does not exist in mesh `{wanted}`"
            )));
        }
    }
    Ok(())
}

fn metadata(meta: &Meta, identity_account: &str) -> Value {
    json!({
        "arn": meta.arn,
        "createdAt": meta.created_at,
        "lastUpdatedAt": meta.last_updated_at,
        "meshOwner": identity_account,
        "resourceOwner": identity_account,
        "uid": meta.uid,
        "version": meta.version,
    })
}

/// The `XData` shape of the resource `key` of `mesh`, with status `status`.
fn data(mesh: &Mesh, metas: &Metas, key: &Key, status: &str) -> Result<Value, AwsError> {
    let mesh_name = mesh.name().unwrap_or_default();
    let (_, resource) = mesh.get(key).ok_or_else(|| {
        AwsError::not_found(format!(
            "{} does not exist in mesh `{mesh_name}`",
            key.describe()
        ))
    })?;
    let meta = metas
        .get(key)
        .ok_or_else(|| AwsError::internal(format!("{} has no metadata", key.describe())))?;
    Ok(data_of(&resource, meta, status, &account_of(&meta.arn)))
}

fn account_of(arn: &str) -> String {
    arn.split(':').nth(4).unwrap_or_default().to_owned()
}

fn data_of(resource: &Resource, meta: &Meta, status: &str, account: &str) -> Value {
    let full = resource.to_json();
    let mut out = Map::new();
    let parent = parent_field(resource.kind()).unwrap_or("meshName");
    for field in ["meshName", parent, name_field(resource.kind())] {
        if let Some(v) = full.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    out.insert(
        "spec".to_owned(),
        full.get("spec").cloned().unwrap_or_else(|| json!({})),
    );
    out.insert("metadata".to_owned(), metadata(meta, account));
    out.insert("status".to_owned(), json!({ "status": status }));
    Value::Object(out)
}

/// The query parameters `limit` and `nextToken`.
fn paging(query: &str) -> Result<(usize, Option<String>), AwsError> {
    let mut limit = 100;
    let mut token = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        AwsError::bad_request(format!(
                            "limit: `{v}` must be a whole number from 1 to 100"
                        ))
                    })?;
            }
            "nextToken" => {
                let raw = decode_segment(v)?;
                let name = decode_token(&raw).ok_or_else(|| {
                    AwsError::bad_request("nextToken: not a token this API gave out")
                })?;
                token = Some(name);
            }
            _ => {}
        }
    }
    Ok((limit, token))
}

fn encode_token(name: &str) -> String {
    sigv4::hex(name.as_bytes())
}

fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.is_empty() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn list(snapshot: &Snapshot, op: &Operation, query: &str) -> Result<Value, AwsError> {
    let (limit, after) = paging(query)?;
    // Meshes are listed from every mesh; anything else from the mesh the path names.
    let listed: Vec<(&str, &Key, &Meta)> = if op.kind == Kind::Mesh {
        snapshot
            .meshes
            .iter()
            .filter_map(|(name, state)| {
                let (key, meta) = state.meta.get_key_value(&Key::Mesh)?;
                Some((name.as_str(), key, meta))
            })
            .collect()
    } else {
        let (mesh, metas) = named_mesh(snapshot, op)?;
        check_parents(mesh, op)?;
        let name = mesh.name().unwrap_or_default();
        metas.iter().map(|(k, m)| (name, k, m)).collect()
    };
    let mut refs: Vec<(String, Value)> = Vec::new();
    for (mesh_name, key, meta) in listed {
        let name = match (op.kind, key) {
            (Kind::Mesh, Key::Mesh) => mesh_name.to_owned(),
            (Kind::VirtualNode, Key::VirtualNode(n))
            | (Kind::VirtualRouter, Key::VirtualRouter(n))
            | (Kind::VirtualService, Key::VirtualService(n))
            | (Kind::VirtualGateway, Key::VirtualGateway(n)) => n.clone(),
            (Kind::Route, Key::Route(r, n)) | (Kind::GatewayRoute, Key::GatewayRoute(r, n))
                if Some(r) == op.parent.as_ref() =>
            {
                n.clone()
            }
            _ => continue,
        };
        let account = account_of(&meta.arn);
        let mut r = json!({
            "arn": meta.arn,
            "createdAt": meta.created_at,
            "lastUpdatedAt": meta.last_updated_at,
            "meshName": mesh_name,
            "meshOwner": account,
            "resourceOwner": account,
            "version": meta.version,
        });
        if op.kind != Kind::Mesh {
            r[name_field(op.kind)] = json!(name);
        }
        if let (Some(parent), Some(field)) = (&op.parent, parent_field(op.kind)) {
            r[field] = json!(parent);
        }
        refs.push((name, r));
    }
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match &after {
        Some(name) => refs
            .iter()
            .position(|(n, _)| n > name)
            .unwrap_or(refs.len()),
        None => 0,
    };
    let page: Vec<&(String, Value)> = refs.iter().skip(start).take(limit).collect();
    let mut out = Map::new();
    out.insert(
        list_field(op.kind).to_owned(),
        Value::Array(page.iter().map(|(_, v)| v.clone()).collect()),
    );
    if start + page.len() < refs.len() {
        if let Some((last, _)) = page.last() {
            out.insert("nextToken".to_owned(), json!(encode_token(last)));
        }
    }
    Ok(Value::Object(out))
}

/// How a write ended without changing anything.
enum Refused {
    Error(AwsError),
    /// A repeated create with the same client token: the resource as it is.
    AlreadyDone,
}

fn write(store: &Store, op: &Operation, body: &[u8]) -> Result<Value, AwsError> {
    let Input {
        mut resource,
        client_token,
    } = input(op, body)?;
    strip_token(&mut resource);
    let key = resource.key();
    let origin = format!("<api {}>", op.name());
    let wanted = resource.mesh_name().to_owned();
    let result = store.update_with(|snapshot| {
        // A mesh made through the API follows the API: a backend may name a service not
        // made yet.
        let none = (
            Mesh {
                backends_may_dangle: true,
                ..Mesh::default()
            },
            Metas::new(),
        );
        let (mesh, metas) = match snapshot.mesh(&wanted) {
            Some(found) => (&found.mesh, &found.meta),
            // A new mesh.
            None if op.kind == Kind::Mesh && op.action == Action::Create => (&none.0, &none.1),
            None => {
                return Err(Refused::Error(AwsError::not_found(format!(
                    "mesh `{wanted}` does not exist"
                ))));
            }
        };
        if op.kind != Kind::Mesh {
            check_parents(mesh, op).map_err(Refused::Error)?;
        }
        let existing = mesh.get(&key);
        // A repeat of the write that made the current version: same token, same resource.
        let same_token = client_token.is_some()
            && metas.get(&key).and_then(|m| m.client_token.as_ref()) == client_token.as_ref();
        let repeated = same_token && existing.as_ref().is_some_and(|(_, current)| current == &resource);
        if same_token && !repeated {
            return Err(Refused::Error(AwsError::conflict(format!(
                "clientToken `{}` was used for an earlier call on {} with a different specification; use a new client token",
                client_token.as_deref().unwrap_or_default(),
                key.describe()
            ))));
        }
        match (op.action, &existing) {
            (Action::Create, Some(_)) => {
                if repeated {
                    return Err(Refused::AlreadyDone);
                }
                return Err(Refused::Error(AwsError::conflict(format!(
                    "{} already exists in mesh `{}`",
                    key.describe(),
                    resource.mesh_name()
                ))));
            }
            (Action::Update, None) => {
                return Err(Refused::Error(AwsError::not_found(format!(
                    "{} does not exist in mesh `{}`",
                    key.describe(),
                    resource.mesh_name()
                ))));
            }
            (Action::Update, Some(_)) if repeated => return Err(Refused::AlreadyDone),
            _ => {}
        }
        // An update call has no tags; the resource keeps those it has (TagResource's).
        let mut resource = resource.clone();
        if let (Action::Update, Some((_, current))) = (op.action, &existing) {
            *resource.tags_mut() = current.tags().map(<[_]>::to_vec);
        }
        let origin = existing.map_or(origin.clone(), |(o, _)| o);
        let next = mesh
            .apply(&origin, resource)
            .map_err(|p| Refused::Error(AwsError::bad_request(as_call(&p, &origin, &op.name()))))?;
        Ok(Next {
            client_token: client_token.clone(),
            bump: (op.action == Action::Update).then(|| key.clone()),
            ..Next::mesh(wanted.clone(), next)
        })
    });
    let written = |snapshot: &Snapshot| {
        let state = snapshot.mesh(&wanted).ok_or_else(|| {
            AwsError::internal(format!("mesh `{wanted}` is not there after the write"))
        })?;
        data(&state.mesh, &state.meta, &key, "ACTIVE")
    };
    match result {
        Ok(snapshot) => written(&snapshot),
        Err(UpdateError::Refused(Refused::AlreadyDone)) => written(&store.current()),
        Err(UpdateError::Refused(Refused::Error(e))) => Err(e),
        Err(UpdateError::Storage(e)) => Err(AwsError::unavailable(e.outcome())),
    }
}

/// Problems as one message, those of the written resource named by the call (`UpdateRoute:
/// spec...: reason`) rather than by where the stored resource first came from.
fn as_call(problems: &meshmodel::Problems, origin: &str, call: &str) -> String {
    problems
        .0
        .iter()
        .map(|p| {
            if p.origin == origin {
                meshmodel::Problem::new(call, p.path.clone(), p.reason.clone()).to_string()
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn strip_token(resource: &mut Resource) {
    match resource {
        Resource::Mesh(r) => r.client_token = None,
        Resource::VirtualNode(r) => r.client_token = None,
        Resource::VirtualRouter(r) => r.client_token = None,
        Resource::Route(r) => r.client_token = None,
        Resource::VirtualService(r) => r.client_token = None,
        Resource::VirtualGateway(r) => r.client_token = None,
        Resource::GatewayRoute(r) => r.client_token = None,
    }
}

fn delete(store: &Store, op: &Operation) -> Result<Value, AwsError> {
    let key = op
        .key()
        .ok_or_else(|| AwsError::bad_request("no name in the path"))?;
    let mut gone = None;
    let result = store.update_with(|snapshot| {
        let (mesh, metas) = named_mesh(snapshot, op)?;
        check_parents(mesh, op)?;
        let (_, resource) = mesh
            .get(&key)
            .ok_or_else(|| AwsError::not_found(format!("{} does not exist", key.describe())))?;
        let meta = metas
            .get(&key)
            .cloned()
            .ok_or_else(|| AwsError::internal("no metadata"))?;
        let next = mesh.remove(&key).map_err(|e| match e {
            RemoveError::NotFound(m) => AwsError::not_found(m),
            RemoveError::InUse(m) => AwsError::in_use(m),
        })?;
        gone = Some((resource, meta));
        Ok(Next::mesh(op.mesh.clone().unwrap_or_default(), next))
    });
    match result {
        Ok(_) => {
            let (resource, meta) = gone.ok_or_else(|| AwsError::internal("nothing was deleted"))?;
            Ok(data_of(&resource, &meta, "DELETED", &account_of(&meta.arn)))
        }
        Err(UpdateError::Refused(e)) => Err(e),
        Err(UpdateError::Storage(e)) => Err(AwsError::unavailable(e.outcome())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use proptest::prelude::*;

    use super::super::request::operation;

    fn op(method: Method, path: &str) -> Operation {
        operation(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(
            decode_token(&encode_token("svc-9")).as_deref(),
            Some("svc-9")
        );
        assert_eq!(decode_token("zz"), None);
        assert_eq!(decode_token("abc"), None);
        assert!(paging("limit=0").is_err());
        assert!(paging("limit=101").is_err());
        assert_eq!(paging("limit=5").expect("ok").0, 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn json_shaped_bodies_parse_or_are_refused(
            name in "[a-z-]{0,10}",
            port in any::<i64>(),
            weight in any::<i64>(),
            extra in "[a-zA-Z]{0,6}",
        ) {
            let body = format!(r#"{{"routeName":"{name}","spec":{{"httpRoute":{{"match":{{"prefix":"/"}},"action":{{"weightedTargets":[{{"virtualNode":"{extra}","weight":{weight},"port":{port}}}]}}}}}}}}"#);
            let o = op(Method::PUT, "/v20190125/meshes/gm/virtualRouter/r/routes");
            let _ = input(&o, body.as_bytes());
            let _ = paging(&format!("limit={port}&nextToken={extra}"));
        }
    }
}
