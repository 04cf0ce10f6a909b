//! H.264 NAL unit helpers (ITU-T H.264 §7.3.1, §7.4.1) and the RTP
//! header bytes of RFC 6184 packetization-mode=1.

use super::PayloadError;

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

/// `profile_idc`, `constraint_set` flags and `level_idc`: the 3 bytes after
/// the NAL header of an SPS, as used by the RFC 6184 §8.1 `profile-level-id`
/// SDP parameter and the RFC 6381 `avc1.PPCCLL` codec string. `None` if `sps`
/// is shorter than 4 bytes or not an SPS.
pub fn h264_profile_level_id(sps: &[u8]) -> Option<[u8; 3]> {
    match sps {
        [hdr, p, c, l, ..] if h264_nal_type(*hdr) == H264_NAL_SPS => Some([*p, *c, *l]),
        _ => None,
    }
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
