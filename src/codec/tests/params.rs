//! Parameter-set summaries from real encoder output, RFC 6381 strings,
//! random access detection, AudioSpecificConfig and access unit
//! sanitising.
//!
//! Fixtures: `src/egress/hls/testdata` (x264 High 640x360 25 fps without
//! B-frames; x265 Main 320x180 25 fps), and
//! `testdata/h264_320x180_25fps_bframes.h264`, made with
//! `ffmpeg -f lavfi -i testsrc2=size=320x180:rate=25 -frames 10 -c:v libx264
//! -bf 2 -f h264` (High, level 1.2, two B-frames between references).

use bytes::Bytes;

use super::{avcc, hex, H264_SPS, H265_SPS};
use crate::codec::*;

/// Splits an Annex B byte stream into NAL units (start codes and trailing
/// zero bytes removed).
pub(crate) fn annex_b(data: &[u8]) -> Vec<&[u8]> {
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
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            while e > s && data[e - 1] == 0 {
                e -= 1;
            }
            &data[s..e]
        })
        .collect()
}

/// The first NAL unit of `nal_type` in an H.264 (or, with `hevc`, H.265)
/// Annex B stream.
fn first(data: &[u8], hevc: bool, nal_type: u8) -> Vec<u8> {
    annex_b(data)
        .into_iter()
        .find(|n| {
            if hevc {
                h265_nal_type(n[0]) == nal_type
            } else {
                h264_nal_type(n[0]) == nal_type
            }
        })
        .expect("fixture has the NAL unit")
        .to_vec()
}

const H264_FIXTURE: &[u8] = include_bytes!("../../egress/hls/testdata/h264_640x360_25fps.h264");
const H265_FIXTURE: &[u8] = include_bytes!("../../egress/hls/testdata/h265_320x180_25fps.h265");
const H264_BFRAMES: &[u8] = include_bytes!("../testdata/h264_320x180_25fps_bframes.h264");

#[test]
fn h264_summary_of_the_x264_fixture() {
    let s = H264Sps::parse(&first(H264_FIXTURE, false, H264_NAL_SPS)).expect("fixture SPS");
    assert_eq!(
        (s.profile_idc, s.constraint_flags, s.level_idc),
        (100, 0, 30)
    );
    assert_eq!(
        s.chroma,
        Some(Chroma {
            format_idc: 1,
            bit_depth_luma: 8,
            bit_depth_chroma: 8
        })
    );
    assert_eq!(s.dimensions, Some((640, 360)), "cropped from 640x368");
    assert_eq!(s.frame_rate, Some(25.0));
    assert_eq!(s.max_reorder, Some(0), "bframes=0");
    assert_eq!(s.rfc6381(), "avc1.64001e");
    assert_eq!(s.profile_level_id(), [0x64, 0x00, 0x1e]);
    assert_eq!(s.avcc_ext(), s.chroma, "High carries avcC chroma fields");
}

#[test]
fn h264_summary_says_b_frames_and_slices_agree() {
    let s = H264Sps::parse(&first(H264_BFRAMES, false, H264_NAL_SPS)).expect("fixture SPS");
    assert_eq!(s.max_reorder, Some(2), "-bf 2 reorders");
    assert_eq!(s.dimensions, Some((320, 180)));
    assert_eq!(s.frame_rate, Some(25.0));
    assert_eq!(s.rfc6381(), "avc1.64000c");
    let t = Track::new(
        Codec::H264 {
            sps: first(H264_BFRAMES, false, H264_NAL_SPS).into(),
            pps: first(H264_BFRAMES, false, H264_NAL_PPS).into(),
        },
        90_000,
    );
    assert_eq!(
        t.summary.as_ref().and_then(ParamSummary::max_reorder),
        Some(2)
    );

    // Slice types: the IDR is I, and some later picture is B.
    let slices: Vec<Option<bool>> = annex_b(H264_BFRAMES)
        .into_iter()
        .filter(|n| matches!(h264_nal_type(n[0]), H264_NAL_SLICE | H264_NAL_IDR))
        .map(|n| h264_has_b_slice(&avcc(&[n])))
        .collect();
    assert_eq!(slices.first(), Some(&Some(false)));
    assert!(slices.contains(&Some(true)), "{slices:?}");
    assert_eq!(h264_has_b_slice(&avcc(&[&[0x67, 0x42]])), None);
}

#[test]
fn h264_summary_of_other_encoders() {
    // GStreamer x264enc constrained baseline 640x360 without VUI timing.
    let s = H264Sps::parse(&hex(H264_SPS)).expect("valid SPS");
    assert_eq!(s.rfc6381(), "avc1.42c01e");
    assert_eq!(s.dimensions, Some((640, 360)));
    assert_eq!(s.max_reorder, Some(0), "Baseline has no B slices");
    assert_eq!(s.avcc_ext(), None, "Baseline avcC has no chroma fields");
    // Baseline SPSs carry no chroma fields: 4:2:0 8-bit is inferred (H.264 §7.4.2.1.1).
    assert_eq!(
        s.chroma
            .map(|c| (c.format_idc, c.bit_depth_luma, c.bit_depth_chroma)),
        Some((1, 8, 8))
    );
}

#[test]
fn h264_sps_errors_and_partial_sps() {
    assert!(H264Sps::parse(&[]).is_err());
    assert!(H264Sps::parse(&[0x67, 0x64, 0x00]).is_err(), "truncated");
    assert!(H264Sps::parse(&[0x68, 0x42, 0x00, 0x1e]).is_err(), "a PPS");
    // The leading bytes alone still give the profile and level.
    let s = H264Sps::parse(&[0x67, 0x4d, 0x40, 0x28]).expect("head parses");
    assert_eq!(s.profile_level_id(), [0x4d, 0x40, 0x28]);
    assert_eq!(
        (s.chroma, s.dimensions, s.frame_rate, s.max_reorder),
        (None, None, None, None)
    );
}

#[test]
fn h265_summary_of_the_x265_fixture() {
    let s = H265Sps::parse(&first(H265_FIXTURE, true, H265_NAL_SPS)).expect("fixture SPS");
    assert_eq!((s.profile_space, s.tier_flag, s.profile_idc), (0, false, 1));
    assert_eq!(s.level_idc, 60);
    assert_eq!(
        s.chroma,
        Chroma {
            format_idc: 1,
            bit_depth_luma: 8,
            bit_depth_chroma: 8
        }
    );
    assert_eq!(s.dimensions, Some((320, 180)), "cropped from 320x192");
    assert_eq!(s.frame_rate, Some(25.0));
    assert_eq!(s.max_reorder, 2);
    assert_eq!((s.num_temporal_layers, s.temporal_id_nested), (1, true));
    assert_eq!(s.rfc6381(), "hvc1.1.6.L60.90");
}

#[test]
fn h265_summary_of_other_encoders() {
    // GStreamer x265enc 640x360 Main.
    let s = H265Sps::parse(&hex(H265_SPS)).expect("valid SPS");
    assert_eq!(s.dimensions, Some((640, 360)));
    assert_eq!(s.max_reorder, 2);
    // libheif's x265 SPS (mp4-atom's hvcC test vector), Main level 4.
    let sps = [
        66, 1, 1, 1, 96, 0, 0, 3, 0, 144, 0, 0, 3, 0, 0, 3, 0, 120, 160, 2, 128, 128, 53, 159, 89,
        102, 98, 164, 145, 38, 191, 252, 26, 176, 26, 172, 4, 0, 0, 3, 0, 4, 0, 0, 3, 0, 100, 32,
    ];
    let s = H265Sps::parse(&sps).expect("valid SPS");
    assert_eq!(s.compatibility_flags, [0x60, 0, 0, 0]);
    assert_eq!(s.constraint_flags, [0x90, 0, 0, 0, 0, 0]);
    assert_eq!(s.rfc6381(), "hvc1.1.6.L120.90");

    assert!(H265Sps::parse(&[]).is_err());
    assert!(H265Sps::parse(&[0x42, 0x01]).is_err(), "truncated");
    assert!(H265Sps::parse(&[0x40, 0x01, 0x0c]).is_err(), "a VPS");
}

#[test]
fn hvc1_string_follows_annex_e() {
    // ISO/IEC 14496-15 Annex E: profile space letter, compatibility flags
    // bit-reversed in hex, tier letter and level, constraint bytes with
    // trailing zeros left out.
    let s = H265Sps {
        profile_space: 1,
        tier_flag: true,
        profile_idc: 2,
        compatibility_flags: [0x20, 0, 0, 0],
        constraint_flags: [0xb0, 0, 0, 0, 0, 0],
        level_idc: 153,
        num_temporal_layers: 1,
        temporal_id_nested: true,
        chroma: Chroma {
            format_idc: 1,
            bit_depth_luma: 10,
            bit_depth_chroma: 10,
        },
        dimensions: None,
        frame_rate: None,
        max_reorder: 0,
        log2_max_poc_lsb: 8,
        separate_colour_planes: false,
    };
    assert_eq!(s.rfc6381(), "hvc1.A2.4.H153.B0");
    let plain = H265Sps {
        profile_space: 0,
        tier_flag: false,
        profile_idc: 1,
        compatibility_flags: [0x60, 0, 0, 0],
        constraint_flags: [0; 6],
        level_idc: 93,
        ..s
    };
    assert_eq!(plain.rfc6381(), "hvc1.1.6.L93");
}

#[test]
fn h265_irap_is_types_16_to_23() {
    let hevc = Codec::H265 {
        vps: Bytes::new(),
        sps: Bytes::new(),
        pps: Bytes::new(),
    };
    for t in 0u8..=63 {
        let irap = (16..=23).contains(&t);
        assert_eq!(h265_is_irap(t), irap, "type {t}");
        // A NAL header with this type, layer 0, TID 1.
        let au = avcc(&[&[t << 1, 0x01, 0xaf]]);
        assert_eq!(is_random_access(&hevc, &au), irap, "type {t}");
    }
    // BLA, IDR and CRA behind an AUD and parameter sets.
    for t in [H265_NAL_BLA_W_LP, H265_NAL_IDR_W_RADL, H265_NAL_CRA] {
        let au = avcc(&[
            &[H265_NAL_AUD << 1, 1, 0x50],
            &[H265_NAL_SPS << 1, 1],
            &[t << 1, 1, 0],
        ]);
        assert!(is_random_access(&hevc, &au), "type {t}");
    }
}

#[test]
fn h264_random_access_is_idr_only() {
    let h264 = super::h264_codec();
    assert!(h264_is_idr(H264_NAL_IDR));
    for t in (0u8..=31).filter(|&t| t != H264_NAL_IDR) {
        assert!(!h264_is_idr(t), "type {t}");
    }
    let idr = avcc(&[&[0x09, 0xf0], &[0x67, 0x42], &[0x68, 0xce], &[0x65, 0x88]]);
    let non_idr = avcc(&[&[0x09, 0xf0], &[0x41, 0x9a]]);
    let params_only = avcc(&[&[0x67, 0x42], &[0x68, 0xce]]);
    assert!(is_random_access(&h264, &idr));
    assert!(!is_random_access(&h264, &non_idr));
    assert!(!is_random_access(&h264, &params_only));
    assert!(
        !is_random_access(&Codec::Opus { channels: 2 }, &idr),
        "audio"
    );
}

#[test]
fn aac_config_and_object_type_escape() {
    // AAC-LC 44.1 kHz stereo; AAC-LC 48 kHz stereo.
    let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
    assert_eq!(
        (lc.object_type, lc.sample_rate, lc.channel_configuration),
        (2, Some(44_100), 2)
    );
    assert_eq!(
        AacConfig::parse(&[0x11, 0x90]).unwrap().sample_rate,
        Some(48_000)
    );
    assert_eq!(lc.rfc6381(), "mp4a.40.2");
    // Escape 31 + 6-bit extension 10 = object type 42 (USAC), 48 kHz, stereo:
    // 11111 001010 0011 0010.
    let usac = AacConfig::parse(&[0xf9, 0x46, 0x40]).unwrap();
    assert_eq!(usac.object_type, 42, "32 + audioObjectTypeExt");
    assert_eq!(
        (usac.sample_rate, usac.channel_configuration),
        (Some(48_000), 2)
    );
    assert_eq!(usac.rfc6381(), "mp4a.40.42");
    // Escape with extension 0: object type 32 (Layer-1), explicit 24-bit rate.
    // 11111 000000 1111 <22050 in 24 bits> 0001.
    let explicit = AacConfig::parse(&[0xf8, 0x1e, 0x00, 0xac, 0x44, 0x20]).unwrap();
    assert_eq!(explicit.object_type, 32);
    assert_eq!(explicit.sample_rate, Some(22_050));
    assert_eq!(explicit.channel_configuration, 1);

    assert!(AacConfig::parse(&[]).is_err());
    assert!(AacConfig::parse(&[0x00, 0x00]).is_err(), "object type 0");
    assert!(AacConfig::parse(&[0xf8]).is_err(), "truncated escape");
}

#[test]
fn track_new_fills_the_summary_once() {
    let sps = first(H265_FIXTURE, true, H265_NAL_SPS);
    let t = Track::new(
        Codec::H265 {
            vps: first(H265_FIXTURE, true, H265_NAL_VPS).into(),
            sps: sps.clone().into(),
            pps: first(H265_FIXTURE, true, H265_NAL_PPS).into(),
        },
        90_000,
    );
    assert_eq!(t.rfc6381.as_deref(), Some("hvc1.1.6.L60.90"));
    assert_eq!(t.dimensions, Some((320, 180)));
    assert_eq!(t.frame_rate, Some(25.0));
    assert_eq!(t.h265(), Some(&H265Sps::parse(&sps).unwrap()));
    assert!(t.h264().is_none() && t.aac().is_none());

    let aac = Track::new(
        Codec::Aac {
            config: Bytes::from_static(&[0x12, 0x10]),
            channels: 2,
        },
        44_100,
    );
    assert_eq!(aac.rfc6381.as_deref(), Some("mp4a.40.2"));
    assert_eq!(aac.aac().map(|c| c.object_type), Some(2));
    assert_eq!(aac.dimensions, None);

    let opus = Track::new(Codec::Opus { channels: 2 }, 48_000);
    assert_eq!(
        (opus.rfc6381.as_deref(), &opus.summary),
        (Some("opus"), &None)
    );
    let pcma = Track::new(Codec::Pcma { channels: 1 }, 8000);
    assert_eq!((pcma.rfc6381.as_deref(), &pcma.summary), (None, &None));

    // Unparseable parameters: no summary, no panic; `try_new` says why.
    let bad = Codec::H265 {
        vps: Bytes::new(),
        sps: Bytes::from_static(&[0x42, 0x01, 0x01]),
        pps: Bytes::new(),
    };
    let t = Track::new(bad.clone(), 90_000);
    assert_eq!((&t.summary, &t.rfc6381, t.dimensions), (&None, &None, None));
    let e = Track::try_new(bad, 90_000).unwrap_err();
    assert_eq!(e.what, "H.265 SPS");
}

#[test]
fn access_unit_sanitising() {
    let idr = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
    assert_eq!(sanitize_access_unit(&idr, false), Ok(idr.clone()));

    let with_ps = Bytes::from_static(&[
        0, 0, 0, 2, 0x67, 0x64, 0, 0, 0, 1, 0x68, 0, 0, 0, 2, 0x65, 0x88,
    ]);
    assert_eq!(sanitize_access_unit(&with_ps, false), Ok(idr.clone()));

    let hevc = Bytes::from_static(&[0, 0, 0, 2, 0x40, 0x01, 0, 0, 0, 3, 0x26, 0x01, 0xaf]);
    assert_eq!(
        sanitize_access_unit(&hevc, true),
        Ok(Bytes::from_static(&[0, 0, 0, 3, 0x26, 0x01, 0xaf]))
    );

    let short = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
    assert_eq!(
        sanitize_access_unit(&short, false),
        Err(AccessUnitError::BadLength)
    );
    let only_ps = Bytes::from_static(&[0, 0, 0, 1, 0x67]);
    assert_eq!(
        sanitize_access_unit(&only_ps, false),
        Err(AccessUnitError::Empty)
    );
    assert_eq!(
        sanitize_access_unit(&Bytes::new(), false),
        Err(AccessUnitError::Empty)
    );
}
