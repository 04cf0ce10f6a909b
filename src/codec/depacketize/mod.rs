//! [`Depacketizer`]: one track's RTP packets to access units (frames), the
//! reverse of [`super::Payloader`]. Sans-IO: [`Depacketizer::push`] a
//! packet, then [`Depacketizer::pull`] until `None`.
//!
//! Formats: H.264 (RFC 6184 packetization-mode 0 and 1), H.265 (RFC 7798
//! without DONL), AAC (RFC 3640 `mpeg4-generic`), Opus (RFC 7587), G.711
//! (RFC 3551 PCMU/PCMA) and JPEG (RFC 2435, rebuilt into complete JFIF
//! images).
//!
//! Loss never ends anything: an access unit that cannot be rebuilt whole is
//! handed out as [`Output::Dropped`] with a [`DropReason`], and video
//! resumes at the next random access point.

mod aac;
mod h26x;
mod jpeg;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Codec, Track};

/// The largest video access unit (or JPEG image) rebuilt, in bytes; a
/// larger one is dropped ([`DropReason::TooLarge`]) so a camera cannot make
/// us buffer without bound. A 4K intra picture at a high bitrate is 1-3 MiB.
pub const MAX_ACCESS_UNIT_SIZE: usize = 8 << 20;

/// The most outputs kept between [`Depacketizer::pull`] calls; beyond, the
/// oldest are discarded (the caller is expected to pull after each push).
const MAX_QUEUED: usize = 1024;

/// One received RTP packet, as retina's `ReceivedPacket` describes it
/// (RFC 3550 §5.1 fields; header already parsed, padding removed).
#[derive(Clone, Copy, Debug)]
pub struct RtpPacket<'a> {
    pub sequence_number: u16,
    /// RTP timestamp in the track's clock rate, as sent (32 bits, wrapping).
    pub timestamp: u32,
    /// The marker bit: the last packet of a video access unit (RFC 6184
    /// §5.1, RFC 7798 §4.1, RFC 2435 §3), or of a fragmented AAC AU.
    pub marker: bool,
    /// The RTP payload.
    pub payload: &'a [u8],
    /// Packets lost just before this one, as the RTP receiver counted them
    /// from sequence numbers (retina's `ReceivedPacket::loss`).
    pub loss: u16,
}

/// What [`Depacketizer::new`] needs to know of a track: its SDP `rtpmap`
/// and `fmtp` (RFC 8866 §6.6, §6.15).
#[derive(Clone, Copy, Debug)]
pub struct RtpFormat<'a> {
    /// Encoding name, any case: `H264`, `H265`, `MPEG4-GENERIC`, `OPUS`,
    /// `PCMU`, `PCMA`, `JPEG`.
    pub encoding_name: &'a str,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (`rtpmap`'s encoding parameters); `None` means 1.
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters after the payload type, e.g.
    /// `packetization-mode=1;profile-level-id=42c01e`.
    pub fmtp: Option<&'a str>,
}

impl RtpFormat<'_> {
    /// Our description of the track from its SDP alone, or `None` while its
    /// codec parameters are unknown (they then come in band) or when the
    /// SDP's parameters don't parse:
    /// - H.264: `sprop-parameter-sets` (base64 SPS,PPS; RFC 6184 §8.1);
    /// - H.265: `sprop-vps`, `sprop-sps`, `sprop-pps` (RFC 7798 §7.1);
    /// - AAC: `config` (hex AudioSpecificConfig; RFC 3640 §4.1), channels
    ///   from it, else from `rtpmap`;
    /// - Opus: clock rate 48 kHz, channels from `rtpmap` (RFC 7587 §7);
    /// - PCMA/PCMU: channels from `rtpmap`; JPEG: no parameters (RFC 2435).
    pub fn track(&self) -> Option<Track> {
        use base64::Engine as _;
        let fmtp = Fmtp(self.fmtp.unwrap_or(""));
        let b64 = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .filter(|b| !b.is_empty())
                .map(Bytes::from)
        };
        let channels = self.channels.unwrap_or(1).max(1);
        let codec = match self.encoding_name.to_ascii_uppercase().as_str() {
            "H264" => {
                let mut sets = fmtp.get("sprop-parameter-sets")?.split(',').map(b64);
                Codec::H264 {
                    sps: sets.next()??,
                    pps: sets.next()??,
                }
            }
            "H265" => Codec::H265 {
                vps: b64(fmtp.get("sprop-vps")?)?,
                sps: b64(fmtp.get("sprop-sps")?)?,
                pps: b64(fmtp.get("sprop-pps")?)?,
            },
            "MPEG4-GENERIC" => {
                let hex = fmtp.get("config")?;
                let config: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<_>>()?;
                let parsed = crate::codec::AacConfig::parse(&config).ok()?;
                // ISO/IEC 14496-3 Table 1.19; 0: the program config
                // element says, the rtpmap stands in.
                let from_config = match parsed.channel_configuration {
                    c @ 1..=6 => u16::from(c),
                    7 => 8,
                    _ => channels,
                };
                Codec::Aac {
                    channels: from_config,
                    config: Bytes::from(config),
                }
            }
            "OPUS" => return Some(Track::new(Codec::Opus { channels }, 48_000)),
            "PCMA" => Codec::Pcma { channels },
            "PCMU" => Codec::Pcmu { channels },
            "JPEG" => Codec::Jpeg,
            _ => return None,
        };
        Track::try_new(codec, self.clock_rate).ok()
    }
}

/// The RTP format cannot be depacketized (a track the caller should leave
/// out, not an error of the session).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported RTP format: {0}")]
pub struct Unsupported(pub String);

/// In-band parameter sets (H.264 §7.3.2.1 SPS, §7.3.2.2 PPS; H.265 VPS,
/// SPS, PPS), each a NAL unit without start code or length prefix: the
/// latest of each type seen in the stream so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSets {
    /// H.265 only.
    pub vps: Option<Bytes>,
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

/// One depacketized access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit {
    /// RTP timestamp of the access unit (32 bits as sent: the caller
    /// extends it). For AAC, the packet's timestamp advanced by
    /// `constantDuration` (1024 by default) per earlier AU in the packet.
    pub timestamp: u32,
    /// H.264/H.265: the NAL units each with a 4-byte big-endian length
    /// prefix (AVCC/HVCC, ISO/IEC 14496-15), in-band parameter sets kept
    /// where they came (also given in [`Self::new_param_sets`]). JPEG: one
    /// complete JFIF image (SOI .. EOI). AAC: one raw access unit (no ADTS).
    /// G.711: the samples. Opus: one Opus packet.
    pub data: Bytes,
    /// A random access point by our own codec code: H.264 IDR (type 5),
    /// H.265 IRAP (types 16..=23: BLA, IDR, CRA); always true for JPEG and
    /// audio.
    pub keyframe: bool,
    /// H.265 RASL picture (NAL unit types 8, 9): it references pictures
    /// before the preceding IRAP picture in decoding order, so a decoder
    /// that starts at that IRAP (a CRA where a reader joins) cannot decode
    /// it and must not be given it (H.265 §8.1.3, NoRaslOutputFlag). A
    /// consumer that starts a reader at a CRA drops frames with this flag
    /// until the next frame without it. Always false for other codecs.
    /// (The depacketizer drops these itself after the CRA or BLA at which
    /// it resumed: [`DropReason::NoReference`].)
    pub leading_skippable: bool,
    /// The stream's in-band parameter sets when this access unit carried a
    /// new or changed one (the track should be updated before this frame);
    /// `None` otherwise.
    pub new_param_sets: Option<ParamSets>,
}

/// Why an access unit was dropped. The caller counts these (e.g.
/// `rtspgate_frames_dropped_total{reason}`); none ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A sequence number gap (or the packet's `loss`) inside or just
    /// before the access unit.
    Loss,
    /// A fragment (FU-A, FU, JPEG fragment offset > 0) without its start,
    /// e.g. the first packet of the session.
    MidFragment,
    /// A packet shorter than its headers or lengths say, or an access unit
    /// that ended (new timestamp) inside a fragment.
    Truncated,
    /// Invalid bits: a forbidden NAL unit header, a packet type the
    /// negotiated mode does not allow, fragments out of order.
    Corrupt,
    /// Larger than [`MAX_ACCESS_UNIT_SIZE`] (video, JPEG) or the AU size
    /// fields allow (AAC).
    TooLarge,
    /// Valid but not handled: H.265 PACI packets, AAC interleaving, JPEG
    /// types other than 0/1 (and 64/65), in-band JPEG tables missing.
    Unsupported,
    /// A video access unit that needs a reference picture that was lost or
    /// never received: the ones after a drop (or at the start) until the
    /// next random access point, and H.265 RASL pictures after the CRA/BLA
    /// where output resumed.
    NoReference,
}

impl DropReason {
    /// Every reason, in the order of [`Self::index`].
    pub const ALL: [DropReason; 7] = [
        DropReason::Loss,
        DropReason::MidFragment,
        DropReason::Truncated,
        DropReason::Corrupt,
        DropReason::TooLarge,
        DropReason::Unsupported,
        DropReason::NoReference,
    ];

    /// Position in [`Self::ALL`], for per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lowercase label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::MidFragment => "mid_fragment",
            DropReason::Truncated => "truncated",
            DropReason::Corrupt => "corrupt",
            DropReason::TooLarge => "too_large",
            DropReason::Unsupported => "unsupported",
            DropReason::NoReference => "no_reference",
        }
    }
}

/// What [`Depacketizer::pull`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Frame(AccessUnit),
    /// An access unit that was (partly) received but is not handed out.
    Dropped {
        timestamp: u32,
        reason: DropReason,
    },
}

#[derive(Debug)]
enum Kind {
    H26x(h26x::H26x),
    Aac(aac::Aac),
    Jpeg(jpeg::Jpeg),
    /// G.711 (`channels` bytes per sample frame) or Opus (`channels == 0`:
    /// any non-empty payload).
    Simple {
        channels: usize,
    },
}

/// Rebuilds one track's access units from its RTP packets. See the module
/// docs; one per track per RTP session.
#[derive(Debug)]
pub struct Depacketizer {
    kind: Kind,
    /// Sequence number the next packet should carry.
    next_seq: Option<u16>,
    out: VecDeque<Output>,
}

impl Depacketizer {
    /// A depacketizer for the RTP format `format`.
    ///
    /// Errors ([`Unsupported`]): an encoding name not listed in
    /// [`RtpFormat::encoding_name`]; H.264 `packetization-mode=2`
    /// (interleaved: STAP-B, MTAP, FU-B); H.265 `sprop-max-don-diff` > 0
    /// (DONL fields, transmission order ≠ decoding order); AAC without
    /// `sizelength`, or a `mode` other than `AAC-hbr`/`AAC-lbr`; a zero
    /// clock rate.
    pub fn new(format: &RtpFormat<'_>) -> Result<Depacketizer, Unsupported> {
        if format.clock_rate == 0 {
            return Err(Unsupported("clock rate 0".to_owned()));
        }
        let fmtp = Fmtp(format.fmtp.unwrap_or(""));
        let name = format.encoding_name.to_ascii_uppercase();
        let channels = usize::from(format.channels.unwrap_or(1).max(1));
        let kind = match name.as_str() {
            "H264" => Kind::H26x(h26x::H26x::new_h264(&fmtp)?),
            "H265" => Kind::H26x(h26x::H26x::new_h265(&fmtp)?),
            "MPEG4-GENERIC" => Kind::Aac(aac::Aac::new(&fmtp)?),
            "JPEG" => Kind::Jpeg(jpeg::Jpeg::new()),
            "PCMU" | "PCMA" => Kind::Simple { channels },
            "OPUS" => Kind::Simple { channels: 0 },
            other => return Err(Unsupported(format!("encoding {other:?}"))),
        };
        Ok(Depacketizer {
            kind,
            next_seq: None,
            out: VecDeque::new(),
        })
    }

    /// Takes one packet of the track, in arrival order. Never fails: what
    /// cannot be used comes out of [`Self::pull`] as [`Output::Dropped`].
    ///
    /// A gap is the packet's `loss` or a sequence number other than the
    /// previous one plus 1 (also backwards: a duplicate or reordered packet
    /// breaks the access unit it falls into, and the depacketizer resyncs).
    pub fn push(&mut self, pkt: RtpPacket<'_>) {
        let gap = pkt.loss > 0 || self.next_seq.is_some_and(|s| s != pkt.sequence_number);
        self.next_seq = Some(pkt.sequence_number.wrapping_add(1));
        let out = &mut self.out;
        match &mut self.kind {
            Kind::H26x(d) => d.push(&pkt, gap, out),
            Kind::Aac(d) => d.push(&pkt, gap, out),
            Kind::Jpeg(d) => d.push(&pkt, gap, out),
            Kind::Simple { channels } => {
                let ok = !pkt.payload.is_empty()
                    && (*channels == 0 || pkt.payload.len().is_multiple_of(*channels));
                out.push_back(if ok {
                    Output::Frame(AccessUnit {
                        timestamp: pkt.timestamp,
                        data: Bytes::copy_from_slice(pkt.payload),
                        keyframe: true,
                        leading_skippable: false,
                        new_param_sets: None,
                    })
                } else {
                    Output::Dropped {
                        timestamp: pkt.timestamp,
                        reason: DropReason::Corrupt,
                    }
                });
            }
        }
        while self.out.len() > MAX_QUEUED {
            self.out.pop_front();
        }
    }

    /// The next access unit or drop, in order; `None` when nothing more is
    /// ready (call after every [`Self::push`] until `None`).
    pub fn pull(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Hands out what is still buffered at the end of the stream: a video
    /// access unit that never got its marker bit (complete if it does not
    /// end inside a fragment). Call before dropping the depacketizer when
    /// the session ends; then [`Self::pull`].
    pub fn flush(&mut self) {
        let out = &mut self.out;
        match &mut self.kind {
            Kind::H26x(d) => d.flush(out),
            Kind::Aac(d) => d.flush(out),
            Kind::Jpeg(d) => d.flush(out),
            Kind::Simple { .. } => {}
        }
    }
}

/// `a=fmtp` parameters (`key=value;key=value`, keys case-insensitive,
/// RFC 8866 §6.15).
pub(crate) struct Fmtp<'a>(&'a str);

impl<'a> Fmtp<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.0.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    /// A numeric parameter; `Ok(None)` when absent, an error when present
    /// but not a number.
    pub(crate) fn number(&self, key: &str) -> Result<Option<u32>, Unsupported> {
        self.get(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| Unsupported(format!("fmtp {key}={v:?} is not a number")))
            })
            .transpose()
    }
}
