//! REST API for operators: configured paths (add, change, remove at run
//! time, persisted to the config file) and reader sessions (list, kick).
//! Bodies are JSON; errors are `{"error": "..."}` naming the field.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::config::{parse_source, valid_path_name, SourceConfig, TransportPref};
use crate::paths::PathError;

/// The API routes under `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/paths", get(list_paths))
        .route(
            "/api/v1/paths/{name}",
            get(get_path)
                .post(add_path)
                .patch(change_path)
                .delete(remove_path),
        )
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", delete(kick_session))
}

/// An API error: status and a message in plain words.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        let status = match e {
            PathError::Exists(_) => StatusCode::CONFLICT,
            PathError::NotFound(_) => StatusCode::NOT_FOUND,
            PathError::BuiltIn(_) => StatusCode::FORBIDDEN,
            PathError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// A path as the API shows it: credentials never leave the server.
#[derive(Serialize)]
pub struct PathView {
    pub name: String,
    /// Source URL with userinfo redacted.
    pub source: String,
    pub transport: TransportPref,
    pub has_credentials: bool,
}

fn view(name: &str, s: &SourceConfig) -> PathView {
    PathView {
        name: name.to_owned(),
        source: s.display_url(),
        transport: s.transport,
        has_credentials: s.user.is_some(),
    }
}

/// Body of `POST` (all of `source`) and `PATCH` (any subset).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    pub source: Option<String>,
    pub transport: Option<TransportPref>,
    pub user: Option<String>,
    pub pass: Option<String>,
}

fn parse_body(body: &Bytes) -> Result<PathBody, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_path_name(name) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name: a path name may only contain A-Z a-z 0-9 _ -".into(),
        ))
    }
}

async fn list_paths(State(app): State<AppState>) -> Json<Vec<PathView>> {
    Json(app.paths.list().iter().map(|(n, s)| view(n, s)).collect())
}

async fn get_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PathView>, ApiError> {
    app.paths
        .get(&name)
        .map(|s| Json(view(&name, &s)))
        .ok_or_else(|| PathError::NotFound(name).into())
}

async fn add_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<PathView>), ApiError> {
    check_name(&name)?;
    let b = parse_body(&body)?;
    let raw = b
        .source
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "source: missing".into()))?;
    let src = parse_source(
        "source",
        &raw,
        b.transport.unwrap_or_default(),
        b.user,
        b.pass,
    )
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    app.paths.add(&name, src.clone())?;
    app.paths.persist()?;
    Ok((StatusCode::CREATED, Json(view(&name, &src))))
}

async fn change_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PathView>, ApiError> {
    let b = parse_body(&body)?;
    let Some(current) = app.paths.get(&name) else {
        return Err(PathError::NotFound(name).into());
    };
    let raw = b.source.unwrap_or_else(|| current.url.to_string());
    let src = parse_source(
        "source",
        &raw,
        b.transport.unwrap_or(current.transport),
        b.user.or(current.user),
        b.pass.or(current.pass),
    )
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    app.paths.change(&name, src.clone())?;
    app.paths.persist()?;
    Ok(Json(view(&name, &src)))
}

async fn remove_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.paths.remove(&name)?;
    app.paths.persist()?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/sessions` body.
#[derive(Serialize)]
pub struct SessionList {
    /// Every session of every egress, oldest first.
    pub sessions: Vec<crate::bus::SessionInfo>,
}

async fn list_sessions(State(app): State<AppState>) -> Json<SessionList> {
    Json(SessionList {
        sessions: app.sessions.list(),
    })
}

async fn kick_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.sessions.kick(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session with id {id:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use std::net::SocketAddr;

    use crate::bus::sessions::{RtspDetail, RtspTrackDetail, RtspTransport};
    use crate::bus::{Detail, NewSession, Registry, Sessions};
    use crate::http::{test_router, AppState};
    use crate::paths::PathManager;

    fn app() -> (axum::Router, Arc<Sessions>) {
        let registry = Registry::new();
        let sessions = Sessions::new();
        let state = AppState {
            hls: crate::egress::hls::manager::HlsManager::new(registry.clone(), Default::default()),
            paths: PathManager::new(registry.clone(), None),
            sessions: sessions.clone(),
            registry,
            rtsp_base: "rtsp://127.0.0.1:8554".into(),
            webrtc: None,
            auth: crate::auth::Authenticator::new(Default::default()),
        };
        (test_router(state), sessions)
    }

    async fn call(app: &axum::Router, method: &str, uri: &str, body: &str) -> (u16, String) {
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn path_lifecycle_and_errors() {
        let (app, _) = app();
        let (code, body) = call(&app, "POST", "/api/v1/paths/cam", "{\"sorce\": 1}").await;
        assert_eq!(code, 400);
        assert!(body.contains("sorce"), "{body}");
        let (code, body) = call(&app, "POST", "/api/v1/paths/cam", "not json").await;
        assert_eq!(code, 400, "{body}");
        let (code, body) = call(
            &app,
            "POST",
            "/api/v1/paths/cam",
            r#"{"source": "http://x/"}"#,
        )
        .await;
        assert_eq!(code, 400);
        assert!(body.contains("source") && body.contains("scheme"), "{body}");
        let (code, body) = call(&app, "POST", "/api/v1/paths/cam", "{}").await;
        assert_eq!(code, 400);
        assert!(body.contains("source: missing"), "{body}");
        let (code, _) = call(
            &app,
            "POST",
            "/api/v1/paths/bad%20name",
            r#"{"source": "rtsp://h/"}"#,
        )
        .await;
        assert_eq!(code, 400);

        let (code, body) = call(
            &app,
            "POST",
            "/api/v1/paths/cam",
            r#"{"source": "rtsp://admin:pw@127.0.0.1:9/a", "transport": "tcp"}"#,
        )
        .await;
        assert_eq!(code, 201, "{body}");
        assert!(
            body.contains("rtsp://***@127.0.0.1:9/a") && !body.contains("pw"),
            "{body}"
        );
        let (code, _) = call(
            &app,
            "POST",
            "/api/v1/paths/cam",
            r#"{"source": "rtsp://h/"}"#,
        )
        .await;
        assert_eq!(code, 409);
        let (code, body) = call(&app, "GET", "/api/v1/streams/cam", "").await;
        assert_eq!(code, 200, "{body}");

        let (code, body) = call(
            &app,
            "PATCH",
            "/api/v1/paths/cam",
            r#"{"transport": "udp"}"#,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains("\"udp\"") && body.contains("has_credentials\":true"),
            "{body}"
        );
        let (code, _) = call(&app, "PATCH", "/api/v1/paths/nope", "{}").await;
        assert_eq!(code, 404);

        let (code, _) = call(&app, "DELETE", "/api/v1/paths/cam", "").await;
        assert_eq!(code, 204);
        let (code, _) = call(&app, "DELETE", "/api/v1/paths/cam", "").await;
        assert_eq!(code, 404);
        let (code, _) = call(&app, "GET", "/api/v1/streams/cam", "").await;
        assert_eq!(code, 404);
    }

    #[tokio::test]
    async fn sessions_list_and_kick() {
        let (app, sessions) = app();
        let h = sessions.register(
            NewSession {
                id: "s1",
                path: "cam",
                remote: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
                user: None,
            },
            Arc::new(Detail::Rtsp(RtspDetail {
                transport: RtspTransport::Udp,
                tracks: vec![RtspTrackDetail {
                    track: 0,
                    interleaved: None,
                    client_ports: Some([5000, 5001]),
                }],
            })),
        );
        h.add_bytes(1234);
        let (code, body) = call(&app, "GET", "/api/v1/sessions", "").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let s = &v["sessions"][0];
        assert_eq!(s["id"], "rtsp-s1", "{body}");
        assert_eq!(s["protocol"], "rtsp");
        assert_eq!(s["path"], "cam");
        assert_eq!(s["remote"], "127.0.0.1:9");
        assert_eq!(s["bytes_sent"], 1234);
        assert!(s["user"].is_null());
        assert_eq!(s["detail"]["transport"], "udp");
        assert_eq!(s["detail"]["tracks"][0]["client_ports"][0], 5000);
        // The stream list counts it as an RTSP reader of "cam".
        call(
            &app,
            "POST",
            "/api/v1/paths/cam",
            r#"{"source": "rtsp://127.0.0.1:9/a"}"#,
        )
        .await;
        let (_, body) = call(&app, "GET", "/api/v1/streams/cam", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["readers"]["rtsp"], 1, "{body}");
        assert_eq!(v["readers"]["hls"], 0, "{body}");

        let (code, _) = call(&app, "DELETE", "/api/v1/sessions/rtsp-s1", "").await;
        assert_eq!(code, 204);
        tokio::time::timeout(std::time::Duration::from_secs(1), h.kicked())
            .await
            .expect("the session was told to end");
        let (code, _) = call(&app, "DELETE", "/api/v1/sessions/nope", "").await;
        assert_eq!(code, 404);
        drop(h);
        let (_, body) = call(&app, "GET", "/api/v1/sessions", "").await;
        assert_eq!(body, r#"{"sessions":[]}"#);
    }

    #[tokio::test]
    async fn metrics_exposition() {
        let (app, _) = app();
        call(
            &app,
            "POST",
            "/api/v1/paths/cam",
            r#"{"source": "rtsp://127.0.0.1:9/a"}"#,
        )
        .await;
        let (code, body) = call(&app, "GET", "/metrics", "").await;
        assert_eq!(code, 200);
        for needle in [
            "# TYPE rtspgate_bytes_in_total counter",
            "rtspgate_bytes_in_total{path=\"cam\"} 0",
            "rtspgate_readers{path=\"cam\",protocol=\"rtsp\"} 0",
            "rtspgate_rtp_packets_lost_total{path=\"cam\"} 0",
            "rtspgate_stream_live{path=\"cam\"} 0",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in\n{body}");
        }
    }
}
