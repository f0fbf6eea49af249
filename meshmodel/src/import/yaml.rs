//! YAML (and JSON, which is YAML too) read into JSON values, one per document, with
//! CloudFormation's short-form tags written out in their long form: `!Ref X` is
//! `{"Ref": "X"}`, `!GetAtt A.B` is `{"Fn::GetAtt": "A.B"}`, `!Condition C` is
//! `{"Condition": "C"}`, and any other `!Name V` is `{"Fn::Name": V}` (an unknown one is
//! refused when the template is evaluated, naming it).

use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::problem::{Problem, Problems};

/// The documents of `text` (a file named `origin`) as JSON values; empty documents are
/// left out.
pub fn documents(origin: &str, text: &str) -> Result<Vec<Value>, Problems> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return crate::problem::parse_json(origin, text).map(|v| vec![v]);
    }
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            Problems::one(Problem::new(
                origin,
                "",
                format!("not valid YAML in document {}{at}: {e}", i + 1),
            ))
        })?;
        if !value.is_null() {
            out.push(to_json(value));
        }
    }
    Ok(out)
}

/// `value` as JSON, its tags written out (see the module doc).
fn to_json(value: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value);
            let key = match name {
                "Ref" | "Condition" => name.to_owned(),
                other => format!("Fn::{other}"),
            };
            let mut object = Map::new();
            object.insert(key, inner);
            Value::Object(object)
        }
    }
}

/// A mapping key as text (YAML allows any value as a key; JSON only strings).
fn key_text(key: serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s,
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => "null".to_owned(),
        other => serde_yaml::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_form_tags_are_written_out() {
        let docs = documents(
            "t.yaml",
            "A: !Ref Env\nB: !GetAtt Mesh.MeshName\nC: !Sub\n  - '${X}-y'\n  - X: !Ref Y\nD: !Condition IsProd\nE: !Join ['', [a, !Ref B]]\n",
        )
        .expect("parses");
        assert_eq!(
            docs,
            [json!({
                "A": {"Ref": "Env"},
                "B": {"Fn::GetAtt": "Mesh.MeshName"},
                "C": {"Fn::Sub": ["${X}-y", {"X": {"Ref": "Y"}}]},
                "D": {"Condition": "IsProd"},
                "E": {"Fn::Join": ["", ["a", {"Ref": "B"}]]},
            })]
        );
    }

    #[test]
    fn documents_are_split_and_empty_ones_left_out() {
        let docs = documents("m.yaml", "---\na: 1\n---\n---\nb: [x]\n").expect("parses");
        assert_eq!(docs, [json!({"a": 1}), json!({"b": ["x"]})]);
    }

    #[test]
    fn a_syntax_error_names_the_document_and_line() {
        let e = documents("m.yaml", "a: 1\n---\nb: [x\n").expect_err("refused");
        let said = e.to_string();
        assert!(
            said.starts_with("m.yaml: not valid YAML in document 2"),
            "{said}"
        );
        assert!(said.contains("line"), "{said}");
    }
}
