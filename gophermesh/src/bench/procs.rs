//! The processes the benchmark starts itself, and waiting for them to answer.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A process the benchmark started; killed when dropped.
#[derive(Debug)]
pub(super) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts a service that listens on port 0 and logs (as JSON) the address it bound
    /// (`"message": "... listening", "addr": ...`); waits up to 10 s for that line.
    pub(super) async fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
    ) -> anyhow::Result<(Self, String)> {
        let mut command = Command::new(program);
        command
            .args(args)
            .env(
                "RUST_LOG",
                "warn,requester=info,requester::routes=warn,distributor=info",
            )
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with(" listening"))
                {
                    return event["addr"].as_str().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .with_context(|| format!("{name} did not say where it listens within 10 s"))?;
        // Keep reading so that the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let proc = Self {
            name: name.to_owned(),
            child,
        };
        Ok((proc, format!("http://{addr}")))
    }

    pub(super) fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("{} has exited", self.name))
    }
}

/// Polls `url` until it answers 200; the time that took.
pub(super) async fn until_ok(
    http: &reqwest::Client,
    url: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = http
            .get(url)
            .timeout(Duration::from_millis(200))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("{url} did not answer 200 within {limit:?}")
}
