use super::*;

fn target(node: &str, weight: i64) -> WeightedTarget {
    WeightedTarget {
        virtual_node: node.to_owned(),
        weight,
        port: None,
    }
}

fn weights(targets: &[WeightedTarget]) -> Vec<(String, i64)> {
    targets
        .iter()
        .map(|t| (t.virtual_node.clone(), t.weight))
        .collect()
}

/// `responses` answers so far, `errors` of them 5xx, every one taking `ms`.
fn counts(responses: u64, errors: u64, ms: f64) -> Counts {
    Counts {
        responses,
        errors_5xx: errors,
        buckets: BUCKETS_MS
            .iter()
            .map(|b| if ms <= *b { responses } else { 0 })
            .collect(),
    }
}

fn plan(steps: &[i64]) -> Plan {
    Plan {
        steps: steps.to_vec(),
        interval_ms: 1_000,
        min_requests: 10,
        max_failed_checks: 2,
        ..Plan::default()
    }
}

fn walkthrough(steps: &[i64]) -> Rollout {
    Rollout::start(
        ("distributor", "distributor"),
        "distributor-v2",
        (plan(steps), None),
        &[target("distributor-v1", 90), target("distributor-v2", 10)],
        0,
    )
    .expect("starts")
}

#[test]
fn the_others_share_what_the_target_leaves_in_their_old_proportions() {
    let r = walkthrough(&[25, 100]);
    assert_eq!(
        weights(&r.applied),
        [("distributor-v1".into(), 75), ("distributor-v2".into(), 25)]
    );
    assert_eq!(
        weights(&r.weights_at(100)),
        [("distributor-v2".into(), 100)]
    );
    let three = Rollout::start(
        ("r", "route"),
        "c",
        (plan(&[10]), None),
        &[target("a", 50), target("b", 30), target("c", 20)],
        0,
    )
    .expect("starts");
    // 90 shared 50:30 is 56.25 and 33.75: the larger remainder gets the odd point.
    assert_eq!(
        weights(&three.applied),
        [("a".into(), 56), ("b".into(), 34), ("c".into(), 10)]
    );
}

#[test]
fn a_healthy_target_is_promoted_step_by_step_then_alone() {
    let mut r = walkthrough(&[10, 50, 100]);
    assert_eq!(
        r.decide(0, Some(&counts(0, 0, 3.0))),
        None,
        "opens the window"
    );
    assert_eq!(r.decide(500, Some(&counts(30, 0, 3.0))), None, "too early");
    let second = r
        .decide(1_000, Some(&counts(30, 0, 3.0)))
        .expect("advances");
    assert_eq!(
        weights(&second),
        [("distributor-v1".into(), 50), ("distributor-v2".into(), 50)]
    );
    let last = r
        .decide(2_000, Some(&counts(80, 0, 3.0)))
        .expect("promotes");
    assert_eq!(weights(&last), [("distributor-v2".into(), 100)]);
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!((r.requests, r.failed_requests), (80, 0));
    assert_eq!(r.decide(3_000, Some(&counts(90, 0, 3.0))), None, "done");
}

#[test]
fn errors_roll_the_route_back_after_the_failed_checks() {
    let mut r = walkthrough(&[10, 50, 100]);
    r.decide(0, Some(&counts(0, 0, 3.0)));
    // 20% of the answers fail: one failed check, the step holds.
    assert_eq!(r.decide(1_000, Some(&counts(50, 10, 3.0))), None);
    assert_eq!((r.failed_checks, r.step), (1, 0));
    let back = r
        .decide(2_000, Some(&counts(100, 20, 3.0)))
        .expect("rolls back");
    assert_eq!(weights(&back), weights(&r.before));
    assert!(matches!(&r.phase, Phase::RolledBack { reason } if reason.contains("success 80.0%")));
    assert_eq!((r.requests, r.failed_requests), (100, 20));
}

#[test]
fn a_slow_target_fails_on_its_p99() {
    let mut r = walkthrough(&[10, 100]);
    r.decide(0, Some(&counts(0, 0, 800.0)));
    assert_eq!(r.decide(1_000, Some(&counts(40, 0, 800.0))), None);
    let last = r.events.last().expect("an event");
    assert_eq!(last.kind, "checkFailed");
    assert!(last.message.contains("p99 "), "{}", last.message);
    assert!(r.decide(2_000, Some(&counts(80, 0, 800.0))).is_some());
    assert!(matches!(r.phase, Phase::RolledBack { .. }));
}

#[test]
fn too_few_requests_hold_the_step_without_failing_it() {
    let mut r = walkthrough(&[10, 100]);
    r.decide(0, Some(&counts(0, 0, 3.0)));
    for at in [1_000, 2_000, 3_000] {
        assert_eq!(r.decide(at, Some(&counts(3, 0, 3.0))), None);
    }
    assert_eq!((r.failed_checks, r.step), (0, 0));
    assert_eq!(r.events.last().map(|e| e.kind.as_str()), Some("held"));
    // Answers whose response times are not in yet (Envoy's histograms lag its counters
    // until its stats flush) hold the step too.
    let untimed = Counts {
        buckets: vec![0; BUCKETS_MS.len()],
        ..counts(30, 0, 3.0)
    };
    assert_eq!(r.decide(4_000, Some(&untimed)), None);
    let last = r.events.last().expect("an event");
    assert!(last.message.starts_with("30 requests"), "{}", last.message);
    assert!(last.message.contains("only 0 with their response times in"));
    assert_eq!((r.failed_checks, r.step), (0, 0));
    // Nobody can say (no Envoy answered): nothing happens either.
    assert_eq!(r.decide(5_000, None), None);
    // The held requests count with the later ones.
    assert!(r.decide(6_000, Some(&counts(12, 0, 3.0))).is_some());
}

#[test]
fn counters_that_go_back_restart_the_window() {
    let mut r = walkthrough(&[10, 100]);
    r.decide(0, Some(&counts(500, 0, 3.0)));
    assert_eq!(r.decide(1_000, Some(&counts(40, 0, 3.0))), None);
    assert_eq!(
        r.events.last().map(|e| e.kind.as_str()),
        Some("windowRestarted")
    );
    assert!(r.decide(2_000, Some(&counts(80, 0, 3.0))).is_some());
}

#[test]
fn pause_resume_and_abort() {
    let mut r = walkthrough(&[10, 50, 100]);
    r.pause(5, "by hand".into());
    assert_eq!(r.decide(10_000, Some(&counts(100, 0, 3.0))), None, "paused");
    let again = r.resume(20).expect("resumes");
    assert_eq!(again, r.applied);
    assert_eq!(r.baseline, None, "a new window");
    let back = r.abort(30).expect("aborts");
    assert_eq!(back, r.before);
    assert_eq!(r.abort(40), None, "once");
    assert!(!r.phase.is_active());
}

#[test]
fn a_lease_is_held_by_one_replica_until_it_runs_out() {
    let mut r = walkthrough(&[10, 100]);
    assert!(r.drivable_by("a", 0));
    r.hold_lease("a", 0, 15_000);
    assert!(r.drivable_by("a", 1_000));
    assert!(!r.drivable_by("b", 14_999));
    assert!(r.drivable_by("b", 15_000));
    r.decide(15_000, Some(&counts(10, 0, 3.0)));
    r.hold_lease("b", 15_000, 30_000);
    assert_eq!(r.baseline, None, "the new driver opens its own window");
    assert_eq!(
        r.events.last().map(|e| e.kind.as_str()),
        Some("driverChanged")
    );
}

#[test]
fn bad_plans_and_targets_are_refused_naming_the_flag() {
    let bad = |p: Plan| p.checked().expect_err("refused").flag;
    assert_eq!(bad(plan(&[])), "--steps");
    assert_eq!(bad(plan(&[10, 10])), "--steps");
    assert_eq!(bad(plan(&[50, 20])), "--steps");
    assert_eq!(bad(plan(&[0, 20])), "--steps");
    assert_eq!(bad(plan(&[101])), "--steps");
    let p = |change: fn(&mut Plan)| {
        let mut p = plan(&[10]);
        change(&mut p);
        p
    };
    assert_eq!(bad(p(|p| p.interval_ms = 10)), "--interval");
    assert_eq!(bad(p(|p| p.min_success_pct = 101.0)), "--min-success");
    assert_eq!(bad(p(|p| p.max_p99_ms = 0.0)), "--max-p99");
    assert_eq!(bad(p(|p| p.min_requests = 0)), "--min-requests");
    assert_eq!(bad(p(|p| p.max_failed_checks = 0)), "--max-failed-checks");
    let current = [target("v1", 100), target("v2", 0)];
    let start = |to: &str, current: &[WeightedTarget]| {
        Rollout::start(("r", "route"), to, (plan(&[10]), None), current, 0)
            .expect_err("refused")
            .to_string()
    };
    assert!(start("v3", &current).starts_with("--to: `v3` is not a target"));
    assert!(start("v1", &[target("v1", 100)]).contains("already the only target"));
}

#[test]
fn quantiles_interpolate_within_envoys_buckets() {
    assert_eq!(counts(0, 0, 1.0).quantile_ms(0.99), None);
    // Every answer in (500, 1000]: the p99 is 99% of the way through that bucket.
    let p99 = counts(100, 0, 800.0).quantile_ms(0.99).expect("some");
    assert!((p99 - 995.0).abs() < 1e-9, "{p99}");
    let p50 = counts(100, 0, 3.0).quantile_ms(0.5).expect("some");
    assert!((1.0..=5.0).contains(&p50), "{p50}");
}
