//! rtspgate: an RTSP-to-browser gateway. Sources (`ingest`) feed one
//! `bus::Stream` per path, which every egress reads. The layers, the bus
//! contract and where each concern lives: `docs/ARCHITECTURE.md`.

pub mod auth;
pub mod bus;
pub mod cmaf;
pub mod codec;
pub mod config;
pub mod egress;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod paths;
pub mod tls;
pub mod transcode;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bus::Registry;
use config::Config;
use egress::hls::manager::HlsManager;
use egress::rtsp::server::{RtspServer, ServerConfig};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Path of the built-in demo stream.
pub const DEMO_PATH: &str = "demo";

/// With no paths configured (none on the command line or in the config
/// file, e.g. a file with only `[auth]`), the gateway serves the demo clip.
fn serves_demo(config: &Config) -> bool {
    config.paths.is_empty() && config.publish.paths.is_empty() && !config.publish.allow_unconfigured
}

/// One connection limiter per TCP listener that will run, with the
/// `max_connections` caps fitted under the open-file limit
/// ([`limits::fit_caps`]): descriptors stay in reserve for the sources of
/// as many paths as there can be (`max_paths`, or more in the file).
fn connection_limiters(config: &Config) -> limits::Limiters {
    use limits::Listener;
    let mut wanted = Vec::new();
    if config.rtsp_port != 0 {
        wanted.push((Listener::Rtsp, config.max_connections));
    }
    if config.tls.is_some() {
        wanted.push((Listener::Rtsps, config.max_connections));
    }
    wanted.push((Listener::Http, config.max_connections));
    wanted.push((Listener::IceTcp, config.max_connections));
    let paths = config.paths.len().max(config.max_paths) + usize::from(serves_demo(config));
    let caps = match limits::open_file_limit() {
        Some(nofile) => {
            let plan = limits::fit_caps(nofile, paths, &wanted);
            match &plan.note {
                Some(note) => tracing::warn!("{note}"),
                None => tracing::debug!(
                    "open-file limit {nofile}: max_connections {} per listener, {} kept for cameras",
                    config.max_connections,
                    plan.reserve
                ),
            }
            plan.caps
        }
        None => wanted,
    };
    limits::Limiters(
        caps.into_iter()
            .map(|(l, n)| limits::ConnLimiter::new(l, n, config.max_connections_per_ip))
            .collect(),
    )
}

/// A running gateway: the stream registry, sources and servers.
pub struct Gateway {
    pub registry: Arc<Registry>,
    /// The LL-HLS muxers.
    pub hls: Arc<HlsManager>,
    /// The recorders (`record = true` paths) and the recordings on disk.
    pub recordings: Arc<egress::record::Recordings>,
    pub paths: Arc<paths::PathManager>,
    /// Plain RTSP; port 0 when it is off (`rtsp_port = 0` with TLS on).
    pub rtsp_addr: SocketAddr,
    /// RTSPS (RTP interleaved inside TLS), when TLS is on.
    pub rtsps_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    /// WebRTC UDP address (ICE-TCP on the same port number).
    pub webrtc_addr: SocketAddr,
    pub webrtc: Arc<egress::webrtc::WebRtcEngine>,
    /// Who may do what (every protocol asks it); settings swapped on SIGHUP.
    pub auth: Arc<auth::Authenticator>,
    /// The certificate of RTSPS and HTTPS, when TLS is on.
    pub tls: Option<Arc<tls::Tls>>,
    /// Publishers' way in (RTSP ANNOUNCE, WHIP) and the publish rules.
    pub publish: Arc<ingest::push::PushSink>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.hls.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The host to print in URLs: the listen address, or loopback when
/// listening on all interfaces.
fn display_host(ip: IpAddr) -> String {
    let ip = if ip.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        ip
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Gateway {
    /// Binds the servers and starts every source. Must run inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Gateway, StartError> {
        let registry = Registry::new();
        let sessions = bus::Sessions::new();
        let auth = auth::Authenticator::new(config.auth.clone());
        let tls = match &config.tls {
            Some(src) => Some(Arc::new(tls::Tls::load(src)?)),
            None => None,
        };
        let paths = paths::PathManager::new(registry.clone(), config.file.clone());
        // Weak: the registry holds the maker, and the path manager the registry.
        let weak_paths = Arc::downgrade(&paths);
        registry.set_maker(transcode::Maker::new(Box::new(move |base| {
            weak_paths.upgrade()?.get(base).map(|s| s.transcode)
        })));
        let mut tasks = Vec::new();
        for (name, src) in &config.paths {
            // Names are unique in a validated config, so add cannot fail here.
            if let Err(e) = paths.add(name, src.clone()) {
                tracing::error!("{e}");
            }
        }
        if serves_demo(config) {
            // A built-in clip, so a first run shows a picture with no camera.
            match ingest::demo::DemoSource::embedded() {
                Ok(demo) => paths.add_builtin(DEMO_PATH, "built-in demo clip", Box::new(demo)),
                Err(e) => tracing::error!("the built-in demo clip is unusable: {e}"),
            }
        }

        let limiters = connection_limiters(config);
        let cap = |l: limits::Listener| {
            limiters
                .get(l)
                .cloned()
                .unwrap_or_else(|| limits::ConnLimiter::new(l, config.max_connections, 0))
        };

        let rtsp_addr = SocketAddr::new(config.listen, config.rtsp_port);
        // `rtsp_port = 0` (allowed with TLS only) turns plain RTSP off.
        let rtsp_listener = match config.rtsp_port {
            0 => None,
            _ => Some(bind(rtsp_addr, "RTSP port").await?),
        };
        let rtsps = match &tls {
            Some(tls) => {
                let addr = SocketAddr::new(config.listen, config.rtsps_port);
                Some((bind(addr, "RTSPS port").await?, tls.acceptor(&[])?))
            }
            None => None,
        };
        let rtsps_addr = rtsps.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let rtp_addr = SocketAddr::new(config.listen, config.rtp_port);
        let server = RtspServer::new(
            registry.clone(),
            sessions.clone(),
            auth.clone(),
            ServerConfig {
                mtu: config.mtu,
                session_timeout: config.rtsp_session_timeout,
                log_messages: config.verbose >= 2,
                describe_wait: Duration::from_secs(10),
                write_timeout: config.write_timeout,
            },
            config.listen,
            config.rtp_port,
        )
        .await
        .map_err(|source| StartError::Bind {
            what: "RTP/RTCP UDP ports",
            addr: rtp_addr,
            source,
        })?;
        // RTSP publish (ANNOUNCE/RECORD) and WHIP feed ingest's publisher
        // through one sink; the servers know only the bus's sink trait.
        let push = Arc::new(ingest::push::PushSink::new(registry.clone()));
        push.set_config(config.publish.clone());
        let publish_sink: Arc<dyn bus::PublishSink> = push.clone();
        server.set_publish_sink(publish_sink.clone());
        if let Some((listener, acceptor)) = rtsps {
            tasks.push(tokio::spawn(server.clone().run_tls(
                listener,
                acceptor,
                cap(limits::Listener::Rtsps),
            )));
        }
        if let Some(listener) = rtsp_listener {
            tasks.push(tokio::spawn(
                server.run(listener, cap(limits::Listener::Rtsp)),
            ));
        }

        let webrtc = egress::webrtc::WebRtcEngine::start_with_cap(
            config.listen,
            config.webrtc.clone(),
            sessions.clone(),
            cap(limits::Listener::IceTcp),
        )
        .await
        .map_err(|e| StartError::Bind {
            what: e.what,
            addr: e.addr,
            source: e.source,
        })?;
        webrtc.set_publish_sink(publish_sink);
        let webrtc_addr = webrtc.local_addr();

        let http_addr = SocketAddr::new(config.listen, config.http_port);
        let http_listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "HTTP port",
                addr: http_addr,
                source,
            })?;
        let hls = HlsManager::with_sessions(registry.clone(), config.hls.clone(), sessions.clone());
        if config.hls.always_on {
            hls.start_all();
        }
        let app = http::router(http::AppState {
            hls: hls.clone(),
            registry: registry.clone(),
            sessions: sessions.clone(),
            paths: paths.clone(),
            rtsp_base: format!(
                "rtsp://{}:{}",
                display_host(config.listen),
                config.rtsp_port
            ),
            webrtc: Some(webrtc.clone()),
            auth: auth.clone(),
            api: http::api::ApiSettings::from(config),
        });
        let https = match &tls {
            Some(t) => Some(t.acceptor(&http::serve::ALPN)?),
            None => None,
        };
        // `/metrics` reads every listener's connection counts.
        let http_cap = cap(limits::Listener::Http);
        let app = app.layer(axum::Extension(Arc::new(limiters)));
        let recordings = egress::record::Recordings::start(registry.clone(), config.record.clone());
        let app = app.layer(axum::Extension(recordings.clone()));
        tasks.push(tokio::spawn(http::serve::serve(
            http_listener,
            app,
            https,
            http_cap,
        )));
        Ok(Gateway {
            registry,
            hls,
            recordings,
            paths,
            rtsp_addr,
            rtsps_addr,
            http_addr,
            webrtc_addr,
            webrtc,
            auth,
            tls,
            publish: push,
            tasks,
        })
    }

    /// Re-reads the configuration (SIGHUP) and applies its paths (added and
    /// changed ones start, removed ones stop, unchanged ones are not
    /// touched), `[auth]` (for every request from now on) and the TLS
    /// certificate files (for new connections). Server settings (ports,
    /// addresses, turning TLS on or off) need a restart and are not applied.
    /// A certificate that fails to load is logged and the old one kept.
    pub fn reload(&self, cli: &config::Cli) -> Result<paths::ReloadSummary, config::ConfigError> {
        let config = Config::from_cli(cli)?;
        self.auth.reload(config.auth.clone());
        self.publish.set_config(config.publish.clone());
        self.recordings.set_config(config.record.clone());
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.reload() {
                tracing::error!("TLS certificate not reloaded, the previous one stays in use: {e}");
            }
        }
        Ok(self.paths.apply(&config.paths))
    }

    /// Lines telling the user what is served where (credentials redacted).
    pub fn banner(&self, config: &Config) -> Vec<String> {
        let host = display_host(config.listen);
        // `http_port` serves HTTPS when TLS is on.
        let http = if self.tls.is_some() { "https" } else { "http" };
        let mut lines = vec![format!(
            "rtspgate {}: RTSP on rtsp://{host}:{}/, HTTP on {http}://{host}:{}/ (API: /api/v1/streams), WebRTC on UDP/TCP {}",
            env!("CARGO_PKG_VERSION"),
            config.rtsp_port,
            config.http_port,
            self.webrtc_addr.port()
        )];
        if serves_demo(config) {
            lines.push(format!(
                "No cameras given: serving a built-in demo clip. Watch it at {http}://{host}:{port}/{DEMO_PATH}/ \
                 (RTSP: rtsp://{host}:{}/{DEMO_PATH}, LL-HLS: {http}://{host}:{port}/{DEMO_PATH}/index.m3u8)",
                config.rtsp_port,
                port = config.http_port
            ));
            lines.push("Add cameras with `rtspgate cam=rtsp://user:pass@192.0.2.10/stream` or --config rtspgate.toml.".into());
        }
        for (name, src) in &config.paths {
            lines.push(format!(
                "Proxying {} ({}). Play it at rtsp://{host}:{}/{name}, in a browser at {http}://{host}:{port}/{name}/ \
                 (WHEP: {http}://{host}:{port}/{name}/whep, LL-HLS: {http}://{host}:{port}/{name}/index.m3u8)",
                src.display_url(),
                src.transport,
                config.rtsp_port,
                port = config.http_port
            ));
        }
        if let Some(tls) = &self.tls {
            lines.push(format!(
                "TLS on: RTSPS on rtsps://{host}:{}/, HTTPS on https://{host}:{}/; certificate SHA-256 fingerprint {}",
                config.rtsps_port,
                config.http_port,
                tls.fingerprint()
            ));
        }
        lines.push(match config.auth.method {
            config::AuthMethod::Internal if config.auth == config::AuthSettings::default() => {
                "Access: no [[auth.users]] configured, so anyone may watch; the API and /metrics answer this machine only (see README, Security).".into()
            }
            config::AuthMethod::Internal => format!(
                "Access: {} [[auth.users]] entries decide who may read, publish, use the API or /metrics.",
                config.auth.users.len()
            ),
            config::AuthMethod::Http => format!(
                "Access: every request is authorized by {}.",
                config.auth.http_address.as_ref().map_or("?".into(), |u| u.to_string())
            ),
            config::AuthMethod::Jwt => "Access: JWTs signed by the configured JWKS decide.".into(),
        });
        if config.listen.is_unspecified() {
            lines.push(
                "Listening on all interfaces: from other machines use this machine's address instead of 127.0.0.1.".into(),
            );
        }
        lines
    }
}
