//! H.265 NAL unit helpers (ITU-T H.265 §7.3.1.2, §7.4.2.2) and the RTP
//! header bytes of RFC 7798 (single NAL unit packets and FUs, no DONL).

use super::PayloadError;

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

/// The `nal_unit_type` (0..=63) of an H.265 NAL unit given the first byte
/// of its 2-byte header (H.265 §7.3.1.2).
#[inline]
pub fn h265_nal_type(b: u8) -> u8 {
    (b >> 1) & 0x3f
}

/// Whether an H.265 `nal_unit_type` is an IRAP picture's VCL NAL unit:
/// BLA_W_LP (16) ..= RSV_IRAP_VCL23 (23), H.265 §7.4.2.2 Table 7-1.
#[inline]
pub fn h265_is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
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
