//! What stands in front of both HTTP APIs, in this order, before any handler runs:
//!
//! 1. **Host.** The `Host` header (or HTTP/2 authority) must name an address the API
//!    listens on, or a name given with `--allow-host`; anything else is refused with 421,
//!    so a page that rebinds its own DNS name to 127.0.0.1 cannot reach the API.
//! 2. **Body.** Read whole, at most [`Limits::max_body`] bytes, within
//!    [`Limits::body_read`]; a slow or endless body costs the sender a 408 or 413, and
//!    holds nothing that other callers need.
//! 3. **Who.** SigV4 (the App Mesh API when credentials are set), or the control API's
//!    bearer token (or the same SigV4 credentials); reads of the control API are open.
//! 4. **How many.** Only then is a place taken: at most [`Limits::max_in_flight`] requests
//!    at once, and at most [`Limits::max_per_client`] of them from one address; beyond
//!    that, 429 with `Retry-After`.
//!
//! Each API renders a refusal in its own shape (AWS errors for the App Mesh API, a
//! `problems` list for the control API).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sigv4::{self, Credentials};
use super::token::ControlToken;

/// How much one request may ask of an API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body accepted.
    pub max_body: usize,
    /// How long the whole body may take to arrive once the headers have.
    pub body_read: Duration,
    /// Requests handled at once, over every client.
    pub max_in_flight: usize,
    /// Requests handled at once from one client address.
    pub max_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            body_read: Duration::from_secs(10),
            max_in_flight: 64,
            max_per_client: 16,
        }
    }
}

/// Who may call.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone who reaches the port (the App Mesh API without credentials).
    Open,
    /// Requests signed with SigV4 by these credentials.
    SigV4(Credentials),
    /// The control API: reads are open; changes carry the bearer token, or a SigV4
    /// signature by `sigv4` when set.
    Token {
        token: ControlToken,
        sigv4: Option<Credentials>,
    },
}

/// Why a request was turned away, before its handler.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// A machine-readable kind (AWS's error type where there is one).
    pub kind: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed (429 only).
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The guard of one API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: &'static str,
    hosts: Vec<String>,
    auth: Auth,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    render: fn(&Refusal) -> Response,
}

impl Guard {
    /// A guard for API `api` (named in logs) listening on `bound`, also answering to the
    /// host names in `allow_hosts`; `render` shapes refusals.
    pub fn new(
        api: &'static str,
        bound: SocketAddr,
        allow_hosts: &[String],
        auth: Auth,
        limits: Limits,
        render: fn(&Refusal) -> Response,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                api,
                hosts: allowed_hosts(bound, allow_hosts),
                auth,
                limits,
                in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
                per_client: Arc::default(),
                render,
            }),
        }
    }

    /// Checks the request's host name; `Err` says why not.
    pub fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        let Some(host) = host else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                "the request has no Host header",
            ));
        };
        if self
            .inner
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            "MisdirectedRequestException",
            format!(
                "Host `{}` is not an address this API listens on (it answers to {}; add names with --allow-host)",
                host.escape_debug(),
                self.inner.hosts.join(", ")
            ),
        ))
    }

    /// Checks who sent the request.
    pub fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let signed = |creds: &Credentials| {
            verify_sigv4(method, uri, headers, body, creds)
                .map_err(|r| Refusal::new(StatusCode::FORBIDDEN, r.kind, r.message))
        };
        match &self.inner.auth {
            Auth::Open => Ok(()),
            Auth::SigV4(creds) => signed(creds),
            Auth::Token { .. } if method == Method::GET || method == Method::HEAD => Ok(()),
            Auth::Token { token, sigv4 } => {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok());
                let bearer = authorization.and_then(|v| v.strip_prefix("Bearer "));
                let signature = authorization.is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
                match (bearer, sigv4) {
                    (Some(presented), _) if token.matches(presented) => Ok(()),
                    (Some(_), _) => Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "the bearer token is not this control plane's (it changes every time `up` starts)",
                    )),
                    (None, Some(creds)) if signature => signed(creds),
                    _ => Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "changes need the control token (`Authorization: Bearer TOKEN`; the CLI reads it from STATE_DIR/control-token)",
                    )),
                }
            }
        }
    }

    /// Takes a place for a request from `client`, or says to come back later.
    pub fn admit(&self, client: IpAddr) -> Result<Admission, Refusal> {
        let limits = self.inner.limits;
        let busy = |what: String| Refusal {
            retry_after: Some(1),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                format!("{what}; retry with backoff"),
            )
        };
        {
            let mut counts = self
                .inner
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = counts.entry(client).or_insert(0);
            if *n >= limits.max_per_client {
                return Err(busy(format!(
                    "more than {} requests at once from {client}",
                    limits.max_per_client
                )));
            }
            *n += 1;
        }
        let client_place = ClientPlace {
            counts: self.inner.per_client.clone(),
            client,
        };
        let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else {
            return Err(busy(format!(
                "more than {} requests at once",
                limits.max_in_flight
            )));
        };
        Ok(Admission {
            _permit: permit,
            _client: client_place,
        })
    }
}

/// A place taken by [`Guard::admit`]; dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _client: ClientPlace,
}

#[derive(Debug)]
struct ClientPlace {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// The `Host` values for a listener on `bound` plus the names in `extra` (a bare name
/// takes the bound port; `name:port` is taken as given, and `name:443` or `name:80` also
/// as the bare `name`, which is how clients write the default port of HTTPS or HTTP, e.g.
/// behind a load balancer's TLS listener on 443).
fn allowed_hosts(bound: SocketAddr, extra: &[String]) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![bound.to_string()];
    if bound.ip().is_loopback() {
        hosts.push(format!("localhost:{port}"));
    }
    for name in extra {
        if name.contains(':') && !name.starts_with('[') && name.matches(':').count() == 1 {
            hosts.push(name.clone());
            if let Some(bare) = name.strip_suffix(":443").or(name.strip_suffix(":80")) {
                hosts.push(bare.to_owned());
            }
        } else {
            hosts.push(format!("{name}:{port}"));
        }
    }
    hosts.dedup();
    hosts
}

fn verify_sigv4(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    creds: &Credentials,
) -> Result<(), sigv4::Refusal> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request = sigv4::SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
    };
    sigv4::verify(&request, creds, SystemTime::now())
}

/// Axum middleware running the four checks; the handler gets the request with its body
/// already read (so `Bytes`/`Json` extractors cost nothing more).
pub async fn check(
    State(guard): State<Guard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let render = guard.inner.render;
    let refuse = |r: Refusal| {
        let mut response = render(&r);
        if let Some(seconds) = r.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    };
    let (parts, body) = request.into_parts();
    if let Err(r) = guard.check_host(&parts.uri, &parts.headers) {
        tracing::warn!(api = guard.inner.api, %peer, "refused a request for another host: {}", r.message);
        return refuse(r);
    }
    let body = match read_body(body, guard.inner.limits).await {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    if let Err(r) = guard.authenticate(&parts.method, &parts.uri, &parts.headers, &body) {
        tracing::warn!(api = guard.inner.api, %peer, method = %parts.method, path = parts.uri.path(), kind = r.kind, "refused an unauthenticated request");
        return refuse(r);
    }
    let _admission = match guard.admit(peer.ip()) {
        Ok(a) => a,
        Err(r) => return refuse(r),
    };
    next.run(Request::from_parts(parts, Body::from(body)))
        .await
        .into_response()
}

async fn read_body(body: Body, limits: Limits) -> Result<Bytes, Refusal> {
    match tokio::time::timeout(
        limits.body_read,
        axum::body::to_bytes(body, limits.max_body),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadRequestException",
            format!(
                "the body is larger than {} bytes (or ended early)",
                limits.max_body
            ),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            format!(
                "the body did not arrive within {}s",
                limits.body_read.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_on_the_default_https_port_is_also_admitted_bare() {
        let bound: SocketAddr = "0.0.0.0:9991".parse().expect("addr");
        let hosts = allowed_hosts(
            bound,
            &["xds.gophers.local:443".into(), "api.internal".into()],
        );
        assert_eq!(
            hosts,
            [
                "0.0.0.0:9991",
                "xds.gophers.local:443",
                "xds.gophers.local",
                "api.internal:9991"
            ]
        );
    }

    fn guard(auth: Auth, limits: Limits) -> Guard {
        Guard::new(
            "test",
            "127.0.0.1:9990".parse().expect("addr"),
            &["mesh.internal".to_owned()],
            auth,
            limits,
            |r| (r.status, r.message.clone()).into_response(),
        )
    }

    fn host(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, value.parse().expect("header"));
        h
    }

    #[test]
    fn only_the_bound_address_and_given_names_pass_as_host() {
        let g = guard(Auth::Open, Limits::default());
        let uri = Uri::from_static("/v1/status");
        for ok in ["127.0.0.1:9990", "localhost:9990", "mesh.internal:9990"] {
            assert!(g.check_host(&uri, &host(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "rebind.evil.example:9990",
            "127.0.0.1:80",
            "localhost",
            "mesh.internal:1",
        ] {
            let r = g.check_host(&uri, &host(bad)).expect_err(bad);
            assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{bad}");
        }
        let r = g.check_host(&uri, &HeaderMap::new()).expect_err("no host");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn changes_need_the_token_and_reads_do_not() {
        let token = ControlToken::from_text("abc123");
        let g = guard(Auth::Token { token, sigv4: None }, Limits::default());
        let uri = Uri::from_static("/v1/resources");
        assert!(
            g.authenticate(&Method::GET, &uri, &HeaderMap::new(), b"")
                .is_ok()
        );
        let r = g
            .authenticate(&Method::POST, &uri, &HeaderMap::new(), b"")
            .expect_err("no token");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, "Bearer abc124".parse().expect("h"));
        assert!(g.authenticate(&Method::PUT, &uri, &wrong, b"").is_err());
        let mut right = HeaderMap::new();
        right.insert(header::AUTHORIZATION, "Bearer abc123".parse().expect("h"));
        assert!(g.authenticate(&Method::PUT, &uri, &right, b"").is_ok());
    }

    #[test]
    fn one_client_cannot_take_every_place() {
        let g = guard(
            Auth::Open,
            Limits {
                max_in_flight: 3,
                max_per_client: 2,
                ..Limits::default()
            },
        );
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = g.admit(a).expect("1st from a");
        let _second = g.admit(a).expect("2nd from a");
        let r = g.admit(a).expect_err("3rd from a");
        assert_eq!(
            (r.status, r.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(1))
        );
        let _third = g.admit(b).expect("b still gets a place");
        assert!(g.admit(b).is_err(), "the whole is full");
        drop(first);
        assert!(g.admit(a).is_ok(), "a place given back is taken again");
    }
}
