//! `gophermesh up`: its flags as the typed configuration the library's `up` runs
//! ([`gophermesh::plane::up`]).

use std::process::ExitCode;

use gophermesh::config::{NetworkMode, Source, UpConfig};
use gophermesh::runtime::envoy::EnvoyOptions;

use crate::cli::UpArgs;

/// The typed configuration of `up`'s flags.
pub(crate) fn config(args: UpArgs) -> anyhow::Result<UpConfig> {
    Ok(UpConfig {
        // Absolute, so that `route set --save` from any directory writes the right file.
        source: Source {
            mesh_dir: std::path::absolute(&args.source.mesh_dir)?,
            taskdefs_dir: std::path::absolute(&args.source.taskdefs_dir)?,
            read: args.template.options(
                &args.imports,
                &args.api.api_region,
                &args.api.api_account_id,
            ),
            files: args.files,
        },
        requester_port: args.requester_port,
        gateway_port: args.gateway_port,
        control_port: args.control_port,
        xds_port: args.xds_port,
        api_port: args.api_port,
        envoy_bin: args.envoy_bin,
        envoy: EnvoyOptions {
            concurrency: args.envoy_concurrency,
            log_level: args.envoy_log_level,
            xds_protocol: args.xds_protocol,
        },
        bin_dir: args.bin_dir,
        network: NetworkMode::from_flags(args.netns, args.containers),
        state_dir: args.state_dir,
        data_dir: args.store.data_dir,
        empty: args.store.empty,
        api_credentials: args.api.credentials(),
        identity: args.api.identity(),
        allow_hosts: args.api.allow_host,
        cloud_map: args.cloud_map.config(),
        certificates: args.certificates.config(),
        control_plane: match (args.control_plane, args.control_plane_ca) {
            (Some(endpoint), Some(ca)) => {
                anyhow::ensure!(
                    args.netns && !args.containers,
                    "--control-plane needs --netns: a control plane elsewhere places each Envoy as App Mesh does (its proxy ports on every address), which only a network namespace per task gives"
                );
                anyhow::ensure!(
                    endpoint.rsplit_once(':').is_some_and(
                        |(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    ),
                    "--control-plane `{endpoint}` is not HOST:PORT"
                );
                Some((endpoint, std::path::absolute(ca)?))
            }
            _ => None,
        },
    })
}

/// Runs `up`.
pub(crate) async fn run(config: UpConfig) -> anyhow::Result<ExitCode> {
    gophermesh::plane::up::run(config).await
}
