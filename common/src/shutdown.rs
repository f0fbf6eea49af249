//! Graceful shutdown: on SIGTERM or Ctrl-C, report unhealthy, stop accepting, let requests
//! in flight finish within a deadline, then return so `main` can exit 0.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// Whether the process is still serving or has begun shutting down. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    draining: Arc<AtomicBool>,
}

impl Health {
    /// True until shutdown has begun.
    pub fn is_serving(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }

    /// Marks the process as shutting down; `/health` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

impl Health {
    /// What `GET /health` answers: 200 `ok` while serving, 503 once shutdown has begun.
    pub fn response(&self) -> Response {
        if self.is_serving() {
            (StatusCode::OK, "ok\n").into_response()
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
        }
    }
}

/// Binds `addr`; the error names the address (a port already taken is the usual cause).
pub async fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

/// Serves `app` on `listener` until `stop` resolves, then drains.
///
/// When `stop` resolves, `health` turns unhealthy and the listener stops accepting;
/// connections with requests in flight get up to `args.drain_timeout` to finish, after which they are
/// dropped and this returns anyway. Connections are served as [`crate::server::serve`]
/// serves them (header-read timeout and all).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    health: Health,
    stop: impl Future<Output = ()> + Send + 'static,
    args: &crate::config::ServerArgs,
) -> io::Result<()> {
    let drain = args.drain_timeout;
    let limits = crate::server::Limits {
        header_read: args.header_read_timeout,
        // The services' handlers do not ask who called.
        peer_address: false,
        ..crate::server::Limits::default()
    };
    let stop = async move {
        stop.await;
        health.begin_shutdown();
        tracing::info!(deadline = ?drain, "shutting down: no new connections, draining");
    };
    crate::server::serve(listener, app, limits, stop, drain).await
}
