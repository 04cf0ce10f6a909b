//! G.711 A-law and µ-law (ITU-T G.711): RTP packetization as RFC 3551
//! §4.5.14 PCMA/PCMU, the samples are the payload.

use bytes::Bytes;

use super::{PayloadError, RtpParams, RTP_HEADER_LEN};

/// Packetizes G.711 samples (one byte per sample per channel, channels
/// interleaved): one packet if they fit, else split on sample-frame
/// boundaries, each packet's timestamp advanced by the sample frames before
/// it (`bytes / channels`, RFC 3551 §4.1). Marker bit 0.
///
/// Errors: `Malformed` if `data` is empty or not a whole number of sample
/// frames; `Unsupported` if one sample frame does not fit the MTU.
/// Returns the next sequence number.
pub(crate) fn payload_g711(
    data: &[u8],
    timestamp: u32,
    channels: usize,
    rtp: RtpParams,
    out: &mut Vec<Bytes>,
) -> Result<u16, PayloadError> {
    if data.is_empty() {
        return Err(PayloadError::Malformed("empty G.711 frame".to_owned()));
    }
    if !data.len().is_multiple_of(channels) {
        return Err(PayloadError::Malformed(format!(
            "G.711 frame of {} bytes is not a whole number of {channels}-channel samples",
            data.len()
        )));
    }
    let per = rtp.max_payload / channels * channels;
    if per == 0 {
        return Err(PayloadError::Unsupported(format!(
            "one {channels}-channel G.711 sample does not fit the MTU"
        )));
    }
    let n = data.len().div_ceil(per);
    let mut sink = rtp.sink(out, n * RTP_HEADER_LEN + data.len(), n);
    for (i, chunk) in data.chunks(per).enumerate() {
        // Wrapping: RTP timestamps are modulo 2^32 (RFC 3550 §5.1).
        let samples = (i * per / channels) as u32;
        sink.start(false, timestamp.wrapping_add(samples));
        sink.put(chunk);
        sink.finish();
    }
    Ok(sink.done())
}
