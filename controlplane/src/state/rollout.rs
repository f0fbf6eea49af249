//! Rollouts: a route's traffic moved to one of its targets step by step, each step kept
//! only while the target's success rate and p99 pass, and the route put back as it was
//! when enough checks fail. This is a rollout's state and its rule, with no clock and no
//! I/O: given the time and the target's counts, what happens next. The driver that reads
//! the Envoys and stores each decision runs in whatever assembles the control plane.
//!
//! A rollout is part of a mesh's state (its `rollouts`, by `ROUTER/ROUTE`), stored
//! with its resources, so it survives a restart and is driven by one replica at a time
//! (the [`Lease`] in it).

use meshmodel::appmesh::WeightedTarget;
use serde::{Deserialize, Serialize};

/// Envoy's default histogram buckets (milliseconds): the bounds of [`Counts::buckets`].
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The most events a rollout keeps (the oldest go first).
pub const MAX_EVENTS: usize = 200;

/// What the callers' Envoys counted of the requests a route sent its target, since they
/// started: responses, of them 5xx, and response times per [`BUCKETS_MS`] bucket
/// (cumulative, as Envoy's histograms are).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub responses: u64,
    pub errors_5xx: u64,
    pub buckets: Vec<u64>,
}

impl Counts {
    /// What was counted after `earlier`; `None` when a counter went back (an Envoy or the
    /// receiver restarted), so the difference means nothing.
    pub fn since(&self, earlier: &Counts) -> Option<Counts> {
        let buckets = match earlier.buckets.is_empty() {
            true => self.buckets.clone(),
            false => self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, then)| now.checked_sub(*then))
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Counts {
            responses: self.responses.checked_sub(earlier.responses)?,
            errors_5xx: self.errors_5xx.checked_sub(earlier.errors_5xx)?,
            buckets,
        })
    }

    /// Non-5xx responses, in percent; `None` with no response.
    pub fn success_pct(&self) -> Option<f64> {
        (self.responses > 0).then(|| {
            100.0 * self.responses.saturating_sub(self.errors_5xx) as f64 / self.responses as f64
        })
    }

    /// The `q` quantile of the response times in milliseconds ([`bucket_quantile`]).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let buckets: Vec<f64> = self.buckets.iter().map(|c| *c as f64).collect();
        bucket_quantile(&buckets, q)
    }
}

/// The `q` quantile of cumulative counts `buckets` (bounds [`BUCKETS_MS`]), interpolated
/// linearly within its bucket as Prometheus' `histogram_quantile` does; `None` when they
/// count nothing. A quantile past the last bound is that bound.
pub fn bucket_quantile(buckets: &[f64], q: f64) -> Option<f64> {
    let total = *buckets.last()?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for (bound, count) in BUCKETS_MS.iter().zip(buckets) {
        if *count >= rank {
            let (lower, before) = below;
            let share = match count - before {
                d if d > 0.0 => (rank - before) / d,
                _ => 1.0,
            };
            return Some(lower + (bound - lower) * share);
        }
        below = (*bound, *count);
    }
    Some(below.0)
}

/// How a rollout moves: the target's weight at each step, how long each is watched, and
/// what it must show to go on. The defaults are those of Flagger's App Mesh tutorial
/// (steps of 5 up to 50, then all; 1 minute; 99% success; p99 500 ms; 5 failed checks),
/// plus a minimum of requests per check, which Flagger does not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The target's weight (percent) at each step, increasing; the route is the target's
    /// alone after the last (or at 100).
    pub steps: Vec<i64>,
    pub interval_ms: u64,
    /// The least share of non-5xx answers a check passes with, in percent.
    pub min_success_pct: f64,
    /// The highest p99 a check passes with, in milliseconds.
    pub max_p99_ms: f64,
    /// Fewer requests than this in a check's window hold the step (never promote blind).
    pub min_requests: u64,
    /// This many failed checks roll the route back.
    pub max_failed_checks: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            steps: vec![5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 100],
            interval_ms: 60_000,
            min_success_pct: 99.0,
            max_p99_ms: 500.0,
            min_requests: 20,
            max_failed_checks: 5,
        }
    }
}

/// A bad value in a rollout's request: the flag (or field) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct Refused {
    pub flag: &'static str,
    pub reason: String,
}

fn refused(flag: &'static str, reason: impl Into<String>) -> Refused {
    Refused {
        flag,
        reason: reason.into(),
    }
}

impl Plan {
    /// The plan, or the first value out of range, naming its flag.
    pub fn checked(self) -> Result<Self, Refused> {
        if self.steps.is_empty() {
            return Err(refused("--steps", "give at least one step"));
        }
        if let Some(bad) = self.steps.iter().find(|s| !(1..=100).contains(*s)) {
            return Err(refused(
                "--steps",
                format!("{bad} is not a weight from 1 to 100"),
            ));
        }
        if let Some(w) = self.steps.windows(2).find(|w| w[1] <= w[0]) {
            return Err(refused(
                "--steps",
                format!("steps must increase ({} then {})", w[0], w[1]),
            ));
        }
        if !(1_000..=86_400_000).contains(&self.interval_ms) {
            return Err(refused("--interval", "between 1s and 24h"));
        }
        if !(0.0..=100.0).contains(&self.min_success_pct) {
            return Err(refused("--min-success", "a percentage from 0 to 100"));
        }
        if !(self.max_p99_ms > 0.0 && self.max_p99_ms.is_finite()) {
            return Err(refused("--max-p99", "a positive duration"));
        }
        if self.min_requests == 0 {
            return Err(refused(
                "--min-requests",
                "at least 1 (a check on no request would promote blind)",
            ));
        }
        if self.max_failed_checks == 0 {
            return Err(refused("--max-failed-checks", "at least 1"));
        }
        Ok(self)
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum Phase {
    /// Checking the step in force.
    Progressing,
    /// Stopped where it is, by a person or because the route was changed by another hand.
    Paused { reason: String },
    /// The target is the route's only target.
    Succeeded,
    /// The route is back as it was before, after too many failed checks.
    RolledBack { reason: String },
    /// Stopped by a person; the route is back as it was before.
    Aborted,
}

impl Phase {
    /// Whether the rollout still holds its route (a second one on it is refused).
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Progressing | Self::Paused { .. })
    }
}

/// One thing that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `started`, `advanced`, `held`, `checkFailed`, `rolledBack`, `succeeded`,
    /// `paused`, `resumed`, `aborted`, `windowRestarted`, `driverChanged`.
    pub kind: String,
    pub message: String,
}

/// A rollout's first stage, when asked for: only the requests with a header go to the
/// target, by a route of their own (`ROUTE-ab`, matching what the route matches plus the
/// header, before it), while the route's weights stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbStage {
    pub header: String,
    pub value: String,
    /// The name of the A/B stage's route.
    pub route: String,
}

impl AbStage {
    /// The stage for `NAME=VALUE` on route `route`, or why not (naming `--header`).
    pub fn parse(pair: &str, route: &str) -> Result<Self, Refused> {
        let (header, value) = pair
            .split_once('=')
            .ok_or_else(|| refused("--header", format!("`{pair}`: write NAME=VALUE")))?;
        let header = header.trim().to_ascii_lowercase();
        let valid_name = !header.is_empty()
            && header.len() <= 50
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            return Err(refused(
                "--header",
                format!("`{header}` is not a header name (1-50 letters, digits, - _ .)"),
            ));
        }
        if value.is_empty() || value.len() > 255 {
            return Err(refused("--header", "the value must be 1 to 255 characters"));
        }
        Ok(Self {
            header,
            value: value.to_owned(),
            route: format!("{route}-ab"),
        })
    }
}

/// Which replica drives a rollout, until when (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub holder: String,
    pub until_ms: u64,
}

/// One rollout of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub router: String,
    pub route: String,
    /// The virtual node the traffic moves to.
    pub target: String,
    pub plan: Plan,
    /// The route's targets before the rollout: what a roll back or an abort puts back.
    pub before: Vec<WeightedTarget>,
    /// The route's targets as this rollout last set them.
    pub applied: Vec<WeightedTarget>,
    /// The A/B stage while it runs (the steps begin once it passes its check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbStage>,
    /// The index in `plan.steps` of the step in force (once the A/B stage is over).
    pub step: usize,
    #[serde(flatten)]
    pub phase: Phase,
    pub failed_checks: u32,
    /// The target's counts when the current check window opened; `None`: open it at the
    /// next look (after a start, a resume or a restart of the driver).
    pub baseline: Option<Counts>,
    /// When the current check window opened (ms since the epoch).
    pub window_from_ms: u64,
    /// Requests the target answered, and of them 5xx, over every check window.
    pub requests: u64,
    pub failed_requests: u64,
    pub started_ms: u64,
    pub events: Vec<Event>,
    pub lease: Option<Lease>,
}

impl Rollout {
    /// A rollout of `route` (of `router`, whose targets are now `current`) to `target`,
    /// its first step in force from `now_ms`; refused when `target` is not one of the
    /// route's targets or is already its only one.
    pub fn start(
        (router, route): (&str, &str),
        target: &str,
        (plan, ab): (Plan, Option<AbStage>),
        current: &[WeightedTarget],
        now_ms: u64,
    ) -> Result<Self, Refused> {
        let plan = plan.checked()?;
        let names: Vec<&str> = current.iter().map(|t| t.virtual_node.as_str()).collect();
        if !names.contains(&target) {
            return Err(refused(
                "--to",
                format!(
                    "`{target}` is not a target of route {route} (targets: {}); add it with weight 0 first",
                    names.join(", ")
                ),
            ));
        }
        if names.iter().all(|n| *n == target) {
            return Err(refused(
                "--to",
                format!("`{target}` is already the only target of route {route}"),
            ));
        }
        let mut rollout = Self {
            router: router.to_owned(),
            route: route.to_owned(),
            target: target.to_owned(),
            before: current.to_vec(),
            applied: Vec::new(),
            ab,
            step: 0,
            phase: Phase::Progressing,
            failed_checks: 0,
            baseline: None,
            window_from_ms: now_ms,
            requests: 0,
            failed_requests: 0,
            started_ms: now_ms,
            events: Vec::new(),
            lease: None,
            plan,
        };
        let first = rollout.plan.steps[0];
        let said = match &rollout.ab {
            Some(ab) => {
                rollout.applied = current.to_vec();
                format!(
                    "requests with {}: {} to {target} (route {}); then {first}% of route {route}",
                    ab.header, ab.value, ab.route
                )
            }
            None => {
                rollout.applied = rollout.weights_at(first);
                format!("{first}% of route {route} to {target}")
            }
        };
        rollout.event(now_ms, "started", said);
        Ok(rollout)
    }

    /// The key of a rollout in its mesh: `ROUTER/ROUTE`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.router, self.route)
    }

    /// The route whose requests to the target the checks judge: the A/B stage's while it
    /// runs, else the rollout's.
    pub fn checked_route(&self) -> &str {
        self.ab.as_ref().map_or(&self.route, |ab| &ab.route)
    }

    /// The weight (percent) the target has now.
    pub fn weight(&self) -> i64 {
        self.applied
            .iter()
            .find(|t| t.virtual_node == self.target)
            .map_or(0, |t| t.weight)
    }

    /// The route's targets with `pct` percent to the target and the rest shared by the
    /// others in proportion to their weights before the rollout (evenly when those were
    /// all 0), summing to 100 exactly; at 100, the target alone.
    pub fn weights_at(&self, pct: i64) -> Vec<WeightedTarget> {
        let alone = |t: &WeightedTarget| WeightedTarget {
            weight: 100,
            ..t.clone()
        };
        if pct >= 100 {
            return self
                .before
                .iter()
                .filter(|t| t.virtual_node == self.target)
                .map(alone)
                .collect();
        }
        let others: Vec<&WeightedTarget> = self
            .before
            .iter()
            .filter(|t| t.virtual_node != self.target)
            .collect();
        let sum: i64 = others.iter().map(|t| t.weight.max(0)).sum();
        let rest = 100 - pct;
        let share = |t: &WeightedTarget| match sum {
            0 => rest as f64 / others.len() as f64,
            _ => rest as f64 * t.weight.max(0) as f64 / sum as f64,
        };
        // Largest remainder: floors first, then one each to the largest fractions.
        let mut floors: Vec<(i64, f64)> = others
            .iter()
            .map(|t| {
                let s = share(t);
                (s.floor() as i64, s - s.floor())
            })
            .collect();
        let mut left = rest - floors.iter().map(|(f, _)| f).sum::<i64>();
        let mut order: Vec<usize> = (0..floors.len()).collect();
        order.sort_by(|a, b| floors[*b].1.total_cmp(&floors[*a].1));
        for i in order {
            if left <= 0 {
                break;
            }
            floors[i].0 += 1;
            left -= 1;
        }
        let mut others = others.into_iter().zip(floors);
        self.before
            .iter()
            .map(|t| match t.virtual_node == self.target {
                true => WeightedTarget {
                    weight: pct,
                    ..t.clone()
                },
                false => {
                    let (_, (weight, _)) = others.next().expect("one per other target");
                    WeightedTarget {
                        weight,
                        ..t.clone()
                    }
                }
            })
            .collect()
    }

    fn event(&mut self, at_ms: u64, kind: &str, message: String) {
        tracing::info!(rollout = %self.key(), kind, "{message}");
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(Event {
            at_ms,
            kind: kind.to_owned(),
            message,
        });
    }

    /// Looks at the target's counts `counts` (`None`: nobody could say) at `now_ms`; the
    /// route's new targets when the look decides a step, a promotion or a roll back.
    pub fn decide(&mut self, now_ms: u64, counts: Option<&Counts>) -> Option<Vec<WeightedTarget>> {
        if self.phase != Phase::Progressing {
            return None;
        }
        let Some(baseline) = &self.baseline else {
            if let Some(counts) = counts {
                self.open_window(now_ms, counts);
            }
            return None;
        };
        if now_ms < self.window_from_ms + self.plan.interval_ms {
            return None;
        }
        let counts = counts?;
        let Some(window) = counts.since(baseline) else {
            self.event(
                now_ms,
                "windowRestarted",
                "the Envoys' counters went back (a restart); the check window opens again"
                    .to_owned(),
            );
            self.open_window(now_ms, counts);
            return None;
        };
        // Envoy's histograms reach the counts at its stats flush, later than its
        // counters: a window whose response times are not in yet is not judged either.
        let timed = window.buckets.last().copied().unwrap_or(0);
        if window.responses < self.plan.min_requests || timed < self.plan.min_requests {
            let why = match window.responses < self.plan.min_requests {
                true => format!(
                    "{} requests to {} since the step, fewer than {}",
                    window.responses, self.target, self.plan.min_requests
                ),
                false => format!(
                    "{} requests to {} since the step, but only {timed} with their response times in (Envoy's stats flush), fewer than {}",
                    window.responses, self.target, self.plan.min_requests
                ),
            };
            self.event(now_ms, "held", format!("{why}: the step holds"));
            // The window stays open: the next check counts these requests too.
            self.window_from_ms = now_ms;
            return None;
        }
        self.requests += window.responses;
        self.failed_requests += window.errors_5xx;
        let success = window.success_pct().unwrap_or(100.0);
        let p99 = window.quantile_ms(0.99);
        let failure = match (success < self.plan.min_success_pct, p99) {
            (true, _) => Some(format!(
                "success {success:.1}% < {}%",
                self.plan.min_success_pct
            )),
            (false, Some(p99)) if p99 > self.plan.max_p99_ms => {
                Some(format!("p99 {p99:.0} ms > {} ms", self.plan.max_p99_ms))
            }
            _ => None,
        };
        let measured = format!(
            "{} requests, success {success:.1}%, p99 {}",
            window.responses,
            p99.map_or("-".to_owned(), |p| format!("{p:.0} ms"))
        );
        self.open_window(now_ms, counts);
        if let Some(why) = failure {
            self.failed_checks += 1;
            self.event(
                now_ms,
                "checkFailed",
                format!(
                    "{why} ({measured}); failed checks {}/{}",
                    self.failed_checks, self.plan.max_failed_checks
                ),
            );
            if self.failed_checks >= self.plan.max_failed_checks {
                let reason = format!("{} failed checks; the last: {why}", self.failed_checks);
                self.event(
                    now_ms,
                    "rolledBack",
                    format!("route {} back as it was: {reason}", self.route),
                );
                self.phase = Phase::RolledBack { reason };
                self.applied = self.before.clone();
                self.ab = None;
                return Some(self.applied.clone());
            }
            return None;
        }
        if let Some(ab) = self.ab.take() {
            let first = self.plan.steps[0];
            self.applied = self.weights_at(first);
            self.event(
                now_ms,
                "advanced",
                format!(
                    "A/B stage passed ({measured}); route {} removed, {first}% of route {} to {}",
                    ab.route, self.route, self.target
                ),
            );
            return Some(self.applied.clone());
        }
        let next = self.step + 1;
        match self.plan.steps.get(next).filter(|pct| **pct < 100) {
            Some(pct) => {
                let pct = *pct;
                self.step = next;
                self.applied = self.weights_at(pct);
                self.event(
                    now_ms,
                    "advanced",
                    format!("{pct}% to {} ({measured})", self.target),
                );
            }
            None => {
                self.step = self.plan.steps.len() - 1;
                self.applied = self.weights_at(100);
                self.phase = Phase::Succeeded;
                self.event(
                    now_ms,
                    "succeeded",
                    format!(
                        "{} is the only target of route {} ({measured})",
                        self.target, self.route
                    ),
                );
            }
        }
        Some(self.applied.clone())
    }

    fn open_window(&mut self, now_ms: u64, counts: &Counts) {
        self.baseline = Some(counts.clone());
        self.window_from_ms = now_ms;
    }

    /// Stops the rollout where it is, saying why.
    pub fn pause(&mut self, now_ms: u64, reason: String) {
        if self.phase == Phase::Progressing {
            self.event(now_ms, "paused", reason.clone());
            self.phase = Phase::Paused { reason };
        }
    }

    /// Goes on from the step it was paused at; the route's targets to set again (a
    /// person may have changed them meanwhile). The check window opens anew.
    pub fn resume(&mut self, now_ms: u64) -> Option<Vec<WeightedTarget>> {
        if !matches!(self.phase, Phase::Paused { .. }) {
            return None;
        }
        self.phase = Phase::Progressing;
        self.baseline = None;
        self.window_from_ms = now_ms;
        self.event(
            now_ms,
            "resumed",
            format!("at {}% to {}", self.weight(), self.target),
        );
        Some(self.applied.clone())
    }

    /// Stops the rollout for good; the route's targets as they were before it.
    pub fn abort(&mut self, now_ms: u64) -> Option<Vec<WeightedTarget>> {
        if !self.phase.is_active() {
            return None;
        }
        self.phase = Phase::Aborted;
        self.applied = self.before.clone();
        self.ab = None;
        self.event(
            now_ms,
            "aborted",
            format!("route {} back as it was", self.route),
        );
        Some(self.applied.clone())
    }

    /// Whether replica `me` may drive the rollout at `now_ms`: it holds the lease, or
    /// nobody holds one that still runs.
    pub fn drivable_by(&self, me: &str, now_ms: u64) -> bool {
        self.lease
            .as_ref()
            .is_none_or(|l| l.holder == me || l.until_ms <= now_ms)
    }

    /// Takes or renews the lease for `me` until `until_ms`, saying so when it changes hands.
    pub fn hold_lease(&mut self, me: &str, now_ms: u64, until_ms: u64) {
        let previous = self.lease.as_ref().map(|l| l.holder.clone());
        if previous.as_deref() != Some(me) {
            if let Some(previous) = previous {
                self.event(
                    now_ms,
                    "driverChanged",
                    format!("driven by {me} (was {previous}, whose lease ran out)"),
                );
            }
            // The new driver has not seen the counts the old one compared against.
            self.baseline = None;
            self.window_from_ms = now_ms;
        }
        self.lease = Some(Lease {
            holder: me.to_owned(),
            until_ms,
        });
    }
}

#[cfg(test)]
mod tests;
