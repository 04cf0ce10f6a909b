//! Pure codec code, the bottom layer (no I/O, no async, nothing of ours
//! imported): the one place that reads a bitstream.
//!
//! - [`Track`], [`Codec`], [`MediaKind`]: a track's description, with its
//!   parameter sets summarized once when it is made ([`ParamSummary`]:
//!   profile, level, chroma, dimensions, frame rate, picture reordering,
//!   RFC 6381 string, `avcC`/`hvcC` fields). The bus re-exports these.
//! - One file per codec: `h264`, `h265` (NAL unit types, random access,
//!   SPS), `jpeg` (JFIF headers and scan, RFC 2435 types and tables), `aac`
//!   (AudioSpecificConfig), `opus`, `g711`; `h26x` what the two
//!   video syntaxes share; `nal` the AVCC framing and the one RBSP bit
//!   reader (h264-reader's).
//! - [`Payloader`] turns one track's frames into RTP packets: H.264 (RFC
//!   6184), H.265 (RFC 7798), JPEG (RFC 2435), AAC (RFC 3640), G.711
//!   (RFC 3551) and Opus (RFC 7587).
//! - [`DtsExtractor`]: decoding timestamps of H.264/H.265 pictures from
//!   their order counts and the reorder depth, for sources that carry
//!   presentation timestamps only (RTP).
//! - [`Depacketizer`] the reverse: one track's RTP packets to access units,
//!   the same formats and JPEG (RFC 2435); loss drops an access unit with a
//!   [`DropReason`], never the session.

mod aac;
mod depacketize;
mod dts;
mod g711;
mod h264;
mod h265;
mod h26x;
mod jpeg;
mod nal;
mod opus;
mod payloader;
mod rtp;
mod track;

#[cfg(test)]
pub(crate) mod tests;
/// Real B-frame access units and ffprobe's timestamps, for tests of the
/// layers above.
#[cfg(test)]
pub(crate) use dts::tests as dts_fixtures;

pub use aac::{AacConfig, AAC_MAX_AU_SIZE};
pub use depacketize::{
    AccessUnit, Depacketizer, DropReason, Output, ParamSets, RtpFormat, RtpPacket, Unsupported,
    MAX_ACCESS_UNIT_SIZE,
};
pub use dts::DtsExtractor;
pub use g711::{alaw_to_linear, ulaw_to_linear};
pub use h264::{
    h264_has_b_slice, h264_is_idr, h264_nal_type, H264Sps, H264_NAL_AUD, H264_NAL_IDR,
    H264_NAL_PPS, H264_NAL_SLICE, H264_NAL_SPS,
};
pub use h265::{
    h265_is_irap, h265_nal_type, H265Sps, H265_NAL_AUD, H265_NAL_BLA_W_LP, H265_NAL_CRA,
    H265_NAL_IDR_W_RADL, H265_NAL_PPS, H265_NAL_SPS, H265_NAL_VPS,
};
pub use h26x::{
    annexb_access_unit, is_leading_skippable, is_random_access, sanitize_access_unit,
    AccessUnitError,
};
pub use jpeg::{JpegError, JpegImage, JpegSampling, QuantTable, RtpJpeg, RTP_JPEG_MAX_DIMENSION};
pub use nal::{annexb_nal_units, avcc_nal_units, AvccNalUnits, ParamError};
pub use opus::OPUS_RFC6381;
pub use payloader::{Payloader, DEFAULT_MTU, MAX_MTU, MIN_MTU};
pub use rtp::{parse_rtp, RTP_HEADER_LEN};
pub use track::{Chroma, Codec, MediaKind, ParamSummary, Track};

pub(crate) use payloader::RtpParams;

/// Why a frame could not be packetized or a payloader not created.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The frame violates its format: bad AVCC length prefixes, a zero-length
    /// or forbidden NAL unit, an empty frame, ...
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Valid input the RTP payload format cannot carry, e.g. an AAC access
    /// unit above 8191 bytes or an Opus packet larger than the MTU.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Bad [`Payloader::new`] argument (payload type, MTU).
    #[error("invalid payloader configuration: {0}")]
    Config(String),
}
