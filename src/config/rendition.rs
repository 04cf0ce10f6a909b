//! Renditions: a stream transcoded in process, served under its own path
//! name `<path>~<tag>[~<tag>]` (tags `h264`: video H.265 → H.264, `opus`:
//! audio AAC/G.711 → Opus), and the per-path settings that say when one is
//! made. The naming rule lives here, with the other path-name rules
//! ([`super::valid_path_name`]), so that auth, egress and the transcoder
//! read the same names. A configured path name cannot contain `~`, so a
//! rendition never collides with a path.

use serde::Deserialize;

/// Separates a path name from its rendition tags.
pub const SEPARATOR: char = '~';

/// What a rendition transcodes; everything else is passed through
/// unchanged (same frames, same timestamps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rendition {
    /// Video H.265 → H.264 (tag `h264`).
    pub video_h264: bool,
    /// Audio AAC/G.711 → Opus, 48 kHz (tag `opus`).
    pub audio_opus: bool,
}

impl Rendition {
    /// Audio to Opus only.
    pub const OPUS: Rendition = Rendition {
        video_h264: false,
        audio_opus: true,
    };

    /// Whether nothing is transcoded (the path itself).
    pub fn is_none(&self) -> bool {
        !self.video_h264 && !self.audio_opus
    }

    /// The stream name of this rendition of `base`, tags in canonical
    /// order: `cam~h264`, `cam~opus`, `cam~h264~opus`; `base` itself when
    /// nothing is transcoded.
    pub fn name(&self, base: &str) -> String {
        let mut s = base.to_owned();
        if self.video_h264 {
            s.push(SEPARATOR);
            s.push_str("h264");
        }
        if self.audio_opus {
            s.push(SEPARATOR);
            s.push_str("opus");
        }
        s
    }

    /// Splits a stream name into its base path and rendition. `None` for
    /// an unknown or repeated tag, an empty base, or tags out of canonical
    /// order (one rendition has one name).
    pub fn parse(name: &str) -> Option<(&str, Rendition)> {
        let mut parts = name.split(SEPARATOR);
        let base = parts.next().filter(|b| !b.is_empty())?;
        let mut r = Rendition::default();
        for tag in parts {
            match tag {
                "h264" if !r.video_h264 && !r.audio_opus => r.video_h264 = true,
                "opus" if !r.audio_opus => r.audio_opus = true,
                _ => return None,
            }
        }
        Some((base, r))
    }

    /// `self` with `other`'s transcodings added.
    pub fn union(self, other: Rendition) -> Rendition {
        Rendition {
            video_h264: self.video_h264 || other.video_h264,
            audio_opus: self.audio_opus || other.audio_opus,
        }
    }
}

/// The path a stream name belongs to: `cam` for `cam~h264`; the name
/// itself for a path. Permissions of a rendition are those of its path.
pub fn base(name: &str) -> &str {
    name.split(SEPARATOR).next().unwrap_or(name)
}

/// Whether `name` names a stream a reader may ask for: a valid path name
/// ([`super::valid_path_name`]) or a rendition of one (`cam~opus`).
pub fn valid_stream_name(name: &str) -> bool {
    Rendition::parse(name).is_some_and(|(base, _)| super::valid_path_name(base))
}

/// `transcode` of a path: when its H.265 video is transcoded to H.264.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeMode {
    /// Never; `<path>~h264` is refused.
    Off,
    /// Every WebRTC viewer and HLS player of the path gets H.264; RTSP
    /// readers get the camera's H.265 unless `rtsp_codec = "h264"`.
    H264,
    /// Only while a viewer needs it: a WHEP offer without H.265, a page or
    /// player that asks for `<path>~h264`, an RTSP reader of a path with
    /// `rtsp_codec = "h264"`.
    #[default]
    Auto,
}

/// `rtsp_codec` of a path: what `rtsp://…/<path>` serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspCodec {
    /// The camera's own video.
    #[default]
    Source,
    /// H.264 always (old NVRs/VMSs that reject H.265): the `~h264`
    /// rendition when the camera sends H.265.
    H264,
}

/// A path's transcoding settings (`[paths.NAME]` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscodeSettings {
    /// `transcode` (default `auto`).
    pub mode: TranscodeMode,
    /// `transcode_bitrate` in bit/s; `None`: from the resolution.
    pub video_bitrate: Option<u32>,
    /// `rtsp_codec` (default `source`).
    pub rtsp_codec: RtspCodec,
    /// `opus_bitrate` in bit/s of the Opus made from AAC/G.711 (default
    /// 64 000; 6 000–510 000, RFC 6716 §2.1.1).
    pub opus_bitrate: u32,
    /// `transcode_audio` (default true): AAC/G.711 to Opus for WebRTC
    /// viewers and G.711 to Opus for LL-HLS.
    pub audio: bool,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            mode: TranscodeMode::Auto,
            video_bitrate: None,
            rtsp_codec: RtspCodec::Source,
            opus_bitrate: DEFAULT_OPUS_BITRATE,
            audio: true,
        }
    }
}

/// `opus_bitrate` when not set, bit/s.
pub const DEFAULT_OPUS_BITRATE: u32 = 64_000;

impl TranscodeSettings {
    /// Whether this path may serve `rendition` at all, and if not, why in
    /// plain words.
    pub fn allows(&self, rendition: Rendition) -> Result<(), String> {
        if rendition.video_h264 && self.mode == TranscodeMode::Off {
            return Err("video transcoding is off for this path (transcode = \"off\")".into());
        }
        if rendition.audio_opus && !self.audio {
            return Err("audio transcoding is off for this path (transcode_audio = false)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_canonical_order_only() {
        let both = Rendition {
            video_h264: true,
            audio_opus: true,
        };
        assert_eq!(both.name("cam"), "cam~h264~opus");
        assert_eq!(Rendition::parse("cam~h264~opus"), Some(("cam", both)));
        assert_eq!(Rendition::parse("cam"), Some(("cam", Rendition::default())));
        assert_eq!(Rendition::parse("cam~opus"), Some(("cam", Rendition::OPUS)));
        for bad in ["cam~opus~h264", "cam~opus~opus", "cam~vp8", "~opus", "cam~"] {
            assert_eq!(Rendition::parse(bad), None, "{bad}");
        }
        assert_eq!(base("cam~h264"), "cam");
        assert!(valid_stream_name("cam~h264~opus") && valid_stream_name("cam"));
        assert!(!valid_stream_name("c/m~opus") && !valid_stream_name("cam~x"));
        assert_eq!(base("cam"), "cam");
    }

    #[test]
    fn off_switches_refuse_their_rendition() {
        let mut s = TranscodeSettings::default();
        assert!(s.allows(Rendition::OPUS).is_ok());
        s.mode = TranscodeMode::Off;
        let h264 = Rendition {
            video_h264: true,
            audio_opus: false,
        };
        assert!(s.allows(h264).is_err());
        assert!(s.allows(Rendition::OPUS).is_ok());
        s.audio = false;
        assert!(s.allows(Rendition::OPUS).is_err());
    }
}
