//! The built-in demo stream: a short H.264 + AAC clip (`static/demo.mp4`,
//! made once with ffmpeg, embedded in the binary) looped in real time with
//! continuous timestamps through the same bus as a camera, so every egress
//! works with no camera at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use mp4_atom::{Any, Codec as Mp4Codec, Decode, StszSamples};

use super::publisher::{BusPublisher, Input, Quirks};
use super::Source;
use crate::bus::{Codec, MediaKind, SourceFrame, SourceTrack, Stream, Track};

/// The embedded clip: 10 s, 640x360, 25 fps, 1 s GOP, AAC-LC 48 kHz stereo.
pub static DEMO_MP4: &[u8] = include_bytes!("../../static/demo.mp4");

/// Why a clip can't be used.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("not a usable MP4: {0}")]
    Mp4(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// One sample of the clip, timestamps in the track's clock units.
#[derive(Clone, Debug)]
struct Sample {
    track: usize,
    pts: i64,
    dts: i64,
    keyframe: bool,
    data: Bytes,
}

/// A parsed clip: tracks and samples in decoding order across tracks.
#[derive(Clone, Debug)]
pub struct DemoClip {
    tracks: Vec<Arc<Track>>,
    samples: Vec<Sample>,
    /// Loop length in seconds (the video track's duration).
    duration: f64,
}

fn bad(msg: impl Into<String>) -> DemoError {
    DemoError::Mp4(msg.into())
}

impl DemoClip {
    /// Parses a progressive (non-fragmented) MP4 with one H.264 video track
    /// (avcC, 4-byte NAL lengths) and optionally one AAC track. `data` must be
    /// `'static` so samples are shared slices of it, never copied.
    pub fn parse(data: &'static [u8]) -> Result<DemoClip, DemoError> {
        let mut buf = data;
        let mut moov = None;
        while !buf.is_empty() {
            match Any::decode(&mut buf) {
                Ok(Any::Moov(m)) => moov = Some(m),
                Ok(_) => {}
                Err(e) => return Err(bad(format!("box parse error: {e}"))),
            }
        }
        let moov = moov.ok_or_else(|| bad("no moov box"))?;
        let file = Bytes::from_static(data);
        let mut tracks = Vec::new();
        let mut samples = Vec::new();
        let mut duration = None;
        for trak in &moov.trak {
            let stbl = &trak.mdia.minf.stbl;
            let timescale = u64::from(trak.mdia.mdhd.timescale.max(1));
            let (track, clock_rate) = match stbl.stsd.codecs.first() {
                Some(Mp4Codec::Avc1(avc1)) => {
                    let avcc = &avc1.avcc;
                    if avcc.length_size != 4 {
                        return Err(DemoError::Unsupported(format!(
                            "{}-byte NAL lengths (want 4)",
                            avcc.length_size
                        )));
                    }
                    let (Some(sps), Some(pps)) = (
                        avcc.sequence_parameter_sets.first(),
                        avcc.picture_parameter_sets.first(),
                    ) else {
                        return Err(bad("avcC without SPS/PPS"));
                    };
                    // RFC 6381 string, dimensions (and frame rate, if the
                    // SPS has VUI timing) come from the SPS; a clip whose
                    // SPS does not parse is refused.
                    let track = Track::try_new(
                        Codec::H264 {
                            sps: Bytes::copy_from_slice(sps),
                            pps: Bytes::copy_from_slice(pps),
                        },
                        90_000,
                    )
                    .map_err(|e| bad(format!("bad SPS: {e}")))?;
                    (track, 90_000u64)
                }
                Some(Mp4Codec::Mp4a(mp4a)) => {
                    let config = mp4a
                        .esds
                        .es_desc
                        .dec_config
                        .dec_specific
                        .as_ref()
                        .map(|d| d.raw.clone())
                        .filter(|c| c.len() >= 2)
                        .ok_or_else(|| bad("AAC track without AudioSpecificConfig"))?;
                    let rate = u64::from(mp4a.audio.sample_rate.integer());
                    // The RFC 6381 string comes from the AudioSpecificConfig's
                    // object type (escape value 31 included).
                    let track = Track::try_new(
                        Codec::Aac {
                            config: Bytes::from(config),
                            channels: mp4a.audio.channel_count,
                        },
                        u32::try_from(rate).map_err(|_| bad("sample rate"))?,
                    )
                    .map_err(|e| bad(format!("bad AudioSpecificConfig: {e}")))?;
                    (track, rate.max(1))
                }
                _ => continue,
            };
            let index = tracks.len();
            let sizes: Vec<u32> = match &stbl.stsz.samples {
                StszSamples::Identical { count, size } => vec![*size; *count as usize],
                StszSamples::Different { sizes } => sizes.clone(),
            };
            let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
                (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
                (None, Some(co64)) => co64.entries.clone(),
                _ => return Err(bad("no chunk offsets")),
            };
            // Sample -> file offset, from the sample-to-chunk runs.
            let mut offsets = Vec::with_capacity(sizes.len());
            let mut sample = 0usize;
            for (i, entry) in stbl.stsc.entries.iter().enumerate() {
                let first = entry.first_chunk.max(1) as usize;
                let last = stbl
                    .stsc
                    .entries
                    .get(i + 1)
                    .map_or(chunk_offsets.len(), |n| {
                        (n.first_chunk as usize).saturating_sub(1)
                    });
                for chunk in first..=last {
                    let Some(&base) = chunk_offsets.get(chunk - 1) else {
                        break;
                    };
                    let mut off = base;
                    for _ in 0..entry.samples_per_chunk {
                        let Some(&size) = sizes.get(sample) else {
                            break;
                        };
                        offsets.push(off);
                        off += u64::from(size);
                        sample += 1;
                    }
                }
            }
            let mut deltas = stbl
                .stts
                .entries
                .iter()
                .flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize));
            let mut ctts = stbl.ctts.iter().flat_map(|c| {
                c.entries
                    .iter()
                    .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize))
            });
            let sync: Option<&Vec<u32>> = stbl.stss.as_ref().map(|s| &s.entries);
            let scale = |t: u64| (t * clock_rate / timescale) as i64;
            let mut dts = 0u64;
            for (n, (&size, &off)) in sizes.iter().zip(&offsets).enumerate() {
                let delta = u64::from(deltas.next().unwrap_or(0));
                let cts = ctts.next().unwrap_or(0);
                let start = usize::try_from(off).map_err(|_| bad("offset"))?;
                let end = start + size as usize;
                if end > file.len() {
                    return Err(bad("sample outside the file"));
                }
                let keyframe = track.kind() == MediaKind::Audio
                    || sync.is_none_or(|s| s.binary_search(&(n as u32 + 1)).is_ok());
                samples.push(Sample {
                    track: index,
                    dts: scale(dts),
                    pts: scale(dts) + (cts * clock_rate as i64) / timescale as i64,
                    keyframe,
                    data: file.slice(start..end),
                });
                dts += delta;
            }
            if track.kind() == MediaKind::Video {
                duration = Some(dts as f64 / timescale as f64);
                let frames = sizes.len() as f64;
                let mut t = track;
                if dts > 0 {
                    t.frame_rate = Some(frames * timescale as f64 / dts as f64);
                }
                tracks.push(Arc::new(t));
            } else {
                tracks.push(Arc::new(track));
            }
        }
        let duration = duration
            .filter(|d| *d > 0.0)
            .ok_or_else(|| DemoError::Unsupported("no H.264 video track".into()))?;
        // Each track loops at the video's length: drop audio past it.
        samples
            .retain(|s| (s.dts as f64) / f64::from(tracks[s.track].clock_rate) < duration - 1e-9);
        samples.sort_by(|a, b| {
            let ta = a.dts as f64 / f64::from(tracks[a.track].clock_rate);
            let tb = b.dts as f64 / f64::from(tracks[b.track].clock_rate);
            ta.total_cmp(&tb)
        });
        Ok(DemoClip {
            tracks,
            samples,
            duration,
        })
    }

    pub fn tracks(&self) -> &[Arc<Track>] {
        &self.tracks
    }

    /// Loop length in seconds.
    pub fn duration(&self) -> f64 {
        self.duration
    }

    /// The tracks as a session of the publisher describes them.
    fn source_tracks(&self) -> Vec<SourceTrack> {
        self.tracks
            .iter()
            .map(|t| SourceTrack::known((**t).clone()))
            .collect()
    }

    /// Frames of loop number `n` (0-based) with timestamps continued from
    /// earlier loops, each with its due time in seconds from the start.
    fn frames_of_loop(&self, n: u64) -> impl Iterator<Item = (f64, SourceFrame)> + '_ {
        let loop_start = n as f64 * self.duration;
        self.samples.iter().map(move |s| {
            let rate = f64::from(self.tracks[s.track].clock_rate);
            let offset = (loop_start * rate).round() as i64;
            let due = loop_start + s.dts as f64 / rate;
            (
                due,
                SourceFrame {
                    track: s.track,
                    pts: s.pts + offset,
                    dts: Some(s.dts + offset),
                    data: s.data.clone(),
                    source_keyframe: s.keyframe,
                    loss: 0,
                },
            )
        })
    }
}

/// The demo source: the clip, looped for ever at real-time pace.
pub struct DemoSource {
    clip: DemoClip,
}

impl DemoSource {
    /// The embedded clip. Fails only if the binary was built with a broken clip.
    pub fn embedded() -> Result<Self, DemoError> {
        Ok(DemoSource {
            clip: DemoClip::parse(DEMO_MP4)?,
        })
    }
}

impl Source for DemoSource {
    fn run(self: Box<Self>, stream: Arc<Stream>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let clip = self.clip;
            stream.set_ingest_info(crate::bus::IngestInfo {
                transport: Some("built-in".into()),
                notice: None,
            });
            // The same rules as a camera: tracks, then frames from a keyframe.
            let publisher = BusPublisher::new(stream, Quirks::default());
            publisher.handle(Input::Start(clip.source_tracks()), Instant::now());
            let start = tokio::time::Instant::now();
            for n in 0.. {
                for (due, frame) in clip.frames_of_loop(n) {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(due)).await;
                    publisher.handle(Input::Frame(frame), Instant::now());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_clip_parses() {
        let clip = DemoClip::parse(DEMO_MP4).expect("the embedded clip is valid");
        assert_eq!(clip.tracks().len(), 2);
        let v = &clip.tracks()[0];
        assert_eq!(v.codec.name(), "h264");
        assert_eq!(v.dimensions, Some((640, 360)));
        assert_eq!(v.frame_rate, Some(25.0));
        assert_eq!(clip.tracks()[1].codec.name(), "aac");
        assert!((clip.duration() - 10.0).abs() < 1e-6);
        let video: Vec<_> = clip.samples.iter().filter(|s| s.track == 0).collect();
        assert_eq!(video.len(), 250);
        assert!(video[0].keyframe && !video[1].keyframe && video[25].keyframe);
        // Every video sample is well-formed AVCC: length prefixes cover it exactly.
        for s in &video {
            let n: usize = crate::codec::avcc_nal_units(&s.data)
                .map(|r| r.map(|nal| nal.len() + 4))
                .sum::<Result<usize, _>>()
                .expect("valid AVCC");
            assert_eq!(n, s.data.len());
        }
        // Audio is cut at the loop length: 10 s of 1024-sample frames at 48 kHz.
        let audio = clip.samples.iter().filter(|s| s.track == 1).count();
        assert_eq!(audio, 469);
    }

    #[test]
    fn loops_continue_timestamps() {
        let clip = DemoClip::parse(DEMO_MP4).expect("valid clip");
        let first: Vec<_> = clip.frames_of_loop(0).collect();
        let second: Vec<_> = clip.frames_of_loop(1).collect();
        let last_video = first.iter().rev().find(|f| f.1.track == 0).expect("video");
        let next_video = second.iter().find(|f| f.1.track == 0).expect("video");
        assert_eq!(next_video.1.pts - last_video.1.pts, 3600);
        assert!(
            next_video.1.source_keyframe,
            "each loop starts at a keyframe"
        );
        assert!((next_video.0 - 10.0).abs() < 1e-9);
    }

    #[test]
    fn the_publisher_passes_two_loops_through_unchanged_with_gops_at_sync_samples() {
        use super::super::publisher::{Action, Publisher};
        let clip = DemoClip::parse(DEMO_MP4).expect("valid clip");
        let mut p = Publisher::new(Quirks::default());
        let t0 = Instant::now();
        assert!(p.handle(Input::Start(clip.source_tracks()), t0).is_empty());
        let mut published = 0;
        for (due, f) in clip.frames_of_loop(0).chain(clip.frames_of_loop(1)) {
            let at = t0 + Duration::from_secs_f64(due);
            let (track, pts, dts, key) = (f.track, f.pts, f.dts, f.source_keyframe);
            for a in p.handle(Input::Frame(f), at) {
                if let Action::Publish {
                    frame, gop_start, ..
                } = a
                {
                    published += 1;
                    // One session from 0: the timeline is the identity.
                    assert_eq!((frame.pts, Some(frame.dts)), (pts, dts));
                    // The codec layer's random access points are the MP4's
                    // sync samples.
                    assert_eq!(frame.keyframe, key, "track {track} at {dts:?}");
                    assert_eq!(gop_start, track == 0 && key);
                }
            }
        }
        assert_eq!(published, 2 * clip.samples.len());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(DemoClip::parse(b"not an mp4 at all").is_err());
    }
}
