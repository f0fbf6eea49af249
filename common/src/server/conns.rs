//! The open connections of one listener, for its budgets: how many there are, per peer
//! address, when each last moved a byte, and how to close it. When a listener (or a peer)
//! is at its cap, the connection that has been idle longest is closed to make room, so
//! that idle or stuck clients cannot keep new ones out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

/// Milliseconds since the first call: the clock the activity stamps use.
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One listener's open connections. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conns(Arc<Mutex<Table>>);

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Open>,
}

#[derive(Debug)]
struct Open {
    peer: IpAddr,
    active: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// A connection admitted: its id, its activity stamp (milliseconds of [`now_ms`], set
/// whenever it moves a byte), and what tells it to close.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) id: u64,
    pub(crate) active: Arc<AtomicU64>,
    pub(crate) close: Arc<Notify>,
}

impl Conns {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `peer`: when the listener holds `max` connections, or the
    /// peer `max_per_peer`, the idlest of them (the listener's, or the peer's) is told to
    /// close first.
    pub(crate) fn admit(&self, peer: IpAddr, max: usize, max_per_peer: usize) -> Admitted {
        let mut table = self.table();
        let of_peer = table.open.values().filter(|o| o.peer == peer).count();
        let evict = if of_peer >= max_per_peer {
            table.idlest(|o| o.peer == peer)
        } else if table.open.len() >= max {
            table.idlest(|_| true)
        } else {
            None
        };
        if let Some(id) = evict {
            if let Some(gone) = table.open.remove(&id) {
                tracing::warn!(%peer, evicted = %gone.peer, "connection cap reached; closed the connection idle longest");
                gone.close.notify_one();
            }
        }
        table.next += 1;
        let id = table.next;
        let admitted = Admitted {
            id,
            active: Arc::new(AtomicU64::new(now_ms())),
            close: Arc::new(Notify::new()),
        };
        table.open.insert(
            id,
            Open {
                peer,
                active: admitted.active.clone(),
                close: admitted.close.clone(),
            },
        );
        admitted
    }

    /// Forgets connection `id` (it closed).
    pub(crate) fn remove(&self, id: u64) {
        self.table().open.remove(&id);
    }
}

impl Table {
    /// The connection among those `which` takes that moved a byte longest ago.
    fn idlest(&self, which: impl Fn(&Open) -> bool) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, o)| which(o))
            .min_by_key(|(_, o)| o.active.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
    }
}
