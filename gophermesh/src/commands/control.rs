//! The CLI side of the control API, shared by `status`, `route set` and `apply`.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::cli::ControlArgs;

pub(crate) async fn call(
    control: &ControlArgs,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach the control API at {}: is `gophermesh up` running? (--control-url / GOPHERMESH_CONTROL_URL)",
            control.control_url
        )
    })?;
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .context("the control API answered something that is not JSON")?;
    Ok((status, body))
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

/// Prints refused changes' problems; exit 1.
pub(crate) fn refused(body: &Value) -> ExitCode {
    eprintln!("refused; nothing was changed:");
    for p in body["problems"].as_array().into_iter().flatten() {
        eprintln!("  {}", p.as_str().unwrap_or_default());
    }
    ExitCode::FAILURE
}
