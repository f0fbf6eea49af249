//! The intrinsic functions, evaluated: `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`,
//! `Fn::Select`, `Fn::Split`, `Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`,
//! `Fn::FindInMap`, `Fn::ImportValue`, `Fn::Base64` and `Condition`, with the pseudo
//! parameters. Any other `Fn::` is refused, naming it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Template;
use crate::problem::Problem;

/// An evaluation at `path` of a template.
pub(super) struct Eval<'t, 'a> {
    template: &'t Template<'a>,
    path: String,
    /// The conditions being evaluated (to refuse a circle among them).
    trail: Vec<String>,
}

/// A value as text, as CloudFormation turns strings, numbers and booleans into strings.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The intrinsic function `value` calls, when it is one (an object of one key that is
/// `Ref`, `Condition` or `Fn::*`), with its argument.
fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (name, argument) = object.iter().next()?;
    (name == "Ref" || name == "Condition" || name.starts_with("Fn::"))
        .then_some((name.as_str(), argument))
}

/// The logical ids `value` refers to (by `Ref`, `Fn::GetAtt` and `Fn::Sub`), added to
/// `out`; names that are no resource are filtered out by the caller.
pub(super) fn references(value: Option<&Value>, out: &mut BTreeSet<String>) {
    let Some(value) = value else { return };
    match intrinsic(value) {
        Some(("Ref", Value::String(name))) => {
            out.insert(name.clone());
        }
        Some(("Fn::GetAtt", argument)) => {
            if let Some((id, _)) = get_att_parts(argument) {
                out.insert(id);
            }
        }
        Some(("Fn::Sub", argument)) => {
            let (template, variables) = match argument {
                Value::Array(a) if !a.is_empty() => (a[0].as_str().unwrap_or(""), a.get(1)),
                other => (other.as_str().unwrap_or(""), None),
            };
            let defined = variables.and_then(Value::as_object);
            for piece in sub_pieces(template).into_iter().flatten() {
                if let Piece::Variable(name) = piece {
                    let id = name.split('.').next().unwrap_or(&name).to_owned();
                    if defined.is_none_or(|d| !d.contains_key(&name)) {
                        out.insert(id);
                    }
                }
            }
            references(variables, out);
        }
        _ => match value {
            Value::Object(o) => o.values().for_each(|v| references(Some(v), out)),
            Value::Array(a) => a.iter().for_each(|v| references(Some(v), out)),
            _ => {}
        },
    }
}

/// `Fn::GetAtt`'s argument as (logical id, attribute): `[ID, ATTR]` or `"ID.ATTR"`.
fn get_att_parts(argument: &Value) -> Option<(String, String)> {
    match argument {
        Value::String(s) => s.split_once('.').map(|(a, b)| (a.to_owned(), b.to_owned())),
        Value::Array(a) if a.len() == 2 => Some((text(&a[0])?, text(&a[1])?)),
        _ => None,
    }
}

/// A piece of an `Fn::Sub` string: text, or `${NAME}` to substitute.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Variable(String),
}

/// The pieces of `template` (`${!X}` is the text `${X}`); `Err` names what is unclosed.
fn sub_pieces(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in {template:?}"));
        };
        text.push_str(before);
        let inside = &after[2..end];
        if let Some(literal) = inside.strip_prefix('!') {
            text.push_str(&format!("${{{literal}}}"));
        } else {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
            pieces.push(Piece::Variable(inside.trim().to_owned()));
        }
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

impl<'t, 'a> Eval<'t, 'a> {
    pub(super) fn new(template: &'t Template<'a>, path: &str) -> Self {
        Self {
            template,
            path: path.to_owned(),
            trail: Vec::new(),
        }
    }

    /// The same evaluation, inside conditions `trail`.
    pub(super) fn with_trail(mut self, trail: &[String]) -> Self {
        self.trail = trail.to_vec();
        self
    }

    fn at(&self, field: &str) -> Self {
        Self {
            template: self.template,
            path: super::shape::join(&self.path, field),
            trail: self.trail.clone(),
        }
    }

    fn problem(&self, reason: impl Into<String>) -> Problem {
        Problem::new(self.template.origin, &self.path, reason)
    }

    /// `value` evaluated: `None` for `AWS::NoValue` (the property is left out).
    pub(super) fn value(&self, value: &Value) -> Result<Option<Value>, Problem> {
        if let Some((name, argument)) = intrinsic(value) {
            return self.at(name).call(name, argument);
        }
        match value {
            Value::Object(object) => {
                let mut out = Map::new();
                for (k, v) in object {
                    if let Some(v) = self.at(k).value(v)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    if let Some(v) = self.at(&format!("[{i}]")).value(v)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// `value` evaluated to something present.
    fn present(&self, value: &Value) -> Result<Value, Problem> {
        self.value(value)?
            .ok_or_else(|| self.problem("AWS::NoValue where a value is needed"))
    }

    /// `value` evaluated to text.
    fn string(&self, value: &Value) -> Result<String, Problem> {
        let v = self.present(value)?;
        text(&v).ok_or_else(|| self.problem(format!("a string here, not {v}")))
    }

    /// `value` evaluated to a list.
    fn list(&self, value: &Value) -> Result<Vec<Value>, Problem> {
        match self.present(value)? {
            Value::Array(items) => Ok(items),
            other => Err(self.problem(format!("a list here, not {other}"))),
        }
    }

    /// A condition expression (`Fn::Equals`, `Fn::And`, ..., `Condition`) evaluated.
    pub(super) fn boolean(&self, value: &Value) -> Result<bool, Problem> {
        match self.present(value)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(self.problem(format!("a condition here (true or false), not {other}"))),
        }
    }

    /// The arguments of `name`, which must be a list of `n`.
    fn arguments<'v>(
        &self,
        name: &str,
        argument: &'v Value,
        n: usize,
    ) -> Result<&'v [Value], Problem> {
        match argument {
            Value::Array(a) if a.len() == n => Ok(a),
            _ => Err(self.problem(format!("{name} takes a list of {n}"))),
        }
    }

    fn call(&self, name: &str, argument: &Value) -> Result<Option<Value>, Problem> {
        let value = match name {
            "Ref" => {
                let target = self.string(argument)?;
                if target == "AWS::NoValue" {
                    return Ok(None);
                }
                self.reference(&target)?
            }
            "Condition" => Value::Bool(self.condition(&self.string(argument)?)?),
            "Fn::GetAtt" => {
                let (id, attribute) = get_att_parts(argument).ok_or_else(|| {
                    self.problem(
                        "Fn::GetAtt takes [LOGICAL_ID, ATTRIBUTE] or \"LOGICAL_ID.ATTRIBUTE\"",
                    )
                })?;
                self.attribute(&id, &attribute)?
            }
            "Fn::Sub" => Value::String(self.sub(argument)?),
            "Fn::Join" => {
                let a = self.arguments(name, argument, 2)?;
                let delimiter = self.string(&a[0])?;
                let parts: Result<Vec<String>, Problem> = self
                    .list(&a[1])?
                    .iter()
                    .map(|v| {
                        text(v)
                            .ok_or_else(|| self.problem(format!("Fn::Join joins strings, not {v}")))
                    })
                    .collect();
                Value::String(parts?.join(&delimiter))
            }
            "Fn::Select" => {
                let a = self.arguments(name, argument, 2)?;
                let index: usize = self
                    .string(&a[0])?
                    .parse()
                    .map_err(|_| self.problem("Fn::Select's index is a whole number"))?;
                let items = self.list(&a[1])?;
                let count = items.len();
                items.into_iter().nth(index).ok_or_else(|| {
                    self.problem(format!("Fn::Select index {index} of a list of {count}"))
                })?
            }
            "Fn::Split" => {
                let a = self.arguments(name, argument, 2)?;
                let delimiter = self.string(&a[0])?;
                let whole = self.string(&a[1])?;
                Value::Array(
                    whole
                        .split(delimiter.as_str())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                )
            }
            "Fn::If" => {
                let a = self.arguments(name, argument, 3)?;
                let condition = self.string(&a[0])?;
                let chosen = if self.condition(&condition)? {
                    &a[1]
                } else {
                    &a[2]
                };
                return self.value(chosen);
            }
            "Fn::Equals" => {
                let a = self.arguments(name, argument, 2)?;
                let (x, y) = (self.present(&a[0])?, self.present(&a[1])?);
                Value::Bool(text(&x).zip(text(&y)).map_or(x == y, |(x, y)| x == y))
            }
            "Fn::Not" => {
                let a = self.arguments(name, argument, 1)?;
                Value::Bool(!self.boolean(&a[0])?)
            }
            "Fn::And" | "Fn::Or" => {
                let items = argument
                    .as_array()
                    .filter(|a| (2..=10).contains(&a.len()))
                    .ok_or_else(|| {
                        self.problem(format!("{name} takes a list of 2 to 10 conditions"))
                    })?;
                let mut values = Vec::new();
                for item in items {
                    values.push(self.boolean(item)?);
                }
                Value::Bool(match name {
                    "Fn::And" => values.iter().all(|b| *b),
                    _ => values.iter().any(|b| *b),
                })
            }
            "Fn::FindInMap" => {
                let a = self.arguments(name, argument, 3)?;
                let (map, top, second) = (
                    self.string(&a[0])?,
                    self.string(&a[1])?,
                    self.string(&a[2])?,
                );
                self.template
                    .mappings
                    .and_then(|m| m.get(&map))
                    .and_then(|m| m.get(&top))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .ok_or_else(|| self.problem(format!("Mappings has no {map}.{top}.{second}")))?
            }
            "Fn::ImportValue" => {
                let export = self.string(argument)?;
                let value = self.template.options.imports.get(&export).ok_or_else(|| {
                    self.problem(format!(
                        "Fn::ImportValue of {export:?}, another stack's export: give its value with --import {export}=VALUE"
                    ))
                })?;
                Value::String(value.clone())
            }
            "Fn::Base64" => Value::String(base64(self.string(argument)?.as_bytes())),
            "Fn::GetAZs" | "Fn::Cidr" | "Fn::Length" | "Fn::ToJsonString" | "Fn::Transform"
            | "Fn::ForEach" => {
                return Err(self.problem(format!(
                    "{name} is not evaluated here (an App Mesh resource does not need it): give the value itself"
                )));
            }
            other => return Err(self.problem(format!("unknown intrinsic function {other}"))),
        };
        Ok(Some(value))
    }

    fn condition(&self, name: &str) -> Result<bool, Problem> {
        let mut trail = self.trail.clone();
        self.template
            .condition(name, &mut trail)
            .map_err(|reason| self.problem(reason))
    }

    /// `Fn::Sub`: its string with every `${NAME}` substituted (from its own variables, a
    /// parameter, a pseudo parameter, a resource's `Ref`, or `${ID.ATTRIBUTE}`).
    fn sub(&self, argument: &Value) -> Result<String, Problem> {
        let (template, variables) = match argument {
            Value::String(s) => (s.clone(), Map::new()),
            Value::Array(a) if a.len() == 2 => {
                let template = self.string(&a[0])?;
                let Value::Object(vars) = self.present(&a[1])? else {
                    return Err(self.problem("Fn::Sub's second argument is a map of variables"));
                };
                (template, vars)
            }
            _ => return Err(self.problem("Fn::Sub takes a string, or [STRING, {VARIABLES}]")),
        };
        let mut out = String::new();
        for piece in sub_pieces(&template).map_err(|e| self.problem(e))? {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Variable(name) => {
                    let value = match variables.get(&name) {
                        Some(v) => v.clone(),
                        None => match name.split_once('.') {
                            Some((id, attribute)) if !name.starts_with("AWS::") => {
                                self.attribute(id, attribute)?
                            }
                            _ => self.reference(&name)?,
                        },
                    };
                    out.push_str(&text(&value).ok_or_else(|| {
                        self.problem(format!("${{{name}}} is {value}, not a string"))
                    })?);
                }
            }
        }
        Ok(out)
    }

    /// `Ref` of `name`: a pseudo parameter, a parameter or a resource.
    fn reference(&self, name: &str) -> Result<Value, Problem> {
        let options = self.template.options;
        let partition = partition(&options.region);
        let pseudo = match name {
            "AWS::Region" => Some(Value::from(options.region.clone())),
            "AWS::AccountId" => Some(Value::from(options.account.clone())),
            "AWS::StackName" => Some(Value::from(options.stack_name.clone())),
            "AWS::StackId" => Some(Value::from(format!(
                "arn:{partition}:cloudformation:{}:{}:stack/{}/{}",
                options.region,
                options.account,
                options.stack_name,
                super::shape::uid(&options.stack_name)
            ))),
            "AWS::Partition" => Some(Value::from(partition)),
            "AWS::URLSuffix" => Some(Value::from(match partition {
                "aws-cn" => "amazonaws.com.cn",
                _ => "amazonaws.com",
            })),
            "AWS::NotificationARNs" => Some(Value::Array(Vec::new())),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Ok(value);
        }
        if let Some(value) = self.template.parameters.get(name) {
            return value.clone().map_err(|reason| self.problem(reason));
        }
        if self.template.resources.contains_key(name) {
            return self.resource_ref(name);
        }
        Err(self.problem(format!(
            "Ref of {name:?}: no parameter, pseudo parameter or resource of that name"
        )))
    }

    /// `Ref` of resource `id`: an App Mesh resource's ARN, another's physical id.
    fn resource_ref(&self, id: &str) -> Result<Value, Problem> {
        self.attribute(id, if self.is_app_mesh(id) { "Arn" } else { "Id" })
    }

    fn is_app_mesh(&self, id: &str) -> bool {
        let kind = self.template.resources[id]
            .get("Type")
            .and_then(Value::as_str);
        kind.and_then(super::app_mesh_kind).is_some()
    }

    /// `Fn::GetAtt` of `attribute` of resource `id`.
    fn attribute(&self, id: &str, attribute: &str) -> Result<Value, Problem> {
        let Some(definition) = self.template.resources.get(id) else {
            return Err(self.problem(format!(
                "{id}.{attribute}: no resource {id:?} in this template"
            )));
        };
        let options = self.template.options;
        if self.is_app_mesh(id) {
            let names = self.template.names_of(id)?;
            return names.attribute(attribute, options).ok_or_else(|| {
                self.problem(format!(
                    "{id} ({}) has no attribute {attribute} (it has {})",
                    names.kind,
                    super::shape::ATTRIBUTES.join(", ")
                ))
            });
        }
        let kind = definition.get("Type").and_then(Value::as_str).unwrap_or("");
        match attribute {
            "Id" => Ok(Value::from(format!("{}-{}", short_kind(kind), &super::shape::uid(id)[..12]))),
            "Arn" => Ok(Value::from(format!(
                "arn:{}:{}:{}:{}:{}/{id}",
                partition(&options.region),
                service_of(kind),
                options.region,
                options.account,
                short_kind(kind)
            ))),
            property => match definition.get("Properties").and_then(|p| p.get(property)) {
                Some(value) => Eval::new(
                    self.template,
                    &format!("Resources.{id}.Properties.{property}"),
                )
                .present(value),
                None => Err(self.problem(format!(
                    "{id}.{attribute}: {kind} has no property {attribute} to read it from, and its value is known only to AWS; give the value itself (or as a parameter)"
                ))),
            },
        }
    }
}

/// The partition of `region`.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `AWS::ServiceDiscovery::PrivateDnsNamespace` -> `privatednsnamespace`.
fn short_kind(kind: &str) -> String {
    kind.rsplit("::").next().unwrap_or(kind).to_lowercase()
}

/// `AWS::ServiceDiscovery::PrivateDnsNamespace` -> `servicediscovery`.
fn service_of(kind: &str) -> String {
    kind.split("::").nth(1).unwrap_or("unknown").to_lowercase()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_pieces_split_variables_and_keep_escapes() {
        assert_eq!(
            sub_pieces("${AWS::StackName}-x-${!Literal}-${Mesh.MeshName}").expect("ok"),
            [
                Piece::Text(String::new()),
                Piece::Variable("AWS::StackName".into()),
                Piece::Text("-x-${Literal}-".into()),
                Piece::Variable("Mesh.MeshName".into()),
                Piece::Text(String::new()),
            ]
        );
        assert!(sub_pieces("${open").is_err());
    }

    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
