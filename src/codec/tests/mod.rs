//! Round trips through retina's depacketizers (a real RTSP client's) and
//! checks of the RTP packets themselves; [`params`]: the parameter-set
//! summaries, random access detection and access unit sanitising.

pub(crate) mod params;

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use retina::codec::{CodecItem, Depacketizer, ParametersRef, VideoParametersCodec};

use super::*;

/// Parses a hex string (test constants only).
pub(crate) fn hex(s: &str) -> Bytes {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex is valid"))
        .collect()
}

// x264enc, 640x360 constrained baseline, level 3.0 (GStreamer videotestsrc).
pub(crate) const H264_SPS: &str = "6742c01ed900a02ff97016a0c0c0d4a0000003002000000651e2c5c9";
pub(crate) const H264_PPS: &str = "68cb8cb2";
// x265enc, 640x360 Main (GStreamer videotestsrc, I420).
pub(crate) const H265_VPS: &str = "40010c01ffff01600000030090000003000003003f959809";
pub(crate) const H265_SPS: &str = "42010101600000030090000003000003003fa00502016965959a4932bffc00040005a83030302000000300200000030321";
pub(crate) const H265_PPS: &str = "4401c172b46240";

pub(crate) fn h264_codec() -> Codec {
    Codec::H264 {
        sps: hex(H264_SPS),
        pps: hex(H264_PPS),
    }
}

pub(crate) fn h265_codec() -> Codec {
    Codec::H265 {
        vps: hex(H265_VPS),
        sps: hex(H265_SPS),
        pps: hex(H265_PPS),
    }
}

/// A NAL unit: `header` then `len - header.len()` pseudo-random non-zero
/// bytes (so no start code emulation, which retina's H.264 path scans for).
fn nal(header: &[u8], len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut v = header.to_vec();
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x % 255) as u8 + 1);
    }
    v
}

/// AVCC framing: each NAL unit with a 4-byte big-endian length.
pub(crate) fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in nals {
        v.extend_from_slice(&(n.len() as u32).to_be_bytes());
        v.extend_from_slice(n);
    }
    v
}

/// One parsed RTP packet.
#[derive(Debug)]
struct Pkt {
    mark: bool,
    ts: u32,
    payload: Bytes,
}

/// Parses and checks the packets every format shares: RTP version 2 with
/// no padding/extension/CSRC, at most `mtu` bytes, the given payload type and
/// SSRC, sequence numbers consecutive from `first_seq` (wrapping).
fn parse(pkts: &[Bytes], mtu: usize, pt: u8, ssrc: u32, first_seq: u16) -> Vec<Pkt> {
    pkts.iter()
        .enumerate()
        .map(|(i, p)| {
            assert!(p.len() <= mtu, "packet {i} is {} > {mtu} bytes", p.len());
            let (h, range) = retina::rtp::PacketHeader::validate(&p[..]).expect("valid RTP");
            assert_eq!(p[0], 0x80, "V=2, no P/X/CC");
            assert_eq!(range.start, 12);
            assert_eq!(h.payload_type(), pt);
            assert_eq!(h.ssrc(), ssrc);
            assert_eq!(h.sequence_number(), first_seq.wrapping_add(i as u16));
            Pkt {
                mark: h.mark(),
                ts: h.timestamp(),
                payload: p.slice(12..),
            }
        })
        .collect()
}

/// Feeds packets to a retina depacketizer as a client would.
struct Rx {
    d: Depacketizer,
    buf: retina::testutil::DepacketizeBuf,
    clock: NonZeroU32,
}

impl Rx {
    fn new(
        media: &str,
        encoding: &str,
        clock: u32,
        channels: Option<u16>,
        fmtp: Option<&str>,
    ) -> Self {
        let mut d = Depacketizer::new(
            media,
            encoding,
            clock,
            channels.and_then(NonZeroU16::new),
            fmtp,
        )
        .expect("retina accepts the parameters");
        d.set_frame_format(retina::codec::FrameFormat::MP4);
        Rx {
            d,
            buf: retina::testutil::DepacketizeBuf::new(1 << 16),
            clock: NonZeroU32::new(clock).expect("non-zero clock"),
        }
    }

    fn push(&mut self, pkts: &[Bytes]) -> Vec<CodecItem> {
        let mut items = Vec::new();
        for p in pkts {
            let (h, range) = retina::rtp::PacketHeader::validate(&p[..]).expect("valid RTP");
            let meta = retina::rtp::PacketMeta {
                ctx: retina::PacketContext::dummy(),
                stream_id: 0,
                timestamp: retina::Timestamp::new(i64::from(h.timestamp()), self.clock, 0)
                    .expect("timestamp"),
                sequence_number: h.sequence_number(),
                ssrc: h.ssrc(),
                mark: h.mark(),
                loss: 0,
            };
            let payload = &p[usize::from(range.start)..usize::from(range.end)];
            self.buf
                .push(&mut self.d, meta, payload)
                .expect("retina accepts the packet");
            while let Some(item) = self.d.pull() {
                items.push(item.expect("retina depacketizes the packet"));
            }
        }
        items
    }

    fn video_params(&self) -> Option<VideoParametersCodec> {
        match self.d.parameters() {
            Some(ParametersRef::Video(v)) => Some(v.codec_params().clone()),
            _ => None,
        }
    }
}

fn video_frames(items: Vec<CodecItem>) -> Vec<retina::codec::VideoFrame> {
    items
        .into_iter()
        .map(|i| match i {
            CodecItem::VideoFrame(f) => f,
            other => panic!("expected a video frame, got {other:?}"),
        })
        .collect()
}

fn audio_frames(items: Vec<CodecItem>) -> Vec<retina::codec::AudioFrame> {
    items
        .into_iter()
        .map(|i| match i {
            CodecItem::AudioFrame(f) => f,
            other => panic!("expected an audio frame, got {other:?}"),
        })
        .collect()
}

const MTU: usize = DEFAULT_MTU;
const SSRC: u32 = 0x1234_5678;

#[test]
fn h264_large_idr_is_fragmented_and_round_trips() {
    let mut p = Payloader::new(&h264_codec(), 96, SSRC, 65533, MTU).unwrap();
    let mut rx = Rx::new("video", "h264", 90_000, None, Some("packetization-mode=1"));
    assert!(rx.video_params().is_none(), "no out-of-band parameters");

    // Keyframe without SPS/PPS: SEI + 5000-byte IDR slice.
    let sei = nal(&[0x06], 40, 1);
    let idr = nal(&[0x65], 5000, 2);
    let frame = avcc(&[&sei, &idr]);
    let mut out = Vec::new();
    p.payload(&frame, 1_000, true, &mut out).unwrap();
    let pkts = parse(&out, MTU, 96, SSRC, 65533);
    // SPS, PPS, SEI, then ceil(4999 / (1388 - 2)) = 4 FU-A.
    assert_eq!(pkts.len(), 7);
    assert_eq!(p.next_seq(), 65533u16.wrapping_add(7));
    assert!(pkts.iter().all(|k| k.ts == 1_000));
    let marks: Vec<bool> = pkts.iter().map(|k| k.mark).collect();
    assert_eq!(marks, [false, false, false, false, false, false, true]);
    assert_eq!(pkts[0].payload, hex(H264_SPS));
    assert_eq!(pkts[1].payload, hex(H264_PPS));
    assert_eq!(&pkts[2].payload[..], &sei[..]);
    let mut body = Vec::new();
    for (i, k) in pkts[3..].iter().enumerate() {
        assert_eq!(k.payload[0], (0x65 & 0xe0) | 28, "FU indicator");
        let (s, e) = (i == 0, i == 3);
        assert_eq!(k.payload[1], (u8::from(s) << 7) | (u8::from(e) << 6) | 5);
        body.extend_from_slice(&k.payload[2..]);
    }
    assert_eq!(body, idr[1..]);

    let frames = video_frames(rx.push(&out));
    assert_eq!(frames.len(), 1);
    let f = &frames[0];
    assert_eq!(f.data(), &frame[..], "retina strips the inserted SPS/PPS");
    assert!(f.is_random_access_point());
    assert!(f.has_new_parameters());
    assert_eq!(f.timestamp().timestamp(), 1_000);
    assert_eq!(
        rx.video_params(),
        Some(VideoParametersCodec::H264 {
            sps: hex(H264_SPS),
            pps: hex(H264_PPS)
        })
    );

    // A non-IDR frame: no parameter sets, 3000-byte slice in 3 FU-A.
    let slice = nal(&[0x41], 3000, 3);
    let frame2 = avcc(&[&slice]);
    let mut out2 = Vec::new();
    p.payload(&frame2, 4_000, false, &mut out2).unwrap();
    let pkts2 = parse(&out2, MTU, 96, SSRC, 65533u16.wrapping_add(7));
    assert_eq!(pkts2.len(), 3);
    assert_eq!(
        pkts2.iter().map(|k| k.mark).collect::<Vec<_>>(),
        [false, false, true]
    );
    // retina emits a frame on the marker bit.
    let frames = video_frames(rx.push(&out2));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data(), &frame2[..]);
    assert!(!frames[0].is_random_access_point());
    assert!(!frames[0].has_new_parameters());
    assert_eq!(frames[0].timestamp().timestamp(), 4_000);
}

#[test]
fn h264_parameter_set_insertion() {
    let sps = hex(H264_SPS);
    let pps = hex(H264_PPS);
    let aud = vec![0x09, 0xf0];
    let idr = nal(&[0x65], 500, 4);
    let mut p = Payloader::new(&h264_codec(), 96, SSRC, 0, MTU).unwrap();
    let payloads = |p: &mut Payloader, frame: &[u8], key: bool| {
        let mut out = Vec::new();
        p.payload(frame, 0, key, &mut out).unwrap();
        out.iter().map(|b| b.slice(12..)).collect::<Vec<_>>()
    };

    // Already has SPS and PPS: sent as is.
    let got = payloads(&mut p, &avcc(&[&aud, &sps, &pps, &idr]), true);
    assert_eq!(got, [&aud[..], &sps[..], &pps[..], &idr[..]]);
    // Leading AUD stays first; parameter sets follow it.
    let got = payloads(&mut p, &avcc(&[&aud, &idr]), true);
    assert_eq!(got, [&aud[..], &sps[..], &pps[..], &idr[..]]);
    // An IDR makes a keyframe even if the caller says otherwise.
    let got = payloads(&mut p, &avcc(&[&idr]), false);
    assert_eq!(got, [&sps[..], &pps[..], &idr[..]]);
    // SPS without PPS: both are sent again.
    let got = payloads(&mut p, &avcc(&[&sps, &idr]), true);
    assert_eq!(got, [&sps[..], &pps[..], &sps[..], &idr[..]]);
    // A caller-flagged keyframe without IDR (e.g. recovery point) gets them too.
    let non_idr = nal(&[0x41], 100, 5);
    let got = payloads(&mut p, &avcc(&[&non_idr]), true);
    assert_eq!(got, [&sps[..], &pps[..], &non_idr[..]]);
    let got = payloads(&mut p, &avcc(&[&non_idr]), false);
    assert_eq!(got, [&non_idr[..]]);

    // New parameter sets mid-stream.
    let pps2 = hex("68ce3880");
    p.set_codec(&Codec::H264 {
        sps: sps.clone(),
        pps: pps2.clone(),
    });
    let got = payloads(&mut p, &avcc(&[&idr]), true);
    assert_eq!(got, [&sps[..], &pps2[..], &idr[..]]);

    // Unknown (empty) parameter sets are not sent.
    p.set_codec(&Codec::H264 {
        sps: Bytes::new(),
        pps: Bytes::new(),
    });
    let got = payloads(&mut p, &avcc(&[&idr]), true);
    assert_eq!(got, [&idr[..]]);
}

#[test]
fn h264_packets_fit_mtu_at_every_size() {
    // Around the single-packet / FU-A boundary and the fragment boundaries.
    for mtu in [MIN_MTU, 100, MTU] {
        let mut p = Payloader::new(&h264_codec(), 96, SSRC, 7, mtu).unwrap();
        let max = mtu - 12;
        for len in [1, 2, max - 1, max, max + 1, max + 2, 2 * max, 3 * max + 5] {
            let n = nal(&[0x41], len, len as u32);
            let mut out = Vec::new();
            let seq = p.next_seq();
            p.payload(&avcc(&[&n]), 9, false, &mut out).unwrap();
            let pkts = parse(&out, mtu, 96, SSRC, seq);
            let mut rebuilt = Vec::new();
            if pkts.len() == 1 {
                rebuilt.extend_from_slice(&pkts[0].payload);
            } else {
                rebuilt.push((pkts[0].payload[0] & 0xe0) | (pkts[0].payload[1] & 0x1f));
                for k in &pkts {
                    assert!(k.payload.len() > 2, "no empty fragments");
                    rebuilt.extend_from_slice(&k.payload[2..]);
                }
            }
            assert_eq!(rebuilt, n, "mtu {mtu} len {len}");
            assert!(pkts.last().unwrap().mark);
            assert!(pkts[..pkts.len() - 1].iter().all(|k| !k.mark));
        }
    }
}

#[test]
fn h264_bad_input_is_an_error_and_sends_nothing() {
    let mut p = Payloader::new(&h264_codec(), 96, SSRC, 100, MTU).unwrap();
    let good = nal(&[0x41], 10, 6);
    let cases: Vec<Vec<u8>> = vec![
        vec![],                                    // no NAL units
        avcc(&[&good, &[]]),                       // zero-length NAL
        [avcc(&[&good]), vec![0, 0]].concat(),     // truncated prefix
        [vec![0, 0, 1, 0], good.clone()].concat(), // length past end
        avcc(&[&good, &nal(&[0xc1], 10, 7)]),      // forbidden_zero_bit
        avcc(&[&nal(&[0x7c, 0x85], 10, 8)]),       // an FU-A as input
        avcc(&[&nal(&[0x18], 10, 8)]),             // a STAP-A as input
        avcc(&[&[0x00]]),                          // type 0
        vec![0xff; 3],
    ];
    for c in cases {
        let mut out = Vec::new();
        let r = p.payload(&c, 0, true, &mut out);
        assert!(
            matches!(r, Err(PayloadError::Malformed(_))),
            "{c:02x?}: {r:?}"
        );
        assert!(out.is_empty());
        assert_eq!(p.next_seq(), 100);
    }
}

#[test]
fn h265_large_irap_is_fragmented_and_round_trips() {
    let mut p = Payloader::new(&h265_codec(), 97, SSRC, 1, MTU).unwrap();
    let mut rx = Rx::new("video", "h265", 90_000, None, None);
    assert!(rx.video_params().is_none());

    // Prefix SEI + 5000-byte IDR_W_RADL (type 19), no parameter sets.
    let sei = nal(&[39 << 1, 0x01], 60, 10);
    let idr = nal(&[19 << 1, 0x01], 5000, 11);
    let frame = avcc(&[&sei, &idr]);
    let mut out = Vec::new();
    p.payload(&frame, 90_000, true, &mut out).unwrap();
    let pkts = parse(&out, MTU, 97, SSRC, 1);
    // VPS, SPS, PPS, SEI, then ceil(4998 / (1388 - 3)) = 4 FUs.
    assert_eq!(pkts.len(), 8);
    assert_eq!(p.next_seq(), 9);
    assert!(pkts.iter().all(|k| k.ts == 90_000));
    assert_eq!(
        pkts.iter().map(|k| k.mark).collect::<Vec<_>>(),
        [false, false, false, false, false, false, false, true]
    );
    assert_eq!(pkts[0].payload, hex(H265_VPS));
    assert_eq!(pkts[1].payload, hex(H265_SPS));
    assert_eq!(pkts[2].payload, hex(H265_PPS));
    assert_eq!(&pkts[3].payload[..], &sei[..]);
    let mut body = Vec::new();
    for (i, k) in pkts[4..].iter().enumerate() {
        assert_eq!(&k.payload[..2], &[49 << 1, 0x01], "FU payload header");
        let (s, e) = (i == 0, i == 3);
        assert_eq!(k.payload[2], (u8::from(s) << 7) | (u8::from(e) << 6) | 19);
        body.extend_from_slice(&k.payload[3..]);
    }
    assert_eq!(body, idr[2..]);

    let frames = video_frames(rx.push(&out));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data(), &frame[..]);
    assert!(frames[0].is_random_access_point());
    assert!(frames[0].has_new_parameters());
    assert_eq!(
        rx.video_params(),
        Some(VideoParametersCodec::H265 {
            vps: hex(H265_VPS),
            sps: hex(H265_SPS),
            pps: hex(H265_PPS),
        })
    );

    // TRAIL_R, not a keyframe: no parameter sets.
    let trail = nal(&[1 << 1, 0x01], 2000, 12);
    let frame2 = avcc(&[&trail]);
    let mut out2 = Vec::new();
    p.payload(&frame2, 93_000, false, &mut out2).unwrap();
    let pkts2 = parse(&out2, MTU, 97, SSRC, 9);
    assert_eq!(pkts2.len(), 2);
    assert_eq!(
        pkts2.iter().map(|k| k.mark).collect::<Vec<_>>(),
        [false, true]
    );
    let frames = video_frames(rx.push(&out2));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data(), &frame2[..]);
    assert!(!frames[0].is_random_access_point());

    // A CRA (type 21) with its own VPS/SPS/PPS after an AUD: nothing inserted.
    let aud = vec![35 << 1, 0x01, 0x50];
    let cra = nal(&[21 << 1, 0x01], 100, 13);
    let (vps, sps, pps) = (hex(H265_VPS), hex(H265_SPS), hex(H265_PPS));
    let mut out3 = Vec::new();
    p.payload(
        &avcc(&[&aud, &vps, &sps, &pps, &cra]),
        96_000,
        false,
        &mut out3,
    )
    .unwrap();
    assert_eq!(out3.len(), 5);
    // Only an AUD: the sets go after it.
    let mut out4 = Vec::new();
    p.payload(&avcc(&[&aud, &cra]), 99_000, false, &mut out4)
        .unwrap();
    let got: Vec<_> = out4.iter().map(|b| b.slice(12..)).collect();
    assert_eq!(got, [&aud[..], &vps[..], &sps[..], &pps[..], &cra[..]]);
}

#[test]
fn h265_bad_input_is_an_error() {
    let mut p = Payloader::new(&h265_codec(), 97, SSRC, 1, MTU).unwrap();
    for c in [
        avcc(&[&[0x02]]),                       // 1-byte NAL
        avcc(&[&nal(&[0x82, 0x01], 10, 1)]),    // forbidden_zero_bit
        avcc(&[&nal(&[0x02, 0x00], 10, 1)]),    // TID 0
        avcc(&[&nal(&[49 << 1, 0x01], 10, 1)]), // an FU as input
        avcc(&[&nal(&[48 << 1, 0x01], 10, 1)]), // an AP as input
    ] {
        let mut out = Vec::new();
        assert!(matches!(
            p.payload(&c, 0, false, &mut out),
            Err(PayloadError::Malformed(_))
        ));
        assert!(out.is_empty());
    }
    assert_eq!(p.next_seq(), 1);
}

const AAC_FMTP: &str =
    "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190";

fn aac_codec() -> Codec {
    Codec::Aac {
        config: hex("1190"),
        channels: 2,
    }
}

#[test]
fn aac_round_trips() {
    let mut p = Payloader::new(&aac_codec(), 98, SSRC, 500, MTU).unwrap();
    let mut rx = Rx::new("audio", "mpeg4-generic", 48_000, Some(2), Some(AAC_FMTP));
    match rx.d.parameters() {
        Some(ParametersRef::Audio(a)) => {
            assert_eq!(a.clock_rate(), 48_000);
            assert_eq!(a.channels().get(), 2);
            assert_eq!(a.extra_data(), &[0x11, 0x90]);
        }
        other => panic!("{other:?}"),
    }
    for (i, len) in [300usize, 1, 1372].into_iter().enumerate() {
        let au = nal(&[], len, i as u32);
        let ts = 1024 * i as u32;
        let mut out = Vec::new();
        p.payload(&au, ts, true, &mut out).unwrap();
        let pkts = parse(&out, MTU, 98, SSRC, 500 + i as u16);
        assert_eq!(pkts.len(), 1, "{len} bytes fit one packet");
        assert!(pkts[0].mark);
        assert_eq!(pkts[0].ts, ts);
        assert_eq!(
            &pkts[0].payload[..4],
            &[0x00, 0x10, (len >> 5) as u8, (len << 3) as u8]
        );
        let frames = audio_frames(rx.push(&out));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data(), &au[..]);
        assert_eq!(frames[0].timestamp().timestamp(), i64::from(ts));
    }
}

#[test]
fn aac_large_au_is_fragmented() {
    let mut p = Payloader::new(&aac_codec(), 98, SSRC, 0, MTU).unwrap();
    let mut rx = Rx::new("audio", "mpeg4-generic", 48_000, Some(2), Some(AAC_FMTP));
    let au = nal(&[], 4000, 77);
    let mut out = Vec::new();
    p.payload(&au, 2048, true, &mut out).unwrap();
    let pkts = parse(&out, MTU, 98, SSRC, 0);
    // ceil(4000 / (1388 - 4)) = 3
    assert_eq!(pkts.len(), 3);
    assert_eq!(
        pkts.iter().map(|k| k.mark).collect::<Vec<_>>(),
        [false, false, true]
    );
    let mut data = Vec::new();
    for k in &pkts {
        assert_eq!(k.ts, 2048);
        // AU-headers-length 16, AU-size = whole AU (4000 << 3), index 0.
        assert_eq!(&k.payload[..4], &[0x00, 0x10, 0x7d, 0x00]);
        data.extend_from_slice(&k.payload[4..]);
    }
    assert_eq!(data, au);
    let frames = audio_frames(rx.push(&out));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data(), &au[..]);

    // Largest and too large.
    let mut out = Vec::new();
    p.payload(&vec![1; AAC_MAX_AU_SIZE], 0, true, &mut out)
        .unwrap();
    assert_eq!(audio_frames(rx.push(&out))[0].data().len(), AAC_MAX_AU_SIZE);
    let seq = p.next_seq();
    let mut out = Vec::new();
    assert!(matches!(
        p.payload(&vec![1; AAC_MAX_AU_SIZE + 1], 0, true, &mut out),
        Err(PayloadError::Unsupported(_))
    ));
    assert!(matches!(
        p.payload(&[], 0, true, &mut out),
        Err(PayloadError::Malformed(_))
    ));
    assert!(out.is_empty());
    assert_eq!(p.next_seq(), seq);
}

#[test]
fn g711_round_trips() {
    let mut p = Payloader::new(&Codec::Pcma { channels: 1 }, 8, SSRC, 10, MTU).unwrap();
    let mut rx = Rx::new("audio", "pcma", 8000, None, None);
    let samples = nal(&[], 160, 1);
    let mut out = Vec::new();
    p.payload(&samples, 160, true, &mut out).unwrap();
    let pkts = parse(&out, MTU, 8, SSRC, 10);
    assert_eq!(pkts.len(), 1);
    assert!(!pkts[0].mark);
    let frames = audio_frames(rx.push(&out));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data(), &samples[..]);
    assert_eq!(frames[0].timestamp().timestamp(), 160);
    assert_eq!(frames[0].frame_length().get(), 160);
}

#[test]
fn g711_is_split_on_sample_boundaries() {
    // Stereo, MTU 100: 88 payload bytes = 44 sample frames per packet.
    let mut p = Payloader::new(&Codec::Pcmu { channels: 2 }, 0, SSRC, 65535, 100).unwrap();
    let mut rx = Rx::new("audio", "pcmu", 8000, Some(2), None);
    let samples = nal(&[], 400, 2);
    let mut out = Vec::new();
    p.payload(&samples, u32::MAX - 50, true, &mut out).unwrap();
    let pkts = parse(&out, 100, 0, SSRC, 65535);
    assert_eq!(
        pkts.iter().map(|k| k.payload.len()).collect::<Vec<_>>(),
        [88, 88, 88, 88, 48]
    );
    assert!(pkts.iter().all(|k| !k.mark));
    let ts: Vec<u32> = pkts.iter().map(|k| k.ts).collect();
    let base = u32::MAX - 50;
    assert_eq!(ts, [0, 44, 88, 132, 176].map(|d: u32| base.wrapping_add(d)));
    let frames = audio_frames(rx.push(&out));
    let data: Vec<u8> = frames.iter().flat_map(|f| f.data().to_vec()).collect();
    assert_eq!(data, samples);
    assert_eq!(p.next_seq(), 4);

    let mut out = Vec::new();
    assert!(matches!(
        p.payload(&samples[..399], 0, true, &mut out),
        Err(PayloadError::Malformed(_))
    ));
    assert!(matches!(
        p.payload(&[], 0, true, &mut out),
        Err(PayloadError::Malformed(_))
    ));
    assert!(out.is_empty());

    // A sample frame wider than the MTU.
    let mut wide = Payloader::new(&Codec::Pcmu { channels: 200 }, 0, SSRC, 0, 100).unwrap();
    assert!(matches!(
        wide.payload(&[1; 400], 0, true, &mut out),
        Err(PayloadError::Unsupported(_))
    ));
}

#[test]
fn opus_is_sent_as_is() {
    let mut p = Payloader::new(&Codec::Opus { channels: 2 }, 111, SSRC, 3, MTU).unwrap();
    let pkt = nal(&[0xfc], 120, 3);
    let mut out = Vec::new();
    p.payload(&pkt, 960, true, &mut out).unwrap();
    let pkts = parse(&out, MTU, 111, SSRC, 3);
    assert_eq!(pkts.len(), 1);
    assert!(!pkts[0].mark);
    assert_eq!(pkts[0].ts, 960);
    assert_eq!(&pkts[0].payload[..], &pkt[..]);
    assert!(matches!(
        p.payload(&vec![1; MTU - 11], 0, true, &mut out),
        Err(PayloadError::Unsupported(_))
    ));
    assert!(matches!(
        p.payload(&[], 0, true, &mut out),
        Err(PayloadError::Malformed(_))
    ));
    assert_eq!(out.len(), 1);
    assert_eq!(p.next_seq(), 4);
}

#[test]
fn bad_configuration_is_rejected() {
    assert!(matches!(
        Payloader::new(&h264_codec(), 128, 0, 0, MTU),
        Err(PayloadError::Config(_))
    ));
    for mtu in [0, MIN_MTU - 1, MAX_MTU + 1] {
        assert!(matches!(
            Payloader::new(&h264_codec(), 96, 0, 0, mtu),
            Err(PayloadError::Config(_))
        ));
    }
}

#[test]
fn one_buffer_per_frame() {
    // All packets of a frame are views into one allocation.
    let mut p = Payloader::new(&h264_codec(), 96, SSRC, 0, MTU).unwrap();
    let frame = avcc(&[&nal(&[0x65], 10_000, 1)]);
    let mut out = Vec::new();
    p.payload(&frame, 0, true, &mut out).unwrap();
    // A 10 kB frame is several FU-A packets; with one, the check below
    // would compare nothing.
    assert!(out.len() >= 5, "{} packets", out.len());
    for w in out.windows(2) {
        assert_eq!(
            w[0].as_ptr().wrapping_add(w[0].len()),
            w[1].as_ptr(),
            "packets are contiguous in one buffer"
        );
    }
}

#[test]
fn helpers() {
    assert_eq!(h264_nal_type(0x65), H264_NAL_IDR);
    assert_eq!(h264_nal_type(0x67), H264_NAL_SPS);
    assert_eq!(h265_nal_type(0x40), H265_NAL_VPS);
    assert_eq!(h265_nal_type(0x26), H265_NAL_IDR_W_RADL);
}
