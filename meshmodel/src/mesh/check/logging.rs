//! Access logging (virtual nodes and gateways): a file path, and a format whose command
//! operators Envoy knows, written as Envoy parses them, so that no format the API accepts
//! makes an Envoy refuse its listeners.

use crate::appmesh::{Logging, LoggingFormat};
use crate::problem::Problem;
use crate::problem::join;

/// The command operators a format may use without parameters (some also take them, as
/// `START_TIME(%s)`): those Envoy has had since before App Mesh's last sidecar (1.29), so
/// that the format works in its Envoys and in current ones alike.
pub const LOG_OPERATORS: &[&str] = &[
    "START_TIME",
    "REQUEST_HEADERS_BYTES",
    "BYTES_RECEIVED",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "PROTOCOL",
    "UPSTREAM_PROTOCOL",
    "RESPONSE_CODE",
    "RESPONSE_CODE_DETAILS",
    "CONNECTION_TERMINATION_DETAILS",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "DURATION",
    "REQUEST_DURATION",
    "REQUEST_TX_DURATION",
    "RESPONSE_DURATION",
    "RESPONSE_TX_DURATION",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "ROUNDTRIP_DURATION",
    "RESPONSE_FLAGS",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_PORT",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_VERSION",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_PEER_DNS_SAN",
    "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_PEER_IP_SAN",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "CONNECTION_ID",
    "UPSTREAM_CONNECTION_ID",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
    "VIRTUAL_CLUSTER_NAME",
    "HOSTNAME",
    "LOCAL_REPLY_BODY",
    "FILTER_CHAIN_NAME",
    "ACCESS_LOG_TYPE",
    "STREAM_ID",
    "UNIQUE_ID",
    "GRPC_STATUS",
    "GRPC_STATUS_NUMBER",
];

/// The command operators that need a parameter (`REQ(:PATH)`); those of
/// [`LOG_OPERATORS_WITH_LENGTH`] may take a length after it (`REQ(USER-AGENT):20`).
pub const LOG_OPERATORS_WITH_PARAMETER: &[&str] = &[
    "REQ",
    "RESP",
    "TRAILER",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "ENVIRONMENT",
];

/// The command operators whose value may be cut to a length (`:N` after the parameter).
pub const LOG_OPERATORS_WITH_LENGTH: &[&str] = &[
    "REQ",
    "RESP",
    "TRAILER",
    "DYNAMIC_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "ENVIRONMENT",
];

/// The operators whose parameter names headers: `NAME` or `NAME?ALTERNATIVE`.
const HEADER_OPERATORS: &[&str] = &["REQ", "RESP", "TRAILER"];

/// The longest access log path, as App Mesh takes it.
const PATH_MAX: usize = 255;

pub(crate) fn check_logging(p: &mut Vec<Problem>, origin: &str, at: &str, logging: &Logging) {
    let Some(file) = logging.access_log.as_ref().and_then(|a| a.file.as_ref()) else {
        return;
    };
    let at = join(at, "accessLog.file");
    if file.path.is_empty() || file.path.chars().count() > PATH_MAX || file.path.contains('\0') {
        p.push(Problem::new(
            origin,
            join(&at, "path"),
            format!("a path is 1 to {PATH_MAX} characters, without NUL"),
        ));
    }
    if let Some(format) = &file.format {
        check_format(p, origin, &join(&at, "format"), format);
    }
}

fn check_format(p: &mut Vec<Problem>, origin: &str, at: &str, format: &LoggingFormat) {
    if format.text.is_some() != format.json.is_empty() {
        p.push(Problem::new(
            origin,
            at,
            "give exactly one of text and json",
        ));
    }
    if let Some(text) = &format.text {
        if let Err(why) = parse_format(text) {
            p.push(Problem::new(origin, join(at, "text"), why));
        }
    }
    for (i, entry) in format.json.iter().enumerate() {
        if entry.key.is_empty() {
            p.push(Problem::new(
                origin,
                format!("{at}.json[{i}].key"),
                "must not be empty",
            ));
        }
        if let Err(why) = parse_format(&entry.value) {
            p.push(Problem::new(origin, format!("{at}.json[{i}].value"), why));
        }
    }
}

/// Reads a format string as Envoy does: text, `%%` for a percent sign, and command
/// operators `%NAME%`, `%NAME(PARAMETER)%` or, for those that need a parameter,
/// `%NAME(PARAMETER):LENGTH%`. Why not, when it is not one Envoy takes.
pub fn parse_format(text: &str) -> Result<(), String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'%') {
            i += 2;
            continue;
        }
        let start = i;
        i += 1;
        let name: String = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || **c == '_')
            .collect();
        i += name.chars().count();
        let malformed = || {
            format!(
                "a `%` at character {} starts no command operator (`%NAME%`, `%NAME(PARAMETER)%`; `%%` for a percent sign)",
                start + 1
            )
        };
        if name.is_empty() {
            return Err(malformed());
        }
        let mut parameter = None;
        if chars.get(i) == Some(&'(') {
            // The parameter runs to the first `)` (it may hold `%`, as START_TIME's does).
            let close = (i + 1..chars.len()).find(|&j| chars[j] == ')');
            let Some(close) = close else {
                return Err(malformed());
            };
            let inside: String = chars[i + 1..close].iter().collect();
            // Envoy reads a parameter on one line.
            if inside.chars().any(char::is_control) {
                return Err(format!(
                    "`%{name}(…)%` at character {}: a parameter holds no line break or other control character",
                    start + 1
                ));
            }
            parameter = Some(inside);
            i = close + 1;
        }
        let needs = LOG_OPERATORS_WITH_PARAMETER.contains(&name.as_str());
        if chars.get(i) == Some(&':') {
            let digits = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !LOG_OPERATORS_WITH_LENGTH.contains(&name.as_str()) || digits == 0 {
                return Err(format!(
                    "`%{name}…:` at character {}: a length is given as `:N` after the parameter of {}",
                    start + 1,
                    LOG_OPERATORS_WITH_LENGTH.join(", ")
                ));
            }
            i += 1 + digits;
        }
        if chars.get(i) != Some(&'%') {
            return Err(malformed());
        }
        i += 1;
        if needs {
            if parameter.as_deref().is_none_or(|p| p.trim().is_empty()) {
                return Err(format!(
                    "`%{name}%` at character {} needs a parameter, as `%{name}(NAME)%`",
                    start + 1
                ));
            }
            let header = |h: &str| {
                let h = h.strip_prefix(':').unwrap_or(h);
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
            };
            let filter_state = |p: &str| {
                let mut parts = p.splitn(3, ':');
                let _key = parts.next();
                match (parts.next(), parts.next()) {
                    (None, _) | (Some("PLAIN" | "TYPED"), None) => true,
                    (Some("FIELD"), Some(field)) => !field.is_empty(),
                    _ => false,
                }
            };
            if name.ends_with("FILTER_STATE")
                && !filter_state(parameter.as_deref().unwrap_or_default())
            {
                return Err(format!(
                    "`%{name}(…)%` at character {}: give `KEY`, `KEY:PLAIN`, `KEY:TYPED` or `KEY:FIELD:NAME`",
                    start + 1
                ));
            }
            if HEADER_OPERATORS.contains(&name.as_str())
                && !parameter
                    .as_deref()
                    .unwrap_or_default()
                    .split('?')
                    .all(header)
            {
                return Err(format!(
                    "`%{name}(…)%` at character {} names no header: give `NAME` or `NAME?ALTERNATIVE` (letters, digits, `-` and the like; `:` first for a pseudo-header)",
                    start + 1
                ));
            }
        } else if !LOG_OPERATORS.contains(&name.as_str()) {
            return Err(format!(
                "`%{name}%` at character {} is not a command operator Envoy knows (those of Envoy 1.29 and later are taken)",
                start + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_as_envoy_reads_them() {
        for ok in [
            "",
            "plain",
            "100%% sure",
            "[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):40% %RESPONSE_CODE%\n",
            "%START_TIME(%Y-%m-%dT%H:%M:%S)%",
            "%DYNAMIC_METADATA(a:b)% %FILTER_STATE(x:PLAIN)%",
            "%DURATION()%",
        ] {
            assert_eq!(parse_format(ok), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            ("%BOGUS%", "not a command operator"),
            ("%REQ()%", "needs a parameter"),
            ("%REQ( )%", "needs a parameter"),
            ("%REQ%", "needs a parameter"),
            ("50%", "starts no command operator"),
            ("% %", "starts no command operator"),
            ("%START_TIME%%", "starts no command operator"),
            ("%req(x)%", "starts no command operator"),
            ("%REQ(:PATH", "starts no command operator"),
            ("%DURATION:5%", "a length is given"),
            ("%REQ(x):%", "a length is given"),
            ("%UPSTREAM_METADATA(a):5%", "a length is given"),
            ("%REQ(x y)%", "names no header"),
            ("%REQ(a?)%", "names no header"),
            ("%DYNAMIC_METADATA(a\nb)%", "no line break"),
            ("%FILTER_STATE(a:JSON)%", "KEY:PLAIN"),
        ] {
            let said = parse_format(bad).expect_err(bad);
            assert!(said.contains(says), "{bad:?}: {said}");
        }
    }
}
