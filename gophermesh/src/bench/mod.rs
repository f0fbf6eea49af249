//! `gophermesh bench`: what the mesh costs, side by side in one run.
//!
//! Five load scenarios at the same concurrency, each with wrk after a warm-up:
//! `hello_floor` (a minimal hyper server), `distributor_direct`, `requester_direct`
//! (requester -> distributor, no Envoy), `mesh` (`gophermesh up`: requester -> its Envoy
//! -> distributor's Envoy -> distributor) and `mesh_floor` (the same mesh, three Envoys
//! with the same configuration, where minimal hyper stand-ins run in place of the
//! requester and the distributors, so the two differ by what the gophers themselves cost).
//! CPU per request is the CPU time the
//! serving processes used during the measured run divided by the requests served.
//! Also: RSS idle and at peak, time from exec to the first answer, route-shift propagation
//! and the control plane's push time and RSS for generated meshes of growing size, and a
//! 1,001-resource CloudFormation template evaluated and applied (`import`).

mod containers;
mod facts;
pub mod fleet;
pub mod hello;
pub mod import;
pub mod load;
pub mod markdown;
mod mesh;
mod procs;
pub mod rebuild;
pub mod report;
pub mod scale;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::api::token::ControlToken;
use anyhow::{Context, bail};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::config::BenchConfig;
use crate::progress::{UpAddresses, say};
use crate::runtime::{bin_dir, envoy};
use facts::{image_sizes, machine};
use load::{Scenario, Wrk, cpu_each, memory_mib};
use mesh::{
    Up, answered_by, envoy_pids, listener_handshakes, rollout_step_acks, shift_propagation,
    stand_ins, start_rollout, tagged_mesh,
};
use procs::{Proc, until_ok};
use report::{Memory, Report, ScalePoint};

/// `up`'s flags that put every listener it publishes on a free port (the bench's `up`, and
/// the end-to-end tests').
pub const UP_ON_FREE_PORTS: &[&str] = &[
    "--requester-port",
    "0",
    "--gateway-port",
    "0",
    "--control-port",
    "0",
    "--api-port",
    "0",
];

/// One scenario to load: its key, URL and the processes that serve it.
struct Target<'a> {
    key: &'a str,
    url: String,
    /// The network namespace the load comes from (a task network's hub), if not ours.
    netns: Option<String>,
    pids: Vec<(String, u32)>,
}

struct Bench {
    wrk: Wrk,
    rounds: u64,
    http: reqwest::Client,
    duration: u64,
    warmup: u64,
    bin_dir: PathBuf,
    me: PathBuf,
    envoy: PathBuf,
    work: PathBuf,
    mesh_dir: PathBuf,
    taskdefs_dir: PathBuf,
    /// Also the mesh with `up --containers`.
    containers: bool,
}

impl Bench {
    /// Warm-up, then the measured run, with the CPU time of `procs` over the measured run.
    /// Measures the scenarios of `group` side by side: each is warmed up, then they take
    /// turns for `rounds` rounds of `duration / rounds` seconds, so that a change in the
    /// machine's load falls on all of them alike. CPU is counted per process over the
    /// measured turns.
    async fn measure(&self, group: &[Target<'_>]) -> anyhow::Result<Vec<Scenario>> {
        let rounds = self.rounds.max(1);
        let turn = (self.duration / rounds).max(1);
        for t in group {
            say(format!(
                "{}: {} ({} s warm-up, {rounds} turns of {turn} s{})",
                t.key,
                t.url,
                self.warmup,
                if group.len() > 1 {
                    ", taking turns with the others"
                } else {
                    ""
                }
            ));
            self.wrk
                .run_in(t.netns.as_deref(), &t.url, self.warmup)
                .await?;
        }
        let mut runs: Vec<Vec<load::WrkResult>> = vec![Vec::new(); group.len()];
        let mut cpu: Vec<Vec<(String, Duration)>> = group
            .iter()
            .map(|t| {
                t.pids
                    .iter()
                    .map(|(n, _)| (n.clone(), Duration::ZERO))
                    .collect()
            })
            .collect();
        for _ in 0..rounds {
            for (i, t) in group.iter().enumerate() {
                let before = cpu_each(&t.pids)?;
                runs[i].push(self.wrk.run_in(t.netns.as_deref(), &t.url, turn).await?);
                let after = cpu_each(&t.pids)?;
                for (slot, ((_, a), (_, b))) in cpu[i].iter_mut().zip(after.iter().zip(&before)) {
                    slot.1 += a.saturating_sub(*b);
                }
            }
        }
        let mut out = Vec::new();
        for (i, t) in group.iter().enumerate() {
            let s = Scenario::from_runs(&runs[i], &cpu[i]);
            say(format!(
                "  {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} µs CPU per request, {} errors",
                t.key, s.rps, s.p50_ms, s.p99_ms, s.cpu_us_per_req, s.errors
            ));
            out.push(s);
        }
        Ok(out)
    }

    /// Starts service `name` (or the hello floor) on a port of its own; it and its URL.
    async fn service(&self, name: &str, extra: &[String]) -> anyhow::Result<(Proc, String)> {
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        args.extend_from_slice(extra);
        let program = if name == "hello" {
            args.insert(0, "bench-hello".to_owned());
            self.me.clone()
        } else {
            self.bin_dir.join(name)
        };
        if !program.is_file() {
            bail!(
                "no {} binary in {} (build with cargo build --release --workspace, or set --bin-dir)",
                name,
                self.bin_dir.display()
            );
        }
        Proc::spawn(name, &program, &args).await
    }

    /// Exec to first answer (median of 5) and idle RSS of a service.
    async fn start_up(&self, name: &str, extra: &[String]) -> anyhow::Result<(f64, f64)> {
        let mut times = Vec::new();
        let mut idle = 0.0;
        for _ in 0..5 {
            let exec = Instant::now();
            let (p, url) = self.service(name, extra).await?;
            until_ok(
                &self.http,
                &format!("{url}/health"),
                Duration::from_secs(10),
            )
            .await?;
            times.push(exec.elapsed().as_secs_f64() * 1000.0);
            // Idle: after the start-up work has settled.
            tokio::time::sleep(Duration::from_millis(300)).await;
            idle = memory_mib(p.pid()?, "VmRSS")?;
        }
        times.sort_by(f64::total_cmp);
        Ok((times[times.len() / 2], idle))
    }

    /// Starts `gophermesh up` on loopback and waits for `ready`.
    async fn up(
        &self,
        label: &str,
        mesh: &Path,
        taskdefs: &Path,
        bin_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Up> {
        let state = self.work.join(label);
        std::fs::create_dir_all(&state)
            .with_context(|| format!("cannot create {}", state.display()))?;
        let errors = state.join("up.stderr");
        let stderr = std::fs::File::create(&errors)
            .with_context(|| format!("cannot create {}", errors.display()))?;
        let mut command = Command::new(&self.me);
        command
            .arg("up")
            .arg("--mesh-dir")
            .arg(mesh)
            .arg("--taskdefs-dir")
            .arg(taskdefs)
            .args(UP_ON_FREE_PORTS)
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--envoy-bin")
            .arg(&self.envoy)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start gophermesh up")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addresses = UpAddresses::default();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "ready" {
                    return true;
                }
                addresses.read(&line);
            }
            false
        })
        .await
        .unwrap_or(false);
        let said = || {
            let text = std::fs::read_to_string(&errors).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        };
        let (Some(requester), Some(control)) = (addresses.requester, addresses.control) else {
            bail!(
                "gophermesh up ({label}) did not say where it listens; it said:\n{}\n(logs in {})",
                said(),
                state.display()
            );
        };
        if !ready {
            bail!(
                "gophermesh up ({label}) did not get ready; its logs are in {}",
                state.display()
            );
        }
        // Keep reading so that `up` never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let token = ControlToken::read(&state).with_context(|| {
            format!(
                "gophermesh up ({label}) wrote no control token in {}",
                state.display()
            )
        })?;
        let mut up = Up {
            child,
            requester,
            control,
            token,
        };
        // Load goes to the requester task's Envoy itself, as on ECS, not through the port
        // `up` publishes for people.
        let status = up.status(&self.http).await?;
        let ingress = status["placements"]["gophermesh/requester"]["ingress"]
            .as_str()
            .context("status names no ingress for the requester")?;
        up.requester = format!("http://{ingress}");
        Ok(up)
    }
}

/// The nearest-rank quantile `q` (0 to 1) of `sorted`; 0 when it is empty.
pub(crate) fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(args: &BenchConfig) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (duration, shifts) = (args.duration, args.shifts);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let work = std::path::absolute(args.out.join("work"))?;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let me = std::env::current_exe()?;
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let bench = Bench {
        wrk: Wrk::new(&work, args.load_threads, args.concurrency)?,
        http: reqwest::Client::builder().no_proxy().build()?,
        duration,
        rounds: if args.quick { 2 } else { 5 },
        warmup: if args.quick { 1 } else { 3 },
        envoy: std::path::absolute(envoy::find(args.envoy_bin.as_deref())?)?,
        bin_dir,
        me,
        work: work.clone(),
        mesh_dir: std::path::absolute(&args.source.mesh_dir)?,
        taskdefs_dir: std::path::absolute(&args.source.taskdefs_dir)?,
        containers: args.containers,
    };
    say(format!(
        "gophermesh bench: {} connections, {duration} s per scenario, wrk with {} thread(s); results go to {}",
        bench.wrk.connections,
        bench.wrk.threads,
        args.out.display()
    ));

    let mut gathered = Gathered::default();
    bench.services_alone(&mut gathered).await?;
    bench.direct(&mut gathered).await?;
    let (shift, rollout_steps) = bench.meshes(&mut gathered, shifts).await?;
    let scale_points = bench.scale(&args.scale).await?;
    say("a CloudFormation template of 1,001 resources, evaluated and applied to serve");
    let import = import::measure(&work, &bench.me, 250).await?;
    say(format!(
        "  {} resources ({:.0} KiB): evaluated in {:.1} ms, applied in {:.0} ms (first: {:.0} ms)",
        import.resources,
        import.template_kib,
        import.evaluate_ms,
        import.apply_ms,
        import.first_apply_ms
    ));
    let fleet = bench.fleets(args).await?;
    let rebuild = rebuild::run(args.quick)?;
    let Gathered {
        scenarios,
        rss,
        ready,
        sidecar,
    } = gathered;
    let mut settings = BTreeMap::new();
    settings.insert("concurrency".to_owned(), bench.wrk.connections.to_string());
    settings.insert("load_threads".to_owned(), bench.wrk.threads.to_string());
    settings.insert("duration_s".to_owned(), duration.to_string());
    settings.insert("warmup_s".to_owned(), bench.warmup.to_string());
    settings.insert("turns".to_owned(), bench.rounds.to_string());
    settings.insert("quick".to_owned(), args.quick.to_string());
    let mut report = Report {
        machine: machine(),
        settings,
        scenarios,
        rss_mib: rss,
        ready_ms: ready,
        image_mb: image_sizes(),
        shift_propagation_ms: shift,
        rollout_step_ack_ms: rollout_steps,
        control_plane_scale: scale_points,
        import,
        fleet,
        rebuild: Some(rebuild),
        sidecar,
        budgets: Vec::new(),
    };
    report.budgets = report::budgets(&report);
    let (json_path, svg_path) = markdown::write(&args.out, &report)?;
    let _ = std::fs::remove_dir_all(&work);
    println!();
    print!("{}", report::table(&report));
    println!();
    println!(
        "Done in {:.0} s. Wrote {} and {} (and bench.md, summary.md beside them).",
        started.elapsed().as_secs_f64(),
        json_path.display(),
        svg_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the scenarios measured, as they go.
#[derive(Default)]
struct Gathered {
    scenarios: BTreeMap<String, Scenario>,
    rss: BTreeMap<String, Memory>,
    ready: BTreeMap<String, f64>,
    /// The sidecar image's figures (`--containers`).
    sidecar: Option<serde_json::Value>,
}

impl Bench {
    /// Start-up time and idle memory of each service on its own.
    async fn services_alone(&self, g: &mut Gathered) -> anyhow::Result<()> {
        let (ready, rss) = (&mut g.ready, &mut g.rss);
        for (name, extra) in [
            ("distributor", vec![]),
            (
                "requester",
                vec![
                    "--distributor-url".to_owned(),
                    "http://127.0.0.1:9/".to_owned(),
                ],
            ),
        ] {
            let (ms, idle) = self.start_up(name, &extra).await?;
            say(format!(
                "{name}: ready {ms:.1} ms after exec (median of 5), idle RSS {idle:.1} MiB"
            ));
            ready.insert(name.to_owned(), ms);
            rss.insert(name.to_owned(), Memory { idle, load: 0.0 });
        }

        Ok(())
    }

    /// The floor (a minimal hyper server) and the distributor directly, side by side;
    /// then the requester calling the distributor directly.
    async fn direct(&self, g: &mut Gathered) -> anyhow::Result<()> {
        let (scenarios, rss) = (&mut g.scenarios, &mut g.rss);
        let (hello, hello_url) = self.service("hello", &[]).await?;
        let hello_url = format!("{hello_url}/");
        until_ok(&self.http, &hello_url, Duration::from_secs(10)).await?;
        let (distributor, durl) = self.service("distributor", &[]).await?;
        let durl = format!("{durl}/");
        until_ok(&self.http, &durl, Duration::from_secs(10)).await?;
        let dpid = distributor.pid()?;
        let measured = self
            .measure(&[
                Target {
                    key: "hello_floor",
                    url: hello_url,
                    netns: None,
                    pids: vec![("hello".into(), hello.pid()?)],
                },
                Target {
                    key: "distributor_direct",
                    url: durl.clone(),
                    netns: None,
                    pids: vec![("distributor".into(), dpid)],
                },
            ])
            .await?;
        for (key, s) in ["hello_floor", "distributor_direct"]
            .into_iter()
            .zip(measured)
        {
            scenarios.insert(key.to_owned(), s);
        }
        drop(hello);

        // 3. The requester calling the distributor directly.
        let (requester, rurl) = self
            .service("requester", &["--distributor-url".to_owned(), durl.clone()])
            .await?;
        let rurl = format!("{rurl}/");
        until_ok(&self.http, &rurl, Duration::from_secs(10)).await?;
        let rpid = requester.pid()?;
        let measured = self
            .measure(&[Target {
                key: "requester_direct",
                url: rurl,
                netns: None,
                pids: vec![("requester".into(), rpid), ("distributor".into(), dpid)],
            }])
            .await?;
        for s in measured {
            scenarios.insert("requester_direct".to_owned(), s);
        }
        if let Some(m) = rss.get_mut("distributor") {
            m.load = memory_mib(dpid, "VmHWM")?;
        }
        if let Some(m) = rss.get_mut("requester") {
            m.load = memory_mib(rpid, "VmHWM")?;
        }
        drop(requester);
        drop(distributor);

        Ok(())
    }

    /// Through the mesh, and the same mesh with minimal hyper stand-ins for the gophers
    /// (the fair floor): two local meshes at once, side by side; then the time a route
    /// shift takes to reach the requests, `shifts` times.
    async fn meshes(
        &self,
        g: &mut Gathered,
        shifts: u32,
    ) -> anyhow::Result<(report::Shifts, report::Shifts)> {
        let work = &self.work;
        let (scenarios, rss) = (&mut g.scenarios, &mut g.rss);
        say(
            "starting the local mesh (gophermesh up), and a second one whose apps are minimal hyper stand-ins",
        );
        let up = self
            .up(
                "mesh",
                &self.mesh_dir,
                &self.taskdefs_dir,
                &self.bin_dir,
                &[],
            )
            .await?;
        let floor_bin = stand_ins(&work.join("floor-bin"), &self.me)?;
        let floor = self
            .up(
                "mesh-floor",
                &self.mesh_dir,
                &self.taskdefs_dir,
                &floor_bin,
                &[],
            )
            .await?;
        // The same mesh with a rollout in progress: its driver reads every Envoy's stats
        // each second (the cost of the metrics a rollout judges on). It holds its first
        // step (it never gets the requests it asks for).
        let metered = self
            .up(
                "mesh-metrics",
                &self.mesh_dir,
                &self.taskdefs_dir,
                &self.bin_dir,
                &[],
            )
            .await?;
        start_rollout(
            &self.http,
            &metered,
            serde_json::json!({"minRequests": 1_000_000_000_000_u64}),
        )
        .await?;
        // The same mesh on its own mutual TLS (PERMISSIVE: the load enters the requester's
        // Envoy plain; Envoy to Envoy goes on mesh certificates).
        let mtls_files = tagged_mesh(&self.mesh_dir, &work.join("mesh-mtls-files"), "PERMISSIVE")?;
        let mtls = self
            .up(
                "mesh-mtls",
                &mtls_files,
                &self.taskdefs_dir,
                &self.bin_dir,
                &[],
            )
            .await?;
        let (_, host) = answered_by(&self.http, &floor.requester).await?;
        if host != "hyper-floor" {
            bail!("the mesh_floor mesh was answered by {host}, not by the hyper stand-in");
        }
        let containers = match self.containers {
            true => Some(self.mesh_in_containers().await?),
            false => None,
        };
        let procs = up.processes(&self.http).await?;
        let floor_procs = floor.processes(&self.http).await?;
        let metered_procs = metered.processes(&self.http).await?;
        let mtls_procs = mtls.processes(&self.http).await?;
        // Before any load: the Envoys' idle memory.
        let mut idle_envoy = 0.0_f64;
        for pid in &envoy_pids(&procs) {
            idle_envoy = idle_envoy.max(memory_mib(*pid, "VmRSS")?);
        }
        let mut group = vec![
            Target {
                key: "mesh",
                url: format!("{}/", up.requester),
                netns: None,
                pids: procs.clone(),
            },
            Target {
                key: "mesh_floor",
                url: format!("{}/", floor.requester),
                netns: None,
                pids: floor_procs,
            },
            Target {
                key: "mesh_metrics",
                url: format!("{}/", metered.requester),
                netns: None,
                pids: metered_procs,
            },
            Target {
                key: "mesh_mtls",
                url: format!("{}/", mtls.requester),
                netns: None,
                pids: mtls_procs,
            },
        ];
        if let Some(c) = &containers {
            group.push(Target {
                key: "mesh_containers",
                url: format!("{}/", c.requester),
                netns: Some(c.hub.clone()),
                pids: c.procs.clone(),
            });
        }
        let measured = self.measure(&group).await?;
        for (t, s) in group.iter().zip(measured) {
            scenarios.insert(t.key.to_owned(), s);
        }
        if listener_handshakes(&self.http, &mtls, "gophermesh/distributor-v1").await? == 0 {
            bail!("the mesh_mtls mesh's distributor-v1 took no TLS: its mutual TLS is not on");
        }
        floor.stop().await;
        metered.stop().await;
        mtls.stop().await;
        let mut envoy_peak = 0.0_f64;
        for pid in &envoy_pids(&procs) {
            envoy_peak = envoy_peak.max(memory_mib(*pid, "VmHWM")?);
        }
        let by_hand = Memory {
            idle: idle_envoy,
            load: envoy_peak,
        };
        if let Some(c) = containers {
            g.sidecar = Some(c.figures(&self.http, &by_hand, &up, &self.envoy).await?);
        }
        rss.insert("envoy".to_owned(), by_hand);
        say(format!("timing {shifts} route shifts"));
        let shift = shift_propagation(&self.http, &up, shifts).await?;
        say(format!(
            "  route shift -> first request on the new weights: p50 {:.1} ms, p99 {:.1} ms",
            shift.p50, shift.p99
        ));
        say("a rollout of four steps, each timed from its decision to every Envoy's ACK");
        let steps = rollout_step_acks(&self.http, &up).await?;
        say(format!(
            "  rollout step -> every Envoy's ACK: p50 {:.1} ms, max {:.1} ms over {} steps",
            steps.p50, steps.max, steps.shifts
        ));
        up.stop().await;

        Ok((shift, steps))
    }

    /// The control plane with `sizes` virtual nodes: its push time and memory.
    async fn scale(&self, sizes: &[u32]) -> anyhow::Result<Vec<ScalePoint>> {
        let work = &self.work;
        let mut scale_points = Vec::new();
        for &n in sizes {
            let dir = work.join(format!("scale-{n}"));
            let resources = scale::generate(&dir, n, &self.taskdefs_dir)?;
            say(format!(
                "control plane with {n} virtual nodes ({resources} resources)"
            ));
            let up = self
                .up(
                    &format!("scale-{n}"),
                    &dir.join("mesh"),
                    &dir.join("taskdefs"),
                    &self.bin_dir,
                    &[],
                )
                .await?;
            let status = up.status(&self.http).await?;
            let push_ms = status["envoys"]["gophermesh/requester"]["first_config_ms"]
                .as_f64()
                .context("the requester's Envoy never ACKed its whole configuration")?;
            let up_pid = up.child.id().context("up exited")?;
            let rss_mib = memory_mib(up_pid, "VmRSS")?;
            say(format!(
                "  pushed in {push_ms:.1} ms; control plane RSS {rss_mib:.1} MiB"
            ));
            scale_points.push(ScalePoint {
                virtual_nodes: n,
                resources,
                push_ms,
                control_plane_rss_mib: rss_mib,
            });
            up.stop().await;
        }

        Ok(scale_points)
    }

    /// The control plane at fleet scale, as `args.fleet` asks.
    async fn fleets(&self, args: &BenchConfig) -> anyhow::Result<Vec<serde_json::Value>> {
        let work = &self.work;
        let mut fleet = Vec::new();
        for &(clients, nodes) in &args.fleet {
            let config = fleet::FleetConfig {
                clients: vec![clients],
                nodes,
                changes: args.fleet_changes,
                protocols: args.fleet_protocols.clone(),
                out: args.out.clone(),
                taskdefs_dir: self.taskdefs_dir.clone(),
                envoys: 2,
                envoy_bin: Some(self.envoy.clone()),
                replicas: 1,
            };
            say(format!(
                "fleet of {clients} simulated sidecars (and 2 real Envoys) against gophermesh serve with {nodes} virtual nodes"
            ));
            fleet.extend(fleet::runs(&config, work).await?);
        }

        Ok(fleet)
    }
}
