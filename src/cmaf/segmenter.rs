//! CMAF segmenter: turns bus [`Frame`]s into an init segment and LL-HLS
//! parts (`moof`+`mdat`) grouped into segments. Pure: time comes in with
//! the frames, results are polled with [`Segmenter::poll_output`].
//!
//! # Timeline
//! The *lead* track (the video track, or the audio track of an audio-only
//! stream) decides where parts and segments end. Every track's input decode
//! times are mapped linearly onto an output timeline that starts at 0 and
//! never runs backwards:
//! `out = out_base + (dts - in_base)`. A segment starts at a lead keyframe
//! whose decode time anchors the mapping; the other tracks use the same
//! anchor converted to their clock, which keeps the source's A/V alignment.
//!
//! A sample's duration is the next sample's decode time minus its own, so a
//! frame is held until the next frame of its track arrives (or
//! [`Segmenter::flush`]). When no next frame can tell (a clock jump, a
//! flush), the track's previous duration is used.
//!
//! # Clock jumps
//! A lead clock that runs backwards (or repeats) or jumps forward by more
//! than [`MAX_JUMP`] ends the current segment; the next lead keyframe starts
//! a new segment flagged as a discontinuity and re-anchors every track just
//! after the latest output time so far, so each track's `tfdt` keeps
//! increasing. A jump on another track re-bases that track alone (no
//! discontinuity: its output stays continuous).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::fmp4::{self, Sample, TrackDescription, TrackRun};
use crate::bus::{Codec, Frame, MediaKind, Track};
use crate::codec::{sanitize_access_unit, AccessUnitError};

/// A decode-time step larger than this (or one ≤ 0) is a clock jump.
pub const MAX_JUMP: Duration = Duration::from_secs(5);

/// A non-lead frame this far before the start of the current timeline
/// epoch is taken as pre-roll (e.g. audio captured just before the video
/// keyframe) and dropped; further back means its clock is unrelated.
const PREROLL_TOLERANCE: Duration = Duration::from_secs(1);

/// Why a track is left out of HLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedTrack {
    /// G.711 has no fMP4 mapping that browsers' Media Source Extensions accept.
    #[error(
        "G.711 ({codec}) can't go into fMP4 for browsers (no browser's Media Source \
         Extensions decode it): LL-HLS carries it transcoded to Opus, muxed from the \
         <path>~opus rendition (unless transcode_audio = false)"
    )]
    G711 { codec: &'static str },
    /// Motion JPEG has no fMP4 mapping browsers' Media Source Extensions play.
    #[error(
        "MJPEG is not carried over HLS (browsers' Media Source Extensions play no JPEG \
         video): watch it at the stream's /mjpeg URL (/<path>/mjpeg) or over RTSP"
    )]
    Mjpeg,
    /// RTP Opus above stereo has no standard channel mapping to put in `dOps`.
    #[error(
        "Opus with {channels} channels needs a channel mapping the RTP source does not \
         describe; HLS carries mono and stereo Opus only"
    )]
    OpusChannels { channels: u16 },
    /// Parameter sets / AudioSpecificConfig missing or unreadable.
    #[error("{codec} parameters unusable for fMP4: {reason}")]
    BadParameters { codec: &'static str, reason: String },
    #[error("the track's clock rate is 0")]
    NoClockRate,
    /// HLS renditions here are one video plus one audio track.
    #[error(
        "HLS carries one video and one audio track; track {chosen} is already the {kind} track"
    )]
    ExtraTrack { kind: &'static str, chosen: usize },
}

/// Whether `track` can be carried in fMP4 for browsers, and if not, why.
pub fn hls_support(track: &Track) -> Result<(), UnsupportedTrack> {
    fmp4::describe(track).map(|_| ())
}

/// Which of a stream's tracks go into HLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackSelection {
    /// Index (into the stream's track list) of the video track.
    pub video: Option<usize>,
    /// Index of the audio track.
    pub audio: Option<usize>,
    /// The other tracks, each with the reason it is left out.
    pub skipped: Vec<(usize, UnsupportedTrack)>,
}

/// Picks the first HLS-capable video track and the first HLS-capable audio
/// track; every other track is listed with the reason it is left out.
pub fn select_tracks(tracks: &[Arc<Track>]) -> TrackSelection {
    let mut sel = TrackSelection::default();
    for (i, t) in tracks.iter().enumerate() {
        if let Err(e) = hls_support(t) {
            sel.skipped.push((i, e));
            continue;
        }
        let (slot, kind) = match t.kind() {
            MediaKind::Video => (&mut sel.video, "video"),
            MediaKind::Audio => (&mut sel.audio, "audio"),
        };
        match *slot {
            Some(chosen) => sel
                .skipped
                .push((i, UnsupportedTrack::ExtraTrack { kind, chosen })),
            None => *slot = Some(i),
        }
    }
    sel
}

/// Segmenter settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Wanted part length; the actual Part Target is the nearest whole
    /// number of lead frames (at least one), fixed at the first frame.
    pub part_duration: Duration,
    /// Minimum segment length; segments end at the first lead keyframe after it.
    pub segment_duration: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            part_duration: Duration::from_millis(200),
            segment_duration: Duration::from_secs(1),
        }
    }
}

/// Something for the log: media was dropped or re-timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The lead track's decode time moved by `delta` ticks (≤ 0 or above
    /// [`MAX_JUMP`]); the segment was cut and the next one is a discontinuity.
    ClockJump { track: usize, delta: i64 },
    /// A non-lead track's timestamps did not fit the timeline; it was re-based alone.
    TrackRebased { track: usize },
    /// A video access unit with broken NAL framing, or an empty frame, was dropped.
    MalformedFrame {
        track: usize,
        error: AccessUnitError,
    },
    /// New parameters on `track` cannot be used; its frames are dropped
    /// until usable ones arrive.
    ParametersRejected {
        track: usize,
        error: UnsupportedTrack,
    },
    /// The stream's track set changed shape; HLS restarted on the new tracks.
    TracksChanged { selection: TrackSelection },
    /// Writing boxes failed (a 32-bit size overflowed); the media was dropped.
    EncodeFailed { error: String },
}

/// What the segmenter produced, in order.
#[derive(Debug, Clone)]
pub enum SegmenterOutput {
    /// A new init segment; the following segments use it.
    Init {
        version: u32,
        data: Bytes,
        /// RFC 6381 codec strings, video first.
        codecs: Vec<String>,
    },
    /// A segment begins; its parts follow.
    SegmentStart {
        init_version: u32,
        /// Set after a clock jump, a parameter change or a track change.
        discontinuity: bool,
        /// Wall-clock time of the segment's first frame, as handed in.
        program_date_time: SystemTime,
    },
    /// One part (`moof` + `mdat`) of the current segment.
    Part {
        data: Bytes,
        /// Sum of the lead track's sample durations in the part.
        duration: Duration,
        /// Starts with a lead keyframe (EXT-X-PART `INDEPENDENT=YES`).
        independent: bool,
    },
    /// The current segment is complete.
    SegmentEnd {
        /// Sum of its parts' durations.
        duration: Duration,
    },
    Notice(Notice),
}

#[derive(Debug, Clone, Copy)]
struct Map {
    in_base: i64,
    out_base: u64,
}

impl Map {
    fn apply(&self, dts: i64) -> i128 {
        i128::from(self.out_base) + i128::from(dts) - i128::from(self.in_base)
    }
}

#[derive(Debug, Clone)]
struct Pending {
    in_dts: i64,
    out_dts: u64,
    cts: i32,
    sync: bool,
    data: Bytes,
}

#[derive(Debug, Clone)]
enum Blocked {
    /// New parameters wait for the next segment (non-lead tracks: an init
    /// segment applies to whole segments).
    UntilSegment(Arc<Track>, Box<TrackDescription>),
    /// The current parameters cannot be written; frames are dropped.
    Unusable,
}

#[derive(Debug)]
struct Slot {
    /// Index into the stream's track list.
    bus_index: usize,
    /// fMP4 `track_ID`.
    track_id: u32,
    track: Arc<Track>,
    desc: TrackDescription,
    rate: u32,
    lead: bool,
    /// Duration to assume when the next frame cannot tell (ticks).
    nominal_duration: u32,
    map: Option<Map>,
    /// Output decode time just after the last emitted sample.
    end: Option<u64>,
    last_duration: Option<u32>,
    pending: Option<Pending>,
    /// A sample was accepted since the last re-anchor.
    epoch_started: bool,
    blocked: Option<Blocked>,
    /// The track as last announced by the stream; differs from `track`
    /// once new parameters were announced and until they are applied.
    announced: Arc<Track>,
    /// New parameters announced and not yet applied: they apply from the
    /// track's next frame.
    new_parameters: Option<Arc<Track>>,
    /// Samples of the open part, and the decode time of the first.
    part: Vec<Sample>,
    part_base: u64,
}

impl Slot {
    fn new(bus_index: usize, track_id: u32, track: Arc<Track>, desc: TrackDescription) -> Self {
        let rate = track.clock_rate;
        let nominal_duration = nominal_duration(&track);
        Slot {
            bus_index,
            track_id,
            rate,
            lead: false,
            nominal_duration,
            map: None,
            end: None,
            last_duration: None,
            pending: None,
            epoch_started: false,
            blocked: None,
            announced: track.clone(),
            new_parameters: None,
            part: Vec::new(),
            part_base: 0,
            track,
            desc,
        }
    }

    fn is_video(&self) -> bool {
        self.desc.kind == MediaKind::Video
    }

    fn fallback_duration(&self) -> u32 {
        self.last_duration.unwrap_or(self.nominal_duration)
    }

    fn max_jump(&self) -> i128 {
        i128::from(self.rate) * MAX_JUMP.as_secs() as i128
    }
}

/// The duration of one frame when nothing better is known: the nominal frame
/// rate for video (25 fps if unknown), 1024 samples for AAC, 20 ms for Opus.
fn nominal_duration(track: &Track) -> u32 {
    let rate = f64::from(track.clock_rate);
    let d = match track.codec {
        Codec::Aac { .. } => 1024.0,
        Codec::Opus { .. } => rate / 50.0,
        _ => match track.frame_rate {
            Some(fps) if fps > 0.0 => rate / fps,
            _ => rate / 25.0,
        },
    };
    (d.round() as u32).max(1)
}

fn ticks_to_duration(ticks: u64, rate: u32) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn duration_to_ticks(d: Duration, rate: u32) -> u64 {
    let t = (d.as_nanos() * u128::from(rate) + 500_000_000) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// `v` ticks at `from` Hz in ticks at `to` Hz, rounded up.
fn rescale_ceil(v: u64, from: u32, to: u32) -> u64 {
    let from = u128::from(from.max(1));
    let t = (u128::from(v) * u128::from(to)).div_ceil(from);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Signed rescale, rounded to nearest; saturates at the i64 range.
fn rescale_signed(v: i64, from: u32, to: u32) -> i64 {
    let from = i128::from(from.max(1));
    let n = i128::from(v) * i128::from(to);
    let r = if n >= 0 {
        (n + from / 2) / from
    } else {
        (n - from / 2) / from
    };
    r.clamp(i128::from(i64::MAX.wrapping_add(1)), i128::from(i64::MAX)) as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No HLS-capable track.
    NoTracks,
    /// Waiting for a lead keyframe to start a segment.
    Waiting { discontinuity: bool, reanchor: bool },
    /// A segment is open and the lead track has a pending frame.
    Running,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Input decode time of the anchoring lead keyframe.
    lead_in: i64,
    /// Its output decode time (lead ticks).
    lead_out: u64,
}

/// The CMAF segmenter of one stream. See the module docs for the timeline rules.
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    /// Lead track first.
    slots: Vec<Slot>,
    selection: TrackSelection,
    /// `(codec name, clock rate, channels)` per stream track, to notice a new track set.
    shape: Option<Vec<(&'static str, u32, Option<u16>)>>,
    state: State,
    anchor: Option<Anchor>,
    /// Output end time (ns) of tracks from before a track-set change.
    carried_end_ns: u128,
    init_version: u32,
    init_written: bool,
    init_pending: bool,
    segments_started: u64,
    segment_ticks: u64,
    part_ticks: u64,
    part_independent: bool,
    part_target: Option<Duration>,
    /// End the segment at the next lead keyframe, however short.
    force_cut: bool,
    /// `mfhd` sequence number of the last fragment.
    sequence: u32,
    out: VecDeque<SegmenterOutput>,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Segmenter {
            config,
            slots: Vec::new(),
            selection: TrackSelection::default(),
            shape: None,
            state: State::NoTracks,
            anchor: None,
            carried_end_ns: 0,
            init_version: 0,
            init_written: false,
            init_pending: false,
            segments_started: 0,
            segment_ticks: 0,
            part_ticks: 0,
            part_independent: false,
            part_target: None,
            force_cut: false,
            sequence: 0,
            out: VecDeque::new(),
        }
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<SegmenterOutput> {
        self.out.pop_front()
    }

    /// The Part Target Duration (EXT-X-PART-INF), known once the lead track's
    /// first frame duration is: the configured part duration rounded to a
    /// whole number of frames. Fixed for the segmenter's life.
    pub fn part_target(&self) -> Option<Duration> {
        self.part_target
    }

    /// Which tracks are muxed and which are left out (and why).
    pub fn selection(&self) -> &TrackSelection {
        &self.selection
    }

    /// The stream's tracks from the next frame on (the bus's in-band track
    /// set). A change in their shape (count, codecs, clock rates) restarts
    /// the muxing on the new tracks; new parameters of a muxed track (a new
    /// SPS) apply from that track's next frame, with a new init segment.
    pub fn handle_tracks(&mut self, tracks: &[Arc<Track>]) {
        if self.sync_tracks(tracks) {
            return;
        }
        for slot in &mut self.slots {
            let Some(new) = tracks.get(slot.bus_index) else {
                continue;
            };
            if new.codec != slot.announced.codec || new.dimensions != slot.announced.dimensions {
                slot.announced = new.clone();
                slot.new_parameters = Some(new.clone());
            }
        }
    }

    /// Feeds one frame of the tracks last given to [`Self::handle_tracks`]
    /// (the frame's `track` indexes them). `now` is the wall clock used for
    /// EXT-X-PROGRAM-DATE-TIME of a segment this frame starts.
    pub fn handle_frame(&mut self, frame: &Frame, now: SystemTime) {
        let Some(si) = self.slots.iter().position(|s| s.bus_index == frame.track) else {
            return;
        };
        if let Some(new) = self.slots[si].new_parameters.take() {
            let s = &self.slots[si];
            if new.codec != s.track.codec || new.dimensions != s.track.dimensions {
                self.change_parameters(si, new, frame.dts);
            }
        }
        if self.slots[si].blocked.is_some() {
            return;
        }
        let data = if self.slots[si].is_video() {
            let hevc = matches!(self.slots[si].track.codec, Codec::H265 { .. });
            match sanitize_access_unit(&frame.data, hevc) {
                Ok(d) => d,
                Err(error) => {
                    self.notice(Notice::MalformedFrame {
                        track: frame.track,
                        error,
                    });
                    return;
                }
            }
        } else if frame.data.is_empty() {
            self.notice(Notice::MalformedFrame {
                track: frame.track,
                error: AccessUnitError::Empty,
            });
            return;
        } else {
            frame.data.clone()
        };
        // pts - dts; a garbage offset (beyond the jump limit or i32) is
        // treated as none rather than breaking the run.
        let cts = frame.pts.checked_sub(frame.dts).unwrap_or(0);
        let cts = if i128::from(cts).abs() > self.slots[si].max_jump() {
            0
        } else {
            i32::try_from(cts).unwrap_or(0)
        };
        let sync = frame.keyframe || !self.slots[si].is_video();
        if self.slots[si].lead {
            self.lead_frame(si, frame.dts, cts, sync, data, now);
        } else {
            self.other_frame(si, frame.dts, cts, data);
        }
    }

    /// Ends the stream: emits held frames with their previous durations and
    /// completes the open part and segment. Frames fed afterwards start a
    /// new segment flagged as a discontinuity.
    pub fn flush(&mut self) {
        if self.state != State::Running {
            return;
        }
        // Other tracks first, so they land in the lead's last part rather
        // than in a part of their own after it.
        self.flush_others();
        if let Some(p) = self.slots[0].pending.take() {
            let d = self.slots[0].fallback_duration();
            self.emit(0, p, d);
        }
        self.close_part(true);
        self.end_segment();
        self.state = State::Waiting {
            discontinuity: true,
            reanchor: true,
        };
    }

    fn notice(&mut self, n: Notice) {
        self.out.push_back(SegmenterOutput::Notice(n));
    }

    /// Re-selects the tracks when the stream's track set changed shape;
    /// returns whether it did.
    fn sync_tracks(&mut self, tracks: &[Arc<Track>]) -> bool {
        let key = |t: &Arc<Track>| (t.codec.name(), t.clock_rate, t.codec.channels());
        if let Some(shape) = &self.shape {
            if shape.len() == tracks.len() && shape.iter().zip(tracks).all(|(a, t)| *a == key(t)) {
                return false;
            }
        }
        let first = self.shape.is_none();
        self.shape = Some(tracks.iter().map(key).collect());
        self.flush();
        self.carried_end_ns = self.max_end_ns();

        let selection = select_tracks(tracks);
        let mut slots = Vec::new();
        for i in [selection.video, selection.audio] {
            let Some(i) = i else { continue };
            let Some(track) = tracks.get(i) else { continue };
            // select_tracks only picks tracks that describe() accepted.
            let Ok(desc) = fmp4::describe(track) else {
                continue;
            };
            let mut slot = Slot::new(i, slots.len() as u32 + 1, track.clone(), desc);
            // Video when there is one (it alone has keyframes), else audio.
            slot.lead = slots.is_empty();
            slots.push(slot);
        }
        self.slots = slots;
        if !first {
            self.notice(Notice::TracksChanged {
                selection: selection.clone(),
            });
        }
        self.selection = selection;
        self.anchor = None;
        if self.slots.is_empty() {
            self.state = State::NoTracks;
            return true;
        }
        if self.init_written {
            self.init_version += 1;
        }
        self.init_pending = true;
        self.state = State::Waiting {
            discontinuity: self.segments_started > 0,
            reanchor: true,
        };
        true
    }

    /// The latest output time of any track so far, in nanoseconds.
    fn max_end_ns(&self) -> u128 {
        self.slots
            .iter()
            .filter_map(|s| {
                s.end
                    .map(|e| u128::from(e) * 1_000_000_000 / u128::from(s.rate))
            })
            .fold(self.carried_end_ns, u128::max)
    }

    /// New codec parameters on a muxed track (ISO/IEC 14496-15 allows no
    /// change inside a sample entry, so a new init segment is needed). `dts`
    /// is the decode time of the frame carrying them.
    fn change_parameters(&mut self, si: usize, new: Arc<Track>, dts: i64) {
        let bus_index = self.slots[si].bus_index;
        if new.clock_rate != self.slots[si].rate {
            // A clock change is a track-set change; the caller's new track
            // list (see sync_tracks) restarts the muxer.
            return;
        }
        let described = fmp4::describe(&new);
        if !self.slots[si].lead {
            match described {
                Ok(desc) => {
                    // Frames with the new parameters are dropped until the
                    // next segment, which is cut at the next lead keyframe.
                    self.finish_pending(si, dts);
                    self.slots[si].blocked = Some(Blocked::UntilSegment(new, Box::new(desc)));
                    self.force_cut = true;
                }
                Err(error) => {
                    self.finish_pending(si, dts);
                    self.slots[si].blocked = Some(Blocked::Unusable);
                    self.notice(Notice::ParametersRejected {
                        track: bus_index,
                        error,
                    });
                }
            }
            return;
        }
        // Lead: close what was written with the old parameters; the frame
        // carrying the change starts the next segment if it is a keyframe.
        if self.state == State::Running {
            self.flush_others();
            self.finish_pending(si, dts);
            self.end_segment();
            self.state = State::Waiting {
                discontinuity: true,
                reanchor: false,
            };
        }
        match described {
            Ok(desc) => {
                let slot = &mut self.slots[si];
                slot.track = new;
                slot.desc = desc;
                slot.blocked = None;
                self.init_version += u32::from(self.init_written);
                self.init_pending = true;
            }
            Err(error) => {
                self.slots[si].blocked = Some(Blocked::Unusable);
                self.notice(Notice::ParametersRejected {
                    track: bus_index,
                    error,
                });
            }
        }
    }

    /// Emits the held frame of slot `si`, its duration taken from `next_dts`
    /// when that is a sane step, else the previous duration.
    fn finish_pending(&mut self, si: usize, next_dts: i64) {
        let Some(p) = self.slots[si].pending.take() else {
            return;
        };
        let s = &self.slots[si];
        let delta = i128::from(next_dts) - i128::from(p.in_dts);
        let d = if delta > 0 && delta <= s.max_jump() {
            u32::try_from(delta).unwrap_or(u32::MAX)
        } else {
            s.fallback_duration()
        };
        self.emit(si, p, d);
    }

    /// Emits the held frames of the non-lead tracks with their previous
    /// durations (the segment is ending without their next frames).
    fn flush_others(&mut self) {
        for si in 1..self.slots.len() {
            if let Some(p) = self.slots[si].pending.take() {
                let d = self.slots[si].fallback_duration();
                self.emit(si, p, d);
            }
        }
    }

    fn lead_frame(
        &mut self,
        si: usize,
        dts: i64,
        cts: i32,
        sync: bool,
        data: Bytes,
        now: SystemTime,
    ) {
        match self.state {
            State::NoTracks => {}
            State::Waiting {
                discontinuity,
                reanchor,
            } => {
                if sync {
                    self.start_segment(si, dts, cts, data, now, discontinuity, reanchor);
                }
            }
            State::Running => {
                let Some(p) = self.slots[si].pending.take() else {
                    // Running always holds the lead frame that opened the
                    // segment; recover by starting afresh.
                    self.state = State::Waiting {
                        discontinuity: true,
                        reanchor: true,
                    };
                    return self.lead_frame(si, dts, cts, sync, data, now);
                };
                let delta = i128::from(dts) - i128::from(p.in_dts);
                if delta <= 0 || delta > self.slots[si].max_jump() {
                    let track = self.slots[si].bus_index;
                    self.notice(Notice::ClockJump {
                        track,
                        delta: i64::try_from(delta).unwrap_or(i64::MAX),
                    });
                    self.flush_others();
                    let d = self.slots[si].fallback_duration();
                    self.emit(si, p, d);
                    self.end_segment();
                    self.state = State::Waiting {
                        discontinuity: true,
                        reanchor: true,
                    };
                    return self.lead_frame(si, dts, cts, sync, data, now);
                }
                // delta is within (0, MAX_JUMP × rate], so it fits u32 for
                // any rate up to ~858 MHz; saturate beyond that.
                let d = u32::try_from(delta).unwrap_or(u32::MAX);
                self.emit(si, p, d);
                let target = duration_to_ticks(self.config.segment_duration, self.slots[si].rate);
                if sync && (self.segment_ticks >= target || self.force_cut) {
                    self.end_segment();
                    let disc = self
                        .slots
                        .iter()
                        .any(|s| matches!(s.blocked, Some(Blocked::UntilSegment(..))));
                    self.start_segment(si, dts, cts, data, now, disc, false);
                } else {
                    let out = self.map_lead(si, dts);
                    self.slots[si].pending = Some(Pending {
                        in_dts: dts,
                        out_dts: out,
                        cts,
                        sync,
                        data,
                    });
                }
            }
        }
    }

    /// Output decode time of a lead frame under the current mapping, never
    /// before the lead track's end (a frame that would be is caught by the
    /// jump check first).
    fn map_lead(&self, si: usize, dts: i64) -> u64 {
        let s = &self.slots[si];
        let m = s.map.map_or(0, |m| m.apply(dts));
        let floor = i128::from(s.end.unwrap_or(0));
        u64::try_from(m.max(floor)).unwrap_or(u64::MAX)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_segment(
        &mut self,
        si: usize,
        dts: i64,
        cts: i32,
        data: Bytes,
        now: SystemTime,
        mut discontinuity: bool,
        reanchor: bool,
    ) {
        let lead = &self.slots[si];
        let fits = match (lead.map, lead.end) {
            (Some(m), Some(end)) => {
                let v = m.apply(dts);
                v >= i128::from(end) && v <= i128::from(end) + lead.max_jump()
            }
            _ => false,
        };
        if reanchor || !fits {
            let lead_out = {
                let ns = self.max_end_ns();
                let t = (ns * u128::from(lead.rate)).div_ceil(1_000_000_000);
                u64::try_from(t).unwrap_or(u64::MAX)
            };
            self.anchor = Some(Anchor {
                lead_in: dts,
                lead_out,
            });
            for s in &mut self.slots {
                s.map = None;
                s.epoch_started = false;
            }
            self.slots[si].map = Some(Map {
                in_base: dts,
                out_base: lead_out,
            });
            // The source's timeline broke; players must reset.
            discontinuity |= self.segments_started > 0;
        }
        // Parameters held for a segment boundary take effect now.
        for s in &mut self.slots {
            if let Some(Blocked::UntilSegment(track, desc)) = s.blocked.take() {
                s.track = track;
                s.desc = *desc;
                // Carried-over samples were encoded with the old parameters.
                s.part.clear();
                self.init_version += u32::from(self.init_written);
                self.init_pending = true;
                discontinuity = true;
            }
        }
        if self.init_pending {
            let descs: Vec<(u32, &TrackDescription)> =
                self.slots.iter().map(|s| (s.track_id, &s.desc)).collect();
            match fmp4::init_segment(&descs) {
                Ok(data) => {
                    let codecs = self
                        .slots
                        .iter()
                        .map(|s| s.desc.codec_string.clone())
                        .collect();
                    self.out.push_back(SegmenterOutput::Init {
                        version: self.init_version,
                        data,
                        codecs,
                    });
                    self.init_written = true;
                    self.init_pending = false;
                }
                Err(e) => {
                    self.notice(Notice::EncodeFailed {
                        error: e.to_string(),
                    });
                    self.state = State::Waiting {
                        discontinuity,
                        reanchor: true,
                    };
                    return;
                }
            }
        }
        self.out.push_back(SegmenterOutput::SegmentStart {
            init_version: self.init_version,
            discontinuity: discontinuity && self.segments_started > 0,
            program_date_time: now,
        });
        self.segments_started += 1;
        self.segment_ticks = 0;
        self.force_cut = false;
        let out = self.map_lead(si, dts);
        self.slots[si].pending = Some(Pending {
            in_dts: dts,
            out_dts: out,
            cts,
            sync: true,
            data,
        });
        self.slots[si].epoch_started = true;
        self.state = State::Running;
    }

    fn other_frame(&mut self, si: usize, dts: i64, cts: i32, data: Bytes) {
        if self.state != State::Running {
            // No open segment: nothing to put the frame in.
            return;
        }
        if let Some(p) = self.slots[si].pending.take() {
            let s = &self.slots[si];
            let m = s.map.map_or(i128::MIN, |m| m.apply(dts));
            let delta = m.saturating_sub(i128::from(p.out_dts));
            if delta > 0 && delta <= s.max_jump() {
                let d = u32::try_from(delta).unwrap_or(u32::MAX);
                self.emit(si, p, d);
                self.slots[si].pending = Some(Pending {
                    in_dts: dts,
                    out_dts: u64::try_from(m).unwrap_or(u64::MAX),
                    cts,
                    sync: true,
                    data,
                });
                return;
            }
            // This track's clock jumped: close its run and re-place it.
            let d = self.slots[si].fallback_duration();
            self.emit(si, p, d);
            self.slots[si].map = None;
        }
        let Some(out) = self.place(si, dts) else {
            return;
        };
        let s = &mut self.slots[si];
        s.pending = Some(Pending {
            in_dts: dts,
            out_dts: out,
            cts,
            sync: true,
            data,
        });
        s.epoch_started = true;
    }

    /// Output decode time for a non-lead frame with no held predecessor, or
    /// `None` to drop it as pre-roll.
    fn place(&mut self, si: usize, dts: i64) -> Option<u64> {
        let anchor = self.anchor?;
        let lead_rate = self.slots[0].rate;
        let lead_now = self.slots[0]
            .pending
            .as_ref()
            .map(|p| p.out_dts)
            .or(self.slots[0].end)
            .unwrap_or(anchor.lead_out);
        let s = &mut self.slots[si];
        let epoch_start = rescale_ceil(anchor.lead_out, lead_rate, s.rate);
        let floor = i128::from(s.end.unwrap_or(0).max(epoch_start));
        let map = *s.map.get_or_insert(Map {
            in_base: rescale_signed(anchor.lead_in, lead_rate, s.rate),
            out_base: epoch_start,
        });
        let m = map.apply(dts);
        if m >= floor && m <= floor + s.max_jump() {
            return u64::try_from(m).ok();
        }
        let tolerance = i128::from(s.rate) * PREROLL_TOLERANCE.as_millis() as i128 / 1000;
        if m < floor && !s.epoch_started && floor - m <= tolerance {
            return None;
        }
        // The track's clock does not line up with the lead's: start it at
        // the lead's current position.
        let target = u64::try_from(floor)
            .unwrap_or(0)
            .max(rescale_ceil(lead_now, lead_rate, s.rate));
        s.map = Some(Map {
            in_base: dts,
            out_base: target,
        });
        let track = s.bus_index;
        self.notice(Notice::TrackRebased { track });
        Some(target)
    }

    /// Appends a sample with a now-known duration to the open part; closes
    /// the part when the lead track has filled it.
    fn emit(&mut self, si: usize, p: Pending, duration: u32) {
        let s = &mut self.slots[si];
        if s.part.is_empty() {
            s.part_base = p.out_dts;
        }
        let lead = s.lead;
        let rate = s.rate;
        let s_nominal = s.nominal_duration;
        let first_lead = lead && s.part.is_empty();
        s.part.push(Sample {
            duration,
            cts: p.cts,
            sync: p.sync,
            data: p.data,
        });
        s.end = Some(p.out_dts.saturating_add(u64::from(duration)));
        s.last_duration = Some(duration);
        if !lead {
            return;
        }
        if first_lead {
            self.part_independent = p.sync;
        }
        self.part_ticks += u64::from(duration);
        self.segment_ticks += u64::from(duration);
        let config = self.config;
        let nominal = s_nominal;
        let target = *self.part_target.get_or_insert_with(|| {
            // A whole number of frames, so parts can be close to the
            // target without exceeding it (draft-pantos-hls-rfc8216bis
            // §4.4.4.9: at most the target, at least 85 % of it). The first
            // measured duration decides, unless it is implausible (a gap or
            // a stutter at the start), then the nominal one does.
            let frame = if duration >= nominal / 4 && duration <= nominal.saturating_mul(4) {
                duration
            } else {
                nominal
            };
            let frame = u64::from(frame.max(1));
            let want = duration_to_ticks(config.part_duration, rate);
            let n = ((want + frame / 2) / frame).max(1);
            ticks_to_duration(n * frame, rate)
        });
        let target_ticks = duration_to_ticks(target, rate);
        // Close once the part is within half a frame of the target: the
        // next frame would overshoot it.
        if self.part_ticks + u64::from(duration) / 2 >= target_ticks {
            self.close_part(false);
        }
    }

    /// Writes the open part. Without lead samples it is kept open (its
    /// other-track samples carry over) unless `force`.
    fn close_part(&mut self, force: bool) {
        let lead_has = self.slots.first().is_some_and(|s| !s.part.is_empty());
        let any = self.slots.iter().any(|s| !s.part.is_empty());
        if !any || (!lead_has && !force) {
            return;
        }
        let duration = if lead_has {
            ticks_to_duration(self.part_ticks, self.slots[0].rate)
        } else {
            self.slots
                .iter()
                .map(|s| {
                    let t: u64 = s.part.iter().map(|x| u64::from(x.duration)).sum();
                    ticks_to_duration(t, s.rate)
                })
                .max()
                .unwrap_or_default()
        };
        let runs: Vec<TrackRun<'_>> = self
            .slots
            .iter()
            .filter(|s| !s.part.is_empty())
            .map(|s| TrackRun {
                track_id: s.track_id,
                base_media_decode_time: s.part_base,
                samples: &s.part,
            })
            .collect();
        self.sequence = self.sequence.wrapping_add(1);
        let result = fmp4::fragment(self.sequence, &runs);
        match result {
            Ok(data) => self.out.push_back(SegmenterOutput::Part {
                data,
                duration,
                independent: self.part_independent,
            }),
            Err(e) => self.notice(Notice::EncodeFailed {
                error: e.to_string(),
            }),
        }
        for s in &mut self.slots {
            s.part.clear();
        }
        self.part_ticks = 0;
        self.part_independent = false;
    }

    fn end_segment(&mut self) {
        if self.state != State::Running {
            return;
        }
        self.close_part(false);
        let rate = self.slots.first().map_or(1, |s| s.rate);
        self.out.push_back(SegmenterOutput::SegmentEnd {
            duration: ticks_to_duration(self.segment_ticks, rate),
        });
        self.segment_ticks = 0;
        self.state = State::Waiting {
            discontinuity: false,
            reanchor: false,
        };
    }
}
