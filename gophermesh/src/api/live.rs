//! The live view of the mesh, for the web console and for any tool: `GET /v1/live` (one
//! frame, JSON) and `GET /v1/live/stream` (a frame every second, Server-Sent Events).
//!
//! A frame holds every mesh held (`meshes`, by name), each as a graph (virtual gateways
//! with their task's state and the services their gateway routes lead to, virtual
//! services, routers, routes with their weights, virtual nodes with their task's state,
//! their Envoy's sync state and the traffic to them: requests per second, success rate,
//! p50/p99 latency, a series over the last five minutes, and the requests completed since
//! the last change), and the history of changes with how long each took to be ACKed by
//! every Envoy. Traffic is sampled for every mesh whose tasks run here.
//!
//! One sampler reads each Envoy's stats once a second, and only while someone is looking
//! (a stream is open, or a frame was asked for in the last few seconds): the number of
//! open pages changes nothing for the Envoys.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use controlplane::xds::ads::{EnvoyStatuses, GATEWAY_PREFIX, node_key};
use controlplane::{Snapshot, Store, TargetTraffic};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::tasks::Tasks;

/// How often the sampler reads the Envoys while someone is looking.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long the series keep (one point a second).
const SERIES_LEN: usize = 300;
/// How long after the last `GET /v1/live` the sampler keeps going without a stream.
const LINGER: Duration = Duration::from_secs(5);
/// How many changes the history keeps.
const HISTORY_LEN: usize = 50;
/// How long a change may take to reach every Envoy before the history stops waiting.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The live view. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    envoys: EnvoyStatuses,
    /// The certificates served, for each node's card.
    secrets: controlplane::secrets::Secrets,
    tasks: Arc<dyn Tasks>,
    frames: watch::Sender<Arc<Value>>,
    state: Mutex<Sampled>,
    /// Stats reads done, per Envoy (one per sample).
    samples: AtomicU64,
    last_asked: Mutex<Instant>,
    /// The store's version when the view started.
    first_version: u64,
}

/// What the sampler keeps between samples.
#[derive(Debug, Default)]
struct Sampled {
    last: Option<(Instant, BTreeMap<String, TargetTraffic>)>,
    /// Completed counts at the first sample after the last change.
    baseline: Option<BTreeMap<String, u64>>,
    baseline_version: u64,
    series: BTreeMap<String, VecDeque<(f64, f64)>>,
    rates: BTreeMap<String, Value>,
    /// The last latency percentiles Envoy reported per node.
    latency: BTreeMap<String, (Option<f64>, Option<f64>)>,
    history: VecDeque<Value>,
    /// Per process name: its restart count and when it last rose.
    restarts: BTreeMap<String, (u64, Instant)>,
}

impl Live {
    /// The live view over `store`, the Envoys' `envoys` and the certificates they are
    /// served (`secrets`), and the `tasks`; starts the sampler and the change history.
    pub fn start(
        store: Store,
        (envoys, secrets): (EnvoyStatuses, controlplane::secrets::Secrets),
        tasks: Arc<dyn Tasks>,
    ) -> Self {
        let (frames, _) = watch::channel(Arc::new(Value::Null));
        let live = Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                envoys,
                secrets,
                tasks,
                frames,
                state: Mutex::default(),
                samples: AtomicU64::new(0),
                last_asked: Mutex::new(Instant::now() - LINGER),
                first_version: store.current().version,
            }),
        };
        tokio::spawn(live.clone().sample_while_watched());
        tokio::spawn(live.clone().record_changes());
        live
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Sampled> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn watched(&self) -> bool {
        let asked = *self
            .inner
            .last_asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.frames.receiver_count() > 0 || asked.elapsed() < LINGER
    }

    async fn sample_while_watched(self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.watched() {
                let frame = self.sample().await;
                self.inner.frames.send_replace(Arc::new(frame));
            }
        }
    }

    /// Reads every Envoy once and makes a frame.
    async fn sample(&self) -> Value {
        let snapshot = self.inner.store.current();
        let traffic = self.inner.tasks.traffic().await;
        self.inner.samples.fetch_add(1, Ordering::Relaxed);
        let processes = self.inner.tasks.processes();
        let now = Instant::now();
        let t = unix_seconds();
        let mut guard = self.state();
        let state = &mut *guard;
        // Until the first change, everything since start counts; after a change, what
        // completed since it was stored (read then); a sample that sees a version before
        // that read has happened starts from itself.
        if state.baseline.is_none() {
            state.baseline = Some(BTreeMap::new());
            state.baseline_version = self.inner.first_version;
        }
        if state.baseline_version != snapshot.version {
            state.baseline = Some(completed(&traffic));
            state.baseline_version = snapshot.version;
        }
        let mut rates = BTreeMap::new();
        if let Some((at, previous)) = &state.last {
            let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
            for (node, now_t) in &traffic {
                let before = previous.get(node).cloned().unwrap_or_default();
                let done = now_t.completed.saturating_sub(before.completed);
                let failed = now_t.errors_5xx.saturating_sub(before.errors_5xx);
                let rps = done as f64 / dt;
                let success = (done > 0).then(|| 1.0 - failed as f64 / done as f64);
                // Envoy computes percentiles per stats interval (5 s); between two, the
                // last ones it gave stand.
                let kept = state.latency.entry(node.clone()).or_default();
                if now_t.p50_ms.is_some() {
                    *kept = (now_t.p50_ms, now_t.p99_ms);
                }
                rates.insert(
                    node.clone(),
                    json!({
                        "rps": round2(rps),
                        "success_rate": success.map(round4),
                        "p50_ms": kept.0.map(round2),
                        "p99_ms": kept.1.map(round2),
                    }),
                );
                let series = state.series.entry(node.clone()).or_default();
                series.push_back((t, round2(rps)));
                while series.len() > SERIES_LEN {
                    series.pop_front();
                }
            }
        }
        state.rates = rates;
        state.last = Some((now, traffic.clone()));
        for p in processes.as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let restarts = p["restarts"].as_u64().unwrap_or(0);
            let seen = state
                .restarts
                .entry(name)
                .or_insert((restarts, now - LINGER * 10));
            if restarts > seen.0 {
                *seen = (restarts, now);
            }
        }
        let observed: BTreeMap<String, u64> = traffic
            .iter()
            .map(|(n, t)| {
                let base = state
                    .baseline
                    .as_ref()
                    .and_then(|b| b.get(n))
                    .copied()
                    .unwrap_or(0);
                (n.clone(), t.completed.saturating_sub(base))
            })
            .collect();
        frame(
            &snapshot,
            (&self.inner.envoys, &self.inner.secrets.status()),
            &processes,
            state,
            &observed,
            self.inner.samples.load(Ordering::Relaxed),
        )
    }

    /// Keeps the history of changes: what changed, and how long until every connected
    /// Envoy had ACKed it.
    async fn record_changes(self) {
        let mut snapshots = self.inner.store.subscribe();
        let mut previous = snapshots.borrow_and_update().clone();
        while snapshots.changed().await.is_ok() {
            let current = snapshots.borrow_and_update().clone();
            let what = describe_change(&previous, &current);
            previous = current.clone();
            let version = current.version;
            let at = SystemTime::now();
            // The change is published to the ADS streams as it is to this watcher: its
            // time to every Envoy's ACK counts from here.
            let started = Instant::now();
            {
                let mut state = self.state();
                state.history.push_front(json!({
                    "version": version,
                    "at": humantime::format_rfc3339_millis(at).to_string(),
                    "what": what,
                    "acked_ms": Value::Null,
                }));
                state.history.truncate(HISTORY_LEN);
            }
            let live = self.clone();
            tokio::spawn(async move {
                while started.elapsed() < ACK_WAIT {
                    if live.inner.envoys.all_synced(version) {
                        let ms = round2(started.elapsed().as_secs_f64() * 1e3);
                        let mut state = live.state();
                        if let Some(entry) =
                            state.history.iter_mut().find(|h| h["version"] == version)
                        {
                            entry["acked_ms"] = json!(ms);
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            // The counts the observed split starts from are read as the change is stored
            // (one read per Envoy per change, whether anyone is looking or not).
            let counts = completed(&self.inner.tasks.traffic().await);
            {
                let mut state = self.state();
                state.baseline = Some(counts);
                state.baseline_version = version;
            }
        }
    }
}

fn completed(traffic: &BTreeMap<String, TargetTraffic>) -> BTreeMap<String, u64> {
    traffic
        .iter()
        .map(|(n, t)| (n.clone(), t.completed))
        .collect()
}

/// The frame's JSON.
fn frame(
    snapshot: &Snapshot,
    (envoys, certificates): (&EnvoyStatuses, &[controlplane::secrets::SecretStatus]),
    processes: &Value,
    state: &Sampled,
    observed: &BTreeMap<String, u64>,
    samples: u64,
) -> Value {
    let envoys = envoys.snapshot();
    let seen = Seen {
        envoys: &envoys,
        certificates,
        processes,
        state,
        observed,
        now: Instant::now(),
    };
    let meshes: Vec<Value> = snapshot
        .meshes
        .iter()
        .map(|(name, m)| {
            let mut shown = seen.mesh(name, &m.mesh);
            shown["rollouts"] = rollouts_shown(m);
            shown
        })
        .collect();
    json!({
        "at": unix_seconds(),
        "version": snapshot.version,
        "observed_since_version": state.baseline_version,
        "meshes": meshes,
        "history": state.history,
        "samples": samples,
    })
}

/// The events of a rollout a frame shows (its last ones).
const ROLLOUT_EVENTS_SHOWN: usize = 8;

/// The rollouts of mesh `m`, as the console's timelines show them.
fn rollouts_shown(m: &controlplane::MeshState) -> Value {
    let all: Vec<Value> = m
        .rollouts
        .values()
        .map(|r| {
            let mut shown = json!({
                "router": r.router,
                "route": r.route,
                "target": r.target,
                "weight": r.weight(),
                "failedChecks": r.failed_checks,
                "maxFailedChecks": r.plan.max_failed_checks,
                "events": r.events[r.events.len().saturating_sub(ROLLOUT_EVENTS_SHOWN)..],
                "ab": r.ab,
            });
            if let Value::Object(phase) = serde_json::to_value(&r.phase).unwrap_or_default() {
                shown.as_object_mut().expect("an object").extend(phase);
            }
            shown
        })
        .collect();
    Value::Array(all)
}

/// What a frame shows beside the meshes' resources: the Envoys, the tasks' processes and
/// the traffic sampled (all keyed `MESH/NODE`).
struct Seen<'a> {
    envoys: &'a BTreeMap<String, controlplane::xds::ads::EnvoyStatus>,
    certificates: &'a [controlplane::secrets::SecretStatus],
    processes: &'a Value,
    state: &'a Sampled,
    observed: &'a BTreeMap<String, u64>,
    now: Instant,
}

impl Seen<'_> {
    /// Mesh `name` as a graph, with its tasks' and Envoys' state and its traffic.
    fn mesh(&self, name: &str, mesh: &meshmodel::Mesh) -> Value {
        let services: Vec<Value> = mesh
            .virtual_services
            .values()
            .map(|s| {
                let provider = s.value.spec.provider.as_ref();
                json!({
                    "name": s.value.virtual_service_name,
                    "router": provider.and_then(|p| p.virtual_router.as_ref()).map(|r| &r.virtual_router_name),
                    "node": provider.and_then(|p| p.virtual_node.as_ref()).map(|n| &n.virtual_node_name),
                })
            })
            .collect();
        let gateways: Vec<Value> = mesh
            .virtual_gateways
            .values()
            .map(|g| {
                let gateway = &g.value.virtual_gateway_name;
                let routes: Vec<Value> = mesh
                    .gateway_routes_of(gateway)
                    .into_iter()
                    .filter_map(|r| {
                        let (_, _, http) = r.spec.as_http()?;
                        Some(json!({
                            "name": r.gateway_route_name,
                            "service": http.action.target.virtual_service.virtual_service_name,
                            "prefix": http.route_match.prefix,
                        }))
                    })
                    .collect();
                let (task, _) = self.task_of(name, &format!("{GATEWAY_PREFIX}{gateway}"));
                json!({"name": gateway, "task": task, "routes": routes})
            })
            .collect();
        let nodes: Vec<Value> = mesh
            .virtual_nodes
            .keys()
            .map(|node| {
                let key = node_key(name, node);
                let (task, restarts) = self.task_of(name, node);
                let state = self.state;
                json!({
                    "name": node,
                    "task": task,
                    "restarts": restarts,
                    "envoy": self.envoys.get(&key).map(|e| json!({
                        "connected": e.connected,
                        "synced_version": e.synced_version,
                        "last_nack": e.last_nack,
                    })),
                    "traffic": state.rates.get(&key),
                    "certificates": self.certificates_of(&key),
                    "observed": self.observed.get(&key),
                    "series": state.series.get(&key).map(|s| s.iter().map(|(t, r)| json!([t, r])).collect::<Vec<_>>()),
                })
            })
            .collect();
        json!({
            "name": name,
            "gateways": gateways,
            "services": services,
            "routers": routers_of(name, mesh, self.observed),
            "nodes": nodes,
        })
    }

    /// The certificates node `key` (`MESH/NODE`) serves (from ACM, or its mesh certificate):
    /// subject, issuer, expiry.
    fn certificates_of(&self, key: &str) -> Vec<Value> {
        self.certificates
            .iter()
            .filter(|c| c.kind != "acm-trust" && c.kind != "mesh-ca")
            .filter(|c| c.used_by.iter().any(|u| u == key))
            .filter_map(|c| {
                let info = c.certificates.first()?;
                Some(json!({
                    "kind": c.kind,
                    "name": c.name,
                    "subject": info.subject,
                    "issuer": info.issuer,
                    "not_after": info.not_after,
                    "error": c.error,
                }))
            })
            .collect()
    }

    /// What state the task that runs `node` (a node, or `virtualGateway/G`) of `mesh` is
    /// in, and how often its processes restarted.
    fn task_of(&self, mesh: &str, node: &str) -> (&'static str, u64) {
        let prefix = format!("{node}/");
        let mine: Vec<&Value> = self
            .processes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["mesh"] == mesh && p["name"].as_str().is_some_and(|x| x.starts_with(&prefix))
            })
            .collect();
        let restarted_lately = mine.iter().any(|p| {
            self.state
                .restarts
                .get(p["name"].as_str().unwrap_or_default())
                .is_some_and(|(_, at)| self.now.duration_since(*at) < LINGER)
        });
        let task = if mine.is_empty() {
            "none"
        } else if mine.iter().all(|p| p["running"] == true) && !restarted_lately {
            "running"
        } else if mine.iter().any(|p| p["running"] == true) || restarted_lately {
            "restarting"
        } else {
            "stopped"
        };
        let restarts: u64 = mine.iter().filter_map(|p| p["restarts"].as_u64()).sum();
        (task, restarts)
    }
}

/// Each router of mesh `mesh_name` with its routes and their weighted targets, each with
/// the requests that route sent it (`observed`, keyed as traffic is).
fn routers_of(
    mesh_name: &str,
    mesh: &meshmodel::Mesh,
    observed: &BTreeMap<String, u64>,
) -> Vec<Value> {
    mesh.virtual_routers
        .values()
        .map(|r| {
            let name = &r.value.virtual_router_name;
            let routes: Vec<Value> = mesh
                .routes_of(name)
                .into_iter()
                .map(|route| {
                    let targets: Vec<Value> = route
                        .spec
                        .weighted_targets()
                        .map(|(_, ts)| {
                            ts.iter()
                                .map(|t| {
                                    let seen = controlplane::on_route(
                                        observed,
                                        mesh_name,
                                        (name, &route.route_name),
                                        &t.virtual_node,
                                    );
                                    json!({"node": t.virtual_node, "weight": t.weight, "observed": seen})
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    json!({"name": route.route_name, "targets": targets})
                })
                .collect();
            json!({"name": name, "routes": routes})
        })
        .collect()
}

/// Which resources a change touched, as `kind name` words (with their mesh when
/// several are held).
fn describe_change(before: &Snapshot, after: &Snapshot) -> String {
    let several = before.meshes.len().max(after.meshes.len()) > 1;
    let empty = controlplane::MeshState::default();
    let mut changed = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        before.meshes.keys().chain(after.meshes.keys()).collect();
    for name in names {
        let was = &before.mesh(name).map_or(&empty, |m| m).meta;
        let is = &after.mesh(name).map_or(&empty, |m| m).meta;
        let of = |key: &meshmodel::Key| match several {
            true => format!("{} of mesh {name}", key.describe()),
            false => key.describe(),
        };
        for (key, meta) in is {
            if was.get(key).map(|m| m.version) != Some(meta.version) {
                let word = if was.contains_key(key) {
                    "updated"
                } else {
                    "created"
                };
                changed.push(format!("{word} {}", of(key)));
            }
        }
        for key in was.keys().filter(|k| !is.contains_key(*k)) {
            changed.push(format!("deleted {}", of(key)));
        }
        let rollouts = |s: &Snapshot| s.mesh(name).map(|m| m.rollouts.clone()).unwrap_or_default();
        let (was, is) = (rollouts(before), rollouts(after));
        for (key, r) in &is {
            let before = was.get(key);
            if before == Some(r) {
                continue;
            }
            // A look that took a step says which; one that only renewed its driver's
            // lease or opened its check window says so.
            let what = match before.is_some_and(|b| b.events == r.events) {
                true => "its driver's lease or check window",
                false => r.events.last().map_or("", |e| e.kind.as_str()),
            };
            changed.push(format!("rollout of route {}: {what}", r.route));
        }
    }
    if changed.is_empty() {
        "no resource changed".to_owned()
    } else {
        changed.join("; ")
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| round2(d.as_secs_f64()))
        .unwrap_or(0.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// `GET /v1/live`: the latest frame (sampling now when nobody was looking).
pub async fn frame_now(State(live): State<Live>) -> Response {
    let was_watched = live.watched();
    *live
        .inner
        .last_asked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    let current = live.inner.frames.borrow().clone();
    if was_watched && !current.is_null() {
        return Json(current.as_ref().clone()).into_response();
    }
    let frame = live.sample().await;
    live.inner.frames.send_replace(Arc::new(frame.clone()));
    Json(frame).into_response()
}

/// `GET /v1/live/stream`: a frame every second as Server-Sent Events (`event: frame`).
pub async fn stream(
    State(live): State<Live>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let frames = tokio_stream::wrappers::WatchStream::from_changes(live.inner.frames.subscribe());
    let events = futures::StreamExt::map(frames, |frame: Arc<Value>| {
        Ok(Event::default()
            .event("frame")
            .json_data(frame.as_ref())
            .unwrap_or_else(|_| Event::default().comment("unencodable frame")))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use controlplane::state::rollout::Plan;
    use controlplane::state::rollouts::RouteRef;

    /// The history names a rollout's steps, and says when a look only renewed its lease.
    #[test]
    fn the_history_names_a_rollouts_steps() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh");
        let mesh = meshmodel::Mesh::load_dir(&dir).expect("the shipped mesh");
        let store = Store::in_memory([mesh], controlplane::Identity::default());
        let before = store.current();
        let route = RouteRef {
            mesh: None,
            router: None,
            route: "distributor",
        };
        let (_, rollout) = store
            .start_rollout(route, "distributor-v2", (&Plan::default(), None), 0)
            .expect("starts");
        let started = store.current();
        assert_eq!(
            describe_change(&before, &started),
            "updated route `distributor` of virtual router `distributor`; rollout of route distributor: started"
        );
        store
            .drive_rollout(("gophermesh", &rollout.key()), "a", (1, 15_001), None)
            .expect("takes the lease");
        assert_eq!(
            describe_change(&started, &store.current()),
            "rollout of route distributor: its driver's lease or check window"
        );
    }
}
