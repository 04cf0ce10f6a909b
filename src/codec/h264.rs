//! H.264 (ITU-T H.264): NAL unit types, random access, the SPS summary
//! (profile, level, chroma, dimensions, frame rate, picture reordering),
//! the RFC 6381 and RFC 6184 profile strings, the `avcC` chroma fields,
//! slice types, and the RTP header bytes of RFC 6184 packetization-mode=1.

use std::num::NonZeroUsize;

use h264_reader::nal::sps::{ChromaFormat, SeqParameterSet};
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
    /// `max_num_reorder_frames` (§E.2.1): how many pictures may precede
    /// one in decoding order and follow it in output order; above 0 means
    /// B-frames (or other reordering). `None` when the SPS does not say.
    pub max_reorder: Option<u32>,
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

/// `max_num_reorder_frames` from the VUI's bitstream restriction; without
/// one, 0 for streams that cannot have B slices (Baseline, or
/// `constraint_set0_flag`: Baseline-conformant, H.264 §A.2.1; or the intra
/// profiles, `constraint_set3_flag` with the High family, §A.2.8-11),
/// otherwise unknown.
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
    (baseline || intra).then_some(0)
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
