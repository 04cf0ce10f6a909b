//! [`Payloader`]: one track's frames to RTP packets.

use bytes::Bytes;

use super::h26x::{Syntax, VideoPayloader};
use super::rtp::PacketSink;
use super::{aac, g711, jpeg, opus, Codec, PayloadError, RTP_HEADER_LEN};

/// Smallest accepted `mtu`: header plus room for a few bytes of every
/// payload format's own headers.
pub const MIN_MTU: usize = 32;
/// Largest accepted `mtu`: RTP over RTSP interleaved frames carry a 16-bit
/// length (RFC 2326 §10.12).
pub const MAX_MTU: usize = 65535;
/// Default `mtu`: fits in a 1500-byte Ethernet frame with IP/UDP headers
/// and some tunnelling overhead.
pub const DEFAULT_MTU: usize = 1400;

/// What the codec-specific packetizers need of the RTP session: header fields
/// and the payload size limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RtpParams {
    pub(crate) payload_type: u8,
    pub(crate) ssrc: u32,
    /// Sequence number of the first packet written.
    pub(crate) seq: u16,
    /// Bytes of RTP payload per packet: `mtu - 12`.
    pub(crate) max_payload: usize,
}

impl RtpParams {
    /// A sink for `packets` packets totalling exactly `total_len` bytes.
    pub(crate) fn sink(
        self,
        out: &mut Vec<Bytes>,
        total_len: usize,
        packets: usize,
    ) -> PacketSink<'_> {
        PacketSink::new(
            out,
            total_len,
            packets,
            self.payload_type,
            self.ssrc,
            self.seq,
        )
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Video(VideoPayloader),
    Aac,
    G711 { channels: usize },
    Opus,
    Jpeg,
}

impl Kind {
    fn new(codec: &Codec) -> Self {
        match codec {
            Codec::H264 { sps, pps } => Kind::Video(VideoPayloader::new(Syntax::H264, &[sps, pps])),
            Codec::H265 { vps, sps, pps } => {
                Kind::Video(VideoPayloader::new(Syntax::H265, &[vps, sps, pps]))
            }
            Codec::Aac { .. } => Kind::Aac,
            Codec::Pcma { channels } | Codec::Pcmu { channels } => Kind::G711 {
                channels: usize::from((*channels).max(1)),
            },
            Codec::Opus { .. } => Kind::Opus,
            Codec::Jpeg => Kind::Jpeg,
        }
    }
}

/// Turns the frames of one track into RTP packets (RFC 3550), once per frame
/// for all readers: the caller sends the same packets to every reader.
///
/// Formats: H.264 RFC 6184 packetization-mode=1 (single NAL unit and FU-A
/// packets), H.265 RFC 7798 (single NAL unit and FU packets, no DONL), AAC
/// RFC 3640 AAC-hbr, G.711 RFC 3551, Opus RFC 7587, JPEG RFC 2435.
#[derive(Clone, Debug)]
pub struct Payloader {
    kind: Kind,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    max_payload: usize,
}

impl Payloader {
    /// A payloader for a track with codec `codec` (its parameter sets are
    /// sent in-band when needed), RTP payload type `payload_type` (0..=127),
    /// SSRC `ssrc`, first sequence number `initial_seq`, and packets of at
    /// most `mtu` bytes including the 12-byte RTP header (usually
    /// [`DEFAULT_MTU`]).
    ///
    /// Errors: [`PayloadError::Config`] if `payload_type` > 127 or `mtu` is
    /// outside [`MIN_MTU`]`..=`[`MAX_MTU`].
    /// G.711 with `channels == 0` is treated as mono.
    pub fn new(
        codec: &Codec,
        payload_type: u8,
        ssrc: u32,
        initial_seq: u16,
        mtu: usize,
    ) -> Result<Self, PayloadError> {
        if payload_type > 127 {
            return Err(PayloadError::Config(format!(
                "RTP payload type {payload_type} is not in 0..=127"
            )));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(PayloadError::Config(format!(
                "MTU {mtu} is not in {MIN_MTU}..={MAX_MTU}"
            )));
        }
        Ok(Payloader {
            kind: Kind::new(codec),
            payload_type,
            ssrc,
            seq: initial_seq,
            max_payload: mtu - RTP_HEADER_LEN,
        })
    }

    /// Switches to new codec parameters (e.g. a new SPS from
    /// `Frame::new_track`): they are the ones inserted in-band from the next
    /// frame on. SSRC and sequence numbering carry on.
    pub fn set_codec(&mut self, codec: &Codec) {
        self.kind = Kind::new(codec);
    }

    /// Packetizes one frame and appends its complete RTP packets (12-byte
    /// header + payload, each at most `mtu` bytes) to `out`.
    ///
    /// `data`: for H.264/H.265 one access unit as NAL units each with a 4-byte
    /// big-endian length prefix (AVCC/HVCC), parameter sets optional; for AAC
    /// one raw access unit (no ADTS); for G.711 the samples; for Opus one
    /// Opus packet; for JPEG one complete JFIF image. `rtp_timestamp`: the frame's final 32-bit RTP timestamp
    /// (in the track's clock rate). `keyframe`: the frame is a random access
    /// point; video access units containing an IDR (H.264) or IRAP (H.265)
    /// NAL unit count as keyframes too.
    ///
    /// - H.264 (RFC 6184 §5.6, §5.8): each NAL unit in a single NAL unit
    ///   packet if it fits, else in FU-A fragments. A keyframe whose access
    ///   unit lacks an SPS or PPS gets the current SPS and PPS first (after a
    ///   leading access unit delimiter), as single NAL unit packets with the
    ///   same timestamp. Marker bit on the access unit's last packet.
    /// - H.265 (RFC 7798 §4.4.1, §4.4.3): the same with FUs, and VPS, SPS
    ///   and PPS.
    /// - AAC (RFC 3640 §3.2.3, §3.3.6): one AU per packet, M=1; an AU too
    ///   large for one packet is fragmented, M=1 only on the last fragment.
    /// - G.711 (RFC 3551 §4.5.14): split at the MTU on sample boundaries,
    ///   timestamps advanced per packet, M=0.
    /// - Opus (RFC 7587 §4.2): one packet, M=0.
    /// - JPEG (RFC 2435): the scan in fragments after the main JPEG header
    ///   (types 0/1, 64/65 with restart markers), Q = 255 with the image's
    ///   quantization tables in the first packet, M=1 on the last (see
    ///   `jpeg::payload_jpeg`).
    ///
    /// Allocates one buffer per frame; the packets are views into it.
    ///
    /// Errors, in which case nothing is appended and [`Self::next_seq`] is
    /// unchanged: [`PayloadError::Malformed`] for input that violates its
    /// format (bad length prefixes, zero-length or forbidden NAL units,
    /// empty frames, G.711 not a whole number of samples);
    /// [`PayloadError::Unsupported`] for valid input this format cannot carry
    /// (an AAC AU above 8191 bytes, an Opus packet larger than the MTU, a
    /// JPEG image RFC 2435 has no type for: see [`super::JpegImage::rtp`]).
    pub fn payload(
        &mut self,
        data: &[u8],
        rtp_timestamp: u32,
        keyframe: bool,
        out: &mut Vec<Bytes>,
    ) -> Result<(), PayloadError> {
        let rtp = RtpParams {
            payload_type: self.payload_type,
            ssrc: self.ssrc,
            seq: self.seq,
            max_payload: self.max_payload,
        };
        self.seq = match &self.kind {
            Kind::Video(v) => v.payload(data, rtp_timestamp, keyframe, rtp, out)?,
            Kind::Aac => aac::payload(data, rtp_timestamp, rtp, out)?,
            Kind::G711 { channels } => {
                g711::payload_g711(data, rtp_timestamp, *channels, rtp, out)?
            }
            Kind::Opus => opus::payload_opus(data, rtp_timestamp, rtp, out)?,
            Kind::Jpeg => jpeg::payload_jpeg(data, rtp_timestamp, rtp, out)?,
        };
        Ok(())
    }

    /// Sequence number the next packet will carry.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The SSRC given to [`Self::new`].
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The RTP payload type given to [`Self::new`].
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }
}
