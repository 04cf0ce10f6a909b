//! Pure codec code: NAL unit helpers and the RTP payloaders used by the RTSP
//! server (no I/O, no async).
//!
//! [`Payloader`] turns one track's frames into RTP packets: H.264 (RFC 6184),
//! H.265 (RFC 7798), AAC (RFC 3640), G.711 (RFC 3551) and Opus (RFC 7587).

mod aac;
mod audio;
mod h264;
mod h265;
mod h26x;
mod nal;
mod payloader;
mod rtp;

#[cfg(test)]
pub(crate) mod tests;

pub use aac::AAC_MAX_AU_SIZE;
pub use h264::{
    h264_nal_type, h264_profile_level_id, H264_NAL_AUD, H264_NAL_IDR, H264_NAL_PPS, H264_NAL_SPS,
};
pub use h265::{
    h265_is_irap, h265_nal_type, H265_NAL_AUD, H265_NAL_PPS, H265_NAL_SPS, H265_NAL_VPS,
};
pub use nal::{avcc_nal_units, AvccNalUnits};
pub use payloader::{Payloader, DEFAULT_MTU, MAX_MTU, MIN_MTU};
pub use rtp::RTP_HEADER_LEN;

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
