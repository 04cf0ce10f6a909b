//! The HTTP accept loop, plain or TLS (HTTPS on the same port when the
//! gateway has a certificate): one task per connection, hyper's automatic
//! HTTP/1.1-or-HTTP/2 server (ALPN `h2` over TLS), upgrades allowed, and the
//! peer's address put into every request as `ConnectInfo<SocketAddr>` for
//! the auth layer ([`super::auth`]).
//!
//! Deadlines: a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`]
//! (else the connection is closed, nothing is answered), an HTTP/1
//! request's headers must arrive within [`HEADER_READ_TIMEOUT`], and a
//! write that makes no progress for [`WRITE_TIMEOUT`] (a viewer that stopped
//! reading an endless MJPEG response, a stalled download) closes the
//! connection.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::{self, ConnLimiter};

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the headers of an HTTP/1 request may take to arrive, from the
/// connection's start or the end of the previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a write to a connection may make no progress (the peer's
/// receive window stays full) before the connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// ALPN protocols offered over TLS, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Serves `app` on `listener` until the task is dropped; with `tls`, every
/// connection is HTTPS. A connection over `limiter`'s caps is answered
/// `503` (`429` for the per-address cap) unread and closed; over HTTPS it is
/// closed at once, as an answer would need a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limiter: Arc<ConnLimiter>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("HTTP: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(refused) => {
                let answer = match tls {
                    None => refused.http_answer(),
                    Some(_) => b"",
                };
                limits::refuse(tcp, answer);
                continue;
            }
        };
        // Small writes (WHEP answers, playlists) go out at once.
        let _ = tcp.set_nodelay(true);
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(&builder, tcp, app, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(&builder, stream, app, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "HTTPS: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(
                            %peer,
                            "HTTPS: no TLS handshake within {} s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    }
                }
            }
        });
    }
}

async fn connection<I>(builder: &auto::Builder<TokioExecutor>, io: I, app: Router, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let io = WriteDeadline::new(io, WRITE_TIMEOUT);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// An I/O stream whose writes fail with `TimedOut` once one has been
/// pending (no byte taken) for `timeout`: the write deadline of every HTTP
/// connection. A write the socket takes at once arms no timer.
pub struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    /// Armed when a write, flush or shutdown returned `Pending`; disarmed
    /// by the next one that completes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    pub fn new(io: I, timeout: Duration) -> Self {
        WriteDeadline {
            io,
            timeout,
            stalled: None,
        }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no write progress for {} s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A peer that stops reading: the write pending past the deadline
    /// fails; writes before that, taken at once, never did.
    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_at_the_deadline() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut io = WriteDeadline::new(near, Duration::from_secs(20));
        io.write_all(&[0; 1024]).await.expect("the buffer takes it");
        let start = tokio::time::Instant::now();
        let e = io.write_all(&[0; 10]).await.expect_err("nobody reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }
}
