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
        check_validation(p, origin, &join(at, "validation"), v, false);
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
    check_validation(p, origin, &join(&at, "validation"), &tls.validation, true);
}

/// Where Envoy gets a certificate and its key: files on its machine, a private certificate
/// in ACM (the control plane exports it and serves it over SDS; App Mesh takes these on
/// listeners only), or a secret of the SDS server beside the Envoy.
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
    if let Some(acm) = &cert.acm {
        if !acm_allowed_by_app_mesh {
            p.push(Problem::new(
                origin,
                join(at, "acm"),
                "App Mesh takes ACM certificates on listeners only; a client's certificate comes from file or sds",
            ));
        } else if let Err(why) = acm_arn(&acm.certificate_arn, "acm", "certificate") {
            p.push(Problem::new(origin, join(at, "acm.certificateArn"), why));
        }
    }
    if let Some(sds) = &cert.sds {
        check_secret_name(p, origin, &join(at, "sds.secretName"), &sds.secret_name);
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

pub(crate) fn check_validation(
    p: &mut Vec<Problem>,
    origin: &str,
    at: &str,
    v: &TlsValidation,
    acm_allowed_by_app_mesh: bool,
) {
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
    if let Some(acm) = &trust.acm {
        let at = join(&at_trust, "acm.certificateAuthorityArns");
        if !acm_allowed_by_app_mesh {
            p.push(Problem::new(
                origin,
                join(&at_trust, "acm"),
                "App Mesh takes trust in ACM Private CA authorities in client policies only; a listener's trust comes from file or sds",
            ));
        } else if acm.certificate_authority_arns.is_empty()
            || acm.certificate_authority_arns.len() > 3
        {
            p.push(Problem::new(
                origin,
                at,
                format!(
                    "give 1 to 3 certificate authority ARNs (not {})",
                    acm.certificate_authority_arns.len()
                ),
            ));
        } else {
            for (i, arn) in acm.certificate_authority_arns.iter().enumerate() {
                if let Err(why) = acm_arn(arn, "acm-pca", "certificate-authority") {
                    p.push(Problem::new(origin, format!("{at}[{i}]"), why));
                }
            }
        }
    }
    if let Some(sds) = &trust.sds {
        check_secret_name(
            p,
            origin,
            &join(&at_trust, "sds.secretName"),
            &sds.secret_name,
        );
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

/// An SDS secret's name: what the Envoy asks its SDS server for.
fn check_secret_name(p: &mut Vec<Problem>, origin: &str, at: &str, name: &str) {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        p.push(Problem::new(
            origin,
            at,
            "give the secret's name: 1 to 255 characters, none a control character",
        ));
    }
}

/// Whether `arn` is an ARN of `service`'s `kind` of resource
/// (`arn:PARTITION:SERVICE:REGION:ACCOUNT:KIND/ID`); why not, naming it, when it is not.
pub(crate) fn acm_arn(arn: &str, service: &str, kind: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let expected = format!("arn:aws:{service}:REGION:ACCOUNT:{kind}/ID");
    let [scheme, partition, svc, region, account, resource] = parts[..] else {
        return Err(format!("`{arn}` is not an ARN ({expected})"));
    };
    let id = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'));
    if scheme != "arn" || partition.is_empty() || region.is_empty() {
        return Err(format!("`{arn}` is not an ARN ({expected})"));
    }
    if svc != service || id.is_none() {
        let what = match (svc, resource.split('/').next()) {
            ("acm", Some("certificate")) => "an ACM certificate".to_owned(),
            ("acm-pca", Some("certificate-authority")) if resource.contains("/certificate/") => {
                "a certificate issued by a Private CA (not one held in ACM)".to_owned()
            }
            ("acm-pca", Some("certificate-authority")) => "an AWS Private CA authority".to_owned(),
            (svc, Some(kind)) => format!("a `{kind}` of `{svc}`"),
            (svc, None) => format!("a resource of `{svc}`"),
        };
        return Err(format!("`{arn}` names {what}; give {expected}"));
    }
    let id = id.unwrap_or_default();
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{arn}`: the account `{account}` is not 12 digits"));
    }
    if id.is_empty() || id.contains('/') {
        return Err(format!("`{arn}` names no single {kind}; give {expected}"));
    }
    Ok(())
}
