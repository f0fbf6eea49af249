//! The App Mesh REST API (2019-01-25, as botocore's `appmesh` model defines it) for meshes,
//! virtual nodes, virtual routers, routes and virtual services, served from the same store
//! as everything else, so the AWS CLI drives the local mesh:
//! `aws appmesh create-virtual-node --endpoint-url http://127.0.0.1:9991 ...`.
//!
//! Requests are parsed by two pure functions, [`operation`] (method and path) and
//! [`input`] (the body), so they can be tested and fuzzed without a server. Errors are
//! AWS's: status, `x-amzn-ErrorType` header and `{"message": ...}` body.
//!
//! This control plane runs one mesh; creating a second one is refused with
//! `LimitExceededException`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use meshmodel::mesh::RemoveError;
use meshmodel::{Key, Kind, Mesh, Resource};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::sigv4::{self, Credentials};
use super::store::{Meta, Next, Snapshot, Store, UpdateError};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Requests handled at once; more are answered with TooManyRequestsException.
pub const MAX_IN_FLIGHT: usize = 64;
const PREFIX: &str = "/v20190125/meshes";

/// An AWS-style error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl AwsError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ConflictException", message)
    }
    fn in_use(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceInUseException", message)
    }
    fn limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "LimitExceededException", message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            message,
        )
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({ "message": self.message }).to_string(),
        )
            .into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        response
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Describe,
    Update,
    Delete,
    List,
}

/// A parsed method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub action: Action,
    pub kind: Kind,
    /// The mesh named in the path (`None` only for the mesh collection).
    pub mesh: Option<String>,
    /// The virtual router named in the path (routes only).
    pub router: Option<String>,
    /// The resource named in the path (describe, update, delete).
    pub name: Option<String>,
}

impl Operation {
    /// AWS's name for it, e.g. `CreateVirtualNode`.
    pub fn name(&self) -> String {
        let verb = match self.action {
            Action::Create => "Create",
            Action::Describe => "Describe",
            Action::Update => "Update",
            Action::Delete => "Delete",
            Action::List => "List",
        };
        let noun = kind_noun(self.kind);
        if self.action == Action::List {
            if self.kind == Kind::Mesh {
                "ListMeshes".to_owned()
            } else {
                format!("{verb}{noun}s")
            }
        } else {
            format!("{verb}{noun}")
        }
    }

    /// The key of the resource named in the path.
    fn key(&self) -> Option<Key> {
        let name = self.name.clone()?;
        Some(match self.kind {
            Kind::Mesh => Key::Mesh,
            Kind::VirtualNode => Key::VirtualNode(name),
            Kind::VirtualRouter => Key::VirtualRouter(name),
            Kind::Route => Key::Route(self.router.clone()?, name),
            Kind::VirtualService => Key::VirtualService(name),
        })
    }
}

fn kind_noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "Mesh",
        Kind::VirtualNode => "VirtualNode",
        Kind::VirtualRouter => "VirtualRouter",
        Kind::Route => "Route",
        Kind::VirtualService => "VirtualService",
    }
}

/// The JSON field that names a resource of `kind`.
fn name_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "meshName",
        Kind::VirtualNode => "virtualNodeName",
        Kind::VirtualRouter => "virtualRouterName",
        Kind::Route => "routeName",
        Kind::VirtualService => "virtualServiceName",
    }
}

/// The response member (`virtualNode`) and list member (`virtualNodes`) of `kind`.
fn list_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Mesh => "meshes",
        Kind::VirtualNode => "virtualNodes",
        Kind::VirtualRouter => "virtualRouters",
        Kind::Route => "routes",
        Kind::VirtualService => "virtualServices",
    }
}

fn decode_segment(segment: &str) -> Result<String, AwsError> {
    let (bytes, malformed) = sigv4::percent_decode(segment);
    if malformed {
        return Err(AwsError::bad_request(format!(
            "path segment `{segment}` has a malformed percent-escape"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| AwsError::bad_request(format!("path segment `{segment}` is not UTF-8")))?;
    if text.is_empty() {
        return Err(AwsError::bad_request("a name in the path is empty"));
    }
    Ok(text)
}

/// Parses the method and path of an App Mesh API call.
pub fn operation(method: &Method, path: &str) -> Result<Operation, AwsError> {
    let unknown = || {
        AwsError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no App Mesh operation is {method} {path}"),
        )
    };
    let rest = path.strip_prefix(PREFIX).ok_or_else(unknown)?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    let segs: Vec<String> = parts
        .iter()
        .map(|p| decode_segment(p))
        .collect::<Result<_, _>>()?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let collection = |kind| match *method {
        Method::PUT => Ok((Action::Create, kind)),
        Method::GET => Ok((Action::List, kind)),
        _ => Err(unknown()),
    };
    let item = |kind| match *method {
        Method::GET => Ok((Action::Describe, kind)),
        Method::PUT => Ok((Action::Update, kind)),
        Method::DELETE => Ok((Action::Delete, kind)),
        _ => Err(unknown()),
    };
    let own = |v: &&str| Some((*v).to_owned());
    let (action, kind, mesh, router, name) = match s.as_slice() {
        [] => {
            let (a, k) = collection(Kind::Mesh)?;
            (a, k, None, None, None)
        }
        [mesh] => {
            let (a, k) = item(Kind::Mesh)?;
            (a, k, own(mesh), None, own(mesh))
        }
        [mesh, word] => {
            let kind = match *word {
                "virtualNodes" => Kind::VirtualNode,
                "virtualRouters" => Kind::VirtualRouter,
                "virtualServices" => Kind::VirtualService,
                _ => return Err(unknown()),
            };
            let (a, k) = collection(kind)?;
            (a, k, own(mesh), None, None)
        }
        [mesh, word, name] => {
            let kind = match *word {
                "virtualNodes" => Kind::VirtualNode,
                "virtualRouters" => Kind::VirtualRouter,
                "virtualServices" => Kind::VirtualService,
                _ => return Err(unknown()),
            };
            let (a, k) = item(kind)?;
            (a, k, own(mesh), None, own(name))
        }
        [mesh, "virtualRouter", router, "routes"] => {
            let (a, k) = collection(Kind::Route)?;
            (a, k, own(mesh), own(router), None)
        }
        [mesh, "virtualRouter", router, "routes", name] => {
            let (a, k) = item(Kind::Route)?;
            (a, k, own(mesh), own(router), own(name))
        }
        _ => return Err(unknown()),
    };
    Ok(Operation {
        action,
        kind,
        mesh,
        router,
        name,
    })
}

/// A parsed create or update body: the resource (without its client token) and the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub resource: Resource,
    pub client_token: Option<String>,
}

/// Parses the body of a create or update call for `op` into a resource, with the names
/// from the path filled in. A name in the body that differs from the path is refused.
pub fn input(op: &Operation, body: &[u8]) -> Result<Input, AwsError> {
    let origin = op.name();
    let text = std::str::from_utf8(body)
        .map_err(|_| AwsError::bad_request(format!("{origin}: the body is not UTF-8")))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value = meshmodel::problem::parse_json(&origin, text)
        .map_err(|p| AwsError::bad_request(p.to_string()))?;
    let Value::Object(mut body) = value else {
        return Err(AwsError::bad_request(format!(
            "{origin}: the body must be a JSON object"
        )));
    };
    let mut put = |field: &str, value: &Option<String>| -> Result<(), AwsError> {
        let Some(value) = value else { return Ok(()) };
        match body.get(field) {
            Some(Value::String(given)) if given != value => Err(AwsError::bad_request(format!(
                "{origin}: {field}: `{given}` in the body differs from `{value}` in the path"
            ))),
            _ => {
                body.insert(field.to_owned(), Value::String(value.clone()));
                Ok(())
            }
        }
    };
    put("meshName", &op.mesh)?;
    if op.kind == Kind::Route {
        put("virtualRouterName", &op.router)?;
    }
    if op.action == Action::Update {
        put(name_field(op.kind), &op.name)?;
    }
    // The AWS CLI sends the mesh owner as a query parameter, never in the body.
    let client_token = match body.remove("clientToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Some(t),
        Some(_) => {
            return Err(AwsError::bad_request(format!(
                "{origin}: clientToken must be a string of 1 to 64 characters"
            )));
        }
    };
    let value = Value::Object(body);
    let resource =
        Resource::from_value(&origin, value).map_err(|p| AwsError::bad_request(p.to_string()))?;
    if resource.kind() != op.kind {
        return Err(AwsError::bad_request(format!(
            "{origin}: the body describes a {}, not a {}",
            resource.describe(),
            kind_noun(op.kind)
        )));
    }
    Ok(Input {
        resource,
        client_token,
    })
}

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub credentials: Option<Credentials>,
    pub limiter: Arc<Semaphore>,
}

pub fn router(state: ApiState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(s): State<ApiState>, request: Request) -> Response {
    let Ok(_permit) = s.limiter.clone().try_acquire_owned() else {
        return AwsError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            format!("more than {MAX_IN_FLIGHT} requests at once; retry with backoff"),
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return AwsError::bad_request(format!("the body is larger than {MAX_BODY} bytes"))
                .into_response();
        }
    };
    if let Some(creds) = &s.credentials {
        if let Err(refusal) = authenticate(&parts.method, &parts.uri, &parts.headers, &body, creds)
        {
            tracing::warn!(method = %parts.method, path = parts.uri.path(), kind = refusal.kind, "App Mesh API: refused an unsigned or wrongly signed request");
            return AwsError::new(StatusCode::FORBIDDEN, refusal.kind, refusal.message)
                .into_response();
        }
    }
    let result = match operation(&parts.method, parts.uri.path()) {
        Ok(op) => {
            let answer = serve(&s.store, &op, parts.uri.query().unwrap_or(""), &body);
            match &answer {
                Ok(_) => {
                    tracing::info!(operation = op.name(), name = ?op.name, "App Mesh API call")
                }
                Err(e) => tracing::info!(
                    operation = op.name(),
                    kind = e.kind,
                    message = e.message,
                    "App Mesh API call refused"
                ),
            }
            answer
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(value) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn authenticate(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    creds: &Credentials,
) -> Result<(), sigv4::Refusal> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request = sigv4::SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
    };
    sigv4::verify(&request, creds, SystemTime::now())
}

/// Serves one parsed call against the store.
pub fn serve(store: &Store, op: &Operation, query: &str, body: &[u8]) -> Result<Value, AwsError> {
    match op.action {
        Action::List => list(&store.current(), op, query),
        Action::Describe => {
            let snapshot = store.current();
            check_parents(&snapshot.mesh, op)?;
            let key = op
                .key()
                .ok_or_else(|| AwsError::bad_request("no name in the path"))?;
            data(&snapshot, &key, "ACTIVE")
        }
        Action::Create | Action::Update => write(store, op, body),
        Action::Delete => delete(store, op),
    }
}

/// The mesh (and router) named in the path must exist.
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
    if let Some(router) = &op.router {
        if !mesh.virtual_routers.contains_key(router) {
            return Err(AwsError::not_found(format!(
                "virtual router `{router}` does not exist in mesh `{wanted}`"
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

/// The `XData` shape of the resource `key`, with status `status`.
fn data(snapshot: &Snapshot, key: &Key, status: &str) -> Result<Value, AwsError> {
    let mesh_name = snapshot.mesh.name().unwrap_or_default();
    let (_, resource) = snapshot.mesh.get(key).ok_or_else(|| {
        AwsError::not_found(format!(
            "{} does not exist in mesh `{mesh_name}`",
            key.describe()
        ))
    })?;
    let meta = snapshot
        .meta
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
    for field in ["meshName", "virtualRouterName", name_field(resource.kind())] {
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
    check_parents(&snapshot.mesh, op)?;
    let mesh_name = snapshot.mesh.name().unwrap_or_default();
    let mut refs: Vec<(String, Value)> = Vec::new();
    for (key, meta) in &snapshot.meta {
        let name = match (op.kind, key) {
            (Kind::Mesh, Key::Mesh) => mesh_name.to_owned(),
            (Kind::VirtualNode, Key::VirtualNode(n))
            | (Kind::VirtualRouter, Key::VirtualRouter(n))
            | (Kind::VirtualService, Key::VirtualService(n)) => n.clone(),
            (Kind::Route, Key::Route(r, n)) if Some(r) == op.router.as_ref() => n.clone(),
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
        if let Some(router) = &op.router {
            r["virtualRouterName"] = json!(router);
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
    let result = store.update_with(|snapshot| {
        let mesh = &snapshot.mesh;
        if op.kind == Kind::Mesh {
            if let Some(existing) = mesh.name() {
                if existing != resource.mesh_name() {
                    return Err(Refused::Error(match op.action {
                        Action::Create => AwsError::limit(format!(
                            "this control plane runs one mesh and `{existing}` exists; delete it first"
                        )),
                        _ => AwsError::not_found(format!("mesh `{}` does not exist", resource.mesh_name())),
                    }));
                }
            }
        } else {
            check_parents(mesh, op).map_err(Refused::Error)?;
        }
        let existing = mesh.get(&key);
        // A repeat of the write that made the current version: same token, same resource.
        let repeated = client_token.is_some()
            && snapshot.meta.get(&key).and_then(|m| m.client_token.as_ref()) == client_token.as_ref()
            && existing.as_ref().is_some_and(|(_, current)| current == &resource);
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
        let origin = existing.map_or(origin.clone(), |(o, _)| o);
        let next = mesh
            .apply(&origin, resource.clone())
            .map_err(|p| Refused::Error(AwsError::bad_request(as_call(&p, &origin, &op.name()))))?;
        Ok(Next {
            mesh: next,
            client_token: client_token.clone(),
            bump: (op.action == Action::Update).then(|| key.clone()),
        })
    });
    match result {
        Ok(snapshot) => data(&snapshot, &key, "ACTIVE"),
        Err(UpdateError::Refused(Refused::AlreadyDone)) => data(&store.current(), &key, "ACTIVE"),
        Err(UpdateError::Refused(Refused::Error(e))) => Err(e),
        Err(UpdateError::Storage(e)) => Err(AwsError::internal(format!(
            "the change could not be stored, so it was not made: {e:#}"
        ))),
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
    }
}

fn delete(store: &Store, op: &Operation) -> Result<Value, AwsError> {
    let key = op
        .key()
        .ok_or_else(|| AwsError::bad_request("no name in the path"))?;
    let mut gone = None;
    let result = store.update_with(|snapshot| {
        check_parents(&snapshot.mesh, op)?;
        let (_, resource) = snapshot
            .mesh
            .get(&key)
            .ok_or_else(|| AwsError::not_found(format!("{} does not exist", key.describe())))?;
        let meta = snapshot
            .meta
            .get(&key)
            .cloned()
            .ok_or_else(|| AwsError::internal("no metadata"))?;
        let next = snapshot.mesh.remove(&key).map_err(|e| match e {
            RemoveError::NotFound(m) => AwsError::not_found(m),
            RemoveError::InUse(m) => AwsError::in_use(m),
        })?;
        gone = Some((resource, meta));
        Ok(Next {
            mesh: next,
            client_token: None,
            bump: None,
        })
    });
    match result {
        Ok(_) => {
            let (resource, meta) = gone.ok_or_else(|| AwsError::internal("nothing was deleted"))?;
            Ok(data_of(&resource, &meta, "DELETED", &account_of(&meta.arn)))
        }
        Err(UpdateError::Refused(e)) => Err(e),
        Err(UpdateError::Storage(e)) => Err(AwsError::internal(format!(
            "the change could not be stored, so it was not made: {e:#}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(method: Method, path: &str) -> Operation {
        operation(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    #[test]
    fn paths_map_to_operations() {
        let o = op(Method::PUT, "/v20190125/meshes");
        assert_eq!(
            (o.action, o.kind, o.name()),
            (Action::Create, Kind::Mesh, "CreateMesh".to_owned())
        );
        let o = op(Method::GET, "/v20190125/meshes");
        assert_eq!(o.name(), "ListMeshes");
        let o = op(
            Method::GET,
            "/v20190125/meshes/m/virtualNodes/distributor-v1",
        );
        assert_eq!(o.name(), "DescribeVirtualNode");
        assert_eq!(o.key(), Some(Key::VirtualNode("distributor-v1".into())));
        let o = op(Method::PUT, "/v20190125/meshes/m/virtualRouter/r/routes/x");
        assert_eq!(o.name(), "UpdateRoute");
        assert_eq!(o.key(), Some(Key::Route("r".into(), "x".into())));
        let o = op(Method::GET, "/v20190125/meshes/m/virtualRouter/r/routes");
        assert_eq!(o.name(), "ListRoutes");
        let o = op(
            Method::DELETE,
            "/v20190125/meshes/m/virtualServices/a%2Eb.local",
        );
        assert_eq!(o.name, Some("a.b.local".into()));
        for (m, p) in [
            (Method::POST, "/v20190125/meshes"),
            (Method::GET, "/v20190125/meshes/m/virtualGateways"),
            (Method::GET, "/v1/status"),
            (Method::GET, "/v20190125/meshes/m/virtualRouter/r/nope"),
        ] {
            assert_eq!(
                operation(&m, p).map_err(|e| e.kind),
                Err("UnknownOperationException"),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn bodies_take_names_from_the_path() {
        let o = op(
            Method::PUT,
            "/v20190125/meshes/gm/virtualRouter/distributor/routes",
        );
        let body = br#"{"routeName":"x","clientToken":"t1","spec":{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"a","weight":1}]}}}}"#;
        let i = input(&o, body).expect("parsed");
        assert_eq!(i.client_token.as_deref(), Some("t1"));
        let Resource::Route(r) = i.resource else {
            panic!("not a route")
        };
        assert_eq!(
            (r.mesh_name.as_str(), r.virtual_router_name.as_str()),
            ("gm", "distributor")
        );

        let o = op(Method::PUT, "/v20190125/meshes/gm/virtualNodes/a");
        let e = input(&o, br#"{"virtualNodeName":"b","spec":{}}"#).expect_err("mismatch");
        assert!(
            e.message.contains("virtualNodeName") && e.message.contains("differs"),
            "{e:?}"
        );
        let e = input(&o, b"{ nope").expect_err("bad json");
        assert_eq!(e.kind, "BadRequestException");
        assert!(e.message.contains("not valid JSON"), "{e:?}");
        let e = input(
            &o,
            br#"{"spec":{"listeners":[{"portMapping":{"port":"x","protocol":"http"}}]}}"#,
        )
        .expect_err("bad type");
        assert!(
            e.message.contains("spec.listeners[0].portMapping.port"),
            "{e:?}"
        );
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
        fn any_path_parses_or_is_refused(path in "(/v20190125/meshes)?(/[a-zA-Z0-9%._~-]{0,12}){0,6}", m in 0..5u8) {
            let method = [Method::GET, Method::PUT, Method::DELETE, Method::POST, Method::PATCH][usize::from(m)].clone();
            let _ = operation(&method, &path);
        }

        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let o = op(Method::PUT, "/v20190125/meshes/gm/virtualNodes");
            let _ = input(&o, &body);
        }

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
