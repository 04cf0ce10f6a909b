//! HTTP authentication: the one tower layer in front of every route that
//! needs a permission. Each sub-router declares what its routes need
//! ([`require`] with a [`Need`]); the layer turns the request into an
//! [`auth::Request`] and asks the gateway's [`Authenticator`].
//!
//! | routes | need |
//! |---|---|
//! | `/api/*` (incl. `/api/v1/webrtc/sessions`, `/api/v1/sessions`) | `api` |
//! | `GET /api/v1/streams/{name}` (the viewer page polls it) | `read` on `{name}`, or `api` |
//! | `/metrics` | `metrics` |
//! | `/{path}/` (viewer page), `/{path}/mjpeg` (MJPEG) | `read` on `{path}` (HTTP) |
//! | `/{path}/whep`, `/{path}/whep/{id}` | `read` on `{path}` (WebRTC) |
//! | `/{path}/whip`, `/{path}/whip/{id}` | `publish` on `{path}` (WebRTC) |
//! | `/{path}/{file}` (LL-HLS) | `read` on `{path}` (HLS) |
//! | `/{path}/playback` (recordings) | `playback` on `{path}` |
//! | `/api/v1/recordings`, `/api/v1/recordings/{name}` | `playback` on every path / on `{name}`, or `api` |
//! | `/`, `/web/*`, `/static/*`, `/{path}` (redirect) | nothing: static files with no stream data |
//!
//! Credentials: `Authorization: Basic` (RFC 7617) or `Bearer` (RFC 6750),
//! else the query (`user`+`pass`, `token`, `jwt`) for players that can't set
//! headers. The client's address is the connection's peer
//! (`ConnectInfo<SocketAddr>`, inserted by [`super::serve`]); a request
//! without one is refused (500), never let through.
//!
//! Answers: allowed requests carry an [`AuthUser`] extension (who to record
//! on the session); refused ones get `401` with `WWW-Authenticate:`
//! [`HTTP_CHALLENGE`]; a malformed `Authorization` gets `400`. CORS
//! preflights (`OPTIONS`) of `read` and `publish` routes pass without
//! credentials, as browsers send none on them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawPathParams, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt as _;

use crate::auth::credentials::{from_query, parse_authorization};
use crate::auth::{Action, Authenticator, Credentials, Decision, Protocol, HTTP_CHALLENGE};

/// What a route needs to be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `api` (no path).
    Api,
    /// `metrics` (no path).
    Metrics,
    /// `read` on the route's `{path}` parameter, over `protocol`.
    Read(Protocol),
    /// `publish` on the route's `{path}` parameter, over `protocol`.
    Publish(Protocol),
    /// `read` on the route's `{name}` parameter, or else `api`: one
    /// stream's status, which a viewer's page shows.
    ReadOrApi,
    /// `playback` on the route's `{path}` parameter (recordings).
    Playback,
    /// `playback` on the route's `{name}` parameter (or on every path
    /// when the route has none), or else `api`: recording lists.
    PlaybackOrApi,
}

/// Who the layer let through: `Some(user)` when credentials were checked,
/// `None` for anonymous access. Handlers that open sessions take it as
/// `Extension<AuthUser>`, so they cannot run without the layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthUser(pub Option<String>);

/// The layer for routes needing `need`. The [`Authenticator`] is taken
/// from the request's extensions (the top router adds it once).
pub fn require(
    need: Need,
) -> axum::middleware::FromFnLayer<
    impl Fn(Request, Next) -> GuardFuture + Clone + Send + Sync + 'static,
    (),
    (Request,),
> {
    axum::middleware::from_fn(move |req: Request, next: Next| -> GuardFuture {
        Box::pin(guard(need, req, next))
    })
}

/// The future of the layer's function.
pub type GuardFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A short plain-text answer.
fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `401` with the Basic challenge (RFC 9110 §11.6.1).
fn unauthorized() -> Response {
    let mut resp = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(HTTP_CHALLENGE),
    );
    resp
}

/// Request body read at most before a refusal, in bytes.
const DRAIN_LIMIT: usize = 16 * 1024;
/// Longest the body is waited for before a refusal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers `resp` after reading what is left of a small request body (a
/// WHEP offer), bounded in size and time: an HTTP/2 answer sent while the
/// client is still uploading ends its stream with RST_STREAM, which some
/// clients (curl 7.88) take for an error instead of reading the 401.
async fn refuse(req: Request, resp: Response) -> Response {
    let _ = tokio::time::timeout(
        DRAIN_TIMEOUT,
        axum::body::to_bytes(req.into_body(), DRAIN_LIMIT),
    )
    .await;
    resp
}

/// The credentials of a request: its one `Authorization` header, else its
/// query; `Err` (answered `400`) for a malformed or repeated header.
fn credentials(req: &Request) -> Result<Credentials, &'static str> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            parse_authorization(v.as_bytes()).map_err(|_| "malformed Authorization header\n")
        }
        (Some(_), Some(_)) => Err("more than one Authorization header\n"),
        (None, _) => Ok(req.uri().query().and_then(from_query).unwrap_or_default()),
    }
}

async fn guard(need: Need, mut req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS && matches!(need, Need::Read(_) | Need::Publish(_)) {
        return next.run(req).await;
    }
    let Some(auth) = req.extensions().get::<Arc<Authenticator>>().cloned() else {
        tracing::error!("HTTP auth layer without an authenticator; refusing");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no authenticator\n");
    };
    let Some(ip) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        tracing::error!("HTTP request without a peer address; refusing");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no client address\n");
    };
    let creds = match credentials(&req) {
        Ok(c) => c,
        Err(why) => return refuse(req, plain(StatusCode::BAD_REQUEST, why)).await,
    };
    let wanted = match need {
        Need::Read(_) | Need::Publish(_) | Need::Playback => Some("path"),
        Need::ReadOrApi | Need::PlaybackOrApi => Some("name"),
        Need::Api | Need::Metrics => None,
    };
    let path = match wanted {
        Some(name) => match req.extract_parts::<RawPathParams>().await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned()),
            // Not valid UTF-8 after percent-decoding: no such path.
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let (protocol, path, actions): (_, _, &[Action]) = match need {
        Need::Api => (Protocol::Http, None, &[Action::Api]),
        Need::Metrics => (Protocol::Http, None, &[Action::Metrics]),
        Need::Read(p) => (p, path, &[Action::Read]),
        Need::Publish(p) => (p, path, &[Action::Publish]),
        Need::ReadOrApi => (Protocol::Http, path, &[Action::Read, Action::Api]),
        Need::Playback => (Protocol::Http, path, &[Action::Playback]),
        Need::PlaybackOrApi => (Protocol::Http, path, &[Action::Playback, Action::Api]),
    };
    let method = req.method().as_str().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let mut decision = Decision::Deny;
    for &action in actions {
        let path = if matches!(action, Action::Read | Action::Playback | Action::Publish) {
            path.as_deref()
        } else {
            None
        };
        decision = auth
            .check(&crate::auth::Request {
                ip,
                action,
                path,
                protocol,
                credentials: &creds,
                method: &method,
                id: None,
                query: query.as_deref(),
            })
            .await;
        if matches!(decision, Decision::Allow { .. }) {
            break;
        }
    }
    match decision {
        Decision::Allow { user } => {
            req.extensions_mut().insert(AuthUser(user));
            next.run(req).await
        }
        Decision::Challenge { .. } | Decision::Deny => refuse(req, unauthorized()).await,
    }
}

#[cfg(test)]
mod tests;
