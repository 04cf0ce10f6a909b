//! A [`Session`] against a str0m client standing in for the browser, with
//! datagrams shuttled in memory and time simulated: no sockets, no sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as RtcKind, Mid};
use str0m::net::{Protocol, Transmit};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::*;
use crate::bus::{Codec, Frame, Track, TrackSet};
use crate::egress::webrtc::codecs::plan;
use crate::egress::webrtc::offer::parse_offer;
use crate::egress::webrtc::rtp::PathPacketizer;

const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

fn tracks(audio: Option<Codec>) -> TrackSet {
    let mut tracks = vec![Arc::new(Track {
        dimensions: Some((640, 360)),
        frame_rate: Some(25.0),
        ..Track::new(
            Codec::H264 {
                sps: Bytes::from_static(SPS),
                pps: Bytes::from_static(PPS),
            },
            90000,
        )
    })];
    if let Some(codec) = audio {
        let clock_rate = if matches!(codec, Codec::Opus { .. }) {
            48000
        } else {
            8000
        };
        tracks.push(Arc::new(Track::new(codec, clock_rate)));
    }
    TrackSet {
        generation: 1,
        tracks,
    }
}

/// An AVCC access unit of one NAL unit of `len` bytes.
fn au(key: bool, len: usize, fill: u8) -> Bytes {
    let mut v = (len as u32).to_be_bytes().to_vec();
    v.push(if key { 0x65 } else { 0x41 });
    v.extend(std::iter::repeat_n(fill, len - 1));
    Bytes::from(v)
}

fn frame(track: usize, pts: i64, key: bool, data: Bytes, at: Instant) -> Arc<Frame> {
    Arc::new(Frame {
        track,
        pts,
        dts: pts,
        keyframe: key,
        received: at,
        data,
    })
}

struct Pair {
    now: Instant,
    client: Rtc,
    server: Session,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    /// When false, the client's datagrams are lost (a vanished viewer).
    client_online: bool,
    video_mid: Mid,
    received: Vec<(Mid, bool, Vec<u8>)>,
    client_connected: bool,
    /// Drop every n-th datagram to the client (simulated loss).
    drop_every: Option<usize>,
    sent_to_client: usize,
    /// The path's shared packetizer (the driver's, in production).
    rtp: PathPacketizer,
}

impl Pair {
    fn new(audio: Option<Codec>) -> (Pair, String) {
        let now = Instant::now();
        let client_addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
        let server_addr: SocketAddr = "10.0.0.1:8189".parse().unwrap();
        let mut client = Rtc::builder().build(now);
        client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
        let mut change = client.sdp_api();
        let video_mid = change.add_media(RtcKind::Video, Direction::RecvOnly, None, None, None);
        change.add_media(RtcKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending): (_, SdpPendingOffer) = change.apply().unwrap();
        let offer = offer.to_sdp_string();

        let summary = parse_offer(&offer).unwrap();
        let set = tracks(audio);
        let plan = plan(&set.tracks, &summary).unwrap();
        let (server, answer) = Session::new(SessionParams {
            id: 7,
            path: "cam".into(),
            offer: &offer,
            summary: &summary,
            plan: &plan,
            tracks: &set,
            candidates: vec![Candidate::host(server_addr, "udp").unwrap()],
            dtls_cert: None,
            now,
        })
        .unwrap();
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        (
            Pair {
                now,
                client,
                server,
                client_addr,
                server_addr,
                client_online: true,
                video_mid,
                received: Vec::new(),
                client_connected: false,
                drop_every: None,
                sent_to_client: 0,
                rtp: PathPacketizer::default(),
            },
            answer,
        )
    }

    /// Runs both sides for `dur` of simulated time in 5 ms steps.
    fn run(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.exchange();
            self.now += Duration::from_millis(5);
            let mut out = Vec::new();
            if self.server.next_timeout() <= self.now {
                self.server.handle_timeout(self.now, &mut out);
            }
            self.deliver_to_client(out);
            self.client.handle_input(Input::Timeout(self.now)).unwrap();
        }
        self.exchange();
    }

    fn exchange(&mut self) {
        for _ in 0..1000 {
            let mut to_server: Vec<Transmit> = Vec::new();
            loop {
                match self.client.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => to_server.push(t),
                    Output::Event(Event::MediaData(m)) => {
                        let key = m.is_keyframe();
                        self.received.push((m.mid, key, m.data.to_vec()))
                    }
                    Output::Event(Event::Connected) => self.client_connected = true,
                    Output::Event(_) => {}
                }
            }
            if to_server.is_empty() {
                return;
            }
            let mut out = Vec::new();
            for t in to_server {
                if !self.client_online {
                    continue;
                }
                assert_eq!(t.destination, self.server_addr);
                let ok = self.server.handle_receive(
                    self.now,
                    Protocol::Udp,
                    t.source,
                    t.destination,
                    &t.contents,
                    &mut out,
                );
                assert!(ok, "server must accept the client's packets");
            }
            self.deliver_to_client(out);
        }
        panic!("endless exchange");
    }

    fn deliver_to_client(&mut self, out: Vec<Transmit>) {
        for t in out {
            assert_eq!(t.destination, self.client_addr);
            self.sent_to_client += 1;
            if self
                .drop_every
                .is_some_and(|n| self.sent_to_client.is_multiple_of(n))
            {
                continue;
            }
            let input = Input::Receive(
                self.now,
                str0m::net::Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                    .unwrap(),
            );
            self.client.handle_input(input).unwrap();
        }
    }

    fn write(&mut self, f: &Arc<Frame>, backlog: bool) {
        let mut out = Vec::new();
        let rtp = &mut self.rtp;
        let mut packetize = |t: &Track, f: &Arc<Frame>| rtp.packets(&t.codec, f).ok();
        self.server
            .write_frame(self.now, f, backlog, &mut packetize, &mut out);
        self.deliver_to_client(out);
        self.exchange();
    }

    fn connect(&mut self) {
        self.run(Duration::from_millis(500));
        assert!(self.client_connected, "client connected");
        assert!(self.server.is_connected());
        assert_eq!(self.server.take_events(), vec![SessionEvent::Connected]);
    }

    fn video_frames(&self) -> Vec<(bool, Vec<u8>)> {
        self.received
            .iter()
            .filter(|(m, ..)| *m == self.video_mid)
            .map(|(_, k, d)| (*k, d.clone()))
            .collect()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn answer_is_ice_lite_with_the_planned_codec() {
    let (pair, answer) = Pair::new(None);
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("packetization-mode=1"), "{answer}");
    assert!(answer.contains("profile-level-id=64001f"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(answer.contains("a=candidate:"), "{answer}");
    assert!(pair.server.ufrag().len() >= 4);
    assert!(!pair.server.is_connected());
}

#[test]
fn aac_track_is_explained_in_the_answer() {
    let (_pair, answer) = Pair::new(Some(Codec::Aac {
        config: Bytes::from_static(&[0x11, 0x90]),
        channels: 2,
    }));
    assert!(
        answer.contains("\r\na=rtspgate-info:track 1 (aac) not sent: AAC is not a WebRTC codec"),
        "{answer}"
    );
}

#[test]
fn first_frame_is_the_keyframe_with_parameter_sets() {
    let (mut p, _) = Pair::new(Some(Codec::Opus { channels: 2 }));
    // Before ICE/DTLS: nothing is written.
    let t0 = p.now;
    p.write(&frame(0, 0, true, au(true, 3000, 1), t0), true);
    assert_eq!(p.server.handle().snapshot().video_frames, 0);
    p.connect();

    // A delta frame first (a subscriber never starts with one, but PLI
    // recovery can): skipped until the keyframe.
    p.write(&frame(0, 0, false, au(false, 500, 9), t0), false);
    let gop: Vec<_> = (0..5)
        .map(|i| {
            frame(
                0,
                i * 3600,
                i == 0,
                au(i == 0, if i == 0 { 6000 } else { 800 }, i as u8 + 1),
                t0,
            )
        })
        .collect();
    for f in &gop {
        p.write(f, true);
    }
    // Cached audio is dropped, live audio goes out.
    p.write(
        &frame(1, 0, true, Bytes::from_static(&[0xfc, 1, 2, 3]), t0),
        true,
    );
    for i in 1..4 {
        p.write(
            &frame(
                1,
                i * 960,
                true,
                Bytes::from_static(&[0xfc, 4, 5, 6]),
                p.now,
            ),
            false,
        );
    }
    p.run(Duration::from_millis(100));

    let video = p.video_frames();
    assert_eq!(video.len(), 5, "all five frames of the GOP");
    let (key, first) = &video[0];
    assert!(*key);
    assert!(contains(first, SPS), "SPS before the keyframe");
    assert!(contains(first, PPS), "PPS before the keyframe");
    assert!(contains(first, &[0x65, 1, 1, 1]));
    assert!(!contains(&video[1].1, SPS));
    let audio = p.received.len() - video.len();
    assert_eq!(audio, 3, "3 live audio frames, the cached one dropped");

    let s = p.server.handle().snapshot();
    assert_eq!(s.video_frames, 5);
    assert_eq!(s.audio_frames, 3);
    assert_eq!(s.frames_skipped, 1);
    assert!(s.first_frame_ms.is_some());
    assert_eq!(s.state, "connected");
}

#[test]
fn in_band_track_sets_bring_new_parameters_or_end_the_session() {
    let (mut p, _) = Pair::new(None);
    p.connect();
    // Same generation, a new SPS (level 4.0): the next keyframe carries it.
    let new_sps: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x50];
    let mut set = tracks(None);
    let mut t = (*set.tracks[0]).clone();
    t.codec = Codec::H264 {
        sps: Bytes::from_static(new_sps),
        pps: Bytes::from_static(PPS),
    };
    set.tracks[0] = Arc::new(t);
    assert!(p.server.update_tracks(&set));
    let t0 = p.now;
    p.write(&frame(0, 0, true, au(true, 3000, 1), t0), false);
    p.run(Duration::from_millis(100));
    let video = p.video_frames();
    assert_eq!(video.len(), 1);
    assert!(
        contains(&video[0].1, new_sps),
        "the new SPS before the keyframe"
    );
    assert!(!contains(&video[0].1, SPS));
    // Another generation: the negotiation no longer holds.
    set.generation = 2;
    assert!(!p.server.update_tracks(&set));
}

#[test]
fn keyframe_request_resyncs_only_after_grace() {
    let (mut p, _) = Pair::new(None);
    p.connect();
    let t0 = p.now;
    p.write(&frame(0, 0, true, au(true, 2000, 1), t0), false);
    // A PLI right after the keyframe is about that keyframe: ignored.
    p.client
        .writer(p.video_mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    p.run(Duration::from_millis(50));
    p.write(&frame(0, 3600, false, au(false, 500, 2), t0), false);
    assert_eq!(p.server.handle().snapshot().frames_skipped, 0);

    // Later, a PLI makes this viewer skip to the next keyframe.
    p.run(Duration::from_millis(500));
    p.client
        .writer(p.video_mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    p.run(Duration::from_millis(50));
    p.write(&frame(0, 7200, false, au(false, 500, 3), t0), false);
    p.write(&frame(0, 10800, false, au(false, 500, 4), t0), false);
    assert_eq!(p.server.handle().snapshot().frames_skipped, 2);
    p.write(&frame(0, 14400, true, au(true, 2000, 5), t0), false);
    p.write(&frame(0, 18000, false, au(false, 500, 6), t0), false);
    p.run(Duration::from_millis(1200));
    let s = p.server.handle().snapshot();
    assert_eq!(s.video_frames, 4);
    assert!(s.plis >= 1, "PLI counted: {s:?}");
    let video = p.video_frames();
    assert!(video
        .last()
        .is_some_and(|(_, d)| contains(d, &[0x41, 6, 6])));
}

#[test]
fn vanished_viewer_is_dropped_at_consent_timeout() {
    let (mut p, _) = Pair::new(None);
    p.connect();
    p.client_online = false;
    let start = p.now;
    let mut closed = None;
    while p.now < start + Duration::from_secs(40) {
        p.run(Duration::from_millis(200));
        if let Some(SessionEvent::Closed(r)) = p.server.take_events().pop() {
            closed = Some((r, p.now - start));
            break;
        }
    }
    let (reason, after) = closed.expect("session closed");
    assert!(reason.contains("stopped answering"), "{reason}");
    assert!(
        after >= Duration::from_secs(10) && after <= Duration::from_secs(35),
        "{after:?}"
    );
    assert!(p.server.is_closed());
    assert_eq!(p.server.handle().snapshot().state, "closed");
}

#[test]
fn viewer_that_never_connects_times_out() {
    let (mut p, _) = Pair::new(None);
    p.client_online = false;
    let mut out = Vec::new();
    let later = p.now + CONNECT_TIMEOUT;
    assert!(p.server.next_timeout() <= later);
    p.server.handle_timeout(later, &mut out);
    match p.server.take_events().as_slice() {
        [SessionEvent::Closed(r)] => assert!(r.contains("did not connect"), "{r}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_sends_goodbye_and_reports_reason() {
    let (mut p, _) = Pair::new(None);
    p.connect();
    let mut out = Vec::new();
    p.server.close(p.now, "deleted by the viewer", &mut out);
    assert!(!out.is_empty(), "RTCP BYE / DTLS close_notify go out");
    assert_eq!(
        p.server.take_events(),
        vec![SessionEvent::Closed("deleted by the viewer".into())]
    );
    assert_eq!(
        p.server.handle().snapshot().closed_reason.as_deref(),
        Some("deleted by the viewer")
    );
}

#[test]
fn ids_roundtrip_and_reject_garbage() {
    let id: SessionId = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
    let s = format_id(id);
    assert_eq!(s.len(), 32);
    assert_eq!(parse_id(&s), Some(id));
    assert_eq!(parse_id("abc"), None);
    assert_eq!(parse_id(&"g".repeat(32)), None);
    assert_eq!(parse_id(&format!("+{}", &s[1..])), None);
}

#[test]
fn lost_packets_are_repaired_with_nack_and_rtx() {
    let (mut p, answer) = Pair::new(None);
    assert!(answer.contains("apt="), "RTX negotiated: {answer}");
    p.connect();
    p.drop_every = Some(7);
    let t0 = p.now;
    for i in 0..50i64 {
        // 1 s GOP at 25 fps, frames of several packets each.
        let key = i % 25 == 0;
        p.write(
            &frame(
                0,
                i * 3600,
                key,
                au(key, if key { 9000 } else { 3000 }, i as u8),
                t0,
            ),
            false,
        );
        p.run(Duration::from_millis(40));
    }
    p.drop_every = None;
    p.run(Duration::from_millis(1500));
    let video = p.video_frames();
    assert_eq!(video.len(), 50, "every frame complete after retransmission");
    let s = p.server.handle().snapshot();
    assert!(s.nacks > 0, "NACKs counted: {s:?}");
    // (RTT needs real time between RTCP reports; the e2e tests check it.)
}

#[test]
fn rtx_cache_age_follows_round_trip_time_with_a_margin() {
    let ms = Duration::from_millis;
    assert_eq!(rtx_cache_age(ms(1), RTX_CACHE_AGE), RTX_CACHE_AGE);
    assert_eq!(
        rtx_cache_age(RTX_LONG_RTT, RTX_CACHE_AGE),
        RTX_CACHE_AGE_LONG_RTT
    );
    // Between 3/4 of the threshold and the threshold: no change either way.
    let between = RTX_LONG_RTT * 7 / 8;
    assert_eq!(rtx_cache_age(between, RTX_CACHE_AGE), RTX_CACHE_AGE);
    assert_eq!(
        rtx_cache_age(between, RTX_CACHE_AGE_LONG_RTT),
        RTX_CACHE_AGE_LONG_RTT
    );
    assert_eq!(
        rtx_cache_age(RTX_LONG_RTT / 2, RTX_CACHE_AGE_LONG_RTT),
        RTX_CACHE_AGE
    );
    // A NACK for a loss comes about one round trip later: still cached.
    assert!(RTX_CACHE_AGE > RTX_LONG_RTT * 2);
    assert!(RTX_CACHE_AGE_LONG_RTT > RTX_LONG_RTT * 5);
}
