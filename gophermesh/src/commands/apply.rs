//! `gophermesh apply -f FILE`: create or replace one resource in the running mesh.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::control::{call, refused, request, url};
use crate::cli::ControlArgs;

pub(crate) async fn run(control: &ControlArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let origin = file.display().to_string();
    let text = meshmodel::input::read_text(file, meshmodel::input::MAX_FILE)
        .with_context(|| format!("cannot read {origin}"))?;
    let resource: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "{origin}: not valid JSON (line {}, column {}): {e}; nothing was changed",
                e.line(),
                e.column()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let url = url(control, "/v1/resources")?;
    let (status, body) = call(
        control,
        request(control, reqwest::Method::POST, url)?
            .json(&json!({ "origin": origin, "resource": resource })),
    )
    .await?;
    if status != 200 {
        return Ok(refused(&body));
    }
    println!("applied {origin} (mesh version {})", body["version"]);
    Ok(ExitCode::SUCCESS)
}
