//! Bus video frames → what str0m's H.264/H.265 packetizers take, plus
//! detection of streams whose pictures are reordered (B-frames).
//!
//! The bus carries AVCC/HVCC access units (4-byte big-endian lengths,
//! ISO/IEC 14496-15) without parameter sets. str0m's packetizers split
//! Annex B byte streams (ITU-T H.264 Annex B: `00 00 00 01` start codes)
//! and put SPS+PPS into a STAP-A ahead of the next NAL unit. Browsers only
//! start decoding at a keyframe that has its parameter sets, so every
//! keyframe gets the current ones in front unless it already carries them.

use bytes::Bytes;

use crate::bus::Codec;
use crate::codec::{avcc_nal_units, h264_nal_type, h265_is_irap, h265_nal_type, PayloadError};
use crate::codec::{H264_NAL_AUD, H264_NAL_PPS, H264_NAL_SPS};
use crate::codec::{H265_NAL_AUD, H265_NAL_PPS, H265_NAL_SPS, H265_NAL_VPS};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Converts one access unit to Annex B. For a keyframe (`keyframe`, or an
/// IDR/IRAP NAL unit inside) the codec's parameter sets are put first
/// unless the frame has all of them already; access unit delimiters are
/// dropped (RTP carries access-unit boundaries in the marker bit, RFC 6184
/// §5.1, and str0m drops them anyway).
///
/// Output: `00 00 00 01 <NAL>` repeated. Errors on malformed AVCC framing
/// (a truncated or zero length), in which case nothing should be sent.
pub fn to_annex_b(codec: &Codec, data: &[u8], keyframe: bool) -> Result<Vec<u8>, PayloadError> {
    let (param_sets, hevc): (Vec<&Bytes>, bool) = match codec {
        Codec::H264 { sps, pps } => (vec![sps, pps], false),
        Codec::H265 { vps, sps, pps } => (vec![vps, sps, pps], true),
        other => {
            return Err(PayloadError::Unsupported(format!(
                "{} is not a video codec",
                other.name()
            )))
        }
    };
    let nal_type = |nal: &[u8]| -> u8 {
        let b = nal.first().copied().unwrap_or(0);
        if hevc {
            h265_nal_type(b)
        } else {
            h264_nal_type(b)
        }
    };
    let (aud, ps_types): (u8, &[u8]) = if hevc {
        (H265_NAL_AUD, &[H265_NAL_VPS, H265_NAL_SPS, H265_NAL_PPS])
    } else {
        (H264_NAL_AUD, &[H264_NAL_SPS, H264_NAL_PPS])
    };

    // Pass 1: validate, find whether this is a random access point and
    // which parameter sets it carries.
    let mut random_access = keyframe;
    let mut seen = 0u8;
    let mut size = 0usize;
    for nal in avcc_nal_units(data) {
        let nal = nal?;
        let t = nal_type(nal);
        random_access |= if hevc { h265_is_irap(t) } else { t == 5 };
        if let Some(i) = ps_types.iter().position(|&p| p == t) {
            seen |= 1 << i;
        }
        size += START_CODE.len() + nal.len();
    }
    let all = (1u8 << ps_types.len()) - 1;
    let insert = random_access && seen != all;
    if insert {
        size += param_sets
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| START_CODE.len() + p.len())
            .sum::<usize>();
    }

    let mut out = Vec::with_capacity(size);
    if insert {
        for p in param_sets.iter().filter(|p| !p.is_empty()) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(p);
        }
    }
    // Pass 1 validated the framing: `map_while(Result::ok)` drops nothing.
    for nal in avcc_nal_units(data).map_while(Result::ok) {
        if nal_type(nal) == aud {
            continue;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(out)
}

/// Reads Exp-Golomb coded fields (H.264 §9.1) from a NAL unit payload,
/// skipping emulation prevention bytes (`00 00 03`, §7.4.1).
struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn read_bit(&mut self) -> Option<u8> {
        if self.bit == 0 {
            // Entering a new byte: an 0x03 after two zero bytes is an
            // emulation prevention byte, not payload.
            let b = *self.data.get(self.byte)?;
            if self.zeros >= 2 && b == 3 {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            if b == 0 {
                self.zeros += 1;
            } else {
                self.zeros = 0;
            }
        }
        let b = *self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(v)
    }

    fn read_bits(&mut self, n: u8) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.read_bit()?);
        }
        Some(v)
    }

    fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.read_bit()?;
        }
        Some(())
    }

    /// `ue(v)`; `None` past the end or beyond 32 bits.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u8;
        while self.read_bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.read_bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }
}

/// Whether an H.264 access unit contains a B slice: `slice_type` 1 or 6
/// (H.264 §7.4.3 Table 7-6) in the first slice header of a coded slice NAL
/// unit (types 1 and 5). `None` if the frame has no parsable slice.
pub fn h264_has_b_slice(data: &[u8]) -> Option<bool> {
    for nal in avcc_nal_units(data).map_while(Result::ok) {
        let t = h264_nal_type(nal[0]);
        if t != 1 && t != 5 {
            continue;
        }
        let mut r = BitReader::new(&nal[1..]);
        let _first_mb_in_slice = r.ue()?;
        let slice_type = r.ue()?;
        return Some(slice_type % 5 == 1);
    }
    None
}

/// `sps_max_num_reorder_pics` of the highest sub-layer from an H.265 SPS
/// NAL unit (H.265 §7.3.2.2.1): more than zero means pictures are output
/// in a different order than decoded. `None` if the SPS does not parse.
pub fn h265_max_reorder(sps: &[u8]) -> Option<u32> {
    let mut r = BitReader::new(sps.get(2..)?);
    let _vps_id = r.read_bits(4)?;
    let max_sub_layers_minus1 = r.read_bits(3)?;
    let _temporal_id_nesting = r.read_bits(1)?;
    // profile_tier_level(1, max_sub_layers_minus1), §7.3.3.
    r.skip(88)?; // general profile: space..general_profile_compatibility..flags
    r.skip(8)?; // general_level_idc
    let mut profile_present = Vec::new();
    let mut level_present = Vec::new();
    for _ in 0..max_sub_layers_minus1 {
        profile_present.push(r.read_bits(1)? == 1);
        level_present.push(r.read_bits(1)? == 1);
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?; // reserved_zero_2bits
        }
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if profile_present[i] {
            r.skip(88)?;
        }
        if level_present[i] {
            r.skip(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    let _width = r.ue()?;
    let _height = r.ue()?;
    if r.read_bits(1)? == 1 {
        // conformance_window offsets
        for _ in 0..4 {
            r.ue()?;
        }
    }
    let _bit_depth_luma = r.ue()?;
    let _bit_depth_chroma = r.ue()?;
    let _log2_max_poc_lsb = r.ue()?;
    let sub_layer_ordering_info_present = r.read_bits(1)? == 1;
    let first = if sub_layer_ordering_info_present {
        0
    } else {
        max_sub_layers_minus1
    };
    let mut reorder = 0;
    for _ in first..=max_sub_layers_minus1 {
        let _max_dec_pic_buffering = r.ue()?;
        reorder = r.ue()?;
        let _max_latency_increase = r.ue()?;
    }
    Some(reorder)
}

/// Watches a video track for reordered pictures. Browsers' WebRTC video
/// receivers decode in arrival order and show frames as they come out,
/// without a reorder delay, so a stream with B-frames plays jerkily.
#[derive(Debug, Default, Clone)]
pub struct ReorderDetector {
    found: bool,
    frames_checked: u32,
}

/// After this many frames without a B slice, stop parsing (a stream that
/// uses B-frames has them in every GOP).
const CHECK_FRAMES: u32 = 300;

impl ReorderDetector {
    /// Looks at one frame (and the track's codec parameters); returns true
    /// the first time reordering is found.
    pub fn check(&mut self, codec: &Codec, data: &[u8]) -> bool {
        if self.found || self.frames_checked >= CHECK_FRAMES {
            return false;
        }
        self.frames_checked += 1;
        let found = match codec {
            Codec::H264 { .. } => h264_has_b_slice(data) == Some(true),
            // HEVC encoders use B slices without reordering (low-delay B),
            // so the SPS's reorder count is what tells.
            Codec::H265 { sps, .. } => {
                self.frames_checked = CHECK_FRAMES;
                h265_max_reorder(sps).is_some_and(|n| n > 0)
            }
            _ => false,
        };
        self.found = found;
        found
    }

    pub fn found(&self) -> bool {
        self.found
    }
}

/// Plain-words warning shown in the API and logs for a stream with B-frames.
pub const B_FRAMES_WARNING: &str = "the video has B-frames (pictures sent out of order): browsers' WebRTC players show them in decoding order, so motion stutters. Turn B-frames off in the camera's encoder settings (often \"GOP structure\", \"B-frame\" or a \"baseline\"/\"main\" profile without B-frames)";

#[cfg(test)]
mod tests {
    use super::*;

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn h264() -> Codec {
        Codec::H264 {
            sps: Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e]),
            pps: Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
        }
    }

    #[test]
    fn keyframe_gets_parameter_sets_and_loses_aud() {
        let au = avcc(&[&[0x09, 0xf0], &[0x65, 0x88, 0x84]]);
        let out = to_annex_b(&h264(), &au, true).unwrap();
        assert_eq!(
            out,
            [
                &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e][..],
                &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
                &[0, 0, 0, 1, 0x65, 0x88, 0x84],
            ]
            .concat()
        );
        // Flagged or not: an IDR NAL unit makes it a keyframe.
        assert_eq!(to_annex_b(&h264(), &au, false).unwrap(), out);
    }

    #[test]
    fn keyframe_with_its_own_parameter_sets_is_left_alone() {
        let au = avcc(&[&[0x67, 0x64, 0, 0x28], &[0x68, 0xee], &[0x65, 0x88]]);
        let out = to_annex_b(&h264(), &au, true).unwrap();
        assert_eq!(
            out,
            [
                &[0, 0, 0, 1, 0x67, 0x64, 0, 0x28][..],
                &[0, 0, 0, 1, 0x68, 0xee],
                &[0, 0, 0, 1, 0x65, 0x88],
            ]
            .concat()
        );
    }

    #[test]
    fn delta_frame_is_just_reframed() {
        let au = avcc(&[&[0x41, 0x9a, 0x02], &[0x41, 0x9b]]);
        let out = to_annex_b(&h264(), &au, false).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x41, 0x9a, 0x02, 0, 0, 0, 1, 0x41, 0x9b]);
    }

    #[test]
    fn hevc_keyframe_gets_vps_sps_pps() {
        let codec = Codec::H265 {
            vps: Bytes::from_static(&[0x40, 0x01, 0x0c]),
            sps: Bytes::from_static(&[0x42, 0x01, 0x01]),
            pps: Bytes::from_static(&[0x44, 0x01, 0xc1]),
        };
        // IDR_W_RADL (19) = 0x26 0x01
        let au = avcc(&[&[0x46, 0x01, 0x50], &[0x26, 0x01, 0xaf]]);
        let out = to_annex_b(&codec, &au, false).unwrap();
        assert_eq!(
            out,
            [
                &[0, 0, 0, 1, 0x40, 0x01, 0x0c][..],
                &[0, 0, 0, 1, 0x42, 0x01, 0x01],
                &[0, 0, 0, 1, 0x44, 0x01, 0xc1],
                &[0, 0, 0, 1, 0x26, 0x01, 0xaf],
            ]
            .concat(),
            "AUD (type 35) dropped, parameter sets first"
        );
    }

    #[test]
    fn malformed_framing_is_an_error() {
        assert!(to_annex_b(&h264(), &[0, 0, 0, 9, 0x65], true).is_err());
        assert!(to_annex_b(&Codec::Opus { channels: 2 }, &[], true).is_err());
    }

    #[test]
    fn h264_slice_types() {
        // first_mb_in_slice = 0 ("1"), slice_type ue: P=0 ("1"), B=1 ("010"),
        // I=7 ("0001000"), B=6 ("00111").
        let p = avcc(&[&[0x41, 0b1100_0000]]);
        let b = avcc(&[&[0x01, 0b1010_0000]]);
        let i = avcc(&[&[0x65, 0b1000_1000]]);
        let b6 = avcc(&[&[0x01, 0b1001_1100]]);
        assert_eq!(h264_has_b_slice(&p), Some(false));
        assert_eq!(h264_has_b_slice(&b), Some(true));
        assert_eq!(h264_has_b_slice(&i), Some(false));
        assert_eq!(h264_has_b_slice(&b6), Some(true));
        assert_eq!(h264_has_b_slice(&avcc(&[&[0x67, 0x42]])), None);
        let mut d = ReorderDetector::default();
        assert!(!d.check(&h264(), &p));
        assert!(d.check(&h264(), &b));
        assert!(!d.check(&h264(), &b), "reported once");
        assert!(d.found());
    }

    #[test]
    fn emulation_prevention_is_skipped() {
        // 00 00 03 01: the 03 is not payload, so the bits read are 00 00 01.
        let mut r = BitReader::new(&[0x00, 0x00, 0x03, 0x01]);
        assert_eq!(r.read_bits(24), Some(1));
    }

    #[test]
    fn h265_reorder_from_sps() {
        // 640x360 x265 SPS from the codec tests, made without
        // tune=zerolatency: B-frames, sps_max_num_reorder_pics = 2.
        let sps = crate::codec::tests::hex(crate::codec::tests::H265_SPS);
        assert_eq!(h265_max_reorder(&sps), Some(2));
        assert_eq!(h265_max_reorder(&[0x42, 0x01]), None);
    }
}
