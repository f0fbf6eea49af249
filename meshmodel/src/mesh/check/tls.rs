//! TLS: a listener's certificate and validation, a client policy's, the files they name.

use crate::appmesh::{ClientPolicy, ListenerTls, TlsCertificate, TlsValidation};
use crate::problem::{Problem, join};

use crate::mesh::check::{check_path, range};
use crate::mesh::limits;

pub(crate) fn check_listener_tls(p: &mut Vec<Problem>, origin: &str, at: &str, tls: &ListenerTls) {
    if !matches!(tls.mode.as_str(), "STRICT" | "PERMISSIVE" | "DISABLED") {
        p.push(Problem::new(
            origin,
            join(at, "mode"),
            format!("`{}` is not STRICT, PERMISSIVE or DISABLED", tls.mode),
        ));
    }
    check_certificate(p, origin, &join(at, "certificate"), &tls.certificate, true);
    if let Some(v) = &tls.validation {
        check_validation(p, origin, &join(at, "validation"), v);
    }
}

pub(crate) fn check_client_policy(
    p: &mut Vec<Problem>,
    origin: &str,
    at: &str,
    policy: &ClientPolicy,
) {
    let Some(tls) = &policy.tls else { return };
    let at = join(at, "tls");
    for (i, port) in tls.ports.iter().enumerate() {
        range(p, origin, &format!("{at}.ports[{i}]"), *port, limits::PORT);
    }
    if let Some(cert) = &tls.certificate {
        check_certificate(p, origin, &join(&at, "certificate"), cert, false);
    }
    check_validation(p, origin, &join(&at, "validation"), &tls.validation);
}

/// Where Envoy reads TLS material from: files on its machine. ACM and SDS sources are
/// refused by name (this control plane serves neither).
pub(crate) fn check_certificate(
    p: &mut Vec<Problem>,
    origin: &str,
    at: &str,
    cert: &TlsCertificate,
    acm_allowed_by_app_mesh: bool,
) {
    let given = [cert.file.is_some(), cert.acm.is_some(), cert.sds.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        p.push(Problem::new(
            origin,
            at,
            if acm_allowed_by_app_mesh {
                "give exactly one of file, acm and sds"
            } else {
                "give exactly one of file and sds"
            },
        ));
    }
    if cert.acm.is_some() {
        p.push(Problem::new(
            origin,
            join(at, "acm"),
            "ACM certificates are not supported here (App Mesh exported them to its Envoys; this control plane does not): give certificate.file",
        ));
    }
    if cert.sds.is_some() {
        p.push(Problem::new(
            origin,
            join(at, "sds"),
            "SDS certificate sources are not served by this control plane: give certificate.file",
        ));
    }
    if let Some(file) = &cert.file {
        check_path(
            p,
            origin,
            &join(at, "file.certificateChain"),
            &file.certificate_chain,
        );
        check_path(p, origin, &join(at, "file.privateKey"), &file.private_key);
    }
}

pub(crate) fn check_validation(p: &mut Vec<Problem>, origin: &str, at: &str, v: &TlsValidation) {
    let trust = &v.trust;
    let at_trust = join(at, "trust");
    let given = [
        trust.file.is_some(),
        trust.acm.is_some(),
        trust.sds.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        p.push(Problem::new(
            origin,
            &at_trust,
            "give exactly one of file, acm and sds",
        ));
    }
    if trust.acm.is_some() {
        p.push(Problem::new(
            origin,
            join(&at_trust, "acm"),
            "trust in ACM Private CA authorities is not supported here: give trust.file with their certificates",
        ));
    }
    if trust.sds.is_some() {
        p.push(Problem::new(
            origin,
            join(&at_trust, "sds"),
            "SDS trust sources are not served by this control plane: give trust.file",
        ));
    }
    if let Some(file) = &trust.file {
        check_path(
            p,
            origin,
            &join(&at_trust, "file.certificateChain"),
            &file.certificate_chain,
        );
    }
    if let Some(names) = &v.subject_alternative_names {
        if names.names.exact.is_empty() || names.names.exact.iter().any(String::is_empty) {
            p.push(Problem::new(
                origin,
                join(at, "subjectAlternativeNames.match.exact"),
                "give one or more names, none empty",
            ));
        }
    }
}
