//! `gophermesh bootstrap`: an App Mesh sidecar's bootstrap, from the agent's environment.

use std::process::ExitCode;

use anyhow::Context;
use gophermesh::runtime::envoy::{AgentSettings, agent_bootstrap};

use crate::cli::BootstrapArgs;

pub(crate) fn run(args: &BootstrapArgs) -> anyhow::Result<ExitCode> {
    let node_id = args
        .resource_arn
        .clone()
        .or_else(|| args.virtual_node_name.clone())
        .context("set APPMESH_RESOURCE_ARN (or --resource-arn) to the virtual node's or virtual gateway's ARN")?;
    let settings = AgentSettings {
        cluster: args
            .resource_cluster
            .clone()
            .unwrap_or_else(|| node_id.clone()),
        node_id,
        xds_endpoint: args.xds_endpoint.clone(),
        admin_port: args.admin_port,
        ca_file: args.ca_file.clone(),
        protocol: args.xds_protocol,
    };
    if !settings.xds_endpoint.starts_with("unix://") && !settings.ca_file.exists() {
        anyhow::bail!(
            "--ca-file {}: no such file; the control plane's certificate is checked against it (set APPMESH_XDS_CA_FILE or --ca-file)",
            settings.ca_file.display()
        );
    }
    let mut bootstrap = agent_bootstrap(&settings)?;
    if let (Some(path), Some(clusters)) = (
        &args.sds_socket_path,
        bootstrap["static_resources"]["clusters"].as_array_mut(),
    ) {
        clusters.push(gophermesh::sidecar::additions::sds_cluster(path));
    }
    let text = serde_json::to_string_pretty(&bootstrap)? + "\n";
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("--out {}: cannot write", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
