//! The EKS controller's custom resources (`appmesh.k8s.aws`, `v1beta2` and the older
//! `v1beta1`) turned into App Mesh as the controller turned them: names from
//! `spec.awsName` or the controller's defaults, references (`virtualServiceRef`,
//! `virtualNodeRef`, `virtualRouterRef`, ARNs) resolved to those names, a router's inline
//! routes as routes, `BackendGroup`s expanded into the backends of the nodes that list
//! them, and each object's mesh from its `meshRef`, else from the `Namespace` objects'
//! labels matched by a `Mesh`'s `namespaceSelector`, else the mesh named on the command
//! line. Objects of other kinds are listed as skipped.
//!
//! ```text
//! k8s.rs     the objects: what they are, where they belong, their names
//! v1beta2    the current shapes -> the API's
//! v1beta1    the old shapes (routes inside the VirtualService) -> the API's
//! ```

mod v1beta1;
mod v1beta2;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::problem::{Problem, Problems};
use crate::resource::Resource;

/// The controller's API group.
pub const GROUP: &str = "appmesh.k8s.aws";

/// Whether `document` is a Kubernetes object (or a `List` of them).
pub fn is_manifest(document: &Value) -> bool {
    document.get("apiVersion").is_some_and(Value::is_string)
        && document.get("kind").is_some_and(Value::is_string)
}

/// The manifests' App Mesh resources in the API's shapes (each with its origin, `FILE:
/// KIND NAMESPACE/NAME`), and one line for each object that is not App Mesh.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    pub resources: Vec<(String, Resource)>,
    pub skipped: Vec<String>,
}

/// One object of the controller's group.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) kind: String,
    /// `v1beta1` or `v1beta2`.
    pub(crate) version: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) spec: Map<String, Value>,
}

impl Object {
    /// `KIND NAMESPACE/NAME` (or `KIND NAME` for a mesh), for origins and messages.
    pub(crate) fn describe(&self) -> String {
        match self.namespace.is_empty() {
            true => format!("{} {}", self.kind, self.name),
            false => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}

/// The objects of one or more manifests, indexed for the references between them.
pub(crate) struct Objects<'a> {
    pub(crate) origin: &'a str,
    pub(crate) all: Vec<Object>,
    /// Namespace labels, from the `Namespace` objects given.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The mesh of objects no `meshRef` or selector places.
    default_mesh: Option<&'a str>,
}

/// Converts the Kubernetes objects of `documents` (read from `origin`); objects that no
/// mesh claims go to `default_mesh`.
pub fn convert(
    origin: &str,
    documents: &[Value],
    default_mesh: Option<&str>,
) -> Result<Converted, Problems> {
    let mut out = Converted::default();
    let mut problems = Vec::new();
    let mut flat = Vec::new();
    for document in documents {
        flatten(document, &mut flat);
    }
    let mut objects = Objects {
        origin,
        all: Vec::new(),
        namespaces: BTreeMap::new(),
        default_mesh,
    };
    for (i, value) in flat.iter().enumerate() {
        match read_object(value) {
            Read::Namespace(name, labels) => {
                objects.namespaces.insert(name, labels);
            }
            Read::AppMesh(object) => objects.all.push(object),
            Read::Other(what) => out.skipped.push(format!("{what}: not App Mesh")),
            Read::Bad(reason) => problems.push(Problem::new(origin, format!("[{i}]"), reason)),
        }
    }
    for object in &objects.all {
        let converted = match object.version.as_str() {
            "v1beta1" => v1beta1::convert(&objects, object),
            _ => v1beta2::convert(&objects, object),
        };
        match converted {
            Ok(values) => {
                for value in values {
                    let origin = format!("{origin}: {}", object.describe());
                    match Resource::from_value(&origin, value) {
                        Ok(r) => out.resources.push((origin, r)),
                        Err(Problems(mut p)) => problems.append(&mut p),
                    }
                }
            }
            Err(p) => problems.push(p),
        }
    }
    match problems.is_empty() {
        true => Ok(out),
        false => Err(Problems(problems)),
    }
}

/// `document`, or the items of a `List`, into `out`.
fn flatten<'v>(document: &'v Value, out: &mut Vec<&'v Value>) {
    match (
        document.get("kind").and_then(Value::as_str),
        document.get("items"),
    ) {
        (Some(kind), Some(Value::Array(items))) if kind.ends_with("List") => {
            items.iter().for_each(|item| flatten(item, out));
        }
        _ => out.push(document),
    }
}

enum Read {
    Namespace(String, BTreeMap<String, String>),
    AppMesh(Object),
    Other(String),
    Bad(String),
}

fn read_object(value: &Value) -> Read {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let api = text(value.get("apiVersion"));
    let kind = text(value.get("kind"));
    let metadata = value.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")));
    let labels: BTreeMap<String, String> = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if kind == "Namespace" && (api == "v1" || api.is_empty()) {
        return Read::Namespace(name, labels);
    }
    let Some(version) = api.strip_prefix(&format!("{GROUP}/")) else {
        return Read::Other(format!("{kind} {name} ({api})"));
    };
    if name.is_empty() {
        return Read::Bad(format!("{kind}: metadata.name is missing"));
    }
    if version != "v1beta1" && version != "v1beta2" {
        return Read::Bad(format!(
            "{kind} {name}: {api} is not a version of the controller's API this reads (v1beta2, v1beta1)"
        ));
    }
    let namespace = match kind.as_str() {
        "Mesh" => String::new(),
        _ => {
            let ns = text(metadata.and_then(|m| m.get("namespace")));
            if ns.is_empty() {
                "default".to_owned()
            } else {
                ns
            }
        }
    };
    Read::AppMesh(Object {
        kind,
        version: version.to_owned(),
        namespace,
        name,
        labels,
        spec: value
            .get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

impl Objects<'_> {
    pub(crate) fn problem(
        &self,
        object: &Object,
        path: &str,
        reason: impl Into<String>,
    ) -> Problem {
        Problem::new(
            format!("{}: {}", self.origin, object.describe()),
            path,
            reason,
        )
    }

    /// The object of `kind` named `name` in `namespace`.
    pub(crate) fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<&Object> {
        self.all.iter().find(|o| {
            o.kind == kind && o.name == name && (kind == "Mesh" || o.namespace == namespace)
        })
    }

    /// The App Mesh name of `object`: `spec.awsName`, else the controller's default.
    pub(crate) fn aws_name(object: &Object) -> String {
        if let Some(name) = object.spec.get("awsName").and_then(Value::as_str) {
            if !name.is_empty() {
                return name.to_owned();
            }
        }
        match (object.version.as_str(), object.kind.as_str()) {
            (_, "Mesh") => object.name.clone(),
            ("v1beta1", "VirtualService") => object.name.clone(),
            ("v1beta1", _) => format!("{}-{}", object.name, object.namespace),
            (_, "VirtualService") => format!("{}.{}", object.name, object.namespace),
            _ => format!("{}_{}", object.name, object.namespace),
        }
    }

    /// The App Mesh name of the object of `kind` a reference (`{name, namespace}`, the
    /// namespace defaulting to `from`'s) at `path` names.
    pub(crate) fn resolve(
        &self,
        from: &Object,
        path: &str,
        kind: &str,
        reference: &Value,
    ) -> Result<String, Problem> {
        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
        let namespace = reference
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(&from.namespace);
        match self.find(kind, namespace, name) {
            Some(target) => Ok(Self::aws_name(target)),
            None => Err(self.problem(
                from,
                path,
                format!("names {kind} {namespace}/{name}, which is not among the objects given"),
            )),
        }
    }

    /// The name at the end of an App Mesh ARN (`.../virtualNode/NAME`).
    pub(crate) fn arn_name(
        from: &Object,
        objects: &Self,
        path: &str,
        arn: &Value,
    ) -> Result<String, Problem> {
        arn.as_str()
            .filter(|a| a.starts_with("arn:"))
            .and_then(|a| a.rsplit('/').next())
            .map(str::to_owned)
            .ok_or_else(|| objects.problem(from, path, "an App Mesh ARN"))
    }

    /// The mesh `object` belongs to (its App Mesh name).
    pub(crate) fn mesh_of(&self, object: &Object) -> Result<String, Problem> {
        if object.kind == "Mesh" {
            return Ok(Self::aws_name(object));
        }
        let by_ref = match object.version.as_str() {
            "v1beta1" => object.spec.get("meshName"),
            _ => object.spec.get("meshRef").and_then(|r| r.get("name")),
        };
        if let Some(name) = by_ref.and_then(Value::as_str) {
            return Ok(self
                .find("Mesh", "", name)
                .map_or_else(|| name.to_owned(), Self::aws_name));
        }
        let labels = self.namespaces.get(&object.namespace);
        let claims: Vec<&Object> = self
            .all
            .iter()
            .filter(|m| m.kind == "Mesh")
            .filter(|m| labels.is_some_and(|l| selects(m.spec.get("namespaceSelector"), l)))
            .collect();
        match (claims.as_slice(), self.default_mesh) {
            ([only], _) => Ok(Self::aws_name(only)),
            ([], Some(mesh)) => Ok(mesh.to_owned()),
            ([], None) => Err(self.problem(
                object,
                "",
                format!(
                    "belongs to no mesh: it has no meshRef, and {} (give the Namespace objects, or --mesh)",
                    match labels {
                        None => format!("no Namespace object for {} was given", object.namespace),
                        Some(_) => format!("namespace {}'s labels match no Mesh's namespaceSelector", object.namespace),
                    }
                ),
            )),
            (several, _) => Err(self.problem(
                object,
                "",
                format!(
                    "namespace {}'s labels match the namespaceSelector of several meshes ({})",
                    object.namespace,
                    several.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// The labels of namespace `name`, when its `Namespace` object was given.
    pub(crate) fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(name)
    }
}

/// Whether label selector `selector` selects `labels`: absent selects nothing, empty
/// selects everything; `matchLabels` and `matchExpressions` (`In`, `NotIn`, `Exists`,
/// `DoesNotExist`) must all hold.
pub(crate) fn selects(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector.and_then(Value::as_object) else {
        return false;
    };
    let exact = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let has = labels.get(key);
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => has.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => has.is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => has.is_some(),
                "DoesNotExist" => has.is_none(),
                _ => false,
            }
        });
    exact && expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [
            ("mesh".to_owned(), "shop".to_owned()),
            ("tier".to_owned(), "web".to_owned()),
        ]
        .into();
        assert!(!selects(None, &labels), "absent selects nothing");
        assert!(selects(Some(&json!({})), &labels), "empty selects all");
        assert!(selects(
            Some(&json!({"matchLabels": {"mesh": "shop"}})),
            &labels
        ));
        assert!(!selects(
            Some(&json!({"matchLabels": {"mesh": "other"}})),
            &labels
        ));
        assert!(selects(
            Some(&json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "gone", "operator": "DoesNotExist"}]})),
            &labels
        ));
        assert!(!selects(
            Some(
                &json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]})
            ),
            &labels
        ));
    }
}
