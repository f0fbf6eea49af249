//! The requester's port, published on the host's loopback as a container runtime
//! publishes a port: each connection accepted on the host is copied both ways to the
//! requester task's ingress (inside its namespace when it has one). Only the entry from
//! the host goes this way; traffic between tasks goes through the Envoys.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::{Site, netns};

/// Serves `listener` until the task is dropped, forwarding to `site`'s reach address.
pub async fn publish(listener: TcpListener, site: Site) {
    let target = site.place.reach;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let ns = site.netns.clone();
        tokio::spawn(async move {
            match dial(ns.as_deref(), target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!("cannot reach the requester at {target}: {e}"),
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
