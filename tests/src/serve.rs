//! What the tests of `gophermesh serve` share: another "host" (a network namespace reached
//! over a veth pair), a test CA made with openssl, `serve` itself started with port 0 and
//! its banner read, and an Envoy in such a host fetching from it.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Guard, bin, tool};

/// Runs `program ARGS` to the end; panics with what it said when it fails.
pub fn run(program: &str, args: &[&str]) {
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

/// A namespace with a veth to this one: this side `host_ip`, the namespace `task_ip`.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub host_ip: String,
    pub task_ip: String,
}

/// Hosts made by this process so far (each gets its own subnet and names).
static HOSTS: AtomicU32 = AtomicU32::new(0);

impl Host {
    pub fn create() -> Self {
        let n = HOSTS.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (std::process::id() % 200 + 20, n % 250);
        let name = format!("gmt-serve-{}-{n}", std::process::id());
        let (host_ip, task_ip) = (format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2"));
        let id = format!("{:x}", (std::process::id() % 0xffff) * 256 + n % 256);
        let (outer, inner) = (format!("gs{id}a"), format!("gs{id}b"));
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

    /// Lets this host reach `ip`, an address of this machine (another host's side), through
    /// its veth. (Only that address: with a default route, Envoy's DNS lookups would wait
    /// for a resolver that cannot answer instead of failing at once.)
    pub fn reach(&self, ip: &str) {
        run(
            "ip",
            &[
                "-n",
                &self.name,
                "route",
                "add",
                &format!("{ip}/32"),
                "via",
                &self.host_ip,
            ],
        );
    }

    /// The requester's task here, without its Envoy: both distributors on their DNS
    /// names' addresses (as other tasks would answer) and the requester on `task_ip:8080`,
    /// calling through its Envoy's egress listener. The services, and the requester's
    /// address.
    pub fn gophers(&self) -> (Vec<crate::Service>, String) {
        let ns = Some(self.name.as_str());
        let listen = format!("{}:8080", self.task_ip);
        let services = vec![
            crate::Service::start_in(
                ns,
                "distributor",
                &["--listen", "127.0.0.2:8080", "--version-tag", "v1"],
                &[],
            ),
            crate::Service::start_in(
                ns,
                "distributor",
                &["--listen", "127.0.0.3:8080", "--version-tag", "v2"],
                &[],
            ),
            crate::Service::start_in(
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
            ),
        ];
        (services, listen)
    }

    /// Starts a real Envoy in this host with `bootstrap`.
    pub fn envoy(&self, bootstrap: &Path) -> Guard {
        let envoy = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(tool("envoy"))
            .args([
                "-c",
                &bootstrap.display().to_string(),
                "--disable-hot-restart",
            ])
            .args(["--concurrency", "1", "--log-level", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("envoy starts");
        Guard(envoy)
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

/// A test CA (`ca.pem`, `ca.key`) and, for each (file stem, subject alternative names
/// such as `IP:10.0.0.1` or `DNS:name`), a certificate from it: `NAME.pem` and `NAME.key`,
/// the key readable by Envoy's user. Made with openssl.
pub fn issue(dir: &Path, certs: &[(&str, &[&str])]) {
    issue_ca(dir);
    for (name, sans) in certs {
        issue_leaf(dir, name, sans);
    }
}

/// The test CA of [`issue`] alone: `ca.pem` and `ca.key` in `dir`.
pub fn issue_ca(dir: &Path) {
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
}

/// One more certificate from the CA in `dir` ([`issue_ca`]): `NAME.pem` and `NAME.key`
/// (replaced when there), with a new key and serial.
pub fn issue_leaf(dir: &Path, name: &str, sans: &[&str]) {
    issue_leaf_with(dir, name, &format!("subjectAltName={}\n", sans.join(",")));
}

/// [`issue_leaf`] with the certificate's extensions given as openssl writes them in an
/// extension file (`subjectAltName=URI:...`, `extendedKeyUsage=clientAuth`).
pub fn issue_leaf_with(dir: &Path, name: &str, extensions: &str) {
    let path = |f: &str| dir.join(f).display().to_string();
    {
        let (key, csr) = (path(&format!("{name}.key")), path(&format!("{name}.csr")));
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions).expect("ext");
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &path("ca.pem"),
                "-CAkey",
                &path("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext.display().to_string(),
                "-out",
                &path(&format!("{name}.pem")),
            ],
        );
        // Envoy runs as uid 1337 and reads its key itself.
        run("chmod", &["0644", &key]);
    }
}

/// A test CA and a server certificate for `ip` (`server.pem`, `server.key`).
pub fn certificates(dir: &Path, ip: &str) {
    issue(dir, &[("server", &[&format!("IP:{ip}")])]);
}

/// `gophermesh bootstrap` for node `resource_arn` and ADS at `xds`, trusting `ca`, into
/// `out`, as the aws-appmesh-envoy agent would write it from its variables.
pub fn agent_bootstrap(ca: &Path, resource_arn: &str, xds: &str, out: &Path) {
    let (code, said) = crate::run_to_end(
        "gophermesh",
        &[
            "bootstrap",
            "--ca-file",
            &ca.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[
            ("APPMESH_RESOURCE_ARN", resource_arn),
            ("APPMESH_XDS_ENDPOINT", xds),
        ],
    );
    assert_eq!(code, Some(0), "{said}");
}

/// What `curl ARGS` gets inside namespace `ns` (as `uid` when given, so that the APPMESH
/// rules apply to it as to an app): the HTTP status, 0 when no answer came.
pub fn http_status_in(ns: &str, uid: Option<u32>, args: &[&str]) -> u16 {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]);
    if let Some(uid) = uid {
        let id = uid.to_string();
        command.args(["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"]);
    }
    let out = command
        .arg("curl")
        .args(crate::CURL_STATUS)
        .args(args)
        .output()
        .expect("curl runs (scripts/setup.sh --tests installs it)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `gophermesh serve` with port 0 everywhere; the addresses its banner names.
#[derive(Debug)]
pub struct Serve {
    pub child: Guard,
    pub xds: String,
    pub control: String,
    pub appmesh: String,
    pub output: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `serve ARGS` in `dir` with `env`; waits for `ready`.
    pub fn start(dir: &Path, args: &[&str], env: &[(String, String)]) -> Self {
        Self::start_from(Command::new(bin("gophermesh")), dir, args, env)
    }

    /// [`Serve::start`] with at most `files` open descriptors (soft and hard: it cannot
    /// raise them), set by util-linux's `prlimit`.
    pub fn start_with_files(
        files: u64,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(bin("gophermesh"));
        Self::start_from(command, dir, args, env)
    }

    fn start_from(
        mut command: Command,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let mut child: Child = command
            .current_dir(dir)
            .arg("serve")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
                    let _ = tx.send(addresses.clone());
                }
                sink.lock().expect("lock").push_str(&(line + "\n"));
            }
        });
        let addresses = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("serve did not get ready:\n{}", output.lock().expect("lock"))
            });
        Self {
            child: Guard(child),
            xds: addresses.xds.expect("the banner names ADS"),
            control: addresses.control.expect("the banner names the control API"),
            appmesh: addresses
                .appmesh
                .expect("the banner names the App Mesh API"),
            output,
        }
    }

    /// `serve` in `dir` with ADS over TLS on `host_ip` (the certificates of
    /// [`certificates`] in `dir`) and both APIs on loopback.
    pub fn start_tls(dir: &Path, host_ip: &str) -> Self {
        Self::start_tls_with(dir, host_ip, &[])
    }

    /// [`Serve::start_tls`] with `extra` flags.
    pub fn start_tls_with(dir: &Path, host_ip: &str, extra: &[&str]) -> Self {
        let xds = format!("{host_ip}:0");
        let mut args = vec![
            "--xds-listen",
            &xds,
            "--api-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
        ];
        args.extend_from_slice(extra);
        Self::start(dir, &args, &[])
    }

    /// What it printed so far.
    pub fn said(&self) -> String {
        self.output.lock().expect("lock").clone()
    }
}

/// The state table's name in the tests of replicas.
pub const TABLE: &str = "gophermesh-state";

/// moto with state table `table` made as the deploy script makes it; the environment that
/// points the AWS SDK at it.
pub fn moto_with_table(table: &str) -> (crate::moto::Moto, Vec<(String, String)>) {
    let moto = crate::moto::Moto::start();
    moto.aws(&[
        "dynamodb",
        "create-table",
        "--table-name",
        table,
        "--attribute-definitions",
        "AttributeName=pk,AttributeType=S",
        "--key-schema",
        "AttributeName=pk,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    let mut env = moto.env.clone();
    env.extend([
        ("AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
    ]);
    (moto, env)
}

/// A replica of table [`TABLE`] on loopback (ADS on `xds_ip`) with its own state
/// directory `dir/name` (its own control token), its AWS calls as `env` says.
pub fn replica(dir: &Path, name: &str, xds_ip: &str, env: &[(String, String)]) -> Serve {
    Serve::start(
        dir,
        &[
            "--state",
            &format!("dynamodb://{TABLE}"),
            "--xds-listen",
            &format!("{xds_ip}:0"),
            "--api-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--state-dir",
            name,
        ],
        env,
    )
}
