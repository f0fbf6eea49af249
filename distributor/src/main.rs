//! The `distributor` binary: parse flags, start telemetry, serve until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use distributor::{App, Config};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = common::healthcheck::from_args() {
        return code;
    }
    let config = Config::from_args_and_env();
    let telemetry = config.telemetry.clone();
    common::run_main("distributor", &telemetry, async move {
        App::bind(config)
            .await?
            .run(common::shutdown::signal())
            .await
    })
    .await
}
