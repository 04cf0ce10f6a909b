//! Opus (RFC 6716): RTP packetization as RFC 7587, the packet is the
//! payload.

use bytes::Bytes;

use super::{PayloadError, RtpParams, RTP_HEADER_LEN};

/// RFC 6381 codec string of Opus in ISOBMFF (opus-codec.org
/// `opus_in_isobmff.html` §4.3; what HLS `CODECS=` carries).
pub const OPUS_RFC6381: &str = "opus";

/// Sends one Opus packet (RFC 6716 §3) as one RTP packet, marker bit 0
/// (RFC 7587 §4.1). Errors: `Malformed` if empty (an Opus packet has at
/// least its TOC byte), `Unsupported` if larger than the MTU allows (Opus has
/// no RTP fragmentation). Returns the next sequence number.
pub(crate) fn payload_opus(
    data: &[u8],
    timestamp: u32,
    rtp: RtpParams,
    out: &mut Vec<Bytes>,
) -> Result<u16, PayloadError> {
    if data.is_empty() {
        return Err(PayloadError::Malformed("empty Opus packet".to_owned()));
    }
    if data.len() > rtp.max_payload {
        return Err(PayloadError::Unsupported(format!(
            "Opus packet of {} bytes exceeds the {}-byte RTP payload the MTU allows",
            data.len(),
            rtp.max_payload
        )));
    }
    let mut sink = rtp.sink(out, RTP_HEADER_LEN + data.len(), 1);
    sink.start(false, timestamp);
    sink.put(data);
    sink.finish();
    Ok(sink.done())
}
