//! The viewer page: `/` lists every stream with a live tile, `/<path>/` plays
//! one. Sources live in `web/` and `static/` and are embedded in the binary,
//! so nothing has to sit beside it and nothing is fetched from elsewhere.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::config::valid_path_name;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const PLAYER_HTML: &str = include_str!("../../web/player.html");
const PLAYER_JS: &str = include_str!("../../web/player.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
/// hls.js light build, pinned (tests/browser/package.json names the version).
const HLS_JS: &str = include_str!("../../static/hls.light.min.js");

/// Page and asset routes.
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
        .route("/{path}/", get(player))
        .route("/{path}", get(to_player))
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
    if valid_path_name(&path) {
        page(PLAYER_HTML)
    } else {
        (StatusCode::NOT_FOUND, "no such page").into_response()
    }
}

/// `/<path>` without the slash: the player's relative URLs need it.
async fn to_player(Path(path): Path<String>) -> Response {
    if valid_path_name(&path) {
        Redirect::permanent(&format!("/{path}/")).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such page").into_response()
    }
}
