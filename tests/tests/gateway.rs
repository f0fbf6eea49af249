//! Virtual gateways: an Envoy alone (node id `mesh/M/virtualGateway/G`, in a host of its
//! own, with the agent's bootstrap) configured by `gophermesh serve`, carries traffic from
//! outside into the mesh by its gateway routes: the prefix rewritten, the target service's
//! own routes applied (the canary header, the 90/10 split), and nothing else let in.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::serve::{Host, Serve, certificates};
use tests::{TempDir, client, copy_of_shipped, get_json, require_root_for_netns};

fn write(dir: &Path, file: &str, doc: &Value) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&path, serde_json::to_vec_pretty(doc).expect("json")).expect("write");
}

/// The ingress gateway of the shipped mesh with the tests' gateway routes instead of its
/// own: http on 9080, `/distributor/` to the distributor's virtual service (prefix
/// rewritten to `/`), and `/gophers/` only for the host `gophers.example`.
fn add_gateway(mesh: &Path) {
    // In place of the shipped gateway routes.
    let _ = std::fs::remove_dir_all(mesh.join("gateway-routes"));
    write(
        mesh,
        "virtual-gateways/ingress.json",
        &json!({"meshName": "gophermesh", "virtualGatewayName": "ingress", "spec": {
            "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]
        }}),
    );
    write(
        mesh,
        "gateway-routes/distributor.json",
        &json!({"meshName": "gophermesh", "virtualGatewayName": "ingress",
        "gatewayRouteName": "distributor", "spec": {"httpRoute": {
            "match": {"prefix": "/distributor/"},
            "action": {"target": {"virtualService": {
                "virtualServiceName": "distributor.gophers.local"}}}
        }}}),
    );
    write(
        mesh,
        "gateway-routes/by-host.json",
        &json!({"meshName": "gophermesh", "virtualGatewayName": "ingress",
        "gatewayRouteName": "by-host", "spec": {"priority": 5, "httpRoute": {
            "match": {"prefix": "/gophers/", "hostname": {"exact": "gophers.example"}},
            "action": {"target": {"virtualService": {
                "virtualServiceName": "distributor.gophers.local"}},
                "rewrite": {"prefix": {"value": "/gopher"}}}
        }}}),
    );
}

/// `serve` on the mesh in `dir`, and the gateway `ingress`'s Envoy in `host`, connected and
/// in sync.
async fn serve_with_gateway(dir: &Path, host: &Host) -> (Serve, tests::Guard, TempDir) {
    certificates(dir, &host.host_ip);
    let serve = Serve::start(
        dir,
        &[
            "--xds-listen",
            &format!("{}:0", host.host_ip),
            "--control-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
        ],
        &[],
    );
    let work = TempDir::new("gateway-envoy");
    let boot = work.join("bootstrap.json");
    tests::serve::agent_bootstrap(
        &dir.join("ca.pem"),
        "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualGateway/ingress",
        &serve.xds,
        &boot,
    );
    let envoy = host.envoy(&boot);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = get_json(&format!("{}/v1/status", serve.control)).await;
        let e = &status["envoys"]["gophermesh/virtualGateway/ingress"];
        if e["connected"] == true && e["acked"]["routes"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &status["envoys"]["gophermesh/virtualGateway/ingress"];
    assert!(
        e["connected"] == true && e["acked"]["routes"].is_string() && e["problem"].is_null(),
        "the gateway's Envoy did not get its configuration: {status}\n{}",
        serve.said()
    );
    (serve, envoy, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_envoy_lets_traffic_in_by_its_gateway_routes_only() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("gateway");
    add_gateway(&dir.join("mesh"));
    let _serve = serve_with_gateway(&dir, &host).await;
    let (_gophers, _requester) = host.gophers();

    let http = client();
    let gateway = format!("http://{}:9080", host.task_ip);
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("{gateway}{path}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send()
    };
    // The distributor's routes, behind the gateway: 90/10 by weight...
    let (mut v1, mut v2) = (0u32, 0u32);
    for _ in 0..400 {
        let r = get("/distributor/", &[])
            .await
            .expect("the gateway answers");
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        match r
            .headers()
            .get("x-gopher-version")
            .and_then(|v| v.to_str().ok())
        {
            Some("v1") => v1 += 1,
            Some("v2") => v2 += 1,
            other => panic!("an answer from no distributor version: {other:?}"),
        }
    }
    let chi = (f64::from(v1) - 360.0).powi(2) / 360.0 + (f64::from(v2) - 40.0).powi(2) / 40.0;
    assert!(
        chi < tests::CHI2_BOUND,
        "not 90/10 through the gateway: v1 {v1}, v2 {v2} (chi-square {chi:.2})"
    );
    // ... and the canary header route before them.
    for _ in 0..20 {
        let r = get("/distributor/", &[("x-gopher-version", "v2")])
            .await
            .expect("answers");
        assert_eq!(r.headers()["x-gopher-version"], "v2");
    }
    // The matched prefix is rewritten to `/`: `/distributor/health` is the app's `/health`.
    let r = get("/distributor/health", &[]).await.expect("answers");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // A path no gateway route matches is not let in.
    let r = get("/health", &[]).await.expect("answers");
    assert_eq!(r.status(), 404);
    // A hostname match, with a rewrite to a value: `/gophers/.svg` becomes `/gopher.svg`,
    // for that host only.
    let r = get("/gophers/.svg", &[("host", "gophers.example")])
        .await
        .expect("answers");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let r = get("/gophers/.svg", &[("host", "other.example")])
        .await
        .expect("answers");
    assert_eq!(r.status(), 404);
}

/// Several listeners: both distributor nodes also listen on 8081, a router `alt` listens
/// on 8080 and 8081, and each of its routes serves the port its match names and sends to
/// distributor-v1 on the listener its target's `port` names. Through the gateway (whose
/// routes name the service's port), each port reaches its own app; the shipped routes,
/// naming their targets' port, still split 90/10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_route_each_port_to_its_own_targets() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("gateway-ports");
    let mesh = dir.join("mesh");
    add_gateway(&mesh);
    for node in ["distributor-v1", "distributor-v2"] {
        tests::edit_json(&mesh, &format!("virtual-nodes/{node}.json"), |d| {
            let second = json!({"portMapping": {"port": 8081, "protocol": "http"}});
            d["spec"]["listeners"]
                .as_array_mut()
                .expect("listeners")
                .push(second);
        });
    }
    for route in ["distributor", "distributor-canary"] {
        tests::edit_json(&mesh, &format!("routes/{route}.json"), |d| {
            for t in d["spec"]["httpRoute"]["action"]["weightedTargets"]
                .as_array_mut()
                .expect("targets")
            {
                t["port"] = json!(8080);
            }
        });
    }
    write(
        &mesh,
        "virtual-routers/alt.json",
        &json!({"meshName": "gophermesh", "virtualRouterName": "alt", "spec": {"listeners": [
            {"portMapping": {"port": 8080, "protocol": "http"}},
            {"portMapping": {"port": 8081, "protocol": "http"}}]}}),
    );
    for (name, port) in [("alt-80", 8080), ("alt-81", 8081)] {
        write(
            &mesh,
            &format!("routes/{name}.json"),
            &json!({"meshName": "gophermesh", "virtualRouterName": "alt", "routeName": name,
                "spec": {"httpRoute": {"match": {"prefix": "/", "port": port},
                    "action": {"weightedTargets": [{"virtualNode": "distributor-v1", "weight": 1, "port": port}]}}}}),
        );
        write(
            &mesh,
            &format!("gateway-routes/{name}.json"),
            &json!({"meshName": "gophermesh", "virtualGatewayName": "ingress",
                "gatewayRouteName": name, "spec": {"httpRoute": {
                    "match": {"prefix": format!("/{name}/")},
                    "action": {"target": {"virtualService": {
                        "virtualServiceName": "alt.gophers.local"}, "port": port}}}}}),
        );
    }
    write(
        &mesh,
        "virtual-services/alt.gophers.local.json",
        &json!({"meshName": "gophermesh", "virtualServiceName": "alt.gophers.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "alt"}}}}),
    );
    let _serve = serve_with_gateway(&dir, &host).await;
    let (_gophers, _requester) = host.gophers();
    // On distributor-v1's address, port 8081 answers as "v2", so an answer tells which
    // port of the node the request reached: both of `alt`'s routes go to distributor-v1,
    // one on each port.
    let _on_8081 = tests::Service::start_in(
        Some(&host.name),
        "distributor",
        &["--listen", "127.0.0.2:8081", "--version-tag", "v2"],
        &[],
    );
    let http = client();
    let gateway = format!("http://{}:9080", host.task_ip);
    for (path, version) in [("/alt-80/", "v1"), ("/alt-81/", "v2")] {
        for _ in 0..50 {
            let r = http
                .get(format!("{gateway}{path}"))
                .send()
                .await
                .expect("the gateway answers");
            assert_eq!(r.status(), 200, "{path}: {:?}", r.text().await);
            assert_eq!(r.headers()["x-gopher-version"], version, "{path}");
        }
    }
    let (mut v1, mut v2) = (0u32, 0u32);
    for _ in 0..400 {
        let r = http
            .get(format!("{gateway}/distributor/"))
            .send()
            .await
            .expect("answers");
        match r.headers()["x-gopher-version"].to_str() {
            Ok("v1") => v1 += 1,
            _ => v2 += 1,
        }
    }
    let chi = (f64::from(v1) - 360.0).powi(2) / 360.0 + (f64::from(v2) - 40.0).powi(2) / 40.0;
    assert!(chi < tests::CHI2_BOUND, "v1 {v1}, v2 {v2}");
}
