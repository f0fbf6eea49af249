//! Container images built offline with podman, and `gophermesh up --containers`: every task
//! definition as a pod, with the same end-to-end checks as the local mesh.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    LocalMesh, Mode, bin, client, compare, copy_of_shipped, require_podman, require_root_for_netns,
    shift_all,
};

const SERVICE_IMAGES: [&str; 3] = [
    "gophermesh/requester:latest",
    "gophermesh/distributor:v1",
    "gophermesh/distributor:v2",
];

fn podman(state: &Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", state.join("containers.conf"))
        .args(args)
        .output()
        .expect("podman runs");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `gophermesh images build EXTRA` offline, from the release binaries, in `dir`.
fn images_build(dir: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin("gophermesh"))
        .current_dir(dir)
        .args(["images", "build"])
        .args(extra)
        .arg("--bin-dir")
        .arg(tests::release_dir())
        .arg("--state-dir")
        .arg(state)
        .arg("--envoy-bin")
        .arg(tests::tool("envoy"))
        .output()
        .expect("images build runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_build_offline_and_tasks_run_as_pods() {
    require_root_for_netns();
    require_podman();
    let dir = copy_of_shipped("containers");
    let state = dir.join(".gophermesh");

    // Build every image offline, FROM scratch.
    let out = images_build(&dir, &state, &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for image in SERVICE_IMAGES {
        let size: f64 = podman(
            &state,
            &["image", "inspect", "--format", "{{.Size}}", image],
        )
        .parse()
        .expect("size");
        assert!(
            size > 1e6 && size <= 20e6,
            "{image} is {size} bytes; the budget is 20 MB"
        );
        let user = podman(
            &state,
            &["image", "inspect", "--format", "{{.Config.User}}", image],
        );
        let uid = user.split(':').next().unwrap_or("");
        assert!(
            !uid.is_empty() && uid != "0" && uid != "root" && uid != "1337",
            "{image} runs as `{user}`"
        );
        let labels: Value = serde_json::from_str(&podman(
            &state,
            &[
                "image",
                "inspect",
                "--format",
                "{{json .Config.Labels}}",
                image,
            ],
        ))
        .expect("labels");
        for label in [
            "org.opencontainers.image.version",
            "org.opencontainers.image.source",
            "org.opencontainers.image.revision",
        ] {
            assert!(
                labels[label].as_str().is_some_and(|v| !v.is_empty()),
                "{image} lacks {label}: {labels}"
            );
        }
        let health = podman(
            &state,
            &[
                "image",
                "inspect",
                "--format",
                "{{json .Config.Healthcheck.Test}}",
                image,
            ],
        );
        assert_eq!(health, r#"["CMD","/app","healthcheck"]"#, "{image}");
    }
    let env_v2 = podman(
        &state,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            "gophermesh/distributor:v2",
        ],
    );
    assert!(env_v2.contains("GOPHER_VERSION=v2"), "{env_v2}");

    // Each task definition as a pod.
    let mut mesh = LocalMesh::start_with(&dir, Mode::Containers, &[]);
    let prefix = mesh.namespace_prefix();
    let pods = podman(&state, &["pod", "ls", "--format", "{{.Name}}"]);
    let ours: Vec<&str> = pods.lines().filter(|p| p.starts_with(&prefix)).collect();
    assert_eq!(
        ours.len(),
        4,
        "three tasks and the ingress gateway's: {pods}"
    );
    let text = client()
        .get(&mesh.requester)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(text.starts_with("distributor v"), "{text}");
    // The answer came from a container: its host name is the pod's.
    assert!(text.contains(&format!("from host {prefix}")), "{text}");

    let report = compare(&mesh, 2000, 8).await;
    assert_eq!(report["ok"], 2000, "{report}");
    let chi = tests::chi_square(&report, 0.9);
    assert!(
        chi < tests::CHI2_BOUND,
        "not 90/10: chi-square {chi:.2} for {report}"
    );

    shift_all(&mesh, "v2", "v1", &[]).await;

    // An essential container's exit stops its task, as on ECS.
    let victim = format!("{prefix}1-distributor");
    podman(&state, &["kill", &victim]);
    let envoy = format!("{prefix}1-envoy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while podman(
        &state,
        &["inspect", "--format", "{{.State.Running}}", &envoy],
    ) == "true"
    {
        assert!(
            Instant::now() < deadline,
            "{envoy} still runs after its task's essential container exited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stopping leaves no pod, container or namespace behind.
    assert_eq!(
        mesh.stop(Duration::from_secs(60)),
        Some(0),
        "{}",
        mesh.output()
    );
    let left = podman(&state, &["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !left.lines().any(|n| n.starts_with(&prefix)),
        "containers left: {left}"
    );
    let pods = podman(&state, &["pod", "ls", "--format", "{{.Name}}"]);
    assert!(
        !pods.lines().any(|n| n.starts_with(&prefix)),
        "pods left: {pods}"
    );
    assert_eq!(tests::namespaces_named(&prefix), Vec::<String>::new());
}

/// Removes a container when dropped.
struct Container<'a>(&'a Path, String);

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", self.0.join("containers.conf"))
            .args(["rm", "-f", "-t", "0", &self.1])
            .output();
    }
}

/// The sidecar image for after App Mesh, run by podman in a task's network namespace with
/// the walkthrough requester task definition's Envoy environment (only
/// `APPMESH_XDS_ENDPOINT` added, the CA mounted where the agent's image keeps it), against
/// `serve` over TLS: its Envoy gets the node's configuration, the task definition's own
/// health check passes inside it, and `podman stop` ends it after the drain. The image is
/// at most 1.5 times Envoy's own binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_image_runs_a_task_definitions_envoy_from_its_environment() {
    require_root_for_netns();
    require_podman();
    let dir = copy_of_shipped("sidecar-image");
    let state = dir.join(".gophermesh");
    let out = images_build(&dir, &state, &["--if-missing"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = "gophermesh/gophermesh-envoy:latest";
    let size: f64 = podman(
        &state,
        &["image", "inspect", "--format", "{{.Size}}", image],
    )
    .parse()
    .expect("a size");
    let envoy = gophermesh::runtime::envoy::real_envoy(&tests::tool("envoy")).expect("envoy");
    let envoy_size = std::fs::metadata(&envoy).expect("envoy").len() as f64;
    assert!(
        size <= 1.5 * envoy_size,
        "{image}: {size} bytes, Envoy {envoy_size}"
    );
    eprintln!(
        "{image}: {:.1} MB, {:.2} x Envoy's binary",
        size / 1e6,
        size / envoy_size
    );

    let host = tests::serve::Host::create();
    tests::serve::certificates(&dir, &host.host_ip);
    let serve = tests::serve::Serve::start_tls(&dir, &host.host_ip);
    let name = format!("gmt-sidecar-{}", std::process::id());
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &format!("ns:/var/run/netns/{}", host.name),
        "-v",
        &format!("{}:/etc/pki/tls/cert.pem:ro", dir.join("ca.pem").display()),
        "-e",
        &format!("APPMESH_XDS_ENDPOINT={}", serve.xds),
        "-e",
        "LISTENER_DRAIN_WAIT_TIME_S=5",
        "-e",
        "ENVOY_LOG_LEVEL=warning",
    ]
    .map(str::to_owned)
    .to_vec();
    for (k, v) in tests::sidecar_env("requester") {
        args.extend(["-e".to_owned(), format!("{k}={v}")]);
    }
    args.push(image.to_owned());
    podman(&state, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let _container = Container(&state, name.clone());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = tests::get_json(&format!("{}/v1/status", serve.control)).await;
        let e = &status["envoys"]["gophermesh/requester"];
        if e["connected"] == true && e["acked"]["routes"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar's Envoy never got its configuration: {status}\n{}",
            podman(&state, &["logs", &name])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("podman")
        .env("CONTAINERS_CONF", state.join("containers.conf"))
        .args(["exec", &name, "sh", "-c", check])
        .status()
        .expect("podman exec")
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the task definition's health check fails in the image"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent's image runs as Envoy's user, whom APPMESH's proxy configuration ignores.
    assert_eq!(
        podman(&state, &["inspect", "--format", "{{.Config.User}}", &name]),
        "1337:1337"
    );

    let started = Instant::now();
    podman(&state, &["stop", "-t", "30", &name]);
    let took = started.elapsed();
    let exit = podman(
        &state,
        &["inspect", "--format", "{{.State.ExitCode}}", &name],
    );
    assert_eq!(exit, "0", "{}", podman(&state, &["logs", &name]));
    assert!(
        took >= Duration::from_secs(4),
        "stopped after {took:?}, before the drain wait"
    );
}
