//! `/compare`: many calls to the distributor, summarised per version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::client::DistributorClient;

/// Bounds on `n` and `concurrency`, checked before any call is made. `n` bounds the
/// upstream calls one request can cause (Envoy's retries aside).
pub const MAX_N: u32 = 10_000;
pub const MAX_CONCURRENCY: u32 = 256;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What one version answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStats {
    pub count: u64,
    /// Share of the successful answers, in percent.
    pub percent: f64,
    pub latency_ms: Percentiles,
}

/// The `/compare` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub n: u32,
    pub concurrency: u32,
    pub distributor: String,
    pub ok: u64,
    /// Failed calls by kind (`timeout`, `connection_refused`, `http_503`, ...).
    pub errors: BTreeMap<String, u64>,
    pub versions: BTreeMap<String, VersionStats>,
    pub elapsed_ms: f64,
    /// Calls that finished (ok or failed); fewer than `n` when the deadline cut the run.
    pub completed: u64,
    /// True when the deadline passed before every call finished: the figures describe
    /// the `completed` calls only.
    pub partial: bool,
}

/// Makes `n` calls, `concurrency` at a time, and summarises them. Calls still running
/// at `deadline` are abandoned and the report is marked partial.
pub async fn run(
    client: &DistributorClient,
    request_id: &str,
    n: u32,
    concurrency: u32,
    deadline: Duration,
    asking: Option<&reqwest::header::HeaderValue>,
) -> Report {
    let started = Instant::now();
    let cut = tokio::time::sleep(deadline);
    tokio::pin!(cut);
    let mut partial = false;
    let mut latencies: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let id = format!("{request_id}-{i}");
            async move { client.call_asking(&id, asking).await }
        })
        .buffer_unordered(concurrency.max(1) as usize);
    loop {
        let result = tokio::select! {
            next = calls.next() => match next {
                Some(result) => result,
                None => break,
            },
            () = &mut cut => {
                partial = true;
                break;
            }
        };
        match result {
            Ok(answer) => latencies
                .entry(answer.version.to_string())
                .or_default()
                .push(answer.latency),
            Err(e) => {
                tracing::debug!(kind = %e.kind(), "{e}");
                *errors.entry(e.kind()).or_default() += 1;
            }
        }
    }
    drop(calls);
    let ok: u64 = latencies.values().map(|v| v.len() as u64).sum();
    let completed = ok + errors.values().sum::<u64>();
    let versions = latencies
        .into_iter()
        .map(|(version, mut samples)| {
            samples.sort_unstable();
            let stats = VersionStats {
                count: samples.len() as u64,
                percent: round2(100.0 * samples.len() as f64 / ok as f64),
                latency_ms: Percentiles {
                    p50: percentile_ms(&samples, 50.0),
                    p90: percentile_ms(&samples, 90.0),
                    p99: percentile_ms(&samples, 99.0),
                },
            };
            (version, stats)
        })
        .collect();
    Report {
        n,
        concurrency,
        distributor: client.url().to_string(),
        ok,
        errors,
        versions,
        elapsed_ms: round2(started.elapsed().as_secs_f64() * 1e3),
        completed,
        partial,
    }
}

/// Nearest-rank percentile of sorted samples, in milliseconds, rounded to 0.01.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    round2(sorted[index].as_secs_f64() * 1e3)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    /// The report as a table for a terminal.
    pub fn to_text(&self) -> String {
        let failed: u64 = self.errors.values().sum();
        let mut out = String::new();
        if self.partial {
            out.push_str(&format!(
                "PARTIAL: the deadline passed after {} of {} calls; the figures below are for those\n",
                self.completed, self.n
            ));
        }
        out.push_str(&format!(
            "{} calls to {} ({} at a time) in {:.0} ms: {} ok, {} failed\n\n",
            self.completed, self.distributor, self.concurrency, self.elapsed_ms, self.ok, failed
        ));
        out.push_str("version    count   percent    p50 ms    p90 ms    p99 ms\n");
        for (version, s) in &self.versions {
            out.push_str(&format!(
                "{version:<8} {:>7} {:>8.1}% {:>9.2} {:>9.2} {:>9.2}\n",
                s.count, s.percent, s.latency_ms.p50, s.latency_ms.p90, s.latency_ms.p99
            ));
        }
        if self.versions.is_empty() {
            out.push_str("(no successful answers)\n");
        }
        if !self.errors.is_empty() {
            out.push_str("\nerrors:\n");
            for (kind, count) in &self.errors {
                out.push_str(&format!("  {kind:<20} {count}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 50.0), 50.0);
        assert_eq!(percentile_ms(&samples, 90.0), 90.0);
        assert_eq!(percentile_ms(&samples, 99.0), 99.0);
        assert_eq!(percentile_ms(&samples[..1], 99.0), 1.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
