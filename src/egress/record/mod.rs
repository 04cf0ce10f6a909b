//! Recording to disk and playback: a reader of the bus like any egress.
//!
//! - [`core::RecorderCore`] (pure) turns a stream's items into file
//!   actions with the shared CMAF segmenter (`crate::cmaf`): one fragmented
//!   MP4 per `record_segment_duration`, cut at a keyframe, its init segment
//!   first and each fragment of `record_part_duration` appended and flushed
//!   as soon as it is muxed, so a file plays up to its last fragment after
//!   a crash or a power loss.
//! - [`Recordings`] is the shell: it follows the stream registry and runs
//!   one recorder task per path whose settings say `record = true` (paths
//!   added later through the API or by a publisher too), sweeps files older
//!   than `record_delete_after`, and lists and plays back what is on disk.
//!   A recorder never holds up the bus: when it falls behind it is a slow
//!   reader like any other (the bus skips it to the next keyframe and the
//!   recorder starts a new file there). A write error (a full disk) is
//!   logged once in plain words, stops that path's recording, and is
//!   retried every [`RETRY_EVERY`] until writing works again; nothing else
//!   notices.
//! - [`index`] reads a file back (to its last complete fragment) and
//!   [`playback`] synthesizes one seekable MP4 over the files of a span.

pub mod core;
pub mod index;
pub mod playback;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::core::{FileAction, RecorderCore};
use self::playback::{Plan, PlanError, Segment};
use crate::bus::{Item, RecvError, Registry, Stream, Subscription};
use crate::config::record::{Piece, RecordConfig, RecordSettings, Template};
use crate::config::valid_path_name;

/// How often a path whose recording stopped on a write error tries again.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);

/// Where a path's recorder stands, for the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecorderStatus {
    /// Writing (or waiting for the next keyframe to start a file).
    pub recording: bool,
    /// Why recording stopped, in plain words, while it is retried.
    pub error: Option<String>,
}

struct Running {
    stream: Arc<Stream>,
    settings: RecordSettings,
    task: JoinHandle<()>,
    status: Arc<Mutex<RecorderStatus>>,
}

/// Every path's recorder, the sweeper, and the recordings on disk.
pub struct Recordings {
    registry: Arc<Registry>,
    config: RwLock<RecordConfig>,
    running: Mutex<HashMap<String, Running>>,
    /// Bumped on every configuration change (wakes the follower).
    changed: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Recordings {
    fn drop(&mut self) {
        for r in self.lock().values() {
            r.task.abort();
        }
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.abort();
        }
    }
}

impl Recordings {
    /// Starts following `registry` with `config`. Must run inside a tokio runtime.
    pub fn start(registry: Arc<Registry>, config: RecordConfig) -> Arc<Recordings> {
        let r = Arc::new(Recordings {
            registry,
            config: RwLock::new(config),
            running: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let follow = tokio::spawn(follow(Arc::downgrade(&r)));
        let sweep = tokio::spawn(sweeper(Arc::downgrade(&r)));
        r.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([follow, sweep]);
        r
    }

    /// New settings (a config reload): recorders whose settings changed
    /// restart with them (their current file is left complete as it is).
    pub fn set_config(&self, config: RecordConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.changed.send_modify(|n| *n += 1);
    }

    fn config(&self) -> RecordConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The recorder status of path `name`, if it is being recorded.
    pub fn status(&self, name: &str) -> Option<RecorderStatus> {
        self.lock()
            .get(name)
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Starts and stops recorders to match the registry and the settings.
    fn sync(self: &Arc<Self>) {
        let config = self.config();
        let streams: BTreeMap<String, Arc<Stream>> = self
            .registry
            .list()
            .into_iter()
            .filter(|s| valid_path_name(s.name()))
            .map(|s| (s.name().to_owned(), s))
            .collect();
        let mut running = self.lock();
        running.retain(|name, r| {
            let keep = streams.get(name).is_some_and(|s| {
                Arc::ptr_eq(s, &r.stream)
                    && config.for_path(name) == &r.settings
                    && r.settings.enabled
                    && !r.task.is_finished()
            });
            if !keep {
                r.task.abort();
                tracing::debug!(path = name, "recorder stopped");
            }
            keep
        });
        for (name, stream) in streams {
            let settings = config.for_path(&name).clone();
            if !settings.enabled || running.contains_key(&name) {
                continue;
            }
            let status = Arc::new(Mutex::new(RecorderStatus {
                recording: true,
                error: None,
            }));
            let bus = stream.subscribe();
            let task = tokio::spawn(record(name.clone(), settings.clone(), bus, status.clone()));
            tracing::info!(
                path = name,
                "recording under {} (a file every {:?}, from the next keyframe)",
                settings.template.root(&name).0.display(),
                settings.segment_duration
            );
            running.insert(
                name,
                Running {
                    stream,
                    settings,
                    task,
                    status,
                },
            );
        }
    }

    /// Path names that may have recordings: the registry's paths, those
    /// the configuration names, and directories where a template puts
    /// `%path` as a whole directory name.
    fn candidates(&self) -> BTreeSet<String> {
        let config = self.config();
        let mut names: BTreeSet<String> = self
            .registry
            .list()
            .iter()
            .map(|s| s.name().to_owned())
            .filter(|n| valid_path_name(n))
            .collect();
        names.extend(config.paths.keys().cloned());
        for t in config.templates() {
            if let Some(dir) = path_dir(t) {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        if let Some(n) = e.file_name().to_str() {
                            if valid_path_name(n) && e.path().is_dir() {
                                names.insert(n.to_owned());
                            }
                        }
                    }
                }
            }
        }
        names
    }

    /// Recording files of path `name` with their start times, oldest
    /// first (file system access: call from a blocking context).
    pub fn files(&self, name: &str) -> Vec<(PathBuf, jiff::Timestamp)> {
        let config = self.config();
        let mut templates: Vec<&Template> = vec![&config.for_path(name).template];
        for t in config.templates() {
            if !templates.contains(&t) {
                templates.push(t);
            }
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for t in templates {
            for (file, start) in files_of(t, name) {
                if seen.insert(file.clone()) {
                    out.push((file, start));
                }
            }
        }
        out.sort_by_key(|(_, s)| *s);
        out
    }

    /// Paths with at least one recording file (blocking).
    pub fn paths(&self) -> Vec<String> {
        self.candidates()
            .into_iter()
            .filter(|n| !self.files(n).is_empty())
            .collect()
    }

    /// The readable recording files of path `name`, indexed, oldest first
    /// (blocking). Files that can't be read are skipped (logged at debug).
    pub fn segments(&self, name: &str) -> Vec<Segment> {
        self.files(name)
            .into_iter()
            .filter_map(|(file, start)| match index::read_file(&file) {
                Ok(index) if !index.tracks.is_empty() => Some(Segment { file, start, index }),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("skipping {}: {e}", file.display());
                    None
                }
            })
            .collect()
    }

    /// The playback answer for path `name` over `[start, start + duration)`
    /// (blocking).
    pub fn plan(
        &self,
        name: &str,
        start: jiff::Timestamp,
        duration: Duration,
    ) -> Result<Plan, PlanError> {
        let span_end = start
            .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::MAX);
        // Index only the files that can matter: from the last one starting
        // at or before `start` to those starting before the end.
        let files = self.files(name);
        let first = files.iter().rposition(|(_, s)| *s <= start).unwrap_or(0);
        let segments: Vec<Segment> = files
            .into_iter()
            .skip(first)
            .take_while(|(_, s)| *s < span_end)
            .filter_map(|(file, start)| {
                let index = index::read_file(&file).ok()?;
                Some(Segment { file, start, index })
            })
            .collect();
        playback::plan(&segments, start, duration)
    }

    /// Deletes path `name`'s files last written before `now - keep`
    /// (blocking); returns them.
    fn sweep_path(&self, name: &str, keep: Duration, now: SystemTime) -> Vec<PathBuf> {
        let files: Vec<(PathBuf, SystemTime)> = self
            .files(name)
            .into_iter()
            .filter_map(|(f, _)| {
                let m = std::fs::metadata(&f).and_then(|m| m.modified()).ok()?;
                Some((f, m))
            })
            .collect();
        let mut deleted = Vec::new();
        for f in expired(&files, now, keep) {
            match std::fs::remove_file(&f) {
                Ok(()) => deleted.push(f),
                Err(e) => tracing::warn!("cannot delete the old recording {}: {e}", f.display()),
            }
        }
        deleted
    }

    /// One sweep over every path (blocking).
    fn sweep(&self, now: SystemTime) {
        let config = self.config();
        for name in self.candidates() {
            let Some(keep) = config.for_path(&name).delete_after else {
                continue;
            };
            let deleted = self.sweep_path(&name, keep, now);
            if !deleted.is_empty() {
                tracing::info!(
                    path = name,
                    "deleted {} recording file(s) older than record_delete_after ({keep:?})",
                    deleted.len()
                );
            }
        }
    }
}

/// The files among `files` (with their last-modified times) last written
/// before `now - keep`: the recording they hold is entirely older.
pub fn expired(files: &[(PathBuf, SystemTime)], now: SystemTime, keep: Duration) -> Vec<PathBuf> {
    let Some(limit) = now.checked_sub(keep) else {
        return Vec::new();
    };
    files
        .iter()
        .filter(|(_, m)| *m < limit)
        .map(|(f, _)| f.clone())
        .collect()
}

/// The directory whose subdirectories are path names, when `t` puts
/// `%path` as a whole directory name before any time field.
fn path_dir(t: &Template) -> Option<PathBuf> {
    let mut before = String::new();
    let mut it = t.0.iter();
    for p in it.by_ref() {
        match p {
            Piece::Text(s) => before.push_str(s),
            Piece::Path => break,
            Piece::Field(_) => return None,
        }
    }
    let after_slash = matches!(it.next(), Some(Piece::Text(s)) if s.starts_with('/'));
    (after_slash && (before.is_empty() || before.ends_with('/'))).then(|| {
        if before.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(before)
        }
    })
}

/// The files template `t` wrote for path `name`, with their start times.
fn files_of(t: &Template, name: &str) -> Vec<(PathBuf, jiff::Timestamp)> {
    let (root, depth) = t.root(name);
    let mut out = Vec::new();
    walk(&root, depth, &mut |p: &Path| {
        if let Some(start) = p.to_str().and_then(|s| t.parse_file(name, s)) {
            out.push((p.to_owned(), start));
        }
    });
    out
}

fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(ft) if ft.is_dir() && depth > 0 => walk(&p, depth - 1, f),
            Ok(ft) if ft.is_file() => f(&p),
            _ => {}
        }
    }
}

/// Follows the registry and the settings (see [`Recordings::sync`]).
async fn follow(me: Weak<Recordings>) {
    let (mut streams, mut config) = match me.upgrade() {
        Some(r) => (r.registry.changes(), r.changed.subscribe()),
        None => return,
    };
    loop {
        match me.upgrade() {
            Some(r) => r.sync(),
            None => return,
        }
        // A recorder whose stream was replaced or closed is noticed on the
        // next change or within a few seconds.
        tokio::select! {
            _ = streams.changed() => {}
            _ = config.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Deletes old recordings periodically: every quarter of the shortest
/// `record_delete_after`, between 1 s and 1 min.
async fn sweeper(me: Weak<Recordings>) {
    loop {
        let every = {
            let Some(r) = me.upgrade() else { return };
            let config = r.config();
            let shortest = std::iter::once(&config.defaults)
                .chain(config.paths.values())
                .filter_map(|s| s.delete_after)
                .min();
            shortest.map_or(Duration::from_secs(60), |d| {
                (d / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
            })
        };
        tokio::time::sleep(every).await;
        let Some(r) = me.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || r.sweep(SystemTime::now())).await;
    }
}

/// The open file of a recorder (used on blocking threads).
#[derive(Default)]
struct Sink {
    file: Option<(PathBuf, std::fs::File)>,
}

/// A write error with the file it concerns.
struct WriteError {
    file: PathBuf,
    error: std::io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.error.kind() {
            std::io::ErrorKind::StorageFull => "the disk is full".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_owned(),
            _ => self.error.to_string(),
        };
        write!(f, "cannot write {}: {why}", self.file.display())
    }
}

impl Sink {
    /// Carries out `actions`; returns whether a file was opened.
    fn apply(
        &mut self,
        actions: &[FileAction],
        name: &str,
        template: &Template,
    ) -> Result<bool, WriteError> {
        let mut opened = false;
        for a in actions {
            match a {
                FileAction::Open { start, init } => {
                    self.close();
                    let start = jiff::Timestamp::try_from(*start)
                        .unwrap_or_else(|_| jiff::Timestamp::now());
                    let (path, file) = create(template, name, start)?;
                    self.file = Some((path.clone(), file));
                    self.write(init)?;
                    opened = true;
                }
                FileAction::Append { data, .. } => self.write(data)?,
                FileAction::Close => self.close(),
                FileAction::Notice(_) => {}
            }
        }
        Ok(opened)
    }

    /// Appends and flushes to disk; on error the file is dropped.
    fn write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let Some((path, f)) = &mut self.file else {
            return Ok(());
        };
        match f.write_all(data).and_then(|()| f.sync_data()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let file = path.clone();
                self.file = None;
                Err(WriteError { file, error })
            }
        }
    }

    fn close(&mut self) {
        if let Some((_, f)) = self.file.take() {
            let _ = f.sync_all();
        }
    }
}

/// Creates the file for a segment starting at `start` (and its
/// directories); a name already taken gets the next microsecond.
fn create(
    template: &Template,
    name: &str,
    start: jiff::Timestamp,
) -> Result<(PathBuf, std::fs::File), WriteError> {
    let mut at = start;
    let mut last_err = None;
    for _ in 0..10 {
        let path = template.render(name, at);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| WriteError {
                file: dir.to_owned(),
                error,
            })?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                at += jiff::SignedDuration::from_micros(1);
                last_err = Some((path, e));
            }
            Err(error) => return Err(WriteError { file: path, error }),
        }
    }
    let (file, error) =
        last_err.unwrap_or_else(|| (PathBuf::new(), std::io::Error::other("no free file name")));
    Err(WriteError { file, error })
}

/// One path's recorder task: reads the bus, feeds the core, writes files
/// on a blocking thread; see the module docs for lags and write errors.
async fn record(
    name: String,
    settings: RecordSettings,
    mut bus: Subscription,
    status: Arc<Mutex<RecorderStatus>>,
) {
    let mut core = RecorderCore::new(settings.segment_duration, settings.part_duration);
    let mut sink = Some(Sink::default());
    // While writing fails: when to try again.
    let mut retry_at: Option<Instant> = None;
    // Writing failed and has not worked since (logged once).
    let mut retrying = false;
    let mut lagged = bus.lagged();
    let set_status = |recording: bool, error: Option<String>| {
        *status.lock().unwrap_or_else(|e| e.into_inner()) = RecorderStatus { recording, error };
    };
    loop {
        let received = bus.recv().await;
        if bus.lagged() != lagged {
            tracing::warn!(
                path = name,
                "recording fell behind the stream (the disk is slow?): {} items skipped; \
                 a new file starts at the next keyframe",
                bus.lagged() - lagged
            );
            lagged = bus.lagged();
            core.flush();
        }
        let closed = match received {
            Ok(Item::Tracks(set)) => {
                core.handle_tracks(&set.tracks);
                false
            }
            Ok(Item::Frame(f)) => {
                if retry_at.is_some_and(|t| Instant::now() >= t) {
                    // Start over: the next keyframe opens a new file.
                    core.restart();
                    retry_at = None;
                    retrying = true;
                }
                let wall = SystemTime::now()
                    .checked_sub(f.received.elapsed())
                    .unwrap_or_else(SystemTime::now);
                core.handle_frame(&f, wall);
                false
            }
            Err(RecvError::Closed) => {
                core.flush();
                true
            }
        };
        let actions: Vec<FileAction> = std::iter::from_fn(|| core.poll()).collect();
        for a in &actions {
            if let FileAction::Notice(n) = a {
                tracing::debug!(path = name, "recording: {n:?}");
            }
        }
        let writes = actions.iter().any(|a| !matches!(a, FileAction::Notice(_)));
        if writes && retry_at.is_none() {
            let Some(mut s) = sink.take() else { return };
            let (n, t) = (name.clone(), settings.template.clone());
            let done = tokio::task::spawn_blocking(move || {
                let r = s.apply(&actions, &n, &t);
                (s, r)
            })
            .await;
            let Ok((s, result)) = done else { return };
            sink = Some(s);
            match result {
                Ok(opened) => {
                    if opened && std::mem::take(&mut retrying) {
                        tracing::info!(path = name, "recording resumed: writing works again");
                        set_status(true, None);
                    }
                }
                Err(e) => {
                    retry_at = Some(Instant::now() + RETRY_EVERY);
                    if !retrying {
                        tracing::error!(
                            path = name,
                            "recording stopped: {e}. Live streaming is not affected; \
                             recording is retried every {} s and resumes when writing works",
                            RETRY_EVERY.as_secs()
                        );
                        set_status(false, Some(e.to_string()));
                    }
                    retrying = true;
                }
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_files_are_those_last_written_before_the_limit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let files = vec![
            (PathBuf::from("old"), now - day - Duration::from_secs(1)),
            (PathBuf::from("edge"), now - day),
            (PathBuf::from("new"), now - Duration::from_secs(5)),
        ];
        assert_eq!(expired(&files, now, day), vec![PathBuf::from("old")]);
        assert!(expired(&files, SystemTime::UNIX_EPOCH, day).is_empty());
    }

    /// The sweeper on a real directory: only this path's recording files
    /// older than the limit go; other files stay.
    #[tokio::test]
    async fn the_sweeper_deletes_old_recordings_only() {
        let dir = std::env::temp_dir().join(format!("rtspgate-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let template =
            Template::parse(&format!("{}/%path/%Y-%m-%d_%H-%M-%S-%f", dir.display())).unwrap();
        let mut config = RecordConfig::default();
        config.defaults.template = template.clone();
        config.defaults.delete_after = Some(Duration::from_secs(3600));
        let now = SystemTime::now();
        let old = template.render("cam", jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let new = template.render("cam", jiff::Timestamp::from_second(1_700_003_000).unwrap());
        let other = dir.join("cam").join("notes.txt");
        std::fs::create_dir_all(dir.join("cam")).unwrap();
        for (f, age) in [(&old, 7200), (&new, 60), (&other, 7200)] {
            let file = std::fs::File::create(f).unwrap();
            file.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        let r = Recordings::start(Registry::new(), config);
        assert_eq!(r.paths(), vec!["cam".to_string()]);
        assert_eq!(r.files("cam").len(), 2);
        r.sweep(now);
        assert!(!old.exists(), "the old recording is deleted");
        assert!(new.exists(), "a recent one stays");
        assert!(other.exists(), "a file that is no recording stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write error (here: a file where the recording directory should
    /// be) stops the path's recording with the reason; when writing works
    /// again (the file is gone) recording resumes by itself.
    #[tokio::test]
    async fn a_write_error_stops_recording_until_writing_works_again() {
        use crate::cmaf::testutil::{frame, h264_fixture, h264_track, synthetic_au};
        let base = std::env::temp_dir().join(format!("rtspgate-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let blocker = base.join("rec");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let mut config = RecordConfig::default();
        config.defaults.enabled = true;
        config.defaults.template =
            Template::parse(&format!("{}/%path/%Y-%m-%d_%H-%M-%S-%f", blocker.display())).unwrap();
        let registry = Registry::new();
        let stream = Stream::new("cam", "test");
        stream.set_tracks(vec![h264_track(&h264_fixture())]);
        registry.insert(stream.clone());
        let r = Recordings::start(registry.clone(), config);
        let feeder = tokio::spawn(async move {
            for i in 0u32.. {
                let key = i.is_multiple_of(25);
                let f = frame(0, i64::from(i) * 3600, key, synthetic_au(key, 200, 1));
                stream.publish(f, key);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        let wait = |want: fn(&RecorderStatus) -> bool, secs: u64| {
            let r = r.clone();
            async move {
                for _ in 0..secs * 10 {
                    if r.status("cam").is_some_and(|s| want(&s)) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            }
        };
        assert!(
            wait(|s| s.error.is_some() && !s.recording, 5).await,
            "{:?}",
            r.status("cam")
        );
        let why = r.status("cam").and_then(|s| s.error).unwrap_or_default();
        assert!(why.contains("cannot write"), "{why}");
        std::fs::remove_file(&blocker).unwrap();
        assert!(
            wait(
                |s| s.recording && s.error.is_none(),
                RETRY_EVERY.as_secs() + 5
            )
            .await,
            "{:?}",
            r.status("cam")
        );
        feeder.abort();
        assert_eq!(r.files("cam").len(), 1, "recording resumed into a new file");
        let _ = std::fs::remove_dir_all(&base);
    }
}
