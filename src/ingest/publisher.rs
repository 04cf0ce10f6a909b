//! The pure core every source feeds the bus through: the RTSP pull (and its
//! Opus side session), the demo clip, and streams pushed to the RTSP server
//! ([`crate::bus::PublishSink`]). No sockets and no clock of its own: the
//! source's I/O shell hands in [`Input`]s with the time they happened and
//! carries out the [`Action`]s that come back (the str0m pattern), usually
//! through [`BusPublisher`].
//!
//! The rules:
//! - A session's tracks are announced on the bus once every one of them
//!   has codec parameters and, when there is video, at its first random
//!   access point; frames before that are dropped, since nothing could
//!   decode them. Parameters missing from the session description are
//!   waited for in band ([`MissingParameterSets`]).
//! - New parameters mid-stream (a new SPS) are announced in band, before
//!   the frame they apply to.
//! - GOP starts are video random access points (H.264 IDR, H.265 IRAP) as
//!   the codec layer finds them in the access unit ([`RandomAccess`]), or
//!   every frame of an audio-only stream.
//! - Timestamps go through one [`Timeline`] per track, kept across
//!   sessions, so the bus's timeline continues over reconnects.
//! - Interarrival jitter per track (RFC 3550 §6.4.1) on frame arrivals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Timeline;
use crate::bus::{Frame, MediaKind, SourceFrame, SourceTrack, Stream, StreamState, Track};
use crate::codec::DtsExtractor;

/// What to do when a track's codec parameters are not in the session
/// description (an H.264/H.265 SDP without `sprop-parameter-sets` /
/// `sprop-vps`..., which RFC 6184 §8.1 and RFC 7798 §7.1 allow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingParameterSets {
    /// Drop frames until in-band parameter sets arrive, and fail the
    /// session (the source reconnects) if none did within `deadline`.
    WaitInBand { deadline: Duration },
    /// Fail the session at once.
    Fail,
}

/// How a video frame is recognised as a random access point (a keyframe,
/// where a GOP starts and a new reader can begin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomAccess {
    /// From the NAL unit types in the access unit: H.264 IDR, H.265 every
    /// IRAP type (BLA, IDR, CRA: 16..=23). Cameras that send CRA pictures
    /// only, or flag frames wrongly, still get GOP starts.
    NalUnitTypes,
    /// Believe the source's flag ([`SourceFrame::source_keyframe`]).
    SourceFlag,
}

/// What to do when a track's timestamps jump inside a session (a camera
/// that resets or steps its clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockJump {
    /// Forward jumps above `max_forward` and every backward one are
    /// re-based to one frame duration after the last frame.
    Rebase { max_forward: Duration },
    /// Forward jumps are kept as they are (the source's clock is right,
    /// e.g. it really paused); backward ones are re-based.
    FollowForward,
}

/// How a source that bends the specs is treated: one named value per
/// camera quirk. The defaults suit the cameras met so far.
///
/// Broken RTP fragmentation (an H.264 FU-A without start, RFC 6184 §5.8),
/// loss and corrupt packets are not quirks: the depacketizers
/// ([`crate::codec::Depacketizer`]) drop the access units they spoil and
/// the session goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quirks {
    pub missing_parameter_sets: MissingParameterSets,
    pub random_access: RandomAccess,
    pub clock_jump: ClockJump,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            // Long enough for a camera with a 20 s GOP that sends its
            // parameter sets with each IDR only.
            missing_parameter_sets: MissingParameterSets::WaitInBand {
                deadline: Duration::from_secs(30),
            },
            random_access: RandomAccess::NalUnitTypes,
            clock_jump: ClockJump::Rebase {
                max_forward: Duration::from_secs(5),
            },
        }
    }
}

/// Something that happened at the source.
#[derive(Clone, Debug)]
pub enum Input {
    /// A source session started (PLAY answered, a file opened, RECORD
    /// began) with these tracks; frames' `track` index them.
    Start(Vec<SourceTrack>),
    /// New codec parameters for a track, from its next frame on (e.g. an
    /// in-band SPS).
    Parameters {
        track: usize,
        params: Track,
    },
    Frame(SourceFrame),
}

/// What the shell must do, in this order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Announce the tracks on the bus ([`Stream::set_tracks`]).
    SetTracks(Vec<Arc<Track>>),
    /// The session's first frame follows: the stream is live.
    Live,
    /// Publish a frame ([`Stream::publish`]); a `leading` one (an H.265
    /// RASL picture, never a GOP start) with [`Stream::publish_leading`].
    Publish {
        frame: Frame,
        gop_start: bool,
        leading: bool,
    },
    /// RTP packets the source lost.
    Lost(u64),
    /// Interarrival jitter of a track, in seconds.
    Jitter { track: usize, seconds: f64 },
    /// The session cannot go on; why, in plain words. Nothing more comes
    /// from this session.
    Fail(String),
}

/// Per-session state.
#[derive(Debug)]
struct Session {
    start: Instant,
    kinds: Vec<MediaKind>,
    tracks: Vec<Option<Arc<Track>>>,
    has_video: bool,
    /// The tracks were announced: frames flow.
    announced: bool,
    failed: bool,
    /// Per track: last transit time and jitter estimate, in seconds.
    jitter: Vec<(Option<f64>, f64)>,
    /// Per track: the decoding timestamp extractor of its current
    /// parameters, made at its first published frame.
    dts: Vec<Option<DtsExtractor>>,
}

/// The publisher of one path. See the module docs.
#[derive(Debug)]
pub struct Publisher {
    quirks: Quirks,
    session: Option<Session>,
    /// Per track, kept across sessions with the same clock rates.
    timelines: Vec<Timeline>,
}

impl Publisher {
    pub fn new(quirks: Quirks) -> Self {
        Publisher {
            quirks,
            session: None,
            timelines: Vec::new(),
        }
    }

    /// Handles one input that happened at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start(tracks) => self.start(tracks, now, &mut out),
            Input::Parameters { track, params } => self.parameters(track, params, &mut out),
            Input::Frame(f) => self.frame(f, now, &mut out),
        }
        out
    }

    fn start(&mut self, tracks: Vec<SourceTrack>, now: Instant, out: &mut Vec<Action>) {
        let rates: Vec<u32> = tracks.iter().map(|t| t.clock_rate).collect();
        if self.timelines.len() != rates.len()
            || self
                .timelines
                .iter()
                .zip(&rates)
                .any(|(t, &r)| t.clock_rate() != r)
        {
            let max = match self.quirks.clock_jump {
                ClockJump::Rebase { max_forward } => Some(max_forward),
                ClockJump::FollowForward => None,
            };
            self.timelines = rates
                .iter()
                .map(|&r| Timeline::with_max_jump(r, max))
                .collect();
        }
        for t in &mut self.timelines {
            t.new_session(now);
        }
        let session = Session {
            start: now,
            kinds: tracks.iter().map(|t| t.kind).collect(),
            has_video: tracks.iter().any(|t| t.kind == MediaKind::Video),
            jitter: vec![(None, 0.0); tracks.len()],
            dts: tracks.iter().map(|_| None).collect(),
            tracks: tracks.into_iter().map(|t| t.track.map(Arc::new)).collect(),
            announced: false,
            failed: false,
        };
        let missing = session.tracks.iter().any(Option::is_none);
        self.session = Some(session);
        if missing && self.quirks.missing_parameter_sets == MissingParameterSets::Fail {
            self.fail(
                "the source described a track without its codec parameters".into(),
                out,
            );
        }
    }

    fn fail(&mut self, why: String, out: &mut Vec<Action>) {
        if let Some(s) = &mut self.session {
            s.failed = true;
        }
        out.push(Action::Fail(why));
    }

    fn parameters(&mut self, track: usize, params: Track, out: &mut Vec<Action>) {
        let Some(s) = self.session.as_mut().filter(|s| !s.failed) else {
            return;
        };
        let Some(slot) = s.tracks.get_mut(track) else {
            return;
        };
        if slot.as_deref() == Some(&params) {
            return;
        }
        *slot = Some(Arc::new(params));
        if let Some(x) = s.dts.get_mut(track) {
            *x = None;
        }
        if s.announced {
            out.push(Action::SetTracks(
                s.tracks.iter().flatten().cloned().collect(),
            ));
        }
    }

    fn frame(&mut self, f: SourceFrame, now: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.session.as_mut().filter(|s| !s.failed) else {
            return;
        };
        let Some(&kind) = s.kinds.get(f.track) else {
            return;
        };
        if f.loss > 0 {
            out.push(Action::Lost(u64::from(f.loss)));
        }
        let video = kind == MediaKind::Video;
        let keyframe = !video
            || match (self.quirks.random_access, s.tracks.get(f.track)) {
                (RandomAccess::SourceFlag, _) => f.source_keyframe,
                (RandomAccess::NalUnitTypes, Some(Some(t))) => {
                    crate::codec::is_random_access(&t.codec, &f.data)
                }
                (RandomAccess::NalUnitTypes, _) => false,
            };
        if !s.announced {
            if s.tracks.iter().any(Option::is_none) {
                if let MissingParameterSets::WaitInBand { deadline } =
                    self.quirks.missing_parameter_sets
                {
                    if now.saturating_duration_since(s.start) > deadline {
                        self.fail(
                            format!(
                                "no codec parameters from the source after {} s (none in the SDP, none in band)",
                                deadline.as_secs()
                            ),
                            out,
                        );
                    }
                }
                return;
            }
            if s.has_video && !(video && keyframe) {
                return;
            }
            s.announced = true;
            out.push(Action::SetTracks(
                s.tracks.iter().flatten().cloned().collect(),
            ));
            out.push(Action::Live);
        }
        let gop_start = if s.has_video { video && keyframe } else { true };
        let Some(timeline) = self.timelines.get_mut(f.track) else {
            return;
        };
        // RFC 3550 §6.4.1 interarrival jitter, on frame arrival times.
        let clock = f64::from(timeline.clock_rate().max(1));
        let transit = now.saturating_duration_since(s.start).as_secs_f64() - f.pts as f64 / clock;
        if let Some((last, j)) = s.jitter.get_mut(f.track) {
            if let Some(last) = *last {
                *j += ((transit - last).abs() - *j) / 16.0;
                out.push(Action::Jitter {
                    track: f.track,
                    seconds: *j,
                });
            }
            *last = Some(transit);
        }
        // A RASL picture after a CRA: skipped by readers that start there.
        let leading = video
            && !gop_start
            && s.tracks
                .get(f.track)
                .and_then(Option::as_ref)
                .is_some_and(|t| crate::codec::is_leading_skippable(&t.codec, &f.data));
        // RTP gives presentation times only: decoding times of a video
        // track come from its pictures' order (B-frames).
        let source_dts = match (f.dts, s.tracks.get(f.track)) {
            (None, Some(Some(track))) if video => s.dts.get_mut(f.track).map(|x| {
                x.get_or_insert_with(|| DtsExtractor::new(track))
                    .extract(&f.data, f.pts)
            }),
            (dts, _) => dts,
        };
        // The timeline keeps decode order monotonic; the composition
        // offset (B-frames) rides on top of it.
        let (pts, dts) = match source_dts {
            Some(dts) => {
                let mapped = timeline.map(dts, now);
                (mapped.saturating_add(f.pts.saturating_sub(dts)), mapped)
            }
            None => {
                let mapped = timeline.map(f.pts, now);
                (mapped, mapped)
            }
        };
        out.push(Action::Publish {
            frame: Frame {
                track: f.track,
                pts,
                dts,
                keyframe,
                received: now,
                data: f.data,
            },
            gop_start,
            leading,
        });
    }
}

/// What carrying out actions on a stream came to.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// The stream went live.
    pub live: bool,
    /// The session must end, and why.
    pub failed: Option<String>,
}

/// Carries out `actions` on `stream`.
pub fn apply(stream: &Stream, actions: Vec<Action>) -> Applied {
    let mut applied = Applied::default();
    for action in actions {
        match action {
            Action::SetTracks(tracks) => {
                let set = stream.set_tracks(tracks);
                tracing::debug!(path = stream.name(), generation = set.generation, "tracks");
            }
            Action::Live => {
                stream.set_state(StreamState::Live);
                applied.live = true;
            }
            Action::Publish {
                frame,
                leading: true,
                ..
            } => stream.publish_leading(frame),
            Action::Publish {
                frame, gop_start, ..
            } => stream.publish(frame, gop_start),
            Action::Lost(n) => {
                stream
                    .stats
                    .packets_lost
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Action::Jitter { track, seconds } => stream.stats.set_jitter(track, seconds),
            Action::Fail(why) => applied.failed = Some(why),
        }
    }
    applied
}

/// A [`Publisher`] bound to its stream, shared by the tasks that feed one
/// path (the RTSP pull's main and Opus side sessions). Actions are carried
/// out under the lock, so the bus sees them in the order decided.
pub struct BusPublisher {
    publisher: Mutex<Publisher>,
    stream: Arc<Stream>,
}

impl BusPublisher {
    pub fn new(stream: Arc<Stream>, quirks: Quirks) -> Arc<Self> {
        Arc::new(BusPublisher {
            publisher: Mutex::new(Publisher::new(quirks)),
            stream,
        })
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Handles `input`, which happened at `now`, and carries out what follows.
    pub fn handle(&self, input: Input, now: Instant) -> Applied {
        let mut p = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        let actions = p.handle(input, now);
        apply(&self.stream, actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Codec;
    use bytes::Bytes;

    fn h264() -> Track {
        Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x64, 0x00, 0x1f]),
                pps: Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
            },
            90_000,
        )
    }

    fn h265() -> Track {
        Track::new(
            Codec::H265 {
                vps: Bytes::from_static(&[0x40, 0x01]),
                sps: Bytes::from_static(&[0x42, 0x01]),
                pps: Bytes::from_static(&[0x44, 0x01]),
            },
            90_000,
        )
    }

    fn aac() -> Track {
        Track::new(
            Codec::Aac {
                config: Bytes::from_static(&[0x11, 0x90]),
                channels: 2,
            },
            48_000,
        )
    }

    /// One NAL unit with a 4-byte length prefix, starting with `header`.
    fn au(header: &[u8]) -> Bytes {
        let mut v = (header.len() as u32 + 3).to_be_bytes().to_vec();
        v.extend_from_slice(header);
        v.extend_from_slice(&[1, 2, 3]);
        Bytes::from(v)
    }

    const IDR: &[u8] = &[0x65];
    const P: &[u8] = &[0x41];

    fn frame(track: usize, pts: i64, data: Bytes) -> Input {
        Input::Frame(SourceFrame {
            track,
            pts,
            dts: None,
            data,
            source_keyframe: false,
            loss: 0,
        })
    }

    fn audio(pts: i64) -> Input {
        frame(1, pts, Bytes::from_static(&[0x21, 0x10]))
    }

    /// Actions in words: `T<n tracks>`, `L` (live), `P<track>:<pts>[k][g][r]`
    /// (keyframe, GOP start, leading),
    /// `X` (lost), `J` (jitter), `F` (fail).
    fn words(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter(|a| !matches!(a, Action::Jitter { .. }))
            .map(|a| match a {
                Action::SetTracks(t) => format!("T{}", t.len()),
                Action::Live => "L".into(),
                Action::Publish {
                    frame,
                    gop_start,
                    leading,
                } => format!(
                    "P{}:{}{}{}{}",
                    frame.track,
                    frame.pts,
                    if frame.keyframe { "k" } else { "" },
                    if *gop_start { "g" } else { "" },
                    if *leading { "r" } else { "" }
                ),
                Action::Lost(n) => format!("X{n}"),
                Action::Jitter { .. } => "J".into(),
                Action::Fail(_) => "F".into(),
            })
            .collect()
    }

    fn run(p: &mut Publisher, inputs: Vec<Input>, at: Instant) -> Vec<String> {
        inputs
            .into_iter()
            .flat_map(|i| words(&p.handle(i, at)))
            .collect()
    }

    /// H.265 open GOP: a CRA is a GOP start, the RASL pictures after it
    /// are published as leading (readers starting at the CRA skip them),
    /// trailing pictures as usual.
    #[test]
    fn h265_cra_starts_a_gop_and_its_rasl_pictures_are_leading() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![SourceTrack::known(h265())]), t0);
        const CRA: &[u8] = &[21 << 1, 1];
        const RASL_N: &[u8] = &[8 << 1, 1];
        const TRAIL_R: &[u8] = &[1 << 1, 1];
        let got = run(
            &mut p,
            vec![
                frame(0, 0, au(CRA)),
                frame(0, 3600, au(RASL_N)),
                frame(0, 7200, au(TRAIL_R)),
                frame(0, 10800, au(CRA)),
                frame(0, 14400, au(RASL_N)),
            ],
            t0,
        );
        assert_eq!(
            got,
            [
                "T1",
                "L",
                "P0:0kg",
                "P0:3600r",
                "P0:7200",
                "P0:10800kg",
                "P0:14400r"
            ]
        );
    }

    #[test]
    fn announces_at_the_first_keyframe_and_drops_what_came_before() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(
            Input::Start(vec![SourceTrack::known(h264()), SourceTrack::known(aac())]),
            t0,
        );
        let got = run(
            &mut p,
            vec![
                frame(0, 0, au(P)),
                audio(0),
                frame(0, 3600, au(IDR)),
                audio(1024),
                frame(0, 7200, au(P)),
            ],
            t0,
        );
        // Audio never starts a GOP when there is video.
        assert_eq!(got, ["T2", "L", "P0:3600kg", "P1:1024k", "P0:7200"]);
    }

    #[test]
    fn the_codec_layer_finds_h265_cra_pictures_the_source_did_not_flag() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![SourceTrack::known(h265())]), t0);
        // TRAIL_R (1), then CRA_NUT (21): an IRAP that is not an IDR.
        let got = run(
            &mut p,
            vec![
                frame(0, 0, au(&[1 << 1, 1])),
                frame(0, 3600, au(&[21 << 1, 1])),
            ],
            t0,
        );
        assert_eq!(got, ["T1", "L", "P0:3600kg"]);

        let mut trusting = Publisher::new(Quirks {
            random_access: RandomAccess::SourceFlag,
            ..Quirks::default()
        });
        trusting.handle(Input::Start(vec![SourceTrack::known(h265())]), t0);
        let got = run(&mut trusting, vec![frame(0, 3600, au(&[21 << 1, 1]))], t0);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn audio_only_streams_start_a_gop_at_every_frame() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![SourceTrack::known(aac())]), t0);
        let got = run(
            &mut p,
            vec![
                frame(0, 0, Bytes::from_static(&[1])),
                frame(0, 1024, Bytes::from_static(&[2])),
            ],
            t0,
        );
        assert_eq!(got, ["T1", "L", "P0:0kg", "P0:1024kg"]);
    }

    #[test]
    fn missing_parameters_are_waited_for_in_band_until_the_deadline() {
        let t0 = Instant::now();
        let unknown = SourceTrack {
            kind: MediaKind::Video,
            clock_rate: 90_000,
            track: None,
        };
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![unknown.clone()]), t0);
        assert!(run(&mut p, vec![frame(0, 0, au(IDR))], t0).is_empty());
        p.handle(
            Input::Parameters {
                track: 0,
                params: h264(),
            },
            t0,
        );
        assert_eq!(
            run(&mut p, vec![frame(0, 3600, au(IDR))], t0),
            ["T1", "L", "P0:3600kg"]
        );

        // None ever came: the session fails once, at the deadline.
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![unknown.clone()]), t0);
        let late = t0 + Duration::from_secs(31);
        assert_eq!(run(&mut p, vec![frame(0, 0, au(IDR))], late), ["F"]);
        assert!(run(&mut p, vec![frame(0, 3600, au(IDR))], late).is_empty());

        let mut strict = Publisher::new(Quirks {
            missing_parameter_sets: MissingParameterSets::Fail,
            ..Quirks::default()
        });
        assert_eq!(
            words(&strict.handle(Input::Start(vec![unknown]), t0)),
            ["F"]
        );
    }

    #[test]
    fn a_parameter_change_is_announced_before_the_frame_it_applies_to() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![SourceTrack::known(h264())]), t0);
        run(
            &mut p,
            vec![frame(0, 0, au(IDR)), frame(0, 3600, au(P))],
            t0,
        );
        let mut new = h264();
        new.dimensions = Some((1920, 1080));
        let changed = p.handle(
            Input::Parameters {
                track: 0,
                params: new.clone(),
            },
            t0,
        );
        match changed.as_slice() {
            [Action::SetTracks(t)] => assert_eq!(t[0].dimensions, Some((1920, 1080))),
            other => panic!("{other:?}"),
        }
        // The same parameters again change nothing.
        assert!(p
            .handle(
                Input::Parameters {
                    track: 0,
                    params: new
                },
                t0
            )
            .is_empty());
        assert_eq!(
            run(&mut p, vec![frame(0, 7200, au(IDR))], t0),
            ["P0:7200kg"]
        );
    }

    #[test]
    fn the_timeline_continues_across_sessions_and_maps_decode_order() {
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        let tracks = vec![SourceTrack::known(h264())];
        p.handle(Input::Start(tracks.clone()), t0);
        run(
            &mut p,
            vec![frame(0, 0, au(IDR)), frame(0, 3600, au(P))],
            t0,
        );
        // The camera comes back 1 s later, its timestamps from 0 again:
        // the new session is announced again at its first keyframe.
        let t1 = t0 + Duration::from_secs(1);
        p.handle(Input::Start(tracks), t1);
        assert_eq!(
            run(
                &mut p,
                vec![frame(0, 3600, au(P)), frame(0, 0, au(IDR))],
                t1
            ),
            ["T1", "L", "P0:93600kg"]
        );
        // A B-frame source with decode timestamps: pts keeps its offset.
        let b = Input::Frame(SourceFrame {
            track: 0,
            pts: 3 * 3600,
            dts: Some(3600),
            data: au(P),
            source_keyframe: false,
            loss: 2,
        });
        match p.handle(b, t1).as_slice() {
            [Action::Lost(2), Action::Jitter { .. }, Action::Publish { frame, .. }] => {
                assert_eq!((frame.dts, frame.pts), (97_200, 104_400));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn b_frames_get_decoding_timestamps_on_the_bus() {
        use crate::codec::dts_fixtures::{access_units, probe, H264_BF2, H264_BF2_PKTS};
        let (track, aus) = access_units(H264_BF2, false);
        let want = probe(H264_BF2_PKTS);
        let t0 = Instant::now();
        let mut p = Publisher::new(Quirks::default());
        p.handle(Input::Start(vec![SourceTrack::known(track.clone())]), t0);
        let base = 1_000_000;
        let mut published = Vec::new();
        for (i, (au, &(pts, _))) in aus.iter().zip(&want).enumerate() {
            // The camera's parameters again, unchanged, halfway: no reset.
            if i == 25 {
                p.handle(
                    Input::Parameters {
                        track: 0,
                        params: track.clone(),
                    },
                    t0,
                );
            }
            let input = frame(0, base + pts, Bytes::from(au.clone()));
            for a in p.handle(input, t0) {
                if let Action::Publish { frame, .. } = a {
                    published.push((frame.pts, frame.dts));
                }
            }
        }
        assert_eq!(published.len(), want.len());
        let (pts0, _) = published[0];
        for (i, (&(pts, dts), &(want_pts, want_dts))) in published.iter().zip(&want).enumerate() {
            // The timeline maps both with one offset: the source's pts and
            // ffmpeg's composition offsets.
            assert_eq!(pts - pts0, want_pts, "#{i}");
            assert_eq!(pts - dts, want_pts - want_dts, "#{i}");
            assert!(i == 0 || dts > published[i - 1].1, "#{i}");
        }
        assert!(published.iter().any(|(p, d)| p != d));

        // New parameters start a new extractor: a track whose SPS does not
        // reorder passes pts through.
        p.handle(
            Input::Parameters {
                track: 0,
                params: h264(),
            },
            t0,
        );
        let last = published.last().map_or(0, |&(p, _)| p);
        match p.handle(frame(0, base + 50 * 3600, au(IDR)), t0).as_slice() {
            [Action::Jitter { .. }, Action::Publish { frame, .. }] => {
                assert_eq!(frame.pts, frame.dts);
                assert!(frame.pts > last);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bus_publisher_puts_it_on_the_stream() {
        let stream = Stream::new("cam", "test");
        let p = BusPublisher::new(stream.clone(), Quirks::default());
        let t0 = Instant::now();
        p.handle(Input::Start(vec![SourceTrack::known(h264())]), t0);
        let applied = p.handle(frame(0, 0, au(IDR)), t0);
        assert!(applied.live);
        assert_eq!(stream.state(), StreamState::Live);
        assert_eq!(stream.tracks().map(|t| t.generation), Some(1));
        assert_eq!(
            stream
                .stats
                .frames_in
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
