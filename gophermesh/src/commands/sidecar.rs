//! `gophermesh sidecar`: the agent's environment read, then the library's sidecar run
//! ([`gophermesh::sidecar`]).

use std::process::ExitCode;

use crate::cli::SidecarArgs;

pub(crate) async fn run(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    let env = std::env::vars().collect();
    let config = match gophermesh::sidecar::env::read(&env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gophermesh sidecar: {e}; not starting");
            return Ok(ExitCode::FAILURE);
        }
    };
    let envoy = gophermesh::runtime::envoy::find(args.envoy_bin.as_deref())?;
    gophermesh::sidecar::run(config, envoy, args.bootstrap).await
}
