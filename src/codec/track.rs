//! Track descriptions: what a reader needs to decode or re-describe a
//! track, with its parameter sets summarized once when the track is made.

use bytes::Bytes;
use serde::Serialize;

use super::aac::AacConfig;
use super::h264::H264Sps;
use super::h265::H265Sps;
use super::jpeg::JpegImage;
use super::nal::ParamError;
use super::opus::OPUS_RFC6381;

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
    /// Motion JPEG: every frame a complete baseline JFIF image (SOI .. EOI,
    /// ITU-T T.81), each one a keyframe; no out-of-band parameters (each
    /// image carries its tables). RTP as RFC 2435 (`JPEG/90000`, static
    /// payload type 26), clock rate 90 000.
    Jpeg,
}

impl Codec {
    /// Short lowercase name as used in the API and logs: `h264`, `h265`,
    /// `mjpeg`, `aac`, `pcma`, `pcmu`, `opus`.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::H264 { .. } => "h264",
            Codec::H265 { .. } => "h265",
            Codec::Aac { .. } => "aac",
            Codec::Pcma { .. } => "pcma",
            Codec::Pcmu { .. } => "pcmu",
            Codec::Opus { .. } => "opus",
            Codec::Jpeg => "mjpeg",
        }
    }

    /// The media kind this codec belongs to.
    pub fn kind(&self) -> MediaKind {
        match self {
            Codec::H264 { .. } | Codec::H265 { .. } | Codec::Jpeg => MediaKind::Video,
            Codec::Aac { .. } | Codec::Pcma { .. } | Codec::Pcmu { .. } | Codec::Opus { .. } => {
                MediaKind::Audio
            }
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

/// Chroma format and sample bit depths of a video stream (H.264
/// §7.4.2.1.1, H.265 §7.4.3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chroma {
    /// `chroma_format_idc`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub format_idc: u8,
    /// Bits per luma sample (8..=16).
    pub bit_depth_luma: u8,
    /// Bits per chroma sample (8..=16).
    pub bit_depth_chroma: u8,
}

/// What a track's parameter sets or AudioSpecificConfig say, parsed once
/// when the [`Track`] is made; every egress reads these fields instead of
/// parsing again.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSummary {
    H264(H264Sps),
    H265(H265Sps),
    Aac(AacConfig),
}

impl ParamSummary {
    /// Parses the codec's parameters. `Ok(None)` for codecs without any
    /// (G.711, Opus, JPEG). Errors: the SPS or AudioSpecificConfig does not
    /// parse (see [`H264Sps::parse`], [`H265Sps::parse`],
    /// [`AacConfig::parse`]).
    pub fn parse(codec: &Codec) -> Result<Option<ParamSummary>, ParamError> {
        Ok(Some(match codec {
            Codec::H264 { sps, .. } => ParamSummary::H264(H264Sps::parse(sps)?),
            Codec::H265 { sps, .. } => ParamSummary::H265(H265Sps::parse(sps)?),
            Codec::Aac { config, .. } => ParamSummary::Aac(AacConfig::parse(config)?),
            Codec::Pcma { .. } | Codec::Pcmu { .. } | Codec::Opus { .. } | Codec::Jpeg => {
                return Ok(None)
            }
        }))
    }

    /// RFC 6381 codec string (`avc1.64001e`, `hvc1.1.6.L93.B0`, `mp4a.40.2`).
    pub fn rfc6381(&self) -> String {
        match self {
            ParamSummary::H264(s) => s.rfc6381(),
            ParamSummary::H265(s) => s.rfc6381(),
            ParamSummary::Aac(c) => c.rfc6381(),
        }
    }

    /// Display width and height in pixels (video).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        match self {
            ParamSummary::H264(s) => s.dimensions,
            ParamSummary::H265(s) => s.dimensions,
            ParamSummary::Aac(_) => None,
        }
    }

    /// Frames per second from the SPS VUI timing info (video).
    pub fn frame_rate(&self) -> Option<f64> {
        match self {
            ParamSummary::H264(s) => s.frame_rate,
            ParamSummary::H265(s) => s.frame_rate,
            ParamSummary::Aac(_) => None,
        }
    }

    /// How many pictures may be output after a later-decoded one (H.264
    /// `max_num_reorder_frames`, H.265 `sps_max_num_reorder_pics`): above 0
    /// means the stream has B-frames that reorder. `None` when unknown.
    pub fn max_reorder(&self) -> Option<u32> {
        match self {
            ParamSummary::H264(s) => s.max_reorder,
            ParamSummary::H265(s) => Some(s.max_reorder),
            ParamSummary::Aac(_) => None,
        }
    }
}

/// One elementary stream of a bus stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub codec: Codec,
    /// RTP clock rate in Hz; frame timestamps of this track are in these units
    /// (90 000 for video).
    pub clock_rate: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001e`, `mp4a.40.2`, `opus`, when known.
    pub rfc6381: Option<String>,
    /// Display width and height in pixels (video only).
    pub dimensions: Option<(u32, u32)>,
    /// Nominal frame rate in frames per second, from the SPS VUI or the SDP (video only).
    pub frame_rate: Option<f64>,
    /// The codec parameters' summary, parsed from `codec` when the track
    /// was made; `None` for codecs without parameters or when they do not
    /// parse.
    pub summary: Option<ParamSummary>,
}

impl Track {
    /// A track whose RFC 6381 string, dimensions, frame rate and summary
    /// come from its parameter sets / AudioSpecificConfig. Infallible:
    /// parameters that do not parse leave those fields `None` (see
    /// [`Track::try_new`] for the reason).
    pub fn new(codec: Codec, clock_rate: u32) -> Self {
        let summary = ParamSummary::parse(&codec).ok().flatten();
        Self::with_summary(codec, clock_rate, summary)
    }

    /// [`Track::new`] that fails when the codec parameters do not parse.
    pub fn try_new(codec: Codec, clock_rate: u32) -> Result<Self, ParamError> {
        let summary = ParamSummary::parse(&codec)?;
        Ok(Self::with_summary(codec, clock_rate, summary))
    }

    fn with_summary(codec: Codec, clock_rate: u32, summary: Option<ParamSummary>) -> Self {
        let rfc6381 = match (&codec, &summary) {
            (_, Some(s)) => Some(s.rfc6381()),
            (Codec::Opus { .. }, None) => Some(OPUS_RFC6381.to_owned()),
            _ => None,
        };
        Track {
            rfc6381,
            dimensions: summary.as_ref().and_then(ParamSummary::dimensions),
            frame_rate: summary.as_ref().and_then(ParamSummary::frame_rate),
            summary,
            codec,
            clock_rate,
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }

    /// For a JPEG track: the same track with the dimensions of `image` (a
    /// complete JFIF image, its frame header), when they differ from this
    /// track's: the first image, or a camera that changed resolution.
    /// `None` when they are the same, for other codecs, and for an image
    /// whose headers do not parse (see [`JpegImage::parse`]).
    pub fn jpeg_dimensions_changed(&self, image: &[u8]) -> Option<Track> {
        if self.codec != Codec::Jpeg {
            return None;
        }
        let dimensions = JpegImage::parse(image).ok()?.dimensions()?;
        (self.dimensions != Some(dimensions)).then(|| Track {
            dimensions: Some(dimensions),
            ..self.clone()
        })
    }

    /// The H.264 SPS summary, if this is an H.264 track whose SPS parsed.
    pub fn h264(&self) -> Option<&H264Sps> {
        match &self.summary {
            Some(ParamSummary::H264(s)) => Some(s),
            _ => None,
        }
    }

    /// The H.265 SPS summary, if this is an H.265 track whose SPS parsed.
    pub fn h265(&self) -> Option<&H265Sps> {
        match &self.summary {
            Some(ParamSummary::H265(s)) => Some(s),
            _ => None,
        }
    }

    /// The AudioSpecificConfig summary, if this is an AAC track whose
    /// config parsed.
    pub fn aac(&self) -> Option<&AacConfig> {
        match &self.summary {
            Some(ParamSummary::Aac(c)) => Some(c),
            _ => None,
        }
    }
}
