//! The rollout driver: every [`TICK`], each rollout in progress that this replica may
//! drive gets one look with its target's counts, read as `/metrics` reads them (the
//! Envoys `up` runs, DogStatsD for `serve`). Each look that decides something is one
//! change through the store, on the blocking pool; one that decides nothing writes nothing.

use std::sync::Arc;
use std::time::Duration;

use controlplane::Store;
use controlplane::state::rollout::Phase;
use controlplane::state::rollouts::RolloutError;
use tokio::task::JoinHandle;

use super::Stop;
use crate::api::rollouts::now_ms;
use crate::api::tasks::{Tasks, all_edges};
use crate::metrics::statsd::Statsd;

/// How often the driver looks at the rollouts.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a replica's hold on a rollout lasts without being renewed: after a replica
/// dies, another takes its rollouts over within this.
pub const LEASE: Duration = Duration::from_secs(15);

/// A name for this replica's driver, unique to this process.
fn driver_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "gophermesh".to_owned());
    format!("{host}/{}/{:04x}", std::process::id(), fastrand::u16(..))
}

/// Drives the rollouts of `store` until `stop`, reading counts from `tasks` and `statsd`.
pub fn spawn(
    store: Store,
    tasks: Arc<dyn Tasks>,
    statsd: Option<Statsd>,
    stop: Stop,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let me = driver_name();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = stop.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                _ = tick.tick() => {}
            }
            look(&store, &*tasks, statsd.as_ref(), &me).await;
        }
    })
}

/// One look at every rollout in progress that `me` may drive.
async fn look(store: &Store, tasks: &dyn Tasks, statsd: Option<&Statsd>, me: &str) {
    let now = now_ms();
    let snapshot = store.current();
    let due: Vec<(String, String, controlplane::state::rollout::Rollout)> = snapshot
        .meshes
        .iter()
        .flat_map(|(mesh, state)| {
            state
                .rollouts
                .iter()
                .filter(|(_, r)| r.phase == Phase::Progressing && r.drivable_by(me, now))
                .map(|(key, r)| (mesh.clone(), key.clone(), r.clone()))
        })
        .collect();
    if due.is_empty() {
        return;
    }
    let (edges, _) = all_edges(tasks, statsd).await;
    for (mesh, key, rollout) in due {
        let counts = crate::metrics::route_counts(&edges, &mesh, &rollout);
        let (me, now) = (me.to_owned(), now_ms());
        let until = now + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let looked = store
            .writing(move |s| s.drive_rollout((&mesh, &key), &me, (now, until), Some(&counts)))
            .await;
        match looked {
            Ok(Ok(_)) | Ok(Err(RolloutError::Unchanged)) => {}
            Ok(Err(e)) => {
                tracing::warn!(route = %rollout.route, "a rollout's look was not stored: {e}")
            }
            Err(busy) => tracing::warn!(route = %rollout.route, "a rollout's look waits: {busy}"),
        }
    }
}
