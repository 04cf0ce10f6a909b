//! LL-HLS over HTTP: `GET /<path>/index.m3u8` (multivariant playlist),
//! `/<path>/stream.m3u8` (media playlist, with blocking reload and delta
//! updates), and `/<path>/init-<v>.mp4`, `seg-<msn>.mp4`,
//! `part-<msn>-<i>.mp4` (the names [`crate::egress::hls::parse_uri`]
//! knows).
//!
//! Status codes: 404 for an unknown path or file, a part or segment no
//! longer kept, or a stream without a track HLS can carry (e.g. MJPEG
//! only: the body says to use `/<path>/mjpeg`); 400 for a
//! malformed or too-far-ahead `_HLS_*` directive (draft-pantos-hls-rfc8216bis
//! §6.2.5.2); 503 when the stream is not live, or when a blocking request
//! found nothing new within three target durations. Error bodies are one
//! line of plain text saying why.
//!
//! Bytes: every playlist, init segment, segment and part served to a `GET`
//! counts into the stream's `bytes_out` and the muxer's session entry.
//!
//! Auth: the routes need `read` on the path ([`super::auth`]); a player
//! that authenticated with query parameters (`?user=&pass=`, `?token=`,
//! `?jwt=`) finds them on every URI of the playlists it is given, so its
//! next requests carry them too. The muxer's session names the users
//! that fetched from it.
//!
//! Caching: parts, segments and init segments never change under their
//! name (see `egress::hls::manager`), so they are `immutable` for a year;
//! playlists are `no-cache`. CORS: `Access-Control-Allow-Origin` from
//! `hls_allow_origin` on every response, errors and preflights included.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::auth::{self, AuthUser, Need};
use super::AppState;
use crate::auth::credentials::query_suffix;
use crate::auth::Protocol;
use crate::egress::hls::manager::{not_live_reason, HlsStream, Waited, Want, MEDIA_PLAYLIST};
use crate::egress::hls::{parse_uri, Lookup, ReloadDecision, Resource};

/// How long a first request waits for the stream's first complete segment
/// (from the cached keyframe to the next one, or two keyframes when the bus
/// has no cached GOP).
const STARTUP_WAIT: Duration = Duration::from_secs(10);

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const MP4_TYPE: &str = "video/mp4";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

/// The HLS routes, merged into [`super::router`].
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/{path}/{file}", get(serve).options(preflight))
        .route_layer(auth::require(Need::Read(Protocol::Hls)))
        // Outside the auth layer, so a cross-origin player can read a 401.
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            cors,
        ))
}

/// CORS on every response of the HLS routes.
async fn cors(State(app): State<AppState>, resp: Response) -> Response {
    with_cors(&app, resp)
}

/// An HLS error response: status and a plain-words reason.
#[derive(Debug)]
pub(crate) enum HlsError {
    NotFound(String),
    BadRequest(String),
    Unavailable(String),
}

impl IntoResponse for HlsError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            HlsError::NotFound(t) => (StatusCode::NOT_FOUND, t),
            HlsError::BadRequest(t) => (StatusCode::BAD_REQUEST, t),
            HlsError::Unavailable(t) => (StatusCode::SERVICE_UNAVAILABLE, t),
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, NO_CACHE),
            ],
            text + "\n",
        )
            .into_response()
    }
}

/// A playlist or media file to send.
struct Served {
    content_type: &'static str,
    cache: &'static str,
    data: Bytes,
}

type HlsResult = Result<Served, HlsError>;

fn body(content_type: &'static str, cache: &'static str, data: Bytes) -> Served {
    Served {
        content_type,
        cache,
        data,
    }
}

impl IntoResponse for Served {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CACHE_CONTROL, self.cache),
            ],
            self.data,
        )
            .into_response()
    }
}

/// Adds `Access-Control-Allow-Origin` (and `Vary: Origin` for a single
/// origin, so caches keep per-origin copies apart).
fn with_cors(app: &AppState, mut resp: Response) -> Response {
    if let Some(origin) = &app.hls.config().allow_origin {
        if let Ok(v) = HeaderValue::from_str(origin) {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            if origin != "*" {
                resp.headers_mut()
                    .append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
    }
    resp
}

/// `OPTIONS`: the CORS preflight (the Fetch standard's CORS protocol).
async fn preflight(headers: HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            ),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            ),
        ],
    )
        .into_response()
}

/// What a file name under `/<path>/` asks for.
enum Asked {
    Multivariant,
    MediaPlaylist,
    File(Resource),
}

/// `GET`/`HEAD /<path>/<file>`. The stream's muxer is started (or kept
/// alive) only by a request for an HLS resource name.
async fn serve(
    State(app): State<AppState>,
    method: Method,
    Path((path, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
) -> Response {
    dispatch(
        &app,
        &method,
        &path,
        &file,
        query.as_deref(),
        user.as_deref(),
    )
    .await
}

async fn dispatch(
    app: &AppState,
    method: &Method,
    path: &str,
    file: &str,
    query: Option<&str>,
    user: Option<&str>,
) -> Response {
    let asked = match file {
        "index.m3u8" => Asked::Multivariant,
        MEDIA_PLAYLIST => Asked::MediaPlaylist,
        _ => match parse_uri(file) {
            Some(resource) => Asked::File(resource),
            None => {
                return HlsError::NotFound(format!(
                    "no HLS resource named {file:?} (index.m3u8, {MEDIA_PLAYLIST}, \
                     init-*.mp4, seg-*.mp4, part-*.mp4)"
                ))
                .into_response()
            }
        },
    };
    let Some(hs) = app.hls.open(path) else {
        return HlsError::NotFound(format!("no stream named {path:?}")).into_response();
    };
    if let Some(user) = user {
        hs.note_viewer(user);
    }
    // An on-demand source starts with the muxer's subscription: wait for it.
    if let Some(base) = app.registry.get(path).filter(|s| s.on_demand().is_some()) {
        if let Err(e) = base.wait_ready(std::time::Duration::ZERO).await {
            return HlsError::Unavailable(e).into_response();
        }
    }
    // A player that authenticated with query parameters sends them again
    // only if every URI it is given carries them.
    let credentials = query.map(query_suffix).unwrap_or_default();
    let result = match asked {
        Asked::Multivariant => multivariant(&hs, &credentials).await,
        Asked::MediaPlaylist => media_playlist(&hs, query, &credentials).await,
        Asked::File(resource) => media_file(&hs, resource).await,
    };
    match result {
        Ok(served) => {
            // HEAD sends the headers only.
            if method != Method::HEAD {
                hs.count_served(served.data.len() as u64);
            }
            served.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// 503 with the reason when the stream is not live; 404 when none of its
/// tracks can go into HLS.
fn check_playable(hs: &HlsStream) -> Result<(), HlsError> {
    if let Some(reason) = not_live_reason(hs.stream()) {
        return Err(HlsError::Unavailable(reason));
    }
    if !hs.progress().ready {
        if let Some(reason) = hs.no_usable_tracks() {
            return Err(HlsError::NotFound(format!(
                "stream {:?} has no track HLS can carry: {reason}",
                hs.stream().name()
            )));
        }
    }
    Ok(())
}

/// Waits for the first complete segment of a freshly started muxer.
async fn wait_for_start(hs: &HlsStream) -> Result<(), HlsError> {
    match hs.wait_for(Want::Ready, STARTUP_WAIT).await {
        Waited::Reached => Ok(()),
        Waited::Stopped => Err(HlsError::Unavailable(format!(
            "stream {:?} ended",
            hs.stream().name()
        ))),
        Waited::TimedOut => Err(HlsError::Unavailable(match not_live_reason(hs.stream()) {
            Some(reason) => reason,
            None => format!(
                "stream {:?} completed no segment (two keyframes) within {} s",
                hs.stream().name(),
                STARTUP_WAIT.as_secs()
            ),
        })),
    }
}

/// The multivariant playlist (§4.4.6).
async fn multivariant(hs: &HlsStream, credentials: &str) -> HlsResult {
    check_playable(hs)?;
    wait_for_start(hs).await?;
    let tracks = hs.stream().tracks().map(|s| s.tracks.clone());
    let text = hs
        .multivariant(tracks.as_deref().unwrap_or_default(), credentials)
        .ok_or_else(|| HlsError::Unavailable("the stream has not been measured yet".into()))?;
    Ok(body(PLAYLIST_TYPE, NO_CACHE, Bytes::from(text)))
}

/// The `_HLS_*` delivery directives of a media playlist request (§6.2.5).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) msn: Option<u64>,
    pub(crate) part: Option<u64>,
    skip: bool,
}

/// Parses the query string; other parameters are ignored (cache busters).
pub(crate) fn directives(query: Option<&str>) -> Result<Directives, HlsError> {
    let mut d = Directives::default();
    let number = |key: &str, value: &str| {
        value.parse::<u64>().map_err(|_| {
            HlsError::BadRequest(format!("{key}={value:?} is not a non-negative integer"))
        })
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "_HLS_msn" => d.msn = Some(number(&key, &value)?),
            "_HLS_part" => d.part = Some(number(&key, &value)?),
            // v2 also skips EXT-X-DATERANGE tags, of which there are none.
            "_HLS_skip" => match &*value {
                "YES" | "v2" => d.skip = true,
                _ => {
                    return Err(HlsError::BadRequest(format!(
                        "_HLS_skip={value:?}: expected YES or v2"
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(d)
}

/// The media playlist: blocking reload (§6.2.5.2) and delta updates (§6.2.5.1).
async fn media_playlist(hs: &HlsStream, query: Option<&str>, credentials: &str) -> HlsResult {
    let d = directives(query)?;
    check_playable(hs)?;
    match hs.reload_decision(d.msn, d.part) {
        ReloadDecision::BadRequest(why) => return Err(HlsError::BadRequest(why.into())),
        ReloadDecision::Ready => {}
        ReloadDecision::Wait => {
            // `reload_decision` only says Wait for a request with an MSN.
            wait(hs, Want::directive(d.msn.unwrap_or_default(), d.part)).await?;
        }
    }
    wait_for_start(hs).await?;
    let text = hs
        .media_playlist(d.skip, credentials)
        .ok_or_else(|| HlsError::Unavailable("the playlist is not ready".into()))?;
    Ok(body(PLAYLIST_TYPE, NO_CACHE, text))
}

/// Holds a request until `want` is reached; 503 after three target
/// durations (§6.2.5.2) or when the muxer stops.
async fn wait(hs: &HlsStream, want: Want) -> Result<(), HlsError> {
    let limit = hs.block_limit();
    match hs.wait_for(want, limit).await {
        Waited::Reached => Ok(()),
        Waited::Stopped => Err(HlsError::Unavailable(format!(
            "stream {:?} ended",
            hs.stream().name()
        ))),
        Waited::TimedOut => Err(HlsError::Unavailable(match not_live_reason(hs.stream()) {
            Some(reason) => reason,
            None => format!(
                "nothing new from stream {:?} within {} s (three target durations)",
                hs.stream().name(),
                limit.as_secs()
            ),
        })),
    }
}

/// An init segment, segment or part. A part or segment still being written
/// (e.g. the one EXT-X-PRELOAD-HINT names) is waited for.
async fn media_file(hs: &HlsStream, resource: Resource) -> HlsResult {
    let (msn, part) = match resource {
        Resource::Init(v) => {
            return hs
                .init(v)
                .map(|data| body(MP4_TYPE, IMMUTABLE, data))
                .ok_or_else(|| HlsError::NotFound(format!("init segment {v} is not kept")));
        }
        Resource::Segment(msn) => (msn, None),
        Resource::Part(msn, i) => (msn, Some(i)),
    };
    let name = match part {
        Some(i) => format!("part {i} of segment {msn}"),
        None => format!("segment {msn}"),
    };
    let lookup = || match part {
        Some(i) => hs.part(msn, i),
        None => hs.segment(msn),
    };
    let mut found = lookup();
    if matches!(found, Lookup::NotYet) {
        // Only what a blocking reload could wait for is waited for.
        if let ReloadDecision::BadRequest(_) = hs.reload_decision(Some(msn), part) {
            return Err(HlsError::NotFound(format!("{name} is not produced yet")));
        }
        if let Some(reason) = not_live_reason(hs.stream()) {
            return Err(HlsError::Unavailable(reason));
        }
        wait(hs, Want::directive(msn, part)).await?;
        found = lookup();
    }
    match found {
        Lookup::Ready(data) => Ok(body(MP4_TYPE, IMMUTABLE, data)),
        Lookup::Gone => Err(HlsError::NotFound(format!(
            "{name} is no longer kept or was never produced"
        ))),
        Lookup::NotYet => Err(HlsError::Unavailable(format!("{name} is not ready"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::bus::{Registry, Stream, StreamState};
    use crate::config::HlsConfig;
    use crate::egress::hls::manager::{HlsManager, Progress};
    use crate::egress::hls::testutil::{
        frame, h264_fixture, h264_track, opus_track, pcma_track, synthetic_au, VideoFixture,
    };

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn header(&self, name: header::HeaderName) -> &str {
            self.headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).expect("a UTF-8 body")
        }
    }

    /// A stream `cam` with the H.264 fixture's parameters (synthetic
    /// frames) behind the full router.
    struct Setup {
        app: Router,
        hls: Arc<HlsManager>,
        sessions: Arc<crate::bus::Sessions>,
        stream: Arc<Stream>,
        fx: VideoFixture,
        next: usize,
    }

    impl Setup {
        fn new(config: HlsConfig) -> Self {
            Setup::with_auth(config, Default::default())
        }

        fn with_auth(config: HlsConfig, auth: crate::config::auth::AuthSettings) -> Self {
            let registry = Registry::new();
            let stream = Stream::new("cam", "rtsp://cam.example/s");
            registry.insert(stream.clone());
            let fx = h264_fixture();
            let sessions = crate::bus::Sessions::new();
            let hls = HlsManager::with_sessions(registry.clone(), config, sessions.clone());
            let app = super::super::test_router(AppState {
                paths: crate::paths::PathManager::new(registry.clone(), None),
                sessions: sessions.clone(),
                registry,
                rtsp_base: "rtsp://127.0.0.1:8554".into(),
                hls: hls.clone(),
                webrtc: None,
                auth: crate::auth::Authenticator::new(auth),
                api: Default::default(),
            });
            Setup {
                app,
                hls,
                sessions,
                stream,
                fx,
                next: 0,
            }
        }

        fn live() -> Self {
            let s = Setup::new(HlsConfig::default());
            s.stream.set_tracks(vec![h264_track(&s.fx)]);
            s.stream.set_state(StreamState::Live);
            s
        }

        /// Starts the muxer (as a request would) and publishes `n` frames.
        fn start(&mut self, n: usize) {
            self.hls.open("cam").expect("stream exists");
            self.publish(n);
        }

        /// Publishes the next `n` frames: 25 fps, a keyframe every 25
        /// frames (1 s segments of five 200 ms parts).
        fn publish(&mut self, n: usize) {
            for _ in 0..n {
                let i = self.next;
                let key = i.is_multiple_of(25);
                let f = frame(0, i as i64 * 3600, key, synthetic_au(key, 300, i as u8));
                self.stream.publish(f, key);
                self.next += 1;
            }
        }

        async fn get(&self, uri: &str) -> Reply {
            request(
                &self.app,
                Request::get(uri)
                    .body(Body::empty())
                    .expect("valid request"),
            )
            .await
        }

        /// Waits (at most 5 s) until the muxer's progress satisfies `f`.
        async fn until(&self, f: impl Fn(&Progress) -> bool) -> Progress {
            let hs = self.hls.get("cam").expect("the muxer runs");
            let mut rx = hs.subscribe();
            let p = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| f(p)))
                .await
                .expect("the muxer progressed in time")
                .expect("the muxer is alive");
            *p
        }
    }

    async fn request(app: &Router, req: Request<Body>) -> Reply {
        let resp = app.clone().oneshot(req).await.expect("infallible service");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body collects")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The (MSN, index) of the playlist's EXT-X-PRELOAD-HINT.
    fn preload_hint(playlist: &str) -> (u64, u64) {
        let uri = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no preload hint in\n{playlist}"));
        match parse_uri(uri) {
            Some(Resource::Part(msn, i)) => (msn, i),
            other => panic!("hint {uri} parsed as {other:?}"),
        }
    }

    /// The URIs of a playlist: lines that are not tags, and `URI="..."`
    /// attributes.
    fn playlist_uris(text: &str) -> Vec<&str> {
        let mut v = Vec::new();
        for line in text.lines() {
            if !line.is_empty() && !line.starts_with('#') {
                v.push(line);
            }
            let mut rest = line;
            while let Some(i) = rest.find("URI=\"") {
                rest = &rest[i + 5..];
                let end = rest.find('"').expect("closing quote");
                v.push(&rest[..end]);
                rest = &rest[end..];
            }
        }
        v
    }

    /// A player authenticating with query parameters (hls.js on a URL
    /// with `?user=..&pass=..`) is let through, finds the same parameters
    /// on every URI of both playlists (so its next requests authenticate
    /// too; `_HLS_*` directives still work beside them), and the muxer's
    /// session names its user.
    #[tokio::test]
    async fn query_credentials_are_carried_into_every_playlist_uri() {
        let auth = crate::config::auth::AuthSettings {
            users: vec![crate::config::auth::User {
                user: crate::config::auth::UserName::Name("viewer".into()),
                pass: Some(crate::config::auth::Password::Plain("s&cret".into())),
                ips: vec![],
                permissions: vec![crate::config::auth::Permission {
                    action: crate::auth::Action::Read,
                    path: crate::config::auth::PathMatch::Exact("cam".into()),
                }],
            }],
            ..Default::default()
        };
        let mut s = Setup::with_auth(HlsConfig::default(), auth);
        s.stream.set_tracks(vec![h264_track(&s.fx)]);
        s.stream.set_state(StreamState::Live);
        s.start(1);
        s.publish(80);
        let q = "user=viewer&pass=s%26cret";
        let r = s.get("/cam/index.m3u8").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

        let r = s.get(&format!("/cam/index.m3u8?x=1&{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(playlist_uris(r.text()), [format!("stream.m3u8?{q}")]);

        let r = s.get(&format!("/cam/stream.m3u8?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let text = r.text().to_owned();
        let uris = playlist_uris(&text);
        assert!(uris.len() > 5, "{text}");
        for uri in &uris {
            assert!(uri.ends_with(&format!(".mp4?{q}")), "{uri} in\n{text}");
        }
        // What a player asks next: a part as written, and a blocking
        // reload for a part already there, both with the credentials.
        let part = uris
            .iter()
            .find(|u| u.starts_with("part-"))
            .expect("a part");
        let r = s.get(&format!("/cam/{part}")).await;
        assert_eq!(r.status, StatusCode::OK, "{part}: {}", r.text());
        let Some(Resource::Part(msn, i)) = parse_uri(part.split('?').next().unwrap()) else {
            panic!("{part}")
        };
        let r = s
            .get(&format!(
                "/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={i}&{q}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(playlist_uris(r.text())
            .iter()
            .all(|u| u.ends_with(&format!("?{q}"))));
        // A wrong password in the query is refused like a missing one.
        let r = s.get("/cam/stream.m3u8?user=viewer&pass=nope").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);

        let users: Vec<_> = s.sessions.list().into_iter().map(|e| e.user).collect();
        assert_eq!(users, [Some("viewer".to_owned())]);
    }

    #[tokio::test]
    async fn unknown_paths_and_files_are_404_with_cors() {
        let s = Setup::live();
        for uri in ["/nope/index.m3u8", "/cam/other.m3u8", "/cam/seg-01.mp4"] {
            let r = s.get(uri).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
            assert!(r.header(header::CONTENT_TYPE).starts_with("text/plain"));
        }
        assert!(s
            .get("/nope/index.m3u8")
            .await
            .text()
            .contains("no stream named \"nope\""));
        assert!(
            s.hls.get("cam").is_none(),
            "an unknown file name started the muxer"
        );
    }

    #[tokio::test]
    async fn preflight_allows_any_origin_by_default() {
        let s = Setup::live();
        let req = Request::options("/cam/stream.m3u8")
            .header(header::ORIGIN, "https://viewer.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "range")
            .body(Body::empty())
            .expect("valid request");
        let r = request(&s.app, req).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        assert!(r
            .header(header::ACCESS_CONTROL_ALLOW_METHODS)
            .contains("GET"));
        assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_HEADERS), "range");
    }

    #[tokio::test]
    async fn configured_origin_and_no_cors() {
        let s = Setup::new(HlsConfig {
            allow_origin: Some("https://viewer.example".into()),
            ..HlsConfig::default()
        });
        let r = s.get("/nope/index.m3u8").await;
        assert_eq!(
            r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "https://viewer.example"
        );
        assert_eq!(r.header(header::VARY), "origin");
        let s = Setup::new(HlsConfig {
            allow_origin: None,
            ..HlsConfig::default()
        });
        let r = s.get("/nope/index.m3u8").await;
        assert!(!r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[tokio::test]
    async fn stream_not_live_is_503_with_the_reason() {
        let s = Setup::new(HlsConfig::default());
        s.stream.set_state(StreamState::Reconnecting {
            error: "cannot connect to the camera: connection refused".into(),
        });
        let (msn, _) = s
            .hls
            .open("cam")
            .expect("stream exists")
            .progress()
            .next_part;
        for uri in [
            "/cam/index.m3u8".to_owned(),
            "/cam/stream.m3u8".to_owned(),
            format!("/cam/part-{msn}-0.mp4"),
        ] {
            let r = s.get(&uri).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert!(r.text().contains("connection refused"), "{}", r.text());
            assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        }
    }

    /// MJPEG only: 404 (as any stream without a track HLS can carry) with
    /// the reason and where to watch it instead.
    #[tokio::test]
    async fn mjpeg_only_stream_is_404_pointing_to_its_mjpeg_url() {
        let s = Setup::new(HlsConfig::default());
        s.stream.set_tracks(vec![Arc::new(crate::bus::Track::new(
            crate::bus::Codec::Jpeg,
            90_000,
        ))]);
        s.stream.set_state(StreamState::Live);
        let r = s.get("/cam/index.m3u8").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let text = r.text();
        assert!(
            text.contains("has no track HLS can carry: MJPEG is not carried over HLS")
                && text.contains("/mjpeg"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn g711_only_stream_is_404_and_the_api_says_why() {
        let s = Setup::new(HlsConfig::default());
        s.stream.set_tracks(vec![pcma_track()]);
        s.stream.set_state(StreamState::Live);
        let r = s.get("/cam/index.m3u8").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.text().contains("G.711"), "{}", r.text());
        let r = s.get("/api/v1/streams/cam").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        let note = v["tracks"][0]["hls"].as_str().expect("an hls note");
        assert!(
            note.starts_with("not in HLS: G.711 (PCMA) can't go into fMP4 for browsers"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn opus_audio_passes_through() {
        let mut s = Setup::new(HlsConfig::default());
        s.stream.set_tracks(vec![h264_track(&s.fx), opus_track()]);
        s.stream.set_state(StreamState::Live);
        s.hls.open("cam").expect("stream exists");
        // 2 s of video and of 20 ms Opus packets, interleaved in time.
        for i in 0..50usize {
            s.publish(1);
            for k in 0..2 {
                let n = (i * 2 + k) as i64;
                let f = frame(1, n * 960, true, Bytes::from_static(&[0xfc, 1, 2, 3]));
                s.stream.publish(f, false);
            }
        }
        let r = s.get("/cam/index.m3u8").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(
            r.text().contains("CODECS=\"avc1.64001e,opus\""),
            "{}",
            r.text()
        );
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, _) = preload_hint(&text);
        let part = s.get(&format!("/cam/part-{}-0.mp4", msn - 1)).await;
        assert_eq!(part.status, StatusCode::OK);
        // Two track fragments: video and Opus.
        assert_eq!(
            part.body.windows(4).filter(|w| w == b"traf").count(),
            2,
            "one traf per track"
        );
    }

    #[tokio::test]
    async fn api_has_no_hls_note_for_carried_tracks() {
        let s = Setup::live();
        let r = s.get("/api/v1/streams/cam").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        // The track is there (an error body has no tracks, and `.get` on
        // nothing is None too) and carries no note.
        let track = &v["tracks"][0];
        assert!(track.is_object() && track["codec"].is_string(), "{v}");
        assert!(track.get("hls").is_none(), "{v}");
    }

    #[tokio::test]
    async fn playlists_and_media_with_headers() {
        let mut s = Setup::live();
        // A GOP and a half before the first request: the muxer starts at
        // the cached keyframe (frame 25), and its first segment is complete
        // at frame 50.
        s.publish(38);
        let first = s
            .hls
            .open("cam")
            .expect("stream exists")
            .progress()
            .next_part
            .0;
        s.publish(22);
        let r = s.get("/cam/index.m3u8").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(
            r.header(header::CONTENT_TYPE),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(r.header(header::CACHE_CONTROL), "no-cache");
        assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        let text = r.text();
        assert!(text.contains("CODECS=\"avc1.64001e\""), "{text}");
        assert!(text.contains("RESOLUTION=640x360"), "{text}");
        assert!(text.contains("FRAME-RATE=25.000"), "{text}");
        assert!(text.contains("BANDWIDTH="), "{text}");
        assert!(text.ends_with("stream.m3u8\n"), "{text}");

        let r = s.get("/cam/stream.m3u8").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header(header::CONTENT_TYPE),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(r.header(header::CACHE_CONTROL), "no-cache");
        let text = r.text().to_owned();
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"));
        assert!(text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
        assert_eq!(text.matches("#EXTINF:1.00000,\n").count(), 1, "{text}");
        let (msn, next) = preload_hint(&text);
        // Frames 50..=58 are out (59 waits for its duration): one part.
        assert_eq!((msn, next), (first + 1, 1), "{text}");
        let map = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("EXT-X-MAP");

        let r = s.get(&format!("/cam/{map}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header(header::CONTENT_TYPE), "video/mp4");
        assert!(r
            .header(header::CACHE_CONTROL)
            .starts_with("public, max-age="));
        assert_eq!(&r.body[4..8], b"ftyp");

        let r = s.get(&format!("/cam/part-{msn}-0.mp4")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header(header::CONTENT_TYPE), "video/mp4");
        assert_eq!(
            r.header(header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        assert_eq!(&r.body[4..8], b"moof");

        // HEAD: same headers, no body.
        let r = request(
            &s.app,
            Request::head(format!("/cam/part-{msn}-0.mp4"))
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.is_empty());
        assert_eq!(r.header(header::CONTENT_TYPE), "video/mp4");
    }

    #[tokio::test]
    async fn bytes_served_count_into_the_stream_and_the_muxer_session() {
        let sessions = crate::bus::Sessions::new();
        let registry = Registry::new();
        let stream = Stream::new("cam", "rtsp://cam.example/s");
        registry.insert(stream.clone());
        let fx = h264_fixture();
        stream.set_tracks(vec![h264_track(&fx)]);
        stream.set_state(StreamState::Live);
        let hls =
            HlsManager::with_sessions(registry.clone(), HlsConfig::default(), sessions.clone());
        let mut s = Setup {
            app: super::super::test_router(AppState {
                paths: crate::paths::PathManager::new(registry.clone(), None),
                sessions: sessions.clone(),
                registry,
                rtsp_base: "rtsp://127.0.0.1:8554".into(),
                hls: hls.clone(),
                webrtc: None,
                auth: crate::auth::Authenticator::new(Default::default()),
                api: Default::default(),
            }),
            hls,
            sessions: sessions.clone(),
            stream,
            fx,
            next: 0,
        };
        s.start(60);
        let out = |s: &Setup| s.stream.stats.bytes_out.load(Ordering::Relaxed);
        let mut total = 0;
        let text = s.get("/cam/stream.m3u8").await;
        assert_eq!(text.status, StatusCode::OK);
        total += text.body.len() as u64;
        let (msn, _) = preload_hint(text.text());
        for uri in [
            "/cam/index.m3u8".to_owned(),
            format!("/cam/part-{msn}-0.mp4"),
            format!("/cam/seg-{}.mp4", msn - 1),
        ] {
            let r = s.get(&uri).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}");
            assert!(!r.body.is_empty());
            total += r.body.len() as u64;
        }
        assert_eq!(out(&s), total);
        // HEAD and errors send no media.
        request(
            &s.app,
            Request::head(format!("/cam/part-{msn}-0.mp4"))
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
        assert_eq!(s.get("/cam/seg-1.mp4").await.status, StatusCode::NOT_FOUND);
        assert_eq!(out(&s), total);
        let list = sessions.list();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].protocol, crate::bus::Protocol::Hls);
        assert_eq!(list[0].bytes_sent, total);
        // And the stream list shows the muxer as the one HLS session.
        let r = s.get("/api/v1/streams/cam").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["readers"]["hls"], 1, "{v}");
        assert_eq!(v["bytes_out"], total, "{v}");
    }

    #[tokio::test]
    async fn malformed_and_too_far_directives_are_400() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, _) = preload_hint(&text);
        for q in [
            "_HLS_msn=abc".to_owned(),
            "_HLS_msn=-1".to_owned(),
            "_HLS_part=1".to_owned(),
            "_HLS_skip=NO".to_owned(),
            format!("_HLS_msn={msn}&_HLS_part=x"),
            format!("_HLS_msn={}", msn + 2),
            format!("_HLS_msn={msn}&_HLS_part=99"),
        ] {
            let r = s.get(&format!("/cam/stream.m3u8?{q}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
            assert_eq!(r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        }
        // Unknown parameters are ignored.
        let r = s.get("/cam/stream.m3u8?token=abc").await;
        assert_eq!(r.status, StatusCode::OK);
    }

    /// Client-chosen numbers at the ends of u64 (and past it) are answered
    /// at once, 400 for directives and 404 for file names, never wrapped
    /// into a wait or a panic (issue: `_HLS_part=u64::MAX` overflowed
    /// `part + 1`).
    #[tokio::test]
    async fn extreme_numbers_are_answered_not_wrapped() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, _) = preload_hint(&text);
        let max = u64::MAX;
        for (uri, want) in [
            (format!("/cam/stream.m3u8?_HLS_msn={max}"), 400),
            (
                format!("/cam/stream.m3u8?_HLS_msn={max}&_HLS_part={max}"),
                400,
            ),
            (
                format!("/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={max}"),
                400,
            ),
            (
                format!("/cam/stream.m3u8?_HLS_msn={}&_HLS_part={max}", msn + 1),
                400,
            ),
            (
                "/cam/stream.m3u8?_HLS_msn=18446744073709551616".to_owned(),
                400,
            ),
            (format!("/cam/part-{msn}-{max}.mp4"), 404),
            (format!("/cam/part-{max}-{max}.mp4"), 404),
            (format!("/cam/seg-{max}.mp4"), 404),
            (format!("/cam/init-{max}.mp4"), 404),
            ("/cam/seg-18446744073709551616.mp4".to_owned(), 404),
        ] {
            let r = tokio::time::timeout(std::time::Duration::from_secs(1), s.get(&uri))
                .await
                .unwrap_or_else(|_| panic!("{uri}: not answered within 1 s"));
            assert_eq!(r.status.as_u16(), want, "{uri}: {}", r.text());
        }
    }

    #[tokio::test]
    async fn blocking_reload_returns_when_the_part_is_produced() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, part) = preload_hint(&text);

        // A part that exists: answered at once.
        let started = Instant::now();
        let r = s
            .get(&format!(
                "/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={}",
                part - 1
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(500));

        // The hinted part: held until it is produced.
        let app = s.app.clone();
        let uri = format!("/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={part}");
        let pending = tokio::spawn(async move {
            request(&app, Request::get(uri).body(Body::empty()).expect("valid")).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pending.is_finished(), "answered before the part existed");
        // Five more frames (200 ms) complete the part.
        s.publish(6);
        let r = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .expect("answered once the part exists")
            .expect("request task");
        assert_eq!(r.status, StatusCode::OK);
        let uri = format!("URI=\"part-{msn}-{part}.mp4\"");
        assert!(
            r.text()
                .lines()
                .any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&uri)),
            "{}",
            r.text()
        );
    }

    #[tokio::test]
    async fn hinted_part_request_waits_until_complete() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, part) = preload_hint(&text);
        let app = s.app.clone();
        let uri = format!("/cam/part-{msn}-{part}.mp4");
        let pending = tokio::spawn(async move {
            request(&app, Request::get(uri).body(Body::empty()).expect("valid")).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pending.is_finished(), "answered before the part existed");
        s.publish(6);
        let r = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .expect("answered once the part exists")
            .expect("request task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[4..8], b"moof");
        // A part far beyond the hint is not waited for.
        let r = s.get(&format!("/cam/part-{}-0.mp4", msn + 5)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn blocking_reload_times_out_with_503_after_three_target_durations() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (msn, part) = preload_hint(&text);
        let started = Instant::now();
        let r = s
            .get(&format!("/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        let waited = started.elapsed();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(r.text().contains("three target durations"), "{}", r.text());
        // Target duration 1 s.
        assert!(
            (Duration::from_millis(2_900)..Duration::from_millis(4_000)).contains(&waited),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn expired_parts_are_404_and_delta_updates_skip() {
        let mut s = Setup::live();
        s.start(38);
        let text = s.get("/cam/stream.m3u8").await.text().to_owned();
        let (first, _) = preload_hint(&text);
        // 14 more seconds: 7 segments listed, 2 more kept, the first ones gone.
        s.publish(350);
        s.until(|p| p.next_part.0 >= first + 13).await;
        let r = s.get(&format!("/cam/part-{first}-0.mp4")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
        assert!(r.text().contains("no longer kept"));
        let r = s.get(&format!("/cam/seg-{first}.mp4")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = s.get(&format!("/cam/seg-{}.mp4", first + 10)).await;
        assert_eq!(r.status, StatusCode::OK);

        let full = s.get("/cam/stream.m3u8").await.text().to_owned();
        assert!(!full.contains("#EXT-X-SKIP"));
        let r = s.get("/cam/stream.m3u8?_HLS_skip=YES").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.text().contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="),
            "{}",
            r.text()
        );
        assert!(r.body.len() < full.len());
    }
}
