//! WHEP handlers through the router with `oneshot`: status codes, headers,
//! bad offers. The engine is real (bound to 127.0.0.1, ephemeral port); no
//! peer ever connects.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::bus::{Codec, Protocol, Registry, Sessions, Stream, StreamState, Track};
use crate::config::{IceServer, WebRtcSettings};
use crate::egress::hls::manager::HlsManager;
use crate::egress::webrtc::WebRtcEngine;
use crate::http::{test_router, AppState};
use crate::paths::PathManager;

const OFFER: &str = include_str!("../../egress/webrtc/testdata/chrome_offer.sdp");

fn h264_track() -> Arc<Track> {
    Arc::new(Track {
        rfc6381: Some("avc1.64001F".into()),
        dimensions: Some((640, 360)),
        frame_rate: Some(25.0),
        ..Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f, 0xac]),
                pps: Bytes::from_static(&[0x68, 0xeb, 0xe3]),
            },
            90000,
        )
    })
}

fn aac_track() -> Arc<Track> {
    Arc::new(Track::new(
        Codec::Aac {
            config: Bytes::from_static(&[0x11, 0x90]),
            channels: 2,
        },
        48000,
    ))
}

struct Fixture {
    app: axum::Router,
    engine: Arc<WebRtcEngine>,
    sessions: Arc<Sessions>,
}

impl Fixture {
    fn webrtc_sessions(&self) -> usize {
        self.sessions
            .list()
            .iter()
            .filter(|s| s.protocol == Protocol::WebRtc)
            .count()
    }

    /// Waits (at most 1 s) for the socket task to drop every session.
    async fn until_no_sessions(&self) {
        for _ in 0..100 {
            if self.webrtc_sessions() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("sessions left: {:?}", self.sessions.list());
    }
}

async fn fixture() -> Fixture {
    fixture_full(
        WebRtcSettings::default().max_sessions,
        1000,
        Default::default(),
    )
    .await
}

async fn fixture_with(auth: crate::config::auth::AuthSettings) -> Fixture {
    fixture_full(WebRtcSettings::default().max_sessions, 1000, auth).await
}

/// The fixture with `webrtc_max_sessions` and `webrtc_post_rate` set.
async fn fixture_limits(max_sessions: usize, post_rate: u32) -> Fixture {
    fixture_full(max_sessions, post_rate, Default::default()).await
}

async fn fixture_full(
    max_sessions: usize,
    post_rate: u32,
    auth: crate::config::auth::AuthSettings,
) -> Fixture {
    let registry = Registry::new();
    let cam = Stream::new("cam", "rtsp://10.0.0.1/s");
    cam.set_tracks(vec![h264_track(), aac_track()]);
    cam.set_state(StreamState::Live);
    registry.insert(cam);
    let down = Stream::new("down", "rtsp://10.0.0.2/s");
    down.set_state(StreamState::Reconnecting {
        error: "cannot connect to the camera: connection refused".into(),
    });
    registry.insert(down);
    let mjpeg = Stream::new("mjpeg", "rtsp://10.0.0.3/s");
    mjpeg.set_tracks(vec![Arc::new(Track::new(Codec::Jpeg, 90000))]);
    mjpeg.set_state(StreamState::Live);
    registry.insert(mjpeg);
    let sessions = Sessions::new();
    let engine = WebRtcEngine::start(
        IpAddr::from([127, 0, 0, 1]),
        WebRtcSettings {
            port: 0,
            additional_hosts: vec!["203.0.113.9".into()],
            ice_servers: vec![
                IceServer {
                    url: "stun:stun.example.com:3478".into(),
                    username: None,
                    credential: None,
                },
                IceServer {
                    url: "turn:turn.example.com:3478".into(),
                    username: Some("u".into()),
                    credential: Some("p".into()),
                },
            ],
            max_sessions,
            post_rate,
        },
        sessions.clone(),
    )
    .await
    .unwrap();
    let app = test_router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: sessions.clone(),
        registry,
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: Some(engine.clone()),
        auth: crate::auth::Authenticator::new(auth),
        api: Default::default(),
    });
    Fixture {
        app,
        engine,
        sessions,
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> (Response<Body>, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (Response::from_parts(parts, Body::empty()), text)
}

fn post(path: &str, ctype: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", ctype)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn header<'a>(r: &'a Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// POSTs the Chromium offer to /cam/whep; returns (location, etag).
async fn create(f: &Fixture) -> (String, String) {
    let (r, body) = send(&f.app, post("/cam/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    (
        header(&r, "location").unwrap().to_owned(),
        header(&r, "etag").unwrap().to_owned(),
    )
}

#[tokio::test]
async fn post_creates_a_session_with_answer_and_headers() {
    let f = fixture().await;
    let (r, body) = send(
        &f.app,
        post("/cam/whep", "application/sdp; charset=utf-8", OFFER),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    assert_eq!(header(&r, "content-type"), Some("application/sdp"));
    let loc = header(&r, "location").unwrap();
    let id = loc.strip_prefix("/cam/whep/").expect(loc);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let etag = header(&r, "etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    assert_eq!(
        header(&r, "accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert!(header(&r, "access-control-expose-headers")
        .unwrap()
        .contains("Location"));
    let links: Vec<&str> = r
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            "<stun:stun.example.com:3478>; rel=\"ice-server\"",
            "<turn:turn.example.com:3478>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"",
        ]
    );
    // The answer: H.264 as f4001f (Chromium's only High-capable entry),
    // ICE-lite, host candidates on the engine's port, AAC explained.
    assert!(body.starts_with("v=0\r\n"), "{body}");
    assert!(body.contains("a=ice-lite"), "{body}");
    assert!(body.contains("profile-level-id=f4001f"), "{body}");
    let port = f.engine.local_addr().port();
    assert!(
        body.contains(&format!("127.0.0.1 {port} typ host")),
        "{body}"
    );
    assert!(
        body.contains(&format!("203.0.113.9 {port} typ host")),
        "{body}"
    );
    assert!(body.contains("tcptype passive"), "{body}");
    assert!(
        body.contains("a=rtspgate-info:track 1 (aac) not sent"),
        "{body}"
    );

    // The API shows the session and the reader count.
    let (r, list) = send(
        &f.app,
        Request::get("/api/v1/webrtc/sessions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["sessions"][0]["id"], id);
    assert_eq!(v["sessions"][0]["path"], "cam");
    assert_eq!(v["sessions"][0]["state"], "connecting");
    assert_eq!(v["sessions"][0]["video_codec"], "h264");
    assert!(v["sessions"][0]["audio_codec"].is_null());
    assert_eq!(v["sessions"][0]["packets_sent"], 0);
    let (_, streams) = send(
        &f.app,
        Request::get("/api/v1/streams/cam")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let s: serde_json::Value = serde_json::from_str(&streams).unwrap();
    assert_eq!(s["readers"]["webrtc"], 1);
    assert_eq!(s["urls"]["whep"], "/cam/whep");
    assert!(s["webrtc"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("AAC is not a WebRTC codec"));
}

#[tokio::test]
async fn post_errors() {
    let f = fixture().await;
    // Wrong content type: 415 and what to send instead.
    let (r, _) = send(&f.app, post("/cam/whep", "text/plain", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(header(&r, "accept-post"), Some("application/sdp"));
    let (r, _) = send(
        &f.app,
        Request::post("/cam/whep").body(Body::from(OFFER)).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Unknown path.
    let (r, body) = send(&f.app, post("/nope/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body.contains("nope"), "{body}");
    // Unparsable offers.
    for bad in ["hello", "v=0\r\ns=-\r\n", "v=0\r\nm=video x\r\n"] {
        let (r, body) = send(&f.app, post("/cam/whep", "application/sdp", bad)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
    // Parsable by us, rejected by str0m (no DTLS fingerprint).
    let no_fp: String = OFFER
        .split("\r\n")
        .filter(|l| !l.starts_with("a=fingerprint"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let (r, body) = send(&f.app, post("/cam/whep", "application/sdp", &no_fp)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    // Not live: 503 with the reason.
    let (r, body) = send(&f.app, post("/down/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("connection refused"), "{body}");
    // Nothing sendable: the offer receives VP8 video only.
    let vp8_only: String = OFFER
        .split("\r\n")
        .filter(|l| !l.contains("H264") && !l.starts_with("m=audio"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let vp8_only = vp8_only.split("m=audio").next().unwrap().to_owned();
    let (r, body) = send(&f.app, post("/cam/whep", "application/sdp", &vp8_only)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("the stream has h264 + aac"), "{body}");
    // MJPEG only: nothing any offer could receive, and where to watch it.
    let (r, body) = send(&f.app, post("/mjpeg/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("no track WebRTC can carry: MJPEG is not carried over WebRTC")
            && body.contains("/mjpeg"),
        "{body}"
    );
    // GET on the endpoint is not a WHEP method.
    let (r, _) = send(
        &f.app,
        Request::get("/cam/whep").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.webrtc_sessions(), 0);
}

#[tokio::test]
async fn patch_trickles_candidates_and_refuses_restarts() {
    let f = fixture().await;
    let (loc, etag) = create(&f).await;
    let frag = "a=ice-ufrag:Qx7w\r\na=ice-pwd:4ZcT7PjNzCqO9fSsBoP0QfJk\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\na=candidate:2 1 udp 2122260223 1c9e6d2b-4a8e-4a63-bd77-8d2f7ad70f13.local 50001 typ host\r\na=end-of-candidates\r\n";
    let patch = |body: &str, ctype: &str, if_match: Option<&str>| {
        let mut b = Request::patch(loc.as_str()).header("content-type", ctype);
        if let Some(m) = if_match {
            b = b.header("if-match", m);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    };
    let (r, body) = send(
        &f.app,
        patch(frag, "application/trickle-ice-sdpfrag", Some(&etag)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{body}");
    let (r, _) = send(&f.app, patch(frag, "application/trickle-ice-sdpfrag", None)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (r, _) = send(&f.app, patch(frag, "application/sdp", Some(&etag))).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (r, _) = send(
        &f.app,
        patch(frag, "application/trickle-ice-sdpfrag", Some("\"other\"")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let (r, body) = send(
        &f.app,
        patch(frag, "application/trickle-ice-sdpfrag", Some("*")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("ICE restarts are not supported"), "{body}");
    let restart = frag.replace("ice-ufrag:Qx7w", "ice-ufrag:NEW1");
    let (r, _) = send(
        &f.app,
        patch(&restart, "application/trickle-ice-sdpfrag", None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (r, _) = send(
        &f.app,
        patch(
            "a=candidate:garbage\r\n",
            "application/trickle-ice-sdpfrag",
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (r, _) = send(
        &f.app,
        patch("not a fragment", "application/trickle-ice-sdpfrag", None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Unknown session id, malformed id, or the right id under another path.
    let unknown = format!("/cam/whep/{}", "0".repeat(32));
    let (r, _) = send(
        &f.app,
        Request::patch(unknown.as_str())
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(Body::from(frag))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (r, _) = send(
        &f.app,
        Request::patch("/cam/whep/xyz")
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(Body::from(frag))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let other = loc.replace("/cam/", "/down/");
    let (r, _) = send(
        &f.app,
        Request::patch(other.as_str())
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(Body::from(frag))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_ends_the_session() {
    let f = fixture().await;
    let (loc, _) = create(&f).await;
    assert_eq!(f.sessions.count(Protocol::WebRtc, "cam"), 1);
    let (r, _) = send(
        &f.app,
        Request::delete(loc.as_str()).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    f.until_no_sessions().await;
    assert_eq!(f.sessions.count(Protocol::WebRtc, "cam"), 0);
    let (r, _) = send(
        &f.app,
        Request::delete(loc.as_str()).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (r, _) = send(
        &f.app,
        Request::delete("/cam/whep/1234")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn options_is_a_cors_preflight() {
    let f = fixture().await;
    let (r, _) = send(
        &f.app,
        Request::options("/cam/whep")
            .header("origin", "https://player.example")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "accept-post"), Some("application/sdp"));
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert!(header(&r, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(header(&r, "access-control-allow-headers")
        .unwrap()
        .contains("Content-Type"));
    assert_eq!(r.headers().get_all("link").iter().count(), 2);
    let (r, _) = send(
        &f.app,
        Request::options(format!("/cam/whep/{}", "a".repeat(32)))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(header(&r, "access-control-allow-methods")
        .unwrap()
        .contains("DELETE"));
}

#[tokio::test]
async fn without_an_engine_whep_is_503() {
    let registry = Registry::new();
    let app = test_router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: Sessions::new(),
        registry,
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: None,
        auth: crate::auth::Authenticator::new(Default::default()),
        api: Default::default(),
    });
    let (r, body) = send(&app, post("/cam/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not enabled"), "{body}");
}

#[tokio::test]
async fn sessions_join_the_common_list_and_can_be_kicked() {
    let f = fixture().await;
    let (loc, _) = create(&f).await;
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let (r, body) = send(
        &f.app,
        Request::get("/api/v1/sessions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = v
        .as_array()
        .or_else(|| v["sessions"].as_array())
        .cloned()
        .unwrap_or_default();
    let entry = list
        .iter()
        .find(|s| s["id"] == format!("webrtc-{id}"))
        .unwrap_or_else(|| panic!("not in {body}"));
    assert_eq!(entry["protocol"], "webrtc");
    assert_eq!(entry["path"], "cam");
    assert!(entry["user"].is_null());
    assert_eq!(entry["detail"]["state"], "connecting");
    assert_eq!(entry["detail"]["video_codec"], "h264");
    let kick = format!("/api/v1/sessions/webrtc-{id}");
    let (r, body) = send(
        &f.app,
        Request::delete(kick.as_str()).body(Body::empty()).unwrap(),
    )
    .await;
    assert!(r.status().is_success(), "{} {body}", r.status());
    // The driver ends the session, which drops its entry.
    f.until_no_sessions().await;
    let (_, body) = send(
        &f.app,
        Request::get("/api/v1/sessions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(!body.contains(&id), "{body}");
}

/// The WebRTC view is the registry's WebRTC entries, flat: detail fields
/// at the top, the live detail read at request time, other protocols left out.
#[tokio::test]
async fn webrtc_view_is_a_filtered_view_of_the_registry() {
    use crate::bus::sessions::{HlsDetail, WebRtcDetail};
    use crate::bus::{Detail, DetailSource, NewSession};
    use std::sync::Mutex;

    struct Viewer(Mutex<WebRtcDetail>);
    impl DetailSource for Viewer {
        fn detail(&self) -> Detail {
            Detail::WebRtc(Box::new(self.0.lock().unwrap().clone()))
        }
    }

    let registry = Registry::new();
    let sessions = Sessions::new();
    let app = test_router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: sessions.clone(),
        registry,
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: None,
        auth: crate::auth::Authenticator::new(Default::default()),
        api: Default::default(),
    });
    let viewer = Arc::new(Viewer(Mutex::new(WebRtcDetail {
        state: "connecting",
        video_codec: Some("h264".into()),
        ..WebRtcDetail::default()
    })));
    let id = "0123456789abcdef0123456789abcdef";
    let h = sessions.register(
        NewSession {
            id,
            path: "cam",
            ..NewSession::default()
        },
        viewer.clone(),
    );
    let _hls = sessions.register(
        NewSession {
            id: "cam-1",
            path: "cam",
            ..NewSession::default()
        },
        Arc::new(Detail::Hls(HlsDetail {
            first_sequence: 1,
            part_ms: 200,
            segment_ms: 1000,
        })),
    );
    h.add_bytes(5000);
    {
        let mut d = viewer.0.lock().unwrap();
        d.state = "connected";
        d.rtt_ms = Some(3.5);
        d.loss = Some(0.25);
        d.transport = Some("udp");
        d.remote = Some("10.0.0.2:50000".parse().unwrap());
    }
    let get = |uri: &'static str| {
        let app = app.clone();
        async move {
            let (r, body) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
            assert_eq!(r.status(), StatusCode::OK);
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let v = get("/api/v1/webrtc/sessions").await;
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let s = &list[0];
    assert_eq!(s["id"], id);
    assert_eq!(s["path"], "cam");
    assert_eq!(s["state"], "connected");
    assert_eq!(s["rtt_ms"], 3.5);
    assert_eq!(s["loss"], 0.25);
    assert_eq!(s["transport"], "udp");
    assert_eq!(s["remote"], "10.0.0.2:50000");
    assert_eq!(s["bytes_sent"], 5000);
    assert_eq!(s["video_codec"], "h264");
    assert!(s["age_s"].as_f64().is_some());
    assert_eq!(v["dropped_packets"], 0);
    // The common list has both, the WebRTC one under its prefixed id.
    let all = get("/api/v1/sessions").await;
    let ids: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&format!("webrtc-{id}").as_str()), "{all}");
    assert!(ids.contains(&"hls-cam-1"), "{all}");
    drop(h);
    let v = get("/api/v1/webrtc/sessions").await;
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0), "{v}");
}

/// A WHEP POST from `ip`, as the HTTP server delivers it (peer address in
/// the `ConnectInfo` extension).
fn post_from(ip: [u8; 4]) -> Request<Body> {
    let mut req = post("/cam/whep", "application/sdp", OFFER);
    let peer = std::net::SocketAddr::from((ip, 40000));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req
}

#[tokio::test]
async fn post_rate_per_address_answers_429_with_retry_after() {
    let f = fixture_limits(1000, 3).await;
    for i in 0..3 {
        let (r, body) = send(&f.app, post_from([127, 0, 0, 1])).await;
        assert_eq!(r.status(), StatusCode::CREATED, "POST {i}: {body}");
    }
    let (r, body) = send(&f.app, post_from([127, 0, 0, 1])).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(f.webrtc_sessions(), 3, "the refused POST made no session");
    // Another address has its own budget.
    let (r, body) = send(&f.app, post_from([127, 0, 0, 2])).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn session_cap_answers_503_and_frees_on_delete() {
    let f = fixture_limits(2, 1000).await;
    let (a, _) = create(&f).await;
    create(&f).await;
    let (r, body) = send(&f.app, post_from([127, 0, 0, 1])).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("webrtc_max_sessions"), "{body}");
    let (r, _) = send(&f.app, Request::delete(a).body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (r, body) = send(&f.app, post_from([127, 0, 0, 1])).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn every_session_shares_the_process_dtls_certificate() {
    let f = fixture().await;
    let fingerprint = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .map(str::to_owned)
            .unwrap()
    };
    let (_, a) = send(&f.app, post("/cam/whep", "application/sdp", OFFER)).await;
    let (_, b) = send(&f.app, post("/cam/whep", "application/sdp", OFFER)).await;
    assert_eq!(fingerprint(&a), fingerprint(&b));
}

/// The user the auth layer let through is the WHEP session's user in the
/// common session list; without credentials the POST is refused.
#[tokio::test]
async fn the_session_knows_its_user() {
    use crate::config::auth::{AuthSettings, Password, PathMatch, Permission, User, UserName};
    let f = fixture_with(AuthSettings {
        users: vec![User {
            user: UserName::Name("viewer".into()),
            pass: Some(Password::Plain("secret".into())),
            ips: vec![],
            permissions: vec![Permission {
                action: crate::auth::Action::Read,
                path: PathMatch::Exact("cam".into()),
            }],
        }],
        ..Default::default()
    })
    .await;
    let (r, _) = send(&f.app, post("/cam/whep", "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.webrtc_sessions(), 0);
    let mut req = post("/cam/whep", "application/sdp", OFFER);
    req.headers_mut().insert(
        "authorization",
        // viewer:secret
        "Basic dmlld2VyOnNlY3JldA==".parse().unwrap(),
    );
    let (r, body) = send(&f.app, req).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    let users: Vec<_> = f.sessions.list().into_iter().map(|s| s.user).collect();
    assert_eq!(users, [Some("viewer".to_owned())]);
}

/// A trickle fragment with `n` UDP host candidates on ports from `first`.
fn candidates_frag(first: u16, n: u16) -> String {
    let mut s = String::from("a=ice-ufrag:Qx7w\r\na=ice-pwd:4ZcT7PjNzCqO9fSsBoP0QfJk\r\n");
    for i in 0..n {
        let port = first + i;
        s.push_str(&format!(
            "a=candidate:{port} 1 udp 2122260223 192.0.2.7 {port} typ host\r\n"
        ));
    }
    s
}

/// Trickled candidates are capped per session, all PATCHes together: the
/// PATCH that would pass the cap gets 422 in plain words and costs nothing,
/// the session stays, and PATCHes within the cap still go through.
#[tokio::test]
async fn trickled_candidates_are_capped_per_session() {
    use crate::egress::webrtc::MAX_TRICKLE_CANDIDATES;
    let f = fixture().await;
    let (loc, _) = create(&f).await;
    let patch = |body: String| {
        Request::patch(loc.as_str())
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(Body::from(body))
            .unwrap()
    };
    let cap = u16::try_from(MAX_TRICKLE_CANDIDATES).unwrap();
    let (r, body) = send(&f.app, patch(candidates_frag(40000, cap - 4))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{body}");
    let (r, body) = send(&f.app, patch(candidates_frag(41000, 5))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains(&format!(
            "at most {MAX_TRICKLE_CANDIDATES} trickled candidates"
        )),
        "{body}"
    );
    assert_eq!(f.webrtc_sessions(), 1, "the session stays");
    // The refused PATCH took nothing: exactly the cap still fits.
    let (r, body) = send(&f.app, patch(candidates_frag(42000, 4))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{body}");
    let (r, _) = send(&f.app, patch(candidates_frag(43000, 1))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A fragment without candidates (end of candidates) is still fine.
    let (r, body) = send(&f.app, patch("a=end-of-candidates\r\n".to_owned())).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{body}");
    assert_eq!(f.webrtc_sessions(), 1);
}

/// WHEP bodies beyond the SDP size cap are refused with 413 before they
/// are read whole.
#[tokio::test]
async fn oversized_whep_bodies_get_413() {
    use crate::egress::webrtc::offer::MAX_SDP_LEN;
    let f = fixture().await;
    let (loc, _) = create(&f).await;
    let big = format!("{OFFER}a=x:{}\r\n", "y".repeat(MAX_SDP_LEN));
    let (r, _) = send(&f.app, post("/cam/whep", "application/sdp", &big)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let big = candidates_frag(40000, 2000);
    assert!(big.len() > MAX_SDP_LEN);
    let (r, _) = send(
        &f.app,
        Request::patch(loc.as_str())
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(Body::from(big))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.webrtc_sessions(), 1);
}
