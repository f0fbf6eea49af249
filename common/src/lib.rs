//! What the requester and the distributor share, and nothing else.
//!
//! - [`config`]: the flags both binaries take (logging, tracing export, draining).
//! - [`telemetry`]: tracing and OpenTelemetry, set up once per process.
//! - [`tracecontext`]: W3C `traceparent` and `x-request-id` on the way in and out.
//! - [`shutdown`]: SIGTERM/Ctrl-C handling, the health flag and draining.
//! - [`wire`]: the JSON the distributor answers with and the requester reads.
#![forbid(unsafe_code)]

pub mod config;
pub mod healthcheck;
pub mod shutdown;
pub mod telemetry;
pub mod tracecontext;
pub mod wire;

/// The name of the machine (or container) this process runs on, as the kernel reports it.
///
/// Falls back to the `HOSTNAME` variable, then to `"unknown"`; never fails.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The body of a service's `main`: telemetry up, `body` run, telemetry flushed.
///
/// Returns exit code 0 when `body` succeeds, 1 when it fails (the error is logged and
/// printed to stderr with its causes), and 2 when telemetry cannot be set up.
pub async fn run_main<E: std::fmt::Display>(
    service: &'static str,
    telemetry: &config::TelemetryArgs,
    body: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let guard = match telemetry::init(service, telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{service}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match body.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{service}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    guard.shutdown();
    code
}
