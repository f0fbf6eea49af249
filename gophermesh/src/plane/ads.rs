//! The ADS listener: plain on loopback, TLS elsewhere when a certificate is given, each
//! accepted connection counted against ADS's share of the process's descriptor budget
//! ([`common::server::Budget::bulk`]). At the cap a new connection is closed at once
//! (its Envoy retries with backoff), so that thousands of streams, or idle clients, never
//! take the descriptors the APIs and the console answer with.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use controlplane::Cache;
use controlplane::Store;
use controlplane::secrets::Secrets;
use controlplane::xds::ads::{Ads, EnvoyStatuses};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::{Stop, Tls};

/// How long a client may take to complete its TLS handshake with the ADS server.
pub const ADS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait after a failed accept (out of descriptors, usually) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often refusals at the cap are logged, at most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Serves ADS on `listener` (over TLS when `tls` is given and the listener is not on
/// loopback) until `stop`, holding at most its share of the descriptor budget
/// ([`crate::runtime::budget`]); whether it speaks TLS.
pub fn spawn_ads(
    store: &Store,
    (envoys, secrets): (EnvoyStatuses, &Secrets),
    listener: TcpListener,
    tls: Option<&Tls>,
    stop: Stop,
) -> anyhow::Result<(JoinHandle<()>, bool)> {
    let ads = Ads::new(Cache::new(store.clone()), envoys)
        .with_secrets(secrets.clone())
        .into_service();
    let router = tonic::transport::Server::builder().add_service(ads);
    let tls = tls.filter(|_| !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()));
    let secure = tls.is_some();
    let admission = Admission::new(crate::runtime::budget().bulk);
    let task = match tls {
        None => tokio::spawn(serve_ads(
            router,
            accepting(listener, admission, |s| async move { Ok(s) }),
            stop,
        )),
        Some(tls) => {
            let acceptor = tls.https.clone();
            let incoming = accepting(listener, admission, move |s| {
                let acceptor = acceptor.clone();
                async move {
                    tokio::time::timeout(ADS_HANDSHAKE_TIMEOUT, acceptor.accept(s))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                        })?
                }
            });
            tokio::spawn(serve_ads(router, incoming, stop))
        }
    };
    Ok((task, secure))
}

/// The secrets book of `config`: mesh certificates of its lifetime, from its CA files when
/// given, or from CAs kept in the store under its seal key (refused at start, naming the
/// flag, when they do not read).
pub fn secrets(config: &crate::config::CertificateConfig) -> anyhow::Result<Secrets> {
    use anyhow::Context as _;
    use controlplane::secrets::CaSource;
    if let Some(path) = &config.mesh_ca_seal_key {
        let bytes = std::fs::read(path)
            .with_context(|| format!("--mesh-ca-seal-key {}: cannot read", path.display()))?;
        let seal = controlplane::secrets::seal::SealKey::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("--mesh-ca-seal-key {}: {e}", path.display()))?;
        return Ok(Secrets::with_mesh_ca(
            config.mesh_lifetime,
            CaSource::Stored(seal),
        ));
    }
    let source = match &config.mesh_ca {
        None => CaSource::PerMesh,
        Some((cert, key)) => {
            let read = |p: &std::path::Path, flag: &str| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("{flag} {}: cannot read", p.display()))
            };
            let (cert_pem, key_pem) = (read(cert, "--mesh-ca-cert")?, read(key, "--mesh-ca-key")?);
            CaSource::Given(Box::new(
                controlplane::secrets::mesh_ca::MeshCa::from_pem(&cert_pem, &key_pem).map_err(
                    |e| {
                        anyhow::anyhow!(
                            "--mesh-ca-cert {} / --mesh-ca-key {}: {e}",
                            cert.display(),
                            key.display()
                        )
                    },
                )?,
            ))
        }
    };
    Ok(Secrets::with_mesh_ca(config.mesh_lifetime, source))
}

/// Keeps `secrets` filled with the ACM material the meshes of `store` name, read again
/// every `every`, until `stop`.
pub fn spawn_secrets(
    store: &Store,
    secrets: &Secrets,
    every: Duration,
    stop: Stop,
) -> JoinHandle<()> {
    let refresh = controlplane::secrets::refresh::run(
        secrets.clone(),
        store.clone(),
        || async {
            Box::new(controlplane::secrets::acm::Aws::from_env().await)
                as Box<dyn controlplane::secrets::acm::Fetch>
        },
        every,
    );
    tokio::spawn(async move {
        tokio::select! {
            () = refresh => {}
            () = stop.wait() => {}
        }
    })
}

/// Serves `router` on the connections `incoming` yields until it ends or `stop`; returns
/// once the accept loop under `incoming` has closed its listener too.
async fn serve_ads<IO>(
    router: tonic::transport::server::Router,
    (incoming, accept_loop): (impl futures::Stream<Item = io::Result<IO>>, JoinHandle<()>),
    stop: Stop,
) where
    IO: AsyncRead + AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
{
    if let Err(e) = router
        .serve_with_incoming_shutdown(incoming, stop.wait())
        .await
    {
        tracing::error!("the ADS server stopped: {e}");
    }
    // The server dropped `incoming`: the loop sees its channel closed and drops the
    // listener.
    let _ = accept_loop.await;
}

/// The connections `listener` accepts within `admission`, each made ready by `wrap` (a
/// TLS handshake) in a task of its own, so that a slow one holds up no other; a failed
/// accept pauses the loop. It ends (dropping the listener) when the server stops reading;
/// the handle is the loop's.
fn accepting<IO, F, Fut>(
    listener: TcpListener,
    admission: Admission,
    wrap: F,
) -> (ReceiverStream<io::Result<IO>>, JoinHandle<()>)
where
    F: Fn(Counted<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<IO>> + Send + 'static,
    IO: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept_loop = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "ADS accept failed; pausing before the next");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                        continue;
                    }
                },
            };
            // Each response leaves in pieces (its own fields, then the shared resources):
            // without TCP_NODELAY, Nagle's algorithm holds the second piece until the
            // Envoy ACKs the first, which it delays (40 ms here).
            let _ = stream.set_nodelay(true);
            let Some(counted) = admission.admit(stream) else {
                continue;
            };
            let (ready, tx) = (wrap(counted), tx.clone());
            tokio::spawn(async move {
                match ready.await {
                    Ok(io) => {
                        let _ = tx.send(Ok(io)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "ADS connection refused before gRPC"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), accept_loop)
}

/// The count of open ADS connections against their cap.
#[derive(Debug, Clone)]
struct Admission {
    open: Arc<AtomicUsize>,
    cap: usize,
    /// Refusals since the last log line, and when that was.
    refused: Arc<Mutex<(u64, Option<Instant>)>>,
}

impl Admission {
    fn new(cap: usize) -> Self {
        Self {
            open: Arc::default(),
            cap,
            refused: Arc::default(),
        }
    }

    /// `stream`, counted until it is dropped; `None` (the stream closed) at the cap.
    fn admit(&self, stream: TcpStream) -> Option<Counted<TcpStream>> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.note_refusal();
            return None;
        }
        Some(Counted {
            inner: stream,
            open: self.open.clone(),
        })
    }

    /// One log line per [`REFUSALS_LOGGED_EVERY`] while refusing, with the count.
    fn note_refusal(&self) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.0 += 1;
        if refused
            .1
            .is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY)
        {
            tracing::warn!(
                cap = self.cap,
                refused = refused.0,
                "ADS is at its share of the descriptor budget; closing new connections (their Envoys retry)"
            );
            *refused = (0, Some(Instant::now()));
        }
    }
}

/// A connection counted as open until it is dropped.
#[derive(Debug)]
pub(crate) struct Counted<IO> {
    inner: IO,
    open: Arc<AtomicUsize>,
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the cap a new connection is closed, and a slot is free again once one closes.
    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_until_one_leaves() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let admission = Admission::new(2);
        let (mut incoming, _) = accepting(listener, admission.clone(), |s| async move { Ok(s) });
        use tokio_stream::StreamExt as _;
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.expect("connects"));
            served.push(incoming.next().await.expect("one").expect("ok"));
        }
        assert_eq!(admission.open.load(Ordering::Acquire), 2);
        // The third is closed by the server: its read ends at once.
        let mut third = TcpStream::connect(addr).await.expect("connects");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut third, &mut byte),
        )
        .await
        .expect("closed, not held");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // One leaves; the next is taken.
        drop(served.pop());
        assert_eq!(admission.open.load(Ordering::Acquire), 1);
        let _fourth = TcpStream::connect(addr).await.expect("connects");
        let taken = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(matches!(taken, Ok(Some(Ok(_)))), "not taken");
    }
}
