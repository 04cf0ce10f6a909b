//! H.264 (ITU-T H.264): NAL unit types, random access, the SPS summary
//! (profile, level, chroma, dimensions, frame rate, picture reordering),
//! the RFC 6381 and RFC 6184 profile strings, the `avcC` chroma fields,
//! slice types, and the RTP header bytes of RFC 6184 packetization-mode=1.

use std::num::NonZeroUsize;

use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::{
    DecRefPicMarking, Field, FieldPic, MemoryManagementControlOperation, PicOrderCountLsb,
    SliceHeader,
};
use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags, PicOrderCntType, SeqParameterSet};
use h264_reader::nal::NalHeader;
use h264_reader::rbsp::BitRead;

use super::nal::{avcc_nal_units, rbsp_reader, ParamError};
use super::track::Chroma;
use super::PayloadError;

/// NAL unit type 1: coded slice of a non-IDR picture.
pub const H264_NAL_SLICE: u8 = 1;
/// NAL unit type 5: coded slice of an IDR picture.
pub const H264_NAL_IDR: u8 = 5;
/// NAL unit type 7: sequence parameter set.
pub const H264_NAL_SPS: u8 = 7;
/// NAL unit type 8: picture parameter set.
pub const H264_NAL_PPS: u8 = 8;
/// NAL unit type 9: access unit delimiter.
pub const H264_NAL_AUD: u8 = 9;

/// RFC 6184 §5.8 FU-A payload type.
const FU_A: u8 = 28;

/// The `nal_unit_type` (0..=31) of an H.264 NAL unit given its first
/// (header) byte (H.264 §7.3.1).
#[inline]
pub fn h264_nal_type(b: u8) -> u8 {
    b & 0x1f
}

/// Whether an H.264 `nal_unit_type` starts a random access point: only an
/// IDR picture's slices (type 5) do (H.264 §3.69; recovery-point SEI
/// streams are not treated as random access).
#[inline]
pub fn h264_is_idr(nal_type: u8) -> bool {
    nal_type == H264_NAL_IDR
}

/// What an H.264 SPS says, read once when a track is made (H.264
/// §7.3.2.1.1, VUI §E.1.1).
///
/// The three leading bytes are always there (they are all that RFC 6184's
/// `profile-level-id` and RFC 6381's `avc1.PPCCLL` need); the rest is
/// `None` when the SPS does not parse completely.
#[derive(Debug, Clone, PartialEq)]
pub struct H264Sps {
    pub profile_idc: u8,
    /// `constraint_set0_flag` in the most significant bit ..
    /// `reserved_zero_2bits` in the least.
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Chroma format and bit depths (4:2:0 8-bit for profiles whose SPS
    /// does not carry them).
    pub chroma: Option<Chroma>,
    /// Display width and height in pixels, after frame cropping.
    pub dimensions: Option<(u32, u32)>,
    /// Frames per second from the VUI timing info: `time_scale / (2 *
    /// num_units_in_tick)` (§E.2.1 with `field_seq`-free frame timing).
    pub frame_rate: Option<f64>,
    /// `max_num_reorder_frames` (§E.2.1): how many frames may precede
    /// one in decoding order and follow it in output order; above 0 means
    /// B-frames (or other reordering). When the VUI does not say, what
    /// the SPS implies (see [`max_reorder`]); `None` only when the SPS does
    /// not parse past its first 3 bytes.
    pub max_reorder: Option<u32>,
    /// `max_reorder` is the level's bound, not a value the VUI declares:
    /// the stream may or may not reorder.
    pub max_reorder_inferred: bool,
}

impl H264Sps {
    /// Parses an SPS NAL unit (header byte included, no start code or
    /// length prefix).
    ///
    /// Errors: shorter than 4 bytes or not an SPS (`nal_unit_type` ≠ 7).
    /// A body that does not parse past the first 3 bytes gives `None`
    /// fields, not an error.
    pub fn parse(sps: &[u8]) -> Result<H264Sps, ParamError> {
        const WHAT: &str = "H.264 SPS";
        let [hdr, profile_idc, constraint_flags, level_idc, ..] = *sps else {
            return Err(ParamError::new(WHAT, "shorter than 4 bytes"));
        };
        if h264_nal_type(hdr) != H264_NAL_SPS {
            return Err(ParamError::new(
                WHAT,
                format!("NAL unit type {} is not 7", h264_nal_type(hdr)),
            ));
        }
        let mut out = H264Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma: None,
            dimensions: None,
            frame_rate: None,
            max_reorder: None,
            max_reorder_inferred: false,
        };
        let Ok(full) = SeqParameterSet::from_bits(rbsp_reader(sps, NonZeroUsize::MIN)) else {
            return Ok(out);
        };
        let ci = &full.chroma_info;
        out.chroma = match ci.chroma_format {
            ChromaFormat::Monochrome => Some(0),
            ChromaFormat::YUV420 => Some(1),
            ChromaFormat::YUV422 => Some(2),
            ChromaFormat::YUV444 => Some(3),
            ChromaFormat::Invalid(_) => None,
        }
        .map(|format_idc| Chroma {
            format_idc,
            bit_depth_luma: ci.bit_depth_luma_minus8 + 8,
            bit_depth_chroma: ci.bit_depth_chroma_minus8 + 8,
        });
        out.dimensions = full.pixel_dimensions().ok();
        out.frame_rate = full.fps().filter(|f| f.is_finite() && *f > 0.0);
        out.max_reorder = max_reorder(&full);
        out.max_reorder_inferred = full
            .vui_parameters
            .as_ref()
            .and_then(|v| v.bitstream_restrictions.as_ref())
            .is_none()
            && out.max_reorder.is_some_and(|r| r > 0);
        Ok(out)
    }

    /// The RFC 6184 §8.1 `profile-level-id` bytes: `profile_idc`,
    /// constraint flags, `level_idc`.
    pub fn profile_level_id(&self) -> [u8; 3] {
        [self.profile_idc, self.constraint_flags, self.level_idc]
    }

    /// RFC 6381 §3.3 codec string `avc1.PPCCLL` (lowercase hex), e.g.
    /// `avc1.64001e`.
    pub fn rfc6381(&self) -> String {
        let [p, c, l] = self.profile_level_id();
        format!("avc1.{p:02x}{c:02x}{l:02x}")
    }

    /// The chroma format and bit depths that an `avcC` record carries after
    /// its parameter sets, for the profiles that have them (100, 110, 122,
    /// 144: ISO/IEC 14496-15 §5.3.3.1.2); `None` for other profiles or when
    /// unknown.
    pub fn avcc_ext(&self) -> Option<Chroma> {
        self.chroma
            .filter(|_| matches!(self.profile_idc, 100 | 110 | 122 | 144))
    }
}

/// `max_num_reorder_frames` from the VUI's bitstream restriction
/// (§E.2.1). Without one: 0 when output order is decoding order
/// (`pic_order_cnt_type` 2, §8.2.1.3), for streams that cannot have B
/// slices (Baseline, or `constraint_set0_flag`: Baseline-conformant,
/// §A.2.1) and for the intra profiles (`constraint_set3_flag` with the
/// High family, §A.2.8-11); otherwise the inferred value, `MaxDpbFrames`
/// of the level (§E.2.1: `max_num_reorder_frames` absent is inferred as
/// `max_dec_frame_buffering`, itself `MaxDpbFrames`, §A.3.1 item h,
/// Table A-1).
fn max_reorder(sps: &SeqParameterSet) -> Option<u32> {
    if let Some(b) = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.bitstream_restrictions.as_ref())
    {
        return Some(b.max_num_reorder_frames);
    }
    let profile_idc = u8::from(sps.profile_idc);
    let flags = u8::from(sps.constraint_flags);
    let baseline = profile_idc == 66 || flags & 0x80 != 0;
    let intra = matches!(profile_idc, 44 | 100 | 110 | 122 | 244) && flags & 0x10 != 0;
    let poc_type_2 = matches!(sps.pic_order_cnt, PicOrderCntType::TypeTwo);
    if baseline || intra || poc_type_2 {
        return Some(0);
    }
    max_dpb_frames(sps)
}

/// `MaxDpbFrames = Min(MaxDpbMbs / (PicWidthInMbs * FrameHeightInMbs),
/// 16)` (H.264 §A.3.1 item h, `MaxDpbMbs` from Table A-1); `None` for an
/// unknown level or an empty picture.
fn max_dpb_frames(sps: &SeqParameterSet) -> Option<u32> {
    let flags = u8::from(sps.constraint_flags);
    let max_dpb_mbs: u32 = match (sps.level_idc, flags & 0x10 != 0) {
        // Level 1b: level_idc 11 with constraint_set3_flag, or 9.
        (9, _) | (10, _) | (11, true) => 396,
        (11, false) => 900,
        (12 | 13 | 20, _) => 2_376,
        (21, _) => 4_752,
        (22 | 30, _) => 8_100,
        (31, _) => 18_000,
        (32, _) => 20_480,
        (40 | 41, _) => 32_768,
        (42, _) => 34_816,
        (50, _) => 110_400,
        (51 | 52, _) => 184_320,
        (60..=62, _) => 696_320,
        _ => return None,
    };
    let field_factor = match sps.frame_mbs_flags {
        FrameMbsFlags::Frames => 1,
        FrameMbsFlags::Fields { .. } => 2,
    };
    let mbs = sps
        .pic_width_in_mbs_minus1
        .checked_add(1)?
        .checked_mul(sps.pic_height_in_map_units_minus1.checked_add(1)?)?
        .checked_mul(field_factor)?;
    max_dpb_mbs.checked_div(mbs).map(|f| f.min(16))
}

/// How a picture's order count is coded (H.264 §7.4.2.1.1
/// `pic_order_cnt_type`, with the SPS fields each type uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum H264PocType {
    /// Type 0: `pic_order_cnt_lsb` in every slice header, in
    /// `log2_max_lsb` bits (§8.2.1.1).
    Lsb { log2_max_lsb: u32 },
    /// Type 1: expected from `frame_num` and the SPS cycle of offsets,
    /// corrected by `delta_pic_order_cnt` (§8.2.1.2).
    FrameNum {
        offset_for_non_ref_pic: i32,
        offset_for_top_to_bottom_field: i32,
        offsets_for_ref_frame: Vec<i32>,
    },
    /// Type 2: output order is decoding order (§8.2.1.3).
    DecodeOrder,
}

/// What the decoding order derivation needs from the first slice header of
/// an H.264 picture (§7.3.3, §7.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct H264SliceOrder {
    /// `nal_ref_idc` of the slice's NAL unit: 0 means a non-reference
    /// picture.
    pub nal_ref_idc: u8,
    /// An IDR picture (NAL unit type 5).
    pub idr: bool,
    /// `frame_num`, `log2_max_frame_num` bits.
    pub frame_num: u32,
    /// `Some(bottom)` for a field picture (`field_pic_flag`), `None` for a
    /// frame.
    pub field: Option<bool>,
    /// Type 0: `pic_order_cnt_lsb`.
    pub poc_lsb: u32,
    /// Type 0: `delta_pic_order_cnt_bottom`; type 1: `delta_pic_order_cnt[0..2]`.
    pub delta: [i32; 2],
    /// The picture carries `memory_management_control_operation` 5, which
    /// restarts the order count after it (§8.2.1).
    pub mmco5: bool,
}

/// Reads H.264 slice headers up to the fields that order pictures, with
/// the parameter sets of one track (h264-reader's slice header parser).
pub(crate) struct H264SliceReader {
    ctx: h264_reader::Context,
    poc_type: H264PocType,
    log2_max_frame_num: u32,
}

impl H264SliceReader {
    /// From the track's SPS and PPS NAL units (header byte included).
    /// `None` when either does not parse.
    pub fn new(sps: &[u8], pps: &[u8]) -> Option<Self> {
        let sps = SeqParameterSet::from_bits(rbsp_reader(sps, NonZeroUsize::MIN)).ok()?;
        let poc_type = match &sps.pic_order_cnt {
            PicOrderCntType::TypeZero {
                log2_max_pic_order_cnt_lsb_minus4,
            } => H264PocType::Lsb {
                log2_max_lsb: u32::from(*log2_max_pic_order_cnt_lsb_minus4) + 4,
            },
            PicOrderCntType::TypeOne {
                offset_for_non_ref_pic,
                offset_for_top_to_bottom_field,
                offsets_for_ref_frame,
                ..
            } => H264PocType::FrameNum {
                offset_for_non_ref_pic: *offset_for_non_ref_pic,
                offset_for_top_to_bottom_field: *offset_for_top_to_bottom_field,
                offsets_for_ref_frame: offsets_for_ref_frame.clone(),
            },
            PicOrderCntType::TypeTwo => H264PocType::DecodeOrder,
        };
        let log2_max_frame_num = u32::from(sps.log2_max_frame_num());
        let mut ctx = h264_reader::Context::new();
        ctx.put_seq_param_set(sps);
        let pps = PicParameterSet::from_bits(&ctx, rbsp_reader(pps, NonZeroUsize::MIN)).ok()?;
        ctx.put_pic_param_set(pps);
        Some(H264SliceReader {
            ctx,
            poc_type,
            log2_max_frame_num,
        })
    }

    pub fn poc_type(&self) -> &H264PocType {
        &self.poc_type
    }

    /// `log2_max_frame_num_minus4 + 4` (§7.4.2.1.1).
    pub fn log2_max_frame_num(&self) -> u32 {
        self.log2_max_frame_num
    }

    /// The order fields of the first coded slice (NAL unit type 1 or 5) of
    /// an access unit (AVCC framing); `None` when there is none or its
    /// header does not parse (e.g. it names another parameter set).
    pub fn first_slice(&self, access_unit: &[u8]) -> Option<H264SliceOrder> {
        let (nal, hdr) = avcc_nal_units(access_unit)
            .map_while(Result::ok)
            .filter_map(|n| Some((n, *n.first()?)))
            .find(|(_, hdr)| matches!(h264_nal_type(*hdr), H264_NAL_SLICE | H264_NAL_IDR))?;
        let header = NalHeader::new(hdr).ok()?;
        let mut r = rbsp_reader(nal, NonZeroUsize::MIN);
        let (h, _, _) = SliceHeader::from_bits(&self.ctx, &mut r, header).ok()?;
        let (poc_lsb, delta) = match h.pic_order_cnt_lsb {
            Some(PicOrderCountLsb::Frame(lsb)) => (lsb, [0, 0]),
            Some(PicOrderCountLsb::FieldsAbsolute {
                pic_order_cnt_lsb,
                delta_pic_order_cnt_bottom,
            }) => (pic_order_cnt_lsb, [delta_pic_order_cnt_bottom, 0]),
            Some(PicOrderCountLsb::FieldsDelta(d)) => (0, d),
            None => (0, [0, 0]),
        };
        let mmco5 = matches!(
            &h.dec_ref_pic_marking,
            Some(DecRefPicMarking::Adaptive(ops))
                if ops.iter().any(|o| matches!(o, MemoryManagementControlOperation::AllRefPicturesUnused))
        );
        Some(H264SliceOrder {
            nal_ref_idc: header.nal_ref_idc(),
            idr: h264_is_idr(h264_nal_type(hdr)),
            frame_num: u32::from(h.frame_num),
            field: match h.field_pic {
                FieldPic::Frame => None,
                FieldPic::Field(f) => Some(f == Field::Bottom),
            },
            poc_lsb,
            delta,
            mmco5,
        })
    }
}

/// Whether an H.264 access unit (AVCC framing) contains a B slice:
/// `slice_type` 1 or 6 (H.264 §7.4.3 Table 7-6) in the first slice header
/// of its first coded slice NAL unit (types 1 and 5). `None` if it has no
/// slice header that parses.
pub fn h264_has_b_slice(access_unit: &[u8]) -> Option<bool> {
    let nal = avcc_nal_units(access_unit)
        .map_while(Result::ok)
        .find(|n| matches!(h264_nal_type(n[0]), H264_NAL_SLICE | H264_NAL_IDR))?;
    let mut r = rbsp_reader(nal, NonZeroUsize::MIN);
    let _first_mb_in_slice = r.read_ue("first_mb_in_slice").ok()?;
    let slice_type = r.read_ue("slice_type").ok()?;
    Some(slice_type % 5 == 1)
}

/// Checks that `nal` can be sent as is in an RFC 6184 single NAL
/// unit packet: non-empty, `forbidden_zero_bit` clear (H.264 §7.4.1) and a type that a
/// receiver will not mistake for an RTP aggregation or fragmentation packet
/// (0 and 24..=31 are reserved/unspecified, RFC 6184 §5.2 Table 1).
pub(crate) fn check_nal(nal: &[u8]) -> Result<(), PayloadError> {
    let Some(&hdr) = nal.first() else {
        return Err(PayloadError::Malformed("empty H.264 NAL unit".to_owned()));
    };
    if hdr & 0x80 != 0 {
        return Err(PayloadError::Malformed(format!(
            "H.264 NAL header {hdr:02x} has forbidden_zero_bit set"
        )));
    }
    match h264_nal_type(hdr) {
        0 | 24..=31 => Err(PayloadError::Malformed(format!(
            "H.264 NAL unit type {} is not valid in a bitstream",
            h264_nal_type(hdr)
        ))),
        _ => Ok(()),
    }
}

/// FU indicator and FU header of one FU-A fragment of the NAL unit with
/// header byte `hdr` (RFC 6184 §5.8): F and NRI from `hdr`, type 28; then
/// S, E, R=0 and the original type.
#[inline]
pub(crate) fn fu_a_headers(hdr: u8, start: bool, end: bool) -> [u8; 2] {
    [
        (hdr & 0xe0) | FU_A,
        (u8::from(start) << 7) | (u8::from(end) << 6) | h264_nal_type(hdr),
    ]
}
