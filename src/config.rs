//! Configuration: command-line flags and `rtspgate.toml`, validated into a
//! [`Config`] with errors that name the offending key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

pub mod auth;
pub mod record;
pub mod rendition;
pub use auth::{Action, AuthMethod, AuthSettings};

/// How a source is pulled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportPref {
    /// UDP first; TCP interleaved when no RTP arrives over UDP within 3 s or
    /// the camera refuses UDP.
    #[default]
    Auto,
    /// RTP interleaved on the RTSP TCP connection (RFC 2326 §10.12).
    Tcp,
    /// RTP over UDP unicast.
    Udp,
}

impl std::fmt::Display for TransportPref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportPref::Auto => "auto",
            TransportPref::Tcp => "tcp",
            TransportPref::Udp => "udp",
        })
    }
}

/// Command line: `rtspgate [OPTIONS] [[NAME=]URL ...]`.
#[derive(Debug, Parser)]
#[command(
    name = "rtspgate",
    version,
    about = "RTSP-to-browser gateway: pulls each camera once, re-serves it over RTSP",
    after_help = "Each URL is pulled once and served as rtsp://HOST:PORT/NAME \
                  (unnamed ones as stream1, stream2, ...).\n\
                  Example: rtspgate cam=rtsp://user:pass@192.0.2.10/stream1"
)]
pub struct Cli {
    /// Sources to proxy, as `[NAME=]URL` (rtsp://, or rtspt:// to force TCP).
    #[arg(value_name = "[NAME=]URL")]
    pub sources: Vec<String>,
    /// Configuration file (TOML; see README). Command-line flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// RTSP server port.
    #[arg(long, value_name = "PORT")]
    pub rtsp_port: Option<u16>,
    /// HTTP server port (API and LL-HLS; later viewer page and WHEP).
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Address to bind the servers to.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<IpAddr>,
    /// UDP port for RTP to RTSP readers; RTCP uses the next port up.
    #[arg(long, value_name = "PORT")]
    pub rtp_port: Option<u16>,
    /// Default transport for pulling sources.
    #[arg(long, value_enum, value_name = "MODE")]
    pub transport: Option<TransportPref>,
    /// Port for WebRTC media: one UDP socket for all viewers, and ICE-TCP on
    /// the same number.
    #[arg(long, value_name = "PORT")]
    pub webrtc_port: Option<u16>,
    /// More logging: -v for debug, -vv to also log every RTSP request and response.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The file format (`rtspgate.toml`). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub rtsp_port: Option<u16>,
    pub http_port: Option<u16>,
    pub rtp_port: Option<u16>,
    pub listen: Option<String>,
    pub transport: Option<TransportPref>,
    /// Largest RTP packet sent to readers, header included, in bytes.
    pub mtu: Option<usize>,
    /// Seconds without a request before an RTSP reader's session ends.
    pub rtsp_session_timeout: Option<u64>,
    /// Seconds one write to a reader may take before the reader is dropped
    /// (a client that stopped reading); default 10.
    pub write_timeout: Option<u64>,
    /// UDP port (and ICE-TCP port) for WebRTC media.
    pub webrtc_port: Option<u16>,
    /// Extra addresses (IPs or host names) announced as ICE host candidates
    /// on `webrtc_port`, e.g. the public IP behind a NAT or a Docker host's IP.
    pub webrtc_additional_hosts: Option<Vec<String>>,
    /// STUN/TURN servers offered to WHEP clients in `Link` headers.
    pub webrtc_ice_servers: Option<Vec<FileIceServer>>,
    /// WHEP sessions at most (negotiating or connected); 503 beyond.
    pub webrtc_max_sessions: Option<usize>,
    /// WHEP POSTs per second from one address (burst of the same size); 429 beyond.
    pub webrtc_post_rate: Option<u32>,
    /// LL-HLS Part Target in milliseconds (rounded to whole frames).
    pub hls_part_duration: Option<u64>,
    /// Minimum LL-HLS segment length in milliseconds; segments end at a keyframe.
    pub hls_segment_duration: Option<u64>,
    /// Complete segments listed in an LL-HLS media playlist.
    pub hls_segment_count: Option<usize>,
    /// Seconds without an HLS request before a stream's muxer stops.
    pub hls_idle_timeout: Option<u64>,
    /// Keep every stream's LL-HLS muxer running without requests.
    pub hls_always_on: Option<bool>,
    /// `Access-Control-Allow-Origin` of HLS responses: `*`, one origin, or
    /// `""` for none.
    pub hls_allow_origin: Option<String>,
    /// TLS certificate chain (PEM): turns on RTSPS and HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// With no `tls_cert`/`tls_key`: make a self-signed certificate at start.
    pub tls_self_signed: Option<bool>,
    /// RTSPS port (default 8322) when TLS is on.
    pub rtsps_port: Option<u16>,
    /// Users, permissions and the authentication method.
    pub auth: Option<auth::FileAuth>,
    /// Most configured paths (file, command line and API together) the API
    /// may bring the gateway to; default 1000.
    pub max_paths: Option<usize>,
    /// Host names (besides IP literals and `localhost`) that `/api/*`
    /// answers to in the `Host` header; default none.
    pub api_allowed_hosts: Option<Vec<String>>,
    /// Connections at once per TCP listener (RTSP, RTSPS, HTTP, ICE-TCP);
    /// default 4096, lowered at start to fit the open-file limit.
    pub max_connections: Option<usize>,
    /// Connections at once from one address per listener; 0 (default) = no cap.
    pub max_connections_per_ip: Option<usize>,
    /// Publishers may publish to paths not configured (RTSP ANNOUNCE,
    /// WHIP); default false.
    pub allow_unconfigured_publish: Option<bool>,
    // Recording (see `record`): every path, unless its table says otherwise.
    pub record: Option<bool>,
    pub record_path: Option<String>,
    pub record_segment_duration: Option<record::FileDuration>,
    pub record_part_duration: Option<record::FileDuration>,
    pub record_delete_after: Option<record::FileDuration>,
    #[serde(default)]
    pub paths: BTreeMap<String, FilePath>,
}

/// One entry of `webrtc_ice_servers`: a URL, or a table with credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileIceServer {
    Url(String),
    WithCredentials {
        url: String,
        username: Option<String>,
        credential: Option<String>,
    },
}

/// `[paths.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePath {
    pub source: Option<String>,
    pub transport: Option<TransportPref>,
    pub user: Option<String>,
    pub pass: Option<String>,
    /// `"off" | "h264" | "auto"` (see [`rendition::TranscodeMode`]).
    pub transcode: Option<rendition::TranscodeMode>,
    /// bit/s of the H.264 made from H.265.
    pub transcode_bitrate: Option<u32>,
    /// `"source" | "h264"`.
    pub rtsp_codec: Option<rendition::RtspCodec>,
    /// bit/s of the Opus made from AAC/G.711.
    pub opus_bitrate: Option<u32>,
    pub transcode_audio: Option<bool>,
    /// With `source = "publisher"`: a second publisher replaces the first
    /// (which is disconnected) instead of being refused.
    pub override_publisher: Option<bool>,
    // Recording (see `record`): this path, over the top-level keys.
    pub record: Option<bool>,
    pub record_path: Option<String>,
    pub record_segment_duration: Option<record::FileDuration>,
    pub record_part_duration: Option<record::FileDuration>,
    pub record_delete_after: Option<record::FileDuration>,
    // On-demand sources (see [`OnDemand`]).
    pub source_on_demand: Option<bool>,
    /// Seconds.
    pub source_on_demand_start_timeout: Option<u64>,
    /// Seconds.
    pub source_on_demand_close_after: Option<u64>,
}

impl FileConfig {
    /// The top-level `record*` keys.
    fn record_keys(&self) -> record::FileRecord {
        record::FileRecord {
            record: self.record,
            record_path: self.record_path.clone(),
            record_segment_duration: self.record_segment_duration.clone(),
            record_part_duration: self.record_part_duration.clone(),
            record_delete_after: self.record_delete_after.clone(),
        }
    }
}

impl FilePath {
    /// This path's `record*` keys.
    fn record_keys(&self) -> record::FileRecord {
        record::FileRecord {
            record: self.record,
            record_path: self.record_path.clone(),
            record_segment_duration: self.record_segment_duration.clone(),
            record_part_duration: self.record_part_duration.clone(),
            record_delete_after: self.record_delete_after.clone(),
        }
    }
}

/// A validated source.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// URL without userinfo, scheme `rtsp` (an `rtspt` URL becomes `rtsp` with `transport = Tcp`).
    pub url: url::Url,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub transport: TransportPref,
    /// When video and audio are transcoded for viewers that need it.
    pub transcode: rendition::TranscodeSettings,
    /// `source_on_demand = true`: read only while someone watches.
    pub on_demand: Option<OnDemand>,
}

/// An on-demand source (`source_on_demand = true`): the camera is contacted
/// when the first reader arrives and closed when the last one has been gone
/// for `close_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDemand {
    /// How long a reader waits for the source to go live
    /// (`source_on_demand_start_timeout`, seconds, default 10).
    pub start_timeout: std::time::Duration,
    /// How long the camera stays open after the last reader left
    /// (`source_on_demand_close_after`, seconds, default 10).
    pub close_after: std::time::Duration,
}

impl OnDemand {
    /// From the three keys of a path; `key` names the path in errors.
    pub fn from_keys(
        key: &str,
        on: Option<bool>,
        start_timeout: Option<u64>,
        close_after: Option<u64>,
    ) -> Result<Option<OnDemand>, ConfigError> {
        if on != Some(true) {
            if start_timeout.is_some() || close_after.is_some() {
                return Err(err(
                    format!("{key}.source_on_demand"),
                    "source_on_demand_* keys need source_on_demand = true",
                ));
            }
            return Ok(None);
        }
        let secs = |name: &str, v: Option<u64>| match v {
            None => Ok(std::time::Duration::from_secs(10)),
            Some(s) if (1..=3600).contains(&s) => Ok(std::time::Duration::from_secs(s)),
            Some(_) => Err(err(format!("{key}.{name}"), "must be 1 to 3600 seconds")),
        };
        Ok(Some(OnDemand {
            start_timeout: secs("source_on_demand_start_timeout", start_timeout)?,
            close_after: secs("source_on_demand_close_after", close_after)?,
        }))
    }
}

impl SourceConfig {
    /// The URL as it may be printed: credentials never appear.
    pub fn display_url(&self) -> String {
        let mut s = self.url.to_string();
        if self.user.is_some() {
            if let Some(pos) = s.find("://") {
                s.insert_str(pos + 3, "***@");
            }
        }
        s
    }
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &self.display_url())
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// A STUN or TURN server for WebRTC clients (RFC 7064 / RFC 7065 URI).
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URI, e.g. `stun:stun.l.google.com:19302`.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The TURN credential is a secret: never in logs.
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// WebRTC (WHEP) settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRtcSettings {
    /// UDP port for all viewers; ICE-TCP listens on the same number.
    pub port: u16,
    /// Extra host-candidate addresses: IP literals or host names resolved
    /// when a session starts.
    pub additional_hosts: Vec<String>,
    /// Offered to clients as `Link: <url>; rel="ice-server"` (RFC 9725 §4.6).
    pub ice_servers: Vec<IceServer>,
    /// Sessions at most (`webrtc_max_sessions`, default 1000).
    pub max_sessions: usize,
    /// WHEP POSTs per second per client address (`webrtc_post_rate`,
    /// default 50: a video wall opens dozens at once), with a burst of the
    /// same size.
    pub post_rate: u32,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings {
            port: 8189,
            additional_hosts: Vec::new(),
            ice_servers: Vec::new(),
            max_sessions: 1000,
            post_rate: 50,
        }
    }
}

/// Where the TLS certificate comes from (`tls_*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, re-read on SIGHUP.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at start for `localhost`, 127.0.0.1 and ::1 (`tls_self_signed = true`).
    SelfSigned,
}

/// Paths that take publishers instead of pulling a camera.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishConfig {
    /// `allow_unconfigured_publish` (default false): a publisher may
    /// publish to a path that is not configured; it exists while published.
    pub allow_unconfigured: bool,
    /// `[paths.NAME]` with `source = "publisher"`: the path exists from the
    /// start (readers wait on it) and takes one publisher at a time.
    pub paths: BTreeMap<String, PublisherPath>,
}

/// One `source = "publisher"` path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherPath {
    /// `override_publisher` (default false): a second publisher replaces
    /// the first, which is disconnected; otherwise it is refused.
    pub override_publisher: bool,
}

/// `max_connections` when the file doesn't set it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Everything the gateway needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: IpAddr,
    /// Plain RTSP; 0 = off (only with TLS on, leaving RTSPS).
    pub rtsp_port: u16,
    /// RTSPS (RTSP over TLS, RTP interleaved inside it) when `tls` is set.
    pub rtsps_port: u16,
    /// TLS for RTSPS and HTTPS; `None` = plain RTSP and HTTP only.
    pub tls: Option<TlsSource>,
    /// Users, permissions, authentication method.
    pub auth: AuthSettings,
    pub http_port: u16,
    pub rtp_port: u16,
    pub mtu: usize,
    pub rtsp_session_timeout: std::time::Duration,
    /// How long one write to a reader may take (RTSP over TCP/TLS).
    pub write_timeout: std::time::Duration,
    pub webrtc: WebRtcSettings,
    /// LL-HLS settings.
    pub hls: HlsConfig,
    pub verbose: u8,
    /// Path name → source, in name order.
    pub paths: BTreeMap<String, SourceConfig>,
    /// Who may publish where (RTSP ANNOUNCE/RECORD, WHIP).
    pub publish: PublishConfig,
    /// The config file in use, if any.
    pub file: Option<PathBuf>,
    /// `max_paths` (default 1000): the API creates no path once this many
    /// are configured, counting those of the file and the command line
    /// (which are never refused for it).
    pub max_paths: usize,
    /// `api_allowed_hosts` (default empty): DNS names, lower-cased, that a
    /// request to `/api/*` may carry in its `Host` header besides IP
    /// literals and `localhost` (the DNS-rebinding check of `http::api`).
    pub api_allowed_hosts: Vec<String>,
    /// `max_connections` (default 4096): connections at once on each TCP
    /// listener (RTSP, RTSPS, HTTP/HTTPS, ICE-TCP), counted separately;
    /// lowered at start when the open-file limit can't hold them with the
    /// descriptors kept for cameras.
    pub max_connections: usize,
    /// `max_connections_per_ip` (default 0 = no cap): connections at once
    /// from one address (IPv6: one /64) on each listener.
    pub max_connections_per_ip: usize,
    /// Recording (`record*` keys, top level and per path).
    pub record: record::RecordConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: IpAddr::from([0, 0, 0, 0]),
            rtsp_port: 8554,
            rtsps_port: 8322,
            tls: None,
            auth: AuthSettings::default(),
            http_port: 8888,
            rtp_port: 8000,
            mtu: 1400,
            rtsp_session_timeout: std::time::Duration::from_secs(60),
            write_timeout: std::time::Duration::from_secs(10),
            webrtc: WebRtcSettings::default(),
            hls: HlsConfig::default(),
            verbose: 0,
            paths: BTreeMap::new(),
            publish: PublishConfig::default(),
            file: None,
            max_paths: 1000,
            api_allowed_hosts: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 0,
            record: record::RecordConfig::default(),
        }
    }
}

/// LL-HLS settings (`hls_*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsConfig {
    /// Wanted Part Target (`hls_part_duration`, default 200 ms); the muxer
    /// rounds it to a whole number of frames.
    pub part_duration: std::time::Duration,
    /// Minimum segment length (`hls_segment_duration`, default 1 s).
    pub segment_duration: std::time::Duration,
    /// Complete segments per media playlist (`hls_segment_count`, default 7).
    pub segment_count: usize,
    /// A stream's muxer stops this long after its last HLS request
    /// (`hls_idle_timeout`, default 60 s).
    pub idle_timeout: std::time::Duration,
    /// Run every stream's muxer from the start, requests or not (`hls_always_on`).
    pub always_on: bool,
    /// `Access-Control-Allow-Origin` value, `None` to send no CORS headers
    /// (`hls_allow_origin`, default `*`).
    pub allow_origin: Option<String>,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            part_duration: std::time::Duration::from_millis(200),
            segment_duration: std::time::Duration::from_millis(1000),
            segment_count: 7,
            idle_timeout: std::time::Duration::from_secs(60),
            always_on: false,
            allow_origin: Some("*".into()),
        }
    }
}

impl HlsConfig {
    /// Validates the `hls_*` keys of `file` over the defaults.
    fn from_file(file: &FileConfig) -> Result<HlsConfig, ConfigError> {
        use std::time::Duration;
        let mut hls = HlsConfig::default();
        if let Some(ms) = file.hls_part_duration {
            if !(20..=5_000).contains(&ms) {
                return Err(err(
                    "hls_part_duration",
                    format!("{ms} is outside 20..=5000 milliseconds"),
                ));
            }
            hls.part_duration = Duration::from_millis(ms);
        }
        if let Some(ms) = file.hls_segment_duration {
            if !(100..=60_000).contains(&ms) {
                return Err(err(
                    "hls_segment_duration",
                    format!("{ms} is outside 100..=60000 milliseconds"),
                ));
            }
            hls.segment_duration = Duration::from_millis(ms);
        }
        // The Part Target must stay below the Target Duration (§4.4.3.7 of
        // draft-pantos-hls-rfc8216bis), so a segment holds several parts.
        if hls.part_duration >= hls.segment_duration {
            return Err(err(
                "hls_part_duration",
                format!(
                    "{} ms must be shorter than hls_segment_duration ({} ms)",
                    hls.part_duration.as_millis(),
                    hls.segment_duration.as_millis()
                ),
            ));
        }
        if let Some(n) = file.hls_segment_count {
            // §6.2.2: a live playlist must keep at least three target
            // durations of segments.
            if !(3..=100).contains(&n) {
                return Err(err(
                    "hls_segment_count",
                    format!("{n} is outside 3..=100 segments"),
                ));
            }
            hls.segment_count = n;
        }
        if let Some(s) = file.hls_idle_timeout {
            if s == 0 {
                return Err(err("hls_idle_timeout", "must be at least 1 second"));
            }
            hls.idle_timeout = Duration::from_secs(s);
        }
        if let Some(on) = file.hls_always_on {
            hls.always_on = on;
        }
        if let Some(origin) = &file.hls_allow_origin {
            hls.allow_origin = parse_allow_origin(origin)?;
        }
        Ok(hls)
    }
}

/// `hls_allow_origin`: `*`, a serialized origin (`scheme://host[:port]`,
/// RFC 6454 §6.1), or empty for no CORS headers.
fn parse_allow_origin(origin: &str) -> Result<Option<String>, ConfigError> {
    const KEY: &str = "hls_allow_origin";
    if origin.is_empty() {
        return Ok(None);
    }
    if origin == "*" {
        return Ok(Some(origin.to_owned()));
    }
    let url = url::Url::parse(origin)
        .map_err(|e| err(KEY, format!("{origin:?} is not \"*\" or an origin: {e}")))?;
    let serialized = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || serialized != origin {
        return Err(err(
            KEY,
            format!(
                "{origin:?} is not \"*\" or an origin like \"https://example.com\" \
                 (scheme, host and port only, no path or trailing slash)"
            ),
        ));
    }
    Ok(Some(serialized))
}

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Whether `name` is a valid path name: `[A-Za-z0-9_-]+`.
pub fn valid_path_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Redacts the userinfo of every URL-looking `scheme://user:pass@` in `text`,
/// e.g. in error messages from libraries: `rtsp://***@host/...`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == '>')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Parses and validates one source URL. `key` names it in errors.
pub fn parse_source(
    key: &str,
    raw: &str,
    transport: TransportPref,
    user: Option<String>,
    pass: Option<String>,
) -> Result<SourceConfig, ConfigError> {
    let mut url = url::Url::parse(raw)
        .map_err(|e| err(key, format!("invalid URL {:?}: {e}", redact(raw))))?;
    let transport = match url.scheme() {
        "rtsp" => transport,
        "rtspt" => TransportPref::Tcp,
        other => {
            return Err(err(
                key,
                format!("unsupported scheme {other:?}: expected rtsp:// or rtspt://"),
            ))
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err(key, "the URL has no host"));
    }
    let url_user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
    let url_pass = url.password().map(percent_decode);
    // Dropping userinfo: retina takes credentials separately, and the bare URL
    // is safe to print.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.scheme() == "rtspt" {
        // `set_scheme` refuses no change between these two non-special schemes.
        let s = url.as_str().replacen("rtspt://", "rtsp://", 1);
        url = url::Url::parse(&s).map_err(|e| err(key, e.to_string()))?;
    }
    let user = user.or(url_user);
    let pass = pass.or(url_pass);
    if pass.is_some() && user.is_none() {
        return Err(err(key, "a password is given without a user"));
    }
    Ok(SourceConfig {
        url,
        user,
        pass,
        transport,
        transcode: rendition::TranscodeSettings::default(),
        on_demand: None,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a command-line source `[NAME=]URL`: the prefix before the first `=`
/// is a name only if it matches `[A-Za-z0-9_-]+`.
pub fn split_named(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, url)) if valid_path_name(name) => (Some(name), url),
        _ => (None, arg),
    }
}

impl Config {
    /// Builds the configuration from the command line and, if given, the file.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        Config::build(cli, file.unwrap_or_default(), cli.config.clone())
    }

    fn build(
        cli: &Cli,
        file: FileConfig,
        file_path: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            file: file_path,
            verbose: cli.verbose,
            ..Config::default()
        };
        if let Some(listen) = &file.listen {
            cfg.listen = listen
                .parse()
                .map_err(|_| err("listen", format!("{listen:?} is not an IP address")))?;
        }
        cfg.rtsp_port = cli.rtsp_port.or(file.rtsp_port).unwrap_or(cfg.rtsp_port);
        cfg.http_port = cli.http_port.or(file.http_port).unwrap_or(cfg.http_port);
        cfg.rtp_port = cli.rtp_port.or(file.rtp_port).unwrap_or(cfg.rtp_port);
        cfg.webrtc.port = cli
            .webrtc_port
            .or(file.webrtc_port)
            .unwrap_or(cfg.webrtc.port);
        if let Some(listen) = cli.listen {
            cfg.listen = listen;
        }
        cfg.rtsps_port = file.rtsps_port.unwrap_or(cfg.rtsps_port);
        cfg.tls = match (&file.tls_cert, &file.tls_key, file.tls_self_signed) {
            (Some(cert), Some(key), _) => Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(_), None, _) => return Err(err("tls_key", "tls_cert is given without it")),
            (None, Some(_), _) => return Err(err("tls_cert", "tls_key is given without it")),
            (None, None, Some(true)) => Some(TlsSource::SelfSigned),
            (None, None, _) => None,
        };
        cfg.auth = AuthSettings::from_file(file.auth.as_ref())?;
        // With TLS, `rtsp_port = 0` turns plain RTSP off.
        let rtsp_off = cfg.tls.is_some() && cfg.rtsp_port == 0;
        for (key, port) in [
            ("rtsp_port", if rtsp_off { 1 } else { cfg.rtsp_port }),
            ("rtsps_port", cfg.rtsps_port),
            ("http_port", cfg.http_port),
            ("rtp_port", cfg.rtp_port),
            ("webrtc_port", cfg.webrtc.port),
        ] {
            if port == 0 {
                return Err(err(key, "must be a port number from 1 to 65535"));
            }
        }
        if cfg.rtp_port == u16::MAX || !cfg.rtp_port.is_multiple_of(2) {
            return Err(err(
                "rtp_port",
                format!(
                    "{} must be even and below 65535 (RTCP uses the next port)",
                    cfg.rtp_port
                ),
            ));
        }
        if cfg.rtsp_port == cfg.http_port {
            return Err(err(
                "http_port",
                format!("{} is also the RTSP port", cfg.http_port),
            ));
        }
        if cfg.tls.is_some() && [cfg.rtsp_port, cfg.http_port].contains(&cfg.rtsps_port) {
            return Err(err(
                "rtsps_port",
                format!("{} is also the RTSP or HTTP port", cfg.rtsps_port),
            ));
        }
        // ICE-TCP takes the same number on TCP; RTP/RTCP take two UDP ports.
        if cfg.webrtc.port == cfg.rtsp_port || cfg.webrtc.port == cfg.http_port {
            return Err(err(
                "webrtc_port",
                format!(
                    "{} is also the RTSP or HTTP port (ICE-TCP listens on the same number)",
                    cfg.webrtc.port
                ),
            ));
        }
        if cfg.webrtc.port == cfg.rtp_port || cfg.webrtc.port == cfg.rtp_port + 1 {
            return Err(err(
                "webrtc_port",
                format!("{} is also an RTP/RTCP port", cfg.webrtc.port),
            ));
        }
        if let Some(hosts) = &file.webrtc_additional_hosts {
            for (i, host) in hosts.iter().enumerate() {
                let key = format!("webrtc_additional_hosts[{i}]");
                cfg.webrtc.additional_hosts.push(parse_host(&key, host)?);
            }
        }
        if let Some(n) = file.webrtc_max_sessions {
            if n == 0 {
                return Err(err("webrtc_max_sessions", "must be at least 1"));
            }
            cfg.webrtc.max_sessions = n;
        }
        if let Some(n) = file.webrtc_post_rate {
            if n == 0 {
                return Err(err("webrtc_post_rate", "must be at least 1 per second"));
            }
            cfg.webrtc.post_rate = n;
        }
        if let Some(servers) = &file.webrtc_ice_servers {
            for (i, server) in servers.iter().enumerate() {
                let key = format!("webrtc_ice_servers[{i}]");
                cfg.webrtc
                    .ice_servers
                    .push(parse_ice_server(&key, server.clone())?);
            }
        }
        if let Some(mtu) = file.mtu {
            if !(576..=9000).contains(&mtu) {
                return Err(err("mtu", format!("{mtu} is outside 576..=9000 bytes")));
            }
            cfg.mtu = mtu;
        }
        if let Some(t) = file.rtsp_session_timeout {
            if t == 0 {
                return Err(err("rtsp_session_timeout", "must be at least 1 second"));
            }
            cfg.rtsp_session_timeout = std::time::Duration::from_secs(t);
        }
        if let Some(t) = file.write_timeout {
            if !(1..=600).contains(&t) {
                return Err(err("write_timeout", "must be 1 to 600 seconds"));
            }
            cfg.write_timeout = std::time::Duration::from_secs(t);
        }
        cfg.hls = HlsConfig::from_file(&file)?;
        if let Some(n) = file.max_paths {
            cfg.max_paths = n;
        }
        if let Some(n) = file.max_connections {
            if n == 0 {
                return Err(err("max_connections", "must be at least 1"));
            }
            cfg.max_connections = n;
        }
        if let Some(n) = file.max_connections_per_ip {
            cfg.max_connections_per_ip = n;
        }
        if let Some(hosts) = &file.api_allowed_hosts {
            for (i, host) in hosts.iter().enumerate() {
                let key = format!("api_allowed_hosts[{i}]");
                cfg.api_allowed_hosts
                    .push(parse_host(&key, host)?.to_ascii_lowercase());
            }
        }
        let default_transport = cli.transport.or(file.transport).unwrap_or_default();
        cfg.publish.allow_unconfigured = file.allow_unconfigured_publish.unwrap_or(false);
        let path_record: Vec<(String, record::FileRecord)> = file
            .paths
            .iter()
            .map(|(n, p)| (n.clone(), p.record_keys()))
            .collect();
        cfg.record = record::RecordConfig::from_file(
            &file.record_keys(),
            path_record.iter().map(|(n, r)| (n, r)),
        )?;

        for (name, p) in file.paths {
            let key = format!("paths.{name}");
            if !valid_path_name(&name) {
                return Err(err(&key, "a path name may only contain A-Z a-z 0-9 _ -"));
            }
            let source = p
                .source
                .ok_or_else(|| err(format!("{key}.source"), "missing"))?;
            if source == "publisher" {
                cfg.publish.paths.insert(
                    name,
                    PublisherPath {
                        override_publisher: p.override_publisher.unwrap_or(false),
                    },
                );
                continue;
            }
            if p.override_publisher.is_some() {
                return Err(err(
                    format!("{key}.override_publisher"),
                    "only for a path with source = \"publisher\"",
                ));
            }
            let src = parse_source(
                &format!("{key}.source"),
                &source,
                p.transport.unwrap_or(default_transport),
                p.user,
                p.pass,
            )?;
            let mut src = src;
            src.on_demand = OnDemand::from_keys(
                &key,
                p.source_on_demand,
                p.source_on_demand_start_timeout,
                p.source_on_demand_close_after,
            )?;
            let t = &mut src.transcode;
            t.mode = p.transcode.unwrap_or(t.mode);
            t.rtsp_codec = p.rtsp_codec.unwrap_or(t.rtsp_codec);
            t.audio = p.transcode_audio.unwrap_or(t.audio);
            if let Some(b) = p.transcode_bitrate {
                if !(100_000..=50_000_000).contains(&b) {
                    return Err(err(
                        format!("{key}.transcode_bitrate"),
                        "must be 100000..=50000000 (bit/s)",
                    ));
                }
                t.video_bitrate = Some(b);
            }
            if let Some(b) = p.opus_bitrate {
                if !(6_000..=510_000).contains(&b) {
                    return Err(err(
                        format!("{key}.opus_bitrate"),
                        "must be 6000..=510000 (bit/s, RFC 6716)",
                    ));
                }
                t.opus_bitrate = b;
            }
            cfg.paths.insert(name, src);
        }

        let mut next_unnamed = 1;
        for arg in &cli.sources {
            let (name, url) = split_named(arg);
            let name = match name {
                Some(n) => n.to_owned(),
                None => loop {
                    let candidate = format!("stream{next_unnamed}");
                    next_unnamed += 1;
                    if !cfg.paths.contains_key(&candidate) {
                        break candidate;
                    }
                },
            };
            let key = format!("source {name}");
            if cfg.paths.contains_key(&name) || cfg.publish.paths.contains_key(&name) {
                return Err(err(key, "this path name is used twice"));
            }
            let src = parse_source(&key, url, default_transport, None, None)?;
            cfg.paths.insert(name, src);
        }
        Ok(cfg)
    }
}

/// Validates one `webrtc_additional_hosts` entry: an IP address or a DNS
/// host name (RFC 1123 labels), without port or scheme.
fn parse_host(key: &str, raw: &str) -> Result<String, ConfigError> {
    let host = raw.trim();
    if host.parse::<IpAddr>().is_ok() {
        return Ok(host.to_owned());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(err(
            key,
            format!(
                "{raw:?} is neither an IP address nor a host name (give the address only, without port or scheme)"
            ),
        ));
    }
    Ok(host.to_owned())
}

/// Validates one `webrtc_ice_servers` entry: a `stun:`/`stuns:`/`turn:`/
/// `turns:` URI (RFC 7064, RFC 7065) with a host; TURN needs credentials.
fn parse_ice_server(key: &str, raw: FileIceServer) -> Result<IceServer, ConfigError> {
    let (url, username, credential) = match raw {
        FileIceServer::Url(url) => (url, None, None),
        FileIceServer::WithCredentials {
            url,
            username,
            credential,
        } => (url, username, credential),
    };
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(err(key, format!("{url:?} is not a stun: or turn: URI")));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
        return Err(err(
            key,
            format!("unsupported scheme {scheme:?}: expected stun:, stuns:, turn: or turns:"),
        ));
    }
    let host = rest.split(['?', ':']).next().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || rest.contains('"')
        || rest.contains('>')
        || rest.contains(char::is_whitespace)
    {
        return Err(err(key, format!("{url:?} has no valid host")));
    }
    let is_turn = scheme.starts_with("turn");
    if is_turn && (username.is_none() || credential.is_none()) {
        return Err(err(
            key,
            "a TURN server needs username and credential: { url = \"turn:...\", username = \"...\", credential = \"...\" }",
        ));
    }
    for (what, v) in [("username", &username), ("credential", &credential)] {
        if v.as_ref()
            .is_some_and(|v| v.contains(['"', '\\', '\r', '\n']))
        {
            return Err(err(
                key,
                format!("{what} may not contain quotes, backslashes or line breaks"),
            ));
        }
    }
    Ok(IceServer {
        url,
        username,
        credential,
    })
}

impl Config {
    /// Validates a config file's text as at start-up, with no command-line
    /// flags (the `config_file` fuzz target; `Err` names the key).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| err("file", e.to_string().trim_end().to_owned()))?;
        let cli = Cli {
            sources: Vec::new(),
            config: None,
            rtsp_port: None,
            http_port: None,
            listen: None,
            rtp_port: None,
            transport: None,
            webrtc_port: None,
            verbose: 0,
        };
        Config::build(&cli, file, None)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let key = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| err(&key, format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| err(&key, e.to_string().trim_end().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rtspgate").chain(args.iter().copied())).unwrap()
    }

    fn build_with(args: &[&str], toml_text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| err("file", e.to_string()))?;
        Config::build(&cli(args), file, None)
    }

    #[test]
    fn names_and_numbering() {
        let cfg = build_with(
            &[
                "rtsp://a/x",
                "cam=rtsp://u:p@b/y",
                "rtsp://c/z?x=1",
                "bad name=rtsp://d/",
            ],
            "",
        );
        // "bad name" is not a valid name, so the whole arg is a URL, which is invalid.
        assert!(cfg.is_err());
        let cfg = build_with(&["rtsp://a/x", "cam=rtsp://u:p@b/y", "rtsp://c/z?x=1"], "").unwrap();
        let names: Vec<_> = cfg.paths.keys().cloned().collect();
        assert_eq!(names, ["cam", "stream1", "stream2"]);
        let cam = &cfg.paths["cam"];
        assert_eq!(cam.user.as_deref(), Some("u"));
        assert_eq!(cam.pass.as_deref(), Some("p"));
        assert_eq!(cam.url.as_str(), "rtsp://b/y");
        assert_eq!(cam.display_url(), "rtsp://***@b/y");
        assert!(!format!("{cam:?}").contains(":p@"));
    }

    #[test]
    fn connection_caps() {
        let cfg = build_with(&[], "").unwrap();
        assert_eq!((cfg.max_connections, cfg.max_connections_per_ip), (4096, 0));
        let cfg = build_with(&[], "max_connections = 20\nmax_connections_per_ip = 5").unwrap();
        assert_eq!((cfg.max_connections, cfg.max_connections_per_ip), (20, 5));
        let e = build_with(&[], "max_connections = 0").unwrap_err();
        assert_eq!(e.key, "max_connections");
    }

    #[test]
    fn rtspt_means_tcp() {
        let cfg = build_with(&["rtspt://cam:554/live"], "").unwrap();
        let s = &cfg.paths["stream1"];
        assert_eq!(s.transport, TransportPref::Tcp);
        assert_eq!(s.url.as_str(), "rtsp://cam:554/live");
    }

    #[test]
    fn file_and_flags() {
        let cfg = build_with(
            &["--rtsp-port", "9554"],
            r#"
            rtsp_port = 1
            http_port = 9000
            transport = "udp"
            [paths.front]
            source = "rtsp://10.0.0.5/h264"
            user = "admin"
            pass = "s3cret"
            [paths.back]
            source = "rtsp://10.0.0.6/"
            transport = "tcp"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.rtsp_port, 9554);
        assert_eq!(cfg.http_port, 9000);
        assert_eq!(cfg.paths["front"].transport, TransportPref::Udp);
        assert_eq!(cfg.paths["back"].transport, TransportPref::Tcp);
        assert_eq!(cfg.paths["front"].pass.as_deref(), Some("s3cret"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = build_with(&[], "[paths.x]\nsource = \"http://a/\"").unwrap_err();
        assert_eq!(e.key, "paths.x.source");
        assert!(e.message.contains("scheme"), "{e}");
        let e = build_with(&[], "[paths.x]\ntransport = \"tcp\"").unwrap_err();
        assert_eq!(e.key, "paths.x.source");
        let e = build_with(&[], "[paths.\"a b\"]\nsource = \"rtsp://a/\"").unwrap_err();
        assert_eq!(e.key, "paths.a b");
        let e = build_with(&[], "rtp_port = 8001").unwrap_err();
        assert_eq!(e.key, "rtp_port");
        let e = build_with(&["x=rtsp://a/", "x=rtsp://b/"], "").unwrap_err();
        assert!(e.message.contains("twice"));
        let e: Result<FileConfig, _> = toml::from_str("rtsp_prot = 1");
        assert!(e.unwrap_err().to_string().contains("rtsp_prot"));
    }

    #[test]
    fn webrtc_settings() {
        let cfg = build_with(&[], "").unwrap();
        assert_eq!(cfg.webrtc.port, 8189);
        let cfg = build_with(
            &["--webrtc-port", "9189"],
            r#"
            webrtc_port = 1
            webrtc_additional_hosts = ["203.0.113.7", "gw.example.com", "::1"]
            webrtc_ice_servers = [
                "stun:stun.l.google.com:19302",
                { url = "turn:turn.example.com:3478?transport=udp", username = "u", credential = "p" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.webrtc.port, 9189);
        assert_eq!(
            cfg.webrtc.additional_hosts,
            ["203.0.113.7", "gw.example.com", "::1"]
        );
        assert_eq!(cfg.webrtc.ice_servers.len(), 2);
        assert_eq!(cfg.webrtc.ice_servers[1].credential.as_deref(), Some("p"));
        assert!(!format!("{:?}", cfg.webrtc.ice_servers[1]).contains("\"p\""));

        for (text, key) in [
            ("webrtc_port = 0", "webrtc_port"),
            ("webrtc_port = 8554", "webrtc_port"),
            ("webrtc_port = 8001", "webrtc_port"),
            (
                "webrtc_additional_hosts = [\"1.2.3.4:80\"]",
                "webrtc_additional_hosts[0]",
            ),
            (
                "webrtc_additional_hosts = [\"ok\", \"http://x\"]",
                "webrtc_additional_hosts[1]",
            ),
            (
                "webrtc_ice_servers = [\"http://stun.example.com\"]",
                "webrtc_ice_servers[0]",
            ),
            ("webrtc_ice_servers = [\"stun:\"]", "webrtc_ice_servers[0]"),
            (
                "webrtc_ice_servers = [\"turn:t.example.com\"]",
                "webrtc_ice_servers[0]",
            ),
        ] {
            let e = build_with(&[], text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn hls_keys() {
        let cfg = build_with(&[], "").unwrap();
        assert_eq!(cfg.hls, HlsConfig::default());
        assert_eq!(cfg.hls.allow_origin.as_deref(), Some("*"));
        let cfg = build_with(
            &[],
            r#"
            hls_part_duration = 300
            hls_segment_duration = 2000
            hls_segment_count = 5
            hls_idle_timeout = 10
            hls_always_on = true
            hls_allow_origin = "https://viewer.example:8443"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.hls.part_duration, std::time::Duration::from_millis(300));
        assert_eq!(cfg.hls.segment_duration, std::time::Duration::from_secs(2));
        assert_eq!(cfg.hls.segment_count, 5);
        assert_eq!(cfg.hls.idle_timeout, std::time::Duration::from_secs(10));
        assert!(cfg.hls.always_on);
        assert_eq!(
            cfg.hls.allow_origin.as_deref(),
            Some("https://viewer.example:8443")
        );
        let cfg = build_with(&[], "hls_allow_origin = \"\"").unwrap();
        assert_eq!(cfg.hls.allow_origin, None);

        for (text, key) in [
            ("hls_part_duration = 5", "hls_part_duration"),
            ("hls_part_duration = 1000", "hls_part_duration"),
            ("hls_segment_duration = 50", "hls_segment_duration"),
            ("hls_segment_count = 2", "hls_segment_count"),
            ("hls_idle_timeout = 0", "hls_idle_timeout"),
            ("hls_allow_origin = \"example.com\"", "hls_allow_origin"),
            (
                "hls_allow_origin = \"https://a.example/\"",
                "hls_allow_origin",
            ),
            ("hls_allow_origin = \"ftp://a.example\"", "hls_allow_origin"),
        ] {
            let e = build_with(&[], text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let e: Result<FileConfig, _> = toml::from_str("hls_always_on = 1");
        assert!(e.unwrap_err().to_string().contains("hls_always_on"));
    }

    #[test]
    fn redacts_userinfo_in_text() {
        assert_eq!(
            redact("failed: rtsp://admin:hunter2@10.0.0.1:554/s and rtsp://h/x"),
            "failed: rtsp://***@10.0.0.1:554/s and rtsp://h/x"
        );
        assert_eq!(redact("no urls here"), "no urls here");
    }

    #[test]
    fn percent_encoded_credentials() {
        let s = parse_source(
            "k",
            "rtsp://us%40r:p%3Ass@h/",
            TransportPref::Auto,
            None,
            None,
        )
        .unwrap();
        assert_eq!(s.user.as_deref(), Some("us@r"));
        assert_eq!(s.pass.as_deref(), Some("p:ss"));
    }
}
