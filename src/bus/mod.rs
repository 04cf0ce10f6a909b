//! The internal packet bus: one [`Stream`] per path, read once from its
//! source and fanned out to every egress. See `shared/DESIGN.md`.

pub mod fanout;
pub mod sessions;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

/// Track descriptions live in the pure codec layer; the bus carries them.
pub use crate::codec::{Codec, MediaKind, Track};
pub use fanout::{ByteLen, Fanout, GopLimits, RecvError, Subscriber};
pub use sessions::{SessionHandle, SessionInfo, Sessions};

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
    /// Set on the frame from which new codec parameters apply (e.g. a new SPS).
    pub new_track: Option<Arc<Track>>,
}

impl ByteLen for Arc<Frame> {
    fn byte_len(&self) -> usize {
        self.data.len()
    }
}

/// Where a stream is in its life, as shown by the API and the viewer page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StreamState {
    /// Configured; the first connection to the source is under way.
    Waiting,
    /// Frames are flowing.
    Live,
    /// The source failed and is being retried; `error` says why in plain words.
    Reconnecting { error: String },
    /// The source cannot work without a configuration change.
    Failed { reason: String },
}

/// The current track set of a live stream. Replaced as a whole (with a new
/// `generation`) when the source restarts with different tracks; readers
/// described with an older generation must be ended.
#[derive(Clone, Debug)]
pub struct TrackSet {
    pub generation: u64,
    pub tracks: Vec<Arc<Track>>,
}

/// Counters a stream keeps for the API and `/metrics`.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub reconnects: AtomicU64,
    pub rtsp_readers: AtomicU64,
    /// RTP packets the source lost (sequence gaps seen by the depacketizer).
    pub packets_lost: AtomicU64,
    /// Interarrival jitter per track in seconds (RFC 3550 §6.4.1).
    jitter: Mutex<Vec<f64>>,
}

impl StreamStats {
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
    state: Mutex<StreamState>,
    ingest: Mutex<IngestInfo>,
    tracks: watch::Sender<Option<Arc<TrackSet>>>,
    frames: Fanout<Arc<Frame>>,
    pub stats: StreamStats,
}

impl Stream {
    /// `source_display` must already have its password redacted.
    pub fn new(name: impl Into<String>, source_display: impl Into<String>) -> Arc<Self> {
        Arc::new(Stream {
            name: name.into(),
            source: source_display.into(),
            state: Mutex::new(StreamState::Waiting),
            ingest: Mutex::new(IngestInfo::default()),
            tracks: watch::Sender::new(None),
            frames: Fanout::new(FANOUT_CAPACITY, GopLimits::default()),
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
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_state(&self, state: StreamState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
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
        self.tracks.borrow().clone()
    }

    /// Waits until the stream has tracks, or `timeout` passes.
    pub async fn wait_for_tracks(&self, timeout: std::time::Duration) -> Option<Arc<TrackSet>> {
        let mut rx = self.tracks.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|t| t.is_some())).await;
        match res {
            Ok(Ok(t)) => t.clone(),
            _ => None,
        }
    }

    /// Announces the tracks of a (re)started source. If they are compatible
    /// with the current ones (same count and codecs), the generation is kept
    /// and readers carry on; otherwise a new generation starts.
    pub fn set_tracks(&self, tracks: Vec<Arc<Track>>) -> Arc<TrackSet> {
        let current = self.tracks();
        let compatible = current.as_ref().is_some_and(|c| {
            c.tracks.len() == tracks.len()
                && c.tracks
                    .iter()
                    .zip(&tracks)
                    .all(|(a, b)| a.codec.same_kind_as(&b.codec) && a.clock_rate == b.clock_rate)
        });
        let generation = match (&current, compatible) {
            (Some(c), true) => c.generation,
            (Some(c), false) => {
                self.frames.reset();
                c.generation + 1
            }
            (None, _) => 1,
        };
        let set = Arc::new(TrackSet { generation, tracks });
        self.tracks.send_replace(Some(set.clone()));
        set
    }

    /// Replaces one track's parameters (e.g. a new SPS) without a new generation.
    pub fn update_track(&self, index: usize, track: Arc<Track>) {
        self.tracks.send_modify(|cur| {
            if let Some(set) = cur {
                if index < set.tracks.len() {
                    let mut new = (**set).clone();
                    new.tracks[index] = track;
                    *set = Arc::new(new);
                }
            }
        });
    }

    /// Publishes one frame to every reader. Never waits.
    pub fn publish(&self, frame: Frame, gop_start: bool) {
        self.stats
            .bytes_in
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.frames.publish(Arc::new(frame), gop_start);
    }

    /// Ends the stream for every reader (the path was removed).
    pub fn close(&self) {
        self.frames.close();
    }

    /// A new reader, starting at the cached GOP's keyframe.
    pub fn subscribe(&self) -> Subscriber<Arc<Frame>> {
        self.frames.subscribe()
    }

    /// Frames since the last keyframe.
    pub fn gop_snapshot(&self) -> Vec<Arc<Frame>> {
        self.frames.gop_snapshot()
    }

    /// Number of bus subscribers (egress packetizers and direct readers).
    pub fn subscriber_count(&self) -> usize {
        self.frames.subscriber_count()
    }
}

/// All streams by path name.
pub struct Registry {
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Counts insertions and removals, for egresses that follow the set of
    /// streams (e.g. LL-HLS with `hls_always_on`).
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            streams: RwLock::default(),
            changes: watch::Sender::new(0),
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
