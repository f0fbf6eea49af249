//! Calls to the distributor: one pooled client, trace propagation, and errors that say
//! what went wrong with which upstream.

use std::time::{Duration, Instant};

use common::wire::{DistributorAnswer, Version};
use common::{grpc, tracecontext};
use reqwest::{Client, Url};
use tracing::Instrument;

use crate::Config;
use crate::config::DistributorProtocol;

/// A successful call: who answered, what they said, how long it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub version: Version,
    /// The distributor's JSON as it came, unknown fields included (kept as text: only a
    /// JSON answer embeds it, and it need not be parsed into a tree for that).
    pub body: Box<serde_json::value::RawValue>,
    pub parsed: DistributorAnswer,
    pub latency: Duration,
}

/// Why a distributor call failed. Each names the upstream URL and the cause.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve the distributor's name in {url}: {detail}")]
    NameResolution { url: Url, detail: String },
    #[error("connection to the distributor at {url} was refused: {detail}")]
    ConnectionRefused { url: Url, detail: String },
    #[error("cannot connect to the distributor at {url}: {detail}")]
    Connect { url: Url, detail: String },
    #[error("the distributor at {url} did not answer within {timeout:?}")]
    Timeout { url: Url, timeout: Duration },
    #[error("the distributor at {url} answered HTTP {status}: {snippet}")]
    Status {
        url: Url,
        status: u16,
        snippet: String,
    },
    #[error(
        "the distributor at {url} answered with a body that is not a distributor answer: {detail}"
    )]
    BadBody { url: Url, detail: String },
    #[error("the distributor at {url} answered gRPC status {code}: {message}")]
    Grpc {
        url: Url,
        code: u32,
        message: String,
    },
    #[error("the call to the distributor at {url} failed: {detail}")]
    Other { url: Url, detail: String },
}

impl UpstreamError {
    /// A short, stable name for the kind of failure, used as a key in `/compare` output.
    pub fn kind(&self) -> String {
        match self {
            Self::NameResolution { .. } => "name_resolution".to_owned(),
            Self::ConnectionRefused { .. } => "connection_refused".to_owned(),
            Self::Connect { .. } => "connect".to_owned(),
            Self::Timeout { .. } => "timeout".to_owned(),
            Self::Status { status, .. } => format!("http_{status}"),
            Self::BadBody { .. } => "bad_body".to_owned(),
            Self::Grpc { code, .. } => format!("grpc_{code}"),
            Self::Other { .. } => "other".to_owned(),
        }
    }

    /// The status the requester answers with: 504 for a timeout, 502 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Timeout { .. } => 504,
            _ => 502,
        }
    }
}

/// The pooled HTTP client for the distributor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DistributorClient {
    http: Client,
    url: Url,
    timeout: Duration,
    grpc: bool,
}

impl DistributorClient {
    /// Builds the client from the flags: pool, timeouts and optional egress proxy.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let mut builder = Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // The distributor answers; it never redirects, and a redirect is no answer.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(proxy) = &config.egress_proxy {
            builder = builder.proxy(reqwest::Proxy::http(proxy.as_str())?);
        }
        let grpc = config.distributor_protocol == DistributorProtocol::Grpc;
        if grpc {
            builder = builder.http2_prior_knowledge();
        }
        Ok(Self {
            http: builder.build()?,
            url: config.distributor_url.clone(),
            timeout: config.request_timeout,
            grpc,
        })
    }

    /// The distributor URL this client calls.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Calls `GET /` on the distributor once, in a client span, propagating the current
    /// trace and `request_id`.
    pub async fn call(&self, request_id: &str) -> Result<Answer, UpstreamError> {
        self.call_asking(request_id, None).await
    }

    /// [`DistributorClient::call`], asking for distributor version `version` with the
    /// `x-gopher-version` header when given: a mesh route that matches the header (a
    /// canary route) sends it there; without such a route the weights decide as before.
    pub async fn call_asking(
        &self,
        request_id: &str,
        version: Option<&reqwest::header::HeaderValue>,
    ) -> Result<Answer, UpstreamError> {
        // The client span is for the exported trace; no log line is written inside it.
        let span = match tracecontext::spans_exported() {
            true => tracing::info_span!(
                "distributor call",
                otel.name = "GET distributor",
                otel.kind = "client",
                url.full = %self.url,
                request_id,
            ),
            false => tracing::Span::none(),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        tracecontext::inject(&span, request_id, &mut headers);
        if let Some(v) = version {
            headers.insert(common::wire::X_GOPHER_VERSION, v.clone());
        }
        self.send(headers).instrument(span).await
    }

    /// `GET /gopher.svg` on the distributor, through whatever the mesh picks: the
    /// version that answered (`x-gopher-version`) and the picture.
    pub async fn picture(&self) -> Result<(String, axum::body::Bytes), UpstreamError> {
        let url = self
            .url
            .join("/gopher.svg")
            .unwrap_or_else(|_| self.url.clone());
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        let status = response.status();
        let version = response
            .headers()
            .get(common::wire::X_GOPHER_VERSION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| self.classify(&e))?;
        if !status.is_success() {
            return Err(UpstreamError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                snippet: snippet(&bytes),
            });
        }
        Ok((version, bytes))
    }

    async fn send(&self, headers: reqwest::header::HeaderMap) -> Result<Answer, UpstreamError> {
        let started = Instant::now();
        let request = match self.grpc {
            false => self.http.get(self.url.clone()),
            true => self
                .http
                .post(
                    self.url
                        .join(grpc::ANSWER_PATH)
                        .unwrap_or_else(|_| self.url.clone()),
                )
                .header(reqwest::header::CONTENT_TYPE, grpc::CONTENT_TYPE)
                .header(reqwest::header::TE, "trailers")
                .body(grpc::frame(&grpc::AnswerRequest {})),
        };
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        let status = response.status();
        // A gRPC failure comes trailers-only: its status in the headers.
        let grpc_failure = response
            .headers()
            .get("grpc-status")
            .filter(|code| *code != "0")
            .map(|code| UpstreamError::Grpc {
                url: self.url.clone(),
                // 2 is gRPC's UNKNOWN: a status that is not a number.
                code: code.to_str().ok().and_then(|c| c.parse().ok()).unwrap_or(2),
                message: response
                    .headers()
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("(no message)")
                    .to_owned(),
            });
        let bytes = response.bytes().await.map_err(|e| self.classify(&e))?;
        let latency = started.elapsed();
        if !status.is_success() {
            return Err(UpstreamError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                snippet: snippet(&bytes),
            });
        }
        if let Some(failure) = grpc_failure {
            return Err(failure);
        }
        let bad_body = |detail: String| UpstreamError::BadBody {
            url: self.url.clone(),
            detail,
        };
        let json = match self.grpc {
            false => bytes.to_vec(),
            true => grpc::unframe::<grpc::AnswerReply>(&bytes)
                .map_err(bad_body)?
                .json
                .into_bytes(),
        };
        let body: Box<serde_json::value::RawValue> = serde_json::from_slice(&json)
            .map_err(|e| bad_body(format!("{e} (body starts {:?})", snippet(&json))))?;
        let parsed: DistributorAnswer =
            serde_json::from_str(body.get()).map_err(|e| bad_body(e.to_string()))?;
        Ok(Answer {
            version: parsed.version,
            body,
            parsed,
            latency,
        })
    }

    fn classify(&self, error: &reqwest::Error) -> UpstreamError {
        let url = self.url.clone();
        let detail = causes(error);
        if error.is_timeout() {
            return UpstreamError::Timeout {
                url,
                timeout: self.timeout,
            };
        }
        if error.is_connect() {
            let refused = source_chain(error).any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            });
            if refused {
                return UpstreamError::ConnectionRefused { url, detail };
            }
            if detail.contains("dns error") || detail.contains("failed to lookup address") {
                return UpstreamError::NameResolution { url, detail };
            }
            return UpstreamError::Connect { url, detail };
        }
        if error.is_body() || error.is_decode() {
            return UpstreamError::BadBody { url, detail };
        }
        UpstreamError::Other { url, detail }
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The error and its causes, joined with `: `, without repeating a cause.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in source_chain(error).skip(1) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        parts.push(error.to_string());
    }
    parts.join(": ")
}

/// The start of a body, for error messages: at most 120 characters, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(120).collect();
    if one_line.chars().count() > 120 {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(
            snippet(b"upstream\nconnect  error"),
            "upstream connect error"
        );
        let long = vec![b'x'; 500];
        assert_eq!(snippet(&long).chars().count(), 121);
    }

    #[test]
    fn kinds_are_stable_names() {
        let url: Url = "http://d:8080".parse().expect("url");
        let e = UpstreamError::Status {
            url: url.clone(),
            status: 503,
            snippet: String::new(),
        };
        assert_eq!(e.kind(), "http_503");
        assert_eq!(e.http_status(), 502);
        let t = UpstreamError::Timeout {
            url,
            timeout: Duration::from_secs(1),
        };
        assert_eq!((t.kind().as_str(), t.http_status()), ("timeout", 504));
    }
}
