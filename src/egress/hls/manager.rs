//! The tokio shell around the pure [`Muxer`]: one muxer per stream, shared
//! by every HLS viewer of that stream, fed from the stream's bus.
//!
//! Lifetime: a stream's muxer starts on the first HTTP request for it
//! ([`HlsManager::open`]) and stops after [`HlsConfig::idle_timeout`]
//! without one, or when the stream is removed; with
//! [`HlsConfig::always_on`] every stream's muxer runs from the start
//! ([`HlsManager::start_all`]) and never idles out.
//!
//! Waiting: every change of the playlist (a part, a segment or an init
//! segment) is published through a `tokio::sync::watch` of [`Progress`];
//! blocking playlist reloads and requests for a part that is still being
//! written wait on it ([`HlsStream::wait_for`]), so nothing polls.
//!
//! Track changes arrive in band, between the frames they separate: when the
//! track set changes generation (the source restarted with other codecs),
//! the open segment is completed and the muxer restarts on the new tracks
//! from their first keyframe, writing a new init segment and flagging the
//! next segment with EXT-X-DISCONTINUITY, so players carry on in the same
//! playlist. New parameters of the same generation (a new SPS) get a new
//! init segment after a discontinuity too.
//!
//! Names: [`MuxerConfig::first_sequence`] comes from the UNIX time (in
//! units of the minimum segment duration) and is never below where the
//! previous muxer of the same path stopped, so parts and segments, which
//! are cached as immutable, never get a name that meant something else.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Lookup, MuxEvent, Muxer, MuxerConfig, Notice, ReloadDecision};
use crate::bus::sessions::HlsDetail;
use crate::bus::{
    Codec, Detail, Frame, Item, NewSession, Protocol, RecvError, Registry, SessionHandle, Sessions,
    Stream, StreamState, Subscription, Track,
};
use crate::config::rendition::Rendition;
use crate::config::HlsConfig;

/// The media playlist's URI relative to the multivariant playlist.
pub const MEDIA_PLAYLIST: &str = "stream.m3u8";

/// Where a stream's muxer stands, as published to waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The next part to be published as (MSN, index): every part ordered
    /// before it exists or never will, and every segment with a lower MSN
    /// is complete.
    pub next_part: (u64, u64),
    /// Whether the media playlist lists a complete segment. Before that
    /// it has only the parts of the first segment, which players such as
    /// ffmpeg and hls.js take for an empty playlist, so it is not served.
    pub ready: bool,
    /// EXT-X-TARGETDURATION in seconds.
    pub target_duration: u64,
    /// Incremented on every change of the playlist.
    pub version: u64,
    /// When the last change happened.
    pub updated: Instant,
    /// The muxer stopped (idle, or the stream was removed): nothing more
    /// will be published.
    pub stopped: bool,
}

/// What a waiter waits for; see [`HlsStream::wait_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The first complete segment (see [`Progress::ready`]).
    Ready,
    /// Segment `msn` is complete.
    Segment(u64),
    /// Part (MSN, index) is published, or its segment ended without it.
    Part(u64, u64),
}

impl Want {
    /// What `_HLS_msn=msn` (and `_HLS_part=part`) or a request for
    /// segment `msn` (part `part`) waits for.
    pub fn directive(msn: u64, part: Option<u64>) -> Want {
        part.map_or(Want::Segment(msn), |p| Want::Part(msn, p))
    }

    /// Whether `p` satisfies the wait.
    pub fn reached(self, p: &Progress) -> bool {
        match self {
            Want::Ready => p.ready,
            Want::Segment(msn) => msn < p.next_part.0,
            Want::Part(msn, index) => (msn, index) < p.next_part,
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Reached,
    TimedOut,
    /// The muxer stopped before the wait was satisfied.
    Stopped,
}

/// The muxer and the playlists written from its current state (written at
/// most once per change, however many viewers ask).
struct Inner {
    muxer: Muxer,
    /// `[full, delta]` media playlist of the current state.
    playlists: [Option<Bytes>; 2],
}

/// The LL-HLS muxer of one stream and its waiters.
pub struct HlsStream {
    /// The path served (`cam`), the key of the manager's map.
    path: String,
    /// What is muxed: the path's stream or its `~opus` rendition.
    stream: Arc<Stream>,
    inner: Mutex<Inner>,
    progress: watch::Sender<Progress>,
    /// Nanoseconds after the manager's `epoch` of the last request.
    last_request: AtomicU64,
    /// The segment duration configured, for target durations before the
    /// first segment.
    min_target_duration: u64,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The muxer's entry in the session registry, until it stops.
    session: Mutex<Option<SessionHandle>>,
    /// Authenticated users that fetched from this muxer (at most
    /// [`MAX_NAMED_VIEWERS`]), shown as its session's user.
    viewers: Mutex<BTreeSet<String>>,
}

/// Users named on an HLS muxer's session at most; more are not listed.
pub const MAX_NAMED_VIEWERS: usize = 16;

impl HlsStream {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poisoned only by a panic in the muxer task, which ends that task;
        // `HlsManager::open` then starts a fresh muxer. Requests still
        // holding this one may read what it has.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the muxer task is still feeding this muxer.
    fn is_running(&self) -> bool {
        !self.progress().stopped
            && self
                .task
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|t| !t.is_finished())
    }

    /// The stream this muxer reads.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A receiver of every progress change (for tests and measurements).
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Waits until `want` is reached, the muxer stops, or `timeout` passes.
    /// Returns at once when `want` is already reached.
    pub async fn wait_for(&self, want: Want, timeout: Duration) -> Waited {
        let mut rx = self.progress.subscribe();
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|p| p.stopped || want.reached(p))).await;
        match waited {
            Ok(Ok(p)) if want.reached(&p) => Waited::Reached,
            // Stopped, or the sender is gone (which only happens when stopped).
            Ok(_) => Waited::Stopped,
            Err(_) => Waited::TimedOut,
        }
    }

    /// Three target durations: how long a blocking reload may be held
    /// (draft-pantos-hls-rfc8216bis §6.2.5.2).
    pub fn block_limit(&self) -> Duration {
        Duration::from_secs(3 * self.progress().target_duration.max(1))
    }

    /// The media playlist, or its delta update with `skip` (§6.2.5.1),
    /// `query` appended to every URI (written once per change when empty);
    /// `None` before the first part.
    pub fn media_playlist(&self, skip: bool, query: &str) -> Option<Bytes> {
        let mut inner = self.lock();
        if !query.is_empty() {
            // Per viewer (its credentials): not cached.
            return inner.muxer.playlist(skip, query).map(Bytes::from);
        }
        let slot = usize::from(skip);
        if let Some(text) = &inner.playlists[slot] {
            return Some(text.clone());
        }
        let text = Bytes::from(inner.muxer.playlist(skip, "")?);
        inner.playlists[slot] = Some(text.clone());
        Some(text)
    }

    /// The multivariant playlist (§4.4.6) with this stream's one variant:
    /// CODECS, RESOLUTION and FRAME-RATE from the tracks, BANDWIDTH
    /// measured; `query` appended to its URI; `None` before the first part.
    pub fn multivariant(&self, tracks: &[Arc<Track>], query: &str) -> Option<String> {
        self.lock()
            .muxer
            .multivariant(MEDIA_PLAYLIST, tracks, query)
    }

    /// See [`Muxer::reload_decision`].
    pub fn reload_decision(&self, msn: Option<u64>, part: Option<u64>) -> ReloadDecision {
        self.lock().muxer.reload_decision(msn, part)
    }

    /// `init-<version>.mp4`.
    pub fn init(&self, version: u64) -> Option<Bytes> {
        self.lock().muxer.init(version)
    }

    /// `seg-<msn>.mp4`.
    pub fn segment(&self, msn: u64) -> Lookup {
        self.lock().muxer.segment(msn)
    }

    /// `part-<msn>-<index>.mp4`.
    pub fn part(&self, msn: u64, index: u64) -> Lookup {
        self.lock().muxer.part(msn, index)
    }

    /// Why the stream's tracks give no HLS (every one unsupported), in plain
    /// words; `None` when at least one is usable or the tracks are unknown.
    pub fn no_usable_tracks(&self) -> Option<String> {
        let set = self.stream.tracks()?;
        let sel = super::select_tracks(&set.tracks);
        if sel.video.is_some() || sel.audio.is_some() {
            return None;
        }
        let reasons: Vec<String> = sel.skipped.iter().map(|(_, e)| e.to_string()).collect();
        Some(if reasons.is_empty() {
            "the stream has no tracks".to_owned()
        } else {
            reasons.join("; ")
        })
    }

    /// Feeds the tracks of the frames that follow and publishes what changed.
    fn feed_tracks(&self, tracks: &[Arc<Track>]) {
        let mut inner = self.lock();
        inner.muxer.handle_tracks(tracks);
        self.after_mux(inner);
    }

    /// Feeds one frame and publishes what changed.
    fn feed(&self, frame: &Frame, wall: SystemTime) {
        let mut inner = self.lock();
        inner.muxer.handle_frame(frame, wall);
        self.after_mux(inner);
    }

    /// Completes the open part and segment (the source ended or changed).
    fn flush(&self) {
        let mut inner = self.lock();
        inner.muxer.flush();
        self.after_mux(inner);
    }

    fn after_mux(&self, mut inner: MutexGuard<'_, Inner>) {
        let mut changed = false;
        while let Some(event) = inner.muxer.poll_event() {
            match event {
                MuxEvent::Notice(n) => log_notice(self.stream.name(), &n),
                MuxEvent::InitReady { .. }
                | MuxEvent::PartReady { .. }
                | MuxEvent::SegmentReady { .. } => changed = true,
            }
        }
        if !changed {
            return;
        }
        inner.playlists = [None, None];
        let next_part = inner.muxer.next_part();
        let model = inner.muxer.playlist_model();
        let ready = model.is_some_and(|p| p.last_complete_msn().is_some());
        let target_duration = model.map_or(self.min_target_duration, |p| p.target_duration());
        // Publish after unlocking: a waiter woken by this may lock at once.
        drop(inner);
        self.progress.send_modify(|p| {
            p.next_part = next_part;
            p.ready = ready;
            p.target_duration = target_duration;
            p.version += 1;
            p.updated = Instant::now();
        });
    }

    fn stop(&self) {
        self.progress.send_modify(|p| p.stopped = true);
        // Off the session list; requests still holding this muxer may
        // finish reading it.
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Counts `n` bytes of a playlist, init segment, segment or part
    /// served, into the stream's `bytes_out` and the muxer's session.
    pub fn count_served(&self, n: u64) {
        self.stream.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
        if let Some(s) = &*self.session.lock().unwrap_or_else(|e| e.into_inner()) {
            s.add_bytes(n);
        }
    }

    /// Records that `user` (authenticated by the HTTP layer) fetched from
    /// this muxer. HTTP requests are not sessions, so the muxer's session
    /// entry names its viewers' users (sorted, comma-separated).
    pub fn note_viewer(&self, user: &str) {
        let mut viewers = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        if viewers.contains(user) || viewers.len() >= MAX_NAMED_VIEWERS {
            return;
        }
        viewers.insert(user.to_owned());
        let names = viewers.iter().map(String::as_str).collect::<Vec<_>>();
        if let Some(s) = &*self.session.lock().unwrap_or_else(|e| e.into_inner()) {
            s.set_user(Some(names.join(", ")));
        }
    }

    /// Completes when the API kicks the muxer (never once it stopped).
    fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let kicked = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(SessionHandle::kicked);
        async move {
            match kicked {
                Some(k) => k.await,
                None => std::future::pending().await,
            }
        }
    }

    /// The next MSN a successor muxer of this path may use.
    fn next_free_sequence(&self) -> u64 {
        let inner = self.lock();
        let (msn, _) = inner.muxer.next_part();
        let init = inner.muxer.current_init().map_or(0, |v| v + 1);
        msn.max(init) + 1
    }
}

fn log_notice(path: &str, n: &Notice) {
    match n {
        Notice::TracksChanged { selection } => {
            tracing::info!(path, ?selection, "HLS: tracks changed, new init segment")
        }
        Notice::ParametersRejected { track, error } => {
            tracing::warn!(path, track, "HLS: new codec parameters unusable: {error}")
        }
        Notice::EncodeFailed { error } => tracing::warn!(path, "HLS: {error}"),
        other => tracing::debug!(path, "HLS: {other:?}"),
    }
}

#[derive(Default)]
struct Running {
    streams: HashMap<String, Arc<HlsStream>>,
    /// Per path, the first MSN a new muxer may use (see the module docs).
    next_sequence: HashMap<String, u64>,
}

/// All running muxers, by path.
pub struct HlsManager {
    registry: Arc<Registry>,
    config: HlsConfig,
    /// tokio's clock (std's outside tests), so the idle timeout follows a
    /// paused test clock.
    epoch: tokio::time::Instant,
    running: Mutex<Running>,
    /// With `hls_always_on`: the task that starts muxers for added streams.
    follower: Mutex<Option<JoinHandle<()>>>,
    me: Weak<HlsManager>,
    /// Running muxers are listed (and can be kicked) as `hls` sessions.
    sessions: Arc<Sessions>,
}

impl HlsManager {
    pub fn new(registry: Arc<Registry>, config: HlsConfig) -> Arc<Self> {
        Self::with_sessions(registry, config, Sessions::new())
    }

    /// Like [`HlsManager::new`], listing each running muxer in `sessions`.
    pub fn with_sessions(
        registry: Arc<Registry>,
        config: HlsConfig,
        sessions: Arc<Sessions>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| HlsManager {
            sessions,
            registry,
            config,
            epoch: tokio::time::Instant::now(),
            running: Mutex::new(Running::default()),
            follower: Mutex::new(None),
            me: me.clone(),
        })
    }

    pub fn config(&self) -> &HlsConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        // Plain maps; a panic elsewhere leaves them consistent.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The muxer of stream `path`, started if it is not running, and marks
    /// it as requested now (which keeps it from idling out); `None` when no
    /// stream has this path.
    pub fn open(&self, path: &str) -> Option<Arc<HlsStream>> {
        let stream = self.registry.open(path).ok().flatten()?;
        let stream = self.muxed_stream(stream);
        let mut running = self.lock();
        let hs = match running.streams.get(path) {
            Some(hs) if Arc::ptr_eq(&hs.stream, &stream) && hs.is_running() => hs.clone(),
            _ => self.start_locked(&mut running, path, stream),
        };
        // Under the map lock, so the idle check (also under it) sees it.
        hs.last_request.store(self.now_nanos(), Ordering::Relaxed);
        Some(hs)
    }

    /// The running muxer of `path`, if any, without starting one or
    /// counting as a request.
    pub fn get(&self, path: &str) -> Option<Arc<HlsStream>> {
        self.lock().streams.get(path).cloned()
    }

    /// Starts the muxer of every stream in the registry, and of every
    /// stream added later (`hls_always_on`). Must run inside a tokio runtime.
    pub fn start_all(&self) {
        let mut changes = self.registry.changes();
        changes.borrow_and_update();
        self.start_missing();
        let me = self.me.clone();
        let follower = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(m) = me.upgrade() else { return };
                m.start_missing();
            }
        });
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(follower);
    }

    /// Starts a muxer for each stream that has none running.
    /// The stream LL-HLS muxes for `stream`: itself, or, when its audio is
    /// G.711 (which no browser's MSE takes in fMP4) and the path allows
    /// audio transcoding, its `~opus` rendition (Opus in fMP4 plays in
    /// Chromium, Firefox and Safari 17+).
    fn muxed_stream(&self, stream: Arc<Stream>) -> Arc<Stream> {
        let Some((base, r)) = Rendition::parse(stream.name()) else {
            return stream;
        };
        let g711 = stream.tracks().is_some_and(|set| {
            set.tracks
                .iter()
                .any(|t| matches!(t.codec, Codec::Pcma { .. } | Codec::Pcmu { .. }))
        });
        if r.audio_opus || !g711 || !self.registry.transcode_settings(base).audio {
            return stream;
        }
        let opus = Rendition {
            audio_opus: true,
            ..r
        };
        match self.registry.open(&opus.name(base)) {
            Ok(Some(o)) => o,
            _ => stream,
        }
    }

    fn start_missing(&self) {
        // Renditions are muxed when asked for, never always on: a muxer
        // would keep its transcoder running for ever.
        let paths = self
            .registry
            .list()
            .into_iter()
            .filter(|s| Rendition::parse(s.name()).is_some_and(|(_, r)| r.is_none()));
        for stream in paths {
            let path = stream.name().to_owned();
            let stream = self.muxed_stream(stream);
            let mut running = self.lock();
            let current = running
                .streams
                .get(&path)
                .is_some_and(|hs| Arc::ptr_eq(&hs.stream, &stream) && hs.is_running());
            if !current {
                self.start_locked(&mut running, &path, stream);
            }
        }
    }

    /// Stops every muxer (the gateway is shutting down).
    pub fn shutdown(&self) {
        if let Some(f) = self
            .follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            f.abort();
        }
        let streams: Vec<_> = self.lock().streams.drain().map(|(_, hs)| hs).collect();
        for hs in streams {
            if let Some(task) = hs.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
            hs.stop();
        }
    }

    /// Starts the muxer of `path` over `stream` (the path's own stream or
    /// the rendition it is muxed from, see `muxed_stream`).
    fn start_locked(
        &self,
        running: &mut Running,
        path: &str,
        stream: Arc<Stream>,
    ) -> Arc<HlsStream> {
        let name = path.to_owned();
        let seg_ms = u64::try_from(self.config.segment_duration.as_millis())
            .unwrap_or(1)
            .max(1);
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX) / seg_ms
            });
        // A muxer being replaced without having been retired (its task
        // ended abnormally) still passes on where its names end.
        let replaced = running
            .streams
            .get(&name)
            .map_or(0, |old| old.next_free_sequence());
        let first_sequence = clock
            .max(replaced)
            .max(running.next_sequence.get(&name).copied().unwrap_or(0));
        let muxer = Muxer::new(MuxerConfig {
            part_duration: self.config.part_duration,
            segment_duration: self.config.segment_duration,
            window: self.config.segment_count,
            first_sequence,
            ..MuxerConfig::default()
        });
        let min_target_duration = self.config.segment_duration.as_secs_f64().ceil() as u64;
        let hs = Arc::new(HlsStream {
            path: name.clone(),
            stream,
            inner: Mutex::new(Inner {
                muxer,
                playlists: [None, None],
            }),
            progress: watch::Sender::new(Progress {
                next_part: (first_sequence, 0),
                ready: false,
                target_duration: min_target_duration.max(1),
                version: 0,
                updated: Instant::now(),
                stopped: false,
            }),
            last_request: AtomicU64::new(self.now_nanos()),
            min_target_duration: min_target_duration.max(1),
            task: Mutex::new(None),
            session: Mutex::new(None),
            viewers: Mutex::new(BTreeSet::new()),
        });
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let session = self.sessions.register(
            NewSession {
                id: &format!("{name}-{first_sequence}"),
                path: &name,
                remote: None,
                user: None,
            },
            Arc::new(Detail::Hls(HlsDetail {
                first_sequence,
                part_ms: millis(self.config.part_duration),
                segment_ms: millis(self.config.segment_duration),
            })),
        );
        *hs.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        // Subscribed here rather than in the task, so frames published
        // right after this returns are not missed.
        let bus = hs.stream.subscribe();
        let task = tokio::spawn(run(self.me.clone(), hs.clone(), self.config.clone(), bus));
        *hs.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        tracing::debug!(path = name, first_sequence, "HLS muxer started");
        running.streams.insert(name, hs.clone());
        hs
    }

    /// Removes `hs` if it has been idle for the idle timeout (or `force`);
    /// returns whether it was removed. The check and [`HlsManager::open`]'s
    /// touch happen under the same lock, so a request either keeps the
    /// muxer alive or gets a fresh one.
    fn retire(&self, hs: &Arc<HlsStream>, force: bool) -> bool {
        let mut running = self.lock();
        let idle = Duration::from_nanos(
            self.now_nanos()
                .saturating_sub(hs.last_request.load(Ordering::Relaxed)),
        );
        if !force && (self.config.always_on || idle < self.config.idle_timeout) {
            return false;
        }
        let name = hs.path.as_str();
        if running
            .streams
            .get(name)
            .is_some_and(|cur| Arc::ptr_eq(cur, hs))
        {
            running.streams.remove(name);
        }
        running
            .next_sequence
            .insert(name.to_owned(), hs.next_free_sequence());
        hs.stop();
        tracing::debug!(path = name, ?idle, "HLS muxer stopped");
        true
    }

    /// When `hs` becomes idle if no request comes.
    fn idle_deadline(&self, hs: &HlsStream) -> tokio::time::Instant {
        let last = Duration::from_nanos(hs.last_request.load(Ordering::Relaxed));
        self.epoch + last + self.config.idle_timeout
    }
}

/// The muxer task of one stream: reads the bus, feeds the muxer, and
/// stops when idle or when the stream is removed.
async fn run(
    manager: Weak<HlsManager>,
    hs: Arc<HlsStream>,
    config: HlsConfig,
    mut bus: Subscription,
) {
    let stream = hs.stream.clone();
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    match manager.upgrade() {
        Some(m) => idle.as_mut().reset(m.idle_deadline(&hs)),
        None => return,
    }
    let kicked = hs.kicked();
    tokio::pin!(kicked);
    loop {
        tokio::select! {
            () = &mut kicked => {
                tracing::info!(path = stream.name(), "HLS muxer kicked through the API");
                if let Some(m) = manager.upgrade() {
                    m.retire(&hs, true);
                }
                hs.stop();
                return;
            }
            received = bus.recv() => {
                let frame = match received {
                    Ok(Item::Frame(f)) => f,
                    Ok(Item::Tracks(set)) => {
                        // Other tracks (a new generation) complete the open
                        // segment and restart the muxer on them; new
                        // parameters give a new init segment.
                        hs.feed_tracks(&set.tracks);
                        continue;
                    }
                    Err(RecvError::Closed) => {
                        hs.flush();
                        if let Some(m) = manager.upgrade() {
                            m.retire(&hs, true);
                        }
                        hs.stop();
                        return;
                    }
                };
                let wall = SystemTime::now()
                    .checked_sub(frame.received.elapsed())
                    .unwrap_or_else(SystemTime::now);
                hs.feed(&frame, wall);
            }
            () = &mut idle, if !config.always_on => {
                let Some(m) = manager.upgrade() else { return };
                if m.retire(&hs, false) {
                    return;
                }
                idle.as_mut().reset(m.idle_deadline(&hs));
            }
        }
    }
}

impl crate::egress::Egress for HlsManager {
    fn protocol(&self) -> Protocol {
        Protocol::Hls
    }

    fn label(&self) -> &'static str {
        "HLS"
    }

    fn carriage(&self, tracks: &[Arc<Track>]) -> Vec<Result<(), String>> {
        let selection = super::select_tracks(tracks);
        (0..tracks.len())
            .map(|i| match selection.skipped.iter().find(|(k, _)| *k == i) {
                Some((_, why)) => Err(why.to_string()),
                None => Ok(()),
            })
            .collect()
    }
}

/// Why `stream` cannot be played now, in plain words, or `None` when it is live.
pub fn not_live_reason(stream: &Stream) -> Option<String> {
    let name = stream.name();
    match stream.state() {
        StreamState::Live => None,
        StreamState::Idle => Some(format!(
            "stream {name:?} is idle: its on-demand source starts when a reader arrives"
        )),
        StreamState::Waiting => Some(format!(
            "stream {name:?} is not live yet: the source is being connected"
        )),
        StreamState::Reconnecting { error } => Some(format!(
            "stream {name:?} is not live: the source failed and is being retried ({error})"
        )),
        StreamState::Failed { reason } => Some(format!("stream {name:?} failed: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::hls::testutil::{
        frame, h264_fixture, h264_track, h265_fixture, h265_track, synthetic_au,
    };

    fn config(idle_ms: u64) -> HlsConfig {
        HlsConfig {
            idle_timeout: Duration::from_millis(idle_ms),
            ..HlsConfig::default()
        }
    }

    fn live_stream(registry: &Registry) -> Arc<Stream> {
        let stream = Stream::new("cam", "rtsp://cam.example/s");
        registry.insert(stream.clone());
        stream.set_tracks(vec![h264_track(&h264_fixture())]);
        stream.set_state(StreamState::Live);
        stream
    }

    /// Publishes frames `from..to` at 25 fps with a keyframe every 25.
    fn publish(stream: &Stream, from: usize, to: usize) {
        for i in from..to {
            let key = i.is_multiple_of(25);
            let f = frame(0, i as i64 * 3600, key, synthetic_au(key, 200, i as u8));
            stream.publish(f, key);
        }
    }

    fn playlist(hs: &HlsStream) -> String {
        let bytes = hs.media_playlist(false, "").expect("playlist exists");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    async fn until(hs: &HlsStream, f: impl Fn(&Progress) -> bool) -> Progress {
        let mut rx = hs.subscribe();
        let p = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| f(p)))
            .await
            .expect("progress in time")
            .expect("the sender lives as long as the stream");
        *p
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_muxer_is_a_session_that_can_be_kicked() {
        let registry = Registry::new();
        let _stream = live_stream(&registry);
        let sessions = Sessions::new();
        let m = HlsManager::with_sessions(registry.clone(), config(60_000), sessions.clone());
        let hs = m.open("cam").expect("stream exists");
        let list = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let l = sessions.list();
                if !l.is_empty() {
                    return l;
                }
                // A sleep, not a yield: the paused clock advances (and the
                // timeout can fire) only while every task waits.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the muxer registers itself");
        assert_eq!(list[0].protocol, Protocol::Hls);
        assert_eq!(list[0].path, "cam");
        assert!(sessions.kick(&list[0].id));
        until(&hs, |p| p.stopped).await;
        assert!(m.get("cam").is_none(), "kicked muxer is gone");
        tokio::time::timeout(Duration::from_secs(2), async {
            while !sessions.list().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("its session is removed");
    }

    #[tokio::test(start_paused = true)]
    async fn one_muxer_per_stream_stopped_when_idle_and_restarted_with_new_names() {
        let registry = Registry::new();
        let stream = live_stream(&registry);
        let m = HlsManager::new(registry.clone(), config(300));
        assert!(m.open("nope").is_none());
        let a = m.open("cam").expect("stream exists");
        let b = m.open("cam").expect("stream exists");
        assert!(Arc::ptr_eq(&a, &b), "viewers share one muxer");
        publish(&stream, 0, 80);
        let first = a.progress().next_part.0;
        until(&a, |p| p.next_part.0 >= first + 2).await;
        let used = a.next_free_sequence();

        // Requests keep it alive past the idle timeout.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(m.open("cam").is_some());
        }
        assert!(Arc::ptr_eq(&m.get("cam").expect("running"), &a));
        // Without requests it stops and wakes its waiters.
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.wait_for(Want::Segment(u64::MAX), Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(m.get("cam").is_none(), "stopped after the idle timeout");
        assert!(a.progress().stopped);
        assert_eq!(waiter.await.expect("waiter task"), Waited::Stopped);

        // The next request starts a new muxer whose names follow the old ones.
        let c = m.open("cam").expect("stream exists");
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(
            c.progress().next_part.0 >= used,
            "{:?} < {used}",
            c.progress()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_muxer_whose_task_ended_is_replaced() {
        let registry = Registry::new();
        let stream = live_stream(&registry);
        let m = HlsManager::new(registry, config(60_000));
        let a = m.open("cam").expect("stream exists");
        publish(&stream, 0, 60);
        let first = a.progress().next_part.0;
        until(&a, |p| p.next_part.0 >= first + 2).await;
        // As if the task had panicked: it ends without retiring the muxer.
        a.task
            .lock()
            .expect("not poisoned")
            .as_ref()
            .expect("the task handle is kept")
            .abort();
        for _ in 0..100 {
            if !a.is_running() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!a.is_running());
        let b = m.open("cam").expect("stream exists");
        assert!(!Arc::ptr_eq(&a, &b), "a dead muxer was handed out");
        assert!(b.progress().next_part.0 > a.progress().next_part.0);
    }

    #[tokio::test(start_paused = true)]
    async fn always_on_runs_without_requests() {
        let registry = Registry::new();
        let stream = live_stream(&registry);
        let m = HlsManager::new(
            registry.clone(),
            HlsConfig {
                always_on: true,
                ..config(100)
            },
        );
        m.start_all();
        let hs = m.get("cam").expect("started without a request");
        publish(&stream, 0, 40);
        until(&hs, |p| p.ready).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(m.get("cam").is_some_and(|cur| Arc::ptr_eq(&cur, &hs)));
        // A path added at run time gets a muxer too.
        let later = Stream::new("later", "rtsp://cam.example/later");
        registry.insert(later.clone());
        let mut started = None;
        for _ in 0..100 {
            started = m.get("later");
            if started.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.is_some(), "no muxer for a stream added later");
        m.shutdown();
        assert!(m.get("cam").is_none());
        assert!(hs.progress().stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_stream_stops_its_muxer() {
        let registry = Registry::new();
        let stream = live_stream(&registry);
        let m = HlsManager::new(registry.clone(), config(60_000));
        let hs = m.open("cam").expect("stream exists");
        publish(&stream, 0, 40);
        until(&hs, |p| p.ready).await;
        registry.remove("cam");
        stream.close();
        until(&hs, |p| p.stopped).await;
        assert!(m.get("cam").is_none());
        // The open segment was completed on the way out.
        let text = playlist(&hs);
        assert!(text.contains("#EXTINF:"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn new_track_generation_gives_a_discontinuity_and_a_new_init() {
        let registry = Registry::new();
        let stream = live_stream(&registry);
        let m = HlsManager::new(registry.clone(), config(60_000));
        let hs = m.open("cam").expect("stream exists");
        publish(&stream, 0, 60);
        let first = hs.progress().next_part.0;
        until(&hs, |p| p.next_part.0 >= first + 2).await;

        // The source comes back as H.265: a new generation.
        let h265 = h265_fixture();
        let set = stream.set_tracks(vec![h265_track(&h265)]);
        assert_eq!(set.generation, 2);
        for i in 0..60usize {
            let key = i.is_multiple_of(25);
            let mut data = synthetic_au(key, 200, i as u8).to_vec();
            // An H.265 NAL header: IDR_W_RADL (19) or TRAIL_R (1).
            data[4] = if key { 19 << 1 } else { 1 << 1 };
            data[5] = 1;
            let f = frame(0, 1_000_000 + i as i64 * 3600, key, data.into());
            stream.publish(f, key);
        }
        let mark = hs.progress().next_part.0;
        until(&hs, |p| p.next_part.0 >= mark + 2).await;
        let text = playlist(&hs);
        let maps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MAP:"))
            .collect();
        assert_eq!(maps.len(), 2, "{text}");
        assert_ne!(maps[0], maps[1]);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let tracks = stream.tracks().expect("tracks").tracks.clone();
        let mv = hs.multivariant(&tracks, "").expect("multivariant");
        assert!(mv.contains("CODECS=\"hvc1."), "{mv}");
        assert!(mv.contains("RESOLUTION=320x180"), "{mv}");
    }
}
