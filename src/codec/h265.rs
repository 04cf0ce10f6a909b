//! H.265 (ITU-T H.265): NAL unit types, random access (IRAP), the SPS
//! summary (profile/tier/level, chroma, dimensions, frame rate, picture
//! reordering), the `hvcC` general fields, the ISO/IEC 14496-15 Annex E
//! codec string, and the RTP header bytes of RFC 7798 (single NAL unit
//! packets and FUs, no DONL).

use std::num::NonZeroUsize;

use h264_reader::rbsp::BitRead;

use super::nal::{rbsp_reader, ParamError};
use super::track::Chroma;
use super::PayloadError;

/// NAL unit type 16: BLA_W_LP, the first IRAP type.
pub const H265_NAL_BLA_W_LP: u8 = 16;
/// NAL unit type 19: IDR_W_RADL.
pub const H265_NAL_IDR_W_RADL: u8 = 19;
/// NAL unit type 21: CRA_NUT.
pub const H265_NAL_CRA: u8 = 21;
/// NAL unit type 32: video parameter set.
pub const H265_NAL_VPS: u8 = 32;
/// NAL unit type 33: sequence parameter set.
pub const H265_NAL_SPS: u8 = 33;
/// NAL unit type 34: picture parameter set.
pub const H265_NAL_PPS: u8 = 34;
/// NAL unit type 35: access unit delimiter.
pub const H265_NAL_AUD: u8 = 35;

/// RFC 7798 §4.4.3 fragmentation unit payload type.
const FU: u8 = 49;

/// Length of the H.265 NAL unit header (§7.3.1.2).
const HEADER_LEN: NonZeroUsize = NonZeroUsize::new(2).expect("2 is not zero");

/// The `nal_unit_type` (0..=63) of an H.265 NAL unit given the first byte
/// of its 2-byte header (H.265 §7.3.1.2).
#[inline]
pub fn h265_nal_type(b: u8) -> u8 {
    (b >> 1) & 0x3f
}

/// Whether an H.265 `nal_unit_type` is an IRAP picture's VCL NAL unit, a
/// random access point: BLA_W_LP (16) ..= RSV_IRAP_VCL23 (23), i.e. BLA,
/// IDR and CRA (H.265 §7.4.2.2 Table 7-1).
#[inline]
pub fn h265_is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// Whether an H.265 `nal_unit_type` is a VCL NAL unit (a slice segment of
/// a picture): types 0..=31 (H.265 §7.4.2.2 Table 7-1).
#[inline]
pub fn h265_is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

/// Whether an H.265 `nal_unit_type` is a RASL picture's VCL NAL unit
/// (RASL_N 8, RASL_R 9): a leading picture that references pictures before
/// its associated IRAP in decoding order, undecodable when decoding starts
/// at that IRAP (H.265 §7.4.2.2 Table 7-1, §8.1.3).
#[inline]
pub fn h265_is_rasl(nal_type: u8) -> bool {
    matches!(nal_type, 8 | 9)
}

/// What an H.265 SPS says, read once when a track is made (H.265
/// §7.3.2.2.1 with `profile_tier_level()` §7.3.3 and VUI §E.2.1). The
/// general profile fields are the ones `hvcC` records (ISO/IEC 14496-15
/// §8.3.3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct H265Sps {
    pub profile_space: u8,
    pub tier_flag: bool,
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, flag 0 in the most
    /// significant bit of the first byte.
    pub compatibility_flags: [u8; 4],
    /// The 48 bits from `general_progressive_source_flag` on.
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
    pub chroma: Chroma,
    /// Display width and height in pixels, after the conformance window;
    /// `None` if the window is larger than the picture.
    pub dimensions: Option<(u32, u32)>,
    /// Frames per second from the VUI timing info (`time_scale /
    /// num_units_in_tick`); `None` when absent or unparseable.
    pub frame_rate: Option<f64>,
    /// `sps_max_num_reorder_pics` of the highest sub-layer: above 0 means
    /// pictures are output in another order than decoded (B-frames that
    /// reorder; low-delay B does not).
    pub max_reorder: u32,
    /// `log2_max_pic_order_cnt_lsb_minus4 + 4` (4..=16): the width of
    /// `slice_pic_order_cnt_lsb`.
    pub log2_max_poc_lsb: u32,
    /// `separate_colour_plane_flag`: slice headers carry `colour_plane_id`.
    pub separate_colour_planes: bool,
}

impl H265Sps {
    /// Parses an SPS NAL unit (2-byte header included, no start code or
    /// length prefix) up to the VUI timing info.
    ///
    /// Errors: not an SPS (`nal_unit_type` ≠ 33), truncated or out-of-range
    /// fields before `sps_max_num_reorder_pics`. Past that point (the frame
    /// rate) a failure gives `frame_rate: None`.
    pub fn parse(sps: &[u8]) -> Result<H265Sps, ParamError> {
        const WHAT: &str = "H.265 SPS";
        let e = ParamError::bits(WHAT);
        let invalid = |reason: &str| ParamError::new(WHAT, reason);
        match sps {
            [h, _, ..] if h265_nal_type(*h) == H265_NAL_SPS => {}
            [h, _, ..] => {
                return Err(ParamError::new(
                    WHAT,
                    format!("NAL unit type {} is not 33", h265_nal_type(*h)),
                ))
            }
            _ => return Err(invalid("shorter than its NAL unit header")),
        }
        let mut r = rbsp_reader(sps, HEADER_LEN);
        r.skip(4, "sps_video_parameter_set_id").map_err(&e)?;
        let max_sub_layers_minus1: u8 = r.read(3, "sps_max_sub_layers_minus1").map_err(&e)?;
        if max_sub_layers_minus1 > 6 {
            return Err(invalid("sps_max_sub_layers_minus1 above 6"));
        }
        let temporal_id_nested = r.read_bool("sps_temporal_id_nesting_flag").map_err(&e)?;

        // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3.
        let profile_space: u8 = r.read(2, "general_profile_space").map_err(&e)?;
        let tier_flag = r.read_bool("general_tier_flag").map_err(&e)?;
        let profile_idc: u8 = r.read(5, "general_profile_idc").map_err(&e)?;
        let compat: u32 = r
            .read(32, "general_profile_compatibility_flags")
            .map_err(&e)?;
        let mut constraint_flags = [0u8; 6];
        for b in &mut constraint_flags {
            *b = r.read(8, "general_constraint_flags").map_err(&e)?;
        }
        let level_idc: u8 = r.read(8, "general_level_idc").map_err(&e)?;
        let n = usize::from(max_sub_layers_minus1);
        let mut sub_layer_present = [(false, false); 6];
        for p in sub_layer_present.iter_mut().take(n) {
            p.0 = r.read_bool("sub_layer_profile_present_flag").map_err(&e)?;
            p.1 = r.read_bool("sub_layer_level_present_flag").map_err(&e)?;
        }
        if n > 0 {
            r.skip(2 * (8 - n as u32), "reserved_zero_2bits")
                .map_err(&e)?;
        }
        for &(profile, level) in sub_layer_present.iter().take(n) {
            if profile {
                r.skip(88, "sub_layer_profile").map_err(&e)?;
            }
            if level {
                r.skip(8, "sub_layer_level_idc").map_err(&e)?;
            }
        }

        r.read_ue("sps_seq_parameter_set_id").map_err(&e)?;
        let chroma_format_idc = r.read_ue("chroma_format_idc").map_err(&e)?;
        if chroma_format_idc > 3 {
            return Err(invalid("chroma_format_idc above 3"));
        }
        let separate_colour_planes =
            chroma_format_idc == 3 && r.read_bool("separate_colour_plane_flag").map_err(&e)?;
        let width = r.read_ue("pic_width_in_luma_samples").map_err(&e)?;
        let height = r.read_ue("pic_height_in_luma_samples").map_err(&e)?;
        let mut window = [0u32; 4];
        if r.read_bool("conformance_window_flag").map_err(&e)? {
            for w in &mut window {
                *w = r.read_ue("conf_win_offset").map_err(&e)?;
            }
        }
        let luma = r.read_ue("bit_depth_luma_minus8").map_err(&e)?;
        let chroma = r.read_ue("bit_depth_chroma_minus8").map_err(&e)?;
        if luma > 8 || chroma > 8 {
            return Err(invalid("bit depth above 16"));
        }
        let log2_max_poc_lsb = r.read_ue("log2_max_pic_order_cnt_lsb_minus4").map_err(&e)? + 4;
        if log2_max_poc_lsb > 16 {
            return Err(invalid("log2_max_pic_order_cnt_lsb_minus4 above 12"));
        }
        let all_sub_layers = r
            .read_bool("sps_sub_layer_ordering_info_present_flag")
            .map_err(&e)?;
        let mut max_reorder = 0;
        for _ in (if all_sub_layers { 0 } else { n })..=n {
            r.read_ue("sps_max_dec_pic_buffering_minus1").map_err(&e)?;
            max_reorder = r.read_ue("sps_max_num_reorder_pics").map_err(&e)?;
            r.read_ue("sps_max_latency_increase_plus1").map_err(&e)?;
        }

        // Conformance window offsets are in chroma samples (§7.4.3.2.1:
        // SubWidthC, SubHeightC from Table 6-1).
        let sub_width = if matches!(chroma_format_idc, 1 | 2) && !separate_colour_planes {
            2
        } else {
            1
        };
        let sub_height = if chroma_format_idc == 1 { 2 } else { 1 };
        let crop = |size: u32, a: u32, b: u32, sub: u32| {
            a.checked_add(b)
                .and_then(|s| s.checked_mul(sub))
                .and_then(|s| size.checked_sub(s))
        };
        let dimensions = crop(width, window[0], window[1], sub_width)
            .zip(crop(height, window[2], window[3], sub_height));

        let frame_rate = vui_frame_rate(&mut r, log2_max_poc_lsb).ok().flatten();
        Ok(H265Sps {
            profile_space,
            tier_flag,
            profile_idc,
            compatibility_flags: compat.to_be_bytes(),
            constraint_flags,
            level_idc,
            num_temporal_layers: max_sub_layers_minus1 + 1,
            temporal_id_nested,
            chroma: Chroma {
                format_idc: chroma_format_idc as u8,
                bit_depth_luma: luma as u8 + 8,
                bit_depth_chroma: chroma as u8 + 8,
            },
            dimensions,
            frame_rate,
            max_reorder,
            log2_max_poc_lsb,
            separate_colour_planes,
        })
    }

    /// ISO/IEC 14496-15 Annex E.3 codec string for `hvc1` sample entries,
    /// `hvc1.<space><profile>.<compatibility>.<tier><level>.<constraints>`,
    /// e.g. `hvc1.1.6.L93.B0`.
    pub fn rfc6381(&self) -> String {
        let space = match self.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        // The compatibility flags in reverse bit order (flag 0 as the least
        // significant bit), hex without leading zeros.
        let compat = u32::from_be_bytes(self.compatibility_flags).reverse_bits();
        let tier = if self.tier_flag { 'H' } else { 'L' };
        let mut s = format!(
            "hvc1.{space}{}.{compat:x}.{tier}{}",
            self.profile_idc, self.level_idc
        );
        // Constraint bytes in hex, trailing zero bytes omitted.
        let used = self
            .constraint_flags
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.constraint_flags[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }
}

/// The fields of an H.265 PPS that shape the slice segment header before
/// `slice_pic_order_cnt_lsb` (§7.3.2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct H265Pps {
    pub output_flag_present: bool,
    /// `num_extra_slice_header_bits` (0..=7).
    pub num_extra_slice_header_bits: u32,
}

impl H265Pps {
    /// Parses a PPS NAL unit (2-byte header included). `None` when it is
    /// not a PPS or is truncated.
    pub fn parse(pps: &[u8]) -> Option<H265Pps> {
        if h265_nal_type(*pps.first()?) != H265_NAL_PPS || pps.len() < 2 {
            return None;
        }
        let mut r = rbsp_reader(pps, HEADER_LEN);
        r.read_ue("pps_pic_parameter_set_id").ok()?;
        r.read_ue("pps_seq_parameter_set_id").ok()?;
        r.skip(1, "dependent_slice_segments_enabled_flag").ok()?;
        let output_flag_present = r.read_bool("output_flag_present_flag").ok()?;
        let num_extra_slice_header_bits = r.read(3, "num_extra_slice_header_bits").ok()?;
        Some(H265Pps {
            output_flag_present,
            num_extra_slice_header_bits,
        })
    }
}

/// What orders an H.265 picture, from the first slice segment header of
/// its access unit (§7.3.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct H265SliceOrder {
    /// `nal_unit_type` of the slice segment (0..=31).
    pub nal_type: u8,
    /// `TemporalId` (`nuh_temporal_id_plus1 - 1`).
    pub temporal_id: u8,
    /// `slice_pic_order_cnt_lsb`; 0 for IDR pictures, which have none.
    pub poc_lsb: u32,
}

/// Reads the first slice segment header of an access unit (AVCC framing)
/// up to `slice_pic_order_cnt_lsb` (H.265 §7.3.6.1). `None` when there is
/// no VCL NAL unit (types 0..=31), its header does not parse, or it is not
/// the first slice segment of its picture.
pub(crate) fn h265_first_slice(
    access_unit: &[u8],
    sps: &H265Sps,
    pps: &H265Pps,
) -> Option<H265SliceOrder> {
    let (nal, h0, h1) = super::nal::avcc_nal_units(access_unit)
        .map_while(Result::ok)
        .filter_map(|n| match *n {
            [h0, h1, ..] => Some((n, h0, h1)),
            _ => None,
        })
        .find(|(_, h0, _)| h265_nal_type(*h0) < 32)?;
    let nal_type = h265_nal_type(h0);
    let temporal_id = (h1 & 0x07).checked_sub(1)?;
    let mut r = rbsp_reader(nal, HEADER_LEN);
    if !r.read_bool("first_slice_segment_in_pic_flag").ok()? {
        return None;
    }
    if h265_is_irap(nal_type) {
        r.skip(1, "no_output_of_prior_pics_flag").ok()?;
    }
    r.read_ue("slice_pic_parameter_set_id").ok()?;
    if pps.num_extra_slice_header_bits > 0 {
        r.skip(pps.num_extra_slice_header_bits, "slice_reserved_flag")
            .ok()?;
    }
    r.read_ue("slice_type").ok()?;
    if pps.output_flag_present {
        r.skip(1, "pic_output_flag").ok()?;
    }
    if sps.separate_colour_planes {
        r.skip(2, "colour_plane_id").ok()?;
    }
    // IDR_W_RADL (19) and IDR_N_LP (20) carry no order count: it is 0.
    let poc_lsb = if matches!(nal_type, 19 | 20) {
        0
    } else {
        r.read(sps.log2_max_poc_lsb, "slice_pic_order_cnt_lsb")
            .ok()?
    };
    Some(H265SliceOrder {
        nal_type,
        temporal_id,
        poc_lsb,
    })
}

/// `DeltaPocS0` and `DeltaPocS1` of one `st_ref_pic_set` (§7.4.8), which
/// the next set may be predicted from.
#[derive(Default)]
struct RefPicSet {
    negative: Vec<i64>,
    positive: Vec<i64>,
}

/// Reads the SPS from `log2_min_luma_coding_block_size_minus3` to the VUI
/// timing info (§7.3.2.2.1, §E.2.1); `None` when there is none.
fn vui_frame_rate<R: BitRead>(r: &mut R, log2_max_poc_lsb: u32) -> Result<Option<f64>, ParamError> {
    const WHAT: &str = "H.265 SPS";
    let e = ParamError::bits(WHAT);
    for f in [
        "log2_min_luma_coding_block_size_minus3",
        "log2_diff_max_min_luma_coding_block_size",
        "log2_min_luma_transform_block_size_minus2",
        "log2_diff_max_min_luma_transform_block_size",
        "max_transform_hierarchy_depth_inter",
        "max_transform_hierarchy_depth_intra",
    ] {
        r.read_ue(f).map_err(&e)?;
    }
    if r.read_bool("scaling_list_enabled_flag").map_err(&e)?
        && r.read_bool("sps_scaling_list_data_present_flag")
            .map_err(&e)?
    {
        // scaling_list_data(), §7.3.4.
        for size_id in 0..4u32 {
            let step = if size_id == 3 { 3 } else { 1 };
            for _ in (0..6).step_by(step) {
                if !r.read_bool("scaling_list_pred_mode_flag").map_err(&e)? {
                    r.read_ue("scaling_list_pred_matrix_id_delta").map_err(&e)?;
                    continue;
                }
                if size_id > 1 {
                    r.read_se("scaling_list_dc_coef_minus8").map_err(&e)?;
                }
                for _ in 0..(1u32 << (4 + (size_id << 1))).min(64) {
                    r.read_se("scaling_list_delta_coef").map_err(&e)?;
                }
            }
        }
    }
    r.skip(2, "amp_enabled_flag, sample_adaptive_offset_enabled_flag")
        .map_err(&e)?;
    if r.read_bool("pcm_enabled_flag").map_err(&e)? {
        r.skip(8, "pcm_sample_bit_depths").map_err(&e)?;
        r.read_ue("log2_min_pcm_luma_coding_block_size_minus3")
            .map_err(&e)?;
        r.read_ue("log2_diff_max_min_pcm_luma_coding_block_size")
            .map_err(&e)?;
        r.skip(1, "pcm_loop_filter_disabled_flag").map_err(&e)?;
    }
    let num_sets = r.read_ue("num_short_term_ref_pic_sets").map_err(&e)?;
    if num_sets > 64 {
        return Err(ParamError::new(
            WHAT,
            "num_short_term_ref_pic_sets above 64",
        ));
    }
    let mut sets: Vec<RefPicSet> = Vec::new();
    for _ in 0..num_sets {
        let set = st_ref_pic_set(r, sets.last())?;
        sets.push(set);
    }
    if r.read_bool("long_term_ref_pics_present_flag").map_err(&e)? {
        let n = r.read_ue("num_long_term_ref_pics_sps").map_err(&e)?;
        if n > 32 {
            return Err(ParamError::new(WHAT, "num_long_term_ref_pics_sps above 32"));
        }
        for _ in 0..n {
            r.skip(
                log2_max_poc_lsb + 1,
                "lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag",
            )
            .map_err(&e)?;
        }
    }
    r.skip(
        2,
        "sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag",
    )
    .map_err(&e)?;
    if !r.read_bool("vui_parameters_present_flag").map_err(&e)? {
        return Ok(None);
    }
    // vui_parameters(), §E.2.1, up to the timing info.
    if r.read_bool("aspect_ratio_info_present_flag").map_err(&e)? {
        let idc: u8 = r.read(8, "aspect_ratio_idc").map_err(&e)?;
        if idc == 255 {
            r.skip(32, "sar_width, sar_height").map_err(&e)?;
        }
    }
    if r.read_bool("overscan_info_present_flag").map_err(&e)? {
        r.skip(1, "overscan_appropriate_flag").map_err(&e)?;
    }
    if r.read_bool("video_signal_type_present_flag").map_err(&e)? {
        r.skip(4, "video_format, video_full_range_flag")
            .map_err(&e)?;
        if r.read_bool("colour_description_present_flag").map_err(&e)? {
            r.skip(24, "colour_description").map_err(&e)?;
        }
    }
    if r.read_bool("chroma_loc_info_present_flag").map_err(&e)? {
        r.read_ue("chroma_sample_loc_type_top_field").map_err(&e)?;
        r.read_ue("chroma_sample_loc_type_bottom_field")
            .map_err(&e)?;
    }
    r.skip(3, "neutral_chroma, field_seq, frame_field_info_present")
        .map_err(&e)?;
    if r.read_bool("default_display_window_flag").map_err(&e)? {
        for _ in 0..4 {
            r.read_ue("def_disp_win_offset").map_err(&e)?;
        }
    }
    if !r.read_bool("vui_timing_info_present_flag").map_err(&e)? {
        return Ok(None);
    }
    let num_units_in_tick: u32 = r.read(32, "vui_num_units_in_tick").map_err(&e)?;
    let time_scale: u32 = r.read(32, "vui_time_scale").map_err(&e)?;
    Ok((num_units_in_tick > 0 && time_scale > 0)
        .then(|| f64::from(time_scale) / f64::from(num_units_in_tick)))
}

/// One `st_ref_pic_set(stRpsIdx)` of the SPS (§7.3.7), with the derivation
/// of its delta POCs (§7.4.8, equations 7-61 and 7-62) that a following
/// inter-predicted set needs. In the SPS the reference set is always the
/// previous one (`delta_idx_minus1` is absent).
fn st_ref_pic_set<R: BitRead>(
    r: &mut R,
    prev: Option<&RefPicSet>,
) -> Result<RefPicSet, ParamError> {
    const WHAT: &str = "H.265 SPS st_ref_pic_set";
    let e = ParamError::bits(WHAT);
    let out_of_range = |f: &str| ParamError::new(WHAT, format!("{f} out of range"));
    let predicted = match prev {
        Some(p) => r
            .read_bool("inter_ref_pic_set_prediction_flag")
            .map_err(&e)?
            .then_some(p),
        None => None,
    };
    let Some(reference) = predicted else {
        let negatives = r.read_ue("num_negative_pics").map_err(&e)?;
        let positives = r.read_ue("num_positive_pics").map_err(&e)?;
        if negatives > 16 || positives > 16 {
            return Err(out_of_range("num_negative_pics/num_positive_pics"));
        }
        let mut set = RefPicSet::default();
        for (count, list, sign) in [
            (negatives, &mut set.negative, -1),
            (positives, &mut set.positive, 1),
        ] {
            let mut poc = 0i64;
            for _ in 0..count {
                let d = r.read_ue("delta_poc_minus1").map_err(&e)?;
                if d > 0x7fff {
                    return Err(out_of_range("delta_poc_s0/s1_minus1"));
                }
                poc += sign * (i64::from(d) + 1);
                r.skip(1, "used_by_curr_pic_flag").map_err(&e)?;
                list.push(poc);
            }
        }
        return Ok(set);
    };
    let negative_sign = r.read_bool("delta_rps_sign").map_err(&e)?;
    let abs = r.read_ue("abs_delta_rps_minus1").map_err(&e)?;
    if abs > 0x7fff {
        return Err(out_of_range("abs_delta_rps_minus1"));
    }
    let delta_rps = if negative_sign { -1 } else { 1 } * (i64::from(abs) + 1);
    let (s0, s1) = (&reference.negative, &reference.positive);
    // use_delta_flag per reference entry (S0 then S1, then the reference
    // picture itself); inferred 1 when used_by_curr_pic_flag is 1.
    let mut use_delta = Vec::with_capacity(s0.len() + s1.len() + 1);
    for _ in 0..=s0.len() + s1.len() {
        let used = r.read_bool("used_by_curr_pic_flag").map_err(&e)?;
        use_delta.push(used || r.read_bool("use_delta_flag").map_err(&e)?);
    }
    let uses = |j: usize| use_delta.get(j).copied().unwrap_or(false);
    let own = uses(s0.len() + s1.len());
    let mut set = RefPicSet::default();
    for (j, d) in s1.iter().enumerate().rev() {
        if d + delta_rps < 0 && uses(s0.len() + j) {
            set.negative.push(d + delta_rps);
        }
    }
    if delta_rps < 0 && own {
        set.negative.push(delta_rps);
    }
    for (j, d) in s0.iter().enumerate() {
        if d + delta_rps < 0 && uses(j) {
            set.negative.push(d + delta_rps);
        }
    }
    for (j, d) in s0.iter().enumerate().rev() {
        if d + delta_rps > 0 && uses(j) {
            set.positive.push(d + delta_rps);
        }
    }
    if delta_rps > 0 && own {
        set.positive.push(delta_rps);
    }
    for (j, d) in s1.iter().enumerate() {
        if d + delta_rps > 0 && uses(s0.len() + j) {
            set.positive.push(d + delta_rps);
        }
    }
    if set.negative.len() > 16 || set.positive.len() > 16 {
        return Err(out_of_range("predicted reference picture set"));
    }
    Ok(set)
}

/// Checks that `nal` can be sent as is in an RFC 7798 single NAL
/// unit packet: a complete 2-byte header, `forbidden_zero_bit` clear,
/// `nuh_temporal_id_plus1` non-zero (H.265 §7.4.2.2), and not one of the
/// types RFC 7798 §4.4 uses for AP (48), FU (49) and PACI (50) packets.
pub(crate) fn check_nal(nal: &[u8]) -> Result<(), PayloadError> {
    let [h0, h1, ..] = *nal else {
        return Err(PayloadError::Malformed(
            "H.265 NAL unit shorter than its 2-byte header".to_owned(),
        ));
    };
    if h0 & 0x80 != 0 {
        return Err(PayloadError::Malformed(format!(
            "H.265 NAL header {h0:02x}{h1:02x} has forbidden_zero_bit set"
        )));
    }
    if h1 & 0x07 == 0 {
        return Err(PayloadError::Malformed(format!(
            "H.265 NAL header {h0:02x}{h1:02x} has nuh_temporal_id_plus1 = 0"
        )));
    }
    match h265_nal_type(h0) {
        48..=50 => Err(PayloadError::Malformed(format!(
            "H.265 NAL unit type {} is reserved for RTP packetization",
            h265_nal_type(h0)
        ))),
        _ => Ok(()),
    }
}

/// Payload header and FU header of one fragment of the NAL unit with header
/// `[h0, h1]` (RFC 7798 §4.4.3): F, LayerId and TID from the NAL header with
/// type 49; then S, E and the original type.
#[inline]
pub(crate) fn fu_headers(h0: u8, h1: u8, start: bool, end: bool) -> [u8; 3] {
    [
        (h0 & 0x81) | (FU << 1),
        h1,
        (u8::from(start) << 7) | (u8::from(end) << 6) | h265_nal_type(h0),
    ]
}
