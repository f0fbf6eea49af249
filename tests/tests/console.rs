//! The web console and the requester's page, in a real headless Chromium: what a person
//! sees, and what they can do from the page.

use std::time::Duration;

use tests::browser::Browser;
use tests::{
    LocalMesh, client, compare, copy_of_shipped, count, repo_root, route_weights,
    until_routes_acked,
};

/// Where the screenshots the README shows are kept.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = repo_root().join("docs/src/screenshots");
    std::fs::create_dir_all(&dir).expect("docs/src/screenshots");
    dir.join(name)
}

const ROUTE: &str = r#"[data-route="gophermesh:distributor/distributor"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_mesh_and_shifts_it_from_the_page() {
    let dir = copy_of_shipped("console");
    let mesh = LocalMesh::start(&dir);
    let browser = Browser::start(1280, 800).await;

    // The requester's page first, at 90/10: both gophers appear within 200 calls.
    browser.goto(&format!("{}/", mesh.requester)).await;
    browser
        .until(
            "both gophers' pictures on the requester page",
            Duration::from_secs(60),
            r#"const imgs = [...document.querySelectorAll('#tally img')];
               const loaded = (v) => imgs.some(i => i.dataset.version === v && i.complete && i.naturalWidth > 0);
               return loaded('v1') && loaded('v2');"#,
        )
        .await;
    let calls = browser
        .eval(r#"return [...document.querySelectorAll('#tally [data-count]')].reduce((a, e) => a + Number(e.dataset.count), 0);"#)
        .await;
    assert!(
        calls.as_u64().is_some_and(|n| n <= 200),
        "both versions took {calls} answers to appear"
    );
    std::fs::write(screenshot_path("requester.png"), browser.screenshot().await)
        .expect("screenshot");
    assert_eq!(browser.console_errors().await, Vec::<String>::new());

    // The console, signed in with the link `gophermesh console` prints.
    let (code, link) = mesh.cli(&["console"]);
    assert_eq!(code, 0, "{link}");
    let link = link.trim().to_owned();
    assert!(link.contains("#token="), "{link}");
    browser.goto(&link).await;
    browser
        .until(
            "the three nodes and the 90/10 weights",
            Duration::from_secs(10),
            r#"const nodes = [...document.querySelectorAll('[data-mesh="gophermesh"] .nodes [data-node]')].map(e => e.dataset.node).sort().join(',');
               const w = (n) => [...document.querySelectorAll('[data-mesh="gophermesh"] .graph [data-weight]')].find(e => e.dataset.weight === n && e.dataset.route === 'distributor/distributor');
               return nodes === 'distributor-v1,distributor-v2,requester'
                 && w('distributor-v1')?.textContent === '90' && w('distributor-v2')?.textContent === '10';"#,
        )
        .await;
    // The ingress gateway is drawn, running, with an edge to each service its gateway
    // routes lead to.
    browser
        .until(
            "the ingress gateway and its two gateway routes",
            Duration::from_secs(10),
            r#"const box = document.querySelector('[data-mesh="gophermesh"] .graph [data-key="g:ingress"]');
               const edge = (s) => document.querySelector(`[data-mesh="gophermesh"] .graph path[data-edge="g:ingress->s:${s}"]`);
               return box?.querySelector('rect')?.classList.contains('running')
                 && edge('distributor.gophers.local') !== null && edge('requester.gophers.local') !== null;"#,
        )
        .await;
    // The token left the address bar; nothing was fetched from elsewhere; every weight
    // control has a label; no console error.
    assert_eq!(browser.eval("return location.hash;").await, "");
    assert_eq!(
        browser
            .eval("return performance.getEntriesByType('resource').filter(r => new URL(r.name).origin !== location.origin).map(r => r.name);")
            .await,
        serde_json::json!([])
    );
    assert_eq!(
        browser
            .eval("return [...document.querySelectorAll('input')].filter(i => i.labels.length === 0).length;")
            .await,
        0
    );
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    // Traffic until the chart draws it (a line needs two samples with traffic in them),
    // then the picture the README shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let drawn = format!("return document.querySelectorAll('{ROUTE} .chart path').length === 2;");
    loop {
        compare(&mesh, 400, 8).await;
        if browser.eval(&drawn).await == serde_json::json!(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chart drew no traffic within 30 s"
        );
    }
    std::fs::write(screenshot_path("console.png"), browser.screenshot().await).expect("screenshot");

    // Shift everything to v2 from the page, with the keyboard (Enter submits).
    let input = |node: &str| format!(r#"{ROUTE} input[data-node="{node}"]"#);
    browser.type_into(&input("distributor-v1"), "0").await;
    browser
        .type_into(&input("distributor-v2"), "100\u{E007}")
        .await;
    browser
        .until(
            "the page to say the change is in effect at every Envoy",
            Duration::from_secs(15),
            &format!(
                r#"const m = document.querySelector('{ROUTE} [data-refusal]');
                       return m?.dataset.reached === 'all' && m.textContent.startsWith('applied');"#
            ),
        )
        .await;
    assert_eq!(route_weights(&mesh.status().await, "distributor"), [0, 100]);
    until_routes_acked(&mesh, "requester").await;
    let report = compare(&mesh, 300, 8).await;
    assert_eq!(
        (count(&report, "v2"), count(&report, "v1")),
        (300.0, 0.0),
        "{report}"
    );
    let followed = browser
        .until(
            "the observed split to follow (v2 at 100%)",
            Duration::from_secs(2),
            &format!(r#"const s = document.querySelector('{ROUTE} [data-observed] [data-node="distributor-v2"]');
                       return s !== null && s.dataset.share === '100.0' && Number(s.dataset.count) >= 300;"#),
        )
        .await;
    eprintln!("the observed split followed the shift {followed:?} after the 300 calls");

    // An invalid shift (all zero) shows the refusal and changes nothing.
    browser
        .type_into(&input("distributor-v2"), "0\u{E007}")
        .await;
    browser
        .until(
            "the refusal on the page, kept across frames",
            Duration::from_secs(5),
            &format!(
                r#"const m = document.querySelector('{ROUTE} [data-refusal]')?.textContent || '';
                       return m.startsWith('refused') && m.includes('weight');"#
            ),
        )
        .await;
    assert_eq!(route_weights(&mesh.status().await, "distributor"), [0, 100]);
    let frames = browser
        .eval("return Number(document.body.dataset.frames);")
        .await
        .as_u64()
        .expect("frames drawn");
    browser
        .until(
            "two more frames",
            Duration::from_secs(5),
            &format!(
                "return Number(document.body.dataset.frames) >= {};",
                frames + 2
            ),
        )
        .await;
    let message = browser
        .eval(&format!(
            "return document.querySelector('{ROUTE} [data-refusal]')?.textContent;"
        ))
        .await;
    assert!(
        message.as_str().is_some_and(|m| m.starts_with("refused")),
        "the refusal did not stay on the page: {message}"
    );

    // A killed app shows as restarting, then running.
    let s = mesh.status().await;
    let pid = s["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["name"] == "distributor-v1/distributor")
        .and_then(|p| p["pid"].as_u64())
        .expect("the v1 app's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let state = r#"return document.querySelector('[data-mesh="gophermesh"] .nodes [data-node="distributor-v1"] [data-state]')?.dataset.state;"#;
    browser
        .until(
            "distributor-v1 shown as restarting",
            Duration::from_secs(5),
            &format!("{} === 'restarting';", state.trim_end_matches(';')),
        )
        .await;
    browser
        .until(
            "distributor-v1 shown as running again",
            Duration::from_secs(15),
            &format!("{} === 'running';", state.trim_end_matches(';')),
        )
        .await;

    // The change history says how long the shift took to reach every Envoy.
    let history = browser
        .eval("return [...document.querySelectorAll('#history li')].map(l => l.textContent);")
        .await;
    assert!(
        history.as_array().is_some_and(|h| h.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("ACKed by every Envoy in")))),
        "{history}"
    );

    // A phone-sized window: nothing wider than the screen; the picture is of the top.
    browser.resize(390, 844).await;
    browser
        .eval("document.activeElement.blur(); window.scrollTo(0, 0); return true;")
        .await;
    browser
        .until(
            "no horizontal overflow at 390 px",
            Duration::from_secs(5),
            "return document.documentElement.scrollWidth <= window.innerWidth;",
        )
        .await;
    std::fs::write(
        screenshot_path("console-phone.png"),
        browser.screenshot().await,
    )
    .expect("screenshot");
    // The only error Chromium logged since loading is the deliberate refusal's 400.
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/v1/routes/distributor/weights") && e.contains("400")),
        "{errors:?}"
    );
}

/// A second mesh made through the App Mesh API shows in the console in a section of its
/// own, with its route's weights, which the page shifts in that mesh alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_other_meshes_and_shifts_their_routes() {
    let dir = copy_of_shipped("console-meshes");
    let mesh = LocalMesh::start(&dir);
    let api = |args: &[&str]| {
        let (code, out, err) = tests::aws_appmesh(
            &mesh.api,
            ("AKIDGOPHERMESHTEST", "gophermesh/test/secret+key"),
            "us-east-1",
            args,
        );
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    api(&["create-mesh", "--mesh-name", "shop"]);
    for node in ["web-v1", "web-v2"] {
        let doc = serde_json::json!({"meshName": "shop", "virtualNodeName": node, "spec": {
            "listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": format!("{node}.shop.local")}}}});
        api(&["create-virtual-node", "--cli-input-json", &doc.to_string()]);
    }
    let router = serde_json::json!({"meshName": "shop", "virtualRouterName": "web",
        "spec": {"listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}]}});
    api(&[
        "create-virtual-router",
        "--cli-input-json",
        &router.to_string(),
    ]);
    let route = serde_json::json!({"meshName": "shop", "virtualRouterName": "web",
        "routeName": "web", "spec": {"httpRoute": {"match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "web-v1", "weight": 80},
            {"virtualNode": "web-v2", "weight": 20}]}}}});
    api(&["create-route", "--cli-input-json", &route.to_string()]);

    let browser = Browser::start(1280, 800).await;
    let (code, link) = mesh.cli(&["console"]);
    assert_eq!(code, 0, "{link}");
    browser.goto(link.trim()).await;
    const SHOP: &str = r#"[data-route="shop:web/web"]"#;
    let input = |node: &str| format!(r#"{SHOP} input[data-node="{node}"]"#);
    browser
        .until(
            "the shop mesh's route at 80/20, its Envoys not connected",
            Duration::from_secs(10),
            &format!(
                r#"const v = (n) => document.querySelector(`{SHOP} input[data-node="${{n}}"]`)?.value;
                   const section = document.querySelector('section[data-mesh="shop"]');
                   return section !== null && v('web-v1') === '80' && v('web-v2') === '20'
                     && section.querySelector('.nodes [data-node="web-v1"]')?.textContent.includes('never connected');"#
            ),
        )
        .await;
    browser.type_into(&input("web-v1"), "25").await;
    browser.type_into(&input("web-v2"), "75\u{E007}").await;
    browser
        .until(
            "the page to say the change was applied",
            Duration::from_secs(5),
            &format!(r#"return document.querySelector('{SHOP} [data-refusal]')?.textContent.startsWith('applied');"#),
        )
        .await;
    let shop = api(&[
        "describe-route",
        "--mesh-name",
        "shop",
        "--virtual-router-name",
        "web",
        "--route-name",
        "web",
        "--query",
        "route.spec.httpRoute.action.weightedTargets[].weight",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shop).expect("json"),
        serde_json::json!([25, 75])
    );
    assert_eq!(route_weights(&mesh.status().await, "distributor"), [90, 10]);
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
}

/// Ten open consoles cost the Envoys nothing more: their stats are still read once a second
/// per Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pages_do_not_multiply_stats_reads() {
    let dir = copy_of_shipped("console-pages");
    let mesh = LocalMesh::start(&dir);
    let mut streams = Vec::new();
    for _ in 0..10 {
        let r = client()
            .get(format!("{}/v1/live/stream", mesh.control))
            .send()
            .await
            .expect("stream opens");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        streams.push(SseReader::new(r));
    }
    // Every page gets the frames of the one sampler, which reads the Envoys once a second
    // however many pages are open: a page's consecutive frames are consecutive samples,
    // taken a sampling interval apart. Were each open page to read the Envoys itself, ten
    // pages would take ten samples in that time.
    let mut seen = std::collections::BTreeMap::new();
    for (page, stream) in streams.iter_mut().enumerate() {
        let (mut numbers, mut times) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let frame = stream.next_frame().await;
            numbers.push(frame["samples"].as_u64().expect("samples"));
            times.push(frame["at"].as_f64().expect("at"));
        }
        for (n, t) in numbers.windows(2).zip(times.windows(2)) {
            assert!(
                (1..=2).contains(&(n[1] - n[0])) && t[1] - t[0] >= 0.5,
                "page {page} saw samples {numbers:?} at {times:?}: more than one sample a second"
            );
        }
        for n in numbers {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    // Pages read one after another see the same samples: the frames are shared.
    assert!(
        seen.values().any(|pages| *pages > 1),
        "no two pages saw the same sample: {seen:?}"
    );
}

/// Reads Server-Sent Events from a response, one `event: frame` at a time.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The data of the next frame event (waiting 5 s at most).
    async fn next_frame(&mut self) -> serde_json::Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if !event.lines().any(|l| l == "event: frame") {
                    continue;
                }
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                return serde_json::from_str(&data).expect("a frame is JSON");
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("a frame within 5 s")
                .expect("readable")
                .expect("not ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A rollout in the console: its card shows the phase, the weight and the timeline of its
/// steps as they happen (the picture the README shows is taken mid-rollout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_rollout_as_it_goes() {
    let dir = copy_of_shipped("console-rollout");
    let mesh = LocalMesh::start(&dir);
    let browser = Browser::start(1280, 900).await;
    let (code, link) = mesh.cli(&["console"]);
    assert_eq!(code, 0, "{link}");
    browser.goto(link.trim()).await;
    browser
        .until(
            "the rollouts section, with none yet",
            Duration::from_secs(10),
            r#"return document.querySelector('[data-mesh="gophermesh"] .rollouts p')?.textContent.startsWith('none');"#,
        )
        .await;
    let (code, said) = mesh.cli(&tests::rollout_to_v2("25,50,100", &[]));
    assert_eq!(code, 0, "{said}");
    let card = r#"document.querySelector('[data-mesh="gophermesh"] [data-rollout="distributor/distributor"]')"#;
    let mut shot = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let state = browser
            .eval(&format!(
                "const c = {card}; return c ? [c.dataset.phase, [...c.querySelectorAll('.timeline li')].map(l => l.dataset.kind)] : null;"
            ))
            .await;
        if state[0] == "succeeded" {
            let kinds = state[1].as_array().cloned().unwrap_or_default();
            assert!(
                kinds.contains(&"advanced".into()) && kinds.contains(&"succeeded".into()),
                "{state}"
            );
            break;
        }
        if !shot
            && state[1]
                .as_array()
                .is_some_and(|k| k.contains(&"advanced".into()))
        {
            browser
                .eval(&format!(
                    "{card}.scrollIntoView({{block: 'center'}}); return true;"
                ))
                .await;
            std::fs::write(
                screenshot_path("console-rollout.png"),
                browser.screenshot().await,
            )
            .expect("screenshot");
            shot = true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the console never showed it done: {state}"
        );
        compare(&mesh, 40, 4).await;
    }
    assert!(shot, "promoted before the picture could be taken");
    assert_eq!(route_weights(&mesh.status().await, "distributor"), [100]);
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
}
