//! What the sidecar knows of its Envoy, and the agent's endpoints that tell it
//! (`APPNET_AGENT_HTTP_PORT`): `GET /status` (200 while Envoy is live and its management
//! server was reached within `HC_DISCONNECTED_TIMEOUT_S`, else 503; JSON either way) and
//! `GET /stats/prometheus` (Envoy's own, from its admin interface).
//!
//! The watcher reads Envoy's admin interface every poll: `/ready` (LIVE) and the
//! `control_plane.connected_state` gauge. Once the management server has been unreachable
//! past the timeout it tells Envoy to fail its health checks (`/healthcheck/fail`: its
//! `server_info` state is then DRAINING, so a task definition's `curl .../server_info |
//! grep state | grep -q LIVE` fails, as with the agent), and `/healthcheck/ok` once it is
//! reached again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::runtime::envoy::EnvoyAdmin;

/// The sidecar's view of its Envoy.
#[derive(Debug)]
pub struct Health {
    /// Envoy's admin interface, on 127.0.0.1.
    pub admin: EnvoyAdmin,
    pub disconnected_timeout: Duration,
    live: AtomicBool,
    /// When the management server was last seen connected (or the sidecar started).
    connected_at: Mutex<Instant>,
    failing: AtomicBool,
    pub restarts: AtomicU32,
}

/// How long one admin request may take.
const ADMIN_LIMIT: Duration = Duration::from_secs(2);

impl Health {
    pub fn new(admin_port: u16, disconnected_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            admin: EnvoyAdmin {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], admin_port)),
                netns: None,
            },
            disconnected_timeout,
            live: AtomicBool::new(false),
            connected_at: Mutex::new(Instant::now()),
            failing: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
        })
    }

    fn disconnected_for(&self) -> Duration {
        lock(&self.connected_at).elapsed()
    }

    /// Whether the management server has been unreachable past the timeout.
    fn cut_off(&self) -> bool {
        self.disconnected_for() > self.disconnected_timeout
    }

    /// `POST path` on the admin interface; whether it answered 200.
    pub async fn admin_post(&self, path: &str) -> bool {
        self.admin.post(path, ADMIN_LIMIT).await
    }

    /// One look at Envoy: live, connected; and the health-check verdict passed on.
    async fn poll(&self) {
        self.live.store(self.admin.live().await, Ordering::Relaxed);
        let connected = self
            .admin
            // filter=^control_plane\.connected_state$, percent-encoded.
            .get(
                "/stats?filter=%5Econtrol_plane%5C.connected_state%24",
                ADMIN_LIMIT,
            )
            .await
            .is_ok_and(|(_, text)| text.trim().ends_with(": 1"));
        if connected {
            *lock(&self.connected_at) = Instant::now();
        }
        let cut_off = self.cut_off();
        if cut_off != self.failing.load(Ordering::Relaxed) {
            let path = if cut_off {
                "/healthcheck/fail"
            } else {
                "/healthcheck/ok"
            };
            if self.admin_post(path).await {
                self.failing.store(cut_off, Ordering::Relaxed);
                match cut_off {
                    true => tracing::warn!(
                        "the management server has been unreachable for {:?} (HC_DISCONNECTED_TIMEOUT_S): Envoy now fails its health checks",
                        self.disconnected_for()
                    ),
                    false => tracing::info!(
                        "the management server is reached again: Envoy passes its health checks"
                    ),
                }
            }
        }
    }

    /// Polls Envoy every `every` for as long as the sidecar runs.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            self.poll().await;
            tokio::time::sleep(every).await;
        }
    }

    /// An Envoy that exited and is started again: not live until it says so.
    pub fn envoy_restarted(&self) {
        self.live.store(false, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The agent's endpoints over `health`.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/stats/prometheus", get(prometheus))
        .with_state(health)
}

async fn status(State(h): State<Arc<Health>>) -> Response {
    let live = h.live.load(Ordering::Relaxed);
    let cut_off = h.cut_off();
    let healthy = live && !cut_off;
    let body = json!({
        "healthStatus": if healthy { "HEALTHY" } else { "UNHEALTHY" },
        "envoyState": if live { "LIVE" } else { "NOT_LIVE" },
        "managementServerDisconnectedSeconds": h.disconnected_for().as_secs(),
        "disconnectedTimeoutSeconds": h.disconnected_timeout.as_secs(),
        "envoyRestarts": h.restarts.load(Ordering::Relaxed),
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn prometheus(State(h): State<Arc<Health>>) -> Response {
    match h.admin.get("/stats/prometheus", ADMIN_LIMIT).await {
        Ok((200, text)) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Ok((code, text)) => (
            StatusCode::BAD_GATEWAY,
            format!("Envoy's admin interface answered {code}: {text}"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("Envoy's admin interface: {e:#}"),
        )
            .into_response(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
