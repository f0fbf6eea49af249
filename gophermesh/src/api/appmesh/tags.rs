//! App Mesh's tagging operations, by resource ARN: `TagResource` (`PUT /v20190125/tag`),
//! `UntagResource` (`PUT /v20190125/untag`) and `ListTagsForResource` (`GET
//! /v20190125/tags`), with App Mesh's limits (50 tags, keys of 1-128 and values of 0-256
//! characters). Tags live on the resource, so they are stored and replicated with it, and
//! an update call keeps them (see [`super::service`]).

use axum::http::{Method, StatusCode};
use controlplane::{Next, Store, UpdateError};
use meshmodel::appmesh::Tag;
use meshmodel::{Key, Resource};
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{AwsError, param};

const MAX_TAGS: usize = 50;
const KEY_MAX: usize = 128;
const VALUE_MAX: usize = 256;

/// The tagging operation `method path` names, if it is one: its answer.
pub fn serve(
    store: &Store,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<Result<Value, AwsError>> {
    let answer = match operation_name(method, path)? {
        "ListTagsForResource" => list(store, query),
        "TagResource" => change(store, query, body, Change::Tag),
        _ => change(store, query, body, Change::Untag),
    };
    Some(answer)
}

/// The tagging operation a call names, if it names one.
pub fn operation_name(method: &Method, path: &str) -> Option<&'static str> {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/v20190125/tags") => Some("ListTagsForResource"),
        ("PUT", "/v20190125/tag") => Some("TagResource"),
        ("PUT", "/v20190125/untag") => Some("UntagResource"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Tag,
    Untag,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TagBody {
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UntagBody {
    tag_keys: Vec<String>,
}

/// The resource whose ARN is `?resourceArn=`, in whichever mesh: its key, its mesh's name
/// and the resource.
fn find(store: &Store, query: &str) -> Result<(Key, String, Resource), AwsError> {
    let arn = param(query, "resourceArn")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| AwsError::bad_request("resourceArn: missing"))?;
    let snapshot = store.current();
    snapshot
        .meshes
        .iter()
        .find_map(|(name, state)| {
            let key = state.meta.iter().find(|(_, m)| m.arn == arn)?.0.clone();
            let (_, resource) = state.mesh.get(&key)?;
            Some((key, name.clone(), resource))
        })
        .ok_or_else(|| AwsError::not_found(format!("no resource has the ARN `{arn}`")))
}

fn list(store: &Store, query: &str) -> Result<Value, AwsError> {
    let (_, _, resource) = find(store, query)?;
    let tags = resource.tags().unwrap_or_default();
    let limit = match param(query, "limit")? {
        None => MAX_TAGS,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_TAGS).contains(l))
            .ok_or_else(|| AwsError::bad_request(format!("limit: `{l}` is not 1 to 50")))?,
    };
    let start = match param(query, "nextToken")? {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= tags.len())
            .ok_or_else(|| {
                AwsError::bad_request(format!("nextToken: `{t}` is not one this API gave"))
            })?,
    };
    let page: Vec<Value> = tags
        .iter()
        .skip(start)
        .take(limit)
        .map(|t| json!({"key": t.key, "value": t.value.clone().unwrap_or_default()}))
        .collect();
    let mut out = json!({"tags": page});
    if start + limit < tags.len() {
        out["nextToken"] = json!((start + limit).to_string());
    }
    Ok(out)
}

fn check_tags(tags: &[Tag]) -> Result<(), AwsError> {
    for (i, t) in tags.iter().enumerate() {
        if t.key.is_empty() || t.key.chars().count() > KEY_MAX {
            return Err(AwsError::bad_request(format!(
                "tags[{i}].key: must be 1 to {KEY_MAX} characters"
            )));
        }
        if t.value
            .as_ref()
            .is_some_and(|v| v.chars().count() > VALUE_MAX)
        {
            return Err(AwsError::bad_request(format!(
                "tags[{i}].value: must be at most {VALUE_MAX} characters"
            )));
        }
    }
    Ok(())
}

fn change(store: &Store, query: &str, body: &[u8], what: Change) -> Result<Value, AwsError> {
    let (key, mesh_name, _) = find(store, query)?;
    let (added, removed) = match what {
        Change::Tag => {
            let body: TagBody = serde_json::from_slice(body)
                .map_err(|e| AwsError::bad_request(format!("the body: {e}")))?;
            check_tags(&body.tags)?;
            (body.tags, Vec::new())
        }
        Change::Untag => {
            let body: UntagBody = serde_json::from_slice(body)
                .map_err(|e| AwsError::bad_request(format!("the body: {e}")))?;
            (Vec::new(), body.tag_keys)
        }
    };
    let result = store.update_with(|snapshot| {
        let gone = || AwsError::not_found(format!("{} no longer exists", key.describe()));
        let mesh = &snapshot.mesh(&mesh_name).ok_or_else(gone)?.mesh;
        let (origin, mut resource) = mesh.get(&key).ok_or_else(gone)?;
        let tags = resource.tags_mut().get_or_insert_with(Vec::new);
        tags.retain(|t| !removed.contains(&t.key));
        for tag in &added {
            match tags.iter_mut().find(|t| t.key == tag.key) {
                Some(existing) => existing.value = tag.value.clone(),
                None => tags.push(tag.clone()),
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(AwsError::new(
                StatusCode::BAD_REQUEST,
                "TooManyTagsException",
                format!(
                    "{} would have {} tags; App Mesh allows {MAX_TAGS}",
                    key.describe(),
                    tags.len()
                ),
            ));
        }
        if tags.is_empty() {
            *resource.tags_mut() = None;
        }
        let mesh = mesh
            .apply(&origin, resource)
            .map_err(|p| AwsError::bad_request(p.to_string()))?;
        Ok(Next::mesh(mesh_name.clone(), mesh))
    });
    match result {
        Ok(_) => Ok(json!({})),
        Err(UpdateError::Refused(e)) => Err(e),
        Err(UpdateError::Storage(e)) => Err(AwsError::unavailable(e.outcome())),
    }
}
