//! `${NAME}` placeholders in task definitions, filled from the environment.

use std::collections::BTreeSet;

/// The placeholders the shipped task definitions use.
pub const PLACEHOLDERS: &[&str] = &["AWS_ACCOUNT_ID", "AWS_REGION", "IMAGE_REPOSITORY"];

/// Why a document could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{origin}: ${{{name}}} is used but the environment variable {name} is not set")]
    Missing { origin: String, name: String },
    #[error("{origin}: ${{{name}}} is used but {name} is empty")]
    Empty { origin: String, name: String },
    #[error("{origin}: a `${{` at byte {at} is not closed with `}}`")]
    Unclosed { origin: String, at: usize },
}

/// The placeholder names used in `text`, sorted.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        out.insert(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Replaces every `${NAME}` in `text` with `lookup(NAME)`. A name `lookup` does not know,
/// or knows as empty, is an error that names it.
pub fn render(
    origin: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(RenderError::Unclosed {
                origin: origin.to_owned(),
                at: text.len() - rest.len() + start,
            });
        };
        let name = &after[..end];
        match lookup(name) {
            None => {
                return Err(RenderError::Missing {
                    origin: origin.to_owned(),
                    name: name.to_owned(),
                });
            }
            Some(v) if v.is_empty() => {
                return Err(RenderError::Empty {
                    origin: origin.to_owned(),
                    name: name.to_owned(),
                });
            }
            Some(v) => out.push_str(&v),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "AWS_REGION" => Some("eu-west-1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn fills_known_names_and_names_the_missing_one() {
        assert_eq!(
            render("f", "a ${AWS_REGION} b", env),
            Ok("a eu-west-1 b".to_owned())
        );
        let err = render("f", "${AWS_REGION}/${AWS_ACCOUNT_ID}", env).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "f: ${AWS_ACCOUNT_ID} is used but the environment variable AWS_ACCOUNT_ID is not set"
        );
        assert!(matches!(
            render("f", "${EMPTY}", env),
            Err(RenderError::Empty { .. })
        ));
        assert!(matches!(
            render("f", "x ${AWS_REGION", env),
            Err(RenderError::Unclosed { at: 2, .. })
        ));
    }

    #[test]
    fn lists_placeholders() {
        let names: Vec<String> = placeholders("${A} ${B} ${A}").into_iter().collect();
        assert_eq!(names, ["A", "B"]);
    }
}
