//! `gophermesh serve`: its flags as the typed configuration the library's `serve` runs
//! ([`gophermesh::plane::serve`]).

use std::process::ExitCode;

use gophermesh::config::{ServeConfig, StateStore};

use crate::cli::ServeArgs;

/// The typed configuration of `serve`'s flags.
fn config(args: ServeArgs) -> ServeConfig {
    ServeConfig {
        state: match (args.state, args.store.data_dir) {
            (Some(table), _) => StateStore::Table(table, args.follow_interval),
            (None, Some(dir)) => StateStore::Dir(dir),
            (None, None) => StateStore::Memory,
        },
        empty: args.store.empty,
        identity: args.api.identity(),
        api_credentials: args.api.credentials(),
        allow_hosts: args.api.allow_host,
        cloud_map: args.cloud_map.config(),
        certificates: args.certificates.config(),
        xds_listen: args.xds_listen,
        api_listen: args.api_listen,
        control_listen: args.control_listen,
        statsd_listen: args.statsd_listen,
        tls: args.tls_cert.zip(args.tls_key),
        state_dir: args.state_dir,
        mesh_dir: args.mesh_dir,
        read: args.template.options(
            &args.import_values,
            &args.api.api_region,
            &args.api.api_account_id,
        ),
        imports: args.imports,
    }
}

/// Runs `serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    gophermesh::plane::serve::run(config(args)).await
}
