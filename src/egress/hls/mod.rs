//! Low-Latency HLS, pure core: CMAF segmenter, playlist model and writers,
//! and the [`Muxer`] that ties them to in-memory storage of one stream's
//! init segments, parts and segments. No sockets, tasks or HTTP: frames and
//! wall-clock time come in through [`Muxer::handle_frame`], results are read
//! with the lookups and [`Muxer::poll_event`] (the str0m pattern). The
//! HTTP layer maps requests onto [`playlist::parse_uri`], the lookups and
//! [`Muxer::reload_decision`], and does the waiting.
//!
//! Resource names (relative to the media playlist): `init-<version>.mp4`,
//! `seg-<msn>.mp4`, `part-<msn>-<index>.mp4`.
//!
//! [`manager`] is the tokio shell: one muxer per stream, fed from the bus,
//! started on demand and woken waiters; `crate::http::hls` serves it.

pub mod manager;
pub mod playlist;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use crate::cmaf::testutil;
/// The fMP4 writer and CMAF segmenter live in `crate::cmaf`, shared with
/// recording; their old paths under `egress::hls` stay valid.
pub use crate::cmaf::{fmp4, segmenter};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::bus::{Frame, Track};
pub use playlist::{
    init_uri, parse_uri, part_uri, segment_uri, write_multivariant, MediaPlaylist, PlaylistConfig,
    ReloadDecision, Resource, StreamInfo,
};
pub use segmenter::{
    hls_support, select_tracks, Notice, Segmenter, SegmenterConfig, SegmenterOutput,
    TrackSelection, UnsupportedTrack,
};

/// Muxer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxerConfig {
    /// Wanted part length (default 200 ms); see [`SegmenterConfig::part_duration`].
    pub part_duration: Duration,
    /// Minimum segment length (default 1 s); segments end at a keyframe.
    pub segment_duration: Duration,
    /// Complete segments listed in the playlist (default 7).
    pub window: usize,
    /// Segments kept in memory after leaving the playlist, for clients
    /// still fetching them (default 2).
    pub keep_extra: usize,
    /// The first segment's MSN and the first init version. Parts and
    /// segments are immutable and cacheable by name, so a muxer that
    /// replaces another for the same path should not reuse its names: pass
    /// something that grows across restarts, such as the UNIX time in
    /// seconds (segments last at least a second, so MSNs never catch up
    /// with the clock).
    pub first_sequence: u64,
}

impl Default for MuxerConfig {
    fn default() -> Self {
        MuxerConfig {
            part_duration: Duration::from_millis(200),
            segment_duration: Duration::from_secs(1),
            window: 7,
            keep_extra: 2,
            first_sequence: 0,
        }
    }
}

/// Something the HTTP layer may want to wake waiters for, or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxEvent {
    /// A new init segment is available under `init-<version>.mp4`.
    InitReady { version: u64 },
    /// A part is available and listed in the playlist.
    PartReady { msn: u64, part: u64 },
    /// A segment is complete and listed.
    SegmentReady { msn: u64 },
    /// Media was dropped or re-timed (for the log).
    Notice(Notice),
}

/// The result of looking up a part or segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Ready(Bytes),
    /// Not produced yet; it may be (the HTTP layer bounds the wait).
    NotYet,
    /// Dropped from memory, or will never exist.
    Gone,
}

#[derive(Debug)]
struct StoredSegment {
    msn: u64,
    init: u64,
    /// Each part's bytes; slices of `data` once the segment is complete.
    parts: Vec<Bytes>,
    /// The whole segment (its parts back to back), once complete.
    data: Option<Bytes>,
    duration: Duration,
}

/// A segment announced by the segmenter whose first part has not come yet.
#[derive(Debug, Clone, Copy)]
struct SegmentStart {
    program_date_time: SystemTime,
    discontinuity: bool,
    init: u64,
}

/// LL-HLS for one stream: feeds the segmenter, keeps the playlist model
/// and the bytes of the init segments, parts and segments of a bounded
/// window, and measures the bit rate.
#[derive(Debug)]
pub struct Muxer {
    config: MuxerConfig,
    segmenter: Segmenter,
    playlist: Option<MediaPlaylist>,
    start: Option<SegmentStart>,
    inits: BTreeMap<u64, Bytes>,
    current_init: Option<u64>,
    codecs: Vec<String>,
    stored: VecDeque<StoredSegment>,
    open: Option<StoredSegment>,
    events: VecDeque<MuxEvent>,
}

impl Muxer {
    pub fn new(config: MuxerConfig) -> Self {
        Muxer {
            segmenter: Segmenter::new(SegmenterConfig {
                part_duration: config.part_duration,
                segment_duration: config.segment_duration,
            }),
            config,
            playlist: None,
            start: None,
            inits: BTreeMap::new(),
            current_init: None,
            codecs: Vec::new(),
            stored: VecDeque::new(),
            open: None,
            events: VecDeque::new(),
        }
    }

    /// The stream's tracks from the next frame on (see
    /// [`Segmenter::handle_tracks`]).
    pub fn handle_tracks(&mut self, tracks: &[Arc<Track>]) {
        self.segmenter.handle_tracks(tracks);
        self.drain();
    }

    /// Feeds one frame of the tracks last given to [`Self::handle_tracks`]
    /// (see [`Segmenter::handle_frame`]); `now_wall` is the wall-clock time
    /// of its arrival, used for EXT-X-PROGRAM-DATE-TIME.
    pub fn handle_frame(&mut self, frame: &Frame, now_wall: SystemTime) {
        self.segmenter.handle_frame(frame, now_wall);
        self.drain();
    }

    /// The source ended: completes the open part and segment.
    pub fn flush(&mut self) {
        self.segmenter.flush();
        self.drain();
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// Which tracks are muxed, and why the others are not.
    pub fn selection(&self) -> &TrackSelection {
        self.segmenter.selection()
    }

    fn playlist_config(&self) -> PlaylistConfig {
        let seg = self.config.segment_duration.as_nanos();
        PlaylistConfig {
            window: self.config.window.max(1),
            part_target: self
                .segmenter
                .part_target()
                .unwrap_or(self.config.part_duration),
            min_target_duration: u64::try_from(seg.div_ceil(1_000_000_000)).unwrap_or(1),
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.segmenter.poll_output() {
            match out {
                SegmenterOutput::Init {
                    version,
                    data,
                    codecs,
                } => {
                    let version = self.config.first_sequence + u64::from(version);
                    self.inits.insert(version, data);
                    self.current_init = Some(version);
                    self.codecs = codecs;
                    self.events.push_back(MuxEvent::InitReady { version });
                }
                SegmenterOutput::SegmentStart {
                    init_version,
                    discontinuity,
                    program_date_time,
                } => {
                    // A start that never got a part passes its discontinuity on.
                    let carried = self.start.take().is_some_and(|s| s.discontinuity);
                    self.start = Some(SegmentStart {
                        program_date_time,
                        discontinuity: discontinuity || carried,
                        init: self.config.first_sequence + u64::from(init_version),
                    });
                }
                SegmenterOutput::Part {
                    data,
                    duration,
                    independent,
                } => self.add_part(data, duration, independent),
                SegmenterOutput::SegmentEnd { .. } => self.end_segment(),
                SegmenterOutput::Notice(n) => self.events.push_back(MuxEvent::Notice(n)),
            }
        }
    }

    fn add_part(&mut self, data: Bytes, duration: Duration, independent: bool) {
        let config = self.playlist_config();
        let first = self.config.first_sequence;
        let playlist = self
            .playlist
            .get_or_insert_with(|| MediaPlaylist::new(config, first));
        if let Some(start) = self.start.take() {
            let msn = playlist.begin_segment(
                start.program_date_time,
                start.discontinuity,
                init_uri(start.init),
            );
            self.open = Some(StoredSegment {
                msn,
                init: start.init,
                parts: Vec::new(),
                data: None,
                duration: Duration::ZERO,
            });
        }
        let (Some((msn, part)), Some(open)) =
            (playlist.add_part(duration, independent), self.open.as_mut())
        else {
            // The segmenter always announces a segment before its parts.
            return;
        };
        open.parts.push(data);
        open.duration += duration;
        self.events.push_back(MuxEvent::PartReady { msn, part });
    }

    fn end_segment(&mut self) {
        let Some(playlist) = self.playlist.as_mut() else {
            return;
        };
        let Some(msn) = playlist.end_segment() else {
            self.open = None;
            return;
        };
        let Some(mut seg) = self.open.take() else {
            return;
        };
        // One contiguous segment; the parts become views into it so the
        // bytes are held once.
        let total: usize = seg.parts.iter().map(Bytes::len).sum();
        let mut buf = BytesMut::with_capacity(total);
        for p in &seg.parts {
            buf.extend_from_slice(p);
        }
        let data = buf.freeze();
        let mut at = 0;
        for p in &mut seg.parts {
            let len = p.len();
            *p = data.slice(at..at + len);
            at += len;
        }
        seg.data = Some(data);
        self.stored.push_back(seg);
        while self.stored.len() > self.config.window.max(1) + self.config.keep_extra {
            self.stored.pop_front();
        }
        // Keep the init segments still referenced, and the current one.
        let oldest = self
            .stored
            .front()
            .map(|s| s.init)
            .or(self.current_init)
            .unwrap_or(0);
        let current = self.current_init;
        self.inits.retain(|&v, _| v >= oldest || Some(v) == current);
        self.events.push_back(MuxEvent::SegmentReady { msn });
    }

    /// The init segment `init-<version>.mp4`, while a stored segment (or
    /// the next one) uses it.
    pub fn init(&self, version: u64) -> Option<Bytes> {
        self.inits.get(&version).cloned()
    }

    /// The version of the init segment new segments use.
    pub fn current_init(&self) -> Option<u64> {
        self.current_init
    }

    /// The complete segment `seg-<msn>.mp4` (its parts back to back).
    pub fn segment(&self, msn: u64) -> Lookup {
        if let Some(s) = self.stored.iter().find(|s| s.msn == msn) {
            return s.data.clone().map_or(Lookup::Gone, Lookup::Ready);
        }
        let (next_msn, _) = self.next_part();
        if msn >= next_msn {
            Lookup::NotYet
        } else {
            Lookup::Gone
        }
    }

    /// The part `part-<msn>-<index>.mp4`.
    pub fn part(&self, msn: u64, index: u64) -> Lookup {
        let idx = usize::try_from(index).unwrap_or(usize::MAX);
        if let Some(s) = self.open.iter().chain(&self.stored).find(|s| s.msn == msn) {
            if let Some(p) = s.parts.get(idx) {
                return Lookup::Ready(p.clone());
            }
        }
        let published = match &self.playlist {
            Some(p) => p.part_published(msn, index),
            None => MediaPlaylist::new(self.playlist_config(), self.config.first_sequence)
                .part_published(msn, index),
        };
        match published {
            None => Lookup::NotYet,
            Some(_) => Lookup::Gone,
        }
    }

    /// The media playlist (delta update with `skip`), `query` appended to
    /// its URIs, or `None` before the first part exists.
    pub fn playlist(&self, skip: bool, query: &str) -> Option<String> {
        self.playlist
            .as_ref()
            .map(|p| p.write_media_playlist(skip, query))
    }

    /// The playlist model, once the first part exists.
    pub fn playlist_model(&self) -> Option<&MediaPlaylist> {
        self.playlist.as_ref()
    }

    /// Blocking-reload decision for `_HLS_msn`/`_HLS_part` (§6.2.5.2 of
    /// draft-pantos-hls-rfc8216bis); see [`MediaPlaylist::reload_decision`].
    pub fn reload_decision(&self, msn: Option<u64>, part: Option<u64>) -> ReloadDecision {
        match &self.playlist {
            Some(p) => p.reload_decision(msn, part),
            None => MediaPlaylist::new(self.playlist_config(), self.config.first_sequence)
                .reload_decision(msn, part),
        }
    }

    /// The next part to be published, (MSN, index): the preload hint.
    pub fn next_part(&self) -> (u64, u64) {
        match &self.playlist {
            Some(p) => p.next_part(),
            None => (self.config.first_sequence, 0),
        }
    }

    /// `(bytes, duration)` of each stored segment; before the first
    /// segment is complete, of the parts of the open one, so a player that
    /// starts at once still gets a (rough, keyframe-heavy: high) figure.
    fn measured(&self) -> Vec<(usize, Duration)> {
        let complete: Vec<(usize, Duration)> = self
            .stored
            .iter()
            .filter_map(|s| Some((s.data.as_ref()?.len(), s.duration)))
            .collect();
        if !complete.is_empty() {
            return complete;
        }
        self.open
            .iter()
            .map(|s| (s.parts.iter().map(Bytes::len).sum(), s.duration))
            .collect()
    }

    /// Peak bit rate over the stored segments (bits/s): the largest
    /// segment size × 8 / its duration (EXT-X-STREAM-INF BANDWIDTH,
    /// §4.4.6.2); before a segment is complete, that of the parts so far.
    pub fn bandwidth(&self) -> Option<u64> {
        self.measured()
            .into_iter()
            .filter_map(|(bytes, d)| {
                let secs = d.as_secs_f64();
                (secs > 0.0).then(|| (bytes as f64 * 8.0 / secs).ceil() as u64)
            })
            .max()
    }

    /// Average bit rate over the stored segments (bits/s), or over the
    /// parts so far before a segment is complete.
    pub fn average_bandwidth(&self) -> Option<u64> {
        let (bytes, secs) = self
            .measured()
            .into_iter()
            .fold((0usize, 0.0f64), |(b, s), (bytes, d)| {
                (b + bytes, s + d.as_secs_f64())
            });
        (secs > 0.0).then(|| (bytes as f64 * 8.0 / secs).ceil() as u64)
    }

    /// The EXT-X-STREAM-INF description of this stream, once a segment has
    /// been measured. `uri` is the media playlist's URI.
    pub fn stream_info(&self, uri: &str, tracks: &[Arc<Track>]) -> Option<StreamInfo> {
        let video = self.selection().video.and_then(|i| tracks.get(i));
        Some(StreamInfo {
            uri: uri.to_owned(),
            bandwidth: self.bandwidth()?,
            average_bandwidth: self.average_bandwidth(),
            codecs: self.codecs.clone(),
            resolution: video.and_then(|t| t.dimensions),
            frame_rate: video.and_then(|t| t.frame_rate),
        })
    }

    /// A multivariant playlist with this one stream, `query` appended to its
    /// URI; see [`Muxer::stream_info`].
    pub fn multivariant(&self, uri: &str, tracks: &[Arc<Track>], query: &str) -> Option<String> {
        Some(write_multivariant(&[self.stream_info(uri, tracks)?], query))
    }
}
