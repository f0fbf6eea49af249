//! HTTP connection managers and the listeners that hold them.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use meshmodel::appmesh::Logging;
use std::net::SocketAddr;

use super::{any, socket_address};

pub(super) fn http_listener(
    name: &str,
    addr: SocketAddr,
    stat_prefix: &str,
    routes: hcm::http_connection_manager::RouteSpecifier,
    logging: Option<&Logging>,
) -> listener::Listener {
    manager_listener(name, addr, &http_manager(stat_prefix, routes, logging))
}

/// An HTTP connection manager as App Mesh sets one up, with the node's access log.
pub(super) fn http_manager(
    stat_prefix: &str,
    routes: hcm::http_connection_manager::RouteSpecifier,
    logging: Option<&Logging>,
) -> hcm::HttpConnectionManager {
    let access_log = logging
        .and_then(|l| l.access_log.as_ref())
        .and_then(|a| a.file.as_ref())
        .map(|file| {
            use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
            use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
            use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log::AccessLogFormat;
            use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
            let log_format = file.format.as_ref().map(|f| {
                let format = match &f.text {
                    Some(text) => core::substitution_format_string::Format::TextFormatSource(
                        core::DataSource {
                            specifier: Some(core::data_source::Specifier::InlineString(
                                // One line per request, as App Mesh writes it.
                                if text.ends_with('\n') { text.clone() } else { format!("{text}\n") },
                            )),
                            ..Default::default()
                        },
                    ),
                    None => core::substitution_format_string::Format::JsonFormat(Struct {
                        fields: f
                            .json
                            .iter()
                            .map(|j| {
                                (
                                    j.key.clone(),
                                    Value {
                                        kind: Some(Kind::StringValue(j.value.clone())),
                                    },
                                )
                            })
                            .collect(),
                    }),
                };
                AccessLogFormat::LogFormat(core::SubstitutionFormatString {
                    format: Some(format),
                    ..Default::default()
                })
            });
            let config = FileAccessLog {
                path: file.path.clone(),
                access_log_format: log_format,
            };
            vec![accesslog::AccessLog {
                name: "envoy.access_loggers.file".to_owned(),
                config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    &config,
                ))),
                ..Default::default()
            }]
        })
        .unwrap_or_default();
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(routes),
        access_log,
        // As App Mesh sets them on every HTTP connection manager.
        normalize_path: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        merge_slashes: true,
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }],
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener on `addr` whose one filter chain is `manager`.
pub(super) fn manager_listener(
    name: &str,
    addr: SocketAddr,
    manager: &hcm::HttpConnectionManager,
) -> listener::Listener {
    listener::Listener {
        name: name.to_owned(),
        address: Some(socket_address(addr)),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    manager,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
