//! `/<path>/mjpeg` through the real router with `oneshot` (status codes,
//! auth, the multipart body) and the reader's latest-image-wins rule.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::auth::{Action, Authenticator};
use crate::bus::{Registry, Sessions, StreamState, Track};
use crate::config::auth::{AuthSettings, Password, PathMatch, Permission, User, UserName};
use crate::egress::hls::manager::HlsManager;
use crate::egress::hls::testutil::{h264_fixture, h264_track};
use crate::http::{router, AppState};
use crate::paths::PathManager;

/// A complete baseline JFIF image (64x48, 4:2:0).
const IMAGE: &[u8] = include_bytes!("../../codec/testdata/jpeg_64x48_420.jpg");

fn image(n: i64) -> Frame {
    // Told apart by `n` in ASCII after EOI (decoders ignore what follows).
    let mut data = IMAGE.to_vec();
    data.extend_from_slice(n.to_string().as_bytes());
    Frame {
        track: 0,
        pts: n * 3600,
        dts: n * 3600,
        keyframe: true,
        received: Instant::now(),
        data: Bytes::from(data),
    }
}

fn mjpeg_stream(name: &str) -> Arc<Stream> {
    let s = Stream::new(name, "rtsp://10.0.0.1/mjpeg");
    s.set_tracks(vec![Arc::new(Track::new(Codec::Jpeg, 90_000))]);
    s.set_state(StreamState::Live);
    s
}

/// The router with `auth`, streams `cam` (MJPEG, one image published),
/// `h264` (H.264 only) and `empty` (no tracks yet), requests from `peer`.
fn app(auth: AuthSettings) -> (Router, Arc<Stream>) {
    let registry = Registry::new();
    let cam = mjpeg_stream("cam");
    cam.publish(image(1), true);
    registry.insert(cam.clone());
    let h264 = Stream::new("h264", "rtsp://10.0.0.1/h264");
    h264.set_tracks(vec![h264_track(&h264_fixture())]);
    h264.set_state(StreamState::Live);
    registry.insert(h264);
    registry.insert(Stream::new("empty", "rtsp://10.0.0.1/empty"));
    let app = router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: Sessions::new(),
        registry,
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: None,
        auth: Authenticator::new(auth),
        api: Default::default(),
    })
    .layer(Extension(ConnectInfo(SocketAddr::from((
        [127, 0, 0, 1],
        50000,
    )))));
    (app, cam)
}

async fn get(app: &Router, uri: &str, auth: Option<&str>) -> axum::response::Response {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn text(resp: axum::response::Response) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn statuses_say_why_in_plain_words() {
    let (app, _) = app(AuthSettings::default());
    let r = get(&app, "/nope/mjpeg", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(text(r).await.contains("no stream named \"nope\""));

    let r = get(&app, "/h264/mjpeg", None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let why = text(r).await;
    assert!(why.contains("no MJPEG track (it has h264)"), "{why}");

    // No tracks within START_WAIT (the paused clock runs it out).
    let r = get(&app, "/empty/mjpeg", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(r).await.contains("not live yet"));

    // Not taken for an LL-HLS file name.
    let r = get(&app, "/cam/mjpeg", None).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn read(body: &mut Body) -> Bytes {
    let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a piece in time")
        .expect("not the end")
        .expect("no error");
    f.into_data().expect("data")
}

/// Reads the part of `image(n)`.
async fn expect_part(body: &mut Body, n: i64) {
    let len = IMAGE.len() + n.to_string().len();
    assert_eq!(
        read(body).await,
        format!("--rtspgate-mjpeg\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\n\r\n")
    );
    let data = read(body).await;
    assert_eq!(data.len(), len);
    assert!(data.starts_with(IMAGE) && data.ends_with(n.to_string().as_bytes()));
    assert_eq!(read(body).await, "\r\n");
}

/// The body: the cached (latest) image first, then live ones, each a
/// part with its type and exact length.
#[tokio::test]
async fn the_body_is_one_part_per_image_from_the_latest() {
    let (app, cam) = app(AuthSettings::default());
    let resp = get(&app, "/cam/mjpeg", None).await;
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "multipart/x-mixed-replace; boundary=rtspgate-mjpeg"
    );
    let mut body = resp.into_body();
    expect_part(&mut body, 1).await;
    cam.publish(image(2), true);
    expect_part(&mut body, 2).await;
    assert!(cam.stats.bytes_out.load(Ordering::Relaxed) > 2 * IMAGE.len() as u64);
}

/// A reader that does not keep up is given the newest image, never a
/// queue: what it missed is counted, not held.
#[tokio::test]
async fn a_slow_reader_skips_to_the_newest_image() {
    let cam = mjpeg_stream("cam");
    let mut parts = MjpegParts::new(cam.clone());
    // Far more than the bus ring holds.
    let n = 3000;
    for i in 1..=n {
        cam.publish(image(i), true);
    }
    let head = parts.next_part().await.unwrap();
    assert!(head.starts_with(b"--rtspgate-mjpeg\r\n"));
    let data = parts.next_part().await.unwrap();
    assert!(data.ends_with(n.to_string().as_bytes()), "the newest image");
    assert_eq!(parts.skipped(), n as u64 - 1);
    assert_eq!(parts.next_part().await.unwrap(), "\r\n");
    // Nothing else is queued for it.
    assert!(parts.sub.backlog().is_empty());
    assert_eq!(parts.sub.try_recv().ok().flatten().map(|_| ()), None);
    // And it follows on with the next image only.
    cam.publish(image(n + 1), true);
    parts.next_part().await.unwrap();
    let data = parts.next_part().await.unwrap();
    assert!(data.ends_with((n + 1).to_string().as_bytes()));
    assert_eq!(parts.skipped(), n as u64 - 1);
}

/// The response ends when the stream's tracks lose MJPEG or it closes.
#[tokio::test]
async fn the_body_ends_with_the_mjpeg_track() {
    let cam = mjpeg_stream("cam");
    cam.publish(image(1), true);
    let mut parts = MjpegParts::new(cam.clone());
    for _ in 0..3 {
        parts.next_part().await.unwrap();
    }
    cam.set_tracks(vec![h264_track(&h264_fixture())]);
    assert_eq!(parts.next_part().await, None);
    let mut parts = MjpegParts::new(mjpeg_stream("other"));
    let s = parts.stream.clone();
    s.close();
    assert_eq!(parts.next_part().await, None);
}

/// The same `read` check as the viewer page: 401 with the challenge
/// without credentials, 200 with a user who may read the path.
#[tokio::test]
async fn reading_needs_read_permission_on_the_path() {
    let viewer = User {
        user: UserName::Name("viewer".into()),
        pass: Some(Password::Plain("secret".into())),
        ips: vec![],
        permissions: vec![Permission {
            action: Action::Read,
            path: PathMatch::Exact("cam".into()),
        }],
    };
    let (app, _) = app(AuthSettings {
        users: vec![viewer],
        ..Default::default()
    });
    let r = get(&app, "/cam/mjpeg", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    // "viewer:secret" and "viewer:wrong".
    let r = get(&app, "/cam/mjpeg", Some("Basic dmlld2VyOnNlY3JldA==")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(&app, "/cam/mjpeg", Some("Basic dmlld2VyOndyb25n")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = get(&app, "/cam/mjpeg?user=viewer&pass=secret", None).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A real reader over a real connection: ffmpeg's `mpjpeg` demuxer reads
/// the multipart response and decodes each part to the image's pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_reads_the_multipart_stream() {
    use tokio::process::Command;
    let (app, cam) = app(AuthSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cam/mjpeg", listener.local_addr().unwrap());
    let limiter = crate::limits::ConnLimiter::new(crate::limits::Listener::Http, 10, 0);
    let serving = tokio::spawn(crate::http::serve::serve(listener, app, None, limiter));
    let publishing = tokio::spawn(async move {
        for n in 2.. {
            tokio::time::sleep(Duration::from_millis(40)).await;
            cam.publish(image(n), true);
        }
    });
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "mpjpeg", "-i", &url])
        .args(["-frames:v", "5", "-f", "rawvideo", "pipe:1"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("ffmpeg done in time")
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let picture = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/codec/testdata/jpeg_64x48_420.jpg"
        ))
        .args(["-f", "rawvideo", "pipe:1"])
        .output()
        .await
        .unwrap()
        .stdout;
    assert!(!picture.is_empty());
    assert_eq!(out.stdout.len(), 5 * picture.len());
    assert!(out.stdout.chunks(picture.len()).all(|p| p == picture));
    publishing.abort();
    serving.abort();
}
