//! The mesh's egress on real Envoys: in `up --netns`, DROP_ALL keeps an app's traffic to
//! destinations outside the mesh from leaving, ALLOW_ALL passes it through to where it was
//! going (the original destination of the redirected connection), switched live through
//! the App Mesh API; a tcp route carries connections as a TCP proxy there. In the loopback
//! mode, where the app's Envoy is its HTTP proxy, TCP backends are CONNECT tunnels and
//! ALLOW_ALL forwards to the host a request names.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};

use tests::serve::http_status_in;
use tests::{LocalMesh, Mode, Service, copy_of_shipped, require_root_for_netns};

/// Sets the mesh's egress filter to ALLOW_ALL through the App Mesh API.
fn allow_all(mesh: &LocalMesh) {
    let (code, out, err) = tests::aws_appmesh(
        &mesh.api,
        ("AKIDLOCAL", "local/secret"),
        "us-east-1",
        &[
            "update-mesh",
            "--mesh-name",
            "gophermesh",
            "--spec",
            r#"{"egressFilter": {"type": "ALLOW_ALL"}}"#,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// A TCP echo server (no HTTP) on `ip:port` in namespace `ns`, over TLS with the
/// certificate and key files `tls` when given; ready when returned.
fn echo_server(ns: &str, ip: &str, port: u16, tls: Option<(&str, &str)>) -> tests::Guard {
    let wrap = match tls {
        Some((cert, key)) => format!(
            "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('{cert}', '{key}')\n\
             wrap = lambda c: ctx.wrap_socket(c, server_side=True)\n"
        ),
        None => "wrap = lambda c: c\n".to_owned(),
    };
    let script = format!(
        "import socket, ssl\n{wrap}\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip}', {port})); s.listen(16); print('ready', flush=True)\n\
         while True:\n    c, _ = s.accept()\n    try:\n        t = wrap(c); t.sendall(t.recv(1024)); t.close()\n\
         \x20   except Exception:\n        c.close()\n"
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("the echo server says it is ready");
    assert_eq!(ready.trim(), "ready");
    tests::Guard(child)
}

/// What a TCP client (as `uid`, so that the APPMESH rules redirect it as an app's) in
/// namespace `ns` gets back after sending `text` to `ip:port`, over TLS naming server
/// `sni` when given (not verifying the server); empty when nothing came.
fn tcp_exchange_in(ns: &str, uid: u32, to: (&str, u16), text: &str, sni: Option<&str>) -> String {
    let (ip, port) = to;
    let wrap = match sni {
        Some(name) => format!(
            "ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
             c = ctx.wrap_socket(c, server_hostname='{name}')\n"
        ),
        None => String::new(),
    };
    let script = format!(
        "import socket, ssl\n\
         try:\n\
         \x20   c = socket.create_connection(('{ip}', {port}), timeout=5)\n\
         {}\
         \x20   c.sendall(b'{text}')\n\
         \x20   print(c.recv(1024).decode(errors='replace'), end='')\n\
         except (OSError, ssl.SSLError):\n    pass\n",
        wrap.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let id = uid.to_string();
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "setpriv", "--reuid", &id, "--regid", &id,
        ])
        .args(["--clear-groups", "python3", "-c", &script])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// DROP_ALL keeps an app's HTTP, other TCP and TLS to a server outside the mesh in, but
/// lets TLS to AWS's APIs (`*.amazonaws.com`) out, as App Mesh does; ALLOW_ALL (set live)
/// lets all of them out, to where they were going, while the mesh's own traffic still goes
/// by the routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_all_keeps_traffic_in_the_mesh_and_allow_all_passes_it_through() {
    require_root_for_netns();
    let dir = copy_of_shipped("egress");
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);
    let status = mesh.status().await;
    let task = status["placements"]["gophermesh/requester"]["netns"]
        .as_str()
        .expect("the requester's namespace")
        .to_owned();
    // A server outside the mesh: in the hub, which is no task.
    let hub = format!("{}hub", mesh.namespace_prefix());
    let _outside = Service::start_in(
        Some(&hub),
        "distributor",
        &["--listen", "10.213.0.1:18080", "--version-tag", "v1"],
        &[],
    );
    let url = "http://10.213.0.1:18080/";
    assert_eq!(
        http_status_in(&task, Some(10001), &[url]),
        404,
        "DROP_ALL let it out"
    );
    // One that speaks no HTTP (an echo server), and one over TLS that App Mesh lets out
    // under DROP_ALL when it is AWS's (its server name ends in .amazonaws.com).
    let _echo = echo_server(&hub, "10.213.0.1", 18081, None);
    let echoed = || tcp_exchange_in(&task, 10001, ("10.213.0.1", 18081), "ping", None);
    assert_ne!(echoed(), "ping", "DROP_ALL let TCP out");
    tests::serve::issue(&dir, &[("aws", &["DNS:s3.us-east-1.amazonaws.com"])]);
    let (cert, key) = (dir.join("aws.pem"), dir.join("aws.key"));
    let _tls = echo_server(
        &hub,
        "10.213.0.1",
        18443,
        Some((&cert.display().to_string(), &key.display().to_string())),
    );
    let tls = |name: &str| tcp_exchange_in(&task, 10001, ("10.213.0.1", 18443), "ping", Some(name));
    assert_eq!(
        tls("s3.us-east-1.amazonaws.com"),
        "ping",
        "DROP_ALL kept AWS's API in"
    );
    assert_ne!(tls("example.com"), "ping", "DROP_ALL let TLS out");

    allow_all(&mesh);
    tests::until_routes_acked(&mesh, "requester").await;
    assert_eq!(
        http_status_in(&task, Some(10001), &[url]),
        200,
        "ALLOW_ALL did not pass it through"
    );
    assert_eq!(echoed(), "ping", "ALLOW_ALL did not pass TCP through");
    assert_eq!(
        tls("example.com"),
        "ping",
        "ALLOW_ALL did not pass TLS through"
    );
    // The mesh's own traffic still goes by the routes.
    let report = tests::compare(&mesh, 100, 4).await;
    assert_eq!(report["ok"], 100, "{report}");
}

/// The shipped mesh in `dir` with the distributor's router as tcp, and one tcpRoute
/// sending every connection to v2.
fn distributor_as_tcp(dir: &std::path::Path) {
    let mesh_dir = dir.join("mesh");
    // The distributor's router as tcp, with one tcpRoute sending every connection to v2.
    for file in [
        "routes/distributor-canary.json",
        "gateway-routes/distributor.json",
    ] {
        std::fs::remove_file(mesh_dir.join(file)).expect("remove");
    }
    let write = |file: &str, doc: serde_json::Value| {
        std::fs::write(mesh_dir.join(file), doc.to_string()).expect("write");
    };
    write(
        "virtual-routers/distributor.json",
        serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "tcp"}}]}}),
    );
    write(
        "routes/distributor.json",
        serde_json::json!({"meshName": "gophermesh", "virtualRouterName": "distributor",
            "routeName": "distributor", "spec": {"tcpRoute": {"action": {"weightedTargets": [
                {"virtualNode": "distributor-v1", "weight": 0},
                {"virtualNode": "distributor-v2", "weight": 1}]}}}}),
    );
}

/// A virtual router whose listener is tcp: the requester's connections to the
/// distributor's name go through its Envoy as a TCP proxy (a filter chain on the original
/// destination port, weighted clusters per connection), here all to v2; the HTTP the
/// requester speaks passes through it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_proxies_connections_to_its_targets() {
    require_root_for_netns();
    let dir = copy_of_shipped("tcp-route");
    distributor_as_tcp(&dir);
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);
    let report = tests::compare(&mesh, 200, 8).await;
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(
        (tests::count(&report, "v2"), tests::count(&report, "v1")),
        (200.0, 0.0),
        "not all through the tcp route to v2: {report}"
    );
    // The requester's Envoy carried them as TCP: its tcp proxy counted the connections.
    let tcp = mesh
        .envoy_stat("requester", "tcp.egress_tcp_8080.downstream_cx_total")
        .await;
    assert!(tcp > 0, "no connection went through the tcp proxy");
}

/// Through the proxy at `egress` (a loopback-mode Envoy's egress listener): `CONNECT to`,
/// then, when the tunnel opened, `GET /` with `host` through it; (the CONNECT answer's
/// status line, the GET's answer).
fn through_tunnel(egress: &str, to: &str, host: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(egress).expect("the egress listener");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(conn, "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").expect("write");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let mut line = String::new();
    while reader.read_line(&mut line).expect("header") > 2 {
        line.clear();
    }
    if !status_line.contains(" 200") {
        return (status_line, String::new());
    }
    write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    (status_line, answer(&mut reader))
}

/// An HTTP answer read from `reader`: its head, then its body by its length (the
/// connection may stay open).
fn answer(reader: &mut BufReader<std::net::TcpStream>) -> String {
    let mut answer = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("answer header");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("a length");
        }
        answer.push_str(&line);
        if line.len() <= 2 {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    answer.push_str(&String::from_utf8_lossy(&body));
    answer
}

/// `GET url` sent to the proxy at `egress`, as an app that uses it as its HTTP proxy does;
/// the answer.
fn through_proxy(egress: &str, url: &str) -> String {
    let mut conn = std::net::TcpStream::connect(egress).expect("the egress listener");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    write!(conn, "GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    answer(&mut BufReader::new(conn))
}

/// The requester's egress listener in a loopback-mode `up`.
async fn requester_egress(mesh: &LocalMesh) -> String {
    tests::until_routes_acked(mesh, "requester").await;
    mesh.status().await["placements"]["gophermesh/requester"]["egress"]
        .as_str()
        .expect("the requester's egress address")
        .to_owned()
}

/// The same tcp route in the loopback mode, where nothing redirects connections: an app
/// asks its Envoy (its HTTP proxy) to `CONNECT distributor.gophers.local:8080`, and the
/// tunnel's bytes reach v2 (the route's only target), as many tunnels as are opened; a
/// name with no TCP backend gets no tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_is_a_connect_tunnel_in_the_loopback_mode() {
    let dir = copy_of_shipped("tcp-connect");
    distributor_as_tcp(&dir);
    let mesh = LocalMesh::start(&dir);
    let egress = requester_egress(&mesh).await;
    for _ in 0..20 {
        let (status_line, answer) = through_tunnel(
            &egress,
            "distributor.gophers.local:8080",
            "distributor.gophers.local",
        );
        assert!(status_line.contains(" 200"), "{status_line}");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("\"v2\""),
            "not v2 through the tunnel: {answer}"
        );
    }
    let (status_line, _) = through_tunnel(&egress, "requester.gophers.local:9999", "x");
    assert!(!status_line.contains(" 200"), "{status_line}");
}

/// The egress filter in the loopback mode, where the app's Envoy is its HTTP proxy: under
/// DROP_ALL a request for a server outside the mesh gets 404 and no tunnel; under
/// ALLOW_ALL (set live with `update-mesh`) the request reaches that server, and so does a
/// CONNECT tunnel to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_forwards_to_the_named_host_in_the_loopback_mode() {
    let dir = copy_of_shipped("egress-loopback");
    let mesh = LocalMesh::start(&dir);
    let outside = Service::start(
        "distributor",
        &["--listen", "127.0.0.1:0", "--version-tag", "v1"],
        &[],
    );
    let url = format!("{}/", outside.url());
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let egress = requester_egress(&mesh).await;
    let refused = through_proxy(&egress, &url);
    assert!(
        refused.starts_with("HTTP/1.1 404"),
        "DROP_ALL let it out: {refused}"
    );
    let (status_line, _) = through_tunnel(&egress, &host, &host);
    assert!(
        !status_line.contains(" 200"),
        "DROP_ALL tunnelled: {status_line}"
    );

    allow_all(&mesh);
    let passed = through_proxy(&requester_egress(&mesh).await, &url);
    assert!(
        passed.starts_with("HTTP/1.1 200") && passed.contains("\"v1\""),
        "ALLOW_ALL did not forward it: {passed}"
    );
    let (status_line, answer) = through_tunnel(&egress, &host, &host);
    assert!(status_line.contains(" 200"), "{status_line}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The mesh's own names still go by the routes.
    let report = tests::compare(&mesh, 100, 4).await;
    assert_eq!(report["ok"], 100, "{report}");
}
