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

/// One A-law sample (ITU-T G.711 Table 1a) as 16-bit linear PCM.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i16::from(a & 0x0f);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    // The sign bit set means positive in A-law.
    if a & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// One µ-law sample (ITU-T G.711 Table 2a) as 16-bit linear PCM.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i16::from(u & 0x0f);
    // Bias 0x84 (132) as in the standard's decoder, removed after the shift.
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn g711_decodes_to_the_standard_values() {
        // ITU-T G.711 end points and zero: A-law 0xd5 = +8, 0x55 = -8,
        // 0xaa = +32256; µ-law 0xff = 0, 0x7f = 0, 0x80 = +32124, 0x00 = -32124.
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        // Monotonic over each half of the code space.
        let mut prev = i16::MIN;
        for u in (0x80..=0xffu8).rev() {
            let v = ulaw_to_linear(u);
            assert!(v >= prev || u == 0xff, "{u:#x}");
            prev = v;
        }
    }
}
