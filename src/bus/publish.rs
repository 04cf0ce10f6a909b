//! What a source hands to the bus, and the sink through which a protocol
//! server publishes a stream it receives (RTSP ANNOUNCE/RECORD, later WHIP).
//!
//! The rules that turn a source's frames into bus items (wait for codec
//! parameters and a keyframe, GOP starts, timestamps, jitter) live in one
//! place, `ingest`'s publisher; a server in `egress` reaches them through
//! [`PublishSink`], which `lib.rs` wires to ingest, so no egress imports
//! ingest.

use std::time::Instant;

use bytes::Bytes;

use super::{MediaKind, Track};

/// One track of a source as described when its session starts (SDP of
/// DESCRIBE or ANNOUNCE, a file's sample entries).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTrack {
    pub kind: MediaKind,
    /// Clock rate in Hz of the track's timestamps.
    pub clock_rate: u32,
    /// The full description, or `None` while codec parameters are unknown
    /// (e.g. an H.264 SDP without `sprop-parameter-sets`, RFC 6184 §8.1:
    /// they then arrive in band).
    pub track: Option<Track>,
}

impl SourceTrack {
    /// A track whose codec parameters are known.
    pub fn known(track: Track) -> Self {
        SourceTrack {
            kind: track.kind(),
            clock_rate: track.clock_rate,
            track: Some(track),
        }
    }
}

/// One depacketized frame of a source, before the bus's timeline.
#[derive(Clone, Debug)]
pub struct SourceFrame {
    /// Index into the session's [`SourceTrack`]s.
    pub track: usize,
    /// Presentation timestamp in the track's clock units since the start of
    /// the source session (RTP timestamp minus the session's first one,
    /// extended); may be negative.
    pub pts: i64,
    /// Decoding timestamp, same units; `None` when the source does not
    /// signal one (RTP): the publisher then derives it for H.264/H.265
    /// (`codec::DtsExtractor`) and takes `pts` for other codecs.
    pub dts: Option<i64>,
    /// Video: NAL units each with a 4-byte big-endian length prefix
    /// (ISO/IEC 14496-15). Audio: one raw frame (AAC access unit without
    /// ADTS, G.711 samples, Opus packet).
    pub data: Bytes,
    /// Whether the source marks this frame a random access point (an RTP
    /// depacketizer's flag, an MP4 sync sample); see the publisher's
    /// random-access policy for whether it is believed.
    pub source_keyframe: bool,
    /// RTP packets lost just before this frame (sequence-number gaps).
    pub loss: u32,
}

/// Why a stream cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The path exists already: a configured source or another publisher.
    #[error("the path {0:?} is in use by another source")]
    PathInUse(String),
    /// Nobody may publish to this path: it is not configured with
    /// `source = "publisher"` and `allow_unconfigured_publish` is off.
    #[error("the path {0:?} does not take publishers (configure it with source = \"publisher\")")]
    NotPublishable(String),
    /// The announced tracks cannot be carried, in plain words.
    #[error("unusable tracks: {0}")]
    Tracks(String),
}

/// Where a protocol server publishes the streams it receives: it opens a
/// [`Publication`] for a path with the announced tracks and pushes frames
/// into it. Implemented by ingest (wired in `lib.rs`).
pub trait PublishSink: Send + Sync {
    /// Starts publishing `path` with `tracks` (frames' `track` index them).
    fn open(
        &self,
        path: &str,
        tracks: Vec<SourceTrack>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError>;

    /// Starts publishing `path` with tracks that arrive as RTP (RTSP
    /// RECORD): each is received with the ingest side's RTP receiver (the
    /// same depacketizers, parameter-set updates and timestamps as a
    /// pulled camera); packets go to [`Publication::push_rtp`]. A track
    /// whose format can't be received is an `Err(Tracks)`.
    fn open_rtp(
        &self,
        path: &str,
        tracks: Vec<RtpSource>,
        now: Instant,
    ) -> Result<Box<dyn Publication>, PublishError>;
}

/// One announced RTP track (an SDP media section of ANNOUNCE): what
/// `codec::RtpFormat` borrows, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct RtpSource {
    /// `rtpmap` encoding name, e.g. `H264`, `MPEG4-GENERIC`.
    pub encoding_name: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels of the `rtpmap`, if given.
    pub channels: Option<u16>,
    /// `a=fmtp` parameters after the payload type.
    pub fmtp: Option<String>,
    /// `a=framerate`, if given.
    pub framerate: Option<f64>,
}

impl RtpSource {
    /// The borrowed form the codec layer takes.
    pub fn format(&self) -> crate::codec::RtpFormat<'_> {
        crate::codec::RtpFormat {
            encoding_name: &self.encoding_name,
            clock_rate: self.clock_rate,
            channels: self.channels,
            fmtp: self.fmtp.as_deref(),
        }
    }
}

/// One stream being published; dropping it ends the stream for its readers.
pub trait Publication: Send {
    /// One frame, received at `now`. `Err` (in plain words) means the
    /// publication cannot go on and must be ended, e.g. codec parameters
    /// never arrived.
    fn push(&mut self, frame: SourceFrame, now: Instant) -> Result<(), String>;

    /// New codec parameters for `track`, from its next frame on (e.g. an
    /// in-band SPS).
    fn set_parameters(&mut self, track: usize, params: Track, now: Instant);

    /// One RTP packet of `track` of a publication opened with
    /// [`PublishSink::open_rtp`], received at `now`. `Err` as for
    /// [`Self::push`]; also for a publication not opened for RTP.
    fn push_rtp(
        &mut self,
        track: usize,
        packet: crate::codec::RtpPacket<'_>,
        now: Instant,
    ) -> Result<(), String>;
}
