//! The one HTTP server loop every listener of this project uses (the services, the App
//! Mesh API, the control API): hyper with a header-read timeout, the peer address handed
//! to handlers, a pause after a failed accept, and an optional graceful drain.
//!
//! A connection that opens and never completes its request headers is closed after
//! [`Limits::header_read`]; the same timer closes a keep-alive connection that stays idle
//! that long (callers reconnect; Envoy retries a reset by default). A connection that
//! sends nothing at all (not even the bytes that tell HTTP/1 from HTTP/2) is closed after
//! that time too (`Watched`).
//!
//! Budgets: a connection that moves no byte for [`Limits::idle`] is closed (an idle HTTP/2
//! connection included, which hyper would keep); HTTP/2 connections are pinged, and one
//! that does not answer is closed; and each listener holds at most
//! [`Limits::max_connections`] connections, [`Limits::max_per_peer`] from one address:
//! beyond that, the connection idle longest is closed to make room (`conns`). A process's
//! listeners share its descriptor limit by a [`Budget`].

mod budget;
mod conns;

pub use budget::{Budget, RESERVED_DESCRIPTORS};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a client may take to send its request headers (and how long a keep-alive
/// connection may stay idle).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait after a failed accept (out of file descriptors, usually) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How long a connection may move no byte before it is closed, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How many connections a listener holds at most, by default; a process with several
/// listeners shares its descriptor limit among them with a [`Budget`], so that the others
/// keep answering when one is full.
pub const MAX_CONNECTIONS: usize = 4096;

/// The per-connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// Whether handlers get the peer's address (`ConnectInfo<SocketAddr>`); a server that
    /// never reads it saves an allocation per request.
    pub peer_address: bool,
    /// How long a connection may move no byte (see [`IDLE_TIMEOUT`]).
    pub idle: Duration,
    /// The most connections the listener holds (see [`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// The most connections from one peer address (by default as many as the listener
    /// holds: a service's one caller is its Envoy).
    pub max_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            peer_address: true,
            idle: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_peer: MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting and gives the
/// connections with requests in flight up to `drain` to finish.
///
/// Handlers can read the peer's address with `ConnectInfo<SocketAddr>` when
/// [`Limits::peer_address`] is set.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send,
    drain: Duration,
) -> io::Result<()> {
    serve_with(listener, app, limits, stop, drain, |stream| async move {
        Ok(stream)
    })
    .await
}

/// [`serve`] over TLS: each accepted connection is handed to `acceptor` first (in its own
/// task, so a slow handshake holds up no one; it must finish within the header-read
/// timeout).
#[cfg(feature = "tls")]
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send,
    drain: Duration,
    acceptor: tokio_rustls::TlsAcceptor,
) -> io::Result<()> {
    let deadline = limits.header_read;
    serve_with(listener, app, limits, stop, drain, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            tokio::time::timeout(deadline, acceptor.accept(stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        }
    })
    .await
}

/// The loop under [`serve`]: `wrap` turns an accepted stream into what HTTP is spoken on.
async fn serve_with<W, F, IO>(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send,
    drain: Duration,
    wrap: W,
) -> io::Result<()>
where
    W: Fn(tokio::net::TcpStream) -> F,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_PING_EVERY))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let conns = conns::Conns::default();
    let peer_address = limits.peer_address;
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing before the next");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                if peer_address {
                    request.extensions_mut().insert(ConnectInfo(peer));
                }
                let app = app.clone();
                async move {
                    Ok::<_, Infallible>(
                        app.oneshot(request.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|e| match e {}),
                    )
                }
            });
        let wrapped = wrap(stream);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let admitted = conns.admit(peer.ip(), limits.max_connections, limits.max_per_peer);
        let conns = conns.clone();
        tokio::spawn(async move {
            let id = admitted.id;
            let close = admitted.close.clone();
            let served = async move {
                let io = match wrapped.await {
                    Ok(io) => io,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection refused before HTTP");
                        return;
                    }
                };
                let io = Watched::new(io, limits.header_read, limits.idle, admitted.active);
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            };
            tokio::select! {
                () = served => {}
                () = close.notified() => tracing::debug!(%peer, "closed to make room"),
            }
            conns.remove(id);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained; bye"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!("drain deadline passed with requests still in flight; exiting");
        }
    }
    Ok(())
}

/// The peer address type handlers extract.
pub type Peer = ConnectInfo<SocketAddr>;

/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection watched for its deadlines: its first byte must arrive within the first
/// deadline (hyper reads a connection's first bytes to tell HTTP/1 from HTTP/2 with no
/// timer of its own), and it may then move no byte for at most the idle time; past
/// either, a read fails with `TimedOut` and the connection is closed. Every byte moved is
/// stamped on `active` (what the connection budget closes the idlest by).
struct Watched<IO> {
    inner: IO,
    /// Until the first byte arrives.
    first: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    idle: Duration,
    /// When the connection is next checked for idleness.
    idle_check: std::pin::Pin<Box<tokio::time::Sleep>>,
    active: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<IO> Watched<IO> {
    /// `inner`, whose first byte must arrive within `first`, and which may then stay
    /// `idle` at most; `active` is stamped with each byte moved.
    fn new(
        inner: IO,
        first: Duration,
        idle: Duration,
        active: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            inner,
            first: Some(Box::pin(tokio::time::sleep(first))),
            idle,
            idle_check: Box::pin(tokio::time::sleep(idle)),
            active,
        }
    }

    fn moved(&self) {
        self.active
            .store(conns::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the connection has now been idle past its time (the idle check re-arms
    /// itself for the rest of the time when it moved a byte meanwhile).
    fn idle_expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        while self.idle_check.as_mut().poll(cx).is_ready() {
            let last = self.active.load(std::sync::atomic::Ordering::Relaxed);
            let quiet = conns::now_ms().saturating_sub(last);
            if quiet >= idle_ms {
                return true;
            }
            let rest = Duration::from_millis(idle_ms - quiet);
            self.idle_check
                .as_mut()
                .reset(tokio::time::Instant::now() + rest);
        }
        false
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.first = None;
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let silent = this
                    .first
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if silent {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no byte within the first-byte deadline",
                    )));
                }
                match this.idle_expired(cx) {
                    true => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle past the idle timeout",
                    ))),
                    false => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        written
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn served(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(serve(
            listener,
            app,
            limits,
            std::future::pending(),
            Duration::ZERO,
        ));
        addr
    }

    /// A connection that sends nothing is closed after the header-read time, though hyper
    /// has not yet told HTTP/1 from HTTP/2 on it.
    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed() {
        let limits = Limits {
            header_read: Duration::from_millis(300),
            peer_address: false,
            ..Limits::default()
        };
        let addr = served(limits).await;
        let mut silent = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
            .await
            .expect("closed by the server within 5 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the server sent something: {read:?}"
        );
        // A connection that speaks is served as ever.
        let mut speaking = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        speaking
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        let mut answer = String::new();
        speaking.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }

    /// A keep-alive request on `stream`; the answer's status line.
    async fn request(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("sent");
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.expect("an answer");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the server closes `stream` within `limit`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// A connection that moves no byte for the idle time is closed, though it finished a
    /// request and its header-read time is far off.
    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let addr = served(Limits {
            header_read: Duration::from_secs(30),
            idle: Duration::from_millis(400),
            ..Limits::default()
        })
        .await;
        let mut idle = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        assert_eq!(request(&mut idle).await, "HTTP/1.1 200 OK");
        let started = std::time::Instant::now();
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    }

    /// At the listener's cap (here 3, all from one address), a new connection is served,
    /// and the one idle longest is closed to make room for it.
    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_makes_room() {
        let addr = served(Limits {
            header_read: Duration::from_secs(30),
            max_connections: 3,
            max_per_peer: 3,
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            assert_eq!(request(&mut c).await, "HTTP/1.1 200 OK");
            held.push(c);
            // Each one moves its last byte in turn: the first is the idlest.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut newcomer = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        assert_eq!(request(&mut newcomer).await, "HTTP/1.1 200 OK");
        assert!(
            closed_within(&mut held[0], Duration::from_secs(5)).await,
            "the idlest stays"
        );
        for c in &mut held[1..] {
            assert_eq!(
                request(c).await,
                "HTTP/1.1 200 OK",
                "the others are still served"
            );
        }
    }
}
