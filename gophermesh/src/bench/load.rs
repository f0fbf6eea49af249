//! Load from `wrk`, and what the kernel says processes spent (`/proc`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// wrk's `done` hook: one JSON line with the counts and latency percentiles (µs).
const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"socket_errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"#;

/// One wrk run's result.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub socket_errors: u64,
    pub non_2xx: u64,
}

/// The load generator.
#[derive(Debug, Clone)]
pub struct Wrk {
    program: PathBuf,
    script: PathBuf,
    pub threads: u32,
    pub connections: u32,
}

impl Wrk {
    /// Finds `wrk` and writes its reporting script into `dir`.
    pub fn new(dir: &Path, threads: u32, connections: u32) -> anyhow::Result<Self> {
        let program = crate::progress::on_path("wrk")
            .context(
                "wrk not found on PATH; install it with: apt-get install -y wrk (scripts/setup.sh does this as root)",
            )?;
        let script = dir.join("report.lua");
        std::fs::write(&script, WRK_SCRIPT)
            .with_context(|| format!("cannot write {}", script.display()))?;
        Ok(Self {
            program,
            script,
            threads: threads.max(1),
            connections: connections.max(threads.max(1)),
        })
    }

    /// Loads `url` for `seconds` and returns wrk's figures.
    pub async fn run(&self, url: &str, seconds: u64) -> anyhow::Result<WrkResult> {
        self.run_in(None, url, seconds).await
    }

    /// [`Wrk::run`] from inside the network namespace `netns`, when given.
    pub async fn run_in(
        &self,
        netns: Option<&str>,
        url: &str,
        seconds: u64,
    ) -> anyhow::Result<WrkResult> {
        let mut command = match netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => tokio::process::Command::new(&self.program),
        };
        let out = command
            .args([
                "-t",
                &self.threads.to_string(),
                "-c",
                &self.connections.to_string(),
                "-d",
                &format!("{}s", seconds.max(1)),
                "--timeout",
                "5s",
                "-s",
            ])
            .arg(&self.script)
            .arg(url)
            .output()
            .await
            .context("cannot run wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk against {url} failed: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = text
            .lines()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("wrk printed no summary for {url}: {text}"))?;
        serde_json::from_str(line).with_context(|| format!("wrk's summary `{line}`"))
    }
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    let total = ticks(11)? + ticks(12)?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Ok(Duration::from_micros(total * 1_000_000 / per_second))
}

/// CPU time of each of `pids`.
pub fn cpu_each(pids: &[(String, u32)]) -> anyhow::Result<Vec<(String, Duration)>> {
    pids.iter()
        .map(|(n, p)| Ok((n.clone(), cpu_time(*p)?)))
        .collect()
}

/// A memory figure (`VmRSS`, `VmHWM`) of a process, in MiB.
pub fn memory_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .with_context(|| format!("no {field} for process {pid}"))?
        .parse()?;
    Ok(kib / 1024.0)
}

/// One scenario's figures, as bench.json has them.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub cpu_us_per_req: f64,
    pub requests: u64,
    pub errors: u64,
    /// The same, per serving process.
    pub cpu_us_per_req_by_process: std::collections::BTreeMap<String, f64>,
    /// Each measured turn's requests per second, in order (the scenarios of a group take
    /// turns, so turn `i` of one ran beside turn `i` of the others).
    pub turns_rps: Vec<f64>,
}

impl Scenario {
    /// The figures of several turns of one scenario: throughput over all of them, the
    /// median of each latency percentile, CPU over all requests.
    pub fn from_runs(runs: &[WrkResult], cpu: &[(String, Duration)]) -> Self {
        let median = |f: &dyn Fn(&WrkResult) -> u64| {
            let mut v: Vec<u64> = runs.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let total = WrkResult {
            requests: runs.iter().map(|r| r.requests).sum(),
            duration_us: runs.iter().map(|r| r.duration_us).sum(),
            p50_us: median(&|r| r.p50_us),
            p99_us: median(&|r| r.p99_us),
            p999_us: median(&|r| r.p999_us),
            socket_errors: runs.iter().map(|r| r.socket_errors).sum(),
            non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
        };
        let mut s = Self::from_run(&total, cpu);
        s.turns_rps = runs
            .iter()
            .map(|r| r.requests as f64 / (r.duration_us.max(1) as f64 / 1e6))
            .collect();
        s
    }

    /// The figures of `run`, given the CPU time each serving process used during it.
    pub fn from_run(run: &WrkResult, cpu: &[(String, Duration)]) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let seconds = run.duration_us.max(1) as f64 / 1e6;
        let per_req = |d: Duration| d.as_secs_f64() * 1e6 / run.requests.max(1) as f64;
        let total: Duration = cpu.iter().map(|(_, d)| *d).sum();
        Self {
            rps: run.requests as f64 / seconds,
            p50_ms: ms(run.p50_us),
            p99_ms: ms(run.p99_us),
            p999_ms: ms(run.p999_us),
            cpu_us_per_req: per_req(total),
            requests: run.requests,
            errors: run.socket_errors + run.non_2xx,
            cpu_us_per_req_by_process: cpu.iter().map(|(n, d)| (n.clone(), per_req(*d))).collect(),
            turns_rps: vec![run.requests as f64 / seconds],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let start = cpu_time(me).expect("cpu");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_time(me).expect("cpu") > start);
        assert!(memory_mib(me, "VmRSS").expect("rss") > 0.5);
        assert!(cpu_time(u32::MAX).is_err());
    }

    #[test]
    fn turns_add_up_and_take_the_median_latency() {
        let turn = |requests, p99_us| WrkResult {
            requests,
            duration_us: 1_000_000,
            p99_us,
            ..WrkResult::default()
        };
        let s = Scenario::from_runs(
            &[turn(100, 9000), turn(300, 1000), turn(200, 2000)],
            &[("x".into(), Duration::from_millis(6))],
        );
        assert!((s.rps - 200.0).abs() < 1e-9);
        assert!((s.p99_ms - 2.0).abs() < 1e-9);
        assert!((s.cpu_us_per_req - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_scenario_is_per_second_and_per_request() {
        let run = WrkResult {
            requests: 2000,
            duration_us: 2_000_000,
            p50_us: 1500,
            p99_us: 4000,
            p999_us: 9000,
            socket_errors: 1,
            non_2xx: 2,
        };
        let s = Scenario::from_run(
            &run,
            &[
                ("a".into(), Duration::from_millis(60)),
                ("b".into(), Duration::from_millis(40)),
            ],
        );
        assert!((s.rps - 1000.0).abs() < 1e-9);
        assert!((s.p50_ms - 1.5).abs() < 1e-9);
        assert!((s.cpu_us_per_req - 50.0).abs() < 1e-9);
        assert!((s.cpu_us_per_req_by_process["a"] - 30.0).abs() < 1e-9);
        assert_eq!(s.errors, 3);
    }
}
