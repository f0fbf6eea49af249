//! AWS Signature Version 4, checked on the server side: the App Mesh API accepts a request
//! only when its `Authorization` header was made with the configured secret key, for
//! service `appmesh`, within 15 minutes of now.
//!
//! The canonical request is rebuilt from what arrived, as the AWS SDKs build it for a
//! non-S3 service: the path URI-encoded once more, the query parameters sorted and
//! encoded, the signed headers lowercased with their values trimmed, and the SHA-256 of
//! the body.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The credentials requests must be signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The region signatures must be scoped to (the region the API's ARNs name).
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("region", &self.region)
            .finish()
    }
}

/// Why a request was refused, with the error type AWS answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

fn refuse(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// What the verifier needs of a request.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header, names in any case.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Refusal> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        refuse(
            "IncompleteSignatureException",
            "Authorization header must use AWS4-HMAC-SHA256",
        )
    })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(|| {
            refuse(
                "IncompleteSignatureException",
                format!(
                    "Authorization header part `{}` is not KEY=VALUE",
                    part.trim()
                ),
            )
        })?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        refuse(
            "IncompleteSignatureException",
            format!("Authorization header lacks {what}"),
        )
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(refuse(
            "IncompleteSignatureException",
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(refuse(
            "IncompleteSignatureException",
            "Credential must end with aws4_request",
        ));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// RFC 3986 encoding as SigV4 wants it: everything but `A-Za-z0-9-_.~` (and `/` when
/// `keep_slash`) becomes `%XX`.
fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes. A `%` not followed by two hex digits is kept as it is; the
/// second value says whether there was one.
pub(crate) fn percent_decode(input: &str) -> (Vec<u8>, bool) {
    let hex_value = |b: u8| char::from(b).to_digit(16);
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut malformed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digit = |j: usize| bytes.get(j).and_then(|b| hex_value(*b));
            if let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            malformed = true;
        }
        out.push(bytes[i]);
        i += 1;
    }
    (out, malformed)
}

fn decoded(input: &str) -> String {
    String::from_utf8_lossy(&percent_decode(input).0).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&decoded(k), false),
                uri_encode(&decoded(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signature of `request` made with `secret` (everything but the comparison).
fn signature(
    request: &SignedRequest<'_>,
    auth: &Authorization<'_>,
    amz_date: &str,
    secret: &str,
) -> Result<String, Refusal> {
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let value = request.header(name).ok_or_else(|| {
            refuse(
                "IncompleteSignatureException",
                format!("signed header `{name}` is not in the request"),
            )
        })?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(canonical_headers, "{}:{value}", name.to_ascii_lowercase());
    }
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        uri_encode(path, true),
        canonical_query(request.query),
        canonical_headers,
        auth.signed_headers.join(";"),
        hex(&Sha256::digest(request.body))
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    Ok(hex(&hmac(&k_signing, string_to_sign.as_bytes())))
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    let days = days.checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Checks `request` against `creds` at time `now`.
pub fn verify(
    request: &SignedRequest<'_>,
    creds: &Credentials,
    now: SystemTime,
) -> Result<(), Refusal> {
    let Some(value) = request.header("authorization") else {
        return Err(refuse(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: this API needs requests signed with AWS Signature Version 4",
        ));
    };
    let auth = parse_authorization(value)?;
    if auth.access_key_id != creds.access_key_id {
        return Err(refuse(
            "UnrecognizedClientException",
            "The security token included in the request is invalid: unknown access key id",
        ));
    }
    if auth.service != "appmesh" {
        return Err(refuse(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to service appmesh, not `{}`",
                auth.service
            ),
        ));
    }
    if auth.region != creds.region {
        return Err(refuse(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region: this API serves `{}`, not `{}`",
                creds.region,
                auth.region.escape_debug()
            ),
        ));
    }
    if !auth
        .signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("host"))
    {
        return Err(refuse(
            "InvalidSignatureException",
            "the host header must be signed",
        ));
    }
    let amz_date = request.header("x-amz-date").ok_or_else(|| {
        refuse(
            "IncompleteSignatureException",
            "X-Amz-Date header is missing",
        )
    })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        refuse(
            "IncompleteSignatureException",
            format!("X-Amz-Date `{amz_date}` is not YYYYMMDDTHHMMSSZ"),
        )
    })?;
    if !amz_date.starts_with(auth.date) {
        return Err(refuse(
            "InvalidSignatureException",
            "Credential date does not match X-Amz-Date",
        ));
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    if now.abs_diff(signed_at) > 15 * 60 {
        return Err(refuse(
            "InvalidSignatureException",
            "Signature expired: X-Amz-Date is more than 15 minutes from the server's time",
        ));
    }
    let expected = signature(request, &auth, amz_date, &creds.secret_access_key)?;
    let matches = expected.len() == auth.signature.len()
        && expected
            .bytes()
            .zip(auth.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !matches {
        return Err(refuse(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (IAM ListUsers, from the SigV4 documentation).
    #[test]
    fn the_documented_example_verifies() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: vec![
                ("Host".into(), "iam.amazonaws.com".into()),
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("X-Amz-Date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let auth = Authorization {
            access_key_id: "AKIDEXAMPLE",
            date: "20150830",
            region: "us-east-1",
            service: "iam",
            signed_headers: vec!["content-type", "host", "x-amz-date"],
            signature: "",
        };
        let sig = signature(
            &request,
            &auth,
            "20150830T123600Z",
            &creds.secret_access_key,
        )
        .expect("signed");
        assert_eq!(
            sig,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn amz_dates_are_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30T12:36"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }

    #[test]
    fn refusals_name_the_reason() {
        let creds = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: "s".into(),
            region: "us-east-1".into(),
        };
        let mut request = SignedRequest {
            method: "GET",
            path: "/v20190125/meshes",
            query: "",
            headers: vec![],
            body: b"",
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(
            verify(&request, &creds, now).map_err(|r| r.kind),
            Err("MissingAuthenticationTokenException")
        );
        request.headers = vec![("authorization".into(), "Basic abc".into())];
        assert_eq!(
            verify(&request, &creds, now).map_err(|r| r.kind),
            Err("IncompleteSignatureException")
        );
        request.headers = vec![
            ("authorization".into(), "AWS4-HMAC-SHA256 Credential=OTHER/20150830/us-east-1/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".into()),
        ];
        assert_eq!(
            verify(&request, &creds, now).map_err(|r| r.kind),
            Err("UnrecognizedClientException")
        );
        request.headers = vec![
            ("authorization".into(), "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".into()),
            ("host".into(), "x".into()),
            ("x-amz-date".into(), "20150830T123600Z".into()),
        ];
        let refusal = verify(&request, &creds, now).expect_err("bad signature");
        // Signed for another region: refused before the signature is even compared.
        let other_region = SignedRequest {
            headers: vec![
                ("authorization".into(), "AWS4-HMAC-SHA256 Credential=AK/20150830/eu-west-9/appmesh/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".into()),
                ("host".into(), "x".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            ..request
        };
        let wrong = verify(&other_region, &creds, now).expect_err("another region");
        assert!(
            wrong.message.contains("not `eu-west-9`"),
            "{}",
            wrong.message
        );
        assert_eq!(refusal.kind, "InvalidSignatureException");
        assert!(refusal.message.contains("does not match"));
        let later = now + Duration::from_secs(3600);
        assert!(
            verify(&request, &creds, later)
                .expect_err("expired")
                .message
                .contains("expired")
        );
    }

    #[test]
    fn queries_are_sorted_and_encoded() {
        assert_eq!(
            canonical_query("limit=1&nextToken=a%2Bb"),
            "limit=1&nextToken=a%2Bb"
        );
        assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(uri_encode("/v1/a b", true), "/v1/a%20b");
    }
}
