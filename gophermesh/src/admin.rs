//! Envoy's admin interface, wherever it listens: on loopback in the loopback mode, on a
//! task namespace's own loopback in the `--netns` mode (reached by opening the connection
//! inside that namespace; the admin port is never exposed on a network).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// How to reach one Envoy's admin interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyAdmin {
    pub addr: SocketAddr,
    /// The network namespace `addr` is in; `None` for this process's own.
    pub netns: Option<String>,
}

impl EnvoyAdmin {
    /// `GET path`: the status code and body, within `limit`.
    pub async fn get(&self, path: &str, limit: Duration) -> anyhow::Result<(u16, String)> {
        tokio::time::timeout(limit, self.fetch(path))
            .await
            .with_context(|| format!("Envoy admin {} did not answer within {limit:?}", self.addr))?
    }

    async fn fetch(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let stream = match &self.netns {
            None => tokio::net::TcpStream::connect(self.addr).await?,
            Some(ns) => crate::netns::dial(ns, self.addr, Duration::from_secs(1)).await?,
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Is Envoy LIVE (`/ready` answers 200)?
    pub async fn live(&self) -> bool {
        matches!(
            self.get("/ready", Duration::from_millis(500)).await,
            Ok((200, _))
        )
    }
}

impl std::fmt::Display for EnvoyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.netns {
            None => write!(f, "http://{}", self.addr),
            Some(ns) => write!(f, "http://{} in netns {ns}", self.addr),
        }
    }
}
