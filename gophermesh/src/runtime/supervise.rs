//! Child processes that are restarted when they crash and stopped in order.
//!
//! Each [`Supervised`] runs one command in a loop: start it, wait for it to exit, report
//! the exit, and start it again after a backoff (250 ms, doubling to 8 s, reset once a run
//! lasted 30 s). [`Supervised::stop`] sends SIGTERM, waits up to a deadline, then SIGKILLs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Command;
use tokio::sync::watch;

/// Runs `command` (a one-off, like `ip` or `podman`, not a supervised child) to the end:
/// its trimmed stdout, or an error showing the command (`program args`) and its stderr.
/// `unstartable` is the error when it cannot be started at all.
pub fn run_checked(
    command: &mut std::process::Command,
    unstartable: &str,
) -> anyhow::Result<String> {
    let out = command
        .output()
        .map_err(|e| anyhow::anyhow!("{unstartable}: {e}"))?;
    if !out.status.success() {
        let shown: Vec<String> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        anyhow::bail!(
            "`{}` failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// How to start a process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A short name, like `distributor-v1/envoy`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
}

/// What `status` shows of a process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub log: String,
    /// For an Envoy: milliseconds from its start (or its container's) to LIVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_ms: Option<f64>,
}

/// The status of every supervised process, in start order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable(Arc<Mutex<Vec<ProcessStatus>>>);

impl ProcessTable {
    pub fn snapshot(&self) -> Vec<ProcessStatus> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds a row (for things not started by [`Supervised`], like containers); its index.
    pub fn register(&self, status: ProcessStatus) -> usize {
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.push(status);
        table.len() - 1
    }

    /// Changes the row named `name`.
    pub fn update_named(&self, name: &str, f: impl FnOnce(&mut ProcessStatus)) {
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = table.iter_mut().find(|s| s.name == name) {
            f(s);
        }
    }

    /// Changes row `index`.
    pub fn update(&self, index: usize, f: impl FnOnce(&mut ProcessStatus)) {
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = table.get_mut(index) {
            f(s);
        }
    }
}

/// A supervised process.
#[derive(Debug)]
pub struct Supervised {
    pub name: String,
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts `spec` now and keeps it running until [`Supervised::stop`].
    pub fn start(spec: Spec, table: &ProcessTable, grace: Duration) -> Self {
        let index = table.register(ProcessStatus {
            name: spec.name.clone(),
            log: spec.log.display().to_string(),
            ..Default::default()
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let task = tokio::spawn(supervise(spec, table.clone(), index, stop_rx, grace));
        Self {
            name,
            stop_tx,
            task,
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace period) and its restarts.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

async fn supervise(
    spec: Spec,
    table: ProcessTable,
    index: usize,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut backoff = Backoff::default();
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(e) => {
                tracing::error!(
                    process = spec.name,
                    "cannot open log {}: {e}",
                    spec.log.display()
                );
                (Stdio::null(), Stdio::null())
            }
        };
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: Ctrl-C in the terminal reaches `up` alone, which then
            // stops the children in order instead of them all dying at once.
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(
                    process = spec.name,
                    "cannot start {}: {e}",
                    spec.program.display()
                );
                table.update(index, |s| {
                    s.running = false;
                    s.last_exit = Some(format!("could not start: {e}"));
                });
                if wait_or_stop(&mut stop, backoff.next_wait(Duration::ZERO)).await {
                    table.update(index, |s| s.pid = None);
                    return;
                }
                continue;
            }
        };
        let pid = child.id();
        table.update(index, |s| {
            s.pid = pid;
            s.running = true;
        });
        enum Outcome {
            Exited(String),
            Stop,
        }
        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            }),
            _ = stop.wait_for(|s| *s) => Outcome::Stop,
        };
        match outcome {
            Outcome::Exited(text) => {
                table.update(index, |s| {
                    s.running = false;
                    s.restarts += 1;
                    s.last_exit = Some(text.clone());
                });
                let wait = backoff.next_wait(started.elapsed());
                tracing::warn!(
                    process = spec.name,
                    "exited ({text}); restarting in {wait:?}; log: {}",
                    spec.log.display()
                );
                if wait_or_stop(&mut stop, wait).await {
                    // Stopped while waiting to restart: the last pid is gone.
                    table.update(index, |s| s.pid = None);
                    return;
                }
            }
            Outcome::Stop => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    tracing::warn!(
                        process = spec.name,
                        "did not stop within {grace:?}; killing it"
                    );
                    let _ = child.kill().await;
                }
                table.update(index, |s| {
                    s.running = false;
                    s.pid = None;
                    s.last_exit = Some("stopped".to_owned());
                });
                return;
            }
        }
    }
}

/// How long to wait before a restart: none for a first crash, or a crash after runs of
/// a second or more (a process that was serving: every moment it is down, its callers'
/// requests fail); after a quick exit, 250 ms, doubling with every exit up to 8 s; back to
/// the start after a run that lasted 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    next: Duration,
    /// Whether the next restart may be at once.
    at_once: bool,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(8);
    const STEADY_RUN: Duration = Duration::from_secs(1);
    const HEALTHY_RUN: Duration = Duration::from_secs(30);

    /// The wait before the next start, after a run that lasted `ran`.
    fn next_wait(&mut self, ran: Duration) -> Duration {
        if ran > Self::HEALTHY_RUN {
            *self = Self::default();
        }
        if self.at_once {
            self.at_once = ran >= Self::STEADY_RUN;
            return Duration::ZERO;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Self::FIRST,
            at_once: true,
        }
    }
}

/// Sleeps for `d` unless told to stop first; true when told to stop.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let waits: Vec<u64> = (0..8)
            .map(|_| b.next_wait(quick).as_millis() as u64)
            .collect();
        assert_eq!(waits, [0, 250, 500, 1000, 2000, 4000, 8000, 8000]);
        // A crash after a healthy run restarts at once; quick exits after it back off again.
        assert_eq!(b.next_wait(Duration::from_secs(31)), Duration::ZERO);
        assert_eq!(b.next_wait(quick), Duration::ZERO);
        assert_eq!(b.next_wait(quick), Duration::from_millis(250));
        assert_eq!(b.next_wait(quick), Duration::from_millis(500));
    }

    #[test]
    fn a_process_that_was_serving_is_restarted_at_once_unless_it_crashed_quickly_before() {
        let mut b = Backoff::default();
        let steady = Duration::from_secs(2);
        assert_eq!(b.next_wait(steady), Duration::ZERO);
        assert_eq!(b.next_wait(steady), Duration::ZERO, "one crash every 2 s");
        assert_eq!(b.next_wait(Duration::from_millis(10)), Duration::ZERO);
        assert_eq!(
            b.next_wait(Duration::from_millis(10)),
            Duration::from_millis(250)
        );
        // A steady run after quick exits: still backing off until a healthy run.
        assert_eq!(b.next_wait(steady), Duration::from_millis(500));
    }

    fn spec(name: &str, script: &str, log: &std::path::Path) -> Spec {
        Spec {
            name: name.to_owned(),
            program: PathBuf::from("sh"),
            args: vec!["-c".to_owned(), script.to_owned()],
            env: std::env::vars().filter(|(k, _)| k == "PATH").collect(),
            log: log.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn a_crashing_process_is_restarted_and_a_stopped_one_is_not() {
        let log =
            std::env::temp_dir().join(format!("gophermesh-supervise-{}.log", std::process::id()));
        let table = ProcessTable::default();
        let crashing = Supervised::start(
            spec("crash", "exit 3", &log),
            &table,
            Duration::from_secs(1),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while table.snapshot()[0].restarts < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let row = table.snapshot()[0].clone();
        assert!(row.restarts >= 2, "{row:?}");
        assert_eq!(row.last_exit.as_deref(), Some("exit status: 3"));
        crashing.stop().await;
        let stopped = table.snapshot()[0].clone();
        assert!(!stopped.running && stopped.pid.is_none(), "{stopped:?}");

        // A process that ignores SIGTERM is killed after the grace period.
        let stubborn = Supervised::start(
            spec(
                "stubborn",
                "trap '' TERM; while :; do sleep 0.05; done",
                &log,
            ),
            &table,
            Duration::from_millis(300),
        );
        while !table.snapshot()[1].running {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let began = Instant::now();
        stubborn.stop().await;
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(table.snapshot()[1].last_exit.as_deref(), Some("stopped"));
        assert_eq!(table.snapshot()[1].restarts, 0);
        let _ = std::fs::remove_file(&log);
    }
}
