//! `GET /<path>/mjpeg`: an MJPEG stream's images as one endless
//! `multipart/x-mixed-replace` response (what browsers show in an `<img>`
//! and ffmpeg reads as `-f mpjpeg`), for cameras whose video WebRTC and
//! LL-HLS cannot carry.
//!
//! Each part is one complete JFIF image of the stream's first MJPEG track:
//! `--rtspgate-mjpeg`, `Content-Type: image/jpeg`, `Content-Length`, a blank
//! line, the image, CRLF. The response starts at the latest image (the
//! bus's cached GOP is one image) and follows live.
//!
//! A slow viewer drops images, never buffers them: the body is pulled by
//! the connection only when it can write, and each pull sends the newest
//! image queued on the bus, skipping (and counting, [`MjpegParts::skipped`])
//! the older ones; the bus itself is a bounded ring. A connection whose
//! writes make no progress for [`super::serve::WRITE_TIMEOUT`] is closed
//! there. The response ends when the stream ends, its tracks change to
//! ones without MJPEG, or no image comes for [`IDLE_TIMEOUT`].
//!
//! Status codes, plain-words bodies: `404` unknown path; `409` a stream
//! without an MJPEG track (its video goes over WebRTC/HLS); `503` a stream
//! not live within [`START_WAIT`].
//!
//! Auth: `read` on the path over HTTP ([`super::auth`], the same layer as
//! the viewer page); bytes sent count into the stream's `bytes_out`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::auth::{self, Need};
use super::AppState;
use crate::auth::Protocol;
use crate::bus::{Codec, Frame, Item, RecvError, Stream, Subscription, TrackSet};
use crate::egress::hls::manager::not_live_reason;

/// The multipart boundary (RFC 2046 §5.1.1).
pub const BOUNDARY: &str = "rtspgate-mjpeg";
/// How long a request waits for a stream that has no tracks yet.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// The response ends when no image came for this long (the camera went
/// away); the `<img>` or player reconnects.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The route, merged into [`super::router`]. Its static last segment wins
/// over LL-HLS's `/{path}/{file}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{path}/mjpeg", get(serve))
        .route_layer(auth::require(Need::Read(Protocol::Http)))
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

/// Index of the first MJPEG track of `set`.
pub fn mjpeg_track(set: &TrackSet) -> Option<usize> {
    set.tracks.iter().position(|t| t.codec == Codec::Jpeg)
}

async fn serve(State(app): State<AppState>, Path(path): Path<String>) -> Response {
    let Some(stream) = app.registry.get(&path) else {
        return plain(StatusCode::NOT_FOUND, format!("no stream named {path:?}"));
    };
    let set = match stream.wait_ready(START_WAIT).await {
        Ok(set) => set,
        Err(e) => {
            let why = not_live_reason(&stream).unwrap_or(e);
            return plain(StatusCode::SERVICE_UNAVAILABLE, why);
        }
    };
    if mjpeg_track(&set).is_none() {
        let codecs: Vec<&str> = set.tracks.iter().map(|t| t.codec.name()).collect();
        return plain(
            StatusCode::CONFLICT,
            format!(
                "stream {path:?} has no MJPEG track (it has {}): watch it at /{path}/ \
                 (WebRTC or LL-HLS)",
                if codecs.is_empty() {
                    "no tracks".to_owned()
                } else {
                    codecs.join(" + ")
                }
            ),
        );
    }
    let parts = MjpegParts::new(stream);
    let body = futures::stream::unfold(parts, |mut parts| async move {
        let part = parts.next_part().await?;
        Some((Ok::<_, std::convert::Infallible>(part), parts))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-cache, no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The parts of one viewer's response, read from the bus: always the
/// newest image of the stream's MJPEG track.
pub struct MjpegParts {
    stream: Arc<Stream>,
    sub: Subscription,
    /// The MJPEG track's index in the current track set; `None` before the
    /// first track set or after one without MJPEG.
    track: Option<usize>,
    /// Images not sent because a newer one was ready (or the bus skipped
    /// them for this slow reader).
    skipped: u64,
    /// The image's bytes when its header part was just sent.
    pending: Option<Bytes>,
    /// The CRLF that ends an image's part is owed.
    owe_crlf: bool,
}

impl MjpegParts {
    /// A reader of `stream` from its cached image on.
    pub fn new(stream: Arc<Stream>) -> MjpegParts {
        let sub = stream.subscribe();
        MjpegParts {
            stream,
            sub,
            track: None,
            skipped: 0,
            pending: None,
            owe_crlf: false,
        }
    }

    /// Images skipped so far (a slow viewer).
    pub fn skipped(&self) -> u64 {
        self.skipped + self.sub.lagged()
    }

    /// The next piece of the body: a part's headers, its image, or the CRLF
    /// after it; `None` at the end (stream closed, no MJPEG any more, or
    /// idle for [`IDLE_TIMEOUT`]).
    pub async fn next_part(&mut self) -> Option<Bytes> {
        let piece = if let Some(image) = self.pending.take() {
            self.owe_crlf = true;
            image
        } else if std::mem::take(&mut self.owe_crlf) {
            Bytes::from_static(b"\r\n")
        } else {
            let image = self.next_image().await?;
            let head = format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                image.data.len()
            );
            self.pending = Some(image.data.clone());
            Bytes::from(head)
        };
        self.stream
            .stats
            .bytes_out
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        Some(piece)
    }

    /// The newest image ready, waiting up to [`IDLE_TIMEOUT`] for one.
    async fn next_image(&mut self) -> Option<Arc<Frame>> {
        loop {
            let item = match tokio::time::timeout(IDLE_TIMEOUT, self.sub.recv()).await {
                Ok(Ok(item)) => item,
                Ok(Err(RecvError::Closed)) | Err(_) => return None,
            };
            let mut newest = self.accept(item)?;
            // Latest image wins: take what else queued up meanwhile.
            loop {
                match self.sub.try_recv() {
                    Ok(Some(item)) => {
                        if let Some(f) = self.accept(item)? {
                            if newest.is_some() {
                                self.skipped += 1;
                            }
                            newest = Some(f);
                        }
                    }
                    Ok(None) => break,
                    Err(RecvError::Closed) => return None,
                }
            }
            if newest.is_some() {
                return newest;
            }
        }
    }

    /// What one bus item means here: `Some(Some(frame))` an image of the
    /// MJPEG track, `Some(None)` nothing to send, `None` the end (the
    /// tracks have no MJPEG any more).
    fn accept(&mut self, item: Item) -> Option<Option<Arc<Frame>>> {
        match item {
            Item::Tracks(set) => {
                self.track = Some(mjpeg_track(&set)?);
                Some(None)
            }
            Item::Frame(f) => Some((Some(f.track) == self.track).then_some(f)),
        }
    }
}

#[cfg(test)]
mod tests;
