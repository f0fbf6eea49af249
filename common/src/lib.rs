//! What the requester and the distributor share, and nothing else.
//!
//! - [`app`]: the [`app::Service`] trait, binding and serving, and the binaries' `main`.
//! - [`config`]: the flags both binaries take (logging, tracing export, draining).
//! - [`grpc`]: the distributor's gRPC service, `gophers.Gopher`, on the wire.
//! - [`telemetry`]: tracing and OpenTelemetry, set up once per process.
//! - [`tracecontext`]: W3C `traceparent` and `x-request-id` on the way in and out.
//! - [`server`]: the HTTP server loop (header-read and idle timeouts, connection budgets
//!   (server/conns) and the descriptor budget among listeners (server/budget), peer address,
//!   drain).
//! - [`shutdown`]: SIGTERM/Ctrl-C handling, the health flag and draining.
//! - [`wire`]: the JSON the distributor answers with and the requester reads.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod grpc;
pub mod healthcheck;
pub mod server;
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
