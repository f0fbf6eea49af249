//! Rollouts with real Envoys (`up`): a healthy v2 promoted step by step, a failing or slow
//! one rolled back by itself, no traffic holding a step, and every bad request refused
//! with nothing changed. With `serve`: a rollout survives `kill -9` of the control plane
//! (redb), and with two replicas on one DynamoDB table (moto) the other takes it over.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::serve::{Serve, moto_with_table, replica};
use tests::{
    LocalMesh, SERVE_ON_LOOPBACK, cli_against, client, compare, copy_of_shipped, edit_json,
    get_json, route_weights,
};

/// The rollout of route `route` as `GET /v1/rollouts` at `control` shows it.
async fn rollout_at(control: &str, route: &str) -> Value {
    let all = get_json(&format!("{control}/v1/rollouts")).await;
    all["rollouts"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["route"] == route).cloned())
        .unwrap_or(Value::Null)
}

/// What the requester saw while the mesh carried a rollout.
#[derive(Debug, Default)]
struct Seen {
    calls: u64,
    failed: u64,
}

/// Sends calls through the requester (batches of 40, 4 at a time) until the rollout of
/// the `distributor` route is in `phase`, for at most `limit`; the rollout then, and what
/// the calls saw.
async fn load_until(mesh: &LocalMesh, phase: &str, limit: Duration) -> (Value, Seen) {
    let deadline = Instant::now() + limit;
    let mut seen = Seen::default();
    loop {
        let r = rollout_at(&mesh.control, "distributor").await;
        if r["phase"] == phase {
            return (r, seen);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout is not {phase} after {limit:?}: {r:#}"
        );
        let report = compare(mesh, 40, 4).await;
        seen.calls += 40;
        seen.failed += 40 - report["ok"].as_u64().unwrap_or(0);
    }
}

fn kinds(r: &Value) -> Vec<String> {
    r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn weights(mesh: &LocalMesh) -> Vec<i64> {
    route_weights(&mesh.status().await, "distributor")
}

/// A healthy v2: with no traffic the first step holds; with traffic it goes 30, 60, then
/// v2 alone, and the canary route is left alone. Bad requests before and during it are
/// refused naming their flag, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_v2_is_promoted_step_by_step_and_bad_requests_change_nothing() {
    let dir = copy_of_shipped("rollout-healthy");
    let mesh = LocalMesh::start(&dir);
    let refused = |args: &[&str], says: &str| {
        let (code, said) = mesh.cli(args);
        assert_ne!(code, 0, "{args:?} was accepted: {said}");
        assert!(said.contains(says), "{args:?} should say `{says}`: {said}");
    };
    let start = |extra: &'static [&'static str]| {
        let mut args = tests::rollout_to_v2("30,60,100", &[]);
        args.extend_from_slice(extra);
        args
    };
    refused(
        &["rollout", "start", "nope", "--to", "distributor-v2"],
        "no route `nope`",
    );
    refused(
        &["rollout", "start", "distributor", "--to", "requester"],
        "--to: `requester` is not a target of route distributor",
    );
    refused(
        &tests::rollout_to_v2("30,20", &[]),
        "--steps: steps must increase",
    );
    refused(&start(&["--min-success", "120"]), "--min-success");
    refused(&start(&["--max-p99", "soon"]), "--max-p99");
    refused(&start(&["--max-failed-checks", "0"]), "--max-failed-checks");
    refused(&start(&["--min-requests", "0"]), "--min-requests");
    refused(&start(&["--interval", "10ms"]), "--interval");
    refused(&["rollout", "pause", "distributor"], "has no rollout");
    assert_eq!(weights(&mesh).await, [90, 10], "nothing changed");

    let (code, said) = mesh.cli(&start(&[]));
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("30% now"), "{said}");
    assert_eq!(weights(&mesh).await, [70, 30]);
    refused(&start(&[]), "already has a rollout in progress");

    // No traffic: the step holds, no check fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let r = rollout_at(&mesh.control, "distributor").await;
        if kinds(&r).iter().any(|k| k == "held") {
            break r;
        }
        assert!(Instant::now() < deadline, "never held: {r:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (held["weight"].as_i64(), held["failedChecks"].as_u64()),
        (Some(30), Some(0))
    );

    let (done, seen) = load_until(&mesh, "succeeded", Duration::from_secs(90)).await;
    let steps: Vec<String> = kinds(&done);
    assert!(
        steps.iter().filter(|k| *k == "advanced").count() == 1
            && steps.iter().any(|k| k == "succeeded")
            && !steps.iter().any(|k| k == "checkFailed"),
        "{done:#}"
    );
    assert_eq!(seen.failed, 0, "calls failed during a healthy rollout");
    let status = mesh.status().await;
    assert_eq!(route_weights(&status, "distributor"), [100], "v2 alone");
    assert_eq!(route_weights(&status, "distributor-canary"), [100]);
    // Every step was an ordinary route update: the App Mesh API's version counts them.
    let described = get_json(&format!(
        "{}/v20190125/meshes/gophermesh/virtualRouter/distributor/routes/distributor",
        mesh.api
    ))
    .await;
    assert!(
        described["metadata"]["version"].as_i64() >= Some(4),
        "start, 60, 100 each bump the route: {described}"
    );
    // /metrics shows the rollout.
    let text = tests::metrics_text(&mesh.control).await;
    assert!(
        text.contains("gophermesh_rollout_weight{Mesh=\"gophermesh\",VirtualRouter=\"distributor\",Route=\"distributor\",TargetVirtualNode=\"distributor-v2\"} 100"),
        "{text}"
    );
    let (code, said) = mesh.cli(&["rollout", "status"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("succeeded at 100%"), "{said}");
}

/// Starts `up` with distributor v2's app told `name=value`, runs a rollout to it, and
/// loads the mesh until it is rolled back: the route is back at 90/10, and the figures.
async fn rolled_back_with(label: &str, name: &str, value: &str) -> (Value, Seen) {
    let dir = copy_of_shipped(label);
    edit_json(&dir, "taskdefs/distributor-v2.json", |td| {
        td["containerDefinitions"][0]["environment"]
            .as_array_mut()
            .expect("env")
            .push(serde_json::json!({"name": name, "value": value}));
    });
    let mesh = LocalMesh::start(&dir);
    let (code, said) = mesh.cli(&tests::rollout_to_v2(
        "20,50,100",
        &["--max-failed-checks", "2"],
    ));
    assert_eq!(code, 0, "{said}");
    let (r, seen) = load_until(&mesh, "rolledBack", Duration::from_secs(90)).await;
    assert_eq!(weights(&mesh).await, [90, 10], "back as it was: {r:#}");
    assert_eq!(r["weight"], 10);
    assert_eq!(r["failedChecks"], 2, "{r:#}");
    assert!(!kinds(&r).iter().any(|k| k == "advanced"), "{r:#}");
    eprintln!(
        "{label}: rolled back after {} calls; {} of them failed for the caller; the checks counted {} requests to v2, {} of them 5xx (retries included)",
        seen.calls, seen.failed, r["requests"], r["failedRequests"]
    );
    (r, seen)
}

/// v2 fails 20% of its answers: two failed checks on success rate put the route back;
/// the route's retries keep what callers see far below that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_that_fails_a_fifth_of_its_answers_is_rolled_back() {
    let (r, seen) = rolled_back_with("rollout-errors", "ERROR_RATE", "0.2").await;
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("success"), "{r:#}");
    assert!(r["failedRequests"].as_u64() > Some(0), "{r:#}");
    // At most 20% (the rollout's weight) of calls reach v2, and each failing call failed
    // three attempts there: bounded well below 2% of the calls.
    assert!(
        (seen.failed as f64) < 0.02 * seen.calls as f64 + 2.0,
        "{} of {} calls failed",
        seen.failed,
        seen.calls
    );
}

/// v2 answers in 800 ms: its p99 fails the checks (500 ms) and the route goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_v2_is_rolled_back_on_its_p99() {
    let (r, seen) = rolled_back_with("rollout-latency", "LATENCY_MS", "800").await;
    assert!(
        r["reason"].as_str().unwrap_or_default().contains("p99"),
        "{r:#}"
    );
    assert_eq!(seen.failed, 0, "slow, not failing");
}

/// Starts a rollout through the control API at `control`, reading the token from `dir`
/// (`state_dir` under it); with a long interval, so that it only holds.
fn start_through(control: &str, dir: &Path, state_dir: &str) {
    let (code, said) = cli_against(
        control,
        dir,
        &[
            "rollout",
            "start",
            "distributor",
            "--to",
            "distributor-v2",
            "--interval",
            "2s",
            "--state-dir",
            state_dir,
        ],
    );
    assert_eq!(code, 0, "{said}");
}

/// Waits until the rollout at `control` is driven by someone other than `not` and has
/// said so; its holder.
async fn until_taken_over(control: &str, not: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let r = rollout_at(control, "distributor").await;
        let holder = r["lease"]["holder"].as_str().unwrap_or_default().to_owned();
        if !holder.is_empty() && holder != not && kinds(&r).iter().any(|k| k == "driverChanged") {
            assert_eq!(r["phase"], "progressing", "{r:#}");
            return holder;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over from {not}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn holder_at(control: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let r = rollout_at(control, "distributor").await;
        if let Some(h) = r["lease"]["holder"].as_str() {
            return h.to_owned();
        }
        assert!(Instant::now() < deadline, "nobody drives it: {r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -9` of `serve` mid-rollout: started again on the same state, it holds the
/// rollout where it was and drives it again once the dead one's lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_kill_9_of_the_control_plane() {
    let dir = copy_of_shipped("rollout-restart");
    let mut args = vec!["--data-dir", "state"];
    args.extend_from_slice(SERVE_ON_LOOPBACK);
    let mut first = Serve::start(&dir, &args, &[]);
    start_through(&first.control, &dir, ".gophermesh");
    let dead = holder_at(&first.control, Duration::from_secs(10)).await;
    first.child.0.kill().expect("kill -9");
    let _ = first.child.0.wait();

    let second = Serve::start(&dir, &args, &[]);
    let r = rollout_at(&second.control, "distributor").await;
    assert_eq!(
        (r["phase"].as_str(), r["weight"].as_i64()),
        (Some("progressing"), Some(5)),
        "{r:#}"
    );
    until_taken_over(&second.control, &dead, Duration::from_secs(30)).await;
}

/// Two replicas on one table: the rollout started through one is driven by one; when
/// that one dies, the other takes it over within the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_one_drives_and_the_other_takes_over() {
    let dir = copy_of_shipped("rollout-replicas");
    let (_moto, env) = moto_with_table(tests::serve::TABLE);
    let a = replica(&dir, "a", "127.0.0.1", &env);
    let b = replica(&dir, "b", "127.0.0.1", &env);
    start_through(&a.control, &dir, "a");
    let first = holder_at(&b.control, Duration::from_secs(10)).await;
    // Only one replica drives it: the holder stays the same while both run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder_at(&a.control, Duration::from_secs(1)).await, first);
    // The holder is HOST/PID/TAG: kill that replica, watch from the other.
    let pid_of = |s: &Serve| format!("/{}/", s.child.0.id());
    let (mut driver, other) = match first.contains(&pid_of(&a)) {
        true => (a, b),
        false => (b, a),
    };
    assert!(
        first.contains(&pid_of(&driver)),
        "{first} is neither replica"
    );
    driver.child.0.kill().expect("kill -9");
    let _ = driver.child.0.wait();
    until_taken_over(&other.control, &first, Duration::from_secs(30)).await;
}

/// `/compare` through the requester with `x-gopher-version: VALUE` (passed on to the
/// distributor, so a route matching it decides).
async fn compare_asking(mesh: &LocalMesh, value: &str) -> Value {
    client()
        .get(format!(
            "{}/compare?n=40&concurrency=4&format=json",
            mesh.requester
        ))
        .header("x-gopher-version", value)
        .send()
        .await
        .expect("compare answered")
        .json()
        .await
        .expect("json")
}

/// An A/B stage first: only requests with the header reach v2 by a route of their own
/// while the weights stay; once it passes, the steps begin and that route goes; an
/// abort puts everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_stage_sends_only_the_headers_requests_first() {
    let dir = copy_of_shipped("rollout-ab");
    let mesh = LocalMesh::start(&dir);
    let (code, said) = mesh.cli(&tests::rollout_to_v2(
        "50,100",
        &["--header", "x-gopher-version=beta"],
    ));
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("A/B stage first"), "{said}");
    assert_eq!(weights(&mesh).await, [90, 10], "the weights stay");
    tests::until_routes_acked(&mesh, "requester").await;
    let asked = compare_asking(&mesh, "beta").await;
    assert_eq!(tests::count(&asked, "v2"), 40.0, "{asked}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rollout_at(&mesh.control, "distributor").await;
        if r["ab"].is_null() {
            assert_eq!(r["weight"], 50, "{r:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the A/B stage never passed: {r:#}"
        );
        compare_asking(&mesh, "beta").await;
    }
    assert_eq!(weights(&mesh).await, [50, 50]);
    let routes = get_json(&format!(
        "{}/v20190125/meshes/gophermesh/virtualRouter/distributor/routes",
        mesh.api
    ))
    .await;
    assert!(
        !routes.to_string().contains("distributor-ab"),
        "the A/B route stays: {routes}"
    );
    let (code, said) = mesh.cli(&["rollout", "abort", "distributor"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("aborted"), "{said}");
    assert_eq!(weights(&mesh).await, [90, 10]);
}
