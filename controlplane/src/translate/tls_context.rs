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

/// The cluster of the SDS server beside the Envoy (SPIRE's agent, say), on the unix socket
/// the sidecar's `APPMESH_SDS_SOCKET_PATH` names: App Mesh's name for it, which the
/// bootstraps gophermesh writes use too.
pub const LOCAL_SDS_CLUSTER: &str = "static_cluster_sds_unix_socket";

/// The name of the secret that holds the certificates of the Private CA authorities
/// `arns` (one ARN, or several joined by commas, in the order given).
pub fn trust_secret_name(arns: &[String]) -> String {
    arns.join(",")
}

/// A secret served over ADS by this control plane (ACM material, named by its ARN; the
/// mesh's own certificates).
pub(super) fn from_control_plane(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(super::ads_source()),
    }
}

/// A secret of the SDS server beside the Envoy, on its unix socket.
fn from_local_sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(core::ConfigSource {
            resource_api_version: core::ApiVersion::V3 as i32,
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::ApiConfigSource(
                    core::ApiConfigSource {
                        api_type: core::api_config_source::ApiType::Grpc as i32,
                        transport_api_version: core::ApiVersion::V3 as i32,
                        grpc_services: vec![core::GrpcService {
                            target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                                core::grpc_service::EnvoyGrpc {
                                    cluster_name: LOCAL_SDS_CLUSTER.to_owned(),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
    }
}

/// A certificate matcher for a name of `kind` (DNS, URI), exactly.
pub(super) fn san_exactly(
    kind: tls::subject_alt_name_matcher::SanType,
    name: &str,
) -> tls::SubjectAltNameMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        StringMatcher, string_matcher::MatchPattern,
    };
    tls::SubjectAltNameMatcher {
        san_type: kind as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(name.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// TLS material common to both sides: the certificate to show (from files, ACM or the
/// local SDS server) and the peers to trust, with the names they must carry. Trust from
/// ACM or SDS arrives as a secret, beside the names checked here.
fn common_tls(
    certificate: Option<&meshmodel::appmesh::TlsCertificate>,
    validation: Option<&meshmodel::appmesh::TlsValidation>,
) -> tls::CommonTlsContext {
    use tls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    let mut context = tls::CommonTlsContext::default();
    if let Some(c) = certificate {
        if let Some(f) = &c.file {
            context.tls_certificates.push(tls::TlsCertificate {
                certificate_chain: Some(file_source(&f.certificate_chain)),
                private_key: Some(file_source(&f.private_key)),
                ..Default::default()
            });
        } else if let Some(acm) = &c.acm {
            context
                .tls_certificate_sds_secret_configs
                .push(from_control_plane(&acm.certificate_arn));
        } else if let Some(sds) = &c.sds {
            context
                .tls_certificate_sds_secret_configs
                .push(from_local_sds(&sds.secret_name));
        }
    }
    let Some(v) = validation else {
        return context;
    };
    let names = v
        .subject_alternative_names
        .as_ref()
        .map(|n| n.names.exact.as_slice())
        .unwrap_or_default();
    let mut checks = tls::CertificateValidationContext {
        match_typed_subject_alt_names: names
            .iter()
            .map(|n| san_exactly(tls::subject_alt_name_matcher::SanType::Dns, n))
            .collect(),
        ..Default::default()
    };
    let trust = &v.trust;
    context.validation_context_type = if let Some(file) = &trust.file {
        checks.trusted_ca = Some(file_source(&file.certificate_chain));
        Some(ValidationContextType::ValidationContext(checks))
    } else {
        let secret = match (&trust.acm, &trust.sds) {
            (Some(acm), _) => {
                from_control_plane(&trust_secret_name(&acm.certificate_authority_arns))
            }
            (None, Some(sds)) => from_local_sds(&sds.secret_name),
            (None, None) => return context,
        };
        Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(checks),
                validation_context_sds_secret_config: Some(secret),
                ..Default::default()
            },
        ))
    };
    context
}

/// Puts a listener's `tls` on its filter chain: STRICT takes TLS only; PERMISSIVE also
/// takes plain connections (a TLS inspector tells them apart); with `validation`, the
/// caller must show a certificate it trusts (mutual TLS). DISABLED changes nothing.
pub(super) fn listener_tls(
    l: &mut listener::Listener,
    tls_config: &meshmodel::appmesh::ListenerTls,
) {
    let mode = tls_config.mode.as_str();
    if mode == "DISABLED" {
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
    downstream_tls(l, &context, mode == "PERMISSIVE");
}

/// Puts `context` on a listener's filter chain: TLS only, or (`permissive`) TLS and plain
/// connections on two chains a TLS inspector tells apart.
pub(super) fn downstream_tls(
    l: &mut listener::Listener,
    context: &tls::DownstreamTlsContext,
    permissive: bool,
) {
    if l.filter_chains.is_empty() {
        return;
    }
    let socket = core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            context,
        ))),
    };
    let mut plain = l.filter_chains[0].clone();
    let secure = &mut l.filter_chains[0];
    secure.transport_socket = Some(socket);
    if permissive {
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
    upstream_tls(c, &context);
}

/// Makes cluster `c` speak TLS with `context`.
pub(super) fn upstream_tls(c: &mut cluster::Cluster, context: &tls::UpstreamTlsContext) {
    c.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            context,
        ))),
    });
}

/// What a piece of ACM material is: a private certificate (with its key) or the
/// certificates of Private CA authorities to trust.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AcmMaterial {
    Certificate(String),
    Trust(Vec<String>),
}

/// The ACM material one of a mesh's Envoys is configured with, by the secret's name,
/// with the nodes and gateways (`NODE`, `virtualGateway/NAME`) that use it.
pub fn acm_material(
    mesh: &meshmodel::Mesh,
) -> std::collections::BTreeMap<String, (AcmMaterial, std::collections::BTreeSet<String>)> {
    use meshmodel::appmesh::{ClientPolicy, ListenerTls};
    let mut found = std::collections::BTreeMap::new();
    let mut add = |secret: String, what: AcmMaterial, user: &str| {
        found
            .entry(secret)
            .or_insert_with(|| (what, std::collections::BTreeSet::new()))
            .1
            .insert(user.to_owned());
    };
    let mut listener = |tls: Option<&ListenerTls>, user: &str| {
        if let Some(acm) = tls.and_then(|t| t.certificate.acm.as_ref()) {
            let arn = acm.certificate_arn.clone();
            add(arn.clone(), AcmMaterial::Certificate(arn), user);
        }
    };
    let mut policies: Vec<(&ClientPolicy, String)> = Vec::new();
    for (name, node) in &mesh.virtual_nodes {
        let spec = &node.value.spec;
        for l in &spec.listeners {
            listener(l.tls.as_ref(), name);
        }
        let backends = spec
            .backends
            .iter()
            .filter_map(|b| b.virtual_service.client_policy.as_ref());
        let defaults = spec
            .backend_defaults
            .as_ref()
            .and_then(|d| d.client_policy.as_ref());
        policies.extend(
            defaults
                .into_iter()
                .chain(backends)
                .map(|p| (p, name.clone())),
        );
    }
    for (name, gateway) in &mesh.virtual_gateways {
        let user = format!("{}{name}", super::GATEWAY_PREFIX);
        let spec = &gateway.value.spec;
        for l in &spec.listeners {
            listener(l.tls.as_ref(), &user);
        }
        let defaults = spec
            .backend_defaults
            .as_ref()
            .and_then(|d| d.client_policy.as_ref());
        policies.extend(defaults.map(|p| (p, user.clone())));
    }
    for (policy, user) in policies {
        let Some(tls) = &policy.tls else { continue };
        if let Some(acm) = &tls.validation.trust.acm {
            let arns = acm.certificate_authority_arns.clone();
            add(trust_secret_name(&arns), AcmMaterial::Trust(arns), &user);
        }
    }
    found
}
