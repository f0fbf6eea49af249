//! The shape both services share: bind a listener, serve until told to stop, drain.
//!
//! A service's `Config` implements [`Service`]; [`App`] binds it and runs it, and [`main`] is
//! the whole body of the binary's `main` (telemetry, bind, serve until SIGTERM or Ctrl-C).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::config::TelemetryArgs;

/// What a service tells [`App`]: its name, where it listens, and how it serves.
pub trait Service: Sized + Send + 'static {
    /// The service name used in telemetry and error messages.
    const NAME: &'static str;

    /// The address to bind (port 0 picks a free port), and how traces and logs are
    /// exported.
    fn basics(&self) -> (SocketAddr, &TelemetryArgs);

    /// Serves on `listener` until `stop` resolves, then drains.
    fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// A service bound to its listener, not yet serving.
#[derive(Debug)]
pub struct App<C> {
    listener: TcpListener,
    config: C,
}

impl<C: Service> App<C> {
    /// Binds the configured address. Fails with the address in the message when it is taken.
    pub async fn bind(config: C) -> io::Result<Self> {
        let listener = crate::shutdown::bind(config.basics().0).await?;
        Ok(Self { listener, config })
    }

    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then drains within the configured deadline.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        self.config.serve(self.listener, stop).await
    }
}

/// The body of a service's `main`: telemetry up, bind, serve until SIGTERM or Ctrl-C,
/// telemetry flushed.
///
/// Returns exit code 0 after a clean drain, 1 when binding or serving fails (the error is
/// logged and printed to stderr), and 2 when telemetry cannot be set up.
pub async fn main<C: Service>(config: C) -> ExitCode {
    let guard = match crate::telemetry::init(C::NAME, config.basics().1) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{}: {e}", C::NAME);
            return ExitCode::from(2);
        }
    };
    let served = async {
        App::bind(config)
            .await?
            .run(crate::shutdown::signal())
            .await
    };
    let code = match served.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{}: {e:#}", C::NAME);
            ExitCode::FAILURE
        }
    };
    guard.shutdown();
    code
}
