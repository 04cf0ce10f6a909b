//! WHIP (RFC 9725) endpoints: browsers (`getUserMedia`) and OBS 30+
//! publish a path over WebRTC.
//!
//! | method | path | |
//! |---|---|---|
//! | `POST` | `/<path>/whip` | `application/sdp` offer → `201 Created`, answer, `Location`, `ETag`, `Link` |
//! | `PATCH` | `/<path>/whip/<id>` | `application/trickle-ice-sdpfrag` → `204` (RFC 9725 §4.3) |
//! | `DELETE` | `/<path>/whip/<id>` | ends the publication → `200` |
//! | `OPTIONS` | both | CORS preflight, `Accept-Post: application/sdp` |
//!
//! The session resource follows the same rules as a WHEP one (trickle,
//! ICE restarts refused with 422, `webrtc_max_sessions` and
//! `webrtc_post_rate` shared with viewers); see [`super::whep`].
//!
//! Answers to a POST besides those of WHEP: `409 Conflict` when the path
//! has a source already (another publisher, a configured camera:
//! `PublishError::PathInUse`), `404` for a path that takes no publishers
//! (`PublishError::NotPublishable`), `422` when the offer sends neither H.264 video nor Opus
//! audio.
//!
//! Auth ([`super::auth`]): `publish` on the path (anonymous publishing is
//! refused unless a user entry grants it); the user is recorded on the
//! session.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::auth::{self, AuthUser, Need};
use super::whep::{
    cors, engine, error, has_content_type, ice_server_links, preflight, whep_error, SDP, SDPFRAG,
};
use super::AppState;
use crate::auth::Protocol as AuthProtocol;
use crate::egress::webrtc::offer::MAX_SDP_LEN;
use crate::egress::webrtc::{format_id, parse_id, Resource};

/// The WHIP routes, to merge into the router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{path}/whip", post(create).options(preflight_endpoint))
        .route(
            "/{path}/whip/{id}",
            axum::routing::patch(trickle)
                .delete(end)
                .options(preflight_resource),
        )
        .route_layer(auth::require(Need::Publish(AuthProtocol::Webrtc)))
        .layer(DefaultBodyLimit::max(MAX_SDP_LEN))
        .layer(axum::middleware::map_response(cors))
}

/// `POST /<path>/whip`: offer in, answer out; the path is published from now.
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
            "a WHIP offer must be sent with Content-Type: application/sdp",
        );
        r.headers_mut().insert(
            HeaderName::from_static("accept-post"),
            HeaderValue::from_static(SDP),
        );
        return r;
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad SDP offer: not UTF-8 text");
    };
    let created = match engine.create_publisher(&path, offer, user).await {
        Ok(c) => c,
        Err(e) => return whep_error(e),
    };
    let location = format!("/{}/whip/{}", created.path, format_id(created.id));
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

/// `PATCH /<path>/whip/<id>`: trickled candidates.
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
        return error(StatusCode::NOT_FOUND, "no such WHIP session");
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
    match engine.patch_resource(Resource::Whip, &path, id, if_match, body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => whep_error(e),
    }
}

/// `DELETE /<path>/whip/<id>`: the publication ends.
async fn end(State(app): State<AppState>, Path((path, id)): Path<(String, String)>) -> Response {
    let engine = match engine(&app) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let Some(id) = parse_id(&id) else {
        return error(StatusCode::NOT_FOUND, "no such WHIP session");
    };
    match engine.delete_resource(Resource::Whip, &path, id) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => whep_error(e),
    }
}

/// `OPTIONS /<path>/whip`.
async fn preflight_endpoint(State(app): State<AppState>) -> Response {
    preflight(&app, "OPTIONS, POST")
}

/// `OPTIONS /<path>/whip/<id>`.
async fn preflight_resource(State(app): State<AppState>) -> Response {
    preflight(&app, "OPTIONS, PATCH, DELETE")
}

#[cfg(test)]
mod tests;
