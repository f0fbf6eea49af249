//! `gophermesh console`: the web console's sign-in link.
//!
//! The link carries the control token after `#`, which browsers never send to a server;
//! the page keeps it for the tab and takes it out of the address bar. Anyone given the
//! link can shift weights until `up` restarts, so it is printed only on request.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::api::token::{ControlToken, TOKEN_FILE};

use crate::cli::ControlArgs;

pub(crate) fn run(control: &ControlArgs) -> anyhow::Result<ExitCode> {
    let token = match &control.control_token {
        Some(text) => ControlToken::from_text(text),
        None => ControlToken::read(&control.state_dir).with_context(|| {
            format!(
                "cannot read the control token {} (set --state-dir to `up`'s --state-dir, or GOPHERMESH_CONTROL_TOKEN)",
                control.state_dir.join(TOKEN_FILE).display()
            )
        })?,
    };
    let base = control.control_url.trim_end_matches('/');
    println!("{base}/#token={}", token.text());
    Ok(ExitCode::SUCCESS)
}
