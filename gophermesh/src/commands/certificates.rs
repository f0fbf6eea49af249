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
        let what = match c.kind.as_str() {
            "acm-trust" => "trust in",
            _ => "certificate",
        };
        let served = if c.served { "served" } else { "NOT SERVED" };
        let _ = writeln!(out, "  {what} {} ({served})", escape(&c.name));
        let _ = writeln!(out, "    used by {}", escape(&c.used_by.join(", ")));
        for info in &c.certificates {
            let _ = writeln!(
                out,
                "    {} issued by {}, expires {} (serial {})",
                escape(&info.subject),
                escape(&info.issuer),
                escape(&info.not_after),
                escape(&info.serial)
            );
        }
        if let Some(at) = &c.fetched_at {
            let _ = writeln!(out, "    read {}", escape(at));
        }
        if let Some(e) = &c.error {
            let _ = writeln!(out, "    last read failed: {}", escape(e));
        }
    }
}
