//! The viewer page: `/` lists every stream with a live tile, `/<path>/` plays
//! one. Sources live in `web/` and `static/` and are embedded in the binary,
//! so nothing has to sit beside it and nothing is fetched from elsewhere.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::auth::{self, Need};
use super::AppState;
use crate::auth::Protocol;
use crate::config::rendition::valid_stream_name;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const PLAYER_HTML: &str = include_str!("../../web/player.html");
const PLAYER_JS: &str = include_str!("../../web/player.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
/// hls.js light build, pinned (tests/browser/package.json names the version).
const HLS_JS: &str = include_str!("../../static/hls.light.min.js");

/// Page and asset routes. The player page needs `read` on its path (the
/// browser asks the user for credentials on its 401); the index page and
/// the assets are the same for everyone and carry no stream data, so they
/// need nothing (the index's stream list comes from `/api/v1/streams`,
/// which needs `api`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML) }))
        .route(
            "/web/player.js",
            get(|| async { asset("text/javascript", PLAYER_JS) }),
        )
        .route(
            "/web/style.css",
            get(|| async { asset("text/css", STYLE_CSS) }),
        )
        .route(
            "/static/hls.light.min.js",
            get(|| async { asset("text/javascript", HLS_JS) }),
        )
        .route("/{path}", get(to_player))
        .merge(
            Router::new()
                .route("/{path}/", get(player))
                .route_layer(auth::require(Need::Read(Protocol::Http))),
        )
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn player(Path(path): Path<String>) -> Response {
    if valid_stream_name(&path) {
        page(PLAYER_HTML)
    } else {
        (StatusCode::NOT_FOUND, "no such page").into_response()
    }
}

/// `/<path>` without the slash: the player's relative URLs need it.
async fn to_player(Path(path): Path<String>) -> Response {
    if valid_stream_name(&path) {
        Redirect::permanent(&format!("/{path}/")).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such page").into_response()
    }
}
