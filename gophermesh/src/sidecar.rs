//! `gophermesh sidecar`: what the aws-appmesh-envoy image's agent does, for a current
//! Envoy. It reads the agent's environment ([`env`]), writes the bootstrap the agent would
//! write, starts Envoy and restarts it when it dies (`APPNET_ENVOY_RESTART_COUNT` times),
//! serves the agent's `/status` and `/stats/prometheus` ([`health`]), fails Envoy's health
//! checks once the management server has been unreachable past `HC_DISCONNECTED_TIMEOUT_S`,
//! and on SIGTERM drains the listeners for `LISTENER_DRAIN_WAIT_TIME_S` before stopping
//! Envoy.
//!
//! ```text
//! sidecar.rs  the bootstrap, Envoy's life, SIGTERM
//! env         the agent's variables, read and checked
//! vars        a variable read as the agent reads it
//! additions   what the agent adds to the bootstrap: stats, tracing, runtime, files
//! health      the watcher of Envoy and the agent's endpoints
//! ```

pub mod additions;
pub mod env;
pub mod health;
mod vars;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

pub use env::{EnvError, SidecarConfig};

/// The bootstrap the sidecar gives Envoy: the agent's ([`crate::runtime::envoy::agent_bootstrap`])
/// with the admin access log, the initial fetch timeout, and what the agent adds (stats,
/// tracing, runtime, the files of custom configuration: [`additions`]).
pub fn bootstrap(config: &SidecarConfig) -> anyhow::Result<serde_json::Value> {
    let mut b = crate::runtime::envoy::agent_bootstrap(&config.agent)?;
    b["admin"]["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": config.admin_access_log.display().to_string()
        }
    }]);
    let fetch = format!("{}s", config.initial_fetch_timeout.as_secs());
    for source in ["cds_config", "lds_config"] {
        b["dynamic_resources"][source]["initial_fetch_timeout"] = json!(fetch);
    }
    config.additions.merge_into(&mut b)?;
    Ok(b)
}

/// Envoy's arguments for `config`, its bootstrap at `bootstrap`.
fn envoy_args(config: &SidecarConfig, bootstrap: &Path) -> Vec<String> {
    let mut args = vec![
        "-c".to_owned(),
        bootstrap.display().to_string(),
        "--log-level".to_owned(),
        config.log_level.clone(),
        "--disable-hot-restart".to_owned(),
        "--drain-time-s".to_owned(),
        config.drain.as_secs().to_string(),
    ];
    if let Some(n) = config.concurrency {
        args.extend(["--concurrency".to_owned(), n.to_string()]);
    }
    args
}

/// How long a stopped Envoy may take to exit before it is killed (the agent's 3 s).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs the sidecar: Envoy (`envoy`) with the bootstrap written to `bootstrap_path`, until
/// SIGTERM (exit 0 after draining) or until Envoy dies with no restart left (its code).
pub async fn run(
    config: SidecarConfig,
    envoy: PathBuf,
    bootstrap_path: PathBuf,
) -> anyhow::Result<ExitCode> {
    for variable in &config.not_implemented {
        tracing::warn!(
            variable,
            "set, but this sidecar does not implement it yet; it is ignored"
        );
    }
    let text = serde_json::to_string_pretty(&bootstrap(&config)?)?;
    std::fs::write(&bootstrap_path, text)
        .with_context(|| format!("cannot write the bootstrap to {}", bootstrap_path.display()))?;
    let health = health::Health::new(config.agent.admin_port, config.disconnected_timeout);
    let listener = common::shutdown::bind(std::net::SocketAddr::from((
        [0, 0, 0, 0],
        config.agent_port,
    )))
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(common::server::serve(
        listener,
        health::router(health.clone()),
        common::server::Limits::default(),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        Duration::ZERO,
    ));
    let every =
        (config.disconnected_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let watcher = tokio::spawn(health.clone().watch(every));
    let args = envoy_args(&config, &bootstrap_path);
    let code = supervise(&config, &envoy, &args, &health).await;
    watcher.abort();
    let _ = stop_tx.send(true);
    let _ = server.await;
    code
}

/// Envoy started, restarted while restarts are left, drained and stopped on SIGTERM.
async fn supervise(
    config: &SidecarConfig,
    envoy: &Path,
    args: &[String],
    health: &Arc<health::Health>,
) -> anyhow::Result<ExitCode> {
    let mut left = config.restarts;
    let signal = common::shutdown::signal();
    tokio::pin!(signal);
    loop {
        let mut child = tokio::process::Command::new(envoy)
            .args(args)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start Envoy ({})", envoy.display()))?;
        tracing::info!(pid = child.id(), "Envoy started");
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if left == 0 {
                    tracing::error!(%status, "Envoy exited; no restart left (APPNET_ENVOY_RESTART_COUNT={})", config.restarts);
                    return Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)));
                }
                left -= 1;
                health.envoy_restarted();
                tracing::warn!(%status, "Envoy exited; restarting it ({} of {})", config.restarts - left, config.restarts);
            }
            () = &mut signal => {
                drain_and_stop(config, health, &mut child).await;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// SIGTERM as the agent takes it: Envoy's listeners drained gracefully for the drain wait
/// (callers are told to go: `Connection: close`, HTTP/2 GOAWAY), then Envoy stopped.
async fn drain_and_stop(
    config: &SidecarConfig,
    health: &health::Health,
    child: &mut tokio::process::Child,
) {
    let drained = health.admin_post("/drain_listeners?graceful").await;
    tracing::info!(
        drained,
        "draining listeners for {:?} (LISTENER_DRAIN_WAIT_TIME_S)",
        config.drain
    );
    tokio::select! {
        () = tokio::time::sleep(config.drain) => {}
        _ = child.wait() => return,
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
