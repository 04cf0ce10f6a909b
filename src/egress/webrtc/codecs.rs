//! Which of the stream's tracks go to a WHEP viewer, and with which of the
//! payload formats its offer lists. Pure: offer summary and tracks in, a
//! [`Plan`] or a plain-words reason out.
//!
//! A stream's media is passed through, so a track is sent only if the offer
//! receives its codec (what can't be is transcoded in a rendition, see
//! [`wanted_rendition`]):
//! - H.264 with `packetization-mode=1` (RFC 6184 §6.3). The answer signals
//!   one of the offer's own `profile-level-id`s (RFC 6184 §8.2.2: the
//!   answerer may not invent one): the stream's profile if offered, else a
//!   profile whose decoders must decode it (e.g. High 4:4:4 Predictive for
//!   High, ITU-T H.264 §A.2), else any — browsers decode any profile their
//!   decoder supports whatever was signalled (Chromium lists only
//!   42001f/42e01f/4d001f/f4001f yet decodes High).
//! - H.265 (RFC 7798) to viewers that offer it, same profile, or Main 10 for Main.
//! - Opus (RFC 7587) and G.711 PCMU/PCMA at 8 kHz mono (RFC 3551).
//! - AAC is not a WebRTC codec: never sent as it is; the plan says so, and
//!   [`wanted_rendition`] asks for the `~opus` rendition instead.

use std::sync::Arc;

use crate::bus::{Codec, MediaKind, Track};
use crate::config::rendition::{Rendition, TranscodeMode, TranscodeSettings};

use super::offer::{Format, OfferSummary, SectionKind};

/// What is sent on one `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Bus track index.
    pub track: usize,
    /// Index of the offer's media section.
    pub section: usize,
    /// The section's `a=mid`.
    pub mid: String,
    /// Offered payload type used for this codec.
    pub pt: u8,
    /// Offered RTX payload type for `pt` (RFC 4588), video only.
    pub rtx: Option<u8>,
    pub codec: SendCodec,
}

/// The codec and the format parameters the answer will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCodec {
    /// `profile-level-id` as 24-bit number (e.g. `0x42e01f`), packetization-mode 1.
    H264 {
        profile_level_id: u32,
    },
    /// RFC 7798 §7.1 `profile-id`, `tier-flag`, `level-id`.
    H265 {
        profile_id: u8,
        tier: u8,
        level: u8,
    },
    /// 48 kHz, `channels` as signalled (WebRTC always says 2).
    Opus {
        channels: u16,
    },
    Pcmu,
    Pcma,
}

impl SendCodec {
    pub fn name(&self) -> &'static str {
        match self {
            SendCodec::H264 { .. } => "h264",
            SendCodec::H265 { .. } => "h265",
            SendCodec::Opus { .. } => "opus",
            SendCodec::Pcmu => "pcmu",
            SendCodec::Pcma => "pcma",
        }
    }
}

/// A track that is not sent, and why, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub track: usize,
    pub kind: MediaKind,
    pub reason: String,
}

/// The outcome of codec negotiation for one viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub video: Option<Choice>,
    pub audio: Option<Choice>,
    /// Tracks left out, with the reason (also noted in the answer, see
    /// [`super::offer::add_media_info`]).
    pub skipped: Vec<Skipped>,
}

/// Why nothing can be sent (WHEP answers 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoCodec(pub String);

/// Why an MJPEG track is not sent over WebRTC, in plain words.
pub const MJPEG_NOT_IN_WEBRTC: &str = "MJPEG is not carried over WebRTC (browsers' WebRTC \
     decodes no JPEG video): watch it at the stream's /mjpeg URL (/<path>/mjpeg) or over RTSP";

/// Whether WebRTC can carry this codec at all (independent of any offer),
/// and if not, why. Used by the API's stream list.
pub fn webrtc_support(codec: &Codec, clock_rate: u32) -> Result<(), String> {
    match codec {
        Codec::H264 { .. } | Codec::H265 { .. } | Codec::Opus { .. } => Ok(()),
        Codec::Pcmu { channels } | Codec::Pcma { channels } => {
            if clock_rate == 8000 && *channels == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{} at {clock_rate} Hz with {channels} channel(s) is not a WebRTC format (only 8000 Hz mono)",
                    codec.name()
                ))
            }
        }
        Codec::Jpeg => Err(MJPEG_NOT_IN_WEBRTC.to_owned()),
        Codec::Aac { .. } => Err(
            "AAC is not a WebRTC codec (browsers' WebRTC has no AAC decoder): viewers whose offer has Opus get it transcoded to Opus in the <path>~opus rendition (AAC-LC at 8, 12, 16, 24 or 48 kHz; not HE-AAC; off with transcode_audio = false)".to_owned(),
        ),
    }
}

/// Whether a receiving section of `kind` in the offer lists `encoding`
/// (H.264 only with `packetization-mode=1`, which we send).
fn offer_receives(offer: &OfferSummary, kind: SectionKind, encoding: &str) -> bool {
    offer
        .sections
        .iter()
        .filter(|s| s.kind == kind && s.usable())
        .flat_map(|s| &s.formats)
        .any(|f| {
            f.encoding == encoding
                && (encoding != "h264" || f.param("packetization-mode") == Some("1"))
        })
}

/// The rendition a viewer with this offer should get instead of the
/// stream itself (`Rendition::default()`: the stream as it is):
/// - `audio_opus` when the stream's audio (AAC, or G.711 the viewer can't
///   take) is not sent as it is and the offer receives Opus;
/// - `video_h264` when the video is H.265 and the path says `transcode =
///   "h264"`, or `"auto"` and the offer receives H.264 but not this H.265.
///
/// `direct` is the plan for the stream as it is (from [`plan`]).
pub fn wanted_rendition(
    tracks: &[Arc<Track>],
    offer: &OfferSummary,
    direct: Option<&Plan>,
    settings: &TranscodeSettings,
) -> Rendition {
    let has = |k: MediaKind, f: &dyn Fn(&Codec) -> bool| {
        tracks.iter().any(|t| t.kind() == k && f(&t.codec))
    };
    let audio_sent = direct.is_some_and(|p| p.audio.is_some());
    let video_sent = direct.is_some_and(|p| p.video.is_some());
    let audio_opus = settings.audio
        && !audio_sent
        && has(MediaKind::Audio, &|c| {
            matches!(
                c,
                Codec::Aac { .. } | Codec::Pcma { .. } | Codec::Pcmu { .. }
            )
        })
        && offer_receives(offer, SectionKind::Audio, "opus");
    let h265 = has(MediaKind::Video, &|c| matches!(c, Codec::H265 { .. }));
    let video_h264 = h265
        && offer_receives(offer, SectionKind::Video, "h264")
        && match settings.mode {
            TranscodeMode::Off => false,
            TranscodeMode::H264 => true,
            TranscodeMode::Auto => !video_sent,
        };
    Rendition {
        video_h264,
        audio_opus,
    }
}

/// H.264 profiles as RFC 6184 Table 5 groups them (profile_idc plus
/// constraint flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    Extended,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
    /// Any other `profile_idc` (High 10, High 4:2:2, ...).
    Other(u8),
}

impl H264Profile {
    /// Classifies `profile_idc` and the `constraint_set` byte (bit 7 =
    /// constraint_set0_flag) as libwebrtc and RFC 6184 Table 5 do.
    pub(crate) fn classify(profile_idc: u8, constraints: u8) -> H264Profile {
        // Pattern: 8 chars MSB first, '1'/'0' must match, 'x' is free.
        let m = |pattern: &[u8; 8]| {
            pattern.iter().enumerate().all(|(i, &p)| {
                let bit = (constraints >> (7 - i)) & 1;
                p == b'x' || (p == b'1') == (bit == 1)
            })
        };
        match profile_idc {
            0x42 if m(b"x1xx0000") => H264Profile::ConstrainedBaseline,
            0x4d if m(b"1xxx0000") => H264Profile::ConstrainedBaseline,
            0x58 if m(b"11xx0000") => H264Profile::ConstrainedBaseline,
            0x42 if m(b"x0xx0000") => H264Profile::Baseline,
            0x58 if m(b"10xx0000") => H264Profile::Baseline,
            0x4d if m(b"0x0x0000") => H264Profile::Main,
            0x58 if m(b"00xx0000") => H264Profile::Extended,
            0x64 if m(b"00001100") => H264Profile::ConstrainedHigh,
            0x64 if m(b"00000000") => H264Profile::High,
            0xf4 if m(b"00000000") => H264Profile::PredictiveHigh444,
            idc => H264Profile::Other(idc),
        }
    }

    /// Whether a decoder conforming to `self` must decode `stream`
    /// (ITU-T H.264 §A.2: each profile's decoder conformance list).
    fn decodes(self, stream: H264Profile) -> bool {
        use H264Profile::*;
        if self == stream {
            return true;
        }
        match stream {
            // Every profile's decoders decode constrained baseline.
            ConstrainedBaseline => true,
            Main | ConstrainedHigh => matches!(self, High | PredictiveHigh444),
            High | Other(0x6e) | Other(0x7a) => self == PredictiveHigh444,
            _ => false,
        }
    }
}

/// Parses an RFC 6184 `profile-level-id` (6 hex digits) into its three bytes.
fn parse_profile_level_id(v: &str) -> Option<u32> {
    if v.len() != 6 {
        return None;
    }
    u32::from_str_radix(v, 16).ok()
}

/// Choice score `(rank, level_idc)`, higher is better, and the offered
/// `profile-level-id`; `None` = this format cannot carry the stream.
fn h264_score(stream: H264Profile, f: &Format) -> Option<((u8, u32), u32)> {
    if f.encoding != "h264" || f.clock_rate != 90000 {
        return None;
    }
    // RFC 6184 §8.1: packetization-mode defaults to 0, which cannot carry
    // NAL units larger than the MTU; we send FU-A (mode 1).
    if f.param("packetization-mode") != Some("1") {
        return None;
    }
    // RFC 6184 §8.1: absent profile-level-id means 42000a (Baseline, level 1).
    let plid = match f.param("profile-level-id") {
        Some(v) => parse_profile_level_id(v)?,
        None => 0x42000a,
    };
    let offered = H264Profile::classify((plid >> 16) as u8, (plid >> 8) as u8);
    let rank = if offered == stream {
        3
    } else if offered.decodes(stream) {
        2
    } else {
        1
    };
    Some(((rank, plid & 0xff), plid))
}

fn h265_score(stream_profile: Option<u8>, f: &Format) -> Option<(u8, u32)> {
    if f.encoding != "h265" || f.clock_rate != 90000 {
        return None;
    }
    // RFC 7798 §7.1: profile-id defaults to 1 (Main).
    let offered: u8 = f.param("profile-id").map_or(Some(1), |v| v.parse().ok())?;
    let level: u32 = f
        .param("level-id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(93);
    let rank = match stream_profile {
        Some(p) if p == offered => 3,
        // Main 10 decoders decode Main (H.265 §A.3.3).
        Some(1) if offered == 2 => 2,
        _ => 1,
    };
    Some((rank, level))
}

fn audio_codec(track: &Track, f: &Format) -> Option<SendCodec> {
    match (&track.codec, f.encoding.as_str()) {
        (Codec::Opus { .. }, "opus") if f.clock_rate == 48000 => Some(SendCodec::Opus {
            channels: f.channels,
        }),
        (Codec::Pcmu { channels: 1 }, "pcmu")
            if track.clock_rate == 8000 && f.clock_rate == 8000 && f.channels == 1 =>
        {
            Some(SendCodec::Pcmu)
        }
        (Codec::Pcma { channels: 1 }, "pcma")
            if track.clock_rate == 8000 && f.clock_rate == 8000 && f.channels == 1 =>
        {
            Some(SendCodec::Pcma)
        }
        _ => None,
    }
}

/// Chooses what to send on which section. The first usable section of each
/// kind is used; a stream's first sendable track of each kind goes there.
///
/// Errors with [`NoCodec`] when not a single track can be sent, naming the
/// stream's codecs and what the offer receives.
pub fn plan(tracks: &[Arc<Track>], offer: &OfferSummary) -> Result<Plan, NoCodec> {
    let mut plan = Plan {
        video: None,
        audio: None,
        skipped: Vec::new(),
    };
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let skind = match kind {
            MediaKind::Video => SectionKind::Video,
            MediaKind::Audio => SectionKind::Audio,
        };
        let section = offer
            .sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.kind == skind && s.usable());
        let mut best: Option<((u8, u32), Choice)> = None;
        for (ti, track) in tracks.iter().enumerate() {
            if track.kind() != kind {
                continue;
            }
            if let Err(reason) = webrtc_support(&track.codec, track.clock_rate) {
                plan.skipped.push(Skipped {
                    track: ti,
                    kind,
                    reason,
                });
                continue;
            }
            let Some((si, s)) = section else {
                plan.skipped.push(Skipped {
                    track: ti,
                    kind,
                    reason: format!("the offer has no {} section that receives", kind_name(kind)),
                });
                continue;
            };
            let Some(mid) = s.mid.clone() else {
                continue;
            };
            let mut found = false;
            for f in &s.formats {
                // Profiles from the track's SPS summary (codec/).
                let scored = match &track.codec {
                    Codec::H264 { .. } => {
                        let stream = track.h264().map_or(H264Profile::Other(0), |s| {
                            H264Profile::classify(s.profile_idc, s.constraint_flags)
                        });
                        h264_score(stream, f).map(|(score, plid)| {
                            (
                                score,
                                SendCodec::H264 {
                                    profile_level_id: plid,
                                },
                            )
                        })
                    }
                    Codec::H265 { .. } => {
                        h265_score(track.h265().map(|s| s.profile_idc), f).map(|(rank, level)| {
                            let profile_id = f
                                .param("profile-id")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(1);
                            let tier = f
                                .param("tier-flag")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let level_id = u8::try_from(level).unwrap_or(93);
                            (
                                (rank, level),
                                SendCodec::H265 {
                                    profile_id,
                                    tier,
                                    level: level_id,
                                },
                            )
                        })
                    }
                    _ => audio_codec(track, f).map(|c| ((3, 0), c)),
                };
                let Some((score, codec)) = scored else {
                    continue;
                };
                found = true;
                // Strictly better only: among equals the offer's order wins.
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((
                        score,
                        Choice {
                            track: ti,
                            section: si,
                            mid: mid.clone(),
                            pt: f.pt,
                            rtx: if kind == MediaKind::Video {
                                s.rtx_for(f.pt)
                            } else {
                                None
                            },
                            codec,
                        },
                    ));
                }
            }
            if !found {
                plan.skipped.push(Skipped {
                    track: ti,
                    kind,
                    reason: format!(
                        "the viewer does not receive {}{} (it offers {})",
                        track.codec.name(),
                        if matches!(track.codec, Codec::H264 { .. }) {
                            " with packetization-mode=1"
                        } else {
                            ""
                        },
                        offered_names(&s.formats)
                    ),
                });
            }
        }
        if let Some((_, choice)) = best {
            // Only one track per kind is sent; other sendable ones are skipped.
            plan.skipped.retain(|sk| sk.track != choice.track);
            for (ti, t) in tracks.iter().enumerate() {
                if t.kind() == kind
                    && ti != choice.track
                    && !plan.skipped.iter().any(|s| s.track == ti)
                {
                    plan.skipped.push(Skipped {
                        track: ti,
                        kind,
                        reason: format!("only one {} track is sent", kind_name(kind)),
                    });
                }
            }
            match kind {
                MediaKind::Video => plan.video = Some(choice),
                MediaKind::Audio => plan.audio = Some(choice),
            }
        }
    }
    if plan.video.is_none() && plan.audio.is_none() {
        let unsendable: Vec<String> = tracks
            .iter()
            .filter_map(|t| webrtc_support(&t.codec, t.clock_rate).err())
            .collect();
        if !tracks.is_empty() && unsendable.len() == tracks.len() {
            // Whatever the viewer offers: say so, not that the offer is wrong.
            return Err(NoCodec(format!(
                "the stream has no track WebRTC can carry: {}",
                unsendable.join("; ")
            )));
        }
        let stream: Vec<&str> = tracks.iter().map(|t| t.codec.name()).collect();
        let offered: Vec<String> = offer
            .sections
            .iter()
            .filter(|s| s.usable())
            .map(|s| offered_names(&s.formats))
            .collect();
        let mut msg = format!(
            "the offer accepts none of the stream's codecs: the stream has {}; the offer receives {}",
            if stream.is_empty() {
                "no tracks".to_owned()
            } else {
                stream.join(" + ")
            },
            if offered.is_empty() {
                "nothing".to_owned()
            } else {
                offered.join("; ")
            }
        );
        for s in &plan.skipped {
            msg.push_str(&format!(
                ". Track {} ({}): {}",
                s.track,
                tracks[s.track].codec.name(),
                s.reason
            ));
        }
        return Err(NoCodec(msg));
    }
    Ok(plan)
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
    }
}

/// Distinct media encodings of a section, e.g. `vp8, h264, av1`, without
/// the helper formats (rtx, red, ulpfec, cn, telephone-event).
fn offered_names(formats: &[Format]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for f in formats {
        let n = f.encoding.as_str();
        if matches!(
            n,
            "rtx" | "red" | "ulpfec" | "flexfec-03" | "cn" | "telephone-event"
        ) {
            continue;
        }
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.is_empty() {
        "no media codec".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::webrtc::offer::parse_offer;
    use bytes::Bytes;

    const CHROME_OFFER: &str = include_str!("testdata/chrome_offer.sdp");

    fn track(codec: Codec, clock_rate: u32) -> Arc<Track> {
        Arc::new(Track::new(codec, clock_rate))
    }

    fn h264(sps_head: [u8; 4]) -> Arc<Track> {
        track(
            Codec::H264 {
                sps: Bytes::copy_from_slice(&sps_head),
                pps: Bytes::from_static(&[0x68, 0xce]),
            },
            90000,
        )
    }

    #[test]
    fn classifies_profiles() {
        use H264Profile::*;
        assert_eq!(H264Profile::classify(0x42, 0xe0), ConstrainedBaseline);
        assert_eq!(H264Profile::classify(0x42, 0xc0), ConstrainedBaseline);
        assert_eq!(H264Profile::classify(0x42, 0x00), Baseline);
        assert_eq!(H264Profile::classify(0x4d, 0x40), Main);
        assert_eq!(H264Profile::classify(0x4d, 0x00), Main);
        assert_eq!(H264Profile::classify(0x64, 0x00), High);
        assert_eq!(H264Profile::classify(0x64, 0x0c), ConstrainedHigh);
        assert_eq!(H264Profile::classify(0xf4, 0x00), PredictiveHigh444);
        assert_eq!(H264Profile::classify(0x6e, 0x00), Other(0x6e));
    }

    #[test]
    fn high_profile_goes_out_as_predictive_high_444_to_chromium() {
        let offer = parse_offer(CHROME_OFFER).unwrap();
        let p = plan(&[h264([0x67, 0x64, 0x00, 0x1f])], &offer).unwrap();
        let v = p.video.unwrap();
        assert_eq!(
            v.codec,
            SendCodec::H264 {
                profile_level_id: 0xf4001f
            }
        );
        assert_eq!((v.pt, v.rtx, v.mid.as_str()), (45, Some(46), "0"));
        assert!(p.audio.is_none());
    }

    #[test]
    fn exact_profile_wins_and_mode_0_is_never_used() {
        let offer = parse_offer(CHROME_OFFER).unwrap();
        let cb = plan(&[h264([0x67, 0x42, 0xc0, 0x1e])], &offer)
            .unwrap()
            .video
            .unwrap();
        assert_eq!(
            cb.codec,
            SendCodec::H264 {
                profile_level_id: 0x42e01f
            }
        );
        assert_eq!(cb.pt, 106);
        let main = plan(&[h264([0x67, 0x4d, 0x40, 0x28])], &offer)
            .unwrap()
            .video
            .unwrap();
        assert_eq!(
            main.codec,
            SendCodec::H264 {
                profile_level_id: 0x4d001f
            }
        );
        let only_mode0 = parse_offer(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 104\r\na=mid:0\r\na=recvonly\r\na=rtpmap:104 H264/90000\r\na=fmtp:104 packetization-mode=0;profile-level-id=42e01f\r\n",
        )
        .unwrap();
        let e = plan(&[h264([0x67, 0x42, 0xc0, 0x1e])], &only_mode0).unwrap_err();
        assert!(e.0.contains("packetization-mode=1"), "{e}");
    }

    #[test]
    fn fallback_to_any_h264_profile() {
        let offer = parse_offer(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:v\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n",
        )
        .unwrap();
        let v = plan(&[h264([0x67, 0x64, 0x00, 0x28])], &offer)
            .unwrap()
            .video
            .unwrap();
        assert_eq!(
            v.codec,
            SendCodec::H264 {
                profile_level_id: 0x42e01f
            }
        );
        assert_eq!(v.rtx, None);
    }

    /// MJPEG is never sent: with H.264 it is skipped with its reason; alone,
    /// the refusal names it whatever the offer receives.
    #[test]
    fn mjpeg_is_skipped_and_alone_refused_with_its_reason() {
        let offer = parse_offer(CHROME_OFFER).unwrap();
        let mjpeg = track(Codec::Jpeg, 90000);
        let p = plan(&[mjpeg.clone(), h264([0x67, 0x64, 0x00, 0x1f])], &offer).unwrap();
        assert_eq!(p.video.map(|v| v.track), Some(1));
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].reason, MJPEG_NOT_IN_WEBRTC);
        let e = plan(&[mjpeg], &offer).unwrap_err();
        assert!(
            e.0.starts_with("the stream has no track WebRTC can carry: MJPEG is not carried"),
            "{e}"
        );
        assert!(e.0.contains("/mjpeg"), "{e}");
    }

    #[test]
    fn audio_choices_and_aac_is_skipped_with_reason() {
        let offer = parse_offer(CHROME_OFFER).unwrap();
        let tracks = [
            h264([0x67, 0x64, 0x00, 0x1f]),
            track(
                Codec::Aac {
                    config: Bytes::from_static(&[0x12, 0x10]),
                    channels: 2,
                },
                48000,
            ),
        ];
        let p = plan(&tracks, &offer).unwrap();
        assert!(p.video.is_some());
        assert!(p.audio.is_none());
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].track, 1);
        assert!(p.skipped[0].reason.contains("AAC is not a WebRTC codec"));

        let opus = plan(&[track(Codec::Opus { channels: 2 }, 48000)], &offer).unwrap();
        let a = opus.audio.unwrap();
        assert_eq!(
            (a.pt, a.codec, a.mid.as_str()),
            (111, SendCodec::Opus { channels: 2 }, "1")
        );
        let pcma = plan(&[track(Codec::Pcma { channels: 1 }, 8000)], &offer).unwrap();
        assert_eq!(pcma.audio.unwrap().codec, SendCodec::Pcma);
        let pcmu = plan(&[track(Codec::Pcmu { channels: 1 }, 8000)], &offer).unwrap();
        assert_eq!(pcmu.audio.unwrap().pt, 0);
        let wide = plan(&[track(Codec::Pcmu { channels: 1 }, 16000)], &offer).unwrap_err();
        assert!(wide.0.contains("only 8000 Hz mono"), "{wide}");
    }

    #[test]
    fn h265_only_to_viewers_that_offer_it() {
        let offer = parse_offer(CHROME_OFFER).unwrap();
        // Main profile (general_profile_idc 1, from the SPS summary).
        let h265 = track(crate::codec::tests::h265_codec(), 90000);
        let e = plan(std::slice::from_ref(&h265), &offer).unwrap_err();
        assert!(e.0.contains("h265"), "{e}");
        assert!(e.0.contains("vp8, h264"), "{e}");

        let with = parse_offer(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 49 50 51\r\na=mid:0\r\na=recvonly\r\na=rtpmap:49 H265/90000\r\na=fmtp:49 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST\r\na=rtpmap:50 rtx/90000\r\na=fmtp:50 apt=49\r\na=rtpmap:51 H265/90000\r\na=fmtp:51 level-id=180;profile-id=2;tier-flag=0;tx-mode=SRST\r\n",
        )
        .unwrap();
        let v = plan(&[h265], &with).unwrap().video.unwrap();
        assert_eq!(
            v.codec,
            SendCodec::H265 {
                profile_id: 1,
                tier: 0,
                level: 93
            }
        );
        assert_eq!(v.rtx, Some(50));
    }

    #[test]
    fn nothing_sendable_is_an_error_naming_both_sides() {
        let offer = parse_offer(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n",
        )
        .unwrap();
        let e = plan(&[h264([0x67, 0x64, 0, 0x1f])], &offer).unwrap_err();
        assert!(e.0.contains("the stream has h264"), "{e}");
        assert!(e.0.contains("receives vp8"), "{e}");
        // A sendonly offer receives nothing.
        let sendonly = CHROME_OFFER.replace("a=recvonly", "a=sendonly");
        let e = plan(
            &[h264([0x67, 0x64, 0, 0x1f])],
            &parse_offer(&sendonly).unwrap(),
        )
        .unwrap_err();
        assert!(e.0.contains("receives nothing"), "{e}");
    }
}
