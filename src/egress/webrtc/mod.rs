//! WebRTC egress over WHEP (draft-ietf-wish-whep; session handling as in
//! WHIP, RFC 9725 §4): one str0m `Rtc` per viewer, all on one UDP port (and
//! ICE-TCP on the same number), driven by one socket task.
//!
//! - [`offer`]: the parts of an SDP offer used for codec choice; trickle
//!   fragments.
//! - [`codecs`]: which track goes out with which offered codec (pure).
//! - [`reorder`]: B-frame detection, from the track's SPS summary.
//! - [`rtp`]: a path's frames cut into RTP payloads once, for all viewers.
//! - [`demux`]: STUN ufrag / remote address → session; RFC 4571 framing.
//! - [`session`]: one viewer, sans-IO around str0m.
//! - [`whip`]: one WHIP publisher (RFC 9725), sans-IO around str0m; its
//!   media goes to the bus through the gateway's [`PublishSink`].
//! - [`driver`]: the socket task.
//!
//! [`WebRtcEngine`] is what the HTTP handlers use: it negotiates a session
//! (offer in, answer out) and hands it to the driver. WHEP viewers and WHIP
//! publishers share the port, the driver, the session limits and the
//! resource rules (PATCH trickle, DELETE).
//!
//! ICE: rtspgate is ICE-lite (RFC 8445 §2.5): it announces host candidates
//! (the listening address(es) and `webrtc_additional_hosts`) and answers the
//! browser's checks; STUN/TURN servers are only offered to the browser.

pub mod codecs;
pub mod demux;
mod driver;
pub mod offer;
pub mod reorder;
pub mod rtp;
pub mod session;
pub mod whip;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::net::TcpType;
use str0m::Candidate;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::bus::{
    NewSession, Protocol, PublishError, PublishSink, Registry, Sessions, Stream, StreamState, Track,
};
use crate::config::rendition::Rendition;
use crate::config::{IceServer, WebRtcSettings, DEFAULT_MAX_CONNECTIONS};
use crate::limits::{ConnLimiter, Listener};

use driver::{Command, Driver};
pub use session::{format_id, parse_id, SessionId, WhepResource};

/// Why a WHEP request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    /// 400: unparsable offer or fragment.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such path or session.
    #[error("{0}")]
    NotFound(String),
    /// 412: `If-Match` names another ICE session.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 422: nothing in the offer can be sent, an unsupported ICE restart, or
    /// more trickled candidates than [`MAX_TRICKLE_CANDIDATES`].
    #[error("{0}")]
    Unprocessable(String),
    /// 503: the stream is not live, the WebRTC engine stopped, or
    /// `webrtc_max_sessions` sessions exist.
    #[error("{0}")]
    Unavailable(String),
    /// 429: this address sent more than `webrtc_post_rate` POSTs a second;
    /// retry after the given seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// 409 (WHIP): the path has a source already (another publisher or a
    /// configured camera).
    #[error("{0}")]
    Conflict(String),
}

/// Which kind of session resource a PATCH or DELETE names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A viewer, `/<path>/whep/<id>`.
    Whep,
    /// A publisher, `/<path>/whip/<id>`.
    Whip,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Whep => "WHEP",
            Resource::Whip => "WHIP",
        }
    }
}

/// Trickled ICE candidates (`a=candidate` lines of WHEP PATCHes, RFC 8840)
/// accepted per session, all PATCHes together; a PATCH that would go beyond
/// gets 422 and changes nothing. A browser gathers a handful (host, mDNS,
/// server-reflexive and relay, per interface and address family: a
/// dual-stack laptop on Wi-Fi and VPN with TURN over UDP and TCP sends ~20);
/// without a cap every candidate grows the session's ICE agent (each one is
/// paired and compared with every pair before it) for as long as the
/// session lives.
pub const MAX_TRICKLE_CANDIDATES: usize = 64;

/// A negotiated session, for the `201 Created` response.
#[derive(Debug)]
pub struct Created {
    pub id: SessionId,
    /// SDP answer (RFC 8866, CRLF line ends).
    pub answer: String,
    /// Entity tag of the ICE session (quoted), RFC 9110 §8.8.3.
    pub etag: String,
    /// The stream the viewer reads: the path asked for or its rendition
    /// (`cam~opus`); the session's resource URL is under it.
    pub path: String,
}

/// State shared by the HTTP side and the socket task.
pub(crate) struct Shared {
    /// Negotiated sessions by id, for routing WHEP PATCH and DELETE. The
    /// API lists them from the gateway's session registry.
    sessions: Mutex<HashMap<SessionId, Arc<WhepResource>>>,
    /// Per-path warnings found while sending (B-frames).
    warnings: Mutex<HashMap<String, Vec<String>>>,
    /// Packets dropped because a socket buffer or a TCP queue was full.
    drops: AtomicU64,
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<WhepResource>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn remove_session(&self, id: SessionId) {
        self.sessions().remove(&id);
    }

    pub(crate) fn note_drop(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_warning(&self, path: &str, text: &str) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        let list = w.entry(path.to_owned()).or_default();
        if !list.iter().any(|t| t == text) {
            list.push(text.to_owned());
        }
    }
}

/// How long a viewer's offer waits for a rendition that was just started
/// to describe its tracks (an H.264 encoder needs the first picture).
const RENDITION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what} {addr}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The WebRTC side of the gateway: negotiates WHEP sessions and owns the
/// socket task. Dropping it stops the task and closes every session.
pub struct WebRtcEngine {
    settings: WebRtcSettings,
    /// Bound UDP (and ICE-TCP) address.
    local: SocketAddr,
    /// IPs announced as host candidates from the listening address.
    host_ips: Vec<IpAddr>,
    tcp: bool,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// The gateway's registry of reader sessions of every egress (API list
    /// and kick, reader counts); WHEP sessions join as `webrtc`.
    registry: Arc<Sessions>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    /// One DTLS certificate for every session, made at start: making one
    /// per POST costs a key generation and memory per unconnected session.
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// WHEP POST budget per client address.
    post_rate: Mutex<RateLimiter>,
    /// Where WHIP publishers' streams go (wired by `lib.rs`, like the RTSP
    /// server's); WHIP answers 503 until it is set.
    publish: std::sync::OnceLock<Arc<dyn PublishSink>>,
}

/// A token bucket per address: `rate` tokens a second, at most `rate`
/// stored. Sans-IO: time is passed in.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    /// Address → (tokens left, when last refilled).
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Addresses remembered at most; full buckets are forgotten first.
const MAX_RATE_ENTRIES: usize = 10_000;

impl RateLimiter {
    pub fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip`; `Err(seconds to wait)` when none is left.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let rate = f64::from(self.rate);
        if self.buckets.len() >= MAX_RATE_ENTRIES {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < rate
            });
            if self.buckets.len() >= MAX_RATE_ENTRIES {
                self.buckets.clear();
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(1)
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_per_address() {
        let mut r = RateLimiter::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(r.take(a, t0), Ok(()));
        assert_eq!(r.take(a, t0), Ok(()));
        assert_eq!(r.take(a, t0), Err(1), "burst of 2 used up");
        assert_eq!(r.take(b, t0), Ok(()), "addresses don't share a bucket");
        assert_eq!(
            r.take(a, t0 + Duration::from_millis(600)),
            Ok(()),
            "refilled at 2/s"
        );
        assert_eq!(r.take(a, t0 + Duration::from_millis(700)), Err(1));
    }
}

impl Drop for WebRtcEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebRtcEngine {
    /// Binds UDP `listen:settings.port` and ICE-TCP on the same number, and
    /// starts the socket task. Port 0 picks a free port for both (tests).
    /// Sessions are registered in `registry`. Must run inside a tokio
    /// runtime.
    pub async fn start(
        listen: IpAddr,
        settings: WebRtcSettings,
        registry: Arc<Sessions>,
    ) -> Result<Arc<Self>, BindError> {
        let ice_tcp = ConnLimiter::new(Listener::IceTcp, DEFAULT_MAX_CONNECTIONS, 0);
        Self::start_with_cap(listen, settings, registry, ice_tcp).await
    }

    /// [`WebRtcEngine::start`] with ICE-TCP connections capped by `ice_tcp`
    /// (one over the cap is closed at once).
    pub async fn start_with_cap(
        listen: IpAddr,
        settings: WebRtcSettings,
        registry: Arc<Sessions>,
        ice_tcp: Arc<ConnLimiter>,
    ) -> Result<Arc<Self>, BindError> {
        let (udp, tcp) = bind(listen, settings.port).await?;
        let local = udp.local_addr().map_err(|source| BindError {
            what: "WebRTC UDP port",
            addr: SocketAddr::new(listen, settings.port),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            sessions: Mutex::new(HashMap::new()),
            warnings: Mutex::new(HashMap::new()),
            drops: AtomicU64::new(0),
        });
        let tcp_enabled = tcp.is_some();
        let driver =
            Driver::new(udp, tcp, ice_tcp, rx, shared.clone()).map_err(|source| BindError {
                what: "WebRTC UDP port",
                addr: local,
                source,
            })?;
        let task = tokio::spawn(driver.run());
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        if dtls_cert.is_none() {
            tracing::warn!("no shared DTLS certificate: each WHEP session makes its own");
        }
        let post_rate = Mutex::new(RateLimiter::new(settings.post_rate));
        Ok(Arc::new(WebRtcEngine {
            publish: std::sync::OnceLock::new(),
            dtls_cert,
            post_rate,
            settings,
            local,
            host_ips: host_ips(listen),
            tcp: tcp_enabled,
            commands: tx,
            shared,
            registry,
            task,
            started: Instant::now(),
        }))
    }

    /// Sets where WHIP publishers' streams go; the first call wins.
    pub fn set_publish_sink(&self, sink: Arc<dyn PublishSink>) {
        let _ = self.publish.set(sink);
    }

    /// Where WHIP publishers' streams go, once set.
    pub fn publish_sink(&self) -> Option<&Arc<dyn PublishSink>> {
        self.publish.get()
    }

    /// The bound UDP address (ICE-TCP listens on the same port number).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// STUN/TURN servers to offer clients.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.settings.ice_servers
    }

    /// Local candidates for a new session: UDP host candidates and ICE-TCP
    /// passive ones (RFC 6544 §4.5) on every host IP and on each configured
    /// additional host (host names resolved now).
    async fn candidates(&self) -> Vec<Candidate> {
        let port = self.local.port();
        let mut ips = self.host_ips.clone();
        for host in &self.settings.additional_hosts {
            match host.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(addrs) => ips.extend(addrs.map(|a| a.ip())),
                    Err(e) => tracing::warn!(
                        "webrtc_additional_hosts: cannot resolve {host:?}: {e}; not announced"
                    ),
                },
            }
        }
        let mut seen = Vec::new();
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        let mut out = Vec::new();
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            match Candidate::host(addr, "udp") {
                Ok(c) => out.push(c),
                Err(e) => tracing::debug!("no UDP candidate for {addr}: {e}"),
            }
            if self.tcp {
                match Candidate::builder()
                    .tcp()
                    .host(addr)
                    .tcptype(TcpType::Passive)
                    .build()
                {
                    Ok(c) => out.push(c),
                    Err(e) => tracing::debug!("no ICE-TCP candidate for {addr}: {e}"),
                }
            }
        }
        out
    }

    /// Whether a WHEP POST from `ip` (when known) may go ahead:
    /// `Err(TooManyRequests)` beyond `webrtc_post_rate` a second from that
    /// address, `Err(Unavailable)` when `webrtc_max_sessions` sessions exist.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<(), WhepError> {
        if let Some(ip) = ip.map(crate::config::auth::canonical_ip) {
            self.post_rate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(ip, Instant::now())
                .map_err(|wait| {
                    WhepError::TooManyRequests(
                        format!(
                            "more than {} WHEP requests a second from {ip}",
                            self.settings.post_rate
                        ),
                        wait,
                    )
                })?;
        }
        let n = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if n >= self.settings.max_sessions {
            return Err(WhepError::Unavailable(format!(
                "{n} WebRTC sessions already (webrtc_max_sessions); try again later"
            )));
        }
        Ok(())
    }

    /// Negotiates a viewer of `stream`: WHEP `POST` (draft-ietf-wish-whep §4.2).
    /// `user` is who the HTTP layer authenticated (`None`: anonymous), shown
    /// on the session's registry entry.
    ///
    /// Errors: 503 when the stream is not live, 400 for an unparsable offer,
    /// 422 when no track can be sent with the offered codecs.
    ///
    /// A viewer that can't take the stream's audio or video as it is gets a
    /// rendition from `streams` ([`codecs::wanted_rendition`]: AAC/G.711 →
    /// Opus, H.265 → H.264), started if it isn't running; if that can't be
    /// made, the stream as it is, with the reason in the answer's notes.
    pub async fn create_session(
        &self,
        stream: Arc<Stream>,
        offer: &str,
        user: Option<String>,
        streams: &Arc<Registry>,
    ) -> Result<Created, WhepError> {
        let path = stream.name().to_owned();
        if stream.on_demand().is_some() {
            // Starts the source; answered once it is live.
            stream
                .wait_ready(std::time::Duration::ZERO)
                .await
                .map_err(WhepError::Unavailable)?;
        }
        let (stream, rendition_note) = self.rendition_for(stream, offer, streams).await;
        if let Some(note) = rendition_note {
            // Shown in the API's webrtc notes for the path.
            tracing::info!(path, "{note}");
            self.shared.set_warning(&path, &note);
        }
        self.create_session_on(stream, offer, user).await
    }

    /// The stream a viewer with `offer` gets: `stream` or one of its
    /// renditions; with a note when a wanted rendition could not be made.
    async fn rendition_for(
        &self,
        stream: Arc<Stream>,
        offer: &str,
        streams: &Arc<Registry>,
    ) -> (Arc<Stream>, Option<String>) {
        if Rendition::parse(stream.name()).is_some_and(|(_, r)| !r.is_none()) {
            // Asked for by name, perhaps just started.
            stream.wait_for_tracks(RENDITION_WAIT).await;
        }
        let (Some(tracks), Ok(summary)) = (stream.tracks(), offer::parse_offer(offer)) else {
            return (stream, None);
        };
        let Some((base, already)) = Rendition::parse(stream.name()) else {
            return (stream, None);
        };
        if !already.is_none() {
            // The viewer asked for a rendition by name (tracks known: it runs).
            return (stream, None);
        }
        let direct = codecs::plan(&tracks.tracks, &summary).ok();
        let settings = streams.transcode_settings(base);
        let want = codecs::wanted_rendition(&tracks.tracks, &summary, direct.as_ref(), &settings);
        if want.is_none() {
            return (stream, None);
        }
        let name = want.name(base);
        match streams.open(&name) {
            Ok(Some(r)) => {
                if r.wait_for_tracks(RENDITION_WAIT).await.is_some() {
                    return (r, None);
                }
                let note = format!(
                    "{name} gave no tracks within {} s",
                    RENDITION_WAIT.as_secs()
                );
                (stream, Some(note))
            }
            Ok(None) => (stream, None),
            Err(e) => (stream, Some(format!("not transcoded ({name}): {e}"))),
        }
    }

    async fn create_session_on(
        &self,
        stream: Arc<Stream>,
        offer: &str,
        user: Option<String>,
    ) -> Result<Created, WhepError> {
        let tracks = match (stream.state(), stream.tracks()) {
            (StreamState::Live, Some(t)) => t,
            (StreamState::Live, None) => {
                return Err(WhepError::Unavailable(
                    "the stream has no tracks yet".to_owned(),
                ))
            }
            (StreamState::Idle, _) => {
                return Err(WhepError::Unavailable(
                    "the on-demand source is idle".to_owned(),
                ))
            }
            (StreamState::Waiting, _) => {
                return Err(WhepError::Unavailable(
                    "the stream is not live yet: rtspgate is still connecting to the source"
                        .to_owned(),
                ))
            }
            (StreamState::Reconnecting { error }, _) => {
                return Err(WhepError::Unavailable(format!(
                    "the stream is not live: {error}; retrying"
                )))
            }
            (StreamState::Failed { reason }, _) => {
                return Err(WhepError::Unavailable(format!(
                    "the stream is not live: {reason}"
                )))
            }
        };
        let summary = offer::parse_offer(offer)
            .map_err(|e| WhepError::BadRequest(format!("bad SDP offer: {e}")))?;
        let plan = codecs::plan(&tracks.tracks, &summary)
            .map_err(|e| WhepError::Unprocessable(e.to_string()))?;
        let candidates = self.candidates().await;
        let id: SessionId = rand::random();
        let (session, answer) = session::Session::new(session::SessionParams {
            id,
            path: stream.name().to_owned(),
            offer,
            summary: &summary,
            plan: &plan,
            tracks: &tracks,
            candidates,
            dtls_cert: self.dtls_cert.as_ref(),
            now: Instant::now(),
        })
        .map_err(|e| WhepError::BadRequest(e.to_string()))?;
        let handle = session.handle().clone();
        let etag = format!("\"{}\"", handle.ice_ufrag);
        let registration = self.registry.register(
            NewSession {
                id: &format_id(id),
                path: stream.name(),
                // Learned from ICE; the detail supplies it.
                remote: None,
                user,
            },
            handle.clone(),
        );
        // An operator's kick (DELETE /api/v1/sessions/webrtc-<id>) ends the
        // session like a WHEP DELETE; the waiter dies with the session.
        let kick_waiter = {
            let kicked = registration.kicked();
            let tx = self.commands.clone();
            driver::AbortOnDrop(tokio::spawn(async move {
                kicked.await;
                let _ = tx.send(Command::Remove {
                    id,
                    reason: "ended by the operator (API kick)".to_owned(),
                });
            }))
        };
        self.shared.sessions().insert(id, handle);
        let path = stream.name().to_owned();
        if self
            .commands
            .send(Command::Add {
                session: Box::new(session),
                stream,
                registration,
                kick_waiter,
            })
            .is_err()
        {
            self.shared.remove_session(id);
            return Err(WhepError::Unavailable(
                "the WebRTC engine has stopped".to_owned(),
            ));
        }
        Ok(Created {
            id,
            answer,
            etag,
            path,
        })
    }

    /// Negotiates a publisher of `path`: WHIP `POST` (RFC 9725 §4.2).
    /// `user` is who the HTTP layer let publish (`None`: anonymous).
    ///
    /// The path is opened on the publish sink before the answer goes out,
    /// so a refusal is the POST's answer: 409 when the path has a source
    /// already ([`PublishError::PathInUse`]), 422 for unusable tracks or an
    /// offer with neither H.264 video nor Opus audio to send, 400 for an
    /// unparsable offer, 503 when no sink is wired. The path lives while
    /// the session does (DELETE, ICE consent lost, kick, publication
    /// error: its readers are ended then).
    pub async fn create_publisher(
        &self,
        path: &str,
        offer: &str,
        user: Option<String>,
    ) -> Result<Created, WhepError> {
        let Some(sink) = self.publish.get().cloned() else {
            return Err(WhepError::Unavailable(
                "publishing is not enabled on this gateway".to_owned(),
            ));
        };
        let summary = offer::parse_offer(offer)
            .map_err(|e| WhepError::BadRequest(format!("bad SDP offer: {e}")))?;
        let candidates = self.candidates().await;
        let id: SessionId = rand::random();
        let (session, answer) = whip::PublishSession::new(whip::PublishParams {
            id,
            path: path.to_owned(),
            offer,
            summary: &summary,
            candidates,
            dtls_cert: self.dtls_cert.as_ref(),
            sink: sink.as_ref(),
            now: Instant::now(),
        })
        .map_err(|e| match e {
            whip::PublishSessionError::BadOffer(m) => WhepError::BadRequest(m),
            whip::PublishSessionError::NothingUsable(m) => WhepError::Unprocessable(m),
            whip::PublishSessionError::Publish(e) => publish_error(e),
        })?;
        let handle = session.handle().clone();
        let etag = format!("\"{}\"", handle.ice_ufrag);
        let registration = self.registry.register(
            NewSession {
                id: &format_id(id),
                path,
                remote: None,
                user,
            },
            handle.clone(),
        );
        let kick_waiter = {
            let kicked = registration.kicked();
            let tx = self.commands.clone();
            driver::AbortOnDrop(tokio::spawn(async move {
                kicked.await;
                let _ = tx.send(Command::Remove {
                    id,
                    reason: "ended by the operator (API kick)".to_owned(),
                });
            }))
        };
        self.shared.sessions().insert(id, handle);
        if self
            .commands
            .send(Command::AddPublisher {
                session: Box::new(session),
                registration,
                kick_waiter,
            })
            .is_err()
        {
            self.shared.remove_session(id);
            return Err(WhepError::Unavailable(
                "the WebRTC engine has stopped".to_owned(),
            ));
        }
        Ok(Created {
            id,
            answer,
            etag,
            path: path.to_owned(),
        })
    }

    fn session(
        &self,
        kind: Resource,
        path: &str,
        id: SessionId,
    ) -> Result<Arc<WhepResource>, WhepError> {
        self.shared
            .sessions()
            .get(&id)
            .filter(|h| h.path == path && h.publisher == (kind == Resource::Whip))
            .cloned()
            .ok_or_else(|| WhepError::NotFound(format!("no such {} session", kind.name())))
    }

    /// Trickle ICE: WHEP `PATCH` with an `application/trickle-ice-sdpfrag`
    /// body (RFC 8840 §9, RFC 9725 §4.3.1).
    ///
    /// `if_match` is the request's `If-Match` value: `*` or a different
    /// ICE ufrag means an ICE restart, which is not supported (422, the
    /// client should start a new session); another entity tag is 412.
    pub fn patch(
        &self,
        path: &str,
        id: SessionId,
        if_match: Option<&str>,
        body: &str,
    ) -> Result<(), WhepError> {
        self.patch_resource(Resource::Whep, path, id, if_match, body)
    }

    /// [`WebRtcEngine::patch`] for a resource of either kind (WHIP PATCH
    /// follows the same rules, RFC 9725 §4.3).
    pub fn patch_resource(
        &self,
        kind: Resource,
        path: &str,
        id: SessionId,
        if_match: Option<&str>,
        body: &str,
    ) -> Result<(), WhepError> {
        let handle = self.session(kind, path, id)?;
        let frag = offer::parse_sdpfrag(body)
            .map_err(|e| WhepError::BadRequest(format!("bad SDP fragment: {e}")))?;
        const RESTART: &str =
            "ICE restarts are not supported: DELETE this session and POST a new offer";
        match if_match.map(str::trim) {
            Some("*") => return Err(WhepError::Unprocessable(RESTART.to_owned())),
            Some(tag) => {
                let etag = format!("\"{}\"", handle.ice_ufrag);
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                if tag != etag {
                    return Err(WhepError::PreconditionFailed(format!(
                        "If-Match {tag} does not match this ICE session's ETag {etag}"
                    )));
                }
            }
            None => {}
        }
        if let (Some(new), Some(old)) = (&frag.ice_ufrag, &handle.remote_ufrag) {
            if new != old {
                return Err(WhepError::Unprocessable(RESTART.to_owned()));
            }
        }
        let mut candidates = Vec::new();
        for line in &frag.candidates {
            match Candidate::from_sdp_string(line) {
                Ok(c) => candidates.push(c),
                // mDNS host names (RFC 8828 §5.2) cannot be resolved here; as
                // an ICE-lite agent we learn the browser's address from its
                // STUN checks anyway.
                Err(_) if line.contains(".local ") => {}
                Err(e) => {
                    return Err(WhepError::BadRequest(format!(
                        "bad candidate {line:?}: {e}"
                    )))
                }
            }
        }
        // Counted once the whole fragment is valid, so a rejected PATCH
        // costs the session nothing.
        let n = frag.candidates.len();
        if handle
            .trickled
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |had| {
                had.checked_add(n).filter(|&t| t <= MAX_TRICKLE_CANDIDATES)
            })
            .is_err()
        {
            return Err(WhepError::Unprocessable(format!(
                "too many ICE candidates: this PATCH has {n}, and a session takes at most \
                 {MAX_TRICKLE_CANDIDATES} trickled candidates in all ({} so far); \
                 the session goes on with those it has",
                handle.trickled.load(Ordering::Relaxed)
            )));
        }
        if !candidates.is_empty() {
            self.commands
                .send(Command::Candidates { id, candidates })
                .map_err(|_| WhepError::Unavailable("the WebRTC engine has stopped".to_owned()))?;
        }
        Ok(())
    }

    /// Ends a session: WHEP `DELETE` (RFC 9725 §4.2). Its resources are
    /// freed by the socket task right away.
    pub fn delete(&self, path: &str, id: SessionId) -> Result<(), WhepError> {
        self.delete_resource(Resource::Whep, path, id)
    }

    /// [`WebRtcEngine::delete`] for a resource of either kind; a WHIP
    /// publisher's path ends with it.
    pub fn delete_resource(
        &self,
        kind: Resource,
        path: &str,
        id: SessionId,
    ) -> Result<(), WhepError> {
        let handle = self.session(kind, path, id)?;
        self.shared.remove_session(handle.id);
        let who = match kind {
            Resource::Whep => "viewer",
            Resource::Whip => "publisher",
        };
        let _ = self.commands.send(Command::Remove {
            id,
            reason: format!("ended by the {who} (DELETE)"),
        });
        Ok(())
    }

    /// Warnings about a path's stream found while sending (e.g. B-frames).
    pub fn warnings(&self, path: &str) -> Vec<String> {
        self.shared
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Packets dropped since start because a socket buffer or a viewer's
    /// TCP queue was full.
    pub fn dropped_packets(&self) -> u64 {
        self.shared.drops.load(Ordering::Relaxed)
    }

    /// Time since the engine started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl crate::egress::Egress for WebRtcEngine {
    fn protocol(&self) -> Protocol {
        Protocol::WebRtc
    }

    fn label(&self) -> &'static str {
        "WebRTC"
    }

    fn carriage(&self, tracks: &[Arc<Track>]) -> Vec<Result<(), String>> {
        tracks
            .iter()
            .map(|t| codecs::webrtc_support(&t.codec, t.clock_rate))
            .collect()
    }

    fn notes(&self, stream: &Stream) -> Vec<String> {
        self.warnings(stream.name())
    }
}

/// The WHIP answer to a refusal of the publish sink: 409 for a path that
/// has a source already (a camera, another publisher), 422 for tracks it
/// can't take, 404 for a path that takes no publishers (not configured
/// with `source = "publisher"`, `allow_unconfigured_publish` off), as RTSP
/// ANNOUNCE answers.
fn publish_error(e: PublishError) -> WhepError {
    match e {
        PublishError::PathInUse(_) => WhepError::Conflict(e.to_string()),
        PublishError::Tracks(_) => WhepError::Unprocessable(e.to_string()),
        PublishError::NotPublishable(_) => WhepError::NotFound(e.to_string()),
    }
}

/// Binds UDP and TCP on the same port number. With port 0, retries a few
/// ephemeral UDP ports until TCP can take the same number.
async fn bind(listen: IpAddr, port: u16) -> Result<(UdpSocket, Option<TcpListener>), BindError> {
    let addr = SocketAddr::new(listen, port);
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await.map_err(|source| BindError {
            what: "WebRTC UDP port",
            addr,
            source,
        })?;
        let bound = udp.local_addr().map_err(|source| BindError {
            what: "WebRTC UDP port",
            addr,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, Some(tcp))),
            Err(_) if port == 0 => continue,
            Err(source) => {
                return Err(BindError {
                    what: "WebRTC ICE-TCP port",
                    addr: bound,
                    source,
                })
            }
        }
    }
    // Could not pair an ephemeral UDP port with TCP: run UDP-only.
    let udp = UdpSocket::bind(addr).await.map_err(|source| BindError {
        what: "WebRTC UDP port",
        addr,
        source,
    })?;
    Ok((udp, None))
}

/// Host-candidate IPs for the listening address: the address itself, or,
/// for a wildcard, every interface address of that family except loopback
/// and link-local (loopback only if there is nothing else).
fn host_ips(listen: IpAddr) -> Vec<IpAddr> {
    if !listen.is_unspecified() {
        return vec![listen];
    }
    let v4 = listen.is_ipv4();
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == v4 && !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V4(a) => !a.is_link_local(),
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(if v4 {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ips_for_specific_and_wildcard() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(host_ips(lo), vec![lo]);
        let any = host_ips(IpAddr::from([0, 0, 0, 0]));
        assert!(!any.is_empty());
        assert!(any.iter().all(|ip| ip.is_ipv4() && !ip.is_unspecified()));
    }

    #[tokio::test]
    async fn binds_udp_and_tcp_on_one_port() {
        let e = WebRtcEngine::start(
            IpAddr::from([127, 0, 0, 1]),
            WebRtcSettings {
                port: 0,
                ..WebRtcSettings::default()
            },
            Sessions::new(),
        )
        .await
        .unwrap();
        let port = e.local_addr().port();
        assert_ne!(port, 0);
        let c = e.candidates().await;
        assert_eq!(c.len(), 2, "UDP + ICE-TCP passive: {c:?}");
        assert!(c.iter().all(|c| c.addr().port() == port));
        assert!(
            c[1].to_sdp_string().contains("tcptype passive"),
            "{}",
            c[1].to_sdp_string()
        );
        // The same port is now taken for a second engine.
        let second = WebRtcEngine::start(
            IpAddr::from([127, 0, 0, 1]),
            WebRtcSettings {
                port,
                ..WebRtcSettings::default()
            },
            Sessions::new(),
        )
        .await;
        assert!(second.is_err());
    }

    /// An ICE-TCP connection that never speaks is closed after 10 s; one
    /// whose first frame belongs to no session, at once.
    #[tokio::test(start_paused = true)]
    async fn silent_ice_tcp_connections_are_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let e = WebRtcEngine::start(
            IpAddr::from([127, 0, 0, 1]),
            WebRtcSettings {
                port: 0,
                ..WebRtcSettings::default()
            },
            Sessions::new(),
        )
        .await
        .unwrap();
        let addr = e.local_addr();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), silent.read(&mut buf))
            .await
            .expect("closed by the gateway")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let waited = t0.elapsed().as_secs();
        assert!((10..12).contains(&waited), "closed after {waited} s");

        let mut spoke = tokio::net::TcpStream::connect(addr).await.unwrap();
        spoke.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), spoke.read(&mut buf))
            .await
            .expect("closed by the gateway")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            t0.elapsed().as_secs() < 1,
            "a frame no session knows is closed at once"
        );
    }
}
