//! TLS: a listener's certificate and mTLS validation, and a client policy's upstream TLS.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;

use super::any;

/// A file Envoy reads, as a data source.
fn file_source(path: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

/// TLS material common to both sides: the certificate to show (when given as files) and the
/// peers to trust, with the names they must carry.
fn common_tls(
    certificate: Option<&meshmodel::appmesh::TlsCertificate>,
    validation: Option<&meshmodel::appmesh::TlsValidation>,
) -> tls::CommonTlsContext {
    let tls_certificates = certificate
        .and_then(|c| c.file.as_ref())
        .map(|f| tls::TlsCertificate {
            certificate_chain: Some(file_source(&f.certificate_chain)),
            private_key: Some(file_source(&f.private_key)),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let validation_context_type = validation.and_then(|v| {
        let trust = v.trust.file.as_ref()?;
        let names = v
            .subject_alternative_names
            .as_ref()
            .map(|n| n.names.exact.as_slice())
            .unwrap_or_default();
        Some(tls::common_tls_context::ValidationContextType::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(file_source(&trust.certificate_chain)),
                match_typed_subject_alt_names: names
                    .iter()
                    .map(|name| tls::SubjectAltNameMatcher {
                        san_type: tls::subject_alt_name_matcher::SanType::Dns as i32,
                        matcher: Some(envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                            match_pattern: Some(
                                envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                                    name.clone(),
                                ),
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ))
    });
    tls::CommonTlsContext {
        tls_certificates,
        validation_context_type,
        ..Default::default()
    }
}

/// Puts a listener's `tls` on its filter chain: STRICT takes TLS only; PERMISSIVE also
/// takes plain connections (a TLS inspector tells them apart); with `validation`, the
/// caller must show a certificate it trusts (mutual TLS). DISABLED changes nothing.
pub(super) fn listener_tls(
    l: &mut listener::Listener,
    tls_config: &meshmodel::appmesh::ListenerTls,
) {
    let mode = tls_config.mode.as_str();
    if mode == "DISABLED" || l.filter_chains.is_empty() {
        return;
    }
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(common_tls(
            Some(&tls_config.certificate),
            tls_config.validation.as_ref(),
        )),
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: tls_config.validation.is_some(),
        }),
        ..Default::default()
    };
    let socket = core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &context,
        ))),
    };
    let mut plain = l.filter_chains[0].clone();
    let secure = &mut l.filter_chains[0];
    secure.transport_socket = Some(socket);
    if mode == "PERMISSIVE" {
        secure.filter_chain_match = Some(listener::FilterChainMatch {
            transport_protocol: "tls".to_owned(),
            ..Default::default()
        });
        plain.filter_chain_match = Some(listener::FilterChainMatch {
            transport_protocol: "raw_buffer".to_owned(),
            ..Default::default()
        });
        l.filter_chains.push(plain);
        l.listener_filters.push(listener::ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_owned(),
            config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
            ))),
            ..Default::default()
        });
    }
}

/// Puts a client policy's TLS on an egress cluster to a node listening on `port`, unless
/// the policy is not enforced or names other ports.
pub(super) fn cluster_tls(
    c: &mut cluster::Cluster,
    policy: &meshmodel::appmesh::ClientPolicyTls,
    port: Option<i64>,
) {
    if policy.enforce == Some(false)
        || (!policy.ports.is_empty() && !port.is_some_and(|p| policy.ports.contains(&p)))
    {
        return;
    }
    let context = tls::UpstreamTlsContext {
        common_tls_context: Some(common_tls(
            policy.certificate.as_ref(),
            Some(&policy.validation),
        )),
        ..Default::default()
    };
    c.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &context,
        ))),
    });
}
