//! The Gopher distributor: one binary, two versions.
//!
//! `GET /` answers with the version's gopher as JSON ([`common::wire::DistributorAnswer`])
//! and the `x-gopher-version` header; `GET /gopher.svg` is its picture; `GET /health` is
//! 200 while serving and 503 once shutdown has begun. Two demo knobs, off by default, add
//! latency and injected 503s so retries and outlier detection can be shown.
//!
//! [`App::bind`] binds the listener (port 0 works, for tests) and [`App::run`] serves until
//! the given future resolves, then drains.
#![forbid(unsafe_code)]

mod config;
pub mod ecs;
pub mod gophers;
mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use common::shutdown::Health;
use tokio::net::TcpListener;

pub use config::Config;
pub use routes::router;

/// A bound, not yet serving distributor.
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
        let health = Health::default();
        let state = routes::State::new(&self.config, health.clone());
        if let Some(uri) = self.config.ecs_metadata_uri.clone() {
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
            addr = %self.local_addr()?,
            version = %self.config.version(),
            latency_ms = self.config.latency_ms,
            error_rate = self.config.error_rate,
            "distributor listening"
        );
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
