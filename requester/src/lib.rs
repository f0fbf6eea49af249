//! The Gopher requester: calls the distributor and reports which version answered.
//!
//! - `GET /` calls the distributor once; plain text for terminals, JSON on request.
//! - `GET /compare?n=N&concurrency=C` makes N calls, C at a time, and reports the split
//!   between versions with latency percentiles and errors by kind.
//! - `GET /health` is 200 while serving and 503 once shutdown has begun.
//!
//! Distributor failures become 502 (or 504 for a timeout) with a message naming the
//! upstream and the cause ([`client::UpstreamError`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod compare;
mod config;
mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use common::shutdown::Health;
use tokio::net::TcpListener;

pub use config::Config;
pub use routes::router;

/// A bound, not yet serving requester.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    config: Config,
}

impl App {
    /// Binds `config.listen`. Fails with the address in the message when it is taken.
    pub async fn bind(config: Config) -> io::Result<Self> {
        let listener = common::shutdown::bind(config.listen).await?;
        Ok(Self { listener, config })
    }

    /// The address actually bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then drains within the configured deadline.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let client = client::DistributorClient::new(&self.config)
            .map_err(|e| io::Error::other(format!("cannot build the HTTP client: {e}")))?;
        let health = Health::default();
        tracing::info!(
            addr = %self.local_addr()?,
            distributor = %self.config.distributor_url,
            egress_proxy = ?self.config.egress_proxy.as_ref().map(|u| u.as_str()),
            "requester listening"
        );
        let state = routes::State {
            client,
            health: health.clone(),
            host: common::hostname().into(),
        };
        common::shutdown::serve(
            self.listener,
            router(state),
            health,
            stop,
            self.config.shutdown.drain_timeout,
        )
        .await
    }
}
