//! The `distributor` binary: parse flags, start telemetry, serve until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use distributor::{App, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_args_and_env();
    let telemetry = match common::telemetry::init("distributor", &config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("distributor: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("distributor: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = App::bind(config).await?;
    app.run(common::shutdown::signal()).await?;
    Ok(())
}
