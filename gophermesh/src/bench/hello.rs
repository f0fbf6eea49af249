//! `gophermesh bench-hello`: the floors `bench` compares against. A hyper HTTP/1 server
//! with no routing, no middleware and no logging, answering `hello`; with `--distributor`
//! a fixed distributor answer instead (what the mesh floor puts where the distributor
//! runs); with `--forward URL` the minimal stand-in for the requester: each request is
//! sent on to `URL` (through `--proxy`, the task's Envoy, when given) over one upstream
//! connection per inbound connection, and the answer comes back as it came.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

/// What the distributor's stand-in answers: shaped as the requester's answer (which the
/// requester's stand-in passes on as it is), so that `bench` reads who answered: host
/// `hyper-floor`.
pub const FLOOR_ANSWER: &str = r#"{"distributor":{"service":"distributor","version":"v1","gopher":{"name":"Gordon","color":"blue","image":"/gopher.svg"},"host":"hyper-floor","served_at":"1970-01-01T00:00:00Z"}}"#;

/// What a `bench-hello` answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Hello,
    Distributor,
    /// Forwarded to `authority` (the URL's host and port) at `path`, over a connection to
    /// `connect` (the proxy, or the authority itself).
    Forward {
        connect: String,
        authority: String,
        path: String,
    },
}

impl Answer {
    /// The answer the flags ask for.
    pub fn from_flags(
        distributor: bool,
        forward: Option<&str>,
        proxy: Option<&str>,
    ) -> anyhow::Result<Self> {
        let Some(url) = forward else {
            return Ok(if distributor {
                Self::Distributor
            } else {
                Self::Hello
            });
        };
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--forward `{url}`: give an http:// URL");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("--forward `{url}`: the URL names no host");
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        // The proxy as HOST:PORT or as the URL apps are given (`EGRESS_PROXY`).
        let proxy = proxy.map(|p| p.strip_prefix("http://").unwrap_or(p).trim_end_matches('/'));
        Ok(Self::Forward {
            connect: proxy.map_or_else(|| authority.clone(), str::to_owned),
            authority,
            path: path.to_owned(),
        })
    }
}

pub async fn run(listen: SocketAddr, answer: Answer) -> anyhow::Result<std::process::ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "{{\"message\":\"hello listening\",\"addr\":\"{}\"}}",
        listener.local_addr()?
    );
    let answer = Arc::new(answer);
    loop {
        let (stream, _) = listener.accept().await?;
        let answer = answer.clone();
        tokio::spawn(async move {
            // One upstream connection per inbound one: HTTP/1 carries one request at a
            // time on each, so the two go in step and nothing is shared.
            let upstream: Arc<Mutex<Option<SendRequest<Empty<Bytes>>>>> = Arc::default();
            let service = service_fn(move |_req: Request<Incoming>| {
                let (answer, upstream) = (answer.clone(), upstream.clone());
                async move {
                    Ok::<_, Infallible>(match &*answer {
                        Answer::Hello => Response::new(Full::new(Bytes::from_static(b"hello"))),
                        Answer::Distributor => {
                            let mut r = Response::new(Full::new(Bytes::from_static(
                                FLOOR_ANSWER.as_bytes(),
                            )));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            r
                        }
                        Answer::Forward {
                            connect,
                            authority,
                            path,
                        } => forward(&upstream, connect, authority, path)
                            .await
                            .unwrap_or_else(|e| {
                                let mut r = Response::new(Full::new(Bytes::from(format!(
                                    "cannot forward to {authority}: {e:#}"
                                ))));
                                *r.status_mut() = StatusCode::BAD_GATEWAY;
                                r
                            }),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends one request upstream (connecting first when there is no open connection) and
/// returns its answer.
async fn forward(
    upstream: &Mutex<Option<SendRequest<Empty<Bytes>>>>,
    connect: &str,
    authority: &str,
    path: &str,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let mut slot = upstream.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(connect)
            .await
            .with_context(|| format!("cannot connect to {connect}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        *slot = Some(sender);
    }
    let sender = slot.as_mut().context("connected")?;
    sender.ready().await?;
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_urls_are_read_and_refused_by_name() {
        let Answer::Forward {
            connect,
            authority,
            path,
        } = Answer::from_flags(
            false,
            Some("http://distributor.gophers.local:8080"),
            Some("http://127.0.0.2:15001"),
        )
        .expect("a URL")
        else {
            panic!("not a forward");
        };
        assert_eq!(connect, "127.0.0.2:15001");
        assert_eq!(authority, "distributor.gophers.local:8080");
        assert_eq!(path, "/");
        let Answer::Forward { connect, path, .. } =
            Answer::from_flags(false, Some("http://h/x?y"), None).expect("a URL")
        else {
            panic!("not a forward");
        };
        assert_eq!((connect.as_str(), path.as_str()), ("h:80", "/x?y"));
        let e = Answer::from_flags(false, Some("https://h/"), None).expect_err("https");
        assert!(e.to_string().contains("--forward"), "{e}");
        assert!(matches!(
            Answer::from_flags(true, None, None),
            Ok(Answer::Distributor)
        ));
    }
}
