//! Depacketizer tests: round trips through our own [`Payloader`] (and the
//! x264 test clip), hand-built packets for what it does not send (STAP-A,
//! AP, several AAC AUs per packet, JPEG), and every loss case.

use bytes::Bytes;

use super::*;
use crate::codec::tests::{h264_codec, h265_codec, hex, H264_PPS, H264_SPS};
use crate::codec::{Codec, Payloader};

const H264_CLIP: &[u8] = include_bytes!("../testdata/h264_320x180_25fps_bframes.h264");

fn fmt<'a>(name: &'a str, clock_rate: u32, fmtp: Option<&'a str>) -> RtpFormat<'a> {
    RtpFormat {
        encoding_name: name,
        clock_rate,
        channels: None,
        fmtp,
    }
}

fn h264() -> Depacketizer {
    Depacketizer::new(&fmt("H264", 90_000, Some("packetization-mode=1"))).unwrap()
}

fn h265() -> Depacketizer {
    Depacketizer::new(&fmt("H265", 90_000, None)).unwrap()
}

/// A packet as the caller builds it from retina's `ReceivedPacket`.
#[derive(Clone, Debug)]
struct P {
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
    loss: u16,
}

impl P {
    fn new(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> P {
        P {
            seq,
            ts,
            marker,
            payload: payload.to_vec(),
            loss: 0,
        }
    }

    /// From a complete RTP packet of our payloader (12-byte header).
    fn from_rtp(p: &[u8]) -> P {
        P {
            seq: u16::from_be_bytes([p[2], p[3]]),
            ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            marker: p[1] & 0x80 != 0,
            payload: p[12..].to_vec(),
            loss: 0,
        }
    }
}

fn run(d: &mut Depacketizer, pkts: &[P]) -> Vec<Output> {
    let mut out = Vec::new();
    for p in pkts {
        d.push(RtpPacket {
            sequence_number: p.seq,
            timestamp: p.ts,
            marker: p.marker,
            payload: &p.payload,
            loss: p.loss,
        });
        while let Some(o) = d.pull() {
            out.push(o);
        }
    }
    out
}

fn frames(out: &[Output]) -> Vec<&AccessUnit> {
    out.iter()
        .filter_map(|o| match o {
            Output::Frame(f) => Some(f),
            Output::Dropped { .. } => None,
        })
        .collect()
}

/// `(timestamp, reason)` of every drop.
fn drops(out: &[Output]) -> Vec<(u32, DropReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Dropped { timestamp, reason } => Some((*timestamp, *reason)),
            Output::Frame(_) => None,
        })
        .collect()
}

fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in nals {
        v.extend_from_slice(&(n.len() as u32).to_be_bytes());
        v.extend_from_slice(n);
    }
    v
}

/// Packets of one access unit from our payloader, sequence numbers from
/// `seq` on.
fn payload(codec: &Codec, mtu: usize, seq: u16, ts: u32, au: &[u8]) -> Vec<P> {
    let mut p = Payloader::new(codec, 96, 1, seq, mtu).unwrap();
    let mut out = Vec::new();
    p.payload(au, ts, false, &mut out).unwrap();
    out.iter().map(|b| P::from_rtp(b)).collect()
}

/// A NAL unit: `header` then filler up to `len` bytes.
fn nal(header: &[u8], len: usize) -> Vec<u8> {
    let mut v = header.to_vec();
    v.resize(len.max(header.len()), 0x5a);
    v
}

/// H.264 slices: IDR / non-IDR, first (first_mb_in_slice = 0: a 1 bit
/// after the header) or not.
fn idr(len: usize) -> Vec<u8> {
    nal(&[0x65, 0x88], len)
}
fn p_slice(len: usize) -> Vec<u8> {
    nal(&[0x41, 0x9a], len)
}
fn second_slice(len: usize) -> Vec<u8> {
    nal(&[0x65, 0x40], len)
}

/// Splits an Annex B stream into access units (AVCC): a new one at each
/// first slice (first_mb_in_slice = 0) after a slice, non-VCL NAL units go
/// with the slice that follows.
fn clip_access_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut cur_has_vcl = false;
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        while e > s && data[e - 1] == 0 {
            e -= 1;
        }
        let n = data[s..e].to_vec();
        let t = n[0] & 0x1f;
        let vcl = (1..=5).contains(&t);
        // A non-VCL NAL unit or a first slice after a slice starts one.
        let starts_au = !vcl || n[1] & 0x80 != 0;
        if starts_au && cur_has_vcl {
            aus.push(avcc(&cur.iter().map(|v| &v[..]).collect::<Vec<_>>()));
            cur.clear();
            cur_has_vcl = false;
        }
        cur_has_vcl |= vcl;
        cur.push(n);
    }
    if !cur.is_empty() {
        aus.push(avcc(&cur.iter().map(|v| &v[..]).collect::<Vec<_>>()));
    }
    aus
}

#[test]
fn h264_clip_round_trips_through_our_payloader() {
    let aus = clip_access_units(H264_CLIP);
    assert_eq!(aus.len(), 10, "the clip has 10 frames");
    let first: Vec<_> = avcc_nals(&aus[0]);
    let sps = first.iter().find(|n| n[0] & 0x1f == 7).unwrap().clone();
    let pps = first.iter().find(|n| n[0] & 0x1f == 8).unwrap().clone();
    let codec = Codec::H264 {
        sps: Bytes::from(sps.clone()),
        pps: Bytes::from(pps.clone()),
    };
    // Small MTU: most NAL units go in FU-A fragments; default: single.
    for mtu in [100, 1400] {
        let mut d = h264();
        let mut pkts = Vec::new();
        let mut seq = 65530u16; // wraps
        for (i, au) in aus.iter().enumerate() {
            let p = payload(&codec, mtu, seq, 3600 * i as u32, au);
            seq = seq.wrapping_add(p.len() as u16);
            pkts.extend(p);
        }
        let out = run(&mut d, &pkts);
        assert_eq!(drops(&out), vec![]);
        let f = frames(&out);
        assert_eq!(f.len(), aus.len());
        for (i, (f, au)) in f.iter().zip(&aus).enumerate() {
            assert_eq!(&f.data[..], &au[..], "access unit {i} at mtu {mtu}");
            assert_eq!(f.timestamp, 3600 * i as u32);
            assert_eq!(f.keyframe, i == 0);
            assert!(!f.leading_skippable);
            assert_eq!(
                f.new_param_sets,
                (i == 0).then(|| ParamSets {
                    vps: None,
                    sps: Some(Bytes::from(sps.clone())),
                    pps: Some(Bytes::from(pps.clone())),
                })
            );
        }
    }
}

fn avcc_nals(au: &[u8]) -> Vec<Vec<u8>> {
    crate::codec::avcc_nal_units(au)
        .map(|n| n.unwrap().to_vec())
        .collect()
}

#[test]
fn h264_stap_a_and_in_band_parameter_sets() {
    let sps = hex(H264_SPS);
    let pps = hex(H264_PPS);
    let i = idr(30);
    let mut stap = vec![0x78]; // NRI 3, type 24
    for n in [&sps[..], &pps[..]] {
        stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
        stap.extend_from_slice(n);
    }
    let out = run(
        &mut h264(),
        &[P::new(1, 0, false, &stap), P::new(2, 0, true, &i)],
    );
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(&f[0].data[..], &avcc(&[&sps, &pps, &i])[..]);
    assert!(f[0].keyframe);
    let ps = f[0].new_param_sets.as_ref().unwrap();
    assert_eq!(ps.sps.as_deref(), Some(&sps[..]));
    assert_eq!(ps.pps.as_deref(), Some(&pps[..]));

    // Parameter sets with their own timestamp and marker (some cameras)
    // go with the next picture; the same ones again are not "new".
    let out = run(
        &mut h264(),
        &[
            P::new(1, 0, true, &sps),
            P::new(2, 0, true, &pps),
            P::new(3, 3000, true, &i),
            P::new(4, 6000, true, &sps),
            P::new(5, 6000, false, &pps),
            P::new(6, 6000, true, &i),
        ],
    );
    let f = frames(&out);
    assert_eq!(f.len(), 2, "{out:?}");
    assert_eq!(f[0].timestamp, 3000);
    assert_eq!(&f[0].data[..], &avcc(&[&sps, &pps, &i])[..]);
    assert!(f[0].new_param_sets.is_some());
    assert_eq!(f[1].new_param_sets, None);
}

#[test]
fn h264_access_unit_without_marker_ends_at_the_next_timestamp() {
    let out = run(
        &mut h264(),
        &[
            P::new(1, 0, false, &idr(10)),
            P::new(2, 3000, false, &p_slice(10)),
        ],
    );
    assert_eq!(frames(&out).len(), 1);
    let mut d = h264();
    run(&mut d, &[P::new(1, 0, false, &idr(10))]);
    d.flush();
    assert!(matches!(d.pull(), Some(Output::Frame(_))));
}

/// FU-A packets of one NAL unit, `per` bytes of body each.
fn fu_a(nal: &[u8], per: usize) -> Vec<Vec<u8>> {
    let body = &nal[1..];
    let n = body.len().div_ceil(per);
    body.chunks(per)
        .enumerate()
        .map(|(i, c)| {
            let mut v = vec![
                (nal[0] & 0xe0) | 28,
                (u8::from(i == 0) << 7) | (u8::from(i + 1 == n) << 6) | (nal[0] & 0x1f),
            ];
            v.extend_from_slice(c);
            v
        })
        .collect()
}

#[test]
fn h264_first_packet_mid_fragment_is_dropped_and_output_starts_at_an_idr() {
    let frags = fu_a(&p_slice(300), 100);
    let out = run(
        &mut h264(),
        &[
            P::new(10, 0, false, &frags[1]),
            P::new(11, 0, true, &frags[2]),
            P::new(12, 3000, true, &p_slice(20)),
            P::new(13, 6000, true, &idr(20)),
            P::new(14, 9000, true, &p_slice(20)),
        ],
    );
    assert_eq!(
        drops(&out),
        vec![
            (0, DropReason::MidFragment),
            (3000, DropReason::NoReference)
        ]
    );
    let f = frames(&out);
    assert_eq!(
        f.iter()
            .map(|f| (f.timestamp, f.keyframe))
            .collect::<Vec<_>>(),
        vec![(6000, true), (9000, false)]
    );
}

#[test]
fn h264_loss_drops_until_the_next_idr() {
    let frags = fu_a(&idr(300), 100);
    let start = [
        P::new(1, 0, false, &frags[0]),
        P::new(2, 0, false, &frags[1]),
        P::new(3, 0, true, &frags[2]),
    ];
    // A gap inside a P-frame: it is dropped (Loss), the following ones
    // too (NoReference), output resumes at the IDR.
    let pf = fu_a(&p_slice(300), 100);
    let mut pkts = start.to_vec();
    pkts.extend([
        P::new(4, 3000, false, &pf[0]),
        P::new(6, 3000, true, &pf[2]), // 5 lost
        P::new(7, 6000, true, &p_slice(20)),
        P::new(8, 9000, true, &idr(20)),
        P::new(9, 12000, true, &p_slice(20)),
    ]);
    let out = run(&mut h264(), &pkts);
    assert_eq!(
        drops(&out),
        vec![(3000, DropReason::Loss), (6000, DropReason::NoReference)]
    );
    assert_eq!(
        frames(&out).iter().map(|f| f.timestamp).collect::<Vec<_>>(),
        vec![0, 9000, 12000]
    );

    // The same told by the caller's `loss` count with no sequence gap.
    let mut pkts = start.to_vec();
    let mut lossy = P::new(4, 3000, true, &p_slice(20));
    lossy.loss = 3;
    pkts.extend([lossy, P::new(5, 6000, true, &p_slice(20))]);
    let out = run(&mut h264(), &pkts);
    assert_eq!(
        drops(&out),
        vec![
            (3000, DropReason::NoReference),
            (6000, DropReason::NoReference)
        ],
        "a whole P-frame may have been lost: the next ones need a keyframe"
    );

    // A gap between access units before an IDR whose first slice came:
    // the IDR is kept (one lost packet must not cost a whole GOP).
    let mut pkts = start.to_vec();
    pkts.extend([
        P::new(6, 6000, true, &idr(20)), // 4, 5 lost
        P::new(7, 9000, true, &p_slice(20)),
    ]);
    let out = run(&mut h264(), &pkts);
    assert_eq!(drops(&out), vec![]);
    assert_eq!(frames(&out).len(), 3);

    // ... but not when the first slice of the picture was lost.
    let mut pkts = start.to_vec();
    pkts.extend([
        P::new(5, 6000, true, &second_slice(20)), // 4 lost: first slice
        P::new(6, 9000, true, &p_slice(20)),
    ]);
    let out = run(&mut h264(), &pkts);
    assert_eq!(
        drops(&out),
        vec![(6000, DropReason::Loss), (9000, DropReason::NoReference)]
    );

    // A gap that takes the FU-A end and the marker: the open access unit
    // ends at the next timestamp, as a loss.
    let out = run(
        &mut h264(),
        &[
            P::new(1, 0, false, &frags[0]),
            P::new(2, 0, false, &frags[1]),
            P::new(4, 3000, true, &idr(20)),
        ],
    );
    assert_eq!(drops(&out), vec![(0, DropReason::Loss)]);
    assert_eq!(frames(&out)[0].timestamp, 3000);
}

#[test]
fn h264_malformed_packets_drop_their_access_unit_only() {
    let frags = fu_a(&idr(300), 100);
    let mut bad_stap = vec![0x78, 0x00, 0x40];
    bad_stap.extend_from_slice(&[0x67; 10]); // size 64 but 10 bytes
    let cases: Vec<(Vec<P>, DropReason)> = vec![
        (vec![P::new(1, 0, true, &bad_stap)], DropReason::Truncated),
        (vec![P::new(1, 0, true, &[])], DropReason::Truncated),
        (vec![P::new(1, 0, true, &[0x7c])], DropReason::Truncated), // FU-A without FU header
        (vec![P::new(1, 0, true, &[0xe5, 1, 2])], DropReason::Corrupt), // forbidden bit
        (vec![P::new(1, 0, true, &[0x79, 0, 0])], DropReason::Corrupt), // STAP-B
        (
            vec![P::new(1, 0, true, &[0x7d, 0x85, 0])],
            DropReason::Corrupt,
        ), // FU-B
        (vec![P::new(1, 0, true, &[0x60, 0])], DropReason::Corrupt), // type 0
        (
            vec![P::new(1, 0, true, &[0x7c, 0xc5, 0x88])], // FU-A with S and E
            DropReason::Corrupt,
        ),
        (
            // FU-A start, then a new start before its end: no gap.
            vec![
                P::new(1, 0, false, &frags[0]),
                P::new(2, 0, false, &frags[0]),
                P::new(3, 0, true, &frags[2]),
            ],
            DropReason::Truncated,
        ),
        (
            // FU-A start and the next timestamp, no gap, no end.
            vec![P::new(1, 0, false, &frags[0])],
            DropReason::Truncated,
        ),
    ];
    for (pkts, reason) in cases {
        let mut d = h264();
        let mut all = pkts.clone();
        let next = pkts.last().unwrap().seq + 1;
        all.push(P::new(next, 3000, true, &idr(20)));
        all.push(P::new(next + 1, 6000, true, &p_slice(20)));
        let out = run(&mut d, &all);
        assert_eq!(drops(&out), vec![(0, reason)], "{pkts:?}");
        assert_eq!(
            frames(&out).iter().map(|f| f.timestamp).collect::<Vec<_>>(),
            vec![3000, 6000],
            "{pkts:?}"
        );
    }
}

#[test]
fn h264_access_unit_size_is_capped() {
    let mut d = h264();
    let chunk = vec![0x5au8; 60_000];
    let n = MAX_ACCESS_UNIT_SIZE / chunk.len() + 2;
    let mut pkts = Vec::new();
    for i in 0..n {
        let mut p = vec![
            0x7c,
            (u8::from(i == 0) << 7) | (u8::from(i + 1 == n) << 6) | 5,
        ];
        if i == 0 {
            p.push(0x88);
        }
        p.extend_from_slice(&chunk);
        pkts.push(P::new(i as u16, 0, i + 1 == n, &p));
    }
    pkts.push(P::new(n as u16, 3000, true, &idr(20)));
    let out = run(&mut d, &pkts);
    assert_eq!(drops(&out), vec![(0, DropReason::TooLarge)]);
    assert_eq!(frames(&out).len(), 1);
}

#[test]
fn h264_interleaved_mode_is_unsupported() {
    assert!(Depacketizer::new(&fmt("h264", 90_000, Some("packetization-mode=2"))).is_err());
    assert!(Depacketizer::new(&fmt("H264", 90_000, Some("packetization-mode=0"))).is_ok());
    assert!(Depacketizer::new(&fmt("H264", 90_000, Some("packetization-mode=x"))).is_err());
    assert!(Depacketizer::new(&fmt("VP8", 90_000, None)).is_err());
    assert!(Depacketizer::new(&fmt("H264", 0, None)).is_err());
}

/// H.265 NAL unit of `nal_type`, TID 1, first slice segment flag set.
fn h265_nal(nal_type: u8, len: usize) -> Vec<u8> {
    nal(&[nal_type << 1, 0x01, 0x80], len)
}

#[test]
fn h265_round_trips_through_our_payloader_with_fus_and_aps() {
    let codec = h265_codec();
    let Codec::H265 { vps, sps, pps } = &codec else {
        unreachable!()
    };
    let cra = h265_nal(21, 3000);
    let trail = h265_nal(1, 100);
    let au0 = avcc(&[vps, sps, pps, &cra]);
    let au1 = avcc(&[&trail]);
    let mut pkts = payload(&codec, 500, 1, 0, &au0);
    let seq = pkts.last().unwrap().seq + 1;
    pkts.extend(payload(&codec, 500, seq, 3000, &au1));
    // An aggregation packet (AP) with two NAL units.
    let seq = pkts.last().unwrap().seq + 1;
    let (a, b) = (h265_nal(1, 30), h265_nal(1, 40));
    let mut ap = vec![48 << 1, 0x01];
    for n in [&a, &b] {
        ap.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ap.extend_from_slice(n);
    }
    pkts.push(P::new(seq, 6000, true, &ap));
    let out = run(&mut h265(), &pkts);
    assert_eq!(drops(&out), vec![]);
    let f = frames(&out);
    assert_eq!(f.len(), 3);
    assert_eq!(&f[0].data[..], &au0[..]);
    assert!(f[0].keyframe);
    let ps = f[0].new_param_sets.as_ref().unwrap();
    assert_eq!(ps.vps.as_ref(), Some(vps));
    assert_eq!(ps.sps.as_ref(), Some(sps));
    assert_eq!(ps.pps.as_ref(), Some(pps));
    assert_eq!(&f[1].data[..], &au1[..]);
    assert!(!f[1].keyframe);
    assert_eq!(&f[2].data[..], &avcc(&[&a, &b])[..]);
}

#[test]
fn h265_irap_types_are_keyframes_and_rasl_after_a_resume_cra_is_dropped() {
    for t in 16..=23 {
        let out = run(&mut h265(), &[P::new(1, 0, true, &h265_nal(t, 20))]);
        assert!(frames(&out)[0].keyframe, "type {t}");
    }
    let rasl = h265_nal(8, 20);
    let out = run(
        &mut h265(),
        &[
            P::new(1, 0, true, &h265_nal(21, 20)), // CRA where output starts
            P::new(2, 3000, true, &rasl),          // RASL: not decodable
            P::new(3, 6000, true, &h265_nal(7, 20)), // RADL: decodable
            P::new(4, 9000, true, &h265_nal(1, 20)), // TRAIL
            P::new(5, 12000, true, &h265_nal(21, 20)), // a CRA mid-stream
            P::new(6, 15000, true, &h265_nal(9, 20)), // its RASL: decodable here
            P::new(7, 18000, true, &h265_nal(16, 20)), // BLA: RASL never
            P::new(8, 21000, true, &rasl),
        ],
    );
    assert_eq!(
        drops(&out),
        vec![
            (3000, DropReason::NoReference),
            (21000, DropReason::NoReference)
        ]
    );
    let f = frames(&out);
    assert_eq!(
        f.iter()
            .map(|f| (f.timestamp, f.keyframe, f.leading_skippable))
            .collect::<Vec<_>>(),
        vec![
            (0, true, false),
            (6000, false, false),
            (9000, false, false),
            (12000, true, false),
            (15000, false, true),
            (18000, true, false),
        ]
    );
}

#[test]
fn h265_loss_and_malformed_packets() {
    let cra = h265_nal(21, 20);
    let fu_mid = [49 << 1, 0x01, 0x01, 0x5a, 0x5a]; // FU, no S/E, type 1
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (fu_mid.to_vec(), DropReason::MidFragment),
        (vec![0x02], DropReason::Truncated),
        (vec![0x02, 0x00, 0x80], DropReason::Corrupt), // TID 0
        (vec![0x82, 0x01, 0x80], DropReason::Corrupt), // forbidden bit
        (vec![50 << 1, 0x01, 0, 0, 0, 0], DropReason::Unsupported), // PACI
        (vec![48 << 1, 0x01, 0x00, 0x09, 0x02], DropReason::Truncated), // AP
    ];
    for (p, reason) in cases {
        let out = run(
            &mut h265(),
            &[
                P::new(1, 0, true, &p),
                P::new(2, 3000, true, &cra),
                P::new(4, 6000, true, &h265_nal(1, 20)), // 3 lost
                P::new(5, 9000, true, &cra),
            ],
        );
        assert_eq!(
            drops(&out),
            vec![(0, reason), (6000, DropReason::NoReference)],
            "{p:02x?}"
        );
        assert_eq!(frames(&out).len(), 2);
    }
    assert!(Depacketizer::new(&fmt("H265", 90_000, Some("sprop-max-don-diff=2"))).is_err());
    assert!(Depacketizer::new(&fmt("H265", 90_000, Some("sprop-max-don-diff=0"))).is_ok());
}

const AAC_FMTP: &str =
    "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190";

fn aac() -> Depacketizer {
    Depacketizer::new(&fmt("mpeg4-generic", 48_000, Some(AAC_FMTP))).unwrap()
}

fn aac_codec() -> Codec {
    Codec::Aac {
        config: Bytes::from_static(&[0x11, 0x90]),
        channels: 2,
    }
}

#[test]
fn aac_round_trips_through_our_payloader_also_fragmented() {
    let small: Vec<u8> = (0..300).map(|i| i as u8).collect();
    let large: Vec<u8> = (0..5000).map(|i| (i * 7) as u8).collect();
    let mut pkts = payload(&aac_codec(), 1400, 1, 0, &small);
    pkts.extend(payload(&aac_codec(), 1400, 2, 1024, &large));
    assert!(pkts.len() > 3, "the large AU is fragmented");
    let out = run(&mut aac(), &pkts);
    assert_eq!(drops(&out), vec![]);
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(&f[0].data[..], &small[..]);
    assert_eq!(&f[1].data[..], &large[..]);
    assert_eq!(f[1].timestamp, 1024);
    assert!(f[1].keyframe);
}

#[test]
fn aac_several_access_units_per_packet() {
    // Three AU headers (16 bits each): sizes 3, 2, 4; index 0, deltas 0.
    let mut p = vec![0x00, 48];
    for s in [3u16, 2, 4] {
        p.extend_from_slice(&(s << 3).to_be_bytes());
    }
    p.extend_from_slice(&[1, 1, 1, 2, 2, 3, 3, 3, 3]);
    let out = run(&mut aac(), &[P::new(1, 5000, true, &p)]);
    let f = frames(&out);
    assert_eq!(
        f.iter()
            .map(|f| (f.timestamp, f.data.to_vec()))
            .collect::<Vec<_>>(),
        vec![
            (5000, vec![1, 1, 1]),
            (6024, vec![2, 2]),
            (7048, vec![3, 3, 3, 3])
        ]
    );
}

#[test]
fn aac_loss_and_malformed_packets() {
    let large: Vec<u8> = (0..5000).map(|i| (i * 7) as u8).collect();
    let frags = payload(&aac_codec(), 1400, 1, 0, &large);
    let next = payload(&aac_codec(), 1400, 10, 1024, &[9; 100]);
    // A lost middle fragment.
    let mut pkts = frags.clone();
    pkts.remove(1);
    pkts.push(next[0].clone());
    let out = run(&mut aac(), &pkts);
    assert_eq!(drops(&out), vec![(0, DropReason::Loss)]);
    assert_eq!(frames(&out).len(), 1);
    // The first fragment lost: the rest is not taken for a whole AU.
    let mut pkts = frags[1..].to_vec();
    pkts[0].loss = 1;
    pkts.push(next[0].clone());
    let out = run(&mut aac(), &pkts);
    assert_eq!(drops(&out), vec![(0, DropReason::Loss)]);
    assert_eq!(frames(&out).len(), 1);
    // The last fragment missing, no gap (next timestamp).
    let mut pkts = frags[..frags.len() - 1].to_vec();
    let mut n = next[0].clone();
    n.seq = pkts.last().unwrap().seq + 1;
    pkts.push(n);
    let out = run(&mut aac(), &pkts);
    assert_eq!(drops(&out), vec![(0, DropReason::Truncated)]);
    assert_eq!(frames(&out).len(), 1);

    for (p, reason) in [
        (vec![0x00], DropReason::Truncated),
        (vec![0x00, 0x10, 0x00], DropReason::Truncated),
        (
            vec![0x00, 0x20, 0x00, 0x18, 0x00, 0x18, 1, 2, 3],
            DropReason::Truncated,
        ),
        (
            vec![0x00, 0x10, 0x00, 0x19, 1, 2, 3],
            DropReason::Unsupported,
        ), // index 1
        (vec![0x00, 0x10, 0x00, 0x00], DropReason::Corrupt), // size 0
    ] {
        let out = run(&mut aac(), &[P::new(1, 0, true, &p)]);
        assert_eq!(drops(&out), vec![(0, reason)], "{p:02x?}");
    }
    assert!(Depacketizer::new(&fmt("MPEG4-GENERIC", 48_000, Some("mode=CELP-cbr"))).is_err());
    assert!(Depacketizer::new(&fmt("MPEG4-GENERIC", 48_000, Some("mode=AAC-hbr"))).is_err());
}

#[test]
fn g711_and_opus_one_frame_per_packet() {
    for (name, codec, data) in [
        ("PCMA", Codec::Pcma { channels: 1 }, vec![0xd5; 160]),
        ("PCMU", Codec::Pcmu { channels: 1 }, vec![0xff; 160]),
        ("opus", Codec::Opus { channels: 2 }, vec![0xfc, 0xff, 0xfe]),
    ] {
        let clock = if name == "opus" { 48_000 } else { 8_000 };
        let mut d = Depacketizer::new(&fmt(name, clock, None)).unwrap();
        let mut pkts = payload(&codec, 1400, 7, 960, &data);
        pkts.push(P::new(9, 1920, false, &[])); // empty: corrupt
        let out = run(&mut d, &pkts);
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(&f[0].data[..], &data[..]);
        assert_eq!(f[0].timestamp, 960);
        assert!(f[0].keyframe);
        assert_eq!(drops(&out), vec![(1920, DropReason::Corrupt)]);
    }
    let mut d = Depacketizer::new(&RtpFormat {
        channels: Some(2),
        ..fmt("PCMU", 8000, None)
    })
    .unwrap();
    let out = run(&mut d, &[P::new(1, 0, false, &[1, 2, 3])]);
    assert_eq!(drops(&out), vec![(0, DropReason::Corrupt)]);
}

/// RFC 2435 packets of one image: main header (type, Q, 320x240), the
/// restart header for types 64..=127, quantization tables in the first
/// packet when Q >= 128, the scan split in `per`-byte pieces.
fn jpeg_packets(kind: u8, q: u8, tables: Option<&[u8]>, scan: &[u8], per: usize) -> Vec<Vec<u8>> {
    scan.chunks(per)
        .enumerate()
        .map(|(i, c)| {
            let off = (i * per) as u32;
            let o = off.to_be_bytes();
            let mut v = vec![0, o[1], o[2], o[3], kind, q, 40, 30];
            if kind >= 64 {
                v.extend_from_slice(&[0, 8, 0xff, 0xff]);
            }
            if i == 0 && q >= 128 {
                let t = tables.unwrap_or_default();
                v.extend_from_slice(&[0, 0]);
                v.extend_from_slice(&(t.len() as u16).to_be_bytes());
                v.extend_from_slice(t);
            }
            v.extend_from_slice(c);
            v
        })
        .collect()
}

fn jpeg_run(d: &mut Depacketizer, ts: u32, seq: u16, pkts: &[Vec<u8>]) -> Vec<Output> {
    let n = pkts.len();
    let ps: Vec<P> = pkts
        .iter()
        .enumerate()
        .map(|(i, p)| P::new(seq + i as u16, ts, i + 1 == n, p))
        .collect();
    run(d, &ps)
}

/// The segments (marker, body) of a JFIF image up to SOS.
fn jpeg_segments(img: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&img[..2], &[0xff, 0xd8]);
    let mut i = 2;
    let mut out = Vec::new();
    loop {
        assert_eq!(img[i], 0xff);
        let m = img[i + 1];
        let len = usize::from(u16::from_be_bytes([img[i + 2], img[i + 3]]));
        out.push((m, img[i + 4..i + 2 + len].to_vec()));
        i += 2 + len;
        if m == 0xda {
            return out;
        }
    }
}

#[test]
fn jpeg_rebuilds_complete_images() {
    let jpeg = || Depacketizer::new(&fmt("JPEG", 90_000, None)).unwrap();
    let scan: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();

    // Q = 50 (tables of Appendix A: K.1/K.2 as they are), type 1 (4:2:0).
    let out = jpeg_run(&mut jpeg(), 0, 1, &jpeg_packets(1, 50, None, &scan, 1000));
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    let img = &f[0].data;
    assert!(f[0].keyframe);
    assert!(img.ends_with(&[0xff, 0xd9]));
    assert!(img[..img.len() - 2].ends_with(&scan));
    let segs = jpeg_segments(img);
    let markers: Vec<u8> = segs.iter().map(|s| s.0).collect();
    assert_eq!(markers, [0xdb, 0xdb, 0xc0, 0xc4, 0xc4, 0xc4, 0xc4, 0xda]);
    assert_eq!(segs[0].1[0], 0x00, "8-bit table 0");
    assert_eq!(&segs[0].1[1..4], &[16, 11, 12], "K.1 in zigzag order");
    assert_eq!(segs[1].1[0], 0x01);
    assert_eq!(&segs[1].1[1..3], &[17, 18]);
    // SOF0: 8-bit, 240x320, Y 2x2.
    assert_eq!(&segs[2].1[..8], &[8, 0, 240, 1, 64, 3, 0, 0x22]);

    // Type 65 (restart markers): a DRI segment; in-band tables (Q 255).
    let tables: Vec<u8> = (1..=128).collect();
    let out = jpeg_run(
        &mut jpeg(),
        0,
        1,
        &jpeg_packets(65, 255, Some(&tables), &scan, 1000),
    );
    let segs = jpeg_segments(&frames(&out)[0].data);
    assert_eq!(segs[0].1[1..], tables[..64]);
    assert_eq!(segs[1].1[1..], tables[64..]);
    assert_eq!(segs[2], (0xdd, vec![0, 8]));

    // Q 128 with tables once, then Length 0: the tables of before.
    let mut d = jpeg();
    jpeg_run(
        &mut d,
        0,
        1,
        &jpeg_packets(0, 128, Some(&tables), &scan, 1000),
    );
    let out = jpeg_run(
        &mut d,
        3000,
        4,
        &jpeg_packets(0, 128, Some(&[]), &scan, 1000),
    );
    let segs = jpeg_segments(&frames(&out)[0].data);
    assert_eq!(segs[0].1[1..], tables[..64]);
    // Q 129 never sent: unsupported.
    let out = jpeg_run(
        &mut d,
        6000,
        7,
        &jpeg_packets(0, 129, Some(&[]), &scan, 1000),
    );
    assert_eq!(drops(&out), vec![(6000, DropReason::Unsupported)]);
}

#[test]
fn jpeg_loss_and_malformed_packets() {
    let jpeg = || Depacketizer::new(&fmt("JPEG", 90_000, None)).unwrap();
    let scan = vec![0x11u8; 3000];
    let good = jpeg_packets(1, 50, None, &scan, 1000);
    let check = |pkts: Vec<P>, want: DropReason| {
        let mut d = jpeg();
        let mut all = pkts.clone();
        let seq = pkts.last().unwrap().seq + 1;
        let n = good.len();
        all.extend(
            good.iter()
                .enumerate()
                .map(|(i, p)| P::new(seq + i as u16, 9000, i + 1 == n, p)),
        );
        let out = run(&mut d, &all);
        assert_eq!(drops(&out), vec![(0, want)], "{pkts:?}");
        assert_eq!(frames(&out).len(), 1, "{pkts:?}");
    };
    // Starts mid-image.
    check(
        vec![P::new(1, 0, false, &good[1]), P::new(2, 0, true, &good[2])],
        DropReason::MidFragment,
    );
    // A lost middle packet.
    check(
        vec![P::new(1, 0, false, &good[0]), P::new(3, 0, true, &good[2])],
        DropReason::Loss,
    );
    // A hole in the offsets without a sequence gap.
    check(
        vec![P::new(1, 0, false, &good[0]), P::new(2, 0, true, &good[2])],
        DropReason::Corrupt,
    );
    // No marker before the next timestamp.
    check(vec![P::new(1, 0, false, &good[0])], DropReason::Truncated);
    check(
        vec![P::new(1, 0, true, &good[0][..5])],
        DropReason::Truncated,
    );
    // Type 3, Q 0, zero width.
    let mut t = good[0].clone();
    t[4] = 3;
    check(vec![P::new(1, 0, true, &t)], DropReason::Unsupported);
    let mut t = good[0].clone();
    t[5] = 0;
    check(vec![P::new(1, 0, true, &t)], DropReason::Corrupt);
    let mut t = good[0].clone();
    t[6] = 0;
    check(vec![P::new(1, 0, true, &t)], DropReason::Corrupt);
}

/// Writes the seed corpus of the `depacketizer` fuzz target (see
/// `crate::fuzzing::depacketizer` for the record format). Run with
/// `cargo test --lib --features fuzzing write_depacketizer_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/depacketizer"]
fn write_depacketizer_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/depacketizer");
    std::fs::create_dir_all(&dir).unwrap();
    // Record: u16 length, flags (bit 0 marker, bit 1 next timestamp, bit 2
    // skip a sequence number, bits 4..8 loss), payload.
    let write = |name: &str, choice: u8, pkts: &[P]| {
        let mut v = vec![choice];
        let mut last: Option<&P> = None;
        for p in pkts {
            v.extend_from_slice(&(p.payload.len() as u16).to_be_bytes());
            let mut flags = u8::from(p.marker);
            if last.is_some_and(|l| l.ts != p.ts) {
                flags |= 2;
            }
            if last.is_some_and(|l| l.seq.wrapping_add(1) != p.seq) {
                flags |= 4;
            }
            v.push(flags);
            v.extend_from_slice(&p.payload);
            last = Some(p);
        }
        std::fs::write(dir.join(name), v).unwrap();
    };
    let aus = clip_access_units(H264_CLIP);
    let mut pkts = Vec::new();
    for (i, au) in aus.iter().take(3).enumerate() {
        let seq = pkts.len() as u16;
        pkts.extend(payload(&h264_codec(), 400, seq, 3600 * i as u32, au));
    }
    write("h264_clip", 0, &pkts);
    let mut lossy = pkts.clone();
    lossy.remove(3);
    write("h264_loss", 0, &lossy);
    let codec = h265_codec();
    let mut pkts = payload(&codec, 300, 0, 0, &avcc(&[&h265_nal(21, 800)]));
    let seq = pkts.len() as u16;
    pkts.extend(payload(&codec, 300, seq, 3000, &avcc(&[&h265_nal(8, 100)])));
    write("h265_cra_rasl", 1, &pkts);
    let large: Vec<u8> = (0..3000).map(|i| (i * 7) as u8).collect();
    let mut pkts = payload(&aac_codec(), 1000, 0, 0, &large);
    pkts.extend(payload(&aac_codec(), 1000, 4, 1024, &[1; 200]));
    write("aac", 2, &pkts);
    write(
        "opus",
        3,
        &payload(&Codec::Opus { channels: 2 }, 1400, 0, 0, &[0xfc, 1, 2]),
    );
    write(
        "pcmu",
        4,
        &payload(&Codec::Pcmu { channels: 1 }, 1400, 0, 0, &[0xff; 160]),
    );
    let scan = vec![0x11u8; 1500];
    let tables: Vec<u8> = (1..=128).collect();
    let mut pkts = Vec::new();
    for (i, p) in jpeg_packets(65, 255, Some(&tables), &scan, 600)
        .into_iter()
        .enumerate()
    {
        pkts.push(P::new(i as u16, 0, i == 2, &p));
    }
    for (i, p) in jpeg_packets(1, 50, None, &scan, 600)
        .into_iter()
        .enumerate()
    {
        pkts.push(P::new(3 + i as u16, 3000, i == 2, &p));
    }
    write("jpeg", 5, &pkts);
}

/// A real image (`ffmpeg -f lavfi -i testsrc2=size=64x48 -frames 1
/// -pix_fmt yuvj420p -q:v 5 -huffman default`: baseline 4:2:0, the
/// standard Huffman tables, one quantization table for all components)
/// sent as RFC 2435 type 1 with its table in band (Q 255, the table twice:
/// luma and chroma) in three packets.
const JPEG_IMAGE: &[u8] = include_bytes!("../testdata/jpeg_64x48_420.jpg");
/// What the depacketizer rebuilt of it; `ffmpeg -i` decodes both to the
/// same pixels (checked when the file was made: `framemd5` equal).
const JPEG_REBUILT: &[u8] = include_bytes!("../testdata/jpeg_64x48_420_rebuilt.jpg");

fn jpeg_image_packets() -> Vec<Vec<u8>> {
    let segs = jpeg_segments(JPEG_IMAGE);
    let dqt = &segs.iter().find(|s| s.0 == 0xdb).unwrap().1;
    assert_eq!(dqt.len(), 65, "one 8-bit table");
    let mut tables = dqt[1..].to_vec();
    tables.extend_from_slice(&dqt[1..]);
    // The scan: after the SOS segment, up to EOI.
    let sos = JPEG_IMAGE
        .windows(2)
        .position(|w| w == [0xff, 0xda])
        .unwrap();
    let len = usize::from(u16::from_be_bytes([
        JPEG_IMAGE[sos + 2],
        JPEG_IMAGE[sos + 3],
    ]));
    let scan = &JPEG_IMAGE[sos + 2 + len..JPEG_IMAGE.len() - 2];
    let mut pkts = jpeg_packets(1, 255, Some(&tables), scan, 500);
    for p in &mut pkts {
        p[6] = 64 / 8;
        p[7] = 48 / 8;
    }
    pkts
}

#[test]
fn jpeg_real_image_is_rebuilt() {
    let mut d = Depacketizer::new(&fmt("JPEG", 90_000, None)).unwrap();
    let out = jpeg_run(&mut d, 0, 1, &jpeg_image_packets());
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    if std::env::var_os("WRITE_JPEG_REBUILT").is_some() {
        std::fs::write("src/codec/testdata/jpeg_64x48_420_rebuilt.jpg", &f[0].data).unwrap();
    }
    assert_eq!(&f[0].data[..], JPEG_REBUILT);
}
