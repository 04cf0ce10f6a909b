//! The auth layer through the real router with `oneshot`: what each route
//! needs, the challenge, the query form, bad headers, and the user handed
//! to handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine as _;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{require, AuthUser, Need};
use crate::auth::{Action, Authenticator, Protocol, HTTP_CHALLENGE};
use crate::bus::{Registry, Sessions, Stream, StreamState};
use crate::config::auth::{AuthSettings, Password, PathMatch, Permission, User, UserName};
use crate::egress::hls::manager::HlsManager;
use crate::http::{router, AppState};
use crate::paths::PathManager;

fn user(name: &str, pass: &str, grants: &[(Action, Option<&str>)]) -> User {
    User {
        user: UserName::Name(name.into()),
        pass: Some(Password::Plain(pass.into())),
        ips: vec![],
        permissions: grants
            .iter()
            .map(|(action, path)| Permission {
                action: *action,
                path: path.map_or(PathMatch::All, |p| PathMatch::Exact(p.into())),
            })
            .collect(),
    }
}

/// `viewer:secret` may read `cam`; `ops:opspass` may use the API and
/// `/metrics`.
fn users() -> AuthSettings {
    AuthSettings {
        users: vec![
            user("viewer", "secret", &[(Action::Read, Some("cam"))]),
            user(
                "ops",
                "opspass",
                &[(Action::Api, None), (Action::Metrics, None)],
            ),
        ],
        ..Default::default()
    }
}

/// The full router with `auth`, a live stream `cam` without tracks, and
/// every request coming from `peer`.
fn app(auth: AuthSettings, peer: [u8; 4]) -> Router {
    let registry = Registry::new();
    let cam = Stream::new("cam", "rtsp://10.0.0.1/s");
    cam.set_state(StreamState::Live);
    registry.insert(cam);
    router(AppState {
        hls: HlsManager::new(registry.clone(), Default::default()),
        paths: PathManager::new(registry.clone(), None),
        sessions: Sessions::new(),
        registry,
        rtsp_base: "rtsp://127.0.0.1:8554".into(),
        webrtc: None,
        auth: Authenticator::new(auth),
        api: Default::default(),
    })
    .layer(Extension(ConnectInfo(SocketAddr::from((peer, 50000)))))
}

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

async fn send(app: &Router, method: &str, uri: &str, authz: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = authz {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            resp.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some(HTTP_CHALLENGE),
            "{method} {uri}: a 401 carries the Basic challenge"
        );
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn status(app: &Router, method: &str, uri: &str, authz: Option<&str>) -> StatusCode {
    send(app, method, uri, authz).await.0
}

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];
const REMOTE: [u8; 4] = [192, 0, 2, 7];

/// Every route that needs `api` or `metrics`.
const API_ROUTES: [&str; 5] = [
    "/api/v1/streams",
    "/api/v1/paths",
    "/api/v1/sessions",
    "/api/v1/webrtc/sessions",
    "/metrics",
];

/// Without `[[auth.users]]`: anyone reads, the API and `/metrics` answer
/// loopback (127.0.0.1) only; 127.0.0.2 is not that loopback.
#[tokio::test(start_paused = true)]
async fn defaults_api_and_metrics_from_loopback_only() {
    let local = app(AuthSettings::default(), LOOPBACK);
    let remote = app(AuthSettings::default(), REMOTE);
    let other_loopback = app(AuthSettings::default(), [127, 0, 0, 2]);
    for uri in API_ROUTES {
        assert_eq!(
            status(&local, "GET", uri, None).await,
            StatusCode::OK,
            "{uri}"
        );
        for a in [&remote, &other_loopback] {
            let (st, body) = send(a, "GET", uri, None).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(body, "authentication required\n");
        }
    }
    // Reading is for anyone: the page, HLS (404: no HLS track), stream info.
    assert_eq!(status(&remote, "GET", "/cam/", None).await, StatusCode::OK);
    assert_ne!(
        status(&remote, "GET", "/cam/index.m3u8", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&remote, "GET", "/api/v1/streams/cam", None).await,
        StatusCode::OK
    );
}

/// With users, each route asks for its own action.
#[tokio::test(start_paused = true)]
async fn each_route_needs_its_action() {
    let a = app(users(), REMOTE);
    let viewer = basic("viewer", "secret");
    let ops = basic("ops", "opspass");
    let viewer = Some(viewer.as_str());
    let ops = Some(ops.as_str());
    let unauth = StatusCode::UNAUTHORIZED;
    for uri in API_ROUTES {
        assert_eq!(status(&a, "GET", uri, None).await, unauth, "{uri}");
        assert_eq!(status(&a, "GET", uri, viewer).await, unauth, "{uri}");
        assert_eq!(status(&a, "GET", uri, ops).await, StatusCode::OK, "{uri}");
    }
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        let uri = "/api/v1/paths/nope";
        assert_eq!(status(&a, method, uri, None).await, unauth);
        assert_eq!(status(&a, method, uri, viewer).await, unauth);
        assert_ne!(status(&a, method, uri, ops).await, unauth);
    }
    // Read on cam: the page, WHEP, LL-HLS; not for ops, nor on another path.
    for (method, uri) in [
        ("GET", "/cam/"),
        ("POST", "/cam/whep"),
        ("PATCH", "/cam/whep/00000000000000000000000000000000"),
        ("DELETE", "/cam/whep/00000000000000000000000000000000"),
        ("GET", "/cam/index.m3u8"),
        ("GET", "/cam/part-1-0.mp4"),
        ("GET", "/other/"),
        ("POST", "/other/whep"),
        ("GET", "/other/index.m3u8"),
    ] {
        assert_eq!(status(&a, method, uri, None).await, unauth, "{uri}");
        assert_eq!(status(&a, method, uri, ops).await, unauth, "{uri}");
        let with_viewer = status(&a, method, uri, viewer).await;
        if uri.starts_with("/cam/") {
            assert_ne!(with_viewer, unauth, "{method} {uri}");
        } else {
            assert_eq!(with_viewer, unauth, "{method} {uri}");
        }
    }
    // One stream's status: read on it, or api.
    let info = "/api/v1/streams/cam";
    assert_eq!(status(&a, "GET", info, viewer).await, StatusCode::OK);
    assert_eq!(status(&a, "GET", info, ops).await, StatusCode::OK);
    assert_eq!(status(&a, "GET", info, None).await, unauth);
    assert_eq!(
        status(&a, "GET", "/api/v1/streams/other", viewer).await,
        unauth
    );
    // Bearer tokens are not users of the internal method: refused.
    assert_eq!(status(&a, "GET", "/cam/", Some("Bearer abc")).await, unauth);
    // A wrong password and an unknown user look the same.
    let wrong = basic("viewer", "nope");
    let unknown = basic("nobody", "secret");
    let r1 = send(&a, "GET", "/cam/", Some(&wrong)).await;
    let r2 = send(&a, "GET", "/cam/", Some(&unknown)).await;
    assert_eq!(r1, r2);
    assert_eq!(r1.0, unauth);
    // Static files carry no stream data: for everyone.
    for uri in [
        "/",
        "/web/player.js",
        "/web/style.css",
        "/static/hls.light.min.js",
    ] {
        assert_eq!(status(&a, "GET", uri, None).await, StatusCode::OK, "{uri}");
    }
    assert_eq!(
        status(&a, "GET", "/cam", None).await,
        StatusCode::PERMANENT_REDIRECT
    );
}

/// `?user=&pass=` works where a header can't be set; the header wins when
/// both are there.
#[tokio::test(start_paused = true)]
async fn query_credentials() {
    let a = app(users(), REMOTE);
    assert_eq!(
        status(&a, "GET", "/cam/?user=viewer&pass=secret", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&a, "GET", "/cam/?user=viewer&pass=bad", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&a, "GET", "/metrics?user=ops&pass=opspass", None).await,
        StatusCode::OK
    );
    let ops = basic("ops", "opspass");
    assert_eq!(
        status(&a, "GET", "/cam/?user=viewer&pass=secret", Some(&ops)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Malformed `Authorization` headers are 400, never 200, never a panic.
#[tokio::test(start_paused = true)]
async fn malformed_authorization_is_400() {
    for settings in [users(), AuthSettings::default()] {
        let a = app(settings, LOOPBACK);
        let long = format!("Basic {}", "A".repeat(64 * 1024));
        for bad in [
            "Basic !!!notbase64",
            "Basic dXNlcg==",
            "Negotiate abc",
            "Bearer ",
            "Digest username=\"unterminated",
            long.as_str(),
        ] {
            for uri in ["/cam/", "/api/v1/streams", "/metrics", "/cam/index.m3u8"] {
                let (st, body) = send(&a, "GET", uri, Some(bad)).await;
                assert_eq!(st, StatusCode::BAD_REQUEST, "{uri} {:.40}: {body}", bad);
            }
        }
        let req = Request::get("/cam/")
            .header(header::AUTHORIZATION, basic("viewer", "secret"))
            .header(header::AUTHORIZATION, basic("ops", "opspass"))
            .body(Body::empty())
            .unwrap();
        let resp = a.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}

/// Browsers send no credentials on a CORS preflight: WHEP's and HLS's
/// `OPTIONS` pass; the answers (401 included) carry CORS headers.
#[tokio::test(start_paused = true)]
async fn preflights_pass_without_credentials() {
    let a = app(users(), REMOTE);
    assert_eq!(
        status(&a, "OPTIONS", "/cam/whep", None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(
            &a,
            "OPTIONS",
            "/cam/whep/00000000000000000000000000000000",
            None
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&a, "OPTIONS", "/cam/index.m3u8", None).await,
        StatusCode::NO_CONTENT
    );
    let resp = a
        .clone()
        .oneshot(Request::post("/cam/whep").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "a cross-origin WHEP player can read the 401"
    );
    let resp = a
        .clone()
        .oneshot(Request::get("/cam/index.m3u8").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "hls.js on another origin can read the 401"
    );
}

/// A small router behind the layer whose handler answers the user it was
/// handed: `-` for anonymous.
fn echo(auth: Arc<Authenticator>, peer: Option<[u8; 4]>) -> Router {
    async fn who(Extension(AuthUser(user)): Extension<AuthUser>) -> String {
        user.unwrap_or_else(|| "-".into())
    }
    let r = Router::new()
        .route("/{path}/who", get(who))
        .route_layer(require(Need::Read(Protocol::Hls)))
        .layer(Extension(auth));
    match peer {
        Some(p) => r.layer(Extension(ConnectInfo(SocketAddr::from((p, 1))))),
        None => r,
    }
}

#[tokio::test(start_paused = true)]
async fn handlers_get_the_user() {
    let a = echo(Authenticator::new(users()), Some(REMOTE));
    let viewer = basic("viewer", "secret");
    assert_eq!(
        send(&a, "GET", "/cam/who", Some(&viewer)).await,
        (StatusCode::OK, "viewer".into())
    );
    assert_eq!(
        send(&a, "GET", "/cam/who?pass=secret&user=viewer", None).await,
        (StatusCode::OK, "viewer".into())
    );
    let anon = echo(Authenticator::new(AuthSettings::default()), Some(REMOTE));
    assert_eq!(
        send(&anon, "GET", "/cam/who", None).await,
        (StatusCode::OK, "-".into())
    );
}

/// Without a peer address or an authenticator the layer refuses.
#[tokio::test(start_paused = true)]
async fn fails_closed_without_peer_or_authenticator() {
    let no_peer = echo(Authenticator::new(AuthSettings::default()), None);
    assert_eq!(
        status(&no_peer, "GET", "/cam/who", None).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let no_auth = Router::new()
        .route("/{path}/who", get(|| async { "served" }))
        .route_layer(require(Need::Read(Protocol::Hls)))
        .layer(Extension(ConnectInfo(SocketAddr::from((REMOTE, 1)))));
    assert_eq!(
        status(&no_auth, "GET", "/cam/who", None).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
