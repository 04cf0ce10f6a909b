//! One WHIP publisher (RFC 9725): a str0m [`Rtc`] that receives H.264 and
//! Opus from a browser or OBS and publishes them onto the bus through a
//! [`Publication`] (opened with the gateway's [`crate::bus::PublishSink`],
//! so the path's frames go through the same ingest rules as a camera's).
//! Sans-IO like [`super::session::Session`]: datagrams and the time go in,
//! datagrams to send come out in a caller-supplied `Vec<Transmit>`.
//!
//! str0m runs in frame mode here (not the RTP mode of the WHEP viewers): its
//! receive buffer reorders packets and waits for NACK repairs before it
//! hands out a whole depacketized access unit, which is what a publisher
//! over a lossy uplink needs. An H.264 access unit comes out in Annex B
//! form; it is rewritten with 4-byte length prefixes (the bus's framing),
//! and its in-band SPS/PPS become the track's parameters
//! ([`Publication::set_parameters`]) as they arrive: the offer carries none
//! (RFC 6184 §8.1 lets a browser leave out `sprop-parameter-sets`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::bus::sessions::WebRtcDetail;
use crate::bus::{
    Codec, MediaKind, Publication, PublishError, PublishSink, SourceFrame, SourceTrack, Track,
};
use crate::codec::{annexb_nal_units, h264_nal_type, H264_NAL_PPS, H264_NAL_SPS};

use super::offer::{add_media_info, OfferSummary, SectionKind};
use super::session::{format_id, SessionEvent, SessionId, WhepResource, CONNECT_TIMEOUT};

/// How long str0m reports statistics for (the API's detail).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Keyframe requests (PLI, RFC 4585 §6.3.1) to the publisher at most this
/// often: while no keyframe has come yet, after a frame was lost, and when
/// the GOP grows past [`MAX_GOP_DURATION`]. An encoder answers each with an
/// IDR picture, which costs it bitrate.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// A browser's WebRTC encoder sends a keyframe at the start and then only
/// when asked; OBS every keyframe interval it is set to. A GOP that never
/// ends would make each new reader start with everything since the first
/// keyframe (the bus's GOP cache) and leave an RTSP or LL-HLS reader
/// nowhere to join, so a keyframe is asked for when the last one is older
/// than this: a camera-like GOP.
pub const MAX_GOP_DURATION: Duration = Duration::from_secs(2);

/// Opus is always `opus/48000/2` in SDP (RFC 7587 §7); the packets say
/// how many channels they really carry.
const OPUS_CHANNELS: u16 = 2;

const NOTHING_USABLE: &str = "nothing in the offer can be published: rtspgate takes H.264 \
     video and Opus audio (sendonly or sendrecv m= sections)";

/// Why a publisher could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PublishSessionError {
    /// str0m rejected the offer (→ 400).
    #[error("the offer was rejected: {0}")]
    BadOffer(String),
    /// Neither H.264 video nor Opus audio offered for sending (→ 422).
    #[error("{0}")]
    NothingUsable(String),
    /// The sink refused the path (→ 409 when in use, 422 for tracks).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Everything needed to create a publisher; see [`PublishSession::new`].
pub struct PublishParams<'a> {
    pub id: SessionId,
    pub path: String,
    /// The offer as received (WHIP POST body).
    pub offer: &'a str,
    pub summary: &'a OfferSummary,
    /// Local ICE candidates (UDP host candidates, ICE-TCP passive ones).
    pub candidates: Vec<Candidate>,
    /// The process's DTLS certificate; `None` makes one (tests).
    pub dtls_cert: Option<&'a str0m::config::DtlsCert>,
    /// Where the stream goes.
    pub sink: &'a dyn PublishSink,
    pub now: Instant,
}

/// One received m= section and the bus track it feeds.
struct Receiver {
    mid: Mid,
    /// Index into the publication's tracks.
    track: usize,
    /// str0m's extended RTP time of the first frame: pts are counted from it.
    base: Option<u64>,
    /// H.264 only: the parameter sets seen in band so far.
    h264: Option<InBandH264>,
}

/// One WHIP publisher. See the module docs.
pub struct PublishSession {
    pub id: SessionId,
    pub path: String,
    rtc: Rtc,
    ufrag: String,
    created: Instant,
    connected: bool,
    closed: Option<String>,
    next_timeout: Instant,
    events: Vec<SessionEvent>,
    handle: Arc<WhepResource>,
    /// `None` once ended: dropping it ends the path for its readers.
    publication: Option<Box<dyn Publication>>,
    video: Option<Receiver>,
    audio: Option<Receiver>,
    /// When the publisher's last video keyframe came.
    last_keyframe: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// Bytes received (RTP payloads of the frames published) not yet
    /// handed out by [`PublishSession::take_new_bytes`].
    new_bytes: u64,
}

impl PublishSession {
    /// Builds the publisher's `Rtc` (ICE-lite, H.264 and Opus only),
    /// accepts the offer, opens the path on `sink` and returns the session
    /// with the SDP answer. Sections offered with other codecs only (VP8,
    /// VP9, AV1) are rejected in the answer (port 0 or inactive) and get
    /// an `a=rtspgate-info:` line saying why.
    pub fn new(p: PublishParams<'_>) -> Result<(PublishSession, String), PublishSessionError> {
        let offers_ours = p.summary.sections.iter().any(|sec| {
            let want = match sec.kind {
                SectionKind::Video => "H264",
                SectionKind::Audio => "OPUS",
                SectionKind::Other => return false,
            };
            !sec.port_zero
                && sec.direction.sends()
                && sec
                    .formats
                    .iter()
                    .any(|f| f.encoding.eq_ignore_ascii_case(want))
        });
        if !offers_ours {
            return Err(PublishSessionError::NothingUsable(
                NOTHING_USABLE.to_owned(),
            ));
        }
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            .set_stats_interval(Some(STATS_INTERVAL));
        if let Some(cert) = p.dtls_cert {
            config = config.set_dtls_cert(cert.clone());
        }
        let codecs = config.codec_config();
        codecs.enable_h264(true);
        codecs.enable_opus(true, false);
        let mut rtc = config.build(p.now);
        for c in p.candidates {
            rtc.add_local_candidate(c);
        }
        let offer = SdpOffer::from_sdp_string(p.offer)
            .map_err(|e| PublishSessionError::BadOffer(e.to_string()))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PublishSessionError::BadOffer(e.to_string()))?;
        let mut answer = answer.to_sdp_string();

        // The first sending section of each kind whose negotiated codecs
        // include ours; further ones (simulcast layers as separate
        // sections, a second camera) are not published.
        let negotiated = |rtc: &Rtc, mid: &Mid, want: RtcCodec| -> bool {
            let Some(media) = rtc.media(*mid) else {
                return false;
            };
            let remote = media.remote_pts();
            rtc.codec_config()
                .params()
                .iter()
                .any(|pp| pp.spec().codec == want && remote.contains(&pp.pt()))
        };
        let mut video: Option<Receiver> = None;
        let mut audio: Option<Receiver> = None;
        let mut skipped = Vec::new();
        for sec in &p.summary.sections {
            let Some(mid_str) = sec.mid.as_deref() else {
                continue;
            };
            let mid = Mid::from(mid_str);
            let (slot, want, name) = match sec.kind {
                SectionKind::Video => (&mut video, RtcCodec::H264, "H.264"),
                SectionKind::Audio => (&mut audio, RtcCodec::Opus, "Opus"),
                _ => continue,
            };
            if slot.is_some() {
                skipped.push((
                    mid_str.to_owned(),
                    "one video and one audio track are published",
                ));
                continue;
            }
            if sec.port_zero || !sec.direction.sends() {
                continue;
            }
            if !negotiated(&rtc, &mid, want) {
                skipped.push((
                    mid_str.to_owned(),
                    if name == "H.264" {
                        "rtspgate takes H.264 video from WHIP publishers"
                    } else {
                        "rtspgate takes Opus audio from WHIP publishers"
                    },
                ));
                continue;
            }
            *slot = Some(Receiver {
                mid,
                // Set below.
                track: 0,
                base: None,
                h264: (sec.kind == SectionKind::Video).then(InBandH264::default),
            });
        }
        // Video first, whatever the offer's order (a browser's is often
        // audio first), as cameras send it: RTSP readers that probe only
        // the first packets (ffmpeg with a short analyzeduration) then find
        // the picture size.
        let mut tracks = Vec::new();
        if let Some(v) = video.as_mut() {
            v.track = tracks.len();
            // Parameter sets come in band.
            tracks.push(SourceTrack {
                kind: MediaKind::Video,
                clock_rate: 90_000,
                track: None,
            });
        }
        if let Some(a) = audio.as_mut() {
            a.track = tracks.len();
            tracks.push(SourceTrack::known(Track::new(
                Codec::Opus {
                    channels: OPUS_CHANNELS,
                },
                48_000,
            )));
        }
        for (mid, why) in &skipped {
            answer = add_media_info(&answer, mid, why);
        }
        if tracks.is_empty() {
            return Err(PublishSessionError::NothingUsable(
                NOTHING_USABLE.to_owned(),
            ));
        }
        let publication = p.sink.open(&p.path, tracks, p.now)?;

        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let handle = Arc::new(WhepResource {
            id: p.id,
            path: p.path.clone(),
            ice_ufrag: ufrag.clone(),
            remote_ufrag: p.summary.ice_ufrag.clone(),
            trickled: AtomicUsize::new(0),
            publisher: true,
            stats: Mutex::new(WebRtcDetail {
                state: "connecting",
                video_codec: video.as_ref().map(|_| "h264".to_owned()),
                audio_codec: audio.as_ref().map(|_| "opus".to_owned()),
                skipped_tracks: skipped
                    .iter()
                    .map(|(mid, why)| format!("m= section {mid} not published: {why}"))
                    .collect(),
                ..WebRtcDetail::default()
            }),
        });
        let mut session = PublishSession {
            id: p.id,
            path: p.path,
            rtc,
            ufrag,
            created: p.now,
            connected: false,
            closed: None,
            next_timeout: p.now,
            events: Vec::new(),
            handle,
            publication: Some(publication),
            video,
            audio,
            last_keyframe: None,
            last_keyframe_request: None,
            new_bytes: 0,
        };
        let mut none = Vec::new();
        session.drain(p.now, &mut none);
        Ok((session, answer))
    }

    /// Our ICE ufrag (the demultiplexing key for STUN).
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The WHIP resource shared with the HTTP handlers and the registry.
    pub fn handle(&self) -> &Arc<WhepResource> {
        &self.handle
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// When [`PublishSession::handle_timeout`] must be called next.
    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    /// Media bytes received since the last call (for the registry).
    pub fn take_new_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.new_bytes)
    }

    /// Feeds one received datagram (or ICE-TCP frame); false if it is not
    /// for this session.
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
            self.fail(format!("WebRTC error: {e}"));
        }
        self.drain(now, out);
        true
    }

    /// Advances time: RTCP (receiver reports, NACK, PLI), ICE consent, our
    /// connect timeout.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        if !self.connected && now.saturating_duration_since(self.created) >= CONNECT_TIMEOUT {
            self.fail(format!(
                "the publisher did not connect within {} s (ICE or DTLS failed: is the UDP/TCP port reachable?)",
                CONNECT_TIMEOUT.as_secs()
            ));
            return;
        }
        if self.connected && self.gop_too_long(now) {
            self.request_keyframe(now);
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(format!("WebRTC error: {e}"));
        }
        self.drain(now, out);
    }

    /// Adds a trickled remote candidate (WHIP PATCH).
    pub fn add_remote_candidate(&mut self, now: Instant, c: Candidate, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        self.rtc.add_remote_candidate(c);
        self.drain(now, out);
    }

    /// Ends the session (WHIP DELETE, kick): the path's publication ends
    /// with it; RTCP BYE and DTLS close_notify go out in `out`.
    pub fn close(&mut self, now: Instant, reason: &str, out: &mut Vec<Transmit>) {
        if self.closed.is_some() {
            return;
        }
        self.fail(reason.to_owned());
        let _ = self.rtc.close();
        self.drain(now, out);
    }

    fn fail(&mut self, reason: String) {
        if self.closed.is_some() {
            return;
        }
        // The path's readers are ended now, not when the driver gets to it.
        self.publication = None;
        let mut stats = self.stats_mut();
        stats.state = "closed";
        stats.closed_reason = Some(reason.clone());
        drop(stats);
        self.closed = Some(reason.clone());
        self.events.push(SessionEvent::Closed(reason));
    }

    /// Asks the publisher for a keyframe, at most every
    /// [`KEYFRAME_REQUEST_INTERVAL`]. Possible once its video stream is
    /// known to str0m (after its first packet).
    fn request_keyframe(&mut self, now: Instant) {
        let Some(mid) = self.video.as_ref().map(|v| v.mid) else {
            return;
        };
        if self
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        if writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .is_ok()
        {
            self.last_keyframe_request = Some(now);
            tracing::debug!(session = %format_id(self.id), "PLI to the publisher");
        }
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
                    let mut next = t;
                    if !self.connected {
                        next = next.min(self.created + CONNECT_TIMEOUT);
                    } else if self.video.is_some() {
                        // The GOP check of `handle_timeout`.
                        next = next.min(now + KEYFRAME_REQUEST_INTERVAL);
                    }
                    self.next_timeout = next;
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
                tracing::info!(path = %self.path, session = %format_id(self.id), "WHIP publisher connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let reason = if self.connected {
                    "the publisher stopped answering (ICE consent expired)"
                } else {
                    "ICE failed: no working path to the publisher"
                };
                self.fail(reason.to_owned());
            }
            Event::MediaData(data) => self.on_media(now, data),
            Event::PeerStats(p) => {
                if let Some(pair) = p.selected_candidate_pair {
                    let mut stats = self.stats_mut();
                    stats.remote = Some(pair.remote.addr);
                    stats.transport = Some(match pair.protocol {
                        Protocol::Udp => "udp",
                        _ => "tcp",
                    });
                    if let Some(rtt) = pair.current_round_trip_time {
                        stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
            }
            Event::Closed => self.fail("the publisher closed the connection".to_owned()),
            _ => {}
        }
    }

    /// One depacketized frame from the publisher onto the bus.
    fn on_media(&mut self, now: Instant, d: MediaData) {
        let is_video = self.video.as_ref().is_some_and(|v| v.mid == d.mid);
        let receiver = if is_video {
            self.video.as_mut()
        } else {
            self.audio.as_mut().filter(|a| a.mid == d.mid)
        };
        let Some(r) = receiver else {
            return;
        };
        let numer = d.time.numer();
        let base = *r.base.get_or_insert(numer);
        let pts = i64::try_from(numer)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(base).unwrap_or(i64::MAX));
        let track = r.track;
        let (data, source_keyframe, params) = match &mut r.h264 {
            Some(in_band) => {
                let Some(au) = annexb_to_avcc(&d.data) else {
                    return;
                };
                let keyframe = matches!(
                    d.codec_extra,
                    str0m::format::CodecExtra::H264(x) if x.is_keyframe
                );
                let params = in_band.update(&au);
                (au, keyframe, params)
            }
            None => (Bytes::copy_from_slice(&d.data), true, None),
        };
        self.new_bytes += data.len() as u64;
        let Some(publication) = self.publication.as_mut() else {
            return;
        };
        if let Some(params) = params {
            publication.set_parameters(track, params, now);
        }
        let result = publication.push(
            SourceFrame {
                track,
                pts,
                dts: None,
                data,
                source_keyframe,
                loss: u32::from(!d.contiguous),
            },
            now,
        );
        if let Err(why) = result {
            self.fail(format!("the publication ended: {why}"));
            return;
        }
        let mut stats = self.stats_mut();
        if is_video {
            stats.video_frames += 1;
        } else {
            stats.audio_frames += 1;
        }
        drop(stats);
        if is_video {
            if source_keyframe {
                self.last_keyframe = Some(now);
            } else if !d.contiguous || self.gop_too_long(now) {
                // A picture was lost (the frames until the next IDR would
                // not decode), none decodable came yet, or the GOP is long.
                self.request_keyframe(now);
            }
        }
    }

    /// Whether no video keyframe came yet or the last one is older than
    /// [`MAX_GOP_DURATION`].
    fn gop_too_long(&self, now: Instant) -> bool {
        self.video.is_some()
            && self
                .last_keyframe
                .is_none_or(|t| now.saturating_duration_since(t) >= MAX_GOP_DURATION)
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, WebRtcDetail> {
        self.handle.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An Annex B access unit (str0m's H.264 depacketizer output) as NAL
/// units with 4-byte big-endian length prefixes (ISO/IEC 14496-15, the
/// bus's framing); `None` when it holds no NAL unit.
pub fn annexb_to_avcc(data: &[u8]) -> Option<Bytes> {
    let units = annexb_nal_units(data);
    if units.is_empty() {
        return None;
    }
    let mut out = BytesMut::with_capacity(data.len() + 4 * units.len());
    for u in units {
        out.put_u32(u32::try_from(u.len()).ok()?);
        out.put_slice(u);
    }
    Some(out.freeze())
}

/// The H.264 parameter sets (SPS, PPS) a publisher sent in band so far.
#[derive(Debug, Default)]
pub struct InBandH264 {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl InBandH264 {
    /// Records the SPS and PPS of `access_unit` (length-prefixed NAL
    /// units); returns the track they describe when one of them is new or
    /// changed and both are known, `None` otherwise (also for an SPS that
    /// does not parse: the track stays as it was).
    pub fn update(&mut self, access_unit: &Bytes) -> Option<Track> {
        let mut changed = false;
        for nal in crate::codec::avcc_nal_units(access_unit).map_while(Result::ok) {
            let Some(&header) = nal.first() else {
                continue;
            };
            let slot = match h264_nal_type(header) {
                H264_NAL_SPS => &mut self.sps,
                H264_NAL_PPS => &mut self.pps,
                _ => continue,
            };
            if slot.as_deref() != Some(nal) {
                *slot = Some(access_unit.slice_ref(nal));
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        let codec = Codec::H264 {
            sps: self.sps.clone()?,
            pps: self.pps.clone()?,
        };
        match Track::try_new(codec, 90_000) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("WHIP publisher's SPS does not parse: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sps() -> Bytes {
        crate::codec::tests::hex(crate::codec::tests::H264_SPS)
    }
    fn pps() -> Bytes {
        crate::codec::tests::hex(crate::codec::tests::H264_PPS)
    }

    /// A sink that records what was opened.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Vec<SourceTrack>)>>);

    struct Nothing;
    impl Publication for Nothing {
        fn push(&mut self, _: SourceFrame, _: Instant) -> Result<(), String> {
            Ok(())
        }
        fn set_parameters(&mut self, _: usize, _: Track, _: Instant) {}
        fn push_rtp(
            &mut self,
            _: usize,
            _: crate::codec::RtpPacket<'_>,
            _: Instant,
        ) -> Result<(), String> {
            Err("WHIP hands frames, not RTP".into())
        }
    }

    impl PublishSink for Recorder {
        fn open_rtp(
            &self,
            _: &str,
            _: Vec<crate::bus::RtpSource>,
            _: Instant,
        ) -> Result<Box<dyn Publication>, PublishError> {
            Err(PublishError::Tracks("WHIP opens frame publications".into()))
        }
        fn open(
            &self,
            path: &str,
            tracks: Vec<SourceTrack>,
            _: Instant,
        ) -> Result<Box<dyn Publication>, PublishError> {
            self.0.lock().unwrap().push((path.to_owned(), tracks));
            Ok(Box::new(Nothing))
        }
    }

    fn publish(
        offer: &str,
        sink: &Recorder,
    ) -> Result<(PublishSession, String), PublishSessionError> {
        let summary = super::super::offer::parse_offer(offer).unwrap();
        PublishSession::new(PublishParams {
            id: 1,
            path: "live".into(),
            offer,
            summary: &summary,
            candidates: vec![Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap()],
            dtls_cert: None,
            sink,
            now: Instant::now(),
        })
    }

    #[test]
    fn a_browser_offer_opens_video_first_then_opus() {
        let sink = Recorder::default();
        // The microphone's section first, as Chromium offers getUserMedia's
        // tracks (audio, then video).
        let offer = include_str!("testdata/chrome_whip_offer.sdp");
        let (video_at, audio_at) = (
            offer.find("m=video").unwrap(),
            offer.find("m=audio").unwrap(),
        );
        assert!(video_at < audio_at);
        let offer = format!(
            "{}{}{}",
            &offer[..video_at].replace("BUNDLE 0 1", "BUNDLE 1 0"),
            &offer[audio_at..],
            &offer[video_at..audio_at]
        );
        let (session, answer) = publish(&offer, &sink).expect("H.264 and Opus offered");
        assert!(answer.contains("a=recvonly"), "{answer}");
        let opened = sink.0.lock().unwrap();
        assert_eq!(opened.len(), 1);
        let (path, tracks) = &opened[0];
        assert_eq!(path, "live");
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].kind, MediaKind::Video);
        assert!(tracks[0].track.is_none(), "parameter sets come in band");
        assert_eq!(
            tracks[1].track.as_ref().map(|t| &t.codec),
            Some(&Codec::Opus { channels: 2 })
        );
        let detail = session.handle().snapshot();
        assert_eq!(detail.video_codec.as_deref(), Some("h264"));
        assert!(session.handle().publisher);
    }

    #[test]
    fn an_offer_without_h264_or_opus_opens_nothing() {
        let sink = Recorder::default();
        let offer = include_str!("testdata/chrome_whip_offer_vp8_pcmu.sdp");
        assert!(matches!(
            publish(offer, &sink),
            Err(PublishSessionError::NothingUsable(_))
        ));
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn annexb_access_units_become_length_prefixed() {
        let (sps, pps) = (sps(), pps());
        let mut annexb = vec![0, 0, 0, 1];
        annexb.extend_from_slice(&sps);
        annexb.extend_from_slice(&[0, 0, 1]);
        annexb.extend_from_slice(&pps);
        annexb.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        let avcc = annexb_to_avcc(&annexb).expect("three NAL units");
        let units: Vec<&[u8]> = crate::codec::avcc_nal_units(&avcc)
            .map(Result::unwrap)
            .collect();
        assert_eq!(units, [&sps[..], &pps[..], &[0x65, 0x88, 0x84][..]]);
        assert_eq!(&avcc[..4], &[0, 0, 0, sps.len() as u8]);
        assert!(annexb_to_avcc(&[0, 0, 0]).is_none());
    }

    #[test]
    fn in_band_parameter_sets_make_the_track_once_per_change() {
        let au = |nals: &[&[u8]]| {
            let mut annexb = Vec::new();
            for n in nals {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(n);
            }
            annexb_to_avcc(&annexb).unwrap()
        };
        let (sps, pps) = (sps(), pps());
        let mut in_band = InBandH264::default();
        assert!(in_band.update(&au(&[&sps])).is_none(), "no PPS yet");
        let track = in_band.update(&au(&[&pps, &[0x65, 0x88]])).expect("both");
        assert!(track.dimensions.is_some(), "the SPS was parsed");
        assert!(matches!(track.codec, Codec::H264 { .. }));
        assert!(
            in_band.update(&au(&[&sps, &pps, &[0x65, 0x88]])).is_none(),
            "the same sets again (every IDR) change nothing"
        );
        assert!(in_band.update(&au(&[&[0x41, 0x9a]])).is_none());
        let other_pps: &[u8] = &[0x68, 0xcb, 0x8c, 0xb3];
        assert!(in_band.update(&au(&[other_pps])).is_some(), "a new PPS");
    }
}
