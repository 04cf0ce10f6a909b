//! REST API for operators: streams (`/api/v1/streams`), configured paths
//! (add, change, remove at run time, persisted to the config file), reader
//! sessions (list, kick), WebRTC sessions (`/api/v1/webrtc/sessions`) and
//! recordings (`/api/v1/recordings`, handlers in [`super::recordings`]).
//! Bodies are JSON; errors are `{"error": "..."}` in plain words naming the
//! field.
//!
//! Every `/api/*` route is in [`routes`], behind one [`guard`] layer that
//! keeps a browser from being turned against the API: the `Host` must be an
//! IP literal, `localhost` or an `api_allowed_hosts` name (DNS rebinding),
//! an `Origin` must be the `Host`'s (CSRF), and a body must be
//! `application/json` (so no cross-origin form or `text/plain` request
//! reaches a handler without a CORS preflight, which the API never grants:
//! it sends no `Access-Control-*` headers).

use std::sync::Arc;

use axum::body::{Bytes, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{self, Need};
use super::AppState;
use crate::config::{parse_source, valid_path_name, Config, SourceConfig, TransportPref};
use crate::paths::PathError;

/// The API's own settings (config keys `api_allowed_hosts`, `max_paths`).
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// DNS names, lower-cased, accepted in `Host` besides IP literals and
    /// `localhost`.
    pub allowed_hosts: Arc<[String]>,
    /// The API creates no path once this many are configured.
    pub max_paths: usize,
}

impl From<&Config> for ApiSettings {
    fn from(c: &Config) -> Self {
        ApiSettings {
            allowed_hosts: c.api_allowed_hosts.clone().into(),
            max_paths: c.max_paths,
        }
    }
}

impl Default for ApiSettings {
    /// The config's defaults.
    fn default() -> Self {
        ApiSettings::from(&Config::default())
    }
}

/// Every `/api/*` route, behind [`guard`].
pub fn routes(settings: ApiSettings) -> Router<AppState> {
    Router::new()
        .route("/api/v1/streams", get(super::list_streams))
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
        .route("/api/v1/webrtc/sessions", get(super::whep::list))
        .route_layer(auth::require(Need::Api))
        // One stream's status is also what a viewer's player page polls.
        .merge(
            Router::new()
                .route("/api/v1/streams/{name}", get(super::get_stream))
                .route_layer(auth::require(Need::ReadOrApi)),
        )
        .merge(super::recordings::api_routes())
        .layer(axum::middleware::from_fn_with_state(settings, guard))
}

/// The checks of every API request, before its handler: `403` for a `Host`
/// this gateway is not known by or a cross-origin `Origin`, `415` for a
/// body that is not `application/json`. See [`check_request`].
pub async fn guard(State(settings): State<ApiSettings>, req: Request, next: Next) -> Response {
    let has_body = req.body().size_hint().exact() != Some(0);
    match check_request(&settings, req.uri(), req.headers(), has_body) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// What [`guard`] checks, in order:
/// 1. each `Host` header and the request target's authority (when
///    present) names an IP literal, `localhost` or an `api_allowed_hosts`
///    name, else `403`. A DNS-rebinding page reaches the API under its own
///    name; browsers always send `Host` (RFC 9110 §7.2), so a request
///    without one is not a browser's and passes.
/// 2. an `Origin` header (RFC 6454 §7) is `http` or `https` with the
///    `Host`'s host and port (the origin scheme's default port when `Host`
///    has none), else `403`; an opaque origin (`null`) never matches.
/// 3. a request with a body says `Content-Type: application/json`
///    (parameters allowed), else `415`.
pub fn check_request(
    settings: &ApiSettings,
    uri: &Uri,
    headers: &HeaderMap,
    has_body: bool,
) -> Result<(), ApiError> {
    let forbidden = |msg: String| Err(ApiError(StatusCode::FORBIDDEN, msg));
    let mut hosts = Vec::new();
    // Every Host header, should there be several (RFC 9112 §3.2 makes that
    // a 400), and the request target's authority.
    for h in headers.get_all(header::HOST) {
        match h.to_str() {
            Ok(h) => hosts.push(h),
            Err(_) => return forbidden("the Host header is not plain ASCII".into()),
        }
    }
    let host_header = hosts.first().copied();
    hosts.extend(uri.authority().map(|a| a.as_str()));
    let mut host = None;
    for raw in hosts {
        let Some((name, port)) = parse_host_port(raw) else {
            return forbidden(format!("the Host {raw:?} is not a host name or address"));
        };
        if !known_host(settings, &name) {
            return forbidden(format!(
                "the API does not answer to the host name {raw:?}: reach it by IP address, \
                 as localhost, or add the name to api_allowed_hosts in the config file \
                 (this stops web pages from reaching it through DNS rebinding)"
            ));
        }
        host.get_or_insert((name, port));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = match (url::Url::parse(origin), &host) {
            (Ok(o), Some((name, port))) => {
                // A Host without a port means the scheme's default one.
                let default_port = match o.scheme() {
                    "http" => Some(80),
                    "https" => Some(443),
                    _ => None,
                };
                o.host().map(|h| h.to_owned()).as_ref() == Some(name)
                    && default_port.is_some()
                    && o.port_or_known_default() == port.or(default_port)
            }
            _ => false,
        };
        if !same {
            return forbidden(format!(
                "the API refuses requests from other web pages: Origin {origin:?} is not \
                 this gateway ({})",
                host_header.unwrap_or("no Host header")
            ));
        }
    }
    if has_body {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the API takes JSON bodies only: send Content-Type: application/json".into(),
            ));
        }
    }
    Ok(())
}

/// Splits a `Host` value (`uri-host [":" port]`, RFC 9110 §7.2) into the
/// host, parsed as URLs parse hosts (IPv4/IPv6 literals, lower-cased DNS
/// names with a final dot dropped), and the port. `None` when malformed.
fn parse_host_port(raw: &str) -> Option<(url::Host<String>, Option<u16>)> {
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            // `[` + address + `]`, brackets included: URL host syntax.
            (raw.get(..v6.len() + 2)?, port)
        }
        None => match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    if host.is_empty() || host.contains(['@', '/', '\\', '?', '#', ' ']) {
        return None;
    }
    let host = match url::Host::parse(host).ok()? {
        url::Host::Domain(d) => url::Host::Domain(d.trim_end_matches('.').to_owned()),
        ip => ip,
    };
    Some((host, port))
}

fn known_host(settings: &ApiSettings, host: &url::Host<String>) -> bool {
    match host {
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => true,
        url::Host::Domain(d) => d == "localhost" || settings.allowed_hosts.iter().any(|a| a == d),
    }
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
            // A quota, as in RFC 4331 §6 (WebDAV quota exceeded → 507): the
            // server keeps no more paths until one is removed; retrying
            // later (429's meaning) would not help.
            PathError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        ApiError(status, e.to_string())
    }
}

impl From<crate::config::ConfigError> for ApiError {
    fn from(e: crate::config::ConfigError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
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

/// Body of `POST` (all of `source`) and `PATCH` (any subset). Camera
/// credentials come as `user`/`pass` or in the `source` URL's userinfo;
/// `user`/`pass` win over the URL's.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    pub source: Option<String>,
    pub transport: Option<TransportPref>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub source_on_demand: Option<bool>,
    pub source_on_demand_start_timeout: Option<u64>,
    pub source_on_demand_close_after: Option<u64>,
}

impl PathBody {
    /// The on-demand settings the body gives, `None` if it names none of
    /// the three keys.
    fn on_demand(&self) -> Result<Option<Option<crate::config::OnDemand>>, ApiError> {
        if self.source_on_demand.is_none()
            && self.source_on_demand_start_timeout.is_none()
            && self.source_on_demand_close_after.is_none()
        {
            return Ok(None);
        }
        Ok(Some(crate::config::OnDemand::from_keys(
            "path",
            self.source_on_demand,
            self.source_on_demand_start_timeout,
            self.source_on_demand_close_after,
        )?))
    }
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

/// RTSP's default port (RFC 2326 §3.2, RFC 7826 §4.2).
const RTSP_DEFAULT_PORT: u16 = 554;

/// Whether `a` and `b` lead to the same server: same scheme, host (ASCII
/// case aside) and port (554 when absent). Any other difference, even
/// another spelling of the same address, counts as another server.
fn same_server(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str()
            .zip(b.host_str())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && a.port().unwrap_or(RTSP_DEFAULT_PORT) == b.port().unwrap_or(RTSP_DEFAULT_PORT)
}

/// The source a `PATCH` with body `b` makes of `current`. Credentials, each
/// of user and password on its own: the body's, else the new URL's
/// userinfo, else the stored ones, but those only while the source stays
/// on the same server ([`same_server`]): a stored password is never sent
/// to a host it was not configured for.
fn patched_source(current: &SourceConfig, b: PathBody) -> Result<SourceConfig, ApiError> {
    let on_demand = b.on_demand()?.unwrap_or_else(|| current.on_demand.clone());
    let mut src = patched_url(current, b)?;
    src.on_demand = on_demand;
    Ok(src)
}

fn patched_url(current: &SourceConfig, b: PathBody) -> Result<SourceConfig, ApiError> {
    let transport = b.transport.unwrap_or(current.transport);
    let Some(raw) = b.source else {
        return Ok(parse_source(
            "source",
            current.url.as_str(),
            transport,
            b.user.or_else(|| current.user.clone()),
            b.pass.or_else(|| current.pass.clone()),
        )?);
    };
    let given = parse_source("source", &raw, transport, None, None)?;
    let keep = same_server(&given.url, &current.url);
    let stored = |v: &Option<String>| if keep { v.clone() } else { None };
    Ok(parse_source(
        "source",
        &raw,
        transport,
        b.user.or(given.user).or_else(|| stored(&current.user)),
        b.pass.or(given.pass).or_else(|| stored(&current.pass)),
    )?)
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

/// `POST /api/v1/paths/<name>`: `201` with the path, `409` if it exists,
/// `507` (with a JSON error) when `max_paths` paths are configured already.
async fn add_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<PathView>), ApiError> {
    check_name(&name)?;
    let b = parse_body(&body)?;
    let on_demand = b.on_demand()?.flatten();
    let raw = b
        .source
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "source: missing".into()))?;
    let mut src = parse_source(
        "source",
        &raw,
        b.transport.unwrap_or_default(),
        b.user,
        b.pass,
    )?;
    src.on_demand = on_demand;
    app.paths
        .add_within(&name, src.clone(), app.api.max_paths)?;
    app.paths.persist()?;
    Ok((StatusCode::CREATED, Json(view(&name, &src))))
}

/// `PATCH /api/v1/paths/<name>`: see [`patched_source`] for credentials.
async fn change_path(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PathView>, ApiError> {
    let b = parse_body(&body)?;
    let Some(current) = app.paths.get(&name) else {
        return Err(PathError::NotFound(name).into());
    };
    let src = patched_source(&current, b)?;
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
    use crate::config::TransportPref;
    use crate::http::{test_router, AppState};
    use crate::paths::PathManager;

    fn app() -> (axum::Router, Arc<Sessions>) {
        let (router, state) = app_with(Default::default());
        (router, state.sessions)
    }

    fn app_with(api: super::ApiSettings) -> (axum::Router, AppState) {
        let registry = Registry::new();
        let state = AppState {
            hls: crate::egress::hls::manager::HlsManager::new(registry.clone(), Default::default()),
            paths: PathManager::new(registry.clone(), None),
            sessions: Sessions::new(),
            registry,
            rtsp_base: "rtsp://127.0.0.1:8554".into(),
            webrtc: None,
            auth: crate::auth::Authenticator::new(Default::default()),
            api,
        };
        (test_router(state.clone()), state)
    }

    /// One request with `headers`; status, response headers and body.
    async fn send(
        app: &axum::Router,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, axum::http::HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// Stored (user, pass) of path `name`.
    fn creds(state: &AppState, name: &str) -> (Option<String>, Option<String>) {
        let s = state.paths.get(name).expect("path exists");
        (s.user, s.pass)
    }

    fn pair(user: &str, pass: &str) -> (Option<String>, Option<String>) {
        (Some(user.into()), Some(pass.into()))
    }

    /// Changing a source to another server drops the stored credentials;
    /// staying on the server keeps them; credentials given are used.
    #[tokio::test]
    async fn patch_keeps_stored_credentials_only_on_the_same_server() {
        let (app, state) = app_with(Default::default());
        let json = [("content-type", "application/json")];
        let reset = |creds: &'static str| {
            let app = app.clone();
            async move {
                let (code, _, body) = send(
                    &app,
                    "PATCH",
                    "/api/v1/paths/cam",
                    &json,
                    &format!(r#"{{"source": "rtsp://{creds}10.0.0.1:554/a"}}"#),
                )
                .await;
                assert_eq!(code, 200, "{body}");
            }
        };
        let patch = |body: &'static str| {
            let app = app.clone();
            async move {
                let (code, _, text) = send(&app, "PATCH", "/api/v1/paths/cam", &json, body).await;
                assert_eq!(code, 200, "{body}: {text}");
                text
            }
        };
        let (code, _, body) = send(
            &app,
            "POST",
            "/api/v1/paths/cam",
            &json,
            r#"{"source": "rtsp://admin:pw@10.0.0.1:554/a"}"#,
        )
        .await;
        assert_eq!(code, 201, "{body}");

        // Another host: dropped, and the API says so.
        let body = patch(r#"{"source": "rtsp://10.0.0.2:554/a"}"#).await;
        assert!(body.contains("\"has_credentials\":false"), "{body}");
        assert_eq!(creds(&state, "cam"), (None, None));
        // Staying there does not bring them back.
        patch(r#"{"source": "rtsp://10.0.0.1:554/a"}"#).await;
        assert_eq!(creds(&state, "cam"), (None, None));

        // Another port of the same host: dropped.
        reset("admin:pw@").await;
        patch(r#"{"source": "rtsp://10.0.0.1:8554/a"}"#).await;
        assert_eq!(creds(&state, "cam"), (None, None));

        // Same host, other path; 554 spelled out or implied, host case
        // aside: kept.
        reset("admin:pw@").await;
        let body = patch(r#"{"source": "rtsp://10.0.0.1/b"}"#).await;
        assert!(body.contains("\"has_credentials\":true"), "{body}");
        assert_eq!(creds(&state, "cam"), pair("admin", "pw"));
        assert_eq!(state.paths.get("cam").unwrap().url.path(), "/b");
        patch(r#"{"transport": "tcp"}"#).await;
        assert_eq!(creds(&state, "cam"), pair("admin", "pw"));
        // The password alone changes; the user stays.
        patch(r#"{"pass": "rotated"}"#).await;
        assert_eq!(creds(&state, "cam"), pair("admin", "rotated"));

        // New credentials with a new host are kept: in the URL ...
        reset("admin:pw@").await;
        patch(r#"{"source": "rtsp://op:new@10.0.0.9/a"}"#).await;
        assert_eq!(creds(&state, "cam"), pair("op", "new"));
        // ... or in the body, which wins over the URL.
        reset("admin:pw@").await;
        patch(r#"{"source": "rtsp://x:y@10.0.0.8/a", "user": "u2", "pass": "p2"}"#).await;
        assert_eq!(creds(&state, "cam"), pair("u2", "p2"));
        // A new user alone for a new host never gets the stored password.
        reset("admin:pw@").await;
        patch(r#"{"source": "rtsp://10.0.0.7/a", "user": "solo"}"#).await;
        assert_eq!(creds(&state, "cam"), (Some("solo".into()), None));
        // On the same host, the URL's userinfo replaces the stored pair.
        reset("admin:pw@").await;
        patch(r#"{"source": "rtsp://x:y@10.0.0.1/c"}"#).await;
        assert_eq!(creds(&state, "cam"), pair("x", "y"));
    }

    #[test]
    fn same_server_compares_scheme_host_and_port() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(super::same_server(
            &u("rtsp://Cam.lan/a"),
            &u("rtsp://cam.LAN:554/b")
        ));
        assert!(!super::same_server(&u("rtsp://cam/a"), &u("rtsps://cam/a")));
        assert!(!super::same_server(&u("rtsp://cam/a"), &u("rtsp://cam2/a")));
        assert!(!super::same_server(
            &u("rtsp://cam/a"),
            &u("rtsp://cam:8554/a")
        ));
    }

    /// Bodies must be JSON: anything else is 415 before the handler runs;
    /// a request without a body needs no Content-Type.
    #[tokio::test]
    async fn only_json_bodies() {
        let (app, state) = app_with(Default::default());
        let body = r#"{"source": "rtsp://127.0.0.1:9/a"}"#;
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
            for method in ["POST", "PATCH"] {
                let (code, _, text) = send(&app, method, "/api/v1/paths/cam", &headers, body).await;
                assert_eq!(code, 415, "{method} {ct:?}: {text}");
                assert!(text.contains("application/json"), "{text}");
            }
        }
        assert!(state.paths.list().is_empty());
        let (code, _, text) = send(
            &app,
            "POST",
            "/api/v1/paths/cam",
            &[("content-type", "Application/JSON; charset=utf-8")],
            body,
        )
        .await;
        assert_eq!(code, 201, "{text}");
        let (code, _, _) = send(&app, "DELETE", "/api/v1/paths/cam", &[], "").await;
        assert_eq!(code, 204);
    }

    const API_GETS: [&str; 5] = [
        "/api/v1/streams",
        "/api/v1/paths",
        "/api/v1/sessions",
        "/api/v1/webrtc/sessions",
        "/api/v1/paths/nope",
    ];

    /// DNS rebinding: only IP literals, localhost and api_allowed_hosts
    /// names reach the API, on every route.
    #[tokio::test]
    async fn host_must_be_an_address_localhost_or_allowed() {
        let (app, _) = app_with(super::ApiSettings {
            allowed_hosts: vec!["gw.example".to_owned()].into(),
            ..Default::default()
        });
        for host in [
            "127.0.0.1:8888",
            "192.168.1.20",
            "[::1]:8888",
            "localhost:8888",
            "LocalHost",
            "gw.example:8888",
            "GW.example.",
        ] {
            for uri in API_GETS {
                let (code, _, text) = send(&app, "GET", uri, &[("host", host)], "").await;
                assert!(code == 200 || code == 404, "{host} {uri}: {code} {text}");
            }
        }
        for host in [
            "rebind.attacker.example:8888",
            "localhost.attacker.example",
            "gw.example.attacker.example",
            "127.0.0.1.nip.io",
            "bad host",
            "[::1",
            "127.0.0.1:99999",
            "user@127.0.0.1",
        ] {
            for uri in API_GETS {
                let (code, _, text) = send(&app, "GET", uri, &[("host", host)], "").await;
                assert_eq!(code, 403, "{host} {uri}: {text}");
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(v["error"].as_str().unwrap().contains("host"), "{text}");
            }
        }
        let (_, _, text) = send(
            &app,
            "GET",
            "/api/v1/paths",
            &[("host", "evil.example")],
            "",
        )
        .await;
        assert!(
            text.contains("api_allowed_hosts") && text.contains("DNS rebinding"),
            "{text}"
        );
        // A second Host header is checked too.
        let two = [("host", "127.0.0.1:8888"), ("host", "evil.example")];
        let (code, _, _) = send(&app, "GET", "/api/v1/paths", &two, "").await;
        assert_eq!(code, 403);
        // An absolute-form target names the host too.
        let (code, _, _) = send(&app, "GET", "http://evil.example/api/v1/paths", &[], "").await;
        assert_eq!(code, 403);
        // Without the setting, an allowed name of the other gateway is refused.
        let (plain, _) = app_with(Default::default());
        let (code, _, _) = send(
            &plain,
            "GET",
            "/api/v1/paths",
            &[("host", "gw.example")],
            "",
        )
        .await;
        assert_eq!(code, 403);
        // Not an /api route: the page and HLS stay reachable by any name.
        let (code, _, _) = send(&plain, "GET", "/", &[("host", "gw.example")], "").await;
        assert_eq!(code, 200);
    }

    /// CSRF: an Origin must be the Host's own.
    #[tokio::test]
    async fn origin_must_match_host() {
        let (app, state) = app_with(Default::default());
        let post = |host: &'static str, origin: &'static str| {
            let app = app.clone();
            async move {
                let (code, _, text) = send(
                    &app,
                    "POST",
                    "/api/v1/paths/cam",
                    &[
                        ("host", host),
                        ("origin", origin),
                        ("content-type", "application/json"),
                    ],
                    r#"{"source": "rtsp://127.0.0.1:9/a"}"#,
                )
                .await;
                (code, text)
            }
        };
        for (host, origin) in [
            ("127.0.0.1:8888", "http://evil.example"),
            ("127.0.0.1:8888", "http://127.0.0.1:9999"),
            ("127.0.0.1:8888", "http://127.0.0.2:8888"),
            ("localhost:8888", "http://127.0.0.1:8888"),
            ("127.0.0.1:8888", "null"),
            ("127.0.0.1:8888", "file://"),
            ("localhost", "https://localhost:8443"),
        ] {
            let (code, text) = post(host, origin).await;
            assert_eq!(code, 403, "{host} {origin}: {text}");
            assert!(text.contains("other web pages"), "{text}");
            assert!(state.paths.list().is_empty());
        }
        for (host, origin) in [
            ("127.0.0.1:8888", "http://127.0.0.1:8888"),
            ("[::1]:8888", "http://[0:0::1]:8888"),
            ("LOCALHOST", "http://localhost"),
            ("localhost:443", "https://localhost"),
        ] {
            let (code, text) = post(host, origin).await;
            assert_eq!(code, 201, "{host} {origin}: {text}");
            state.paths.remove("cam").unwrap();
        }
        // An Origin with no Host to compare with cannot be trusted.
        let (code, _, _) = send(
            &app,
            "GET",
            "/api/v1/paths",
            &[("origin", "http://127.0.0.1:8888")],
            "",
        )
        .await;
        assert_eq!(code, 403);
    }

    /// The API sends no CORS headers, whatever it answers; WHEP still does.
    #[tokio::test]
    async fn no_cors_headers_on_the_api() {
        let (app, _) = app_with(Default::default());
        for origin in ["http://127.0.0.1:8888", "http://evil.example"] {
            let headers = [("host", "127.0.0.1:8888"), ("origin", origin)];
            for uri in API_GETS {
                for method in ["GET", "OPTIONS"] {
                    let (code, h, _) = send(&app, method, uri, &headers, "").await;
                    let cors: Vec<_> = h
                        .keys()
                        .filter(|k| k.as_str().starts_with("access-control-"))
                        .collect();
                    assert!(
                        cors.is_empty(),
                        "{method} {uri} from {origin}: {code} {cors:?}"
                    );
                }
            }
        }
        let (_, h, _) = send(
            &app,
            "OPTIONS",
            "/cam/whep",
            &[("origin", "http://a.example")],
            "",
        )
        .await;
        assert!(h.contains_key("access-control-allow-origin"));
    }

    /// `max_paths` counts every configured path, the file's too; beyond
    /// it, POST is 507 with a JSON error and nothing is added.
    #[tokio::test]
    async fn max_paths_caps_what_the_api_creates() {
        let (app, state) = app_with(super::ApiSettings {
            max_paths: 2,
            ..Default::default()
        });
        // As the config file's paths are added at start.
        let from_file = crate::config::parse_source(
            "paths.file.source",
            "rtsp://127.0.0.1:9/f",
            TransportPref::Auto,
            None,
            None,
        )
        .unwrap();
        state.paths.add("file", from_file).unwrap();
        let post = |name: &'static str| {
            let app = app.clone();
            async move {
                send(
                    &app,
                    "POST",
                    &format!("/api/v1/paths/{name}"),
                    &[("content-type", "application/json")],
                    r#"{"source": "rtsp://127.0.0.1:9/a"}"#,
                )
                .await
            }
        };
        let (code, _, text) = post("a").await;
        assert_eq!(code, 201, "{text}");
        let (code, h, text) = post("b").await;
        assert_eq!(code, 507, "{text}");
        assert_eq!(h["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"].as_str().unwrap().contains("max_paths"), "{text}");
        assert!(state.paths.get("b").is_none());
        // An existing name is still a conflict, not a full server.
        let (code, _, _) = post("a").await;
        assert_eq!(code, 409);
        // Changing a path at the cap is fine; removing one makes room.
        let (code, _, _) = send(
            &app,
            "PATCH",
            "/api/v1/paths/a",
            &[("content-type", "application/json")],
            r#"{"transport": "tcp"}"#,
        )
        .await;
        assert_eq!(code, 200);
        let (code, _, _) = send(&app, "DELETE", "/api/v1/paths/file", &[], "").await;
        assert_eq!(code, 204);
        let (code, _, text) = post("b").await;
        assert_eq!(code, 201, "{text}");
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
