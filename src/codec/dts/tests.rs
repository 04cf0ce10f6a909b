//! The extractor against real encoder output: x264 (`-bf 2`, and `-bf 3`
//! with B-pyramid) and x265 (`bframes=3`), 320x240 25 fps, 50 frames, GOP
//! 25. Each `.pkts.csv` is ffprobe's `pts,dts,flags` of the same access
//! units in an MP4 at 90 kHz, in decoding order. Made with:
//!
//! ```sh
//! ffmpeg -f lavfi -i testsrc=size=320x240:rate=25 -frames 50 -c:v libx264 -bf 2 \
//!   -profile:v high -g 25 -pix_fmt yuv420p -video_track_timescale 90000 a.mp4
//! # b.mp4: -bf 3 -x264-params b-pyramid=normal:b-adapt=0
//! # c.mp4: -c:v libx265 -x265-params bframes=3:keyint=25 -tag:v hvc1
//! ffmpeg -i a.mp4 -c copy -bsf:v h264_mp4toannexb -f h264 h264_320x240_25fps_bf2.h264
//! ffprobe -v error -show_packets -show_entries packet=pts,dts,flags -of csv=p=0 a.mp4
//! ```

use super::*;
use crate::codec::tests::avcc;
use crate::codec::tests::params::annex_b;
use crate::codec::{h264_nal_type, h265_nal_type, H264_NAL_PPS, H264_NAL_SPS};
use crate::codec::{H265_NAL_PPS, H265_NAL_SPS, H265_NAL_VPS};

pub(crate) const H264_BF2: &[u8] = include_bytes!("../testdata/h264_320x240_25fps_bf2.h264");
pub(crate) const H264_BF2_PKTS: &str = include_str!("../testdata/h264_320x240_25fps_bf2.pkts.csv");
const H264_BF3: &[u8] = include_bytes!("../testdata/h264_320x240_25fps_bf3_pyramid.h264");
const H264_BF3_PKTS: &str = include_str!("../testdata/h264_320x240_25fps_bf3_pyramid.pkts.csv");
const H265_BF3: &[u8] = include_bytes!("../testdata/h265_320x240_25fps_bf3.h265");
const H265_BF3_PKTS: &str = include_str!("../testdata/h265_320x240_25fps_bf3.pkts.csv");
// x264 bframes=0 (High): no reordering.
const H264_NO_B: &[u8] = include_bytes!("../../egress/hls/testdata/h264_640x360_25fps.h264");

/// A fixture cut into access units (AVCC framing, one slice per picture as
/// x264 and x265 write at this size) and the track its parameter sets make.
pub(crate) fn access_units(data: &[u8], hevc: bool) -> (Track, Vec<Vec<u8>>) {
    let vcl = |n: &[u8]| {
        if hevc {
            h265_nal_type(n[0]) < 32
        } else {
            matches!(h264_nal_type(n[0]), 1 | 5)
        }
    };
    let of_type = |t: u8| {
        annex_b(data)
            .into_iter()
            .find(|n| {
                if hevc {
                    h265_nal_type(n[0]) == t
                } else {
                    h264_nal_type(n[0]) == t
                }
            })
            .expect("fixture has the parameter set")
            .to_vec()
    };
    let codec = if hevc {
        Codec::H265 {
            vps: of_type(H265_NAL_VPS).into(),
            sps: of_type(H265_NAL_SPS).into(),
            pps: of_type(H265_NAL_PPS).into(),
        }
    } else {
        Codec::H264 {
            sps: of_type(H264_NAL_SPS).into(),
            pps: of_type(H264_NAL_PPS).into(),
        }
    };
    let mut aus = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    for n in annex_b(data) {
        cur.push(n);
        if vcl(n) {
            aus.push(avcc(&cur));
            cur.clear();
        }
    }
    (Track::new(codec, 90_000), aus)
}

/// ffprobe's `(pts, dts)` per packet, in decoding order.
pub(crate) fn probe(csv: &str) -> Vec<(i64, i64)> {
    csv.lines()
        .map(|l| {
            let mut f = l.split(',');
            let pts = f.next().unwrap().parse().unwrap();
            let dts = f.next().unwrap().parse().unwrap();
            (pts, dts)
        })
        .collect()
}

/// Runs the fixture through one extractor with ffprobe's pts (shifted by
/// `base`, as a camera's RTP clock would be) and checks the shape.
fn check_against_ffprobe(data: &[u8], hevc: bool, csv: &str, base: i64) -> DtsExtractor {
    let (track, aus) = access_units(data, hevc);
    let want = probe(csv);
    assert_eq!(aus.len(), want.len(), "one access unit per packet");
    let mut x = DtsExtractor::new(&track);
    assert!(x.reorder_depth() > 0, "B-frames reorder");
    let got: Vec<i64> = aus
        .iter()
        .zip(&want)
        .map(|(au, &(pts, _))| {
            let dts = x.extract(au, base + pts) - base;
            assert!(!x.pts_order, "every slice header gives its POC");
            dts
        })
        .collect();
    let mut shift = None;
    for (i, (&dts, &(pts, want_dts))) in got.iter().zip(&want).enumerate() {
        assert!(dts <= pts, "#{i}: dts {dts} > pts {pts}");
        if i > 0 {
            assert!(dts > got[i - 1], "#{i}: dts {dts} after {}", got[i - 1]);
        }
        // The same composition offsets as ffmpeg's muxer, up to a constant.
        let s = want_dts - dts;
        assert_eq!(*shift.get_or_insert(s), s, "#{i}: {got:?} vs {want:?}");
    }
    assert!(
        got.iter().zip(&want).any(|(d, (p, _))| d != p),
        "some dts differ from pts"
    );
    x
}

#[test]
fn h264_two_b_frames_match_ffprobe() {
    let x = check_against_ffprobe(H264_BF2, false, H264_BF2_PKTS, 0);
    assert_eq!(x.reorder_depth(), 2);
}

#[test]
fn h264_b_pyramid_matches_ffprobe_across_the_clock_wrap() {
    check_against_ffprobe(H264_BF3, false, H264_BF3_PKTS, 0);
    // A camera clock far from 0 (past a 32-bit RTP wrap, extended): only
    // differences matter.
    check_against_ffprobe(H264_BF3, false, H264_BF3_PKTS, (1 << 32) - 40_000);
}

#[test]
fn h265_b_frames_match_ffprobe() {
    check_against_ffprobe(H265_BF3, true, H265_BF3_PKTS, 123_456_789);
}

#[test]
fn ffprobe_dts_are_exact_with_the_sps_reorder_depth() {
    // With the reorder depth the SPS declares, dts are exactly the
    // muxer's (not only up to a shift) for the x264 streams.
    for (data, csv) in [(H264_BF2, H264_BF2_PKTS), (H264_BF3, H264_BF3_PKTS)] {
        let (track, aus) = access_units(data, false);
        let mut x = DtsExtractor::new(&track);
        for (au, (pts, dts)) in aus.iter().zip(probe(csv)) {
            assert_eq!(x.extract(au, pts), dts);
        }
    }
}

#[test]
fn without_b_frames_dts_is_pts() {
    let (track, aus) = access_units(H264_NO_B, false);
    let mut x = DtsExtractor::new(&track);
    assert_eq!(x.reorder_depth(), 0);
    for (i, au) in aus.iter().enumerate() {
        let pts = 1000 + i as i64 * 3600;
        assert_eq!(x.extract(au, pts), pts);
    }
    // Audio, too.
    let aac = Track::new(
        Codec::Aac {
            config: bytes::Bytes::from_static(&[0x11, 0x90]),
            channels: 2,
        },
        48_000,
    );
    assert_eq!(DtsExtractor::new(&aac).extract(&[1, 2, 3], 7), 7);
}

#[test]
fn unparseable_slices_fall_back_to_pts_order_until_the_next_idr() {
    let (track, aus) = access_units(H264_BF2, false);
    let want = probe(H264_BF2_PKTS);
    let mut x = DtsExtractor::new(&track);
    let mut prev = i64::MIN;
    for (i, (au, &(pts, want_dts))) in aus.iter().zip(&want).enumerate() {
        // Frames 5..=8 lose their slice header bits.
        let au = if (5..=8).contains(&i) {
            let mut bad = au.clone();
            // Exp-Golomb codes longer than 32 bits.
            for b in bad.iter_mut().skip(5) {
                *b = 0;
            }
            bad
        } else {
            au.clone()
        };
        let dts = x.extract(&au, pts);
        assert_eq!(
            x.pts_order,
            (5..25).contains(&i),
            "#{i}: the IDR at 25 restores POC order"
        );
        assert!(
            dts <= pts && dts > prev,
            "#{i}: {dts} (pts {pts}, prev {prev})"
        );
        prev = dts;
        // pts order is output order in this stream: still exact.
        assert_eq!(dts, want_dts, "#{i}");
    }
}

#[test]
fn garbage_never_panics_and_keeps_the_guarantees() {
    let (track, aus) = access_units(H264_BF3, false);
    let (track5, aus5) = access_units(H265_BF3, true);
    for (track, aus) in [(track, aus), (track5, aus5)] {
        let mut x = DtsExtractor::new(&track);
        let mut seed = 0x9e37_79b9_u32;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut prev: Option<i64> = None;
        for round in 0..2000 {
            let mut au = aus[rand() as usize % aus.len()].clone();
            for _ in 0..(rand() % 4) {
                let i = rand() as usize % au.len();
                au[i] = rand() as u8;
            }
            if round % 7 == 0 {
                au.truncate(rand() as usize % au.len());
            }
            // pts wander, jump back sometimes, and hit the i64 edges.
            let pts = match round % 100 {
                0 => i64::MAX,
                1 => i64::MIN,
                _ => (round as i64) * 3600 + i64::from(rand() % 20_000) - 10_000,
            };
            let dts = x.extract(&au, pts);
            match prev {
                Some(p) if pts > p => {
                    assert!(
                        dts <= pts && dts > p,
                        "round {round}: {dts} pts {pts} prev {p}"
                    );
                }
                _ => assert!(dts <= pts, "round {round}: {dts} > {pts}"),
            }
            prev = Some(dts);
        }
    }
}

/// The track with its H.264 SPS summary saying the reorder depth is only
/// the level's bound (no `max_num_reorder_frames` in the VUI).
fn undeclared(mut track: Track, bound: u32) -> Track {
    if let Some(ParamSummary::H264(s)) = &mut track.summary {
        s.max_reorder = Some(bound);
        s.max_reorder_inferred = true;
    }
    track
}

#[test]
fn an_undeclared_depth_keeps_dts_pts_until_pictures_reorder() {
    // No B-frames: dts == pts throughout.
    let (track, aus) = access_units(H264_NO_B, false);
    let mut x = DtsExtractor::new(&undeclared(track, 4));
    for (i, au) in aus.iter().enumerate() {
        let pts = i as i64 * 3600;
        assert_eq!(x.extract(au, pts), pts, "#{i}");
    }
    assert_eq!(x.reorder_depth(), 0);

    // B-frames: dts == pts for I0 and P3, then B1 shows the reordering;
    // from there on dts <= pts and increasing.
    let (track, aus) = access_units(H264_BF2, false);
    let want = probe(H264_BF2_PKTS);
    let mut x = DtsExtractor::new(&undeclared(track, 4));
    let got: Vec<i64> = aus
        .iter()
        .zip(&want)
        .map(|(au, &(pts, _))| x.extract(au, pts))
        .collect();
    assert_eq!(x.reorder_depth(), 4);
    assert_eq!(got[..2], [want[0].0, want[1].0]);
    for i in 2..got.len() {
        assert!(got[i] <= want[i].0, "#{i}: {got:?}");
        if i > 2 {
            assert!(got[i] > got[i - 1], "#{i}: {got:?}");
        }
    }
}
