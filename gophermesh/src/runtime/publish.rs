//! A task's port (the requester's, the ingress gateway's), published on the host's loopback
//! as a container runtime publishes a port: each connection accepted on the host is copied
//! both ways to the task's address, dialled from the namespace the host reaches the tasks
//! from (the hub) when they have namespaces of their own. Only the entry from the host
//! goes this way; traffic between tasks goes through the Envoys.
//!
//! A forwarded connection lasts as long as the task's Envoy keeps it: its listener's idle
//! timeout (300 s by App Mesh's default) ends idle ones.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::netns;

/// The most connections forwarded at once (each holds two descriptors; fewer when the
/// descriptor budget's share of an API listener is smaller): beyond it, a new connection
/// is closed at once, so that held connections cannot take the descriptors the APIs need.
pub const MAX_FORWARDED: usize = 2048;

/// Serves `listener` until the task is dropped, forwarding to `target`, dialled inside
/// namespace `entry` when given.
pub async fn publish(listener: TcpListener, target: SocketAddr, entry: Option<String>) {
    let cap = MAX_FORWARDED.min(super::budget().per_api / 2).max(1);
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let mut inbound = match listener.accept().await {
            Ok((inbound, _)) => inbound,
            Err(e) => {
                // Out of file descriptors, usually: pause rather than spin.
                tracing::warn!("accepting on the published port: {e}; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::warn!("{cap} connections are forwarded to {target} already; closed a new one");
            continue;
        };
        let ns = entry.clone();
        tokio::spawn(async move {
            let _place = place;
            match dial(ns.as_deref(), target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!("cannot reach the published task at {target}: {e}"),
            }
        });
    }
}

async fn dial(ns: Option<&str>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let limit = Duration::from_secs(5);
    match ns {
        Some(ns) => netns::dial(ns, target, limit).await,
        None => tokio::time::timeout(limit, TcpStream::connect(target))
            .await
            .map_err(|_| std::io::Error::other(format!("no answer within {limit:?}")))?,
    }
}
