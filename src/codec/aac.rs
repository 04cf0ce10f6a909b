//! MPEG-4 AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), its
//! RFC 6381 codec string, and RTP packetization as RFC 3640
//! `mpeg4-generic` in mode AAC-hbr (§3.3.6): `sizelength=13;
//! indexlength=3; indexdeltalength=3`, one access unit per packet, large
//! access units fragmented (§3.2.3).

use bytes::Bytes;
use h264_reader::rbsp::BitRead;

use super::nal::{plain_reader, ParamError};
use super::{PayloadError, RtpParams};

/// The leading fields of an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3
/// §1.6.2.1), read once when a track is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// `audioObjectType` with the escape value 31 resolved (`32 +
    /// audioObjectTypeExt`), e.g. 2 for AAC-LC, 5 for SBR, 42 for USAC.
    pub object_type: u8,
    /// Sampling frequency in Hz, from the index table (Table 1.18) or the
    /// explicit 24-bit value; `None` for a reserved index.
    pub sample_rate: Option<u32>,
    /// `channelConfiguration` (0: defined in the program config element).
    pub channel_configuration: u8,
}

/// ISO/IEC 14496-3 Table 1.18, `samplingFrequencyIndex` 0..=12.
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacConfig {
    /// Parses the start of an AudioSpecificConfig (the `config=` of RFC
    /// 3640 SDP, the `esds` DecoderSpecificInfo).
    ///
    /// Errors: truncated, or object type 0 (null).
    pub fn parse(config: &[u8]) -> Result<AacConfig, ParamError> {
        const WHAT: &str = "AAC AudioSpecificConfig";
        let e = ParamError::bits(WHAT);
        let mut r = plain_reader(config);
        let object_type: u8 = match r.read::<u8>(5, "audioObjectType").map_err(&e)? {
            31 => 32 + r.read::<u8>(6, "audioObjectTypeExt").map_err(&e)?,
            0 => return Err(ParamError::new(WHAT, "audio object type 0 (null)")),
            t => t,
        };
        let index: u8 = r.read(4, "samplingFrequencyIndex").map_err(&e)?;
        let sample_rate = if index == 0xf {
            Some(r.read::<u32>(24, "samplingFrequency").map_err(&e)?)
        } else {
            SAMPLE_RATES.get(usize::from(index)).copied()
        };
        let channel_configuration: u8 = r.read(4, "channelConfiguration").map_err(&e)?;
        Ok(AacConfig {
            object_type,
            sample_rate,
            channel_configuration,
        })
    }

    /// RFC 6381 §3.3 codec string `mp4a.40.<audio object type>`.
    pub fn rfc6381(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

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
