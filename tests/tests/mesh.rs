//! The local mesh: `gophermesh up` with real Envoy sidecars programmed over ADS.

use std::time::Duration;

use serde_json::Value;
use tests::{
    CHI2_BOUND, LocalMesh, Mode, chi_square, client, compare, copy_of_shipped, count, shift_all,
    until_routes_acked,
};

/// Each scenario runs once per networking mode: `loopback::NAME` and `netns::NAME`.
macro_rules! in_each_mode {
    ($($name:ident),* $(,)?) => {
        mod loopback {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Mode::Loopback).await;
                }
            )*
        }
        mod netns {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Mode::Netns).await;
                }
            )*
        }
    };
}

in_each_mode!(
    the_walkthrough_runs_locally_and_shifts_live,
    shifting_weights_under_load_fails_no_request,
    crashes_are_restarted_and_retries_hide_a_flaky_v2,
);

/// With `--containers` the same walkthrough and load; crashes are another matter there (an
/// essential container's exit stops its task, as on ECS: see tests/containers.rs).
mod containers {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_walkthrough_runs_locally_and_shifts_live() {
        super::the_walkthrough_runs_locally_and_shifts_live(tests::Mode::Containers).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shifting_weights_under_load_fails_no_request() {
        super::shifting_weights_under_load_fails_no_request(tests::Mode::Containers).await;
    }
}

async fn the_walkthrough_runs_locally_and_shifts_live(mode: Mode) {
    let dir = copy_of_shipped("walkthrough");
    let mesh = LocalMesh::start_in(&dir, mode);
    let out = mesh.output();
    assert!(out.contains("The requester answers at"), "{out}");

    let text = client()
        .get(&mesh.requester)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(text.starts_with("distributor v"), "{text}");

    let report = split_90_10_with_a_v2_canary(&mesh, 200).await;
    let chi_50 = chi_square(&report, 0.5);
    assert!(
        chi_50 > CHI2_BOUND,
        "a 50/50 hypothesis must be rejected, chi-square {chi_50:.2}"
    );

    // Into the mesh through the ingress gateway's task: `/distributor/` gets the
    // distributor's routes (90/10, the prefix rewritten to `/`), the rest the requester.
    {
        let gateway = mesh
            .gateway
            .clone()
            .unwrap_or_else(|| panic!("the ingress gateway was not published:\n{out}"));
        let (mut v1, mut v2) = (0.0f64, 0.0f64);
        for _ in 0..400 {
            let r = client()
                .get(format!("{gateway}/distributor/"))
                .send()
                .await
                .expect("the gateway answers");
            assert_eq!(r.status(), 200);
            match r.headers().get("x-gopher-version").map(|v| v.as_bytes()) {
                Some(b"v1") => v1 += 1.0,
                Some(b"v2") => v2 += 1.0,
                other => panic!("an answer from no version: {other:?}"),
            }
        }
        let chi = (v1 - 360.0).powi(2) / 360.0 + (v2 - 40.0).powi(2) / 40.0;
        assert!(
            chi < CHI2_BOUND,
            "not 90/10 through the gateway: v1 {v1}, v2 {v2}"
        );
        let text = client()
            .get(format!("{gateway}/"))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        assert!(
            text.starts_with("distributor v"),
            "the requester behind the gateway: {text}"
        );
    }

    // Shift everything to v2, then to v1.
    shift_all(&mesh, "v2", "v1", &[]).await;
    shift_all(&mesh, "v1", "v2", &["--save"]).await;
    let saved = std::fs::read_to_string(dir.join("mesh/routes/distributor.json")).expect("saved");
    let saved: Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(
        saved["spec"]["httpRoute"]["action"]["weightedTargets"][1]["weight"],
        0
    );
    assert_eq!(
        saved["spec"]["httpRoute"]["retryPolicy"]["maxRetries"], 2,
        "the rest of the route is kept"
    );

    // Bad changes are refused with a reason, and routing stays as it was.
    for (args, reason) in [
        (
            vec![
                "route",
                "set",
                "distributor",
                "distributor-v1=0",
                "distributor-v2=0",
            ],
            "every weight is 0",
        ),
        (
            vec!["route", "set", "distributor", "distributor-v3=100"],
            "`distributor-v3` is not a target",
        ),
        (
            vec![
                "route",
                "set",
                "distributor",
                "distributor-v1=101",
                "distributor-v2=0",
            ],
            "101 is out of range",
        ),
        (vec!["route", "set", "nope", "a=1"], "no route `nope`"),
        (
            vec!["route", "set", "distributor", "distributor-v1"],
            "write NODE=WEIGHT",
        ),
    ] {
        let (code, said) = mesh.cli(&args);
        assert_ne!(code, 0, "{args:?} was accepted: {said}");
        assert!(said.contains(reason), "{args:?}: {said}");
    }
    let broken = dir.join("broken-route.json");
    std::fs::write(
        &broken,
        r#"{"meshName":"gophermesh","virtualRouterName":"distributor","routeName":"distributor","spec":{"httpRoute":{"match":{"path":{"regex":"("}},"action":{"weightedTargets":[{"virtualNode":"distributor-v2","weight":1}]}}}}"#,
    )
    .expect("write");
    let (code, said) = mesh.cli(&["apply", "-f", broken.to_str().expect("utf-8")]);
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("spec.httpRoute.match.path.regex")
            && said.contains("not a valid regular expression"),
        "{said}"
    );
    let report = compare(&mesh, 200, 8).await;
    assert_eq!(
        count(&report, "v1"),
        200.0,
        "routing changed after refused changes: {report}"
    );

    // status: processes, Envoys and the split observed.
    let (code, status) = mesh.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{status}");
    let status: Value = serde_json::from_str(&status).expect("status json");
    // An Envoy and an app per node's task, and the gateway's Envoy.
    assert_eq!(
        status["processes"].as_array().map(Vec::len),
        Some(7),
        "{status}"
    );
    for node in ["requester", "distributor-v1", "distributor-v2"] {
        let envoy = &status["envoys"][tests::shipped_key(node)];
        assert_eq!(envoy["connected"], true, "{status}");
        assert!(envoy["last_nack"].is_null(), "{status}");
    }
    assert!(
        status["observed"]["gophermesh/distributor-v1"]
            .as_u64()
            .unwrap_or(0)
            >= 2000,
        "{status}"
    );
    if mode != Mode::Loopback {
        assert_intercepted(&status);
    }
    let (_, table) = mesh.cli(&["status"]);
    assert!(
        table.contains("distributor-v1") && table.contains("observed"),
        "{table}"
    );
}

async fn shifting_weights_under_load_fails_no_request(mode: Mode) {
    let dir = copy_of_shipped("load");
    let mesh = LocalMesh::start_in(&dir, mode);
    // Load: 2000-call compares, 64 connections at a time, one after another until the
    // shifts are done, so that every shift happens under load however fast the build.
    let url = format!(
        "{}/compare?n=2000&concurrency=64&format=json",
        mesh.requester
    );
    let shifting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = tokio::spawn({
        let shifting = shifting.clone();
        async move {
            let mut reports = Vec::new();
            while shifting.load(std::sync::atomic::Ordering::Relaxed) || reports.is_empty() {
                reports.push(tests::get_json(&url).await);
            }
            reports
        }
    });
    let control = mesh.control.clone();
    let token = mesh.token();
    for i in 0..20 {
        let (a, b) = if i % 2 == 0 {
            ("30", "70")
        } else {
            ("80", "20")
        };
        let (code, said) = tokio::task::spawn_blocking({
            let m = control.clone();
            let token = token.clone();
            move || {
                let out = std::process::Command::new(tests::bin("gophermesh"))
                    .args([
                        "route",
                        "set",
                        "distributor",
                        &format!("distributor-v1={a}"),
                        &format!("distributor-v2={b}"),
                    ])
                    .env("GOPHERMESH_CONTROL_URL", m)
                    .env("GOPHERMESH_CONTROL_TOKEN", token)
                    .output()
                    .expect("runs");
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        })
        .await
        .expect("joined");
        assert_eq!(code, Some(0), "{said}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    shifting.store(false, std::sync::atomic::Ordering::Relaxed);
    let reports = load.await.expect("joined");
    let (mut v1, mut v2) = (0.0, 0.0);
    for report in &reports {
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "requests failed while weights changed: {report}"
        );
        assert_eq!(report["ok"], 2000, "{report}");
        v1 += count(report, "v1");
        v2 += count(report, "v2");
    }
    assert!(v1 > 0.0 && v2 > 0.0, "{reports:?}");
    eprintln!(
        "20 shifts under {} compares of 2000 calls, 64 at a time: no request failed",
        reports.len()
    );
}

/// In `--netns` mode the requester has no proxy setting: its calls to the distributor
/// reached Envoy only through the APPMESH rules of its task definition.
fn assert_intercepted(status: &Value) {
    let pid = process_pid(status, "requester/requester").expect("requester pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("EGRESS_PROXY") && !environ.to_lowercase().contains("http_proxy"),
        "the requester was given a proxy: {environ}"
    );
    let ns = status["placements"]["gophermesh/requester"]["netns"]
        .as_str()
        .expect("requester netns");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args([
            "iptables",
            "-t",
            "nat",
            "-L",
            "APPMESH_EGRESS",
            "-v",
            "-n",
            "-x",
        ])
        .output()
        .expect("iptables runs");
    let table = String::from_utf8_lossy(&out.stdout);
    let redirected: u64 = table
        .lines()
        .find(|l| l.contains("REDIRECT") && l.contains("15001"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no REDIRECT to 15001 in {ns}:\n{table}"));
    assert!(redirected > 0, "nothing was redirected to Envoy:\n{table}");
    let rules = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-t", "nat", "-S"])
        .output()
        .expect("iptables runs");
    let rules = String::from_utf8_lossy(&rules.stdout);
    for rule in [
        "-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
        "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
        "-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
        "-A APPMESH_INGRESS -p tcp -m multiport --dports 8080 -j REDIRECT --to-ports 15000",
    ] {
        assert!(rules.contains(rule), "missing `{rule}` in {ns}:\n{rules}");
    }
}

fn process_pid(status: &Value, name: &str) -> Option<u64> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["pid"]
        .as_u64()
}

fn restarts(status: &Value, name: &str) -> u64 {
    status["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["restarts"].as_u64())
        .unwrap_or(0)
}

/// Adds `name=value` to the environment of distributor v2's app in `dir/taskdefs`.
fn set_v2_env(dir: &std::path::Path, name: &str, value: &str) {
    let v2 = dir.join("taskdefs/distributor-v2.json");
    let mut td: Value =
        serde_json::from_str(&std::fs::read_to_string(&v2).expect("read")).expect("json");
    td["containerDefinitions"][0]["environment"]
        .as_array_mut()
        .expect("env")
        .push(serde_json::json!({"name": name, "value": value}));
    std::fs::write(&v2, serde_json::to_string_pretty(&td).expect("json")).expect("write");
}

async fn crashes_are_restarted_and_retries_hide_a_flaky_v2(mode: Mode) {
    let dir = copy_of_shipped("chaos");
    // v2 fails half its requests.
    set_v2_env(&dir, "ERROR_RATE", "0.5");
    // Its callers eject it after two errors in a row (its only host, so Envoy's panic
    // threshold still sends it traffic, which the retries then hide).
    let node = dir.join("mesh/virtual-nodes/distributor-v2.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&node).expect("read")).expect("json");
    doc["spec"]["listeners"][0]["outlierDetection"] = serde_json::json!({
        "maxServerErrors": 2,
        "interval": {"value": 1, "unit": "s"},
        "baseEjectionDuration": {"value": 5, "unit": "s"},
        "maxEjectionPercent": 100
    });
    std::fs::write(&node, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    let mut mesh = LocalMesh::start_in(&dir, mode);
    let prefix = mesh.namespace_prefix();

    // A route that retries server errors enough times to hide a 50% failure rate.
    let route = dir.join("mesh/routes/distributor.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&route).expect("read")).expect("json");
    doc["spec"]["httpRoute"]["retryPolicy"]["maxRetries"] = 20.into();
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 50.into();
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][1]["weight"] = 50.into();
    std::fs::write(&route, serde_json::to_string(&doc).expect("json")).expect("write");
    let (code, said) = mesh.cli(&["apply", "-f", route.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{said}");
    until_routes_acked(&mesh, "requester").await;
    let report = compare(&mesh, 600, 8).await;
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "retries did not hide v2's failures: {report}"
    );
    assert!(count(&report, "v2") > 100.0, "{report}");
    let ejections = mesh
        .envoy_stat(
            "requester",
            // The weighted route's own cluster for v2 (the canary route has another).
            "cluster.cds_egress_gophermesh_distributor-v2_http_8080~distributor~distributor.outlier_detection.ejections_enforced_total",
        )
        .await;
    assert!(
        ejections > 0,
        "outlier detection never ejected the failing v2"
    );
    // /metrics says so too, with the retries that hid the failures.
    let text = tests::metrics_text(&mesh.control).await;
    let of = |name: &str| tests::requester_series(&text, name, "distributor-v2");
    assert!(of("gophermesh_target_ejections_total") > 0.0, "{text}");
    assert!(of("gophermesh_target_retries_total") > 0.0, "{text}");

    // Kill v2's app and v1's Envoy: both come back.
    let before = mesh.status().await;
    for name in ["distributor-v2/distributor", "distributor-v1/envoy"] {
        let pid =
            process_pid(&before, name).unwrap_or_else(|| panic!("no pid for {name}: {before}"));
        let ok = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
    let mut after = Value::Null;
    for _ in 0..100 {
        after = mesh.status().await;
        let back = ["distributor-v2/distributor", "distributor-v1/envoy"]
            .iter()
            .all(|n| {
                restarts(&after, n) >= 1
                    && after["processes"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == *n && p["running"] == true)
                    })
            });
        if back && after["envoys"]["gophermesh/distributor-v1"]["connected"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At least once each: a process that crashes again on restart is restarted again.
    assert!(
        restarts(&after, "distributor-v2/distributor") >= 1,
        "{after}"
    );
    assert!(restarts(&after, "distributor-v1/envoy") >= 1, "{after}");
    assert!(
        mesh.output().contains("exited (signal: 9 (SIGKILL))"),
        "the crash was not reported:\n{}",
        mesh.output()
    );
    // Give the restarted processes a moment to listen, then traffic flows again.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = compare(&mesh, 100, 4).await;
        if report["ok"] == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(report["ok"], 100, "{report}");

    // Stopping leaves no process behind.
    let pids: Vec<u64> = mesh.status().await["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(
        pids.len(),
        7,
        "three tasks of two processes, the gateway's Envoy"
    );
    assert_eq!(
        mesh.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        mesh.output()
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
    }
    // ... and no namespace (with its iptables rules) or /etc/netns directory.
    if mode == Mode::Netns {
        assert!(
            mesh.output()
                .contains("removed the APPMESH rules and 5 network namespaces"),
            "{}",
            mesh.output()
        );
    }
    assert_eq!(tests::namespaces_named(&prefix), Vec::<String>::new());
    let etc_left: Vec<String> = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(etc_left, Vec::<String>::new());
}

/// A route's per-request timeout cuts a slow v2 short: its callers get 504 after the
/// timeout, not its answer after its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_request_timeout_cuts_a_slow_v2_with_504() {
    let dir = copy_of_shipped("timeout");
    set_v2_env(&dir, "LATENCY_MS", "3000");
    let mesh = LocalMesh::start_in(&dir, Mode::Loopback);

    let route = dir.join("mesh/routes/distributor.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&route).expect("read")).expect("json");
    let http = &mut doc["spec"]["httpRoute"];
    http["timeout"] = serde_json::json!({"perRequest": {"value": 500, "unit": "ms"}});
    http["action"]["weightedTargets"][0]["weight"] = 0.into();
    http["action"]["weightedTargets"][1]["weight"] = 100.into();
    std::fs::write(&route, serde_json::to_string(&doc).expect("json")).expect("write");
    let (code, said) = mesh.cli(&["apply", "-f", route.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{said}");
    until_routes_acked(&mesh, "requester").await;
    let started = std::time::Instant::now();
    let report = compare(&mesh, 8, 8).await;
    let took = started.elapsed();
    assert_eq!(
        report["errors"],
        serde_json::json!({"http_504": 8}),
        "the slow v2 was not cut short: {report}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "the answers waited for v2 ({took:?}), not for the 500 ms timeout"
    );
}

/// 2,000 calls split 90/10, as the route says (chi-square), and `canary` calls asking for v2
/// by header (the canary route; gRPC metadata in the gRPC example) all reach v2, whatever
/// the weights say. The 2,000 calls' report.
async fn split_90_10_with_a_v2_canary(mesh: &LocalMesh, canary: u32) -> Value {
    let report = compare(mesh, 2000, 16).await;
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = chi_square(&report, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "the split is not 90/10: chi-square {chi:.2} for {report}"
    );
    let asked: Value = client()
        .get(format!(
            "{}/compare?n={canary}&concurrency=8&format=json",
            mesh.requester
        ))
        .header("x-gopher-version", "v2")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (count(&asked, "v2"), count(&asked, "v1")),
        (f64::from(canary), 0.0),
        "the canary route did not override the weights: {asked}"
    );
    report
}

/// `examples/grpc`: the same walkthrough where the requester asks the distributors over
/// gRPC (`gophers.Gopher/Answer`) and a grpcRoute splits the calls 90/10 (the route
/// matches the gRPC service only, so every answer counted came over gRPC); its canary
/// route matches `x-gopher-version: v2` as gRPC metadata; `route set` shifts it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_example_splits_grpc_calls_and_shifts_live() {
    let dir = tests::copy_of_example("grpc", "grpc-example");
    let mesh = LocalMesh::start_in(&dir, Mode::Loopback);
    split_90_10_with_a_v2_canary(&mesh, 100).await;
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=0",
        "distributor-v2=100",
    ]);
    assert_eq!(code, 0, "{said}");
    until_routes_acked(&mesh, "requester").await;
    let report = compare(&mesh, 200, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (200.0, 0.0),
        "the shift did not reach the gRPC route: {report}"
    );
}

#[test]
fn up_refuses_a_broken_mesh_and_starts_nothing() {
    let dir = copy_of_shipped("broken");
    std::fs::write(dir.join("mesh/routes/distributor.json"), "{ not json").expect("write");
    let out = std::process::Command::new(tests::bin("gophermesh"))
        .current_dir(&dir)
        .args([
            "up",
            "--requester-port",
            "0",
            "--control-port",
            "0",
            "--api-port",
            "0",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mesh/routes/distributor.json: not valid JSON (line 1"),
        "{err}"
    );
    assert!(err.contains("nothing was started"), "{err}");
}

/// Kills `name` (a process of `up`, TASK/CONTAINER) and waits until it runs again and its
/// Envoy is connected, with two compares of load after it (`reports` counts them); the
/// compares done when it was killed.
async fn kill_and_wait_back(
    mesh: &LocalMesh,
    name: &str,
    reports: &std::sync::atomic::AtomicUsize,
) -> usize {
    use std::sync::atomic::Ordering;
    let before = mesh.status().await;
    let pid = process_pid(&before, name).unwrap_or_else(|| panic!("no pid for {name}: {before}"));
    let seen = reports.load(Ordering::Relaxed);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = mesh.status().await;
        let back = restarts(&now, name) > restarts(&before, name)
            && process_pid(&now, name).is_some_and(|p| p != pid)
            && now["envoys"]["gophermesh/distributor-v2"]["connected"] == true;
        if back && reports.load(Ordering::Relaxed) >= seen + 2 {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is not back: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The requests of `reports` that failed, and all of them.
fn failed_of(reports: &[Value]) -> (u64, u64) {
    let mut failed = 0;
    let mut all = 0;
    for report in reports {
        let errors: u64 = report["errors"]
            .as_object()
            .expect("errors")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        failed += errors;
        all += errors + report["ok"].as_u64().expect("ok");
    }
    (failed, all)
}

/// Distributor v2's app killed, then its Envoy, under 64 connections at 50/50. Each is
/// restarted at once (not after a backoff): App Mesh's default retries (three tries, 25 ms
/// jittered backoff, all to the one v2 host: weighted targets never fail over) then hide
/// the app's restart, and the Envoy's costs what its own start takes beyond them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_v2_under_load_fails_few_requests() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = copy_of_shipped("kill-v2");
    let mesh = LocalMesh::start_in(&dir, Mode::Loopback);
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=50",
        "distributor-v2=50",
    ]);
    assert_eq!(code, 0, "{said}");
    let url = format!(
        "{}/compare?n=2000&concurrency=64&format=json",
        mesh.requester
    );
    let running = std::sync::Arc::new(AtomicBool::new(true));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (running, done) = (running.clone(), done.clone());
        async move {
            let mut reports = Vec::new();
            while running.load(Ordering::Relaxed) {
                reports.push(tests::get_json(&url).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
            reports
        }
    });
    while done.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = kill_and_wait_back(&mesh, "distributor-v2/distributor", &done).await;
    let envoy = kill_and_wait_back(&mesh, "distributor-v2/envoy", &done).await;
    running.store(false, Ordering::Relaxed);
    let reports = load.await.expect("joined");
    let (app_failed, _) = failed_of(&reports[app..envoy]);
    let (envoy_failed, _) = failed_of(&reports[envoy..]);
    let (failed, all) = failed_of(&reports);
    println!(
        "v2's app then its Envoy killed under 64 connections at 50/50: {failed} of {all} requests failed; {app_failed} while the app came back, {envoy_failed} while the Envoy did"
    );
    for name in ["distributor-v2/distributor", "distributor-v2/envoy"] {
        assert!(
            mesh.output()
                .lines()
                .any(|l| l.contains(name) && l.contains("restarting in 0ns")),
            "{name} was not restarted at once:\n{}",
            mesh.output()
        );
    }
    assert!(count(&reports[envoy..][0], "v2") > 0.0, "{reports:?}");
    // Before the restart at once: about 290 (a 250 ms backoff beyond the retries' reach).
    assert!(
        app_failed < 64,
        "{app_failed} requests failed while v2's app came back"
    );
}
