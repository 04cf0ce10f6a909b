//! The HTTP accept loop, plain or TLS (HTTPS on the same port when the
//! gateway has a certificate): one task per connection, hyper's automatic
//! HTTP/1.1-or-HTTP/2 server (ALPN `h2` over TLS), upgrades allowed, and the
//! peer's address put into every request as `ConnectInfo<SocketAddr>` for
//! the auth layer ([`super::auth`]).
//!
//! Deadlines: a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`]
//! (else the connection is closed, nothing is answered), and an HTTP/1
//! request's headers must arrive within [`HEADER_READ_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
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
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}
