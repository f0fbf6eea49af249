//! The control surfaces, tried as an attacker and as a clumsy user would: each test is the
//! attack or the mistake, and checks that it no longer works.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{LocalMesh, Mode, Service, client, copy_of_shipped, run_to_end};

const KEY_ID: &str = "AKIDGOPHERMESHSEC";
const SECRET: &str = "gophermesh/security/secret";

fn token_of(mesh: &LocalMesh) -> String {
    std::fs::read_to_string(mesh.dir.join(".gophermesh/control-token"))
        .expect("up wrote its control token")
        .trim()
        .to_owned()
}

/// `POST /v1/resources` with the walkthrough's route and `origin`.
fn route_apply(control: &str, origin: &str) -> reqwest::RequestBuilder {
    let route = json!({
        "meshName": "gophermesh",
        "virtualRouterName": "distributor",
        "routeName": "distributor",
        "spec": {"httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [
                {"virtualNode": "distributor-v1", "weight": 50},
                {"virtualNode": "distributor-v2", "weight": 50}
            ]}
        }}
    });
    client()
        .post(format!("{control}/v1/resources"))
        .json(&json!({"origin": origin, "resource": route}))
}

/// Item 1 (a file anywhere overwritten, then run) and item 2 (no authentication, any
/// Host): the attack as reported, then each way around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cannot_change_the_mesh_or_choose_files_to_write() {
    let dir = copy_of_shipped("sec-control");
    let mesh = LocalMesh::start_with(
        &dir,
        Mode::Loopback,
        &[
            "--api-access-key-id",
            KEY_ID,
            "--api-secret-access-key",
            SECRET,
        ],
    );
    let script = dir.join("victim.sh");
    std::fs::write(&script, "#!/bin/sh\necho untouched\n").expect("write");
    let evil = script.display().to_string();

    // Unauthenticated: refused, whatever the origin, and nothing changes.
    let r = route_apply(&mesh.control, &evil)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401, "{}", r.text().await.unwrap_or_default());
    let r = client()
        .put(format!("{}/v1/routes/distributor/weights", mesh.control))
        .json(&json!({"weights": {"distributor-v1": 0, "distributor-v2": 100}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
    // A wrong token is no better.
    let r = route_apply(&mesh.control, &evil)
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);

    // DNS rebinding: a page whose name now points at 127.0.0.1 is refused by both APIs.
    for (api, path) in [
        (&mesh.control, "/v1/status"),
        (&mesh.api, "/v20190125/meshes"),
    ] {
        let r = client()
            .get(format!("{api}{path}"))
            .header("host", "rebind.evil.example")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 421, "{api}{path}");
        let body = r.text().await.unwrap_or_default();
        assert!(body.contains("rebind.evil.example"), "{body}");
    }

    // With the token, a change is accepted, but its origin is only a label: `route set
    // --save` writes the route's own file under mesh/ and leaves the script alone.
    let token = token_of(&mesh);
    let r = route_apply(&mesh.control, &evil)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (code, said) = mesh.cli(&[
        "route",
        "set",
        "distributor",
        "distributor-v1=70",
        "distributor-v2=30",
        "--save",
    ]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        std::fs::read_to_string(&script).expect("read"),
        "#!/bin/sh\necho untouched\n"
    );
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("mesh/routes/distributor.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(
        saved["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"],
        70
    );
    assert!(said.contains("mesh/routes/distributor.json"), "{said}");

    // Signed with the App Mesh credentials, the control API takes changes too; for
    // another region, the App Mesh API refuses the signature.
    let (code, _, err) =
        tests::aws_appmesh(&mesh.api, (KEY_ID, SECRET), "eu-west-3", &["list-meshes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("InvalidSignatureException") && err.contains("eu-west-3"),
        "{err}"
    );
    let (code, out, err) =
        tests::aws_appmesh(&mesh.api, (KEY_ID, SECRET), "us-east-1", &["list-meshes"]);
    assert_eq!(code, 0, "{out}{err}");

    // The same client token with another spec is refused, as App Mesh refuses it.
    let update = |weight: u32| {
        let spec = json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
            {"virtualNode": "distributor-v1", "weight": weight},
            {"virtualNode": "distributor-v2", "weight": 100 - weight}]}}})
        .to_string();
        tests::aws_appmesh(
            &mesh.api,
            (KEY_ID, SECRET),
            "us-east-1",
            &[
                "update-route",
                "--mesh-name",
                "gophermesh",
                "--virtual-router-name",
                "distributor",
                "--route-name",
                "distributor",
                "--client-token",
                "token-1",
                "--spec",
                &spec,
            ],
        )
    };
    assert_eq!(update(60).0, 0, "the first call with the token");
    assert_eq!(update(60).0, 0, "the same call again is idempotent");
    let (code, _, err) = update(10);
    assert_ne!(code, 0, "another spec under the same token was applied");
    assert!(
        err.contains("(ConflictException)") && err.contains("token-1"),
        "{err}"
    );
}

/// Item 3: connections that send headers and never their body no longer take the API's
/// places, so other callers are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_cannot_lock_the_api_out() {
    let dir = copy_of_shipped("sec-slow");
    let mesh = LocalMesh::start_with(&dir, Mode::Loopback, &["--empty"]);
    let host = mesh.api.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..80 {
        let mut s = TcpStream::connect(&host).expect("connect");
        write!(
            s,
            "POST /v20190125/meshes HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        )
        .expect("write");
        held.push(s);
    }
    // Give the server time to read all 80 heads (it answers nothing until the bodies end).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ok = 0;
    while Instant::now() < deadline && ok < 5 {
        let r = client()
            .get(format!("{}/v20190125/meshes", mesh.api))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            r.status(),
            200,
            "a caller was turned away while 80 bodies hang: {}",
            r.text().await.unwrap_or_default()
        );
        ok += 1;
    }
    assert_eq!(ok, 5);
    drop(held);
}

/// Item 3, the services: a connection that never finishes its headers is closed after
/// `--header-read-timeout`.
#[test]
fn half_open_connections_to_the_services_are_closed() {
    let d = Service::start(
        "distributor",
        &[
            "--listen",
            "127.0.0.1:0",
            "--version-tag",
            "v1",
            "--header-read-timeout",
            "1s",
        ],
        &[],
    );
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        })
        .collect();
    let started = Instant::now();
    for s in &mut conns {
        let mut buf = Vec::new();
        // The server closes (maybe after a 408): the read ends instead of timing out.
        let read = s.read_to_end(&mut buf);
        assert!(read.is_ok(), "still open after {:?}", started.elapsed());
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "closed only after {waited:?}"
    );
}

/// Item 5: `/compare` runs a bounded number at once, stops at its deadline with a report
/// marked partial, and refuses the old maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_is_bounded_in_count_time_and_concurrency() {
    let slow = Service::start(
        "distributor",
        &["--listen", "127.0.0.1:0", "--latency-ms", "3000"],
        &[],
    );
    let r = Service::start(
        "requester",
        &[
            "--listen",
            "127.0.0.1:0",
            "--distributor-url",
            &slow.url(),
            "--max-compares",
            "1",
            "--compare-deadline",
            "1s",
        ],
        &[],
    );
    let url = r.url();
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            let started = Instant::now();
            let report =
                tests::get_json(&format!("{url}/compare?n=4&concurrency=2&format=json")).await;
            (report, started.elapsed())
        }
    });
    // Once its calls reach the distributor, a second compare is turned away.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !slow
        .logs()
        .iter()
        .any(|l| l["message"] == "holding the answer (--latency-ms)")
    {
        assert!(Instant::now() < deadline, "the first compare never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = client()
        .get(format!("{url}/compare?n=1&format=json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "1");
    let (report, took) = first.await.expect("joined");
    assert_eq!(report["partial"], true, "{report}");
    assert_eq!(report["completed"], 0, "{report}");
    assert!(
        took < Duration::from_secs(3),
        "the deadline did not hold: {took:?}"
    );
    let r = client()
        .get(format!("{url}/compare?n=100000"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
}

/// `gophermesh validate` of the mesh and task definitions in `dir`.
fn validate(dir: &std::path::Path) -> (Option<i32>, String) {
    let (mesh, taskdefs) = (dir.join("mesh"), dir.join("taskdefs"));
    run_to_end(
        "gophermesh",
        &[
            "validate",
            "--mesh-dir",
            &mesh.display().to_string(),
            "--taskdefs-dir",
            &taskdefs.display().to_string(),
        ],
        &[],
    )
}

/// Item 6: a device, or a link to one, is refused at once, not read without end.
#[test]
fn devices_are_refused_as_input() {
    let started = Instant::now();
    let (code, said) = run_to_end(
        "gophermesh",
        &[
            "apply",
            "-f",
            "/dev/zero",
            "--control-url",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(said.contains("not a regular file"), "{said}");
    let dir = copy_of_shipped("sec-zero");
    std::os::unix::fs::symlink("/dev/zero", dir.join("mesh/zero.json")).expect("link");
    let (code, said) = validate(&dir);
    assert_ne!(code, Some(0));
    assert!(
        said.contains("zero.json") && said.contains("not a regular file"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A task definition whose family is a path is refused by `validate`, and `export
/// service-connect` (which names its files after families) writes nothing, inside `--out`
/// or outside it.
#[test]
fn a_family_cannot_lead_an_export_out_of_its_directory() {
    let dir = copy_of_shipped("sec-family");
    let def = dir.join("taskdefs/distributor-v1.json");
    let text = std::fs::read_to_string(&def).expect("the task definition");
    let mut td: serde_json::Value = serde_json::from_str(&text).expect("json");
    td["family"] = serde_json::json!("../../outside/x");
    std::fs::write(&def, td.to_string()).expect("written");
    let (code, said) = validate(&dir);
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("family") && said.contains("'.' is not allowed"),
        "{said}"
    );
    let out = dir.join("out/export");
    // Where `../../outside/x.json` from --out lands, made ready to be written to.
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let (code, said) = run_to_end(
        "gophermesh",
        &[
            "export",
            "service-connect",
            "--mesh-dir",
            &dir.join("mesh").display().to_string(),
            "--taskdefs-dir",
            &dir.join("taskdefs").display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    assert_ne!(code, Some(0), "{said}");
    let written: Vec<_> = std::fs::read_dir(&outside)
        .expect("outside")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(written.is_empty(), "written outside --out: {written:?}");
}

/// The Lattice export's apply.sh substitutes whole values only: a mesh whose names hold
/// `${VPC_ID}` and `@{REF}` reaches the AWS CLI with those names as they are, and names
/// with adjacent symbols still make every call (a stand-in `aws` records the inputs).
#[test]
fn apply_sh_substitutes_nothing_inside_names_from_the_mesh() {
    let dir = copy_of_shipped("sec-lattice");
    let odd = "m.${VPC_ID}.@{network}";
    for entry in walk(&dir.join("mesh")) {
        let text = std::fs::read_to_string(&entry).expect("a mesh file");
        let text = text
            .replace("\"gophermesh\"", &serde_json::to_string(odd).expect("json"))
            .replace(
                "\"routeName\": \"distributor\"",
                "\"routeName\": \"dist..x\"",
            );
        std::fs::write(&entry, text).expect("written");
    }
    for entry in walk(&dir.join("taskdefs")) {
        let text = std::fs::read_to_string(&entry).expect("a task definition");
        std::fs::write(
            &entry,
            text.replace("mesh/gophermesh/", &format!("mesh/{odd}/")),
        )
        .expect("written");
    }
    let out = dir.join("lattice");
    let (code, said) = run_to_end(
        "gophermesh",
        &[
            "export",
            "lattice",
            "--mesh-dir",
            &dir.join("mesh").display().to_string(),
            "--taskdefs-dir",
            &dir.join("taskdefs").display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{said}");
    let calls = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    // A stand-in for the AWS CLI: keeps each input and answers an id.
    let bin = dir.join("bin");
    let log = dir.join("calls");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&log).expect("log");
    let aws = bin.join("aws");
    std::fs::write(
        &aws,
        format!(
            "#!/bin/sh\nn=$(ls {log} | wc -l)\ncp \"${{4#file://}}\" {log}/$((n+1))-$2.json\necho id-$((n+1))\n",
            log = log.display()
        ),
    )
    .expect("aws");
    std::fs::set_permissions(&aws, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = std::process::Command::new("bash")
        .arg(out.join("apply.sh"))
        .env("PATH", path)
        .env("VPC_ID", "vpc-123")
        .output()
        .expect("apply.sh runs");
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}");
    let inputs: Vec<(String, serde_json::Value)> = {
        let mut files: Vec<_> = std::fs::read_dir(&log).expect("log").flatten().collect();
        files.sort_by_key(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.split('-').next().and_then(|n| n.parse::<u32>().ok())
        });
        files
            .iter()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).expect("an input");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    serde_json::from_str(&text).expect("json"),
                )
            })
            .collect()
    };
    assert_eq!(inputs.len(), calls, "every call was made: {stderr}");
    for (name, input) in &inputs {
        assert_eq!(input["tags"]["gophermesh:mesh"], odd, "{name}: {input}");
    }
    let (_, group) = inputs
        .iter()
        .find(|(n, _)| n.ends_with("-create-target-group.json"))
        .expect("a target group");
    assert_eq!(group["config"]["vpcIdentifier"], "vpc-123");
    let (_, association) = inputs
        .iter()
        .find(|(n, _)| n.ends_with("-create-service-network-service-association.json"))
        .expect("an association");
    assert_eq!(association["serviceNetworkIdentifier"], "id-1");
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Item 6: one file that does not parse is reported once, not also as a "does not exist"
/// for everything that names what it defines; a byte order mark is accepted.
#[test]
fn one_broken_file_is_one_error_and_a_bom_is_fine() {
    let dir = copy_of_shipped("sec-parse");
    let mesh_dir = dir.join("mesh");
    let node = mesh_dir.join("virtual-nodes/distributor-v1.json");
    std::fs::write(&node, "{\"meshName\": \"gophermesh\",").expect("write");
    let (code, said) = validate(&dir);
    assert_ne!(code, Some(0));
    assert!(said.contains("distributor-v1.json"), "{said}");
    assert!(!said.contains("does not exist"), "{said}");

    let dir = copy_of_shipped("sec-bom");
    let route = dir.join("mesh/routes/distributor.json");
    let text = std::fs::read_to_string(&route).expect("read");
    std::fs::write(&route, format!("\u{feff}{text}")).expect("write");
    let (code, said) = validate(&dir);
    assert_eq!(code, Some(0), "{said}");
}

/// Item 6: apps in their own namespace do not run as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_in_namespaces_are_not_root() {
    let dir = copy_of_shipped("sec-uid");
    let mesh = LocalMesh::start_in(&dir, Mode::Netns);
    let status = mesh.status().await;
    let mut apps = 0;
    for p in status["processes"].as_array().expect("processes") {
        let name = p["name"].as_str().unwrap_or_default();
        let pid = p["pid"].as_u64().expect("a running process has a pid");
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc");
        let uid = proc_status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .expect("uid line");
        let want = if name.ends_with("/envoy") {
            "1337"
        } else {
            "10001"
        };
        assert_eq!(uid, want, "{name} (pid {pid}) runs as uid {uid}");
        apps += usize::from(!name.ends_with("/envoy"));
    }
    assert_eq!(apps, 3, "{status}");
}

/// Item 4: after a write fails for want of space, the store heals once space is freed,
/// without a restart; while it cannot write, changes get 503 and status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_heals_after_the_disk_fills_and_empties() {
    tests::require_root_for_netns();
    let dir = copy_of_shipped("sec-full");
    let small = dir.join("small");
    std::fs::create_dir_all(&small).expect("dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "cannot mount a tmpfs for the test");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let data = small.join("data").display().to_string();
    let mut mesh = LocalMesh::start_with(&dir, Mode::Loopback, &["--data-dir", &data]);
    let token = token_of(&mesh);
    let set = |v1: u32| {
        client()
            .put(format!("{}/v1/routes/distributor/weights", mesh.control))
            .bearer_auth(&token)
            .json(&json!({"weights": {"distributor-v1": v1, "distributor-v2": 100 - v1}}))
            .send()
    };
    let store_status = || async { mesh.status().await["store"].clone() };
    assert_eq!(set(80).await.expect("sent").status(), 200);

    // Fill the disk.
    let filler = small.join("filler");
    let mut f = std::fs::File::create(&filler).expect("create");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let r = set(70).await.expect("sent");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert!(
        body["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("could not be stored")),
        "{body}"
    );
    let store = store_status().await;
    assert_eq!(store["writable"], false, "{store}");
    let (_, said) = mesh.cli(&["status"]);
    assert!(said.contains("NOT WRITING"), "{said}");

    // Free it: the next change is stored, without a restart.
    std::fs::remove_file(&filler).expect("free");
    assert_eq!(set(60).await.expect("sent").status(), 200);
    let store = store_status().await;
    assert_eq!(store["writable"], true, "{store}");
    assert!(store["reopened"].as_u64() >= Some(1), "{store}");

    // And it was durable: a restart from the data dir has 60/40.
    mesh.stop(Duration::from_secs(20));
    let again = LocalMesh::start_with(&dir, Mode::Loopback, &["--data-dir", &data]);
    assert_eq!(
        tests::route_weights(&again.status().await, "distributor"),
        [60, 40]
    );
}
