//! Segmenter and muxer tests: the fMP4 output is decoded back with
//! mp4-atom and checked against the input timeline; playlists are parsed
//! with m3u8-rs as a second opinion.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mp4_atom::{Any, Decode, TrunEntry};

use super::fmp4::{NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS};
use super::testutil::*;
use super::*;
use crate::bus::{Codec, Frame, Track};

/// One `traf` of a decoded part.
#[derive(Debug)]
struct Traf {
    track_id: u32,
    tfdt: u64,
    samples: Vec<TrunEntry>,
    data: Vec<Bytes>,
}

impl Traf {
    fn duration(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| u64::from(s.duration.expect("per-sample duration written")))
            .sum()
    }
}

#[derive(Debug)]
struct DecodedPart {
    msn: u64,
    index: u64,
    sequence: u32,
    trafs: Vec<Traf>,
}

impl DecodedPart {
    fn traf(&self, track_id: u32) -> Option<&Traf> {
        self.trafs.iter().find(|t| t.track_id == track_id)
    }
}

/// Decodes `moof` + `mdat` and cuts each sample out of the part by the
/// trun data offset (relative to the moof: default-base-is-moof).
fn decode_part(msn: u64, index: u64, bytes: &Bytes) -> DecodedPart {
    let mut buf: &[u8] = bytes;
    let moof = match Any::decode(&mut buf).expect("first box decodes") {
        Any::Moof(m) => m,
        other => panic!("part starts with {other:?}"),
    };
    let mdat = match Any::decode(&mut buf).expect("second box decodes") {
        Any::Mdat(m) => m,
        other => panic!("moof followed by {other:?}"),
    };
    assert!(buf.is_empty(), "nothing after the mdat");
    let mut trafs = Vec::new();
    let mut payload = 0;
    for traf in &moof.traf {
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.trun.len(), 1);
        let trun = &traf.trun[0];
        let mut off = trun.data_offset.expect("data offset") as usize;
        let samples: Vec<TrunEntry> = trun.samples.iter().collect();
        let mut data = Vec::new();
        for s in &samples {
            let size = s.size.expect("per-sample size written") as usize;
            data.push(bytes.slice(off..off + size));
            off += size;
            payload += size;
        }
        trafs.push(Traf {
            track_id: traf.tfhd.track_id,
            tfdt: traf.tfdt.as_ref().expect("tfdt").base_media_decode_time,
            samples,
            data,
        });
    }
    assert_eq!(payload, mdat.data.len(), "the runs cover the whole mdat");
    DecodedPart {
        msn,
        index,
        sequence: moof.mfhd.sequence_number,
        trafs,
    }
}

/// Feeds frames to a muxer and collects everything it publishes.
struct Run {
    muxer: Muxer,
    tracks: Vec<Arc<Track>>,
    events: Vec<MuxEvent>,
    parts: Vec<DecodedPart>,
    raw_parts: Vec<(u64, u64, Bytes)>,
    /// Wall clock = this + the frame's decode time.
    clock_rate_for_wall: Vec<u32>,
}

impl Run {
    fn new(tracks: Vec<Arc<Track>>) -> Self {
        Self::with_config(tracks, MuxerConfig::default())
    }

    fn with_config(tracks: Vec<Arc<Track>>, config: MuxerConfig) -> Self {
        let mut run = Run {
            muxer: Muxer::new(config),
            clock_rate_for_wall: tracks.iter().map(|t| t.clock_rate).collect(),
            tracks: Vec::new(),
            events: Vec::new(),
            parts: Vec::new(),
            raw_parts: Vec::new(),
        };
        run.set_tracks(tracks);
        run
    }

    /// The bus's in-band track set: the tracks of the frames fed after it.
    fn set_tracks(&mut self, tracks: Vec<Arc<Track>>) {
        self.muxer.handle_tracks(&tracks);
        self.tracks = tracks;
        self.collect();
    }

    fn feed(&mut self, f: Frame) {
        let rate = self.clock_rate_for_wall[f.track];
        let ms = (f.dts.max(0) as u64) * 1000 / u64::from(rate);
        self.muxer.handle_frame(&f, wall(Duration::from_millis(ms)));
        self.collect();
    }

    fn flush(&mut self) {
        self.muxer.flush();
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(e) = self.muxer.poll_event() {
            if let MuxEvent::PartReady { msn, part } = e {
                let Lookup::Ready(bytes) = self.muxer.part(msn, part) else {
                    panic!("announced part {msn}/{part} is not available");
                };
                self.parts.push(decode_part(msn, part, &bytes));
                self.raw_parts.push((msn, part, bytes));
            }
            self.events.push(e);
        }
    }

    fn notices(&self) -> Vec<&Notice> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MuxEvent::Notice(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// All samples of `track_id` in output order, with their decode times.
    fn samples(&self, track_id: u32) -> Vec<(u64, TrunEntry)> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Some(t) = p.traf(track_id) {
                let mut dts = t.tfdt;
                for s in &t.samples {
                    out.push((dts, *s));
                    dts += u64::from(s.duration.expect("duration"));
                }
            }
        }
        out
    }

    /// Asserts that each part's tfdt for `track_id` continues exactly where
    /// the previous part of that track ended; returns the total duration.
    fn assert_continuous(&self, track_id: u32) -> u64 {
        let mut end: Option<u64> = None;
        let mut total = 0;
        for p in &self.parts {
            let Some(t) = p.traf(track_id) else { continue };
            if let Some(e) = end {
                assert_eq!(
                    t.tfdt, e,
                    "track {track_id}: part {}/{} tfdt {} does not continue from {e}",
                    p.msn, p.index, t.tfdt
                );
            }
            end = Some(t.tfdt + t.duration());
            total += t.duration();
        }
        total
    }

    fn playlist(&self) -> String {
        self.muxer.playlist(false, "").expect("playlist exists")
    }
}

fn media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
        other => panic!("not a media playlist: {other:?}\n{text}"),
    }
}

fn video_frames(n: usize, start_dts: i64, step: i64, gop: usize) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let key = i % gop == 0;
            frame(
                0,
                start_dts + i as i64 * step,
                key,
                synthetic_au(key, 100 + i % 7, i as u8),
            )
        })
        .collect()
}

/// Video (track 0, 90 kHz) and AAC (track 1, 48 kHz) frames covering
/// `secs` seconds from decode time 0, in arrival (time) order.
fn av_frames(secs: u64, fps: u32, gop: usize) -> Vec<Frame> {
    let mut timed: Vec<(u128, Frame)> = Vec::new();
    let step = 90_000 / i64::from(fps);
    for (i, f) in video_frames(secs as usize * fps as usize, 0, step, gop)
        .into_iter()
        .enumerate()
    {
        timed.push((i as u128 * step as u128 * 1_000_000_000 / 90_000, f));
    }
    let n_audio = secs * 48_000 / 1024;
    for k in 0..n_audio {
        let dts = k as i64 * 1024;
        let payload = Bytes::from(vec![0xa0 | (k % 16) as u8; 20 + (k % 5) as usize]);
        timed.push((
            dts as u128 * 1_000_000_000 / 48_000,
            frame(1, dts, true, payload),
        ));
    }
    // Stable: at equal times video (pushed first) comes first.
    timed.sort_by_key(|(t, _)| *t);
    timed.into_iter().map(|(_, f)| f).collect()
}

#[test]
fn real_h264_stream_segments_and_parts() {
    let fx = h264_fixture();
    assert_eq!(fx.frames.len(), 50);
    let keys: Vec<usize> = (0..50).filter(|&i| fx.frames[i].1).collect();
    assert_eq!(keys[0], 0, "the fixture starts with an IDR");
    let mut run = Run::new(vec![h264_track(&fx)]);
    for (i, (data, key)) in fx.frames.iter().enumerate() {
        run.feed(frame(0, 1_000 + i as i64 * 3600, *key, data.clone()));
    }
    run.flush();

    // Every input frame comes out once, in order, byte for byte.
    let samples = run.samples(1);
    assert_eq!(samples.len(), 50);
    let out: Vec<Bytes> = run
        .parts
        .iter()
        .flat_map(|p| p.trafs[0].data.clone())
        .collect();
    let input: Vec<Bytes> = fx.frames.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(out, input);
    // Durations add up to the input timeline (the last frame repeats the
    // previous duration), starting at 0.
    assert_eq!(samples[0].0, 0);
    assert_eq!(run.assert_continuous(1), 50 * 3600);
    for (i, (_, s)) in samples.iter().enumerate() {
        let want = if fx.frames[i].1 {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        };
        assert_eq!(s.flags, Some(want), "sample {i}");
        assert_eq!(s.cts, Some(0));
    }
    // mfhd sequence numbers increase by one per part.
    for w in run.parts.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1);
    }

    // Segments start at keyframes and last at least 1 s: with IDRs at
    // `keys`, each segment runs to the first IDR at least 25 frames in.
    let mut starts = vec![0];
    for &k in &keys[1..] {
        if k - starts[starts.len() - 1] >= 25 {
            starts.push(k);
        }
    }
    let model = run.muxer.playlist_model().expect("playlist exists");
    let segs: Vec<_> = model.segments().iter().collect();
    assert_eq!(segs.len(), starts.len());
    let mut frame_at = 0;
    for (n, seg) in segs.iter().enumerate() {
        assert_eq!(frame_at, starts[n], "segment {n} starts at a keyframe");
        let frames = starts.get(n + 1).copied().unwrap_or(50) - starts[n];
        assert_eq!(seg.duration, Duration::from_millis(40 * frames as u64));
        // Parts of 5 frames (200 ms); only the last of a segment may be shorter.
        for (i, p) in seg.parts.iter().enumerate() {
            if i + 1 < seg.parts.len() {
                assert_eq!(p.duration, Duration::from_millis(200));
            } else {
                assert!(p.duration <= Duration::from_millis(200));
            }
            // INDEPENDENT exactly when the part starts with an IDR.
            assert_eq!(p.independent, fx.frames[frame_at].1, "part {n}/{i}");
            frame_at += (p.duration.as_millis() / 40) as usize;
        }
        // The segment is its parts back to back.
        let Lookup::Ready(whole) = run.muxer.segment(seg.msn) else {
            panic!("segment {} not stored", seg.msn);
        };
        let parts: Vec<u8> = run
            .raw_parts
            .iter()
            .filter(|(m, _, _)| *m == seg.msn)
            .flat_map(|(_, _, b)| b.to_vec())
            .collect();
        assert_eq!(whole.to_vec(), parts);
    }
    assert_eq!(frame_at, 50);
    assert_eq!(
        run.muxer.playlist_model().map(|p| p.config().part_target),
        Some(Duration::from_millis(200))
    );

    let text = run.playlist();
    assert_eq!(media(&text).segments.len(), segs.len());
    assert!(text.contains("#EXT-X-MAP:URI=\"init-0.mp4\""));
    assert!(run.muxer.init(0).is_some());
    let bw = run.muxer.bandwidth().expect("bandwidth measured");
    let info = run
        .muxer
        .stream_info("stream.m3u8", &run.tracks)
        .expect("stream info after a segment");
    assert_eq!(info.bandwidth, bw);
    assert_eq!(info.codecs, vec!["avc1.64001e".to_owned()]);
    assert_eq!(info.resolution, Some((640, 360)));
    let mv = run
        .muxer
        .multivariant("stream.m3u8", &run.tracks, "")
        .expect("multivariant");
    assert!(mv.contains("CODECS=\"avc1.64001e\",RESOLUTION=640x360,FRAME-RATE=25.000"));
    assert!(matches!(
        m3u8_rs::parse_playlist_res(mv.as_bytes()),
        Ok(m3u8_rs::Playlist::MasterPlaylist(_))
    ));
}

#[test]
fn audio_and_video_interleave_in_parts() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx), aac_track()]);
    let frames = av_frames(4, 25, 25);
    let n_audio = frames.iter().filter(|f| f.track == 1).count();
    for f in frames {
        run.feed(f);
    }
    run.flush();
    assert!(run.notices().is_empty(), "{:?}", run.notices());

    // Every audio frame is muxed once, and both timelines are continuous.
    assert_eq!(run.samples(2).len(), n_audio);
    assert_eq!(run.samples(1).len(), 100);
    assert_eq!(run.assert_continuous(1), 100 * 3600);
    assert_eq!(run.assert_continuous(2), n_audio as u64 * 1024);
    // Audio starts where video starts: both at 0.
    assert_eq!(run.samples(2)[0].0, 0);
    // Every part but possibly the very first carries both tracks, and the
    // tracks' start times in a part are within a video frame of each other.
    for p in &run.parts[1..] {
        let (Some(v), Some(a)) = (p.traf(1), p.traf(2)) else {
            panic!("part {}/{} lacks a track", p.msn, p.index);
        };
        let v_ms = v.tfdt as f64 / 90.0;
        let a_ms = a.tfdt as f64 / 48.0;
        assert!(
            (v_ms - a_ms).abs() <= 45.0,
            "part {}/{}: video {v_ms} audio {a_ms}",
            p.msn,
            p.index
        );
        assert!(a.samples.iter().all(|s| s.flags == Some(SYNC_SAMPLE_FLAGS)));
    }
    let text = run.playlist();
    assert_eq!(media(&text).segments.len(), 4);
    assert_eq!(
        run.muxer
            .stream_info("s.m3u8", &run.tracks)
            .map(|i| i.codecs),
        Some(vec!["avc1.64001e".to_owned(), "mp4a.40.2".to_owned()])
    );
}

#[test]
fn composition_offsets_for_reordered_frames() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    // Decode order I P B B P B B ...; display order I B B P B B P ...
    // pts - dts is positive for I/P and negative for B frames.
    let display = |k: usize| -> i64 {
        if k == 0 {
            return 0;
        }
        let g = (k - 1) / 3;
        (match (k - 1) % 3 {
            0 => 3 * g + 3,
            1 => 3 * g + 1,
            _ => 3 * g + 2,
        }) as i64
    };
    let n = 60;
    let mut expect = Vec::new();
    for k in 0..n {
        let dts = k as i64 * 3600;
        let pts = display(k) * 3600;
        expect.push(pts - dts);
        let key = k % 30 == 0;
        run.feed(frame_pts(0, pts, dts, key, synthetic_au(key, 50, k as u8)));
    }
    run.flush();
    let got: Vec<i64> = run
        .samples(1)
        .iter()
        .map(|(_, s)| s.cts.expect("cts written"))
        .collect();
    assert_eq!(got, expect);
    assert!(
        got.iter().any(|&c| c < 0),
        "signed offsets (trun version 1) survive"
    );
    assert_eq!(run.assert_continuous(1), n as u64 * 3600);
}

#[test]
fn backwards_clock_starts_a_discontinuity_and_tfdt_stays_monotonic() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx), aac_track()]);
    for f in av_frames(3, 25, 25) {
        run.feed(f);
    }
    // The source restarts: both clocks go back to 0.
    for f in av_frames(3, 25, 25) {
        run.feed(f);
    }
    run.flush();
    let jumps: Vec<_> = run
        .notices()
        .into_iter()
        .filter(|n| matches!(n, Notice::ClockJump { .. }))
        .collect();
    assert_eq!(jumps.len(), 1, "{:?}", run.notices());
    // Video: nothing lost, timeline exactly continuous across the jump.
    assert_eq!(run.samples(1).len(), 150);
    assert_eq!(run.assert_continuous(1), 150 * 3600);
    // Audio: strictly increasing decode times throughout.
    let a = run.samples(2);
    for w in a.windows(2) {
        assert!(
            w[1].0 > w[0].0,
            "audio decode time went back: {:?}",
            (w[0].0, w[1].0)
        );
    }
    let text = run.playlist();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let model = run.muxer.playlist_model().expect("playlist");
    let disc: Vec<_> = model
        .segments()
        .iter()
        .filter(|s| s.discontinuity)
        .collect();
    assert_eq!(disc.len(), 1);
    assert_eq!(disc[0].msn, 3, "the segment after the 3 s before the jump");
    assert_eq!(media(&text).segments.len(), 6);
}

#[test]
fn forward_jump_of_10s_mid_gop() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    for f in video_frames(40, 0, 3600, 25) {
        run.feed(f);
    }
    // 10 s later, in the middle of a GOP: frames until the next keyframe
    // cannot start a segment and are dropped.
    for f in video_frames(60, 40 * 3600 + 900_000, 3600, 25)
        .into_iter()
        .skip(5)
    {
        run.feed(f);
    }
    run.flush();
    assert!(run
        .notices()
        .iter()
        .any(|n| matches!(n, Notice::ClockJump { delta, .. } if *delta > 900_000)));
    // 40 before, and from the keyframe at index 25 of the second run: 35.
    let samples = run.samples(1);
    assert_eq!(samples.len(), 75);
    // No 10 s gap in the output: re-based to continue.
    assert_eq!(run.assert_continuous(1), 75 * 3600);
    assert_eq!(samples[40].1.flags, Some(SYNC_SAMPLE_FLAGS));
    let model = run.muxer.playlist_model().expect("playlist");
    let flags: Vec<bool> = model.segments().iter().map(|s| s.discontinuity).collect();
    assert_eq!(flags, vec![false, false, true, false]);
}

#[test]
fn long_gops_stretch_segments_and_target_duration() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    // Keyframe every 2 s.
    for f in video_frames(250, 0, 3600, 50) {
        run.feed(f);
    }
    let model = run.muxer.playlist_model().expect("playlist");
    for s in model.segments() {
        assert_eq!(s.duration, Duration::from_secs(2));
        assert!(s.parts[0].independent);
        assert!(s.parts[1..].iter().all(|p| !p.independent));
    }
    assert_eq!(model.target_duration(), 2);
    assert!(run.playlist().contains("#EXT-X-TARGETDURATION:2\n"));
}

#[test]
fn ntsc_frame_rate_parts_are_whole_frames() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    // 29.97 fps: 3003 ticks per frame; 200 ms is not a whole number of frames.
    for f in video_frames(150, 0, 3003, 30) {
        run.feed(f);
    }
    let target = Duration::from_nanos(6 * 3003 * 1_000_000_000 / 90_000);
    let model = run.muxer.playlist_model().expect("playlist");
    assert_eq!(model.config().part_target, target);
    for s in model.segments() {
        let (last, full) = s.parts.split_last().expect("segment has parts");
        for p in full {
            assert_eq!(p.duration, target);
        }
        // §4.4.4.9: at most the target; only the last part may be short.
        assert!(last.duration <= target);
    }
    assert!(run.playlist().contains("PART-TARGET=0.20020"));
}

#[test]
fn audio_only_stream() {
    let mut run = Run::new(vec![aac_track()]);
    for k in 0..(48_000 * 3 / 1024) {
        run.feed(frame(0, k * 1024, true, Bytes::from_static(b"aac frame")));
    }
    run.flush();
    let model = run.muxer.playlist_model().expect("playlist");
    // 9 frames of 1024 at 48 kHz: 192 ms parts, all independent.
    assert_eq!(model.config().part_target, Duration::from_millis(192));
    let segs: Vec<_> = model.segments().iter().collect();
    assert_eq!(segs.len(), 3);
    for (i, s) in segs.iter().enumerate() {
        // The last one was cut short by the flush.
        assert!(
            i == 2 || s.duration >= Duration::from_secs(1),
            "{:?}",
            s.duration
        );
        assert!(s.parts.iter().all(|p| p.independent));
    }
    assert_eq!(run.assert_continuous(1), (48_000 * 3 / 1024) as u64 * 1024);
}

#[test]
fn parameter_change_starts_a_new_init_version() {
    let fx = h264_fixture();
    let track = h264_track(&fx);
    let mut run = Run::new(vec![track.clone()]);
    let frames = video_frames(100, 0, 3600, 25);
    // New SPS (level 3.1) from frame 50, a keyframe.
    let mut sps = fx.sps.clone();
    sps[3] = 31;
    let new = Arc::new(Track {
        dimensions: track.dimensions,
        frame_rate: track.frame_rate,
        ..Track::new(
            Codec::H264 {
                sps: Bytes::from(sps.clone()),
                pps: Bytes::from(fx.pps.clone()),
            },
            90_000,
        )
    });
    for (i, f) in frames.into_iter().enumerate() {
        if i == 50 {
            // The new parameters come in band, before the frame they apply to.
            run.set_tracks(vec![new.clone()]);
        }
        run.feed(f);
    }
    run.flush();
    assert!(run.events.contains(&MuxEvent::InitReady { version: 1 }));
    let model = run.muxer.playlist_model().expect("playlist");
    let maps: Vec<(&str, bool)> = model
        .segments()
        .iter()
        .map(|s| (s.map_uri.as_str(), s.discontinuity))
        .collect();
    assert_eq!(
        maps,
        vec![
            ("init-0.mp4", false),
            ("init-0.mp4", false),
            ("init-1.mp4", true),
            ("init-1.mp4", false)
        ]
    );
    let text = run.playlist();
    assert!(
        text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"),
        "{text}"
    );
    // Timeline unaffected.
    assert_eq!(run.assert_continuous(1), 100 * 3600);
    // The new init carries the new SPS.
    let init = run.muxer.init(1).expect("init 1 stored");
    let mut buf: &[u8] = &init;
    let _ftyp = Any::decode(&mut buf).expect("ftyp");
    let Ok(Any::Moov(moov)) = Any::decode(&mut buf) else {
        panic!("no moov");
    };
    let mp4_atom::Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
        panic!("not avc1");
    };
    assert_eq!(avc1.avcc.sequence_parameter_sets, vec![sps]);
    assert_eq!(avc1.avcc.avc_level_indication, 31);
}

#[test]
fn g711_is_left_out() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx), pcma_track()]);
    for i in 0..50i64 {
        run.feed(frame(
            0,
            i * 3600,
            i % 25 == 0,
            synthetic_au(i % 25 == 0, 80, 1),
        ));
        run.feed(frame(1, i * 320, true, Bytes::from_static(&[0xd5; 160])));
    }
    let sel = run.muxer.selection().clone();
    assert_eq!(sel.video, Some(0));
    assert_eq!(sel.audio, None);
    assert!(matches!(
        sel.skipped[..],
        [(1, UnsupportedTrack::G711 { codec: "PCMA" })]
    ));
    assert!(run.parts.iter().all(|p| p.trafs.len() == 1));
}

#[test]
fn malformed_frames_are_dropped_and_reported() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    for i in 0..50i64 {
        let data = if i == 7 {
            Bytes::from_static(&[0, 0, 0, 50, 0x41])
        } else {
            synthetic_au(i % 25 == 0, 80, 2)
        };
        run.feed(frame(0, i * 3600, i % 25 == 0, data));
    }
    run.flush();
    assert!(run
        .notices()
        .iter()
        .any(|n| matches!(n, Notice::MalformedFrame { track: 0, .. })));
    let samples = run.samples(1);
    assert_eq!(samples.len(), 49);
    // The frame before the hole spans it.
    assert_eq!(samples[6].1.duration, Some(7200));
    assert_eq!(run.assert_continuous(1), 50 * 3600);
}

#[test]
fn audio_with_an_unrelated_clock_is_rebased() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx), aac_track()]);
    // Audio timestamps start at an arbitrary RTP-like origin.
    for mut f in av_frames(3, 25, 25) {
        if f.track == 1 {
            f.dts += 3_000_000_000;
            f.pts = f.dts;
        }
        run.feed(f);
    }
    run.flush();
    assert!(run
        .notices()
        .iter()
        .any(|n| matches!(n, Notice::TrackRebased { track: 1 })));
    let a = run.samples(2);
    // Placed at the lead's position when it arrived (the first audio frame
    // arrives just after the first video frame).
    assert!(a[0].0 <= 48 * 40, "audio starts at {}", a[0].0);
    run.assert_continuous(2);
}

#[test]
fn track_set_change_restarts_with_a_discontinuity() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    for f in video_frames(50, 0, 3600, 25) {
        run.feed(f);
    }
    // The source comes back with audio.
    run.set_tracks(vec![h264_track(&fx), aac_track()]);
    run.clock_rate_for_wall = vec![90_000, 48_000];
    for mut f in av_frames(2, 25, 25) {
        f.dts += 50 * 3600 * i64::from(f.track == 0);
        f.pts = f.dts;
        run.feed(f);
    }
    run.flush();
    assert!(run
        .notices()
        .iter()
        .any(|n| matches!(n, Notice::TracksChanged { .. })));
    assert!(run.events.contains(&MuxEvent::InitReady { version: 1 }));
    assert_eq!(run.assert_continuous(1), 100 * 3600);
    let model = run.muxer.playlist_model().expect("playlist");
    let last = model.segments().back().expect("segments");
    assert_eq!(last.map_uri, "init-1.mp4");
    assert!(model.segments().iter().any(|s| s.discontinuity));
    assert!(!run.samples(2).is_empty());
}

#[test]
fn window_lookups_and_preload_hint() {
    let fx = h264_fixture();
    let config = MuxerConfig {
        first_sequence: 1_000,
        ..MuxerConfig::default()
    };
    let mut run = Run::with_config(vec![h264_track(&fx)], config);
    assert_eq!(run.muxer.playlist(false, ""), None);
    assert_eq!(run.muxer.next_part(), (1_000, 0));
    assert_eq!(run.muxer.part(1_000, 0), Lookup::NotYet);
    assert_eq!(
        run.muxer.reload_decision(Some(1_000), Some(0)),
        ReloadDecision::Wait
    );
    // 20 s of 1 s GOPs; the last segment stays open.
    for f in video_frames(500, 0, 3600, 25) {
        run.feed(f);
    }
    let model = run.muxer.playlist_model().expect("playlist");
    assert_eq!(model.segments().len(), 7);
    assert_eq!(model.media_sequence(), 1_012);
    assert_eq!(model.last_complete_msn(), Some(1_018));
    // 19 complete; 7 listed plus 2 kept.
    assert!(matches!(run.muxer.segment(1_010), Lookup::Ready(_)));
    assert_eq!(run.muxer.segment(1_009), Lookup::Gone);
    assert_eq!(run.muxer.segment(1_019), Lookup::NotYet);
    assert!(run.muxer.init(1_000).is_some());
    assert_eq!(run.muxer.current_init(), Some(1_000));
    // Frame 499 is held (its duration unknown), so the open segment 1019
    // has parts 0..=3 and the hint names part 4.
    assert_eq!(run.muxer.next_part(), (1_019, 4));
    assert!(matches!(run.muxer.part(1_019, 3), Lookup::Ready(_)));
    assert_eq!(run.muxer.part(1_019, 4), Lookup::NotYet);
    assert_eq!(run.muxer.part(1_018, 5), Lookup::Gone);
    assert_eq!(run.muxer.part(1_000, 0), Lookup::Gone);
    let text = run.playlist();
    assert!(
        text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1019-4.mp4\"\n"),
        "{text}"
    );
    assert_eq!(media(&text).segments.len(), 7);
    let delta = run.muxer.playlist(true, "").expect("playlist");
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n"),
        "{delta}"
    );
    assert_eq!(media(&delta).segments.len(), 6);
    assert_eq!(
        run.muxer.reload_decision(Some(1_019), Some(3)),
        ReloadDecision::Ready
    );
    assert_eq!(
        run.muxer.reload_decision(Some(1_019), Some(4)),
        ReloadDecision::Wait
    );
    // Every event announced something that could be fetched at that time;
    // the bytes are bounded by the window.
    let bw = run.muxer.bandwidth().expect("measured");
    let avg = run.muxer.average_bandwidth().expect("measured");
    assert!(bw >= avg && avg > 0);
}

#[test]
fn part_target_ignores_an_implausible_first_duration() {
    let fx = h264_fixture();
    let mut run = Run::new(vec![h264_track(&fx)]);
    // The source stutters: 2 s between the first two frames, then 25 fps.
    run.feed(frame(0, 0, true, synthetic_au(true, 50, 0)));
    for f in video_frames(60, 180_000, 3600, 25) {
        run.feed(f);
    }
    let model = run.muxer.playlist_model().expect("playlist");
    assert_eq!(model.config().part_target, Duration::from_millis(200));
}

#[test]
fn audio_only_clock_jump() {
    let mut run = Run::new(vec![opus_track()]);
    let opus = |dts: i64| frame(0, dts, true, Bytes::from_static(&[0xfc, 1, 2, 3]));
    for k in 0..150 {
        run.feed(opus(k * 960));
    }
    // Backwards by a minute.
    for k in 0..150 {
        run.feed(opus(k * 960 - 2_880_000));
    }
    run.flush();
    assert_eq!(run.samples(1).len(), 300);
    assert_eq!(run.assert_continuous(1), 300 * 960);
    let model = run.muxer.playlist_model().expect("playlist");
    assert_eq!(
        model.segments().iter().filter(|s| s.discontinuity).count(),
        1
    );
    assert_eq!(model.config().part_target, Duration::from_millis(200));
}
