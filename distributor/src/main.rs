//! The `distributor` binary: parse flags, start telemetry, serve until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = common::healthcheck::from_args() {
        return code;
    }
    common::app::main(distributor::Config::from_args_and_env()).await
}
