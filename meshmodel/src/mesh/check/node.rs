//! Virtual nodes (listeners, health checks, backends, service discovery) and virtual
//! services (their provider).

use crate::appmesh::{
    HealthCheckPolicy, Listener, Protocol, VirtualNodeInput, VirtualServiceInput,
};
use crate::problem::{Problem, join};
use std::collections::BTreeSet;

use crate::mesh::check::logging::check_logging;
use crate::mesh::check::tls::{check_client_policy, check_listener_tls};
use crate::mesh::check::{check_ip_preference, check_listeners, check_name, known, range};
use crate::mesh::{Mesh, limits};

impl Mesh {
    pub(crate) fn check_virtual_node(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        node: &VirtualNodeInput,
    ) {
        check_name(p, origin, "virtualNodeName", &node.virtual_node_name);
        check_listeners(
            p,
            origin,
            node.spec.listeners.iter().map(|l| &l.port_mapping),
        );
        for (i, listener) in node.spec.listeners.iter().enumerate() {
            check_listener(p, origin, &format!("spec.listeners[{i}]"), listener);
            if let Some(tls) = &listener.tls {
                check_listener_tls(p, origin, &format!("spec.listeners[{i}].tls"), tls);
            }
        }
        if let Some(logging) = &node.spec.logging {
            check_logging(p, origin, "spec.logging", logging);
        }
        if let Some(policy) = node
            .spec
            .backend_defaults
            .as_ref()
            .and_then(|d| d.client_policy.as_ref())
        {
            check_client_policy(p, origin, "spec.backendDefaults.clientPolicy", policy);
        }
        for (i, backend) in node.spec.backends.iter().enumerate() {
            if let Some(policy) = &backend.virtual_service.client_policy {
                check_client_policy(
                    p,
                    origin,
                    &format!("spec.backends[{i}].virtualService.clientPolicy"),
                    policy,
                );
            }
        }
        if !node.spec.listeners.is_empty() && node.spec.service_discovery.is_none() {
            p.push(Problem::new(
                origin,
                "spec.serviceDiscovery",
                "a virtual node with a listener needs service discovery (dns or awsCloudMap)",
            ));
        }
        if let Some(sd) = &node.spec.service_discovery {
            let preferences = [
                (
                    "spec.serviceDiscovery.dns.ipPreference",
                    sd.dns.as_ref().and_then(|d| d.ip_preference.as_ref()),
                ),
                (
                    "spec.serviceDiscovery.awsCloudMap.ipPreference",
                    sd.aws_cloud_map
                        .as_ref()
                        .and_then(|d| d.ip_preference.as_ref()),
                ),
            ];
            for (path, preference) in preferences {
                check_ip_preference(p, origin, path, preference);
            }
            if let Some(dns) = &sd.dns {
                check_hostname(
                    p,
                    origin,
                    "spec.serviceDiscovery.dns.hostname",
                    &dns.hostname,
                );
            }
            if sd.dns.is_some() == sd.aws_cloud_map.is_some() {
                p.push(Problem::new(
                    origin,
                    "spec.serviceDiscovery",
                    "give exactly one of dns and awsCloudMap",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, backend) in node.spec.backends.iter().enumerate() {
            let name = &backend.virtual_service.virtual_service_name;
            let path = format!("spec.backends[{i}].virtualService.virtualServiceName");
            if !seen.insert(name) {
                p.push(Problem::new(
                    origin,
                    &path,
                    format!("backend `{name}` is listed twice"),
                ));
            } else if !self.backends_may_dangle && !self.virtual_services.contains_key(name) {
                p.push(Problem::new(
                    origin,
                    &path,
                    format!(
                        "virtual service `{name}` does not exist (known: {})",
                        known(self.virtual_services.keys())
                    ),
                ));
            }
        }
    }

    pub(crate) fn check_virtual_service(
        &self,
        p: &mut Vec<Problem>,
        origin: &str,
        vs: &VirtualServiceInput,
    ) {
        let name = &vs.virtual_service_name;
        if name.is_empty() || name.len() > limits::NAME_MAX {
            p.push(Problem::new(
                origin,
                "virtualServiceName",
                "must be 1 to 255 characters",
            ));
        }
        let Some(provider) = &vs.spec.provider else {
            return;
        };
        match (&provider.virtual_router, &provider.virtual_node) {
            (Some(r), None) => {
                if !self.virtual_routers.contains_key(&r.virtual_router_name) {
                    p.push(Problem::new(
                        origin,
                        "spec.provider.virtualRouter.virtualRouterName",
                        format!(
                            "virtual router `{}` does not exist (known: {})",
                            r.virtual_router_name,
                            known(self.virtual_routers.keys())
                        ),
                    ));
                }
            }
            (None, Some(n)) => {
                if !self.virtual_nodes.contains_key(&n.virtual_node_name) {
                    p.push(Problem::new(
                        origin,
                        "spec.provider.virtualNode.virtualNodeName",
                        format!(
                            "virtual node `{}` does not exist (known: {})",
                            n.virtual_node_name,
                            known(self.virtual_nodes.keys())
                        ),
                    ));
                }
            }
            _ => p.push(Problem::new(
                origin,
                "spec.provider",
                "give exactly one of virtualRouter and virtualNode",
            )),
        }
    }
}

pub(crate) fn check_listener(p: &mut Vec<Problem>, origin: &str, base: &str, listener: &Listener) {
    if let Some(hc) = &listener.health_check {
        check_health_check(p, origin, &join(base, "healthCheck"), hc);
        check_grpc_health(p, origin, base, hc, listener.port_mapping.protocol);
    }
    if let Some(od) = &listener.outlier_detection {
        let at = join(base, "outlierDetection");
        if od.max_server_errors < 1 {
            p.push(Problem::new(
                origin,
                join(&at, "maxServerErrors"),
                "must be at least 1",
            ));
        }
        range(
            p,
            origin,
            &join(&at, "maxEjectionPercent"),
            od.max_ejection_percent,
            (0, 100),
        );
        for (field, d) in [
            ("interval", od.interval),
            ("baseEjectionDuration", od.base_ejection_duration),
        ] {
            if d.value < 1 {
                p.push(Problem::new(
                    origin,
                    join(&at, &join(field, "value")),
                    "must be at least 1",
                ));
            }
        }
    }
}

/// A gRPC health check goes over HTTP/2: only a grpc or http2 listener's cluster speaks it
/// (Envoy refuses a gRPC health check on any other).
pub(crate) fn check_grpc_health(
    p: &mut Vec<Problem>,
    origin: &str,
    listener: &str,
    hc: &HealthCheckPolicy,
    protocol: Protocol,
) {
    if hc.protocol == Protocol::Grpc && !matches!(protocol, Protocol::Grpc | Protocol::Http2) {
        p.push(Problem::new(
            origin,
            join(listener, "healthCheck.protocol"),
            format!(
                "a grpc health check needs a grpc or http2 listener (this one is {}): Envoy checks gRPC health over HTTP/2",
                protocol.as_str()
            ),
        ));
    }
}

/// A DNS hostname Envoy can resolve: 1 to 253 characters of letters, digits, `-`, `_` and
/// `.` (or an IPv6 address's hex digits and `:`).
fn check_hostname(p: &mut Vec<Problem>, origin: &str, at: &str, hostname: &str) {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if hostname.is_empty() || hostname.len() > 253 {
        p.push(Problem::new(
            origin,
            at,
            "a hostname is 1 to 253 characters",
        ));
    } else if let Some(bad) = hostname.chars().find(|c| !ok(*c)) {
        p.push(Problem::new(
            origin,
            at,
            format!("{bad:?} is not allowed in a hostname (letters, digits, `-`, `_`, `.`)"),
        ));
    }
}

pub(crate) fn check_health_check(
    p: &mut Vec<Problem>,
    origin: &str,
    at: &str,
    hc: &HealthCheckPolicy,
) {
    let checks = [
        ("healthyThreshold", hc.healthy_threshold, limits::THRESHOLD),
        (
            "unhealthyThreshold",
            hc.unhealthy_threshold,
            limits::THRESHOLD,
        ),
        ("timeoutMillis", hc.timeout_millis, limits::HC_TIMEOUT_MS),
        ("intervalMillis", hc.interval_millis, limits::HC_INTERVAL_MS),
    ];
    for (field, value, bounds) in checks {
        range(p, origin, &join(at, field), value, bounds);
    }
    if let Some(port) = hc.port {
        range(p, origin, &join(at, "port"), port, limits::PORT);
    }
    let http = matches!(hc.protocol.as_str(), "http" | "http2");
    match (&hc.path, http) {
        (None, true) => p.push(Problem::new(
            origin,
            join(at, "path"),
            "an http or http2 health check needs a path",
        )),
        (Some(path), true) if !path.starts_with('/') => {
            p.push(Problem::new(
                origin,
                join(at, "path"),
                format!("`{path}` must start with /"),
            ));
        }
        (Some(path), true) if path.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f') => {
            p.push(Problem::new(
                origin,
                join(at, "path"),
                "a path holds no control character but tab (Envoy sends it as a header)",
            ));
        }
        _ => {}
    }
}
