//! WHEP (draft-ietf-wish-whep) endpoints and the WebRTC session API.
//!
//! | method | path | |
//! |---|---|---|
//! | `POST` | `/<path>/whep` | `application/sdp` offer → `201 Created`, answer, `Location`, `ETag`, `Link` |
//! | `PATCH` | `/<path>/whep/<id>` | `application/trickle-ice-sdpfrag` → `204` (`422` past [`MAX_TRICKLE_CANDIDATES`](crate::egress::webrtc::MAX_TRICKLE_CANDIDATES)) |
//! | `DELETE` | `/<path>/whep/<id>` | ends the session → `200` |
//! | `OPTIONS` | both | CORS preflight, `Accept-Post: application/sdp` |
//! | `GET` | `/api/v1/webrtc/sessions` | the WebRTC sessions of the registry, flat (JSON); routed by `api::routes` |
//!
//! Bodies larger than [`MAX_SDP_LEN`] get `413` unread.
//!
//! Session resources follow WHIP's rules (RFC 9725 §4.2–§4.3). Every WHEP
//! response allows any origin (a player page may live elsewhere) and
//! exposes the WHEP headers to scripts.
//!
//! Auth ([`super::auth`]): the WHEP routes need `read` on the path (their
//! `OPTIONS` preflights nothing), the session list `api`; the user let
//! through is the WHEP session's user in the session registry.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::auth::{self, AuthUser, Need};
use super::AppState;
use crate::auth::Protocol as AuthProtocol;
use crate::bus::sessions::WebRtcDetail;
use crate::bus::{Detail, Protocol};
use crate::config::IceServer;
use crate::egress::webrtc::offer::MAX_SDP_LEN;
use crate::egress::webrtc::{format_id, parse_id, WebRtcEngine, WhepError};

pub(super) const SDP: &str = "application/sdp";
pub(super) const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The WHEP routes, to merge into the router (`GET /api/v1/webrtc/sessions`
/// is an API route: [`super::api::routes`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{path}/whep", post(create).options(preflight_endpoint))
        .route(
            "/{path}/whep/{id}",
            axum::routing::patch(trickle)
                .delete(end)
                .options(preflight_resource),
        )
        .route_layer(auth::require(Need::Read(AuthProtocol::Webrtc)))
        // An offer or fragment beyond what the SDP parser takes is refused
        // (413) before it is buffered, not after 2 MB (axum's default).
        .layer(DefaultBodyLimit::max(MAX_SDP_LEN))
        // Outside the auth layer, so a cross-origin player can read a 401.
        .layer(axum::middleware::map_response(cors))
}

/// CORS on every response (RFC 9725 §4.1 leaves the origin policy to the
/// server; a WHEP player is often served from another origin).
pub(super) async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch"),
    );
    resp
}

/// A plain-text error with `status`.
pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

pub(super) fn whep_error(e: WhepError) -> Response {
    let status = match &e {
        WhepError::Conflict(_) => StatusCode::CONFLICT,
        WhepError::BadRequest(_) => StatusCode::BAD_REQUEST,
        WhepError::NotFound(_) => StatusCode::NOT_FOUND,
        WhepError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        WhepError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WhepError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::TooManyRequests(_, retry) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry));
            return r;
        }
    };
    error(status, e.to_string())
}

pub(super) fn engine(app: &AppState) -> Result<&Arc<WebRtcEngine>, Box<Response>> {
    app.webrtc.as_ref().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "WebRTC is not enabled on this gateway",
        ))
    })
}

/// Whether the request's media type (parameters ignored, RFC 9110 §8.3.1)
/// is `want`.
pub(super) fn has_content_type(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

/// `Link: <url>; rel="ice-server"` values (RFC 9725 §4.6), with TURN
/// credentials as `username`/`credential`/`credential-type` parameters.
pub(super) fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .filter_map(|s| {
            let mut v = format!("<{}>; rel=\"ice-server\"", s.url);
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            HeaderValue::from_str(&v).ok()
        })
        .collect()
}

/// `POST /<path>/whep`: offer in, answer out.
async fn create(
    State(app): State<AppState>,
    Path(path): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = match engine(&app) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    if let Err(e) = engine.admit(peer) {
        return whep_error(e);
    }
    if !has_content_type(&headers, SDP) {
        let mut r = error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer must be sent with Content-Type: application/sdp",
        );
        r.headers_mut().insert(
            HeaderName::from_static("accept-post"),
            HeaderValue::from_static(SDP),
        );
        return r;
    }
    let stream = match app.registry.open(&path) {
        Ok(Some(s)) => s,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no stream named {path:?}")),
        // A rendition asked for by name that this path can't have.
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad SDP offer: not UTF-8 text");
    };
    let created = match engine
        .create_session(stream, offer, user, &app.registry)
        .await
    {
        Ok(c) => c,
        Err(e) => return whep_error(e),
    };
    let location = format!("/{}/whep/{}", created.path, format_id(created.id));
    let mut resp = (StatusCode::CREATED, created.answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&created.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDPFRAG),
    );
    for link in ice_server_links(engine.ice_servers()) {
        h.append(header::LINK, link);
    }
    resp
}

/// `PATCH /<path>/whep/<id>`: trickled candidates.
async fn trickle(
    State(app): State<AppState>,
    Path((path, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = match engine(&app) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let Some(id) = parse_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    if !has_content_type(&headers, SDPFRAG) {
        let mut r = error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
        );
        r.headers_mut().insert(
            HeaderName::from_static("accept-patch"),
            HeaderValue::from_static(SDPFRAG),
        );
        return r;
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad SDP fragment: not UTF-8 text");
    };
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    match engine.patch(&path, id, if_match, body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => whep_error(e),
    }
}

/// `DELETE /<path>/whep/<id>`.
async fn end(State(app): State<AppState>, Path((path, id)): Path<(String, String)>) -> Response {
    let engine = match engine(&app) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let Some(id) = parse_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such WHEP session");
    };
    match engine.delete(&path, id) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => whep_error(e),
    }
}

pub(super) fn preflight(app: &AppState, methods: &'static str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, If-Match, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static(SDP),
    );
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDPFRAG),
    );
    if let Some(e) = &app.webrtc {
        for link in ice_server_links(e.ice_servers()) {
            h.append(header::LINK, link);
        }
    }
    resp
}

/// `OPTIONS /<path>/whep`: CORS preflight (answered for any path, so that
/// a browser's actual POST gets the informative 404/503).
async fn preflight_endpoint(State(app): State<AppState>) -> Response {
    preflight(&app, "OPTIONS, POST")
}

/// `OPTIONS /<path>/whep/<id>`.
async fn preflight_resource(State(app): State<AppState>) -> Response {
    preflight(&app, "OPTIONS, PATCH, DELETE")
}

/// `GET /api/v1/webrtc/sessions` body: the WebRTC entries of the session
/// registry (`/api/v1/sessions`), with their detail inline.
#[derive(Serialize)]
pub struct SessionList {
    pub sessions: Vec<WebRtcSession>,
    /// Packets dropped because a socket buffer or a viewer's TCP queue was full.
    pub dropped_packets: u64,
}

/// One WHEP session.
#[derive(Serialize)]
pub struct WebRtcSession {
    /// The WHEP resource id (32 hex digits); `webrtc-<id>` in the registry.
    pub id: String,
    pub path: String,
    /// Seconds since the offer, to a tenth.
    pub age_s: f64,
    /// The viewer's address on the selected ICE pair, once known.
    pub remote: Option<std::net::SocketAddr>,
    pub user: Option<String>,
    /// RTP bytes sent, retransmissions included (all tracks).
    pub bytes_sent: u64,
    #[serde(flatten)]
    pub detail: WebRtcDetail,
}

/// `GET /api/v1/webrtc/sessions`.
pub(super) async fn list(State(app): State<AppState>) -> Json<SessionList> {
    let now = std::time::SystemTime::now();
    let sessions = app
        .sessions
        .list()
        .into_iter()
        .filter(|s| s.protocol == Protocol::WebRtc)
        .filter_map(|s| {
            let age = now.duration_since(s.since).unwrap_or_default();
            Some(WebRtcSession {
                id: s.local_id().to_owned(),
                age_s: (age.as_secs_f64() * 10.0).round() / 10.0,
                detail: match s.detail {
                    Detail::WebRtc(d) => *d,
                    _ => return None,
                },
                path: s.path,
                remote: s.remote,
                user: s.user,
                bytes_sent: s.bytes_sent,
            })
        })
        .collect();
    Json(SessionList {
        sessions,
        dropped_packets: app.webrtc.as_ref().map_or(0, |e| e.dropped_packets()),
    })
}

#[cfg(test)]
mod tests;
