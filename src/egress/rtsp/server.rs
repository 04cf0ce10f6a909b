//! The RTSP server's I/O shell: accepts connections (RTSP over TCP, RTSPS
//! over TLS), parses messages with rtsp-types, asks the authenticator what
//! [`session::Conn::access`] says a request needs, drives
//! [`session::Conn`], and writes shared RTP packets to readers over TCP
//! (interleaved) or UDP.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use rtsp_types::{headers, Message, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::framing::{Framer, Next};
use super::media::{MediaRegistry, RtpBatch, RtpMedia};
use super::rtcp;
use super::sdp;
use super::session::{Access, Conn, Ctx, Effect, PathStatus, Paths, TrackTransport};
use crate::auth::credentials::{self, Credentials};
use crate::auth::{self, Authenticator, Decision};
use crate::bus::sessions::{RtspDetail, RtspTrackDetail, RtspTransport};
use crate::bus::{
    Detail, NewSession, Publication, PublishError, PublishSink, Registry, SessionHandle, Sessions,
    StreamState, Subscriber,
};
use crate::config::rendition::{Rendition, RtspCodec};
use crate::egress::gso::gso_run;
use crate::limits::{self, ConnLimiter};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest RTP packet, header included, in bytes.
    pub mtu: usize,
    pub session_timeout: Duration,
    /// Log every request and response (`-vv`).
    pub log_messages: bool,
    /// How long DESCRIBE/SETUP wait for a stream that is connecting.
    pub describe_wait: Duration,
    /// How long one write to a client may take (a reader that stops
    /// reading is dropped after this).
    pub write_timeout: Duration,
}

/// How long a request may take from its first byte to its last.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection without a session may stay silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between RTCP sender reports (RFC 3550 §6.2 suggests ~5 s).
const SR_INTERVAL: Duration = Duration::from_secs(5);
/// Batches (frames) already queued for a reader that are written together,
/// in one vectored write.
const MAX_COALESCE: usize = 64;
/// How long an RTSPS client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The RTSP server, shared by all connection tasks.
pub struct RtspServer {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    media: MediaRegistry,
    config: ServerConfig,
    udp_rtp: Arc<UdpSocket>,
    /// quinn-udp state of `udp_rtp`: GSO sends (one syscall for a frame's
    /// equal-sized packets).
    udp_rtp_state: quinn_udp::UdpSocketState,
    udp_rtcp: Arc<UdpSocket>,
    rtp_port: u16,
    /// Last RTCP seen from each UDP reader's RTCP address (ms since `start`),
    /// so UDP readers stay alive on receiver reports alone.
    udp_activity: Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>,
    start: Instant,
    /// Where streams pushed with ANNOUNCE/RECORD go (wired by `lib.rs`);
    /// without one, ANNOUNCE is answered 501.
    publish: std::sync::OnceLock<Arc<dyn PublishSink>>,
    /// Publishers recording over UDP: their RTP source address → (track,
    /// their connection's queue).
    udp_publishers: Mutex<HashMap<SocketAddr, (usize, UdpIntake)>>,
    /// Asked before DESCRIBE, SETUP, PLAY, ANNOUNCE and RECORD.
    auth: Arc<Authenticator>,
}

/// The stream that serves `path` to RTSP readers: the path itself, or its
/// `~h264` rendition when the path has `rtsp_codec = "h264"` and the camera
/// sends H.265 (old NVRs that reject H.265).
fn served_name(registry: &Registry, path: &str) -> String {
    let Some((base, rendition)) = Rendition::parse(path) else {
        return path.to_owned();
    };
    if !rendition.is_none() || registry.transcode_settings(base).rtsp_codec != RtspCodec::H264 {
        return path.to_owned();
    }
    let h265 = registry
        .get(base)
        .and_then(|s| s.tracks())
        .is_some_and(|set| {
            set.tracks
                .iter()
                .any(|t| matches!(t.codec, crate::bus::Codec::H265 { .. }))
        });
    if h265 {
        Rendition {
            video_h264: true,
            audio_opus: false,
        }
        .name(base)
    } else {
        path.to_owned()
    }
}

impl Paths for Registry {
    fn status(&self, path: &str) -> PathStatus {
        let Some(stream) = self.get(&served_name(self, path)) else {
            return PathStatus::Unknown;
        };
        match stream.tracks() {
            Some(set) => PathStatus::Ready(set),
            None => PathStatus::NotReady(match stream.state() {
                StreamState::Reconnecting { error } => format!("source not live: {error}"),
                StreamState::Failed { reason } => format!("source failed: {reason}"),
                _ => "source not live yet".to_owned(),
            }),
        }
    }
}

impl RtspServer {
    /// Binds the UDP RTP/RTCP sockets (`rtp_port`, `rtp_port + 1`) on `ip`.
    /// Every request that reads or publishes a path is checked with `auth`.
    pub async fn new(
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
        auth: Arc<Authenticator>,
        config: ServerConfig,
        ip: std::net::IpAddr,
        rtp_port: u16,
    ) -> std::io::Result<Arc<Self>> {
        let udp_rtp = UdpSocket::bind((ip, rtp_port)).await?;
        let udp_rtcp = UdpSocket::bind((ip, rtp_port + 1)).await?;
        let udp_rtp_state = quinn_udp::UdpSocketState::new((&udp_rtp).into())?;
        let server = Arc::new(RtspServer {
            registry,
            sessions,
            media: MediaRegistry::default(),
            config,
            udp_rtp: Arc::new(udp_rtp),
            udp_rtp_state,
            udp_rtcp: Arc::new(udp_rtcp),
            rtp_port,
            udp_activity: Mutex::new(HashMap::new()),
            start: Instant::now(),
            publish: std::sync::OnceLock::new(),
            udp_publishers: Mutex::new(HashMap::new()),
            auth,
        });
        tokio::spawn(server.clone().drain_udp());
        Ok(server)
    }

    /// Sets where pushed streams go; the first call wins.
    pub fn set_publish_sink(&self, sink: Arc<dyn PublishSink>) {
        let _ = self.publish.set(sink);
    }

    /// Where pushed streams go, once set.
    pub fn publish_sink(&self) -> Option<&Arc<dyn PublishSink>> {
        self.publish.get()
    }

    /// Accepts RTSP connections for ever; one over `limiter`'s caps is
    /// answered `503` unread and closed.
    pub async fn run(self: Arc<Self>, listener: TcpListener, limiter: Arc<ConnLimiter>) {
        loop {
            let (socket, peer, local) = accept(&listener, "RTSP").await;
            let permit = match limiter.try_acquire(peer.ip()) {
                Ok(p) => p,
                Err(refused) => {
                    limits::refuse(socket, refused.rtsp_answer());
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                server
                    .connection(socket, peer, local, auth::Protocol::Rtsp)
                    .await
            });
        }
    }

    /// Accepts RTSPS connections for ever: each does its TLS handshake
    /// (within [`TLS_HANDSHAKE_TIMEOUT`]; a failed one just closes), then
    /// is served like a plain one, with RTP interleaved inside TLS only.
    /// One over `limiter`'s caps is closed at once: an answer would need a
    /// TLS handshake, the CPU a flood must not get.
    pub async fn run_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: tokio_rustls::TlsAcceptor,
        limiter: Arc<ConnLimiter>,
    ) {
        loop {
            let (socket, peer, local) = accept(&listener, "RTSPS").await;
            let Ok(permit) = limiter.try_acquire(peer.ip()) else {
                limits::refuse(socket, b"");
                continue;
            };
            let (server, tls) = (self.clone(), tls.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        server
                            .connection(stream, peer, local, auth::Protocol::Rtsps)
                            .await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "RTSPS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "RTSPS handshake timed out"),
                }
            });
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Reads RTCP (receiver reports) from UDP readers to keep their sessions
    /// alive, hands RTP from UDP publishers to their connections, and
    /// discards anything else sent to the RTP port (NAT keepalives).
    async fn drain_udp(self: Arc<Self>) {
        let rtcp = self.udp_rtcp.clone();
        let rtp = self.udp_rtp.clone();
        let mut buf = vec![0u8; 2048];
        let mut buf2 = vec![0u8; 2048];
        loop {
            tokio::select! {
                r = rtcp.recv_from(&mut buf) => {
                    if let Ok((_, from)) = r {
                        let map = self.udp_activity.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(seen) = map.get(&from) {
                            seen.store(self.now_ms(), Ordering::Relaxed);
                        }
                    }
                }
                r = rtp.recv_from(&mut buf2) => {
                    let Ok((n, from)) = r else { continue };
                    let map = self.udp_publishers.lock().unwrap_or_else(|e| e.into_inner());
                    if let (Some((track, tx)), Some(packet)) = (map.get(&from), buf2.get(..n)) {
                        // A full queue drops the packet (the depacketizer
                        // sees the gap) rather than stall every UDP client.
                        let _ = tx.try_send((*track, Bytes::copy_from_slice(packet)));
                    }
                }
            }
        }
    }

    /// Serves one connection, plain or TLS: the same code for both.
    async fn connection<S>(
        self: Arc<Self>,
        socket: S,
        peer: SocketAddr,
        local: std::net::IpAddr,
        protocol: auth::Protocol,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        tracing::debug!(%peer, ?protocol, "RTSP connection");
        let conn = Conn::new(self.config.session_timeout);
        let mut c = Connection {
            server: self.clone(),
            socket,
            peer,
            local,
            protocol,
            inbuf: BytesMut::with_capacity(4096),
            framer: Framer::default(),
            request_started: None,
            last_request: Instant::now(),
            pending: Vec::new(),
            udp_buf: Vec::new(),
            conn: match protocol {
                auth::Protocol::Rtsps => conn.interleaved_only(),
                _ => conn,
            },
            playing: None,
            user: None,
            query_credentials: None,
            publication: None,
            record_channels: Vec::new(),
            udp_in: None,
            udp_keys: Vec::new(),
        };
        // A bug hit by one client's input ends that connection only.
        match std::panic::AssertUnwindSafe(c.run()).catch_unwind().await {
            Ok(reason) => {
                c.stop_playing();
                c.stop_recording();
                tracing::debug!(%peer, "RTSP connection closed: {reason}");
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%peer, "RTSP connection ended by an internal error (a bug; please report it): {what}");
                // The reader's bookkeeping may be half done: drop it whole.
                c.stop_playing();
                c.stop_recording();
            }
        }
    }
}

/// The next connection of `listener`, with Nagle off: (socket, peer, our
/// address on it).
async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr, std::net::IpAddr) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let local = socket
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
                return (socket, peer, local);
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A reader's entry detail: per track set up, its channels or ports.
fn rtsp_detail(transports: &[Option<TrackTransport>]) -> RtspDetail {
    let mut transport = RtspTransport::Udp;
    let tracks = transports
        .iter()
        .enumerate()
        .filter_map(|(track, t)| {
            Some(match *t.as_ref()? {
                TrackTransport::Tcp {
                    rtp_channel,
                    rtcp_channel,
                } => {
                    transport = RtspTransport::Tcp;
                    RtspTrackDetail {
                        track,
                        interleaved: Some([rtp_channel, rtcp_channel]),
                        client_ports: None,
                    }
                }
                TrackTransport::Udp { rtp, rtcp } => RtspTrackDetail {
                    track,
                    interleaved: None,
                    client_ports: Some([rtp.port(), rtcp.port()]),
                },
            })
        })
        .collect();
    RtspDetail { transport, tracks }
}

/// What one playing reader holds.
struct Playing {
    media: Arc<RtpMedia>,
    sub: Subscriber<Arc<RtpBatch>>,
    stream: Arc<crate::bus::Stream>,
    /// Per bus track: where to send it (None: not set up).
    transports: Vec<Option<TrackTransport>>,
    /// Per track: (packets, payload octets) sent, for sender reports.
    counts: Vec<(u32, u32)>,
    /// UDP readers' RTCP activity cells.
    udp_seen: Vec<(SocketAddr, Arc<AtomicU64>)>,
    /// The reader in the API's session list; kicked through it.
    handle: SessionHandle,
}

struct Connection<S> {
    server: Arc<RtspServer>,
    /// TCP, or TLS over TCP (RTSPS).
    socket: S,
    peer: SocketAddr,
    local: std::net::IpAddr,
    protocol: auth::Protocol,
    inbuf: BytesMut,
    /// Where the next message in `inbuf` ends.
    framer: Framer,
    /// When the first byte of an incomplete request arrived.
    request_started: Option<Instant>,
    /// When the last complete request arrived (or the connection opened).
    last_request: Instant,
    /// Batches taken from the fan-out, written together.
    pending: Vec<Arc<RtpBatch>>,
    /// Contiguous copy of equal-sized packets for one UDP GSO send.
    udp_buf: Vec<u8>,
    conn: Conn,
    playing: Option<Playing>,
    /// Who the last checked request was allowed as (`None`: anonymous);
    /// recorded on the session when it starts playing.
    user: Option<String>,
    /// Credentials from a request URL's query (`?user=&pass=`, `?jwt=`):
    /// clients build SETUP and PLAY URLs from the Content-Base, which
    /// carries no query, so the connection keeps what its URL gave.
    query_credentials: Option<Credentials>,
    /// A publisher's stream (ANNOUNCE accepted), fed after RECORD.
    publication: Option<Box<dyn Publication>>,
    /// While recording over TCP: interleaved RTP channel → track.
    record_channels: Vec<(u8, usize)>,
    /// While recording over UDP: the packets `drain_udp` routes here, with
    /// their track.
    udp_in: Option<mpsc::Receiver<(usize, Bytes)>>,
    /// This connection's entries in `udp_publishers`.
    udp_keys: Vec<SocketAddr>,
}

/// Where `drain_udp` queues a UDP publisher's packets: (track, packet).
type UdpIntake = mpsc::Sender<(usize, Bytes)>;

/// Packets queued per UDP publisher between the socket and its connection.
const UDP_PUBLISH_QUEUE: usize = 1024;

async fn next_udp_packet(
    rx: &mut Option<mpsc::Receiver<(usize, Bytes)>>,
) -> Option<(usize, Bytes)> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn kicked(kick: Option<impl std::future::Future<Output = ()>>) {
    match kick {
        Some(k) => k.await,
        None => std::future::pending().await,
    }
}

async fn next_batch(playing: &mut Option<Playing>) -> Option<Arc<RtpBatch>> {
    match playing {
        Some(p) => p.sub.recv().await.ok(),
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Serves the connection until it ends; returns why.
    async fn run(&mut self) -> String {
        match self.serve().await {
            Err(why) => why,
            Ok(never) => match never {},
        }
    }

    async fn serve(&mut self) -> Result<std::convert::Infallible, String> {
        let mut sr = tokio::time::interval(SR_INTERVAL);
        sr.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let kick = self.kick();
            tokio::select! {
                r = self.socket.read_buf(&mut self.inbuf) => {
                    match r {
                        Ok(0) => return Err("client closed the connection".into()),
                        Err(e) => return Err(format!("read error: {e}")),
                        Ok(_) => {}
                    }
                    // Answering may wait (describe wait, auth throttle): a
                    // kick still ends the connection meanwhile.
                    let kick = self.kick();
                    tokio::select! {
                        r = self.process_input() => r?,
                        _ = kicked(kick) => return Err(KICKED.into()),
                    }
                }
                batch = next_batch(&mut self.playing) => {
                    let Some(b) = batch else {
                        return Err("the stream ended or its source restarted with new tracks".into());
                    };
                    // Take whatever else is queued too (a GOP backlog, audio
                    // next to video, or a reader that was briefly slow):
                    // one vectored write for all of it.
                    self.pending.push(b);
                    let mut ended = false;
                    while self.pending.len() < MAX_COALESCE {
                        match self.playing.as_mut().map(|p| p.sub.try_recv()) {
                            Some(Ok(Some(b))) => self.pending.push(b),
                            Some(Err(_)) => {
                                ended = true;
                                break;
                            }
                            _ => break,
                        }
                    }
                    let guard = self.guard();
                    let r = guard.run(self.send_pending()).await;
                    self.pending.clear();
                    r?;
                    if ended {
                        return Err("the stream ended or its source restarted with new tracks".into());
                    }
                }
                packet = next_udp_packet(&mut self.udp_in) => {
                    let Some((track, packet)) = packet else {
                        return Err("UDP intake ended".into());
                    };
                    self.conn.touch(Instant::now());
                    self.record_packet(track, &packet)?;
                }
                _ = kicked(kick) => return Err(KICKED.into()),
                _ = sr.tick(), if self.playing.is_some() => {
                    let guard = self.guard();
                    guard.run(self.send_sender_reports()).await?;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.refresh_udp_activity();
                    if self.conn.expired(now) {
                        return Err("session timed out".into());
                    }
                    if self
                        .request_started
                        .is_some_and(|t| now.saturating_duration_since(t) > REQUEST_TIMEOUT)
                    {
                        self.refuse(StatusCode::RequestTimeout, "request not completed within 10 s").await;
                        return Err("request not completed within 10 s".into());
                    }
                    if self.conn.session().is_none()
                        && self.playing.is_none()
                        && now.saturating_duration_since(self.last_request) > IDLE_TIMEOUT
                    {
                        return Err("idle for 30 s without a session".into());
                    }
                }
            }
        }
    }

    /// The playing reader's kick through the API, to race against.
    fn kick(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.playing.as_ref().map(|p| p.handle.kicked())
    }

    /// RTCP from a UDP reader renews its session as of when the report
    /// came, so the timeout counts from the last one.
    fn refresh_udp_activity(&mut self) {
        if let Some(p) = &self.playing {
            if let Some(last_ms) = p
                .udp_seen
                .iter()
                .map(|(_, s)| s.load(Ordering::Relaxed))
                .max()
            {
                self.conn
                    .touch(self.server.start + Duration::from_millis(last_ms));
            }
        }
    }

    /// What may cut short a write to this client: `write_timeout` from now,
    /// the session's expiry if sooner, and a kick.
    fn guard(&mut self) -> WriteGuard<impl std::future::Future<Output = ()> + Send + 'static> {
        self.refresh_udp_activity();
        let write_timeout = self.server.config.write_timeout;
        let by_write = Instant::now() + write_timeout;
        let (deadline, cause) = match self.conn.expires_at() {
            Some(expiry) if expiry < by_write => (expiry, Cutoff::SessionTimeout),
            _ => (by_write, Cutoff::WriteTimeout(write_timeout)),
        };
        WriteGuard {
            deadline,
            cause,
            kick: self.kick(),
        }
    }

    /// Handles every complete message in the input buffer: requests are
    /// parsed once their header block and body are in, interleaved frames
    /// (RTCP receiver reports) are stepped over by length.
    async fn process_input(&mut self) -> Result<(), String> {
        loop {
            match self.framer.next(&self.inbuf) {
                Next::Incomplete => {
                    if self.inbuf.is_empty() {
                        self.request_started = None;
                    } else if self.request_started.is_none() {
                        self.request_started = Some(Instant::now());
                    }
                    return Ok(());
                }
                Next::Blank { skip } => self.inbuf.advance(skip),
                Next::Interleaved { channel, len } => {
                    let frame = self.inbuf.split_to(len);
                    self.request_started = None;
                    self.conn.touch(Instant::now());
                    let track = self
                        .record_channels
                        .iter()
                        .find(|(c, _)| *c == channel)
                        .map(|(_, t)| *t);
                    // `$`, channel, 16-bit length, then the RTP packet.
                    if let (Some(track), Some(packet)) = (track, frame.get(4..)) {
                        self.record_packet(track, packet)?;
                    }
                }
                Next::Message { len } => {
                    let bytes = self.inbuf.split_to(len);
                    self.request_started = None;
                    self.last_request = Instant::now();
                    match Message::<Vec<u8>>::parse(&bytes[..]) {
                        Ok((Message::Request(req), _)) => self.on_request(req).await?,
                        // Clients answer nothing we send; ignore it.
                        Ok(_) => {}
                        Err(_) => {
                            self.refuse(StatusCode::BadRequest, "malformed RTSP request")
                                .await;
                            return Err("malformed request".into());
                        }
                    }
                }
                Next::HeaderTooLarge => {
                    self.refuse(StatusCode::BadRequest, "request header over 64 KiB")
                        .await;
                    return Err("request header too large".into());
                }
                Next::BodyTooLarge => {
                    self.refuse(
                        StatusCode::RequestMessageBodyTooLarge,
                        "Content-Length over 64 KiB",
                    )
                    .await;
                    return Err("request body too large".into());
                }
                Next::BadContentLength => {
                    self.refuse(
                        StatusCode::BadRequest,
                        "Content-Length must be one non-negative integer",
                    )
                    .await;
                    return Err("bad Content-Length".into());
                }
            }
        }
    }

    /// Answers a request that ends the connection (no CSeq can be trusted
    /// or matched), best effort.
    async fn refuse(&mut self, status: StatusCode, why: &str) {
        let resp = Response::builder(Version::V1_0, status)
            .header(headers::CONTENT_TYPE, "text/plain")
            .build(format!("{why}\r\n").into_bytes());
        let _ = self.write_response(&resp).await;
        tracing::info!(peer = %self.peer, "RTSP client disconnected: {why}");
    }

    async fn write_response(&mut self, resp: &Response<Vec<u8>>) -> Result<(), String> {
        self.write_response_with(resp, &[]).await
    }

    /// Writes `resp` with one `WWW-Authenticate` line per challenge.
    async fn write_response_with(
        &mut self,
        resp: &Response<Vec<u8>>,
        challenges: &[String],
    ) -> Result<(), String> {
        let mut buf = Vec::with_capacity(512);
        if resp.write(&mut buf).is_err() {
            return Err("response serialization failed".into());
        }
        add_header_lines(&mut buf, "WWW-Authenticate", challenges);
        if self.server.config.log_messages {
            tracing::info!(target: "rtspgate::rtsp::wire", peer = %self.peer, "response:\n{}", String::from_utf8_lossy(&buf).trim_end());
        }
        let guard = self.guard();
        let socket = &mut self.socket;
        guard
            .run(async move {
                socket.write_all(&buf).await?;
                // TLS holds what the socket didn't take until flushed (TCP: no-op).
                socket.flush().await
            })
            .await
    }

    /// Asks the authenticator whether the client may do `access`, with
    /// the credentials of the request (its `Authorization` header, else
    /// its URL query, else the query an earlier request of this connection
    /// carried). Allowed: the user to record. Refused: the `WWW-Authenticate`
    /// challenges of the 401 (the same for a wrong password, an unknown
    /// user and a malformed header).
    async fn authorize(
        &mut self,
        req: &Request<Vec<u8>>,
        access: &Access,
    ) -> Result<Option<String>, Vec<String>> {
        let ip = self.peer.ip();
        let query = req.request_uri().and_then(|u| u.query());
        if let Some(c) = query.and_then(credentials::from_query) {
            self.query_credentials = Some(c);
        }
        let credentials = match req.header(&headers::AUTHORIZATION) {
            Some(v) => match credentials::parse_authorization(v.as_str().as_bytes()) {
                Ok(c) => c,
                Err(e) => {
                    // Never a pass for anonymous access: a client that sent
                    // something meant to be credentials.
                    tracing::info!(peer = %self.peer, "RTSP Authorization header refused: {e}");
                    return Err(self.server.auth.rtsp_challenges(ip, false));
                }
            },
            None => self.query_credentials.clone().unwrap_or_default(),
        };
        let decision = self
            .server
            .auth
            .check(&auth::Request {
                ip,
                action: access.action,
                path: Some(&access.path),
                protocol: self.protocol,
                credentials: &credentials,
                method: req.method().into(),
                id: self.conn.session().map(|s| s.id.as_str()),
                query,
            })
            .await;
        match decision {
            Decision::Allow { user } => Ok(user),
            Decision::Challenge { stale } => Err(self.server.auth.rtsp_challenges(ip, stale)),
            Decision::Deny => Err(self.server.auth.rtsp_challenges(ip, false)),
        }
    }

    async fn on_request(&mut self, req: Request<Vec<u8>>) -> Result<(), String> {
        if self.server.config.log_messages {
            let mut buf = Vec::new();
            let _ = req.write(&mut buf);
            tracing::info!(target: "rtspgate::rtsp::wire", peer = %self.peer, "request:\n{}", redact(&String::from_utf8_lossy(&buf)).trim_end());
        }
        // Before anything else (the describe wait below included): an
        // anonymous client gets nothing but the 401.
        if let Some(access) = self.conn.access(&req) {
            match self.authorize(&req, &access).await {
                Ok(user) => self.user = user,
                Err(challenges) => {
                    let out = self.conn.unauthorized(&req, challenges);
                    self.write_response_with(&out.response, &out.challenges)
                        .await?;
                    return match out.effect {
                        Effect::Close => Err("malformed request".into()),
                        _ => Ok(()),
                    };
                }
            }
        }
        let server = self.server.clone();
        // A client may DESCRIBE a path whose camera is still connecting: wait
        // a little rather than fail its first try.
        if !self.conn.publishing()
            && matches!(
                req.method(),
                rtsp_types::Method::Describe | rtsp_types::Method::Setup
            )
        {
            if let Some(target) = req.request_uri().and_then(super::session::parse_target) {
                // A rendition (`cam~h264`, or `cam` with `rtsp_codec`) starts here.
                let name = served_name(&server.registry, &target.path);
                match server.registry.open(&name) {
                    Ok(Some(stream)) => {
                        // An on-demand source starts here (the wait is its demand).
                        if stream.tracks().is_none() || stream.on_demand().is_some() {
                            if let Err(e) = stream.wait_ready(server.config.describe_wait).await {
                                tracing::info!(path = %target.path, "{e}");
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::info!(path = %target.path, "rendition refused: {e}");
                    }
                }
            }
        }
        let mut out = {
            let mut new_id = || format!("{:016x}", rand::random::<u64>());
            let mut ctx = Ctx {
                now: Instant::now(),
                paths: &*server.registry,
                peer: self.peer.ip(),
                local: self.local,
                server_rtp_port: server.rtp_port,
                new_session_id: &mut new_id,
            };
            self.conn.handle(&req, &mut ctx)
        };
        match std::mem::replace(&mut out.effect, Effect::None) {
            Effect::Play => {
                if self.playing.is_none() {
                    self.start_playing(&req, &mut out.response);
                }
            }
            Effect::Pause => self.stop_playing(),
            Effect::Teardown => {
                self.stop_playing();
                self.stop_recording();
            }
            Effect::Announce(a) => {
                let super::session::Announcement { path, tracks } = *a;
                if let Err((status, why)) = self.open_publication(&path, tracks) {
                    self.conn.announce_failed();
                    tracing::info!(peer = %self.peer, path, "publisher refused: {why}");
                    let cseq = req
                        .header(&rtsp_types::headers::CSEQ)
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    out.response = Response::builder(Version::V1_0, status)
                        .header(rtsp_types::headers::CSEQ, cseq)
                        .header(headers::CONTENT_TYPE, "text/plain")
                        .build(format!("{why}\r\n").into_bytes());
                }
            }
            Effect::Record => self.start_recording(),
            Effect::Close => out.effect = Effect::Close,
            Effect::None => {}
        }
        self.write_response(&out.response).await?;
        if out.effect == Effect::Close {
            return Err("malformed request".into());
        }
        Ok(())
    }

    /// Opens the announced publication through the publish sink; the
    /// refusal's status and plain words otherwise.
    fn open_publication(
        &mut self,
        path: &str,
        tracks: Vec<crate::bus::RtpSource>,
    ) -> Result<(), (StatusCode, String)> {
        let Some(sink) = self.server.publish_sink() else {
            return Err((
                StatusCode::NotImplemented,
                "publishing is not enabled".into(),
            ));
        };
        match sink.open_rtp(path, tracks, Instant::now()) {
            Ok(p) => {
                self.publication = Some(p);
                tracing::info!(peer = %self.peer, path, user = ?self.user, "publisher announced");
                Ok(())
            }
            Err(e) => {
                let status = match &e {
                    PublishError::PathInUse(_) => StatusCode::MethodNotValidInThisState,
                    PublishError::NotPublishable(_) => StatusCode::NotFound,
                    PublishError::Tracks(_) => StatusCode::UnsupportedMediaType,
                };
                Err((status, e.to_string()))
            }
        }
    }

    /// RECORD: the set-up tracks' RTP goes into the publication from now on.
    fn start_recording(&mut self) {
        let Some(session) = self.conn.session() else {
            return;
        };
        let mut channels = Vec::new();
        let mut udp = Vec::new();
        for (track, t) in session.tracks.iter().enumerate() {
            match t {
                Some(TrackTransport::Tcp { rtp_channel, .. }) => {
                    channels.push((*rtp_channel, track))
                }
                Some(TrackTransport::Udp { rtp, .. }) => udp.push((*rtp, track)),
                None => {}
            }
        }
        self.record_channels = channels;
        if !udp.is_empty() {
            let (tx, rx) = mpsc::channel(UDP_PUBLISH_QUEUE);
            let mut map = self
                .server
                .udp_publishers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (addr, track) in udp {
                map.insert(addr, (track, tx.clone()));
                self.udp_keys.push(addr);
            }
            self.udp_in = Some(rx);
        }
    }

    /// Ends the publication (TEARDOWN, connection closed).
    fn stop_recording(&mut self) {
        if !self.udp_keys.is_empty() {
            let mut map = self
                .server
                .udp_publishers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for addr in self.udp_keys.drain(..) {
                map.remove(&addr);
            }
        }
        self.udp_in = None;
        self.record_channels.clear();
        if self.publication.take().is_some() {
            tracing::info!(peer = %self.peer, "publisher left");
        }
    }

    /// One RTP packet from the publisher for `track`. A packet that is not
    /// RTP is skipped; `Err` ends the connection when the publication can't
    /// go on (e.g. replaced by another publisher).
    fn record_packet(&mut self, track: usize, packet: &[u8]) -> Result<(), String> {
        let Some(publication) = self.publication.as_mut() else {
            return Ok(());
        };
        let Some((_, pkt)) = crate::codec::parse_rtp(packet) else {
            return Ok(());
        };
        publication
            .push_rtp(track, pkt, Instant::now())
            .map_err(|why| format!("publication ended: {why}"))
    }

    fn start_playing(&mut self, req: &Request<Vec<u8>>, response: &mut Response<Vec<u8>>) {
        let Some(session) = self.conn.session() else {
            return;
        };
        let Some(stream) = self
            .server
            .registry
            .get(&served_name(&self.server.registry, &session.path))
        else {
            return;
        };
        let Some(set) = stream.tracks() else { return };
        let (media, sub) = self
            .server
            .media
            .subscribe(&stream, &set, self.server.config.mtu);
        let transports = session.tracks.clone();

        // RTP-Info (RFC 2326 §12.33): the first packet each track will get.
        let base = req
            .request_uri()
            .map(|u| super::session::base_uri(u).trim_end_matches('/').to_owned())
            .unwrap_or_default();
        // PLAY on a track URL (single-track clients): RTP-Info names the path.
        let base = match base.rsplit_once('/') {
            Some((head, last)) if last.starts_with("trackID=") => head.to_owned(),
            _ => base,
        };
        let mut infos = Vec::new();
        for (i, t) in transports.iter().enumerate() {
            if t.is_none() {
                continue;
            }
            let first = sub.backlog().iter().find(|b| b.track == i);
            let (seq, rtptime) = match first.and_then(|b| b.packets.first().map(|p| (p, b))) {
                Some((p, b)) if p.len() >= 4 => (u16::from_be_bytes([p[2], p[3]]), b.rtp_timestamp),
                _ => media.position(i),
            };
            infos.push(format!(
                "url={base}/{};seq={seq};rtptime={rtptime}",
                sdp::track_control(i)
            ));
        }
        response.insert_header(headers::RTP_INFO, infos.join(","));

        let mut udp_seen = Vec::new();
        for t in transports.iter().flatten() {
            if let TrackTransport::Udp { rtcp, .. } = t {
                let cell = Arc::new(AtomicU64::new(self.server.now_ms()));
                self.server
                    .udp_activity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*rtcp, cell.clone());
                udp_seen.push((*rtcp, cell));
            }
        }
        let handle = self.server.sessions.register(
            NewSession {
                id: &session.id,
                path: stream.name(),
                remote: Some(self.peer),
                user: self.user.clone(),
            },
            Arc::new(Detail::Rtsp(rtsp_detail(&transports))),
        );
        tracing::info!(peer = %self.peer, path = stream.name(), user = self.user.as_deref(), "RTSP reader started");
        self.playing = Some(Playing {
            counts: vec![(0, 0); transports.len()],
            media,
            sub,
            stream,
            transports,
            udp_seen,
            handle,
        });
    }

    fn stop_playing(&mut self) {
        if let Some(p) = self.playing.take() {
            let mut map = self
                .server
                .udp_activity
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (addr, cell) in &p.udp_seen {
                if map.get(addr).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                    map.remove(addr);
                }
            }
            tracing::info!(peer = %self.peer, path = p.stream.name(), lagged = p.sub.lagged(), "RTSP reader stopped");
        }
    }

    /// Writes the pending batches. A TCP reader on the usual channel of a
    /// track gets the batch's shared interleaved buffer (no per-reader copy;
    /// one vectored write for all pending batches); another channel gets a
    /// framed copy. UDP readers get one GSO send per run of equal-sized
    /// packets where the kernel supports it.
    async fn send_pending(&mut self) -> std::io::Result<()> {
        let Connection {
            server,
            socket,
            pending,
            udp_buf,
            playing,
            ..
        } = self;
        let Some(p) = playing else {
            return Ok(());
        };
        let mut bytes = 0u64;
        // Framed copies for readers on another channel (rare): (batch, copy).
        let mut copies: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut tcp = false;
        for (i, batch) in pending.iter().enumerate() {
            match p.transports.get(batch.track) {
                Some(Some(TrackTransport::Tcp { rtp_channel, .. })) => {
                    tcp = true;
                    if *rtp_channel != batch.channel || batch.interleaved.is_empty() {
                        copies.push((i, frame_interleaved(*rtp_channel, &batch.packets)));
                    }
                    bytes += batch.packets.iter().map(|p| p.len() as u64).sum::<u64>();
                }
                Some(Some(TrackTransport::Udp { rtp, .. })) => {
                    bytes += send_udp(server, udp_buf, *rtp, &batch.packets).await;
                }
                _ => continue,
            }
            let c = &mut p.counts[batch.track];
            c.0 = c.0.wrapping_add(batch.packets.len() as u32);
            c.1 = c.1.wrapping_add(
                batch
                    .packets
                    .iter()
                    .map(|pk| pk.len().saturating_sub(12) as u32)
                    .sum::<u32>(),
            );
        }
        if tcp {
            let mut iov = [IoSlice::new(&[]); MAX_COALESCE];
            let mut n = 0;
            for (i, batch) in pending.iter().enumerate() {
                let is_tcp = matches!(
                    p.transports.get(batch.track),
                    Some(Some(TrackTransport::Tcp { .. }))
                );
                if !is_tcp {
                    continue;
                }
                let data: &[u8] = match copies.iter().find(|(j, _)| *j == i) {
                    Some((_, copy)) => copy,
                    None => &batch.interleaved,
                };
                if !data.is_empty() && n < iov.len() {
                    iov[n] = IoSlice::new(data);
                    n += 1;
                }
            }
            write_all_vectored(socket, &mut iov[..n]).await?;
            socket.flush().await?;
        }
        p.stream.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        p.handle.add_bytes(bytes);
        Ok(())
    }

    async fn send_sender_reports(&mut self) -> std::io::Result<()> {
        let Some(p) = &self.playing else {
            return Ok(());
        };
        let now = SystemTime::now();
        let ntp = rtcp::ntp_timestamp(now);
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (i, t) in p.transports.iter().enumerate() {
            let Some(t) = t else { continue };
            let Some(rtp_ts) = p.media.rtp_timestamp_at(i, now) else {
                continue;
            };
            let Some(track) = p.media.tracks.get(i) else {
                continue;
            };
            let (packets, octets) = p.counts[i];
            let sr = rtcp::sender_report(track.ssrc, ntp, rtp_ts, packets, octets, "rtspgate");
            match *t {
                TrackTransport::Tcp { rtcp_channel, .. } => {
                    tcp.push(b'$');
                    tcp.push(rtcp_channel);
                    tcp.extend_from_slice(&(sr.len() as u16).to_be_bytes());
                    tcp.extend_from_slice(&sr);
                }
                TrackTransport::Udp { rtcp, .. } => udp.push((rtcp, sr)),
            }
        }
        if !tcp.is_empty() {
            self.socket.write_all(&tcp).await?;
            self.socket.flush().await?;
        }
        for (addr, sr) in udp {
            let _ = self.server.udp_rtcp.send_to(&sr, addr).await;
        }
        Ok(())
    }
}

const KICKED: &str = "session kicked through the API";

/// Why a write was cut short.
#[derive(Clone, Copy, Debug)]
enum Cutoff {
    WriteTimeout(Duration),
    SessionTimeout,
}

/// A write's limits (see [`Connection::guard`]): whatever the socket
/// does, the connection ends by `deadline` or at a kick.
struct WriteGuard<K> {
    deadline: Instant,
    cause: Cutoff,
    kick: Option<K>,
}

impl<K: std::future::Future<Output = ()>> WriteGuard<K> {
    /// Runs `write` within the limits; `Err` says why the connection ends.
    async fn run(
        self,
        write: impl std::future::Future<Output = std::io::Result<()>>,
    ) -> Result<(), String> {
        // Most writes complete at once (the socket has room): no timer or
        // kick is armed for them, as this runs per batch per reader.
        let mut write = std::pin::pin!(write);
        if let std::task::Poll::Ready(r) = futures::poll!(write.as_mut()) {
            return r.map_err(|e| format!("write error: {e}"));
        }
        tokio::select! {
            r = write => r.map_err(|e| format!("write error: {e}")),
            _ = tokio::time::sleep_until(self.deadline.into()) => Err(match self.cause {
                Cutoff::WriteTimeout(t) => format!(
                    "write timed out: the client stopped reading for {} s",
                    t.as_secs_f32()
                ),
                Cutoff::SessionTimeout => "session timed out".into(),
            }),
            _ = kicked(self.kick) => Err(KICKED.into()),
        }
    }
}

/// Writes all of `bufs`, looping on short writes.
async fn write_all_vectored<S: AsyncWrite + Unpin>(
    socket: &mut S,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = socket.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Inserts `name: value` lines for each of `values` at the end of the
/// header block of the serialized message `buf`.
fn add_header_lines(buf: &mut Vec<u8>, name: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let mut lines = Vec::new();
    for v in values {
        lines.extend_from_slice(b"\r\n");
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(v.as_bytes());
    }
    buf.splice(end..end, lines);
}

/// A request as logged with `-vv`: secrets out. `Authorization` keeps its
/// scheme only (which one a client used is worth seeing; Basic is the
/// password in base64), and the credential parameters of the URL query
/// (`pass`, `token`, `jwt`) lose their values.
fn redact(request: &str) -> String {
    let mut out = String::with_capacity(request.len());
    for (i, line) in request.split_inclusive('\n').enumerate() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if i > 0 && name.trim().eq_ignore_ascii_case("authorization") {
            let scheme = value.split_whitespace().next().unwrap_or("");
            out.push_str(&format!("{name}: {scheme} (redacted)\r\n"));
        } else if i == 0 && line.contains('?') {
            let redacted: Vec<String> = line
                .trim_end()
                .split(' ')
                .map(|word| match url::Url::parse(word) {
                    Ok(mut u) if u.query().is_some() => {
                        let pairs: Vec<(String, String)> = u
                            .query_pairs()
                            .map(|(k, v)| {
                                let secret = matches!(&*k, "pass" | "token" | "jwt");
                                let v = if secret {
                                    "redacted".into()
                                } else {
                                    v.into_owned()
                                };
                                (k.into_owned(), v)
                            })
                            .collect();
                        u.query_pairs_mut().clear().extend_pairs(pairs);
                        u.into()
                    }
                    _ => word.to_owned(),
                })
                .collect();
            out.push_str(&redacted.join(" "));
            out.push_str("\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// RFC 2326 §10.12 framing of `packets` on `channel` (packets too long for
/// its 16-bit length are left out).
fn frame_interleaved(channel: u8, packets: &[Bytes]) -> Vec<u8> {
    let mut v = Vec::with_capacity(packets.iter().map(|p| 4 + p.len()).sum());
    for p in packets {
        let Ok(len) = u16::try_from(p.len()) else {
            continue;
        };
        v.push(b'$');
        v.push(channel);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(p);
    }
    v
}

/// Sends one frame's packets to a UDP reader: runs of equal-sized packets
/// (FU-A fragments; the run's last may be shorter) as one GSO send when the
/// kernel offers it ([`gso_run`]), else one datagram each. A send error (e.g. ICMP port
/// unreachable) drops the packets; the session times out if the reader is
/// gone. Returns the bytes sent.
async fn send_udp(
    server: &RtspServer,
    buf: &mut Vec<u8>,
    to: SocketAddr,
    packets: &[Bytes],
) -> u64 {
    let max_segments = server.udp_rtp_state.max_gso_segments();
    let mut sent = 0u64;
    let mut i = 0;
    while i < packets.len() {
        let size = packets[i].len();
        let j = gso_run(
            i,
            packets.len(),
            max_segments,
            |k| packets[k].len(),
            |_| true,
        );
        let ok = if j - i == 1 {
            server.udp_rtp.send_to(&packets[i], to).await.is_ok()
        } else {
            buf.clear();
            for p in &packets[i..j] {
                buf.extend_from_slice(p);
            }
            let transmit = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents: buf,
                segment_size: Some(size),
                src_ip: None,
            };
            let (sock, state) = (&server.udp_rtp, &server.udp_rtp_state);
            sock.async_io(Interest::WRITABLE, || {
                state.try_send(sock.into(), &transmit)
            })
            .await
            .is_ok()
        };
        if ok {
            sent += packets[i..j].iter().map(|p| p.len() as u64).sum::<u64>();
        }
        i = j;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_one_header_line_each() {
        let resp = Response::builder(Version::V1_0, StatusCode::Unauthorized)
            .header(headers::CSEQ, "3")
            .build(Vec::new());
        let mut buf = Vec::new();
        resp.write(&mut buf).unwrap();
        add_header_lines(
            &mut buf,
            "WWW-Authenticate",
            &[
                "Digest realm=\"r\", nonce=\"n\"".into(),
                "Basic realm=\"r\"".into(),
            ],
        );
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "RTSP/1.0 401 Unauthorized\r\nCSeq: 3\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\nWWW-Authenticate: Basic realm=\"r\"\r\n\r\n"
        );
    }

    #[test]
    fn wire_log_redacts_secrets() {
        let req = "DESCRIBE rtsp://127.0.0.1:8554/cam?user=viewer&pass=s3cret&x=1 RTSP/1.0\r\n\
                   CSeq: 2\r\nauthorization: Basic dmlld2VyOnMzY3JldA==\r\n\r\n";
        let out = redact(req);
        assert!(
            !out.contains("s3cret") && !out.contains("dmlld2Vy"),
            "{out}"
        );
        assert!(out.contains("authorization: Basic (redacted)\r\n"), "{out}");
        assert!(
            out.starts_with("DESCRIBE rtsp://127.0.0.1:8554/cam?user=viewer&pass=redacted&x=1 RTSP/1.0\r\nCSeq: 2\r\n"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\n"), "{out:?}");
    }

    #[test]
    fn interleaved_copy_for_another_channel() {
        let packets = [Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4])];
        assert_eq!(
            frame_interleaved(5, &packets),
            [b'$', 5, 0, 3, 1, 2, 3, b'$', 5, 0, 1, 4]
        );
    }
}
