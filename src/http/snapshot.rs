//! `GET /<path>/snapshot.jpg`: the stream's latest keyframe as a JPEG
//! image, for tiles, thumbnails and home-automation dashboards that poll.
//!
//! The keyframe is the first video keyframe of the bus's cached GOP (the
//! newest one the source sent), or the next one within [`START_WAIT`] (an
//! on-demand camera's start timeout if longer: the request starts it). It
//! is decoded off the runtime ([`crate::transcode::snapshot`]) by at most
//! [`MAX_DECODES`] decodes at a time, and the JPEG is kept per stream until
//! a newer keyframe comes, so a wall of tiles polling every second costs
//! one decode per keyframe per stream, not one per request.
//!
//! Status codes, plain-words bodies: `200 image/jpeg`; `404` unknown path;
//! `409` a stream without video; `503` a stream not live or without a
//! keyframe within [`START_WAIT`], a codec this build can't decode (H.265
//! without the `transcode` feature, saying how to build it), or every
//! decoder busy for [`START_WAIT`]; `500` a keyframe that does not decode.
//!
//! Auth: `read` on the path over HTTP (the same as the viewer page).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::auth::{self, Need};
use super::AppState;
use crate::auth::Protocol;
use crate::bus::{Frame, Item, MediaKind, RecvError, Stream, Track, TrackSet};
use crate::egress::hls::manager::not_live_reason;
use crate::transcode::snapshot::{jpeg_of_keyframe, SnapshotError};

/// How long a request waits for a stream's first keyframe, and for a free
/// decoder.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// Keyframes decoded at once, whatever the number of requests: decoding
/// is CPU work the live streams must not wait behind.
pub const MAX_DECODES: usize = 2;
/// Streams whose last snapshot is kept; past this the cache starts over.
const MAX_CACHED: usize = 1024;

/// Decoders and the last JPEG per stream.
struct Snapshots {
    decoders: Semaphore,
    /// Stream name → (which keyframe, its JPEG).
    cache: Mutex<HashMap<String, (KeyframeId, Bytes)>>,
}

/// A keyframe's identity: the track set it was read with and its pts.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyframeId {
    generation: u64,
    pts: i64,
}

/// The route, merged into [`super::router`]. Its static last segment wins
/// over LL-HLS's `/{path}/{file}`.
pub fn routes() -> Router<AppState> {
    let snapshots = Arc::new(Snapshots {
        decoders: Semaphore::new(MAX_DECODES),
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/{path}/snapshot.jpg", get(serve))
        .route_layer(auth::require(Need::Read(Protocol::Http)))
        .layer(Extension(snapshots))
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text + "\n",
    )
        .into_response()
}

async fn serve(
    State(app): State<AppState>,
    Extension(snapshots): Extension<Arc<Snapshots>>,
    Path(path): Path<String>,
) -> Response {
    let Some(stream) = app.registry.get(&path) else {
        return plain(StatusCode::NOT_FOUND, format!("no stream named {path:?}"));
    };
    let (set, keyframe) = match latest_keyframe(&stream).await {
        Ok(found) => found,
        Err(status_why) => return plain(status_why.0, status_why.1),
    };
    let id = KeyframeId {
        generation: set.generation,
        pts: keyframe.pts,
    };
    if let Some(jpeg) = cached(&snapshots, &path, id) {
        return image(jpeg);
    }
    let Ok(Ok(_permit)) = tokio::time::timeout(START_WAIT, snapshots.decoders.acquire()).await
    else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "every snapshot decoder is busy; try again".into(),
        );
    };
    // Another request may have made it while this one waited.
    if let Some(jpeg) = cached(&snapshots, &path, id) {
        return image(jpeg);
    }
    let Some(track) = set.tracks.get(keyframe.track).map(|t| Track::clone(t)) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no track".into());
    };
    let made = tokio::task::spawn_blocking(move || jpeg_of_keyframe(&track, &keyframe)).await;
    match made {
        Ok(Ok(jpeg)) => {
            let jpeg = Bytes::from(jpeg);
            if let Ok(mut cache) = snapshots.cache.lock() {
                if cache.len() >= MAX_CACHED && !cache.contains_key(&path) {
                    cache.clear();
                }
                cache.insert(path, (id, jpeg.clone()));
            }
            image(jpeg)
        }
        Ok(Err(SnapshotError::NoVideo)) => plain(
            StatusCode::CONFLICT,
            format!("stream {path:?} has no video"),
        ),
        Ok(Err(SnapshotError::Unsupported(why))) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
        Ok(Err(SnapshotError::Failed(why))) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no snapshot of {path:?}: {why}"),
        ),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the snapshot decoder failed".into(),
        ),
    }
}

fn cached(snapshots: &Snapshots, path: &str, id: KeyframeId) -> Option<Bytes> {
    let cache = snapshots.cache.lock().ok()?;
    cache
        .get(path)
        .filter(|(have, _)| *have == id)
        .map(|(_, jpeg)| jpeg.clone())
}

fn image(jpeg: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        jpeg,
    )
        .into_response()
}

/// The newest video keyframe of `stream` and the track set it belongs to:
/// the first of the cached GOP, or the first to come within [`START_WAIT`].
/// `Err((status, why))` when there is none.
async fn latest_keyframe(
    stream: &Arc<Stream>,
) -> Result<(Arc<TrackSet>, Frame), (StatusCode, String)> {
    let name = stream.name().to_owned();
    let not_live = |stream: &Stream| {
        not_live_reason(stream)
            .unwrap_or_else(|| format!("stream {name:?} sent no keyframe in time"))
    };
    // Subscribing is demand: it starts an on-demand camera, which has its
    // own start timeout.
    let wait = stream
        .on_demand()
        .map_or(START_WAIT, |od| od.start_timeout.max(START_WAIT));
    let mut sub = stream.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let mut set: Option<Arc<TrackSet>> = None;
    loop {
        let item = match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Ok(item)) => item,
            Ok(Err(RecvError::Closed)) | Err(_) => {
                return Err((StatusCode::SERVICE_UNAVAILABLE, not_live(stream)))
            }
        };
        match item {
            Item::Tracks(s) => {
                if !s.tracks.iter().any(|t| t.kind() == MediaKind::Video) {
                    return Err((
                        StatusCode::CONFLICT,
                        format!("stream {name:?} has no video"),
                    ));
                }
                set = Some(s);
            }
            Item::Frame(f) => {
                let Some(s) = &set else { continue };
                let video = s
                    .tracks
                    .get(f.track)
                    .is_some_and(|t| t.kind() == MediaKind::Video);
                if video && f.keyframe {
                    return Ok((s.clone(), Frame::clone(&f)));
                }
            }
        }
    }
}
