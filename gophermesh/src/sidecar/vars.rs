//! The agent's variables as the agent reads them: trimmed, blank taken as unset; switches,
//! ports and numbers parsed, or refused naming the variable.

use std::collections::BTreeMap;

/// Why the environment cannot run a sidecar: the variable and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct EnvError {
    pub variable: &'static str,
    pub reason: String,
}

pub(super) fn refuse(variable: &'static str, reason: impl Into<String>) -> EnvError {
    EnvError {
        variable,
        reason: reason.into(),
    }
}

/// The environment, read variable by variable.
pub(super) struct Vars<'a>(pub(super) &'a BTreeMap<String, String>);

impl Vars<'_> {
    /// A variable that is set and not blank, trimmed (as the agent reads it).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A switch, as Go's `strconv.ParseBool` reads it (1, t, true, 0, f, false, ...).
    pub(super) fn truthy_or(&self, name: &'static str, default: bool) -> Result<bool, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(refuse(
                name,
                format!("`{v}` is not a boolean (true or false, 1 or 0)"),
            )),
        }
    }

    /// A switch that is off unless set.
    pub(super) fn truthy(&self, name: &'static str) -> Result<bool, EnvError> {
        self.truthy_or(name, false)
    }

    pub(super) fn port(&self, name: &'static str, default: u16) -> Result<u16, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| refuse(name, format!("`{v}` is not a port (1-65535)"))),
        }
    }

    pub(super) fn number(&self, name: &'static str, default: i64) -> Result<i64, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map_err(|_| refuse(name, format!("`{v}` is not a whole number"))),
        }
    }

    /// A timer in the agent's range: out of range, its default (a warning says so).
    pub(super) fn clamped(
        &self,
        name: &'static str,
        default: i64,
        range: (i64, i64),
    ) -> Result<u64, EnvError> {
        let v = self.number(name, default)?;
        if (range.0..=range.1).contains(&v) {
            return Ok(v.unsigned_abs());
        }
        tracing::warn!(
            variable = name,
            value = v,
            "outside {}..{}: {default} taken, as the agent takes it",
            range.0,
            range.1
        );
        Ok(default.unsigned_abs())
    }
}
