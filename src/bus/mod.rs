//! The internal packet bus: one [`Stream`] per path, read once from its
//! source and fanned out to every egress. See `docs/ARCHITECTURE.md` for the
//! bus contract.

pub mod fanout;
pub mod publish;
pub mod sessions;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::rendition::TranscodeSettings;
use crate::config::OnDemand;

/// Track descriptions live in the pure codec layer; the bus carries them.
pub use crate::codec::{Codec, DropReason, MediaKind, Track};
pub use fanout::{ByteLen, DemandGuard, Fanout, GopLimits, RecvError, Subscriber};
pub use publish::{Publication, PublishError, PublishSink, RtpSource, SourceFrame, SourceTrack};
pub use sessions::{
    Detail, DetailSource, NewSession, Protocol, SessionHandle, SessionInfo, Sessions,
};

/// One access unit (video) or audio frame of one track.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Index into the stream's track list.
    pub track: usize,
    /// Presentation timestamp in the track's clock units (`Track::clock_rate`),
    /// extended to 64 bits and monotonic per track across source reconnects.
    pub pts: i64,
    /// Decoding timestamp, same units; equal to `pts` when the source has no
    /// B-frames or does not signal reordering.
    pub dts: i64,
    /// A video IDR/IRAP access unit, decodable on its own; always true for audio.
    pub keyframe: bool,
    /// When the last packet of this frame arrived from the source.
    pub received: Instant,
    /// Video: NAL units each with a 4-byte big-endian length prefix
    /// (AVCC/HVCC, ISO/IEC 14496-15), parameter sets not inserted. Audio: one
    /// raw frame (AAC access unit without ADTS, G.711 samples, Opus packet).
    pub data: Bytes,
}

/// One item of a stream's subscription, in the order the source produced
/// them: the track set in force, then frames read with it, until the next
/// track set. A new subscriber gets the current track set first, then the
/// cached GOP, then live items; a change of codec parameters (a new SPS
/// mid-stream) or a source restart with other tracks is an item between the
/// frames it separates.
#[derive(Clone, Debug)]
pub enum Item {
    /// The tracks from here on. The same `generation` as before: readers
    /// carry on with the new parameters; another one: readers described
    /// with the old tracks must be ended.
    Tracks(Arc<TrackSet>),
    Frame(Arc<Frame>),
}

impl ByteLen for Item {
    fn byte_len(&self) -> usize {
        match self {
            Item::Tracks(_) => 0,
            Item::Frame(f) => f.data.len(),
        }
    }
}

/// A reader of a [`Stream`]: see [`Item`] for the order. A reader that
/// falls behind resumes at the next keyframe, preceded by the track set in
/// force there if it changed in what was skipped.
pub type Subscription = Subscriber<Item>;

/// Where a stream is in its life, as shown by the API and the viewer page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StreamState {
    /// An on-demand source that is not being read: nobody watches, the
    /// camera is not contacted.
    Idle,
    /// Configured; the first connection to the source is under way.
    Waiting,
    /// Frames are flowing.
    Live,
    /// The source failed and is being retried; `error` says why in plain words.
    Reconnecting { error: String },
    /// The source cannot work without a configuration change.
    Failed { reason: String },
}

/// The track set of a live stream. Replaced as a whole on every change; the
/// `generation` changes only when the tracks are incompatible with the
/// previous ones (count, codecs, clock rates), and readers described with an
/// older generation must then be ended.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackSet {
    pub generation: u64,
    pub tracks: Vec<Arc<Track>>,
}

/// Counters a stream keeps for the API and `/metrics`.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    /// Media bytes sent to readers of every egress: RTP to RTSP and WebRTC
    /// readers, files served over LL-HLS. Readers per protocol are counted
    /// in the session registry ([`Sessions::count`]).
    pub bytes_out: AtomicU64,
    pub reconnects: AtomicU64,
    /// RTP packets the source lost (sequence gaps seen by the depacketizer).
    pub packets_lost: AtomicU64,
    /// Access units the source's depacketizers could not hand out, by
    /// [`DropReason::index`]: each is a picture or audio frame missing on
    /// the bus (video resumes at the next random access point).
    frames_dropped: [AtomicU64; DropReason::ALL.len()],
    /// Interarrival jitter per track in seconds (RFC 3550 §6.4.1).
    jitter: Mutex<Vec<f64>>,
}

impl StreamStats {
    /// Counts one access unit dropped for `reason`.
    pub fn frame_dropped(&self, reason: DropReason) {
        if let Some(c) = self.frames_dropped.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Access units dropped so far, per reason (every reason, zeros too).
    pub fn frames_dropped(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .zip(&self.frames_dropped)
            .map(|(&r, c)| (r, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Jitter per track in seconds.
    pub fn jitter(&self) -> Vec<f64> {
        self.jitter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets track `i`'s jitter in seconds.
    pub fn set_jitter(&self, i: usize, seconds: f64) {
        let mut j = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        if j.len() <= i {
            j.resize(i + 1, 0.0);
        }
        j[i] = seconds;
    }
}

/// How the source is being read, for the API: the transport in use and a
/// plain-words notice about anything the operator should know (e.g. a
/// fallback from UDP to TCP and why).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestInfo {
    pub transport: Option<String>,
    pub notice: Option<String>,
}

/// Frames the fan-out keeps for a slow reader before it lags and skips to the
/// next keyframe: about 10 s of 25 fps video plus 50 audio frames/s.
const FANOUT_CAPACITY: usize = 1024;

/// One path: a source read once, fanned out to all readers.
pub struct Stream {
    name: String,
    /// Source URL with userinfo redacted, for display.
    source: String,
    /// Watched by readers waiting for the stream to go live.
    state: watch::Sender<StreamState>,
    /// Set for an on-demand source: how long a reader waits for it to go
    /// live, how long it stays open after the last reader.
    on_demand: Mutex<Option<OnDemand>>,
    ingest: Mutex<IngestInfo>,
    /// Track sets (as headers) and frames; the current track set is its
    /// current header.
    items: Fanout<Item>,
    pub stats: StreamStats,
}

impl Stream {
    /// `source_display` must already have its password redacted.
    pub fn new(name: impl Into<String>, source_display: impl Into<String>) -> Arc<Self> {
        Arc::new(Stream {
            name: name.into(),
            source: source_display.into(),
            state: watch::channel(StreamState::Waiting).0,
            on_demand: Mutex::new(None),
            ingest: Mutex::new(IngestInfo::default()),
            items: Fanout::new(FANOUT_CAPACITY, GopLimits::default()),
            stats: StreamStats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source, userinfo redacted.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn state(&self) -> StreamState {
        self.state.borrow().clone()
    }

    pub fn set_state(&self, state: StreamState) {
        self.state.send_replace(state);
    }

    /// The on-demand settings of this stream's source, `None` for a source
    /// read all the time.
    pub fn on_demand(&self) -> Option<OnDemand> {
        self.on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Called by whoever starts the source (`paths`), before it runs.
    pub fn set_on_demand(&self, on_demand: Option<OnDemand>) {
        *self.on_demand.lock().unwrap_or_else(|e| e.into_inner()) = on_demand;
    }

    /// Readers (subscribers, plus [`Stream::want`] guards) now, changing as
    /// they come and go: an on-demand source runs while it is above 0.
    pub fn demand(&self) -> watch::Receiver<usize> {
        self.items.demand()
    }

    /// Counts as a reader until dropped, without subscribing: a reader
    /// waiting for an on-demand source to start.
    pub fn want(&self) -> DemandGuard {
        self.items.want()
    }

    /// The on-demand source stopped (no reader for its close delay): the
    /// state says `idle` and the cached GOP is dropped, so a later reader
    /// does not start with stale pictures. The tracks stay, so readers that
    /// come back see the same generation when the camera's are unchanged.
    pub fn go_idle(&self) {
        self.items.forget_gop();
        self.set_state(StreamState::Idle);
    }

    /// What every egress calls before describing a stream to a reader: the
    /// tracks once the stream can be read. For an on-demand source this is
    /// its start: the wait counts as demand, and lasts until the stream is
    /// live with tracks or its `start_timeout` passes (`Err` in plain
    /// words: why it did not start). For other streams it waits up to
    /// `fallback` for tracks (`Err` if none came; `fallback` may be zero).
    pub async fn wait_ready(&self, fallback: Duration) -> Result<Arc<TrackSet>, String> {
        let Some(od) = self.on_demand() else {
            return self
                .wait_for_tracks(fallback)
                .await
                .ok_or_else(|| format!("stream {:?} has no tracks yet", self.name));
        };
        let _demand = self.want();
        let mut state = self.state.subscribe();
        let deadline = tokio::time::Instant::now() + od.start_timeout;
        loop {
            if let (StreamState::Live, Some(set)) = (self.state(), self.tracks()) {
                return Ok(set);
            }
            // The tracks are announced in order with the frames, not on the
            // state channel: a short tick catches them after `Live`.
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            tokio::select! {
                _ = state.changed() => {}
                _ = tokio::time::sleep_until(tick.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let why = match self.state() {
                    StreamState::Reconnecting { error } => format!(": {error}"),
                    StreamState::Failed { reason } => format!(": {reason}"),
                    _ => String::new(),
                };
                return Err(format!(
                    "on-demand stream {:?} did not go live within {} s{why}",
                    self.name,
                    od.start_timeout.as_secs_f32()
                ));
            }
        }
    }

    pub fn ingest_info(&self) -> IngestInfo {
        self.ingest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_ingest_info(&self, info: IngestInfo) {
        *self.ingest.lock().unwrap_or_else(|e| e.into_inner()) = info;
    }

    /// The current tracks, or `None` before the source has described them
    /// with all codec parameters known.
    pub fn tracks(&self) -> Option<Arc<TrackSet>> {
        match self.items.header() {
            Some(Item::Tracks(set)) => Some(set),
            _ => None,
        }
    }

    /// Waits until the stream has tracks, or `timeout` passes.
    pub async fn wait_for_tracks(&self, timeout: std::time::Duration) -> Option<Arc<TrackSet>> {
        if let Some(set) = self.tracks() {
            return Some(set);
        }
        // Subscribed after the check: a track set published in between is
        // this subscriber's first item.
        let mut sub = self.subscribe();
        let first_tracks = async {
            loop {
                match sub.recv().await {
                    Ok(Item::Tracks(set)) => return Some(set),
                    Ok(Item::Frame(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, first_tracks)
            .await
            .ok()
            .flatten()
    }

    /// Announces the tracks from now on, in order with the frames: a source
    /// that (re)started, or new codec parameters of a track (e.g. a new
    /// SPS). If they are compatible with the current ones (same count,
    /// codecs, channels and clock rates), the generation is kept and
    /// readers carry on; otherwise a new generation starts and the GOP
    /// cache is dropped. The same tracks as now change nothing.
    pub fn set_tracks(&self, tracks: Vec<Arc<Track>>) -> Arc<TrackSet> {
        self.items.publish_header(|current| {
            let current = match current {
                Some(Item::Tracks(set)) => Some(set),
                _ => None,
            };
            if let Some(c) = current.filter(|c| c.tracks == tracks) {
                return (None, c.clone());
            }
            let compatible = current.is_some_and(|c| {
                c.tracks.len() == tracks.len()
                    && c.tracks.iter().zip(&tracks).all(|(a, b)| {
                        a.codec.same_kind_as(&b.codec) && a.clock_rate == b.clock_rate
                    })
            });
            let generation = match (current, compatible) {
                (Some(c), true) => c.generation,
                (Some(c), false) => c.generation + 1,
                (None, _) => 1,
            };
            let set = Arc::new(TrackSet { generation, tracks });
            (Some((Item::Tracks(set.clone()), !compatible)), set)
        })
    }

    /// Publishes one frame to every reader. Never waits.
    pub fn publish(&self, frame: Frame, gop_start: bool) {
        self.count_in(&frame);
        self.items.publish(Item::Frame(Arc::new(frame)), gop_start);
    }

    /// Publishes a leading picture (an H.265 RASL picture after a CRA):
    /// readers that start at that CRA skip it, since their decoder lacks
    /// the pictures it refers to ([`Fanout::publish_leading`]). Never waits.
    pub fn publish_leading(&self, frame: Frame) {
        self.count_in(&frame);
        self.items.publish_leading(Item::Frame(Arc::new(frame)));
    }

    fn count_in(&self, frame: &Frame) {
        self.stats
            .bytes_in
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the stream for every reader (the path was removed).
    pub fn close(&self) {
        self.items.close();
    }

    /// A new reader: the current track set, the cached GOP from its
    /// keyframe, then live items (see [`Item`]).
    pub fn subscribe(&self) -> Subscription {
        self.items.subscribe()
    }

    /// Number of bus subscribers (egress packetizers and direct readers).
    pub fn subscriber_count(&self) -> usize {
        self.items.subscriber_count()
    }
}

/// Makes streams that are not read from a source but derived from another
/// stream on demand (renditions: `cam~opus`, `cam~h264`; see
/// `transcode`). Installed in the [`Registry`] by the wiring, so that an
/// egress opens a rendition by name without importing the transcoder.
pub trait StreamMaker: Send + Sync {
    /// Starts the stream `name` if it is one this maker can make and the
    /// stream it derives from exists: `Ok(Some)` with the new stream, already
    /// inserted in `registry`; `Ok(None)` if `name` is not one of its names;
    /// `Err` (plain words) if it is but can't be made (the path's settings
    /// refuse it, the binary can't transcode, no such path).
    fn make(&self, registry: &Arc<Registry>, name: &str) -> Result<Option<Arc<Stream>>, String>;

    /// The transcoding settings of path `base` (defaults for a path the
    /// configuration doesn't name).
    fn settings(&self, base: &str) -> TranscodeSettings;
}

/// All streams by path name.
pub struct Registry {
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Counts insertions and removals, for egresses that follow the set of
    /// streams (e.g. LL-HLS with `hls_always_on`).
    changes: watch::Sender<u64>,
    maker: RwLock<Option<Arc<dyn StreamMaker>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            streams: RwLock::default(),
            changes: watch::Sender::new(0),
            maker: RwLock::default(),
        }
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// A receiver that sees a new value whenever a stream is added or removed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.read().get(name).cloned()
    }

    /// Installs the maker of derived streams [`Registry::open`] uses.
    pub fn set_maker(&self, maker: Arc<dyn StreamMaker>) {
        *self.maker.write().unwrap_or_else(|e| e.into_inner()) = Some(maker);
    }

    /// The transcoding settings of path `base`: what its readers may be
    /// given instead of the camera's codecs. Defaults without a maker.
    pub fn transcode_settings(&self, base: &str) -> TranscodeSettings {
        self.maker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| m.settings(base))
            .unwrap_or_default()
    }

    /// The stream a reader asks for by name: a stream that exists, else one
    /// the installed [`StreamMaker`] starts now (a rendition). `Ok(None)`:
    /// no such stream; `Err`: a rendition that can't be made, and why.
    pub fn open(self: &Arc<Self>, name: &str) -> Result<Option<Arc<Stream>>, String> {
        if let Some(s) = self.get(name) {
            return Ok(Some(s));
        }
        let maker = self.maker.read().unwrap_or_else(|e| e.into_inner()).clone();
        match maker {
            Some(m) => m.make(self, name),
            None => Ok(None),
        }
    }

    /// Adds `stream`; returns `false` (and changes nothing) if the name is taken.
    pub fn insert(&self, stream: Arc<Stream>) -> bool {
        let mut map = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(stream.name()) {
            return false;
        }
        map.insert(stream.name().to_owned(), stream);
        drop(map);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    /// Removes `stream` if it is still the one registered under its name.
    pub fn remove_stream(&self, stream: &Arc<Stream>) -> bool {
        let mut map = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if !map
            .get(stream.name())
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            return false;
        }
        map.remove(stream.name());
        drop(map);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Stream>> {
        let removed = self
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if removed.is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
        removed
    }

    /// All streams, sorted by name.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.streams.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(sps_tail: u8) -> Arc<Track> {
        Arc::new(Track::new(
            Codec::H264 {
                sps: Bytes::from(vec![0x67, 0x64, 0x00, sps_tail]),
                pps: Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]),
            },
            90_000,
        ))
    }

    fn h265() -> Arc<Track> {
        Arc::new(Track::new(
            Codec::H265 {
                vps: Bytes::from_static(&[0x40, 0x01]),
                sps: Bytes::from_static(&[0x42, 0x01]),
                pps: Bytes::from_static(&[0x44, 0x01]),
            },
            90_000,
        ))
    }

    fn frame(n: i64, keyframe: bool) -> Frame {
        Frame {
            track: 0,
            pts: n * 3600,
            dts: n * 3600,
            keyframe,
            received: Instant::now(),
            data: Bytes::from(vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]),
        }
    }

    /// What a subscriber reads now, in words: `T<gen>:<sps byte>` for a
    /// track set, `K<n>`/`F<n>` for a keyframe/frame at n * 3600.
    fn drain(sub: &mut Subscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(item)) = sub.try_recv() {
            out.push(match item {
                Item::Tracks(set) => {
                    let tail = match &set.tracks[0].codec {
                        Codec::H264 { sps, .. } => sps.last().copied().unwrap_or(0),
                        _ => 0xff,
                    };
                    format!("T{}:{tail}", set.generation)
                }
                Item::Frame(f) => format!("{}{}", if f.keyframe { "K" } else { "F" }, f.pts / 3600),
            });
        }
        out
    }

    #[tokio::test]
    async fn a_subscriber_gets_tracks_then_the_gop_then_live_items() {
        let s = Stream::new("cam", "test");
        s.set_tracks(vec![h264(30)]);
        s.publish(frame(0, false), false); // before the first keyframe: not cached
        s.publish(frame(1, true), true);
        s.publish(frame(2, false), false);
        let mut sub = s.subscribe();
        s.publish(frame(3, false), false);
        assert_eq!(drain(&mut sub), ["T1:30", "K1", "F2", "F3"]);
    }

    #[tokio::test]
    async fn a_parameter_change_comes_between_the_frames_it_separates() {
        let s = Stream::new("cam", "test");
        s.set_tracks(vec![h264(30)]);
        let mut live = s.subscribe();
        s.publish(frame(0, true), true);
        s.publish(frame(1, false), false);
        // A new SPS mid-stream: compatible, same generation.
        assert_eq!(s.set_tracks(vec![h264(31)]).generation, 1);
        s.publish(frame(2, true), true);
        assert_eq!(drain(&mut live), ["T1:30", "K0", "F1", "T1:31", "K2"]);
        // The same tracks again change nothing.
        s.set_tracks(vec![h264(31)]);
        // A source restart as H.265: a new generation, the old GOP dropped.
        s.publish(frame(3, false), false);
        assert_eq!(s.set_tracks(vec![h265()]).generation, 2);
        let mut late = s.subscribe();
        s.publish(frame(4, false), false);
        s.publish(frame(5, true), true);
        assert_eq!(drain(&mut live), ["F3", "T2:255", "F4", "K5"]);
        assert_eq!(drain(&mut late), ["T2:255", "K5"]);
        assert_eq!(s.tracks().map(|t| t.generation), Some(2));
    }

    #[tokio::test]
    async fn a_lagged_subscriber_gets_the_current_tracks_before_its_next_keyframe() {
        let s = Stream::new("cam", "test");
        s.set_tracks(vec![h264(30)]);
        s.publish(frame(0, true), true);
        let mut sub = s.subscribe();
        assert_eq!(drain(&mut sub), ["T1:30", "K0"]);
        // A change, then more frames than the ring holds: the change is lost
        // to the lag.
        s.set_tracks(vec![h264(31)]);
        let n = FANOUT_CAPACITY as i64 + 10;
        for i in 1..n {
            s.publish(frame(i, false), false);
        }
        s.publish(frame(n, true), true);
        s.publish(frame(n + 1, false), false);
        assert_eq!(
            drain(&mut sub),
            ["T1:31".to_owned(), format!("K{n}"), format!("F{}", n + 1)]
        );
        assert!(sub.lagged() > 0);
    }

    #[tokio::test]
    async fn wait_for_tracks_returns_the_first_track_set_or_none_at_the_deadline() {
        let s = Stream::new("cam", "test");
        let waited = s
            .wait_for_tracks(std::time::Duration::from_millis(20))
            .await;
        assert!(waited.is_none());
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait_for_tracks(std::time::Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        s.set_tracks(vec![h264(30)]);
        let set = waiter.await.expect("no panic").expect("tracks in time");
        assert_eq!(set.generation, 1);
    }
}
