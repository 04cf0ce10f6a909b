//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), and of
//! the regression test that replays every input kept under
//! `fuzz/corpus/<target>/` with the ordinary test suite (stable, CI).
//!
//! Each takes arbitrary bytes and must return without panicking, hanging or
//! allocating without bound: nothing a client, a camera or a config file
//! sends is trusted. Inputs are decoded by hand (first bytes as choices,
//! the rest as payload) so the corpora stay plain files anyone can read.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::bus::{Codec, Frame, Registry, Stream, StreamState, Track};

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target, by name: what `fuzz/fuzz_targets/<name>.rs` calls and
/// what the corpus directory is called.
pub const TARGETS: &[(&str, Target)] = &[
    ("rtsp_requests", rtsp_requests),
    ("rtsp_transport", rtsp_transport),
    ("whep_offer", whep_offer),
    ("whep_trickle", whep_trickle),
    ("param_sets", param_sets),
    ("payloader", payloader),
    ("hls_request", hls_request),
    ("fmp4_muxer", fmp4_muxer),
    ("config_file", config_file),
    ("auth_header", auth_header),
    ("publisher", publisher),
    ("depacketizer", depacketizer),
];

/// H.264 + AAC tracks of the test clip, made once.
fn tracks() -> &'static [Arc<Track>] {
    static TRACKS: OnceLock<Vec<Arc<Track>>> = OnceLock::new();
    TRACKS.get_or_init(|| {
        use crate::egress::hls::testutil::{aac_track, h264_fixture, h264_track};
        vec![h264_track(&h264_fixture()), aac_track()]
    })
}

/// A registry with a live path `cam` (the test clip's tracks).
fn registry() -> &'static Arc<Registry> {
    static REG: OnceLock<Arc<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        let r = Registry::new();
        let s = Stream::new("cam", "rtsp://192.0.2.1/cam");
        s.set_tracks(tracks().to_vec());
        s.set_state(StreamState::Live);
        r.insert(s);
        r
    })
}

/// Splits `data` (one connection's bytes) into messages and interleaved
/// frames as the server does (`framing`), and feeds every request through
/// the server's session state machine.
pub fn rtsp_requests(data: &[u8]) {
    use crate::egress::rtsp::framing::{Framer, Next};
    use crate::egress::rtsp::session::{Conn, Ctx};
    let mut conn = Conn::new(Duration::from_secs(60));
    let mut framer = Framer::default();
    let mut rest = data;
    let mut n = 0u64;
    for _ in 0..256 {
        let used = match framer.next(rest) {
            Next::Blank { skip } => skip,
            Next::Interleaved { len, .. } => len,
            Next::Message { len } => {
                let msg = rest.get(..len).unwrap_or_default();
                if let Ok((rtsp_types::Message::Request(req), _)) =
                    rtsp_types::Message::<Vec<u8>>::parse(msg)
                {
                    let mut new_id = || {
                        n += 1;
                        format!("{n:016x}")
                    };
                    let mut ctx = Ctx {
                        now: Instant::now(),
                        paths: &**registry(),
                        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        server_rtp_port: 8000,
                        new_session_id: &mut new_id,
                    };
                    let _ = conn.handle(&req, &mut ctx);
                }
                len
            }
            _ => return,
        };
        assert!(used > 0 && used <= rest.len(), "framing made no progress");
        rest = rest.get(used..).unwrap_or_default();
    }
}

/// A SETUP of `cam` whose `Transport` header is `data`.
pub fn rtsp_transport(data: &[u8]) {
    let mut req =
        b"SETUP rtsp://127.0.0.1/cam/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: ".to_vec();
    req.extend(data.iter().filter(|&&b| b != b'\r' && b != b'\n'));
    req.extend_from_slice(b"\r\n\r\n");
    let mut all = b"DESCRIBE rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec();
    all.extend(req);
    rtsp_requests(&all);
}

/// A WHEP offer: parsed, then planned against the test clip's tracks.
pub fn whep_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(summary) = crate::egress::webrtc::offer::parse_offer(text) {
        let _ = crate::egress::webrtc::codecs::plan(tracks(), &summary);
    }
}

/// A trickle-ICE PATCH body (`application/trickle-ice-sdpfrag`).
pub fn whep_trickle(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::egress::webrtc::offer::parse_sdpfrag(text);
    }
}

/// Splits `data` at 0xFF 0xFF markers into at most `n` pieces.
fn pieces(data: &[u8], n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(2).position(|w| w == [0xFF, 0xFF]) {
            Some(i) => {
                out.push(Bytes::copy_from_slice(rest.get(..i).unwrap_or_default()));
                rest = rest.get(i + 2..).unwrap_or_default();
            }
            None => break,
        }
    }
    out.push(Bytes::copy_from_slice(rest));
    out
}

/// Parameter sets from a camera's SDP or in-band NAL units: first byte
/// picks H.264 (even) or H.265 (odd); the rest splits into SPS/PPS(/VPS).
pub fn param_sets(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let p = pieces(rest, 3);
    let get = |i: usize| p.get(i).cloned().unwrap_or_default();
    let codec = if choice % 2 == 0 {
        Codec::H264 {
            sps: get(0),
            pps: get(1),
        }
    } else {
        Codec::H265 {
            vps: get(0),
            sps: get(1),
            pps: get(2),
        }
    };
    let _ = Track::try_new(codec, 90_000);
}

/// An access unit (AVCC framing) packetized for RTP readers at an MTU
/// chosen by the first byte, and checked for random access.
pub fn payloader(data: &[u8]) {
    use crate::codec::Payloader;
    let Some((&choice, au)) = data.split_first() else {
        return;
    };
    let track = tracks().first().cloned();
    let codecs = [
        track.map(|t| t.codec.clone()),
        Some(Codec::Aac {
            config: Bytes::from_static(&[0x11, 0x90]),
            channels: 2,
        }),
        Some(Codec::Pcma { channels: 1 }),
        Some(Codec::Opus { channels: 2 }),
    ];
    let Some(Some(codec)) = codecs.get(usize::from(choice % 4)) else {
        return;
    };
    let mtu = 576 + usize::from(choice) * 4;
    if let Ok(mut p) = Payloader::new(codec, 96, 1, 0, mtu) {
        let mut out = Vec::new();
        let _ = p.payload(au, 0, choice & 0x80 != 0, &mut out);
    }
    let _ = crate::codec::is_random_access(codec, au);
}

/// An LL-HLS request: file name and query (split at the first `?`).
pub fn hls_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, query) = text.split_once('?').unwrap_or((text, ""));
    let _ = crate::egress::hls::playlist::parse_uri(file);
    if let Ok(d) = crate::http::hls::directives(Some(query)) {
        // The decision a live playlist makes of the client's numbers.
        let mut m = crate::egress::hls::Muxer::new(Default::default());
        m.handle_tracks(tracks());
        let _ = m.reload_decision(d.msn, d.part);
    }
}

/// Frames of the test clip's tracks with client-chosen timestamps, sizes
/// and flags, through the CMAF segmenter, parts, playlist and init segment.
/// Each 8-byte record: track, flags, pts delta (i16), dts delta (i16), size (u16).
pub fn fmp4_muxer(data: &[u8]) {
    let mut m = crate::egress::hls::Muxer::new(Default::default());
    m.handle_tracks(tracks());
    let au = crate::egress::hls::testutil::h264_fixture();
    let mut pts = [0i64; 2];
    let mut dts = [0i64; 2];
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (i, rec) in data.chunks_exact(8).take(2000).enumerate() {
        let track = usize::from(rec[0] % 3);
        let flags = rec[1];
        let dpts = i64::from(i16::from_be_bytes([rec[2], rec[3]]));
        let ddts = i64::from(i16::from_be_bytes([rec[4], rec[5]]));
        let size = usize::from(u16::from_be_bytes([rec[6], rec[7]]));
        let t = track.min(1);
        pts[t] = pts[t].saturating_add(dpts * 90);
        dts[t] = dts[t].saturating_add(ddts * 90);
        let data = if t == 0 && flags & 1 == 0 {
            au.frames
                .get(usize::from(flags) % au.frames.len().max(1))
                .map(|(f, _)| f.clone())
                .unwrap_or_default()
        } else {
            Bytes::from(vec![flags; size % 4096])
        };
        let frame = Frame {
            track,
            pts: pts[t],
            dts: dts[t],
            keyframe: flags & 2 != 0,
            received: Instant::now(),
            data,
        };
        m.handle_frame(&frame, start + Duration::from_millis(i as u64 * 40));
        while m.poll_event().is_some() {}
        if flags & 4 != 0 {
            let _ = m.playlist(
                flags & 8 != 0,
                if flags & 16 != 0 {
                    "user=v&pass=s%26"
                } else {
                    ""
                },
            );
            if let Some(v) = m.current_init() {
                let _ = m.init(v);
            }
        }
    }
    m.flush();
    let _ = m.playlist(false, "");
}

/// A config file (TOML), validated as at start-up.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_toml(text);
    }
}

/// An `Authorization` header value, and the same bytes as a URL query.
pub fn auth_header(data: &[u8]) {
    use crate::auth::credentials;
    let _ = credentials::parse_authorization(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = credentials::from_query(text);
        let _ = credentials::query_suffix(text);
    }
}

/// A source's session as the publisher sees it: a start with the clip's
/// tracks, then frames with client-chosen track, timestamps, flags and
/// loss. Each 8-byte record: track, flags, pts delta (i32, clock units), size (u16).
pub fn publisher(data: &[u8]) {
    use crate::bus::{SourceFrame, SourceTrack};
    use crate::ingest::publisher::{Input, Publisher};
    let mut p = Publisher::new(Default::default());
    let now = Instant::now();
    let start: Vec<SourceTrack> = tracks()
        .iter()
        .map(|t| SourceTrack::known((**t).clone()))
        .collect();
    let _ = p.handle(Input::Start(start), now);
    let au = crate::egress::hls::testutil::h264_fixture();
    let mut pts = 0i64;
    for (i, rec) in data.chunks_exact(8).take(2000).enumerate() {
        let flags = rec[1];
        let delta = i32::from_be_bytes([rec[2], rec[3], rec[4], rec[5]]);
        let size = usize::from(u16::from_be_bytes([rec[6], rec[7]]));
        // Any timestamp a camera may send, jumps included (the clock-jump
        // quirk is what this exercises).
        pts = pts.saturating_add(i64::from(delta));
        let data = if flags & 1 == 0 {
            au.frames
                .get(usize::from(flags) % au.frames.len().max(1))
                .map(|(f, _)| f.clone())
                .unwrap_or_default()
        } else {
            Bytes::from(vec![flags; size % 4096])
        };
        let input = if flags & 0x40 != 0 {
            Input::Start(
                tracks()
                    .iter()
                    .map(|t| SourceTrack::known((**t).clone()))
                    .collect(),
            )
        } else {
            Input::Frame(SourceFrame {
                track: usize::from(rec[0] % 3),
                pts,
                dts: None,
                source_keyframe: flags & 2 != 0,
                loss: u32::from(flags >> 4),
                data,
            })
        };
        let _ = p.handle(input, now + Duration::from_millis(i as u64 * 10));
    }
}

/// RTP packets of one track into our depacketizer. The first byte picks
/// the format (H.264, H.265, AAC, Opus, PCMU, JPEG); then records of a
/// 16-bit payload length, a flags byte (bit 0 marker, bit 1 next timestamp
/// (+3000), bit 2 skip a sequence number, bits 4..8 the `loss` count) and
/// the payload.
pub fn depacketizer(data: &[u8]) {
    use crate::codec::{Depacketizer, RtpFormat, RtpPacket};
    let Some((&choice, mut rest)) = data.split_first() else {
        return;
    };
    let formats: [(&str, u32, &str); 6] = [
        ("H264", 90_000, "packetization-mode=1"),
        ("H265", 90_000, ""),
        (
            "MPEG4-GENERIC",
            48_000,
            "mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3",
        ),
        ("OPUS", 48_000, ""),
        ("PCMU", 8_000, ""),
        ("JPEG", 90_000, ""),
    ];
    let (name, clock_rate, fmtp) = formats[usize::from(choice) % formats.len()];
    let Ok(mut d) = Depacketizer::new(&RtpFormat {
        encoding_name: name,
        clock_rate,
        channels: Some(u16::from(choice >> 7) + 1),
        fmtp: Some(fmtp),
    }) else {
        return;
    };
    let (mut seq, mut ts) = (0xfff0u16, 0xffff_f000u32);
    while let Some((hdr, tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        let flags = hdr[2];
        let (payload, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        if flags & 2 != 0 {
            ts = ts.wrapping_add(3000);
        }
        if flags & 4 != 0 {
            seq = seq.wrapping_add(1);
        }
        d.push(RtpPacket {
            sequence_number: seq,
            timestamp: ts,
            marker: flags & 1 != 0,
            payload,
            loss: u16::from(flags >> 4),
        });
        seq = seq.wrapping_add(1);
        while d.pull().is_some() {}
    }
    d.flush();
    while d.pull().is_some() {}
}

#[cfg(test)]
mod tests {
    /// Replays every kept input of every target (seed corpus, and the crash
    /// and hang inputs fuzzing found, kept as regressions).
    #[test]
    fn corpora_replay_without_panics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut total = 0;
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
                panic!("{}: {e} (every target has a seed corpus)", dir.display())
            });
            let mut n = 0;
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                target(&data);
                n += 1;
            }
            assert!(n > 0, "{name}: empty corpus");
            total += n;
        }
        assert!(total >= super::TARGETS.len());
    }
}
