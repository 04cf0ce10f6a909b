//! The HTTP server (axum): REST API, `/metrics`, the viewer page, LL-HLS
//! ([`hls`]), WHEP ([`whep`]), WHIP ([`whip`]) and MJPEG over HTTP ([`mjpeg`]).

pub mod api;
pub mod auth;
pub mod hls;
pub mod metrics;
pub mod mjpeg;
pub mod recordings;
pub mod serve;
pub mod snapshot;
pub mod web;
pub mod whep;
pub mod whip;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::auth::Authenticator;
use crate::bus::{MediaKind, Registry, Sessions, Stream, StreamState};
use crate::egress::hls::manager::HlsManager;
use crate::egress::rtsp::RtspEgress;
use crate::egress::webrtc::WebRtcEngine;
use crate::egress::Egress;
use crate::paths::PathManager;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Reader sessions of every egress.
    pub sessions: Arc<Sessions>,
    /// Configured paths (add/change/remove at run time).
    pub paths: Arc<PathManager>,
    /// `rtsp://host:port` prefix for the URLs shown in the API.
    pub rtsp_base: String,
    /// The LL-HLS muxers, one per stream being watched.
    pub hls: Arc<HlsManager>,
    /// The WebRTC (WHEP) engine; `None` serves 503 on the WHEP endpoints.
    pub webrtc: Option<Arc<WebRtcEngine>>,
    /// Who may do what; asked by the auth layer in front of every route.
    pub auth: Arc<Authenticator>,
    /// `/api/*` settings (allowed host names, `max_paths`).
    pub api: api::ApiSettings,
}

impl AppState {
    /// The running egresses, for what the API says about each stream.
    fn egresses(&self) -> Vec<&dyn Egress> {
        let mut v: Vec<&dyn Egress> = vec![&RtspEgress];
        if let Some(w) = &self.webrtc {
            v.push(&**w);
        }
        v.push(&*self.hls);
        v
    }
}

/// The HTTP router. Every sub-router declares what its routes need with
/// [`auth::require`]; the authenticator they ask rides in the request's
/// extensions. Requests must carry `ConnectInfo<SocketAddr>` (see
/// [`serve`]).
pub fn router(state: AppState) -> Router {
    let authenticator = state.auth.clone();
    Router::new()
        .merge(
            Router::new()
                .route("/metrics", get(metrics::handler))
                .route_layer(auth::require(auth::Need::Metrics)),
        )
        .merge(api::routes(state.api.clone()))
        .merge(web::routes())
        .merge(hls::routes(&state))
        .merge(mjpeg::routes())
        .merge(snapshot::routes())
        .merge(recordings::routes())
        .merge(whep::routes())
        .merge(whip::routes())
        .layer(axum::Extension(authenticator))
        .with_state(state)
}

/// [`router`] for tests that send requests with `oneshot`: a request
/// without a peer address comes from 127.0.0.1 (as [`serve`] would say of
/// a loopback client); one that carries `ConnectInfo` keeps its own.
#[cfg(test)]
pub(crate) fn test_router(state: AppState) -> Router {
    use axum::extract::{ConnectInfo, Request};
    router(state).layer(axum::middleware::map_request(
        |mut req: Request| async move {
            if req
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .is_none()
            {
                let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            req
        },
    ))
}

/// `GET /api/v1/streams` body.
#[derive(Serialize)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}

/// One stream as shown by the API.
#[derive(Serialize)]
pub struct StreamInfo {
    pub name: String,
    /// Source URL, credentials redacted.
    pub source: String,
    /// `waiting`, `live`, `reconnecting` or `failed`.
    pub state: &'static str,
    /// Last error in plain words (reconnecting/failed), else null.
    pub error: Option<String>,
    /// Transport used to pull the source (`tcp`/`udp`), once connected.
    pub transport: Option<String>,
    /// Something the operator should know, e.g. why UDP was abandoned.
    pub notice: Option<String>,
    pub tracks: Vec<TrackInfo>,
    /// Sessions per egress (`rtsp`, `webrtc`, `hls`) from the session
    /// registry: RTSP readers playing, WHEP sessions (negotiating or
    /// connected), LL-HLS muxers running (one however many HLS viewers).
    pub readers: BTreeMap<&'static str, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub packets_lost: u64,
    pub reconnects: u64,
    /// Where readers find it.
    pub urls: Urls,
    /// Per egress (`"rtsp": {...}`, `"webrtc": {...}`, `"hls": {...}`).
    #[serde(flatten)]
    pub egress: BTreeMap<&'static str, EgressNotes>,
}

#[derive(Serialize)]
pub struct Urls {
    pub rtsp: String,
    /// WHEP endpoint, relative to the HTTP server.
    pub whep: String,
    /// `multipart/x-mixed-replace` MJPEG endpoint ([`mjpeg`]), relative to
    /// the HTTP server; only for a stream with an MJPEG track, whose video
    /// WebRTC and HLS don't carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mjpeg: Option<String>,
}

/// What one egress gives of a stream.
#[derive(Serialize)]
pub struct EgressNotes {
    /// Plain-words notes: tracks not sent and why (e.g. AAC over WebRTC),
    /// and problems seen while sending (e.g. B-frames).
    pub notes: Vec<String>,
}

/// One track as shown by the API.
#[derive(Serialize)]
pub struct TrackInfo {
    pub kind: MediaKind,
    /// `h264`, `h265`, `mjpeg`, `aac`, `pcma`, `pcmu`, `opus`.
    pub codec: String,
    /// RFC 6381 codec string when known.
    pub codec_string: Option<String>,
    /// Hz.
    pub clock_rate: u32,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second, from the SPS VUI or the SDP.
    pub fps: Option<f64>,
    pub channels: Option<u16>,
    /// Per egress that leaves the track out, why: e.g. `"hls": "not in
    /// HLS: G.711 (pcma) can't go into fMP4 for browsers: ..."`; no key for
    /// an egress that carries it.
    #[serde(flatten)]
    pub not_carried: BTreeMap<&'static str, String>,
}

fn tracks_of(s: &Stream) -> Option<Vec<Arc<crate::bus::Track>>> {
    s.tracks().map(|set| set.tracks.clone())
}

/// Why a path's H.265 won't be transcoded although its settings ask for it
/// (`transcode = "h264"`, `rtsp_codec = "h264"`): this binary was built
/// without the `transcode` feature.
fn transcode_notice(
    s: &Stream,
    tracks: Option<&[Arc<crate::bus::Track>]>,
    app: &AppState,
) -> Option<String> {
    use crate::config::rendition::{Rendition, RtspCodec, TranscodeMode};
    let (base, r) = Rendition::parse(s.name())?;
    let settings = app.registry.transcode_settings(base);
    let asks = settings.mode == TranscodeMode::H264 || settings.rtsp_codec == RtspCodec::H264;
    let h265 = tracks?
        .iter()
        .any(|t| matches!(t.codec, crate::bus::Codec::H265 { .. }));
    (r.is_none() && asks && h265 && !crate::transcode::video::AVAILABLE).then(|| {
        format!(
            "H.265 is not transcoded to H.264 as this path's settings ask: {}",
            crate::transcode::video::TranscodeError::NotBuilt
        )
    })
}

fn stream_info(s: &Stream, app: &AppState) -> StreamInfo {
    let rtsp_base = &app.rtsp_base;
    let (state, error) = match s.state() {
        StreamState::Idle => ("idle", None),
        StreamState::Waiting => ("waiting", None),
        StreamState::Live => ("live", None),
        StreamState::Reconnecting { error } => ("reconnecting", Some(error)),
        StreamState::Failed { reason } => ("failed", Some(reason)),
    };
    let ingest = s.ingest_info();
    let egresses = app.egresses();
    let set = s.tracks();
    let tracks = set.as_ref().map_or(&[][..], |set| &set.tracks[..]);
    let carriage: Vec<Vec<Result<(), String>>> =
        egresses.iter().map(|e| e.carriage(tracks)).collect();
    let tracks = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| TrackInfo {
            kind: t.kind(),
            codec: t.codec.name().to_owned(),
            codec_string: t.rfc6381.clone(),
            clock_rate: t.clock_rate,
            width: t.dimensions.map(|d| d.0),
            height: t.dimensions.map(|d| d.1),
            fps: t.frame_rate,
            channels: t.codec.channels(),
            not_carried: egresses
                .iter()
                .zip(&carriage)
                .filter_map(|(e, c)| match c.get(i) {
                    Some(Err(why)) => Some((
                        e.protocol().as_str(),
                        format!("not in {}: {why}", e.label()),
                    )),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let egress = egresses
        .iter()
        .zip(&carriage)
        .map(|(e, c)| {
            let mut notes: Vec<String> = c
                .iter()
                .zip(set.iter().flat_map(|set| set.tracks.iter()))
                .enumerate()
                .filter_map(|(i, (r, t))| {
                    r.as_ref()
                        .err()
                        .map(|why| format!("track {i} ({}) not sent: {why}", t.codec.name()))
                })
                .collect();
            notes.extend(e.notes(s));
            (e.protocol().as_str(), EgressNotes { notes })
        })
        .collect();
    let readers = egresses
        .iter()
        .map(|e| {
            let n = app.sessions.count(e.protocol(), s.name());
            (e.protocol().as_str(), n as u64)
        })
        .collect();
    let st = &s.stats;
    StreamInfo {
        name: s.name().to_owned(),
        source: s.source().to_owned(),
        state,
        error,
        transport: ingest.transport,
        notice: match (
            ingest.notice,
            transcode_notice(s, tracks_of(s).as_deref(), app),
        ) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        },
        tracks,
        readers,
        bytes_in: st.bytes_in.load(Ordering::Relaxed),
        bytes_out: st.bytes_out.load(Ordering::Relaxed),
        frames_in: st.frames_in.load(Ordering::Relaxed),
        packets_lost: st.packets_lost.load(Ordering::Relaxed),
        reconnects: st.reconnects.load(Ordering::Relaxed),
        urls: Urls {
            rtsp: format!("{rtsp_base}/{}", s.name()),
            whep: format!("/{}/whep", s.name()),
            mjpeg: set
                .as_deref()
                .and_then(mjpeg::mjpeg_track)
                .map(|_| format!("/{}/mjpeg", s.name())),
        },
        egress,
    }
}

async fn list_streams(State(app): State<AppState>) -> Json<StreamList> {
    Json(StreamList {
        streams: app
            .registry
            .list()
            .iter()
            .map(|s| stream_info(s, &app))
            .collect(),
    })
}

async fn get_stream(
    State(app): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<StreamInfo>, (axum::http::StatusCode, Json<serde_json::Value>)> {
    match app.registry.get(&name) {
        Some(s) => Ok(Json(stream_info(&s, &app))),
        None => Err((
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no stream named {name:?}") })),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let registry = Registry::new();
        let s = Stream::new("cam", "rtsp://***@10.0.0.1/s");
        s.set_state(StreamState::Reconnecting {
            error: "cannot connect to the camera: connection refused".into(),
        });
        registry.insert(s);
        app_of(registry)
    }

    /// The router over `registry`, no WebRTC, default auth and API settings.
    fn app_of(registry: Arc<Registry>) -> Router {
        test_router(AppState {
            hls: HlsManager::new(registry.clone(), Default::default()),
            paths: PathManager::new(registry.clone(), None),
            sessions: Sessions::new(),
            registry,
            rtsp_base: "rtsp://127.0.0.1:8554".into(),
            webrtc: None,
            auth: crate::auth::Authenticator::new(Default::default()),
            api: Default::default(),
        })
    }

    /// `GET path` on `app`, its body as JSON.
    async fn get_json(app: Router, path: &str) -> serde_json::Value {
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_path_asking_for_h264_says_when_this_binary_cannot_transcode() {
        use crate::config::rendition::{TranscodeMode, TranscodeSettings};
        use crate::egress::hls::testutil::{h265_fixture, h265_track};
        let registry = Registry::new();
        registry.set_maker(crate::transcode::Maker::new(Box::new(|_| {
            Some(TranscodeSettings {
                mode: TranscodeMode::H264,
                ..Default::default()
            })
        })));
        let s = Stream::new("cam", "rtsp://10.0.0.1/s");
        s.set_tracks(vec![h265_track(&h265_fixture())]);
        s.set_state(StreamState::Live);
        registry.insert(s);
        let v = get_json(app_of(registry), "/api/v1/streams/cam").await;
        let notice = v["notice"].as_str().unwrap_or_default();
        if crate::transcode::video::AVAILABLE {
            assert!(v["notice"].is_null(), "{v}");
        } else {
            assert!(notice.contains("--features transcode"), "{v}");
        }
    }

    #[tokio::test]
    async fn lists_streams_with_state_and_error() {
        let resp = app()
            .oneshot(Request::get("/api/v1/streams").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let s = &v["streams"][0];
        assert_eq!(s["name"], "cam");
        assert_eq!(s["state"], "reconnecting");
        assert!(s["error"].as_str().unwrap().contains("connection refused"));
        assert_eq!(s["urls"]["rtsp"], "rtsp://127.0.0.1:8554/cam");
        assert_eq!(s["source"], "rtsp://***@10.0.0.1/s");
    }

    /// Every running egress says what it carries of each track and counts
    /// its readers; one without an engine (WebRTC here) is not listed.
    #[tokio::test]
    async fn stream_info_loops_over_the_egresses() {
        use crate::egress::hls::testutil::{h264_fixture, h264_track, pcma_track};
        let registry = Registry::new();
        let s = Stream::new("cam", "rtsp://10.0.0.1/s");
        s.set_tracks(vec![h264_track(&h264_fixture()), pcma_track()]);
        s.set_state(StreamState::Live);
        registry.insert(s);
        let v = get_json(app_of(registry), "/api/v1/streams/cam").await;
        assert_eq!(
            v["readers"],
            serde_json::json!({"rtsp": 0, "hls": 0}),
            "{v}"
        );
        assert!(v.get("webrtc").is_none(), "{v}");
        assert_eq!(v["rtsp"]["notes"], serde_json::json!([]), "{v}");
        let t = &v["tracks"];
        assert!(
            t[0].get("hls").is_none() && t[0].get("rtsp").is_none(),
            "{v}"
        );
        assert!(t[1].get("rtsp").is_none(), "{v}");
        let why = t[1]["hls"].as_str().unwrap();
        assert!(why.starts_with("not in HLS: G.711"), "{why}");
        let notes = v["hls"]["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 1, "{v}");
        assert!(
            notes[0]
                .as_str()
                .unwrap()
                .starts_with("track 1 (pcma) not sent: G.711"),
            "{v}"
        );
    }

    /// An MJPEG stream: its URL, and WebRTC and HLS say they leave it out
    /// and where to watch it instead.
    #[tokio::test]
    async fn an_mjpeg_stream_points_to_its_mjpeg_url() {
        let registry = Registry::new();
        let s = Stream::new("cam", "rtsp://10.0.0.1/s");
        s.set_tracks(vec![std::sync::Arc::new(crate::bus::Track::new(
            crate::bus::Codec::Jpeg,
            90_000,
        ))]);
        s.set_state(StreamState::Live);
        registry.insert(s);
        let v = get_json(app_of(registry), "/api/v1/streams/cam").await;
        assert_eq!(v["urls"]["mjpeg"], "/cam/mjpeg", "{v}");
        assert_eq!(v["tracks"][0]["codec"], "mjpeg", "{v}");
        assert!(v["tracks"][0].get("rtsp").is_none(), "{v}");
        let why = v["tracks"][0]["hls"].as_str().unwrap();
        assert!(
            why.starts_with("not in HLS: MJPEG is not carried over HLS") && why.contains("/mjpeg"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn unknown_stream_is_404() {
        let resp = app()
            .oneshot(
                Request::get("/api/v1/streams/nope")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
}
