//! `/metrics`: per caller and target, with the App Mesh metric extension's names, counting
//! what the requester itself counted. (From DogStatsD with `serve`: tests/sidecar.rs.)

use serde_json::Value;
use tests::{LocalMesh, client, compare, copy_of_shipped};

/// `/metrics` of the control API at `control`: its samples, name with labels to value,
/// every line checked as the text format has it.
pub async fn samples(control: &str) -> Vec<(String, f64)> {
    let response = client()
        .get(format!("{control}/metrics"))
        .send()
        .await
        .expect("metrics answered");
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = response.text().await.expect("text");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("SERIES VALUE");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {l}"));
            let name_ok = series
                .split('{')
                .next()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert!(
                name_ok && (!series.contains('{') || series.ends_with('}')),
                "{l}"
            );
            (series.to_owned(), value)
        })
        .collect()
}

/// The metric families the Prometheus project's own parser (prometheus_client's, for the
/// text format 0.0.4, or its OpenMetrics one) reads from `text`, by name; panics with the
/// parser's complaint when it refuses it.
fn parsed_by_prometheus(text: &str, openmetrics: bool) -> Vec<String> {
    use std::io::Write as _;
    let parser = match openmetrics {
        true => "prometheus_client.openmetrics.parser",
        false => "prometheus_client.parser",
    };
    let script = format!(
        "import sys, {parser} as p\nfor f in p.text_string_to_metric_families(sys.stdin.read()):\n    print(f.name)"
    );
    let mut child = std::process::Command::new(tests::tool("python3"))
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "{parser} refuses /metrics ({}; pip install prometheus-client, as scripts/setup.sh --tests does):\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of `name` for the requester's calls to `target` (0 when absent).
pub fn of(samples: &[(String, f64)], name: &str, target: &str) -> f64 {
    let want = format!(
        "{name}{{Mesh=\"gophermesh\",VirtualNode=\"requester\",TargetVirtualNode=\"{target}\"}}"
    );
    samples
        .iter()
        .find(|(s, _)| *s == want)
        .map_or(0.0, |(_, v)| *v)
}

/// The requester's count of answers from `version` in a `/compare` report.
pub fn counted(report: &Value, version: &str) -> f64 {
    report["versions"][version]["count"].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_per_target_what_the_requester_counted() {
    let dir = copy_of_shipped("metrics");
    let mesh = LocalMesh::start(&dir);
    let before = samples(&mesh.control).await;
    let report = compare(&mesh, 400, 8).await;
    assert_eq!(report["ok"], 400, "{report}");
    let after = samples(&mesh.control).await;
    let delta = |name: &str, target: &str| of(&after, name, target) - of(&before, name, target);
    for (version, target) in [("v1", "distributor-v1"), ("v2", "distributor-v2")] {
        let n = counted(&report, version);
        assert_eq!(
            delta("envoy_appmesh_RequestCountPerTarget", target),
            n,
            "{target}: {report}"
        );
        assert_eq!(delta("envoy_appmesh_HTTPCode_Target_2XX_Count", target), n);
        assert_eq!(
            delta("envoy_appmesh_HTTPCode_Target_5XX_Count", target),
            0.0
        );
    }
    // Response times are as of Envoy's last stats flush (every 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = samples(&mesh.control).await;
        let timed = |target: &str| {
            of(&now, "envoy_appmesh_TargetResponseTime_count", target)
                - of(&before, "envoy_appmesh_TargetResponseTime_count", target)
        };
        let want = (counted(&report, "v1"), counted(&report, "v2"));
        if (timed("distributor-v1"), timed("distributor-v2")) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "response times counted {:?}, not {want:?}",
            (timed("distributor-v1"), timed("distributor-v2"))
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(counted(&report, "v1") > counted(&report, "v2"), "{report}");

    // OpenMetrics when asked: counters end in _total, and the text in `# EOF`.
    let open = client()
        .get(format!("{}/metrics", mesh.control))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("metrics answered");
    assert!(
        open.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
        "{:?}",
        open.headers()
    );
    let text = open.text().await.expect("text");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Both formats read by the Prometheus project's parsers, every family there.
    let prometheus = tests::metrics_text(&mesh.control).await;
    for (families, openmetrics) in [
        (parsed_by_prometheus(&prometheus, false), false),
        (parsed_by_prometheus(&text, true), true),
    ] {
        for name in [
            "envoy_appmesh_RequestCountPerTarget",
            "envoy_appmesh_HTTPCode_Target_5XX_Count",
            "envoy_appmesh_TargetResponseTime",
            "gophermesh_target_retries",
            "gophermesh_target_active_connections",
            "gophermesh_rollout_weight",
        ] {
            assert!(
                families.iter().any(|f| f == name),
                "{name} not read (openmetrics {openmetrics}): {families:?}"
            );
        }
    }
    let v1 = of(
        &after,
        "envoy_appmesh_RequestCountPerTarget",
        "distributor-v1",
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "envoy_appmesh_RequestCountPerTarget_total{Mesh=\"gophermesh\",VirtualNode=\"requester\",TargetVirtualNode=\"distributor-v1\"}"
        ) && l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).is_some_and(|v| v >= v1)),
        "{text}"
    );
}

/// A node that is the target of two routes is counted on the route that sent each request:
/// the canary route (a header match, all to v2) counts the requests with the header, the
/// weighted route the others, in `status`, the console's frame and the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_counts_what_it_sent() {
    let dir = copy_of_shipped("per-route");
    let mesh = LocalMesh::start(&dir);
    for _ in 0..20 {
        let answer = client()
            .get(&mesh.requester)
            .header("x-gopher-version", "v2")
            .send()
            .await
            .expect("answered")
            .text()
            .await
            .expect("text");
        assert!(answer.starts_with("distributor v2"), "{answer}");
    }
    let report = compare(&mesh, 300, 8).await;
    assert_eq!(report["ok"], 300, "{report}");
    let (v1, v2) = (counted(&report, "v1"), counted(&report, "v2"));
    let status = tests::get_json(&format!("{}/v1/status", mesh.control)).await;
    let observed = |key: &str| status["observed"][key].as_f64().unwrap_or(0.0);
    assert_eq!(
        observed("gophermesh/distributor-v2~distributor~distributor-canary"),
        20.0,
        "{status}"
    );
    assert_eq!(
        observed("gophermesh/distributor-v2~distributor~distributor"),
        v2,
        "{status}"
    );
    assert_eq!(observed("gophermesh/distributor-v2"), v2 + 20.0, "{status}");
    assert_eq!(observed("gophermesh/distributor-v1"), v1, "{status}");

    let frame = tests::get_json(&format!("{}/v1/live", mesh.control)).await;
    let on_route = |route: &str, node: &str| {
        frame["meshes"][0]["routers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["name"] == "distributor")
            .flat_map(|r| r["routes"].as_array().into_iter().flatten())
            .filter(|r| r["name"] == route)
            .flat_map(|r| r["targets"].as_array().into_iter().flatten())
            .find(|t| t["node"] == node)
            .and_then(|t| t["observed"].as_f64())
    };
    assert_eq!(
        on_route("distributor-canary", "distributor-v2"),
        Some(20.0),
        "{frame}"
    );
    assert_eq!(
        on_route("distributor", "distributor-v2"),
        Some(v2),
        "{frame}"
    );
    assert_eq!(
        on_route("distributor", "distributor-v1"),
        Some(v1),
        "{frame}"
    );

    let (code, said) = tests::cli_against(&mesh.control, &dir, &["status"]);
    assert_eq!(code, 0, "{said}");
    let canary = said
        .split("distributor/distributor-canary")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_default()
        .to_owned();
    assert!(
        canary.contains("distributor-v2") && canary.contains("observed      20 (100.0%)"),
        "{said}"
    );
}
