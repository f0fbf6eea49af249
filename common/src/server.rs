//! The one HTTP server loop every listener of this project uses (the services, the App
//! Mesh API, the control API): hyper with a header-read timeout, the peer address handed
//! to handlers, a pause after a failed accept, and an optional graceful drain.
//!
//! A connection that opens and never completes its request headers is closed after
//! [`Limits::header_read`]; the same timer closes a keep-alive connection that stays idle
//! that long (callers reconnect; Envoy retries a reset by default). A connection that
//! sends nothing at all (not even the bytes that tell HTTP/1 from HTTP/2) is closed after
//! that time too (`FirstByte`).

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

/// The per-connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// Whether handlers get the peer's address (`ConnectInfo<SocketAddr>`); a server that
    /// never reads it saves an allocation per request.
    pub peer_address: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            peer_address: true,
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
    builder.http2().timer(TokioTimer::new());
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
        let first_byte = limits.header_read;
        tokio::spawn(async move {
            let io = match wrapped.await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection refused before HTTP");
                    return;
                }
            };
            let io = FirstByte::new(io, first_byte);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
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

/// A connection whose first byte must arrive within a deadline: a read that has seen
/// nothing by then fails with `TimedOut`, and the connection is closed. (hyper reads a
/// connection's first bytes to tell HTTP/1 from HTTP/2 with no timer of its own.)
struct FirstByte<IO> {
    inner: IO,
    /// Until the first byte arrives.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstByte<IO> {
    /// `inner`, whose first byte must arrive within `within`.
    fn new(inner: IO, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstByte<IO> {
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
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                match expired {
                    true => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no byte within the first-byte deadline",
                    ))),
                    false => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstByte<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
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
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
}
