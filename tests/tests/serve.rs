//! `gophermesh serve`, the control plane alone, as the Envoys of ECS tasks elsewhere would
//! use it: a real Envoy in a network namespace of its own (another "host", reached over a
//! veth pair), with a node id in ARN form, fetches its configuration over TLS and carries
//! the requester's traffic to both distributors by their DNS names, 90/10.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    CHI2_BOUND, Guard, Service, TempDir, bin, chi_square, client, copy_of_shipped, count, get_json,
    require_root_for_netns, tool,
};

const KEY_ID: &str = "AKIDSERVETEST";
const SECRET: &str = "serve/test/secret";

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a veth to this one: this side `HOST_IP`, the namespace `TASK_IP`.
struct Host {
    name: String,
    host_ip: String,
    task_ip: String,
}

impl Host {
    fn create() -> Self {
        let id = std::process::id() % 200 + 20;
        let name = format!("gmt-serve-{}", std::process::id());
        let (host_ip, task_ip) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
        let (outer, inner) = (format!("gmsv{id}a"), format!("gmsv{id}b"));
        // Leftovers of an earlier run with this pid, if any.
        for args in [["netns", "del", &name], ["link", "del", &outer]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
        run("ip", &["netns", "add", &name]);
        let host = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            task_ip: task_ip.clone(),
        };
        run(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
        );
        run("ip", &["link", "set", &inner, "netns", &name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &outer],
        );
        run("ip", &["link", "set", &outer, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        inside(&["addr", "add", &format!("{task_ip}/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // The task's names, as Cloud Map or Route 53 would answer them on ECS.
        let hosts = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&hosts).expect("/etc/netns");
        std::fs::write(
            format!("{hosts}/hosts"),
            "127.0.0.1 localhost\n127.0.0.2 distributor-v1.gophers.local\n127.0.0.3 distributor-v2.gophers.local\n",
        )
        .expect("hosts");
        host
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// A test CA and a server certificate for `ip`, made with openssl.
fn certificates(dir: &Path, ip: &str) {
    let path = |f: &str| dir.join(f).display().to_string();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=gophermesh test CA",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=gophermesh serve",
            "-keyout",
            &path("server.key"),
            "-out",
            &path("server.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n")).expect("ext");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &path("san.ext"),
            "-out",
            &path("server.pem"),
        ],
    );
}

/// `gophermesh serve` with port 0 everywhere; the addresses its banner names.
struct Serve {
    _child: Guard,
    xds: String,
    control: String,
    output: Arc<Mutex<String>>,
}

fn start_serve(dir: &Path, host_ip: &str) -> Serve {
    let mut child: Child = Command::new(bin("gophermesh"))
        .current_dir(dir)
        .args([
            "serve",
            "--xds-listen",
            &format!("{host_ip}:0"),
            "--api-listen",
            &format!("{host_ip}:0"),
            "--control-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--api-access-key-id",
            KEY_ID,
            "--api-secret-access-key",
            SECRET,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let output = Arc::new(Mutex::new(String::new()));
    let sink = output.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut addresses = gophermesh::progress::UpAddresses::default();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            addresses.read(&line);
            if line == "ready" {
                let _ = tx.send((addresses.xds.clone(), addresses.control.clone()));
            }
            sink.lock().expect("lock").push_str(&(line + "\n"));
        }
    });
    let (xds, control) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("serve did not get ready:\n{}", output.lock().expect("lock")));
    Serve {
        _child: Guard(child),
        xds: xds.expect("the banner names ADS"),
        control: control.expect("the banner names the control API"),
        output,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_elsewhere_gets_its_node_from_serve_over_tls_and_splits_90_10() {
    require_root_for_netns();
    let host = Host::create();
    let dir = copy_of_shipped("serve");
    certificates(&dir, &host.host_ip);
    let serve = start_serve(&dir, &host.host_ip);

    // The requester's task, elsewhere: its Envoy and its app; the distributors answer on
    // their own addresses (their DNS names), as other tasks would.
    let ns = Some(host.name.as_str());
    let _v1 = Service::start_in(
        ns,
        "distributor",
        &["--listen", "127.0.0.2:8080", "--version-tag", "v1"],
        &[],
    );
    let _v2 = Service::start_in(
        ns,
        "distributor",
        &["--listen", "127.0.0.3:8080", "--version-tag", "v2"],
        &[],
    );
    // Its bootstrap, from the variables the agent reads, as the sidecar would write it.
    let work = TempDir::new("serve-envoy");
    let boot = work.join("bootstrap.json");
    let (code, said) = tests::run_to_end(
        "gophermesh",
        &[
            "bootstrap",
            "--ca-file",
            &dir.join("ca.pem").display().to_string(),
            "--out",
            &boot.display().to_string(),
        ],
        &[
            (
                "APPMESH_RESOURCE_ARN",
                "arn:aws:appmesh:us-east-1:000000000000:mesh/gophermesh/virtualNode/requester",
            ),
            ("APPMESH_XDS_ENDPOINT", &serve.xds),
        ],
    );
    assert_eq!(code, Some(0), "{said}");
    let envoy = Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(tool("envoy"))
        .args(["-c", &boot.display().to_string(), "--disable-hot-restart"])
        .args(["--concurrency", "1", "--log-level", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("envoy starts");
    let _envoy = Guard(envoy);
    let listen = format!("{}:8080", host.task_ip);
    let requester = Service::start_in(
        ns,
        "requester",
        &[
            "--listen",
            &listen,
            "--distributor-url",
            "http://distributor.gophers.local:8080",
            "--egress-proxy",
            "http://127.0.0.1:15001",
        ],
        &[],
    );
    let _ = requester.addr;

    // serve shows the Envoy connected and in sync, with no problem.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = get_json(&format!("{}/v1/status", serve.control)).await;
        let e = &status["envoys"]["requester"];
        if e["connected"] == true && e["acked"]["routes"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &status["envoys"]["requester"];
    assert!(
        e["connected"] == true && e["acked"]["routes"].is_string() && e["problem"].is_null(),
        "the Envoy did not get its configuration: {status}\n{}",
        serve.output.lock().expect("lock")
    );

    // Traffic: the requester, through its Envoy, to both versions by DNS, 90/10.
    let url = format!(
        "http://{}:8080/compare?n=2000&concurrency=8&format=json",
        host.task_ip
    );
    let report: Value = client()
        .get(&url)
        .send()
        .await
        .expect("the requester answers across the veth")
        .json()
        .await
        .expect("json");
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = chi_square(&report, 0.9);
    assert!(
        chi < CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );
    assert!(count(&report, "v2") > 0.0, "{report}");
}

/// An open App Mesh API beyond loopback is refused before anything listens.
#[test]
fn serve_refuses_an_open_api_beyond_loopback() {
    let dir = copy_of_shipped("serve-open");
    let out = Command::new(bin("gophermesh"))
        .current_dir(&dir)
        .args([
            "serve",
            "--api-listen",
            "0.0.0.0:0",
            "--xds-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_ne!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--api-listen 0.0.0.0:0") && said.contains("--api-access-key-id"),
        "{said}"
    );
}

/// The bootstrap refuses what the agent would choke on, naming the variable.
#[test]
fn bootstrap_names_the_variable_that_is_wrong() {
    for (arn, endpoint, words) in [
        (
            "arn:aws:appmesh:us-east-1:1:mesh/m/virtualRouter/r",
            "10.0.0.5:15010",
            "APPMESH_RESOURCE_ARN",
        ),
        (
            "mesh/m/virtualNode/n",
            "10.0.0.5",
            "APPMESH_XDS_ENDPOINT `10.0.0.5` is not HOST:PORT",
        ),
    ] {
        let (code, said) = tests::run_to_end(
            "gophermesh",
            &["bootstrap", "--ca-file", "/dev/null"],
            &[
                ("APPMESH_RESOURCE_ARN", arn),
                ("APPMESH_XDS_ENDPOINT", endpoint),
            ],
        );
        assert_ne!(code, Some(0), "{arn} {endpoint}: {said}");
        assert!(said.contains(words), "{arn} {endpoint}: {said}");
    }
}
