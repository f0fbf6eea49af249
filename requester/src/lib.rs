//! The Gopher requester: calls the distributor and reports which version answered.
//!
//! - `GET /` calls the distributor once; plain text for terminals, JSON on request, and
//!   for a browser (`Accept: text/html`) a page that calls it again and again and shows
//!   each answer's gopher with a tally per version.
//! - `GET /gopher/VERSION.svg` is that distributor version's picture, fetched through the
//!   mesh.
//! - `GET /compare?n=N&concurrency=C` makes N calls (at most 10,000), C at a time, and
//!   reports the split between versions with latency percentiles and errors by kind. At
//!   most `--max-compares` run at once (429 beyond); each stops at `--compare-deadline`
//!   and then reports what was done, marked partial.
//! - `GET /health` is 200 while serving and 503 once shutdown has begun.
//!
//! A request's `x-gopher-version` header is passed on to the distributor, so a mesh route
//! that matches it (the shipped canary route) decides who answers.
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

use common::config::TelemetryArgs;
use common::shutdown::Health;
use tokio::net::TcpListener;

pub use config::{Config, DistributorProtocol};
pub use routes::router;

/// A bound, not yet serving requester: [`App::bind`], [`App::local_addr`], [`App::run`].
pub type App = common::app::App<Config>;

impl common::app::Service for Config {
    const NAME: &'static str = "requester";

    fn basics(&self) -> (SocketAddr, &TelemetryArgs) {
        (self.listen, &self.telemetry)
    }

    async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let client = client::DistributorClient::new(&self)
            .map_err(|e| io::Error::other(format!("cannot build the HTTP client: {e}")))?;
        let health = Health::default();
        tracing::info!(
            addr = %listener.local_addr()?,
            distributor = %self.distributor_url,
            egress_proxy = ?self.egress_proxy.as_ref().map(|u| u.as_str()),
            "requester listening"
        );
        let state = routes::State {
            client,
            pictures: std::sync::Arc::default(),
            compares: std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_compares as usize)),
            compare_deadline: self.compare_deadline,
            compare_limit: self.max_compares as usize,
            health: health.clone(),
            host: common::hostname().into(),
        };
        common::shutdown::serve(listener, router(state), health, stop, &self.server).await
    }
}
