//! `gophermesh bench --quick`: a smoke run, so the benchmark cannot rot. It checks that
//! every figure was produced, not how fast anything is.

use std::process::Command;

use serde_json::Value;
use tests::{bin, repo_root, tool};

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is missing or not a number: {v}"));
    assert!(x > 0.0 && x.is_finite(), "{what} = {x}");
    x
}

#[test]
fn a_quick_bench_produces_every_figure() {
    // --containers runs the mesh in pods too, from images of the release binaries.
    tests::require_root_for_netns();
    tests::require_podman();
    let envoy = tool("envoy");
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is not installed: apt-get install -y wrk (scripts/setup.sh does this as root)"
    );
    let out_dir = std::env::temp_dir().join(format!("gophermesh-bench-{}", std::process::id()));
    let out = Command::new(bin("gophermesh"))
        .current_dir(repo_root())
        .args([
            "bench",
            "--quick",
            "--duration",
            "1",
            "--shifts",
            "5",
            "--scale",
            "10,100",
            "--fleet",
            "20x30,1000x1000",
            "--fleet-changes",
            "3",
            "--containers",
        ])
        .arg("--out")
        .arg(&out_dir)
        .arg("--bin-dir")
        .arg(tests::release_dir())
        .arg("--envoy-bin")
        .arg(&envoy)
        .output()
        .expect("gophermesh bench runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("bench.json")).expect("bench.json written"),
    )
    .expect("bench.json is JSON");
    for key in [
        "hello_floor",
        "distributor_direct",
        "requester_direct",
        "mesh",
        "mesh_floor",
        "mesh_metrics",
        "mesh_mtls",
        "mesh_containers",
    ] {
        let s = &report["scenarios"][key];
        for figure in ["rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req"] {
            positive(&s[figure], &format!("scenarios.{key}.{figure}"));
        }
        assert_eq!(s["errors"], 0, "{key}: {s}");
        assert!(printed.contains(key), "the table lacks {key}:\n{printed}");
    }
    // A rollout's steps, each from its decision to every Envoy's ACK.
    let steps = &report["rollout_step_ack_ms"];
    assert!(steps["shifts"].as_u64() >= Some(3), "{steps}");
    positive(&steps["max"], "rollout_step_ack_ms.max");
    assert!(
        printed.contains("mesh_metrics req/s / mesh req/s"),
        "{printed}"
    );
    assert!(
        printed.contains("mesh_mtls req/s / mesh req/s"),
        "{printed}"
    );
    for service in ["distributor", "requester", "envoy"] {
        positive(
            &report["rss_mib"][service]["idle"],
            &format!("rss_mib.{service}.idle"),
        );
        positive(
            &report["rss_mib"][service]["load"],
            &format!("rss_mib.{service}.load"),
        );
    }
    for service in ["distributor", "requester"] {
        positive(&report["ready_ms"][service], &format!("ready_ms.{service}"));
    }
    // The sidecar image beside Envoy run by hand.
    let sidecar = &report["sidecar"];
    for figure in [
        "/image_mb",
        "/envoy_binary_mb",
        "/image_over_envoy",
        "/live_ms/by_hand",
        "/live_ms/sidecar_image",
        "/rss_mib/by_hand/idle",
        "/rss_mib/sidecar_image/idle",
        "/rss_mib/sidecar_image/load",
    ] {
        positive(
            sidecar.pointer(figure).unwrap_or(&Value::Null),
            &format!("sidecar{figure}"),
        );
    }
    assert!(printed.contains("sidecar image"), "{printed}");
    // One entry per image: its size, or null when podman did not have it yet.
    let sizes = report["image_mb"]
        .as_object()
        .expect("image_mb is an object");
    let names: Vec<&str> = sizes.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = gophermesh::runtime::images::IMAGES
        .iter()
        .map(|i| i.name)
        .collect();
    want.sort_unstable();
    assert_eq!(names, want);
    for (name, size) in sizes {
        assert!(
            size.is_null() || size.as_f64().is_some_and(|mb| mb > 0.0),
            "{name}: {size}"
        );
    }
    assert_eq!(report["shift_propagation_ms"]["shifts"], 5);
    positive(&report["shift_propagation_ms"]["p50"], "shift p50");
    positive(&report["shift_propagation_ms"]["p99"], "shift p99");
    let scale = report["control_plane_scale"]
        .as_array()
        .expect("scale list");
    assert_eq!(scale.len(), 2);
    for point in scale {
        positive(&point["push_ms"], "push_ms");
        positive(&point["control_plane_rss_mib"], "control plane RSS");
    }
    // The fleets: every figure, and the real Envoys held what the sidecars received.
    let fleet = report["fleet"].as_array().expect("fleet runs");
    assert_eq!(fleet.len(), 4, "each fleet on each protocol: {fleet:?}");
    let order = [
        (20, 30, "sotw"),
        (20, 30, "delta"),
        (1000, 1000, "sotw"),
        (1000, 1000, "delta"),
    ];
    for (run, (clients, nodes, protocol)) in fleet.iter().zip(order) {
        assert_eq!(
            (run["clients"].as_u64(), run["virtual_nodes"].as_u64()),
            (Some(clients), Some(nodes)),
            "{run}"
        );
        assert_eq!(run["protocol"], protocol, "{run}");
        assert_eq!(run["real_envoys_identical"], 2, "{run}");
        positive(&run["connect_storm_ms"], "connect_storm_ms");
        positive(&run["change_acked_by_all_ms"]["p99"], "fleet p99");
        positive(&run["kib_sent_per_change"], "kib_sent_per_change");
        positive(&run["rss_mib"]["with_fleet"], "serve RSS");
    }
    assert!(
        printed.contains("fleet,  1000 sidecars x  1000 virtual nodes, delta"),
        "{printed}"
    );
    // A route change with every node connected builds its 10 callers again, not the 200.
    let rebuild = &report["rebuild"];
    assert_eq!(rebuild["nodes"], 200, "{rebuild}");
    assert_eq!(
        rebuild["what_read_it"]["builds_per_change"], 10.0,
        "{rebuild}"
    );
    assert_eq!(
        rebuild["every_node"]["builds_per_change"], 200.0,
        "{rebuild}"
    );
    positive(&rebuild["what_read_it"]["ms_per_change_p50"], "rebuild ms");
    assert!(
        printed.contains("route change, 200 nodes connected"),
        "{printed}"
    );
    // Every budget the bench checks is there, and its verdict follows from its value.
    let budgets = report["budgets"].as_array().expect("budgets");
    for name in [
        "distributor_direct rps / hello_floor rps",
        "mesh rps / mesh_floor rps",
        "sidecar image / Envoy binary",
        "fleet 1000x1000: change ACKed by all p99 ms",
        "fleet 1000x1000: connect storm ms",
        "fleet 1000x1000: serve RSS MiB",
        "fleet 1000x1000 delta: change ACKed by all p99 ms",
        "fleet 1000x1000 delta: bytes per sidecar per change",
        "route change, 200 nodes connected: nodes built again (its callers: 10)",
    ] {
        assert!(
            budgets.iter().any(|b| b["name"] == name),
            "no budget {name}: {budgets:?}"
        );
    }
    for b in budgets {
        let value = b["value"].as_f64().expect("a numeric value");
        let limit = b["limit"].as_str().expect("a limit");
        let (op, bound) = limit.split_once(' ').expect("OP BOUND");
        let bound: f64 = bound.parse().expect("a numeric bound");
        let holds = match op {
            ">=" => value >= bound,
            "<=" => value <= bound,
            other => panic!("unknown comparison {other} in {b}"),
        };
        assert_eq!(b["ok"].as_bool(), Some(holds), "{b}");
    }
    let svg = std::fs::read_to_string(out_dir.join("bench.svg")).expect("bench.svg written");
    assert!(
        svg.starts_with("<svg") && svg.contains("mesh_floor") && svg.contains("1000 x 1000 nodes"),
        "{svg}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// `gophermesh bench-fleet` with `args` (`path_first` put first on PATH): fleet.json, and
/// what it said, once it succeeded.
fn bench_fleet(args: &[&str], path_first: Option<&std::path::Path>) -> (Value, String) {
    let out_dir = tests::TempDir::new("bench-fleet");
    let mut command = Command::new(bin("gophermesh"));
    if let Some(dir) = path_first {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    }
    let out = command
        .current_dir(repo_root())
        .arg("bench-fleet")
        .args(args)
        .arg("--out")
        .arg(&*out_dir)
        .output()
        .expect("gophermesh runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let report = std::fs::read_to_string(out_dir.join("fleet.json")).expect("fleet.json");
    (serde_json::from_str(&report).expect("json"), said)
}

/// `gophermesh bench-fleet` on a small fleet: every figure is made, and each is a figure
/// that can only come from the sidecars having received and ACKed what they were sent;
/// real Envoys beside them end up holding the same resources.
#[test]
fn a_small_fleet_bench_produces_every_figure() {
    let args = ["--clients", "5,30", "--nodes", "12", "--changes", "4"];
    let (report, _) = bench_fleet(&args, None);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4, "each size on each protocol: {report}");
    let order = [(5, "sotw"), (5, "delta"), (30, "sotw"), (30, "delta")];
    for (run, (clients, protocol)) in runs.iter().zip(order) {
        assert_eq!(run["clients"], clients, "{run}");
        assert_eq!(run["protocol"], protocol, "{run}");
        positive(&run["connect_storm_ms"], "connect_storm_ms");
        positive(&run["connect_storm_mib"], "connect_storm_mib");
        let p50 = positive(&run["change_acked_by_all_ms"]["p50"], "p50");
        let max = positive(&run["change_acked_by_all_ms"]["max"], "max");
        assert!(p50 <= max, "{run}");
        positive(&run["kib_sent_per_change"], "kib_sent_per_change");
        positive(&run["rss_mib"]["with_fleet"], "rss");
        // Two real Envoys of the same node held what the simulated sidecars received.
        assert_eq!(run["real_envoys_identical"], 2, "{run}");
        // Half the fleet connected again at once while changes reached the other half.
        assert_eq!(
            run["storm_beside"]["reconnected"],
            clients - clients / 2,
            "{run}"
        );
        positive(&run["storm_beside"]["configured_ms"], "storm beside");
        positive(
            &run["storm_beside"]["change_acked_ms"]["p99"],
            "change during the storm",
        );
    }
    // Six times the sidecars, about six times the bytes per change (each gets the route).
    let per = |i: usize| runs[i]["kib_sent_per_change"].as_f64().unwrap_or(0.0);
    assert!(per(2) > 4.0 * per(0), "{report}");
    assert!(per(3) > 4.0 * per(1), "{report}");
    // On delta xDS, a weight change is the one virtual host that changed: a fraction of
    // the route configuration of twelve that state of the world sends again.
    let each = |i: usize| {
        runs[i]["bytes_sent_per_change_per_sidecar"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    for (sotw, delta) in [(0, 1), (2, 3)] {
        assert!(each(delta) <= 1024.0, "{report}");
        assert!(each(delta) * 3.0 < each(sotw), "{report}");
    }
}

/// `bench-fleet --replicas 3`: the fleet split over three `serve` replicas of one DynamoDB
/// table (moto's), changes through one reaching the sidecars of all, then the first replica
/// killed and its sidecars holding a change from the others (a sidecar counts only once
/// its latest routes came from a replica that runs).
#[test]
fn a_fleet_over_replicas_moves_the_lost_ones_sidecars_to_the_others() {
    let moto = tool("moto_server");
    let venv = moto.parent().expect("moto_server's directory");
    let args = "--clients 30 --nodes 8 --changes 3 --envoys 0 --replicas 3 --protocols delta";
    let args: Vec<&str> = args.split_whitespace().collect();
    let (report, said) = bench_fleet(&args, Some(venv));
    let failover = &report["runs"][0]["failover"];
    assert_eq!(failover["replicas"], 3, "{report}");
    let p50 = positive(
        &failover["change_acked_by_all_ms"]["p50"],
        "replicated change",
    );
    assert_eq!(failover["change_acked_by_all_ms"]["changes"], 3, "{report}");
    let lost = &failover["lost_replica"];
    assert_eq!(lost["sidecars"], 10, "{report}");
    // Each of the lost replica's sidecars opened its stream again, elsewhere.
    let moved = lost["streams_opened_again"].as_u64().unwrap_or(0);
    assert!(moved >= 10, "{report}");
    positive(
        &lost["configured_ms"],
        "the lost replica's sidecars configured again",
    );
    assert_eq!(lost["change_acked_ms"]["changes"], 3, "{report}");
    positive(
        &lost["change_acked_ms"]["p99"],
        "a change during the failover",
    );
    assert!(p50 > 0.0 && said.contains("replica 0 killed"), "{said}");
}
