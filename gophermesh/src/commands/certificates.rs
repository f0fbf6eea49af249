//! `gophermesh status`'s certificates: each ACM certificate and Private CA trust the
//! meshes name, who uses it, what it says (subject, issuer, expiry) and its last failure.

use std::fmt::Write as _;

use controlplane::secrets::SecretStatus;
use gophermesh::progress::escape;

/// The certificates section of `gophermesh status` (nothing when no mesh names any).
pub(crate) fn render(out: &mut String, certificates: &[SecretStatus]) {
    if certificates.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ncertificates (served over SDS):");
    for c in certificates {
        let served = if c.served { "served" } else { "NOT SERVED" };
        let users = escape(&c.used_by.join(", "));
        match c.kind.as_str() {
            "mesh-ca" => {
                let _ = writeln!(out, "  mesh CA of {users} ({served})");
            }
            "mesh-certificate" => {
                let _ = writeln!(out, "  mesh certificate of {users} ({served})");
            }
            kind => {
                let what = if kind == "acm-trust" {
                    "trust in"
                } else {
                    "certificate"
                };
                let _ = writeln!(out, "  {what} {} ({served})", escape(&c.name));
                let _ = writeln!(out, "    used by {users}");
            }
        }
        for info in &c.certificates {
            let _ = writeln!(
                out,
                "    {} issued by {}, expires {} (serial {})",
                escape(&info.subject),
                escape(&info.issuer),
                escape(&info.not_after),
                escape(&info.serial)
            );
            if !info.names.is_empty() {
                let _ = writeln!(out, "      names {}", escape(&info.names.join(", ")));
            }
        }
        if let Some(at) = &c.fetched_at {
            let verb = if c.kind == "mesh-certificate" {
                "issued"
            } else {
                "read"
            };
            let _ = writeln!(out, "    {verb} {}", escape(at));
        }
        if let Some(e) = &c.error {
            let _ = writeln!(out, "    last read failed: {}", escape(e));
        }
        for w in &c.warnings {
            let _ = writeln!(out, "    WARNING: {}", escape(w));
        }
    }
}
