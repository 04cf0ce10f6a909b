//! One WHEP viewer: a str0m [`Rtc`] plus what rtspgate sends it. Sans-IO:
//! packets, frames and the current time go in through methods; datagrams
//! to send come out in a caller-supplied `Vec<Transmit>`; the next time the
//! session wants to be woken is [`Session::next_timeout`]. The socket task
//! ([`super::driver`]) owns many of these and does the I/O.
//!
//! Every mutation is followed by a full `poll_output` drain, as str0m's
//! single-mutation invariant requires (str0m crate docs, "Run loop").

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{Extension, ExtensionMap, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::bus::sessions::WebRtcDetail;
use crate::bus::{Detail, DetailSource, Frame, MediaKind, Track, TrackSet};

use super::codecs::{Plan, SendCodec};
use super::offer::{add_media_info, OfferSummary, SectionKind};
use super::rtp::RtpFrame;

/// A session id: 128 random bits, shown as 32 lowercase hex digits.
pub type SessionId = u128;

/// Formats a session id for URLs and the API.
pub fn format_id(id: SessionId) -> String {
    format!("{id:032x}")
}

/// Parses [`format_id`]'s output; `None` for anything else.
pub fn parse_id(s: &str) -> Option<SessionId> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// How long a viewer may take from the answer to a working DTLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A keyframe request (PLI/FIR) this soon after a keyframe was sent is
/// about that keyframe still being delivered or repaired by NACK; it does
/// not make the viewer skip to the next one.
pub const KEYFRAME_REQUEST_GRACE: Duration = Duration::from_millis(300);

/// How often str0m reports statistics (RTCP-derived RTT, NACK/PLI counts).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How long sent packets are kept for retransmission (RTX on NACK), per
/// viewer: str0m keeps 3 s, which at 2 Mbit/s is ~600 packets (~750 KiB)
/// per viewer. A NACK comes about one round trip after the loss, so
/// viewers start with [`RTX_CACHE_AGE`] and one whose round-trip time
/// reaches [`RTX_LONG_RTT`] gets [`RTX_CACHE_AGE_LONG_RTT`] (Janus keeps
/// 200 ms to 1 s by round-trip time). See [`rtx_cache_age`].
pub const RTX_CACHE_AGE: Duration = Duration::from_millis(500);
pub const RTX_CACHE_AGE_LONG_RTT: Duration = Duration::from_millis(1500);
pub const RTX_LONG_RTT: Duration = Duration::from_millis(200);
/// Cap on the packets in the RTX cache, per stream (str0m's default).
const RTX_CACHE_PACKETS_VIDEO: usize = 1000;
const RTX_CACHE_PACKETS_AUDIO: usize = 50;
/// Stop resending when retransmissions exceed this share of the bytes
/// sent (str0m's default).
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// The RTX cache age for a viewer with round-trip time `rtt` whose cache
/// keeps `current` now. Changing it empties str0m's cache, so it changes
/// only across a margin: up at [`RTX_LONG_RTT`], down below 3/4 of it.
pub fn rtx_cache_age(rtt: Duration, current: Duration) -> Duration {
    if rtt >= RTX_LONG_RTT {
        RTX_CACHE_AGE_LONG_RTT
    } else if rtt < RTX_LONG_RTT * 3 / 4 {
        RTX_CACHE_AGE
    } else {
        current
    }
}

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// str0m rejected the offer (→ 400).
    #[error("the offer was rejected: {0}")]
    BadOffer(String),
}

/// What a session tells the socket task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// ICE and DTLS are up: media may flow; subscribe it to the bus now so
    /// its first frame is the cached GOP's keyframe.
    Connected,
    /// The session is over and must be dropped; the reason in plain words.
    Closed(String),
}

/// A frame's RTP payloads for the track's current codec, made once for all
/// the path's viewers ([`super::rtp::PathPacketizer`]); `None` skips the
/// frame (malformed).
pub type PacketizeFn<'a> = dyn FnMut(&Track, &Arc<Frame>) -> Option<Arc<RtpFrame>> + 'a;

/// A negotiated WHEP resource: what the HTTP handlers route PATCH and
/// DELETE by, and the session's registry detail, which the session updates
/// as it runs and the registry reads at list time.
#[derive(Debug)]
pub struct WhepResource {
    pub id: SessionId,
    pub path: String,
    /// Our ICE ufrag; also the WHEP `ETag` of the ICE session (RFC 9725 §4.3.1).
    pub ice_ufrag: String,
    /// The viewer's ICE ufrag from the offer; a PATCH with another one is an
    /// ICE restart.
    pub remote_ufrag: Option<String>,
    pub stats: Mutex<WebRtcDetail>,
    /// `a=candidate` lines taken from WHEP PATCHes so far, at most
    /// [`super::MAX_TRICKLE_CANDIDATES`].
    pub trickled: AtomicUsize,
    /// A WHIP publisher's resource (`/<path>/whip/<id>`), not a WHEP
    /// viewer's (`/<path>/whep/<id>`).
    pub publisher: bool,
}

impl WhepResource {
    pub fn snapshot(&self) -> WebRtcDetail {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl DetailSource for WhepResource {
    fn detail(&self) -> Detail {
        Detail::WebRtc(Box::new(self.snapshot()))
    }
}

/// Per-track sender state.
#[derive(Debug)]
struct Sender {
    mid: Mid,
    pt: Pt,
    /// Bus track index.
    track: usize,
    video: bool,
    /// Next RTP sequence number (extended; starts random below 2^16, so the
    /// SRTP rollover counter starts at 0 as the viewer expects).
    seq: u64,
    /// Added to the frame timestamps (random start, RFC 3550 §5.1).
    ts_offset: u32,
    /// Video: drop delta frames until a keyframe (start, or after PLI/FIR).
    waiting_keyframe: bool,
    last_keyframe: Option<Instant>,
}

impl Sender {
    /// Hands a frame's shared payloads to this viewer's str0m stream.
    fn write(&mut self, rtc: &mut Rtc, frame: &Frame, rtp: &RtpFrame) -> bool {
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
            return false;
        };
        let ts = (frame.pts as u32).wrapping_add(self.ts_offset);
        for p in &rtp.packets {
            tx.write_rtp(
                RtpWrite::new(
                    self.pt,
                    SeqNo::from(self.seq),
                    ts.wrapping_add(p.ts_delta),
                    frame.received,
                    p.payload.clone(),
                )
                .marker(p.marker)
                // Browsers NACK video; audio is not worth resending late.
                .nackable(self.video),
            );
            self.seq += 1;
        }
        true
    }
}

/// One WHEP viewer. See the module docs.
pub struct Session {
    pub id: SessionId,
    pub path: String,
    rtc: Rtc,
    /// Our ICE ufrag: STUN from this viewer carries it (demux key).
    ufrag: String,
    /// Track set the session was negotiated for.
    generation: u64,
    tracks: Vec<Arc<Track>>,
    video: Option<Sender>,
    audio: Option<Sender>,
    created: Instant,
    connected: bool,
    closed: Option<String>,
    next_timeout: Instant,
    events: Vec<SessionEvent>,
    handle: Arc<WhepResource>,
    /// Media-level totals per mid, summed for the API.
    egress: [(Option<Mid>, EgressTotals); 2],
    /// RTP bytes already handed out by [`Session::take_new_bytes`].
    bytes_reported: u64,
    /// Current RTX cache age of the sent streams ([`rtx_cache_age`]).
    rtx_age: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct EgressTotals {
    packets: u64,
    bytes: u64,
    nacks: u64,
    plis: u64,
    firs: u64,
}

/// Everything needed to create a session; see [`Session::new`].
pub struct SessionParams<'a> {
    pub id: SessionId,
    pub path: String,
    /// The offer as received (WHEP POST body).
    pub offer: &'a str,
    pub summary: &'a OfferSummary,
    pub plan: &'a Plan,
    pub tracks: &'a TrackSet,
    /// Local ICE candidates (UDP host candidates, ICE-TCP passive ones).
    pub candidates: Vec<Candidate>,
    /// The process's DTLS certificate (RFC 8827 §6.5 lets one serve every
    /// session); `None` makes one for this session (tests).
    pub dtls_cert: Option<&'a str0m::config::DtlsCert>,
    pub now: Instant,
}

impl Session {
    /// Builds the viewer's `Rtc` (ICE-lite, only the planned codecs),
    /// accepts the offer and returns the session with the SDP answer.
    ///
    /// The answer gets an `a=rtspgate-info:` line on sections whose track
    /// is not sent, saying why (e.g. AAC); see [`add_media_info`].
    pub fn new(p: SessionParams<'_>) -> Result<(Session, String), SessionError> {
        // Only the mid header extension (BUNDLE demultiplexing). No
        // transport-cc or abs-send-time: rtspgate passes the camera's
        // bitrate through and has no bandwidth estimation to feed, and
        // without them str0m keeps no per-packet send records (1000 per
        // viewer) and the browser sends no transport feedback to parse.
        let mut exts = ExtensionMap::empty();
        exts.set(4, Extension::RtpMid);
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            // Shared payloads, our own RTP headers: see super::rtp.
            .set_rtp_mode(true)
            .set_extension_map(exts)
            .clear_codecs()
            .set_stats_interval(Some(STATS_INTERVAL));
        if let Some(cert) = p.dtls_cert {
            config = config.set_dtls_cert(cert.clone());
        }
        let codecs = config.codec_config();
        for choice in p.plan.video.iter().chain(p.plan.audio.iter()) {
            let pt = Pt::from(choice.pt);
            let rtx = choice.rtx.map(Pt::from);
            match choice.codec {
                SendCodec::H264 { profile_level_id } => {
                    codecs.add_h264(pt, rtx, true, profile_level_id)
                }
                SendCodec::H265 {
                    profile_id,
                    tier,
                    level,
                } => codecs.add_h265(pt, rtx, profile_id, tier, level),
                SendCodec::Opus { .. } => codecs.enable_opus(true, false),
                SendCodec::Pcmu => codecs.enable_pcmu(true, false),
                SendCodec::Pcma => codecs.enable_pcma(true, false),
            }
        }
        let mut rtc = config.build(p.now);
        for c in p.candidates {
            rtc.add_local_candidate(c);
        }
        let offer = SdpOffer::from_sdp_string(p.offer)
            .map_err(|e| SessionError::BadOffer(e.to_string()))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::BadOffer(e.to_string()))?;
        let mut answer = answer.to_sdp_string();

        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let mut sender = |choice: &super::codecs::Choice| -> Option<Sender> {
            let mid = Mid::from(choice.mid.as_str());
            let track = p.tracks.tracks.get(choice.track)?;
            let want = match choice.codec {
                SendCodec::H264 { .. } => RtcCodec::H264,
                SendCodec::H265 { .. } => RtcCodec::H265,
                SendCodec::Opus { .. } => RtcCodec::Opus,
                SendCodec::Pcmu => RtcCodec::PCMU,
                SendCodec::Pcma => RtcCodec::PCMA,
            };
            // The negotiated payload type of that codec on this m= section.
            let remote = rtc.media(mid)?.remote_pts();
            let pt = rtc
                .codec_config()
                .params()
                .iter()
                .find(|pp| pp.spec().codec == want && remote.contains(&pp.pt()))
                .map(|pp| pp.pt())?;
            Some(Sender {
                mid,
                pt,
                track: choice.track,
                video: track.kind() == MediaKind::Video,
                seq: u64::from(rand::random::<u16>() >> 1),
                ts_offset: rand::random(),
                waiting_keyframe: track.kind() == MediaKind::Video,
                last_keyframe: None,
            })
        };
        let video = p.plan.video.as_ref().and_then(&mut sender);
        let audio = p.plan.audio.as_ref().and_then(&mut sender);
        set_rtx_cache(&mut rtc, &video, &audio, RTX_CACHE_AGE);
        if video.is_none() && audio.is_none() {
            return Err(SessionError::BadOffer(
                "no m= section was accepted with a codec rtspgate can send".to_owned(),
            ));
        }

        let mut skipped_tracks = Vec::new();
        for s in &p.plan.skipped {
            let codec = p.tracks.tracks.get(s.track).map_or("?", |t| t.codec.name());
            let text = format!("track {} ({codec}) not sent: {}", s.track, s.reason);
            let kind = match s.kind {
                MediaKind::Video => SectionKind::Video,
                MediaKind::Audio => SectionKind::Audio,
            };
            if let Some(mid) = p
                .summary
                .sections
                .iter()
                .find(|sec| sec.kind == kind)
                .and_then(|sec| sec.mid.as_deref())
            {
                answer = add_media_info(&answer, mid, &text);
            }
            skipped_tracks.push(text);
        }

        let name = |s: &Option<Sender>, choice: &Option<super::codecs::Choice>| {
            s.as_ref()
                .and(choice.as_ref())
                .map(|c| c.codec.name().to_owned())
        };
        let handle = Arc::new(WhepResource {
            id: p.id,
            path: p.path.clone(),
            ice_ufrag: ufrag.clone(),
            remote_ufrag: p.summary.ice_ufrag.clone(),
            trickled: AtomicUsize::new(0),
            publisher: false,
            stats: Mutex::new(WebRtcDetail {
                state: "connecting",
                video_codec: name(&video, &p.plan.video),
                audio_codec: name(&audio, &p.plan.audio),
                skipped_tracks,
                ..WebRtcDetail::default()
            }),
        });
        let egress = [
            (video.as_ref().map(|s| s.mid), EgressTotals::default()),
            (audio.as_ref().map(|s| s.mid), EgressTotals::default()),
        ];
        let mut session = Session {
            id: p.id,
            path: p.path,
            rtc,
            ufrag,
            generation: p.tracks.generation,
            tracks: p.tracks.tracks.clone(),
            video,
            audio,
            created: p.now,
            connected: false,
            closed: None,
            next_timeout: p.now,
            events: Vec::new(),
            handle,
            egress,
            bytes_reported: 0,
            rtx_age: RTX_CACHE_AGE,
        };
        // Nothing to transmit before the viewer's first STUN request (we
        // are ICE-lite), but the drain sets the first timeout.
        let mut none = Vec::new();
        session.drain(p.now, &mut none);
        Ok((session, answer))
    }

    /// Our ICE ufrag (the demultiplexing key for STUN).
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The WHEP resource shared with the HTTP handlers and the registry.
    pub fn handle(&self) -> &Arc<WhepResource> {
        &self.handle
    }

    /// Track-set generation the session was negotiated for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    /// RTP bytes sent since the last call, as of str0m's latest stats
    /// (updated once a second), for the stream's and registry's counters.
    pub fn take_new_bytes(&mut self) -> u64 {
        let total: u64 = self.egress.iter().map(|(_, t)| t.bytes).sum();
        let new = total.saturating_sub(self.bytes_reported);
        self.bytes_reported = total.max(self.bytes_reported);
        new
    }

    /// Whether the packet is for this session (str0m's check: STUN ufrag,
    /// or a source address of a validated ICE pair).
    pub fn accepts(
        &self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Ok(contents) = data.try_into() else {
            return false;
        };
        self.rtc.accepts(&Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        ))
    }

    /// Feeds one received datagram (or ICE-TCP frame). Returns false if it
    /// is not STUN/DTLS/RTP or not for this session; such input is ignored.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        out: &mut Vec<Transmit>,
    ) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let Ok(contents) = data.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        if !self.rtc.accepts(&input) {
            return false;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            // Malformed input from the network is dropped by str0m; an
            // error here means the session cannot go on (e.g. DTLS failure).
            self.fail(format!("WebRTC error: {e}"));
        }
        self.drain(now, out);
        true
    }

    /// Advances time: retransmissions, RTCP, ICE consent, our connect timeout.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        if !self.connected && now.saturating_duration_since(self.created) >= CONNECT_TIMEOUT {
            self.fail(format!(
                "the viewer did not connect within {} s (ICE or DTLS failed: is UDP/TCP port reachable?)",
                CONNECT_TIMEOUT.as_secs()
            ));
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(format!("WebRTC error: {e}"));
        }
        self.drain(now, out);
    }

    /// Adds a trickled remote candidate (WHEP PATCH).
    pub fn add_remote_candidate(&mut self, now: Instant, c: Candidate, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        self.rtc.add_remote_candidate(c);
        self.drain(now, out);
    }

    /// The stream's tracks from the next frame on (a bus
    /// [`crate::bus::Item::Tracks`]). Returns false when they are of another
    /// generation than the one negotiated: the session must then be ended
    /// (the viewer reconnects). New parameters of the same generation (a
    /// new SPS) apply to the frames after this.
    pub fn update_tracks(&mut self, set: &TrackSet) -> bool {
        if set.generation != self.generation {
            return false;
        }
        self.tracks.clone_from(&set.tracks);
        true
    }

    /// Sends one bus frame if it belongs to a sent track.
    ///
    /// `from_backlog`: the frame is from the GOP cache, not live. Cached
    /// video goes out at once so the first picture is immediate; cached
    /// audio is dropped, since playing it would delay all audio after it.
    ///
    /// `packetize` gives the frame's RTP payloads (made once per path and
    /// shared by its viewers); `None` from it means the frame is malformed
    /// and skipped.
    pub fn write_frame(
        &mut self,
        now: Instant,
        frame: &Arc<Frame>,
        from_backlog: bool,
        packetize: &mut PacketizeFn<'_>,
        out: &mut Vec<Transmit>,
    ) {
        if self.closed.is_some() || !self.connected {
            return;
        }
        let Some(track) = self.tracks.get(frame.track).cloned() else {
            return;
        };
        let mut stats = self.handle.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.video.as_mut().filter(|v| v.track == frame.track) {
            if v.waiting_keyframe && !frame.keyframe {
                stats.frames_skipped += 1;
                return;
            }
            let Some(rtp) = packetize(&track, frame) else {
                stats.frames_skipped += 1;
                return;
            };
            if frame.keyframe {
                v.waiting_keyframe = false;
                v.last_keyframe = Some(now);
            }
            if v.write(&mut self.rtc, frame, &rtp) {
                stats.video_frames += 1;
                if stats.first_frame_ms.is_none() {
                    let ms = now.saturating_duration_since(self.created).as_millis();
                    stats.first_frame_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
                }
            }
        } else if let Some(a) = self.audio.as_mut().filter(|a| a.track == frame.track) {
            if from_backlog && self.video.is_some() {
                return;
            }
            let Some(rtp) = packetize(&track, frame) else {
                return;
            };
            if a.write(&mut self.rtc, frame, &rtp) {
                stats.audio_frames += 1;
            }
        } else {
            return;
        }
        drop(stats);
        self.drain(now, out);
    }

    /// Ends the session (WHEP DELETE, stream gone): RTCP BYE and DTLS
    /// close_notify go out in `out`.
    pub fn close(&mut self, now: Instant, reason: &str, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        // Reason first: the drain below sees str0m closed and would report
        // a generic one.
        self.fail(reason.to_owned());
        let _ = self.rtc.close();
        self.drain(now, out);
    }

    fn fail(&mut self, reason: String) {
        if self.closed.is_some() {
            return;
        }
        let mut stats = self.handle.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.state = "closed";
        stats.closed_reason = Some(reason.clone());
        drop(stats);
        self.closed = Some(reason.clone());
        self.events.push(SessionEvent::Closed(reason));
    }

    /// Drains str0m's output until its next timeout.
    fn drain(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        loop {
            let output = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.fail(format!("WebRTC error: {e}"));
                    return;
                }
            };
            match output {
                Output::Timeout(t) => {
                    let connect_deadline = self.created + CONNECT_TIMEOUT;
                    self.next_timeout = if self.connected {
                        t
                    } else {
                        t.min(connect_deadline)
                    };
                    break;
                }
                Output::Transmit(t) => out.push(t),
                Output::Event(e) => self.on_event(now, e),
            }
        }
        if !self.rtc.is_alive() && self.closed.is_none() {
            self.fail("the connection was closed".to_owned());
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.stats_mut().state = "connected";
                self.events.push(SessionEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let reason = if self.connected {
                    "the viewer stopped answering (ICE consent expired)"
                } else {
                    "ICE failed: no working path to the viewer"
                };
                self.fail(reason.to_owned());
            }
            Event::KeyframeRequest(req) => {
                if let Some(v) = self.video.as_mut().filter(|v| v.mid == req.mid) {
                    // Skip to the next keyframe from the source: we cannot
                    // make one, and the P-frames until then would not decode.
                    let recent = v
                        .last_keyframe
                        .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_GRACE);
                    if !recent {
                        v.waiting_keyframe = true;
                    }
                    tracing::debug!(
                        session = %format_id(self.id),
                        kind = match req.kind { KeyframeRequestKind::Pli => "PLI", KeyframeRequestKind::Fir => "FIR" },
                        ignored = recent,
                        "keyframe request"
                    );
                }
            }
            Event::MediaEgressStats(s) => {
                let mut stats = self.handle.stats.lock().unwrap_or_else(|e| e.into_inner());
                for (mid, totals) in &mut self.egress {
                    if *mid == Some(s.mid) {
                        *totals = EgressTotals {
                            packets: s.packets,
                            bytes: s.bytes,
                            nacks: s.nacks,
                            plis: s.plis,
                            firs: s.firs,
                        };
                    }
                }
                let sum = |f: fn(&EgressTotals) -> u64| self.egress.iter().map(|(_, t)| f(t)).sum();
                stats.packets_sent = sum(|t| t.packets);
                stats.nacks = sum(|t| t.nacks);
                stats.plis = sum(|t| t.plis);
                stats.firs = sum(|t| t.firs);
                if let Some(rtt) = s.rtt {
                    stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    let age = rtx_cache_age(rtt, self.rtx_age);
                    if age != self.rtx_age {
                        self.rtx_age = age;
                        set_rtx_cache(&mut self.rtc, &self.video, &self.audio, age);
                    }
                }
                if s.loss.is_some() {
                    stats.loss = s.loss;
                }
            }
            Event::PeerStats(p) => {
                let mut stats = self.stats_mut();
                if let Some(pair) = p.selected_candidate_pair {
                    stats.remote = Some(pair.remote.addr);
                    stats.transport = Some(match pair.protocol {
                        Protocol::Udp => "udp",
                        _ => "tcp",
                    });
                    if stats.rtt_ms.is_none() {
                        if let Some(rtt) = pair.current_round_trip_time {
                            stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
            Event::Closed => self.fail("the viewer closed the connection".to_owned()),
            _ => {}
        }
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, WebRtcDetail> {
        self.handle.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets the RTX cache of the sent streams (this empties it).
fn set_rtx_cache(rtc: &mut Rtc, video: &Option<Sender>, audio: &Option<Sender>, age: Duration) {
    for (s, packets) in [
        (video, RTX_CACHE_PACKETS_VIDEO),
        (audio, RTX_CACHE_PACKETS_AUDIO),
    ] {
        let Some(s) = s else { continue };
        let mut api = rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(s.mid, None) {
            tx.set_rtx_cache(packets, age, RTX_RATIO_CAP);
        }
    }
}

#[cfg(test)]
mod tests;
