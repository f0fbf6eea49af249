//! What is wrong, where: a file (or other origin), a JSON path inside it, and the reason.

use std::fmt;

/// One thing wrong with the input. Displays as `FILE: PATH: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the JSON came from: a file path, or `<api>`, `<command line>`.
    pub origin: String,
    /// The JSON path of the offending field, like `spec.listeners[0].portMapping.port`;
    /// empty for the document as a whole.
    pub path: String,
    pub reason: String,
}

impl Problem {
    pub fn new(
        origin: impl Into<String>,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            origin: origin.into(),
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.path, self.reason)
        }
    }
}

/// One or more problems; the error type of everything that checks input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn one(problem: Problem) -> Self {
        Self(vec![problem])
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Joins JSON path segments: `join("spec", "listeners[0]")` is `spec.listeners[0]`.
pub fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_owned()
    } else if field.starts_with('[') {
        format!("{base}{field}")
    } else {
        format!("{base}.{field}")
    }
}

/// Parses `text` as JSON; a syntax error is a problem with its line and column.
pub fn parse_json(origin: &str, text: &str) -> Result<serde_json::Value, Problems> {
    serde_json::from_str(text).map_err(|e| {
        Problems::one(Problem::new(
            origin,
            "",
            format!(
                "not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        ))
    })
}
