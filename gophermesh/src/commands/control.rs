//! The CLI side of the control API, shared by `status`, `route set` and `apply`.
//!
//! Every request carries the control token: `GOPHERMESH_CONTROL_TOKEN` when set, else the
//! file `up` wrote, `STATE_DIR/control-token`.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::api::token::{ControlToken, TOKEN_FILE};
use serde_json::Value;

use crate::cli::ControlArgs;

/// A request to the control API at `url`, with the token when there is one.
pub(crate) fn request(
    control: &ControlArgs,
    method: reqwest::Method,
    url: reqwest::Url,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let token = match &control.control_token {
        Some(text) => Some(ControlToken::from_text(text)),
        None => ControlToken::read(&control.state_dir).ok(),
    };
    let builder = client.request(method, url);
    Ok(match token {
        Some(t) => builder.bearer_auth(t.text()),
        None => builder,
    })
}

/// `path` (e.g. `/v1/status`) on the control API.
pub(crate) fn url(control: &ControlArgs, path: &str) -> anyhow::Result<reqwest::Url> {
    let text = format!("{}{path}", control.control_url.trim_end_matches('/'));
    reqwest::Url::parse(&text)
        .with_context(|| format!("--control-url `{}` is not a URL", control.control_url))
}

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
    let body: Value = response
        .json()
        .await
        .context("the control API answered something that is not JSON")?;
    if status == 401 {
        anyhow::bail!(
            "the control API refused the change: {} (token file {}; set --state-dir to `up`'s --state-dir, or GOPHERMESH_CONTROL_TOKEN)",
            body["problems"][0].as_str().unwrap_or("unauthorized"),
            control.state_dir.join(TOKEN_FILE).display()
        );
    }
    Ok((status, body))
}

/// Prints refused changes' problems; exit 1.
pub(crate) fn refused(body: &Value) -> ExitCode {
    eprintln!("refused; nothing was changed:");
    for p in body["problems"].as_array().into_iter().flatten() {
        eprintln!(
            "  {}",
            gophermesh::progress::escape(p.as_str().unwrap_or_default())
        );
    }
    ExitCode::FAILURE
}
