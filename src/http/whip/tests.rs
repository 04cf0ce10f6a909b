//! WHIP handlers through the router with `oneshot`: status codes, headers,
//! auth, the path's publication. The engine is real (bound to 127.0.0.1,
//! ephemeral port) and publishes through ingest's sink; no peer connects.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::auth::Action;
use crate::bus::{Protocol, Registry, Sessions, Stream, StreamState};
use crate::config::auth::{AuthSettings, Password, PathMatch, Permission, User, UserName};
use crate::config::WebRtcSettings;
use crate::egress::hls::manager::HlsManager;
use crate::egress::webrtc::WebRtcEngine;
use crate::http::{test_router, AppState};
use crate::ingest::push::PushSink;
use crate::paths::PathManager;

const OFFER: &str = include_str!("../../egress/webrtc/testdata/chrome_whip_offer.sdp");
const OFFER_VP8_PCMU: &str =
    include_str!("../../egress/webrtc/testdata/chrome_whip_offer_vp8_pcmu.sdp");
/// A WHEP viewer's offer (recvonly): nothing to publish.
const RECVONLY_OFFER: &str = include_str!("../../egress/webrtc/testdata/chrome_offer.sdp");
/// `obs:secret`, allowed to publish every path.
const OBS: &str = "Basic b2JzOnNlY3JldA==";

struct Fixture {
    app: axum::Router,
    registry: Arc<Registry>,
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
}

/// A gateway with a configured camera `cam` and a user `obs` who may
/// publish; with `sink`, WHIP publishes through ingest's push sink.
async fn fixture(sink: bool) -> Fixture {
    let registry = Registry::new();
    let cam = Stream::new("cam", "rtsp://10.0.0.1/s");
    cam.set_state(StreamState::Waiting);
    registry.insert(cam);
    let sessions = Sessions::new();
    let engine = WebRtcEngine::start(
        IpAddr::from([127, 0, 0, 1]),
        WebRtcSettings {
            port: 0,
            ..WebRtcSettings::default()
        },
        sessions.clone(),
    )
    .await
    .unwrap();
    if sink {
        let push = PushSink::new(registry.clone());
        push.set_config(crate::config::PublishConfig {
            allow_unconfigured: true,
            ..Default::default()
        });
        engine.set_publish_sink(Arc::new(push));
    }
    let auth = AuthSettings {
        users: vec![
            User {
                user: UserName::Name("obs".into()),
                pass: Some(Password::Plain("secret".into())),
                ips: vec![],
                permissions: vec![Permission {
                    action: Action::Publish,
                    path: PathMatch::All,
                }],
            },
            User {
                user: UserName::Name("viewer".into()),
                pass: Some(Password::Plain("secret".into())),
                ips: vec![],
                permissions: vec![Permission {
                    action: Action::Read,
                    path: PathMatch::All,
                }],
            },
        ],
        ..Default::default()
    };
    let app = test_router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: sessions.clone(),
        registry: registry.clone(),
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: Some(engine),
        auth: crate::auth::Authenticator::new(auth),
        api: Default::default(),
    });
    Fixture {
        app,
        registry,
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

fn post(path: &str, body: &str, auth: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path).header("content-type", "application/sdp");
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

fn header<'a>(r: &'a Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn post_publishes_the_path_until_delete() {
    let f = fixture(true).await;
    let (r, body) = send(&f.app, post("/live/whip", OFFER, Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    assert_eq!(header(&r, "content-type"), Some("application/sdp"));
    assert!(header(&r, "etag").is_some_and(|e| e.starts_with('"')));
    assert_eq!(
        header(&r, "accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    let loc = header(&r, "location").unwrap().to_owned();
    let id = loc.strip_prefix("/live/whip/").expect(&loc);
    assert_eq!(id.len(), 32);
    // We only receive: the answer's sections are recvonly.
    assert!(body.contains("a=recvonly"), "{body}");
    assert!(!body.contains("a=sendonly"), "{body}");
    assert!(body.contains("H264/90000"), "{body}");
    assert!(body.contains("opus/48000/2"), "{body}");
    let stream = f.registry.get("live").expect("the path is published");
    assert_ne!(stream.state(), StreamState::Live, "no frame yet");
    assert_eq!(f.webrtc_sessions(), 1);
    let user = f.sessions.list().into_iter().find_map(|s| s.user);
    assert_eq!(user.as_deref(), Some("obs"));

    // A WHEP URL does not reach the WHIP resource.
    let whep = loc.replace("/whip/", "/whep/");
    let del = |uri: &str| {
        Request::delete(uri)
            .header("authorization", OBS)
            .body(Body::empty())
            .unwrap()
    };
    let (r, _) = send(&f.app, del(&whep)).await;
    assert_ne!(r.status(), StatusCode::OK);
    assert!(f.registry.get("live").is_some());

    let (r, body) = send(&f.app, del(&loc)).await;
    assert_eq!(r.status(), StatusCode::OK, "{body}");
    for _ in 0..100 {
        if f.registry.get("live").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(f.registry.get("live").is_none(), "the path ends with it");
    let (r, _) = send(&f.app, del(&loc)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Free again.
    let (r, body) = send(&f.app, post("/live/whip", OFFER, Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_path_with_a_source_is_refused_with_409() {
    let f = fixture(true).await;
    let (r, _) = send(&f.app, post("/live/whip", OFFER, Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, body) = send(&f.app, post("/live/whip", OFFER, Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "second publisher: {body}");
    assert!(body.contains("in use"), "{body}");
    let (r, body) = send(&f.app, post("/cam/whip", OFFER, Some(OBS))).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "configured camera: {body}"
    );
    assert_eq!(f.webrtc_sessions(), 1, "refused offers leave no session");
}

#[tokio::test]
async fn publishing_needs_the_publish_permission() {
    let f = fixture(true).await;
    let (r, _) = send(&f.app, post("/live/whip", OFFER, None)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "anonymous");
    assert!(header(&r, "www-authenticate").is_some_and(|c| c.starts_with("Basic")));
    // viewer:secret may read, not publish.
    let viewer = "Basic dmlld2VyOnNlY3JldA==";
    let (r, _) = send(&f.app, post("/live/whip", OFFER, Some(viewer))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "read-only user");
    assert!(f.registry.get("live").is_none());
    assert_eq!(f.webrtc_sessions(), 0);
    // CORS preflights carry no credentials.
    let (r, _) = send(
        &f.app,
        Request::options("/live/whip").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "accept-post"), Some("application/sdp"));
}

#[tokio::test]
async fn offers_without_h264_or_opus_to_send_are_422() {
    let f = fixture(true).await;
    for offer in [OFFER_VP8_PCMU, RECVONLY_OFFER] {
        let (r, body) = send(&f.app, post("/live/whip", offer, Some(OBS))).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("H.264"), "{body}");
    }
    let (r, _) = send(&f.app, post("/live/whip", "v=0\r\nbogus", Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut req = post("/live/whip", OFFER, Some(OBS));
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let (r, _) = send(&f.app, req).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(f.registry.get("live").is_none());
    assert_eq!(f.webrtc_sessions(), 0);
}

#[tokio::test]
async fn without_a_publish_sink_whip_is_503() {
    let f = fixture(false).await;
    let (r, body) = send(&f.app, post("/live/whip", OFFER, Some(OBS))).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
