//! Recordings over HTTP: `GET /api/v1/recordings` (paths with recordings),
//! `GET /api/v1/recordings/{name}` (its files: start time in RFC 3339,
//! duration in seconds) and `GET /{path}/playback?start=<RFC 3339>&duration=<s>`,
//! one progressive MP4 over the span with HTTP Range (RFC 9110 §14), built
//! by `egress::record::playback`. The recorder registry rides in the
//! request's extensions (`Extension<Arc<Recordings>>`, added by the wiring);
//! without it these routes answer 404.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::Serialize;

use super::auth::{self, Need};
use super::AppState;
use crate::config::valid_path_name;
use crate::egress::record::playback::{parse_range, Plan, PlanError, RangeAsk};
use crate::egress::record::{RecorderStatus, Recordings};

/// Longest span one playback request may ask for.
pub const MAX_PLAYBACK: Duration = Duration::from_secs(7 * 86_400);

/// Bytes read from a file per body piece.
const PIECE: usize = 256 * 1024;

/// The `/api/v1/recordings*` routes (merged under the API's guard).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/recordings", get(list_paths))
        .route("/api/v1/recordings/{name}", get(list_segments))
        .route_layer(auth::require(Need::PlaybackOrApi))
}

/// `/{path}/playback`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{path}/playback", get(playback))
        .route_layer(auth::require(Need::Playback))
}

type Rec = Option<Extension<Arc<Recordings>>>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into() + "\n",
    )
        .into_response()
}

/// `GET /api/v1/recordings` body.
#[derive(Serialize)]
pub struct RecordingList {
    pub recordings: Vec<PathRecordings>,
}

/// A path with recordings.
#[derive(Serialize)]
pub struct PathRecordings {
    pub name: String,
    /// Whether it is being recorded now, and why not if it stopped.
    #[serde(flatten)]
    pub status: RecorderStatus,
}

async fn list_paths(rec: Rec) -> Response {
    let Some(Extension(rec)) = rec else {
        return Json(RecordingList { recordings: vec![] }).into_response();
    };
    let r = rec.clone();
    let Ok(names) = tokio::task::spawn_blocking(move || r.paths()).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed");
    };
    Json(RecordingList {
        recordings: names
            .into_iter()
            .map(|name| PathRecordings {
                status: rec.status(&name).unwrap_or_default(),
                name,
            })
            .collect(),
    })
    .into_response()
}

/// One recording file.
#[derive(Serialize)]
pub struct SegmentInfo {
    /// When its first frame arrived, RFC 3339 UTC.
    pub start: String,
    /// Seconds of media in it (up to its last complete fragment).
    pub duration: f64,
    /// Bytes on disk.
    pub size: u64,
    /// Its `playback` URL, relative to the server.
    pub url: String,
}

/// `GET /api/v1/recordings/{name}` body.
#[derive(Serialize)]
pub struct SegmentList {
    pub name: String,
    #[serde(flatten)]
    pub status: RecorderStatus,
    pub segments: Vec<SegmentInfo>,
}

async fn list_segments(rec: Rec, Path(name): Path<String>) -> Response {
    if !valid_path_name(&name) {
        return error(StatusCode::NOT_FOUND, format!("no path named {name:?}"));
    }
    let Some(Extension(rec)) = rec else {
        return error(StatusCode::NOT_FOUND, format!("no recordings of {name:?}"));
    };
    let (r, n) = (rec.clone(), name.clone());
    let Ok(segments) = tokio::task::spawn_blocking(move || {
        r.segments(&n)
            .into_iter()
            .map(|s| {
                let size = std::fs::metadata(&s.file).map_or(0, |m| m.len());
                (s.start, s.index.duration(), size)
            })
            .collect::<Vec<_>>()
    })
    .await
    else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed");
    };
    if segments.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no recordings of {name:?}"));
    }
    Json(SegmentList {
        status: rec.status(&name).unwrap_or_default(),
        segments: segments
            .into_iter()
            .map(|(start, d, size)| {
                let start = start.to_string();
                // Whole milliseconds up, so the span covers the last frame.
                let secs = d.as_nanos().div_ceil(1_000_000) as f64 / 1000.0;
                SegmentInfo {
                    url: format!(
                        "/{name}/playback?start={}&duration={secs}",
                        start.replace('+', "%2B")
                    ),
                    start,
                    duration: secs,
                    size,
                }
            })
            .collect(),
        name,
    })
    .into_response()
}

/// `start` and `duration` of a playback query; `Err` says what is wrong.
pub fn parse_query(query: Option<&str>) -> Result<(jiff::Timestamp, Duration), String> {
    let mut start = None;
    let mut duration = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            // A '+' of an offset sent unencoded arrives as a space.
            "start" => start = Some(v.replace(' ', "+")),
            "duration" => duration = Some(v.into_owned()),
            _ => {}
        }
    }
    let start = start.ok_or("start is missing (RFC 3339, e.g. 2026-01-31T12:00:00Z)")?;
    let start: jiff::Timestamp = start.parse().map_err(|_| {
        format!("start {start:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z")
    })?;
    let duration = duration.ok_or("duration is missing (seconds)")?;
    let secs: f64 = duration
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("duration {duration:?} is not a positive number of seconds"))?;
    let d = Duration::from_secs_f64(secs.min(MAX_PLAYBACK.as_secs_f64()));
    if secs > MAX_PLAYBACK.as_secs_f64() {
        return Err(format!(
            "duration {secs} s is longer than {} s",
            MAX_PLAYBACK.as_secs()
        ));
    }
    Ok((start, d))
}

async fn playback(
    rec: Rec,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !valid_path_name(&path) {
        return plain(StatusCode::NOT_FOUND, format!("no path named {path:?}"));
    }
    let (start, duration) = match parse_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let Some(Extension(rec)) = rec else {
        return plain(StatusCode::NOT_FOUND, "recording is not set up");
    };
    let planned = tokio::task::spawn_blocking(move || rec.plan(&path, start, duration)).await;
    let plan = match planned {
        Ok(Ok(p)) => Arc::new(p),
        Ok(Err(e @ PlanError::NothingRecorded { .. })) => {
            return plain(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "playback failed"),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let len = plan.len;
    let (status, first, last) = match parse_range(range, len) {
        RangeAsk::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeAsk::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last),
        RangeAsk::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let mut resp = Response::new(body(plan, first, last));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let hv = |s: String| header::HeaderValue::from_str(&s).ok();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("video/mp4"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    if let Some(v) = hv((last + 1 - first).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Some(v) = hv(format!("bytes {first}-{last}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// Bytes `[first, last]` of `plan`, read piece by piece on blocking
/// threads (at most [`PIECE`] bytes in memory per response).
fn body(plan: Arc<Plan>, first: u64, last: u64) -> Body {
    struct State {
        plan: Arc<Plan>,
        pos: u64,
        file: Option<(std::path::PathBuf, std::fs::File)>,
        failed: bool,
    }
    let state = State {
        plan,
        pos: first,
        file: None,
        failed: false,
    };
    let stream = futures::stream::unfold(state, move |mut st| async move {
        if st.failed || st.pos > last || st.plan.len == 0 {
            return None;
        }
        let done = tokio::task::spawn_blocking(move || {
            let r = read_piece(&st.plan, st.pos, last, &mut st.file);
            (st, r)
        })
        .await;
        let Ok((mut st, r)) = done else {
            return None;
        };
        match r {
            Ok(bytes) => {
                st.pos += bytes.len() as u64;
                Some((Ok::<Bytes, std::io::Error>(bytes), st))
            }
            Err(e) => {
                // A file deleted or cut under us: end the response early.
                tracing::debug!("playback read failed: {e}");
                st.failed = true;
                Some((Err(e), st))
            }
        }
    });
    Body::from_stream(stream)
}

/// Up to [`PIECE`] bytes of `plan` from `pos` (not past `last`).
fn read_piece(
    plan: &Plan,
    pos: u64,
    last: u64,
    file: &mut Option<(std::path::PathBuf, std::fs::File)>,
) -> std::io::Result<Bytes> {
    let head = plan.head.len() as u64;
    if pos < head {
        let end = head.min(last + 1);
        return Ok(plan.head.slice(pos as usize..end as usize));
    }
    let Some((ci, off)) = plan.locate(pos) else {
        return Err(std::io::Error::other("read past the end"));
    };
    let chunk = &plan.chunks[ci];
    let n = (chunk.len - off).min(last + 1 - pos).min(PIECE as u64) as usize;
    if file.as_ref().is_none_or(|(p, _)| *p != chunk.file) {
        *file = Some((chunk.file.clone(), std::fs::File::open(&chunk.file)?));
    }
    let Some((_, f)) = file.as_mut() else {
        return Err(std::io::Error::other("no file"));
    };
    f.seek(SeekFrom::Start(chunk.offset + off))?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_queries() {
        let (s, d) = parse_query(Some("start=2026-01-31T12:00:00Z&duration=90.5")).unwrap();
        assert_eq!(s.to_string(), "2026-01-31T12:00:00Z");
        assert_eq!(d, Duration::from_millis(90_500));
        // An offset, '+' encoded or not.
        for q in [
            "start=2026-01-31T13:00:00%2B01:00&duration=1",
            "start=2026-01-31T13:00:00+01:00&duration=1",
        ] {
            assert_eq!(
                parse_query(Some(q)).unwrap().0.to_string(),
                "2026-01-31T12:00:00Z"
            );
        }
        for bad in [
            None,
            Some("duration=5"),
            Some("start=yesterday&duration=5"),
            Some("start=2026-01-31T12:00:00Z"),
            Some("start=2026-01-31T12:00:00Z&duration=0"),
            Some("start=2026-01-31T12:00:00Z&duration=-3"),
            Some("start=2026-01-31T12:00:00Z&duration=NaN"),
            Some("start=2026-01-31T12:00:00Z&duration=1e12"),
        ] {
            assert!(parse_query(bad).is_err(), "{bad:?}");
        }
    }
}
