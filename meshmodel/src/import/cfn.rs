//! CloudFormation templates (YAML or JSON, as written or as `cdk synth` writes them)
//! evaluated as far as their App Mesh resources need: parameters, pseudo parameters,
//! conditions, mappings, `DependsOn`, the intrinsic functions ([`intrinsic`]), `Ref` and
//! `Fn::GetAtt` of App Mesh resources and of the resources their properties name. Each
//! `AWS::AppMesh::*` resource becomes the App Mesh API's JSON for it ([`shape`]); other
//! resources are listed as not applied.
//!
//! ```text
//! cfn.rs        the template: parameters, conditions, dependencies, the resources
//! intrinsic     Ref, Fn::Sub, Fn::GetAtt, ... evaluated
//! shape         properties as CloudFormation spells them -> the API's shapes; names
//! ```

mod intrinsic;
mod shape;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::problem::{Problem, Problems};
use crate::resource::Resource;

pub use shape::app_mesh_kind;

/// What a template is evaluated with: parameter values, other stacks' exports, and what
/// the pseudo parameters say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--parameter KEY=VALUE`.
    pub parameters: BTreeMap<String, String>,
    /// `--import NAME=VALUE`: what `Fn::ImportValue` of NAME gives.
    pub imports: BTreeMap<String, String>,
    /// `AWS::Region`.
    pub region: String,
    /// `AWS::AccountId`.
    pub account: String,
    /// `AWS::StackName`.
    pub stack_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            parameters: BTreeMap::new(),
            imports: BTreeMap::new(),
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
            stack_name: "stack".to_owned(),
        }
    }
}

/// A template's App Mesh resources in the API's shapes (each with its origin, `FILE:
/// LOGICAL_ID`), and one line for each resource that is not applied.
#[derive(Debug, Clone, Default)]
pub struct Evaluated {
    pub resources: Vec<(String, Resource)>,
    pub not_applied: Vec<String>,
}

/// Whether `document` is a CloudFormation template: it has a `Resources` map, or says
/// its format version.
pub fn is_template(document: &Value) -> bool {
    document.get("AWSTemplateFormatVersion").is_some()
        || document.get("Resources").is_some_and(Value::is_object)
}

/// Evaluates `template` (read from `origin`) with `options`: every App Mesh resource in
/// the API's shapes, or every problem found (each naming the logical id and the property
/// path).
pub fn evaluate(origin: &str, template: &Value, options: &Options) -> Result<Evaluated, Problems> {
    let template = Template::new(origin, template, options)?;
    template.check_dependencies()?;
    let mut out = Evaluated::default();
    let mut problems = Vec::new();
    for (id, definition) in template.resources {
        let kind = definition.get("Type").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            problems
                .push(template.problem(&format!("Resources.{id}.Type"), "a resource needs a Type"));
            continue;
        }
        match template.created(id, definition) {
            Ok(true) => {}
            Ok(false) => {
                out.not_applied.push(format!(
                    "{id} ({kind}): not created (its condition is false)"
                ));
                continue;
            }
            Err(p) => {
                problems.push(p);
                continue;
            }
        }
        if app_mesh_kind(kind).is_none() {
            out.not_applied.push(format!("{id} ({kind}): not App Mesh"));
            continue;
        }
        match template.app_mesh_resource(id, definition) {
            Ok(resource) => out.resources.push((format!("{origin}: {id}"), resource)),
            Err(Problems(mut p)) => problems.append(&mut p),
        }
    }
    match problems.is_empty() {
        true => Ok(out),
        false => Err(Problems(problems)),
    }
}

/// A template being evaluated.
struct Template<'a> {
    origin: &'a str,
    options: &'a Options,
    resources: &'a Map<String, Value>,
    mappings: Option<&'a Map<String, Value>>,
    conditions: Option<&'a Map<String, Value>>,
    /// Each parameter's value: a string, a number or a list; `Err` with why there is none
    /// (said when it is used).
    parameters: BTreeMap<String, Result<Value, String>>,
}

impl<'a> Template<'a> {
    fn new(origin: &'a str, template: &'a Value, options: &'a Options) -> Result<Self, Problems> {
        let problem = |path: &str, reason: &str| Problems::one(Problem::new(origin, path, reason));
        let Some(resources) = template.get("Resources").and_then(Value::as_object) else {
            return Err(problem("Resources", "a template needs a Resources map"));
        };
        if let Some(transform) = template.get("Transform") {
            return Err(problem(
                "Transform",
                &format!(
                    "template transforms ({transform}) are run by CloudFormation only; give the processed template (`aws cloudformation get-template --template-stage Processed`)"
                ),
            ));
        }
        let section = |name: &str| template.get(name).and_then(Value::as_object);
        let mut t = Self {
            origin,
            options,
            resources,
            mappings: section("Mappings"),
            conditions: section("Conditions"),
            parameters: BTreeMap::new(),
        };
        t.read_parameters(section("Parameters"))?;
        Ok(t)
    }

    fn problem(&self, path: &str, reason: &str) -> Problem {
        Problem::new(self.origin, path, reason)
    }

    /// Every declared parameter's value (given, else its default) checked against its
    /// constraints; a value given for no declared parameter is refused.
    fn read_parameters(&mut self, declared: Option<&Map<String, Value>>) -> Result<(), Problems> {
        let empty = Map::new();
        let declared = declared.unwrap_or(&empty);
        let mut problems = Vec::new();
        for given in self.options.parameters.keys() {
            if !declared.contains_key(given) {
                problems.push(self.problem(
                    "Parameters",
                    &format!(
                        "--parameter {given}: the template declares no such parameter (it has {})",
                        names_of(declared)
                    ),
                ));
            }
        }
        for (name, declaration) in declared {
            let path = format!("Parameters.{name}");
            match parameter_value(name, declaration, self.options.parameters.get(name)) {
                Ok(value) => {
                    self.parameters.insert(name.clone(), value);
                }
                Err(reason) => problems.push(self.problem(&path, &reason)),
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Problems(problems)),
        }
    }

    /// Whether resource `id` is created: no `Condition`, or one that holds.
    fn created(&self, id: &str, definition: &Value) -> Result<bool, Problem> {
        match definition.get("Condition") {
            None => Ok(true),
            Some(Value::String(name)) => self
                .condition(name, &mut Vec::new())
                .map_err(|reason| self.problem(&format!("Resources.{id}.Condition"), &reason)),
            Some(_) => Err(self.problem(
                &format!("Resources.{id}.Condition"),
                "a condition's name (a string)",
            )),
        }
    }

    /// The value of condition `name`; `trail` holds the conditions being evaluated (a
    /// condition that needs itself is refused).
    fn condition(&self, name: &str, trail: &mut Vec<String>) -> Result<bool, String> {
        if trail.iter().any(|c| c == name) {
            trail.push(name.to_owned());
            return Err(format!("circular conditions: {}", trail.join(" -> ")));
        }
        let Some(expression) = self.conditions.and_then(|c| c.get(name)) else {
            return Err(format!(
                "no condition {name} (the template has {})",
                self.conditions.map_or_else(|| "none".to_owned(), names_of)
            ));
        };
        trail.push(name.to_owned());
        let value = intrinsic::Eval::new(self, &format!("Conditions.{name}"))
            .with_trail(trail)
            .boolean(expression);
        trail.pop();
        value.map_err(|p| p.reason)
    }

    /// Refuses a `DependsOn` naming no resource and any circle among the resources'
    /// dependencies (`DependsOn`, and `Ref`, `Fn::GetAtt` and `Fn::Sub` of resources).
    fn check_dependencies(&self) -> Result<(), Problems> {
        let mut problems = Vec::new();
        let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (id, definition) in self.resources {
            let mut needs = BTreeSet::new();
            let depends = match definition.get("DependsOn") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect(),
                Some(_) => {
                    problems.push(self.problem(
                        &format!("Resources.{id}.DependsOn"),
                        "a resource's logical id, or a list of them",
                    ));
                    Vec::new()
                }
            };
            for other in depends {
                if self.resources.contains_key(&other) {
                    needs.insert(other);
                } else {
                    problems.push(self.problem(
                        &format!("Resources.{id}.DependsOn"),
                        &format!("names {other:?}, which is not a resource of this template"),
                    ));
                }
            }
            intrinsic::references(definition.get("Properties"), &mut needs);
            needs.retain(|n| self.resources.contains_key(n));
            edges.insert(id, needs);
        }
        if let Some(circle) = find_circle(&edges) {
            problems.push(self.problem(
                &format!("Resources.{}", circle[0]),
                &format!("circular dependency: {}", circle.join(" -> ")),
            ));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Problems(problems)),
        }
    }

    /// App Mesh resource `id` in the API's shape.
    fn app_mesh_resource(&self, id: &str, definition: &Value) -> Result<Resource, Problems> {
        let path = format!("Resources.{id}.Properties");
        let properties = match definition.get("Properties") {
            None => Value::Object(Map::new()),
            Some(p) => intrinsic::Eval::new(self, &path)
                .value(p)
                .map_err(Problems::one)?
                .unwrap_or(Value::Object(Map::new())),
        };
        let kind = definition.get("Type").and_then(Value::as_str).unwrap_or("");
        let names = self.names_of(id).map_err(Problems::one)?;
        let body = shape::api_json(kind, &properties, &names).map_err(|(at, reason)| {
            Problems::one(self.problem(&shape::join(&path, &at), &reason))
        })?;
        Resource::from_value(&format!("{}: {id}", self.origin), body)
    }

    /// The names of App Mesh resource `id`: its mesh's, its parent's and its own.
    fn names_of(&self, id: &str) -> Result<shape::Names, Problem> {
        let definition = &self.resources[id];
        let kind = definition.get("Type").and_then(Value::as_str).unwrap_or("");
        let properties = definition.get("Properties");
        let eval = |property: &str| -> Result<Option<String>, Problem> {
            let Some(value) = properties.and_then(|p| p.get(property)) else {
                return Ok(None);
            };
            let at = format!("Resources.{id}.Properties.{property}");
            match intrinsic::Eval::new(self, &at).value(value)? {
                None => Ok(None),
                Some(v) => intrinsic::text(&v)
                    .map(Some)
                    .ok_or_else(|| self.problem(&at, "a name (a string)")),
            }
        };
        shape::Names::of(kind, id, &self.options.stack_name, eval).map_err(|mut p| {
            if p.origin.is_empty() {
                self.origin.clone_into(&mut p.origin);
            }
            p
        })
    }
}

/// The names of the entries of `map`, for messages.
fn names_of(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Parameter `name`'s value as `declaration` and the value `given` say: `Ok(Err(why))`
/// for one that has no value but is refused only when used (read from SSM).
fn parameter_value(
    name: &str,
    declaration: &Value,
    given: Option<&String>,
) -> Result<Result<Value, String>, String> {
    let kind = declaration
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or("String");
    let text = given
        .cloned()
        .or_else(|| declaration.get("Default").and_then(intrinsic::text));
    if kind.starts_with("AWS::SSM::Parameter::Value") && given.is_none() {
        return Ok(Err(format!(
            "parameter {name} is read from SSM parameter {}: give its value with --parameter {name}=VALUE",
            text.unwrap_or_default()
        )));
    }
    let Some(text) = text else {
        return Err(format!(
            "no value (and no Default): give it with --parameter {name}=VALUE"
        ));
    };
    check_constraints(declaration, &text)?;
    if kind == "Number" {
        let number: serde_json::Number = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number (Type: Number)"))?;
        return Ok(Ok(Value::Number(number)));
    }
    if kind == "CommaDelimitedList" || kind.starts_with("List<") {
        return Ok(Ok(Value::Array(
            text.split(',')
                .map(|s| Value::String(s.trim().to_owned()))
                .collect(),
        )));
    }
    Ok(Ok(Value::String(text)))
}

/// `AllowedValues`, `AllowedPattern`, `MinLength`/`MaxLength` and `MinValue`/`MaxValue`.
fn check_constraints(declaration: &Value, text: &str) -> Result<(), String> {
    let explain = |base: String| match declaration
        .get("ConstraintDescription")
        .and_then(Value::as_str)
    {
        Some(d) => format!("{base} ({d})"),
        None => base,
    };
    if let Some(allowed) = declaration.get("AllowedValues").and_then(Value::as_array) {
        let allowed: Vec<String> = allowed.iter().filter_map(intrinsic::text).collect();
        if !allowed.iter().any(|a| a == text) {
            return Err(explain(format!(
                "{text:?} is not one of the AllowedValues ({})",
                allowed.join(", ")
            )));
        }
    }
    if let Some(pattern) = declaration.get("AllowedPattern").and_then(Value::as_str) {
        let whole = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("AllowedPattern {pattern:?} is not a pattern: {e}"))?;
        if !whole.is_match(text) {
            return Err(explain(format!(
                "{text:?} does not match the AllowedPattern {pattern:?}"
            )));
        }
    }
    let bound = |key: &str| {
        declaration
            .get(key)
            .and_then(intrinsic::text)?
            .parse::<f64>()
            .ok()
    };
    let length = text.chars().count() as f64;
    if bound("MinLength").is_some_and(|m| length < m)
        || bound("MaxLength").is_some_and(|m| length > m)
    {
        return Err(explain(format!(
            "{text:?} is {length} characters long, outside MinLength/MaxLength"
        )));
    }
    if bound("MinValue").is_some() || bound("MaxValue").is_some() {
        let n: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number"))?;
        if bound("MinValue").is_some_and(|m| n < m) || bound("MaxValue").is_some_and(|m| n > m) {
            return Err(explain(format!("{n} is outside MinValue/MaxValue")));
        }
    }
    Ok(())
}

/// A circle in `edges` (each node to the nodes it needs), as the ids around it, the
/// first repeated at the end.
fn find_circle(edges: &BTreeMap<&str, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut circle: Vec<String> =
                    stack[from..].iter().map(|s| (*s).to_owned()).collect();
                circle.push(node.to_owned());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some((key, _)) = edges.get_key_value(next.as_str()) {
                if let Some(circle) = visit(key, edges, marks, stack) {
                    return Some(circle);
                }
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(circle);
        }
    }
    None
}
