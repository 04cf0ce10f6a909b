//! Track descriptions: what a reader needs to decode or re-describe a track.

use bytes::Bytes;
use serde::Serialize;

/// Media kind of a track, as in an SDP `m=` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Video,
    Audio,
}

/// Codec and its out-of-band parameters.
///
/// Parameter sets are single NAL units without start code or length prefix
/// (ITU-T H.264 §7.3.2.1 / H.265 §7.3.2). `config` is the MPEG-4
/// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264/AVC; `sps`/`pps` are the most recent parameter sets.
    H264 { sps: Bytes, pps: Bytes },
    /// H.265/HEVC; `vps`/`sps`/`pps` are the most recent parameter sets.
    H265 { vps: Bytes, sps: Bytes, pps: Bytes },
    /// MPEG-4 AAC, raw access units (no ADTS header).
    Aac { config: Bytes, channels: u16 },
    /// G.711 A-law (RTP static payload type 8).
    Pcma { channels: u16 },
    /// G.711 µ-law (RTP static payload type 0).
    Pcmu { channels: u16 },
    /// Opus (RFC 7587); the RTP clock rate is always 48 kHz.
    Opus { channels: u16 },
}

impl Codec {
    /// Short lowercase name as used in the API and logs: `h264`, `h265`, `aac`, `pcma`, `pcmu`, `opus`.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::H264 { .. } => "h264",
            Codec::H265 { .. } => "h265",
            Codec::Aac { .. } => "aac",
            Codec::Pcma { .. } => "pcma",
            Codec::Pcmu { .. } => "pcmu",
            Codec::Opus { .. } => "opus",
        }
    }

    /// The media kind this codec belongs to.
    pub fn kind(&self) -> MediaKind {
        match self {
            Codec::H264 { .. } | Codec::H265 { .. } => MediaKind::Video,
            _ => MediaKind::Audio,
        }
    }

    /// Number of audio channels; `None` for video.
    pub fn channels(&self) -> Option<u16> {
        match self {
            Codec::Aac { channels, .. }
            | Codec::Pcma { channels }
            | Codec::Pcmu { channels }
            | Codec::Opus { channels } => Some(*channels),
            _ => None,
        }
    }

    /// Whether the same codec with possibly different parameters: a reader
    /// described with `self` can keep going with `other` (new parameter sets
    /// travel in-band).
    pub fn same_kind_as(&self, other: &Codec) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.channels() == other.channels()
    }
}

/// One elementary stream of a [`super::Stream`].
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub codec: Codec,
    /// RTP clock rate in Hz; frame timestamps of this track are in these units
    /// (90 000 for video).
    pub clock_rate: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001F`, `mp4a.40.2`, when known.
    pub rfc6381: Option<String>,
    /// Display width and height in pixels (video only).
    pub dimensions: Option<(u32, u32)>,
    /// Nominal frame rate in frames per second, from the SPS VUI or the SDP (video only).
    pub frame_rate: Option<f64>,
}

impl Track {
    /// A track with no RFC 6381 string, dimensions or frame rate known yet.
    pub fn new(codec: Codec, clock_rate: u32) -> Self {
        Track {
            codec,
            clock_rate,
            rfc6381: None,
            dimensions: None,
            frame_rate: None,
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}
