//! RTP packetization of MPEG-4 AAC, RFC 3640 `mpeg4-generic` in mode
//! AAC-hbr (§3.3.6): `sizelength=13; indexlength=3; indexdeltalength=3`,
//! one access unit per packet, large access units fragmented (§3.2.3).

use bytes::Bytes;

use super::{PayloadError, RtpParams};

/// Largest access unit the 13-bit AU-size field can describe (RFC 3640 §3.3.6).
pub const AAC_MAX_AU_SIZE: usize = (1 << 13) - 1;

/// AU-headers-length (2 bytes, value 16 = one 16-bit AU-header, §3.2.1)
/// plus the AU-header itself (§3.2.1.1).
const HEADER_SECTION_LEN: usize = 4;

/// Packetizes one raw AAC access unit (no ADTS header). Every packet carries
/// the AU header section `00 10` + `size << 3 | index 0`; an access unit too
/// large for one packet is split across packets that repeat the same AU
/// header with the full AU size, the marker bit set only on the last
/// (RFC 3640 §3.2.3, §3.3.6); otherwise the single packet has M=1.
///
/// Errors: `Malformed` for an empty access unit, `Unsupported` above
/// [`AAC_MAX_AU_SIZE`] bytes. Returns the next sequence number.
pub(crate) fn payload(
    data: &[u8],
    timestamp: u32,
    rtp: RtpParams,
    out: &mut Vec<Bytes>,
) -> Result<u16, PayloadError> {
    if data.is_empty() {
        return Err(PayloadError::Malformed("empty AAC access unit".to_owned()));
    }
    let size = u16::try_from(data.len())
        .ok()
        .filter(|&s| usize::from(s) <= AAC_MAX_AU_SIZE)
        .ok_or_else(|| {
            PayloadError::Unsupported(format!(
                "AAC access unit of {} bytes exceeds the {AAC_MAX_AU_SIZE} bytes \
                 sizelength=13 can express",
                data.len()
            ))
        })?;
    let au_header = (size << 3).to_be_bytes();
    let per = rtp.max_payload - HEADER_SECTION_LEN;
    let n = data.len().div_ceil(per);
    let mut sink = rtp.sink(
        out,
        n * (super::RTP_HEADER_LEN + HEADER_SECTION_LEN) + data.len(),
        n,
    );
    for (i, chunk) in data.chunks(per).enumerate() {
        sink.start(i + 1 == n, timestamp);
        sink.put(&[0x00, 0x10, au_header[0], au_header[1]]);
        sink.put(chunk);
        sink.finish();
    }
    Ok(sink.done())
}
