//! The Gopher distributor: one binary, two versions.
//!
//! `GET /` answers with the version's gopher as JSON ([`common::wire::DistributorAnswer`])
//! and the `x-gopher-version` header; `GET /gopher.svg` is its picture; `GET /health` is
//! 200 while serving and 503 once shutdown has begun. Two demo knobs, off by default, add
//! latency and injected 503s so retries and outlier detection can be shown.
//!
//! [`App::bind`] (an [`common::app::App`]) binds the listener (port 0 works, for tests) and [`App::run`] serves until
//! the given future resolves, then drains.
#![forbid(unsafe_code)]

mod config;
pub mod ecs;
pub mod gophers;
mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use common::config::TelemetryArgs;
use common::shutdown::Health;
use tokio::net::TcpListener;

pub use config::Config;
pub use routes::router;

/// A bound, not yet serving distributor: [`App::bind`], [`App::local_addr`], [`App::run`].
pub type App = common::app::App<Config>;

impl common::app::Service for Config {
    const NAME: &'static str = "distributor";

    fn basics(&self) -> (SocketAddr, &TelemetryArgs) {
        (self.listen, &self.telemetry)
    }

    async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let health = Health::default();
        let state = routes::State::new(&self, health.clone());
        if let Some(uri) = self.ecs_metadata_uri.clone() {
            let task = state.task.clone();
            tokio::spawn(async move {
                match ecs::fetch(&uri).await {
                    Ok(info) => {
                        tracing::info!(task_arn = %info.task_arn, "read ECS task metadata");
                        let _ = task.set(info);
                    }
                    Err(e) => tracing::warn!("answering without task metadata: {e}"),
                }
            });
        }
        tracing::info!(
            addr = %listener.local_addr()?,
            version = %self.version(),
            latency_ms = self.latency_ms,
            error_rate = self.error_rate,
            "distributor listening"
        );
        common::shutdown::serve(listener, router(state), health, stop, &self.server).await
    }
}
