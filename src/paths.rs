//! The configured paths at run time: each path's source task, added,
//! changed and removed through the API or a config reload (SIGHUP) without
//! touching the paths that did not change, and written back to the config
//! file when one is in use (keeping the file's comments, layout and mode).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use toml_edit::{DocumentMut, Item, TableLike};

use crate::bus::{Registry, Stream};
use crate::config::{parse_source, SourceConfig, TransportPref};
use crate::ingest::{self, Source};

/// Permission bits of a config file the gateway creates: it holds camera
/// passwords, so only its owner may read it.
pub const NEW_CONFIG_MODE: u32 = 0o600;

/// Why a path operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("a path named {0:?} already exists")]
    Exists(String),
    #[error("no path named {0:?}")]
    NotFound(String),
    #[error("the path {0:?} is built in and cannot be changed")]
    BuiltIn(String),
    #[error("cannot write the config file: {0}")]
    Persist(String),
    #[error(
        "{0} paths are configured, as many as max_paths allows: remove one or raise max_paths"
    )]
    Full(usize),
}

struct Running {
    /// `None` for the built-in demo.
    source: Option<SourceConfig>,
    task: tokio::task::JoinHandle<()>,
}

/// What a reload did, by path name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Owns every path's source task.
pub struct PathManager {
    registry: Arc<Registry>,
    running: Mutex<BTreeMap<String, Running>>,
    config_file: Option<PathBuf>,
    /// One config-file writer at a time: the temporary file's name is
    /// per process, and the last write must carry the latest paths.
    persist_lock: Mutex<()>,
}

impl Drop for PathManager {
    fn drop(&mut self) {
        for r in self.lock().values() {
            r.task.abort();
        }
    }
}

fn spawn(source: Box<dyn Source>, stream: Arc<Stream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(source.run(stream))
}

impl PathManager {
    pub fn new(registry: Arc<Registry>, config_file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(PathManager {
            registry,
            running: Mutex::new(BTreeMap::new()),
            config_file,
            persist_lock: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a path pulling `source`. Must run inside a tokio runtime.
    pub fn add(&self, name: &str, source: SourceConfig) -> Result<(), PathError> {
        self.add_locked(&mut self.lock(), name, source)
    }

    /// [`add`](Self::add), refused with [`PathError::Full`] when `max`
    /// configured paths (from any origin: file, command line, API; built-in
    /// ones not counted) already exist. The count and the insertion happen
    /// under one lock, so concurrent requests cannot overshoot `max`.
    pub fn add_within(
        &self,
        name: &str,
        source: SourceConfig,
        max: usize,
    ) -> Result<(), PathError> {
        let mut running = self.lock();
        let configured = running.values().filter(|r| r.source.is_some()).count();
        if configured >= max && !running.contains_key(name) {
            return Err(PathError::Full(configured));
        }
        self.add_locked(&mut running, name, source)
    }

    fn add_locked(
        &self,
        running: &mut BTreeMap<String, Running>,
        name: &str,
        source: SourceConfig,
    ) -> Result<(), PathError> {
        if running.contains_key(name) {
            return Err(PathError::Exists(name.to_owned()));
        }
        let stream = Stream::new(name, source.display_url());
        stream.set_on_demand(source.on_demand.clone());
        if !self.registry.insert(stream.clone()) {
            return Err(PathError::Exists(name.to_owned()));
        }
        let task = spawn(
            Box::new(ingest::rtsp_pull::RtspPull::new(source.clone())),
            stream,
        );
        running.insert(
            name.to_owned(),
            Running {
                source: Some(source),
                task,
            },
        );
        tracing::info!(path = name, "path added");
        Ok(())
    }

    /// Adds a built-in source (the demo) that the API cannot change.
    pub fn add_builtin(&self, name: &str, display: &str, source: Box<dyn Source>) {
        let stream = Stream::new(name, display);
        if self.registry.insert(stream.clone()) {
            let task = spawn(source, stream);
            self.lock()
                .insert(name.to_owned(), Running { source: None, task });
        }
    }

    /// Points an existing path at a new source. The stream and its readers
    /// stay; readers continue when the new source's tracks match, and are
    /// ended otherwise (they must DESCRIBE again).
    pub fn change(&self, name: &str, source: SourceConfig) -> Result<(), PathError> {
        let mut running = self.lock();
        let Some(r) = running.get_mut(name) else {
            return Err(PathError::NotFound(name.to_owned()));
        };
        if r.source.is_none() {
            return Err(PathError::BuiltIn(name.to_owned()));
        }
        let Some(stream) = self.registry.get(name) else {
            return Err(PathError::NotFound(name.to_owned()));
        };
        r.task.abort();
        stream.set_state(crate::bus::StreamState::Waiting);
        stream.set_on_demand(source.on_demand.clone());
        r.task = spawn(
            Box::new(ingest::rtsp_pull::RtspPull::new(source.clone())),
            stream,
        );
        r.source = Some(source);
        tracing::info!(path = name, "path changed");
        Ok(())
    }

    /// Removes a path: its source stops and its readers are ended.
    pub fn remove(&self, name: &str) -> Result<(), PathError> {
        let Some(r) = self.lock().remove(name) else {
            return Err(PathError::NotFound(name.to_owned()));
        };
        r.task.abort();
        if let Some(stream) = self.registry.remove(name) {
            stream.close();
        }
        tracing::info!(path = name, "path removed");
        Ok(())
    }

    /// The source of a configured (not built-in) path.
    pub fn get(&self, name: &str) -> Option<SourceConfig> {
        self.lock().get(name).and_then(|r| r.source.clone())
    }

    /// Every configured (not built-in) path.
    pub fn list(&self) -> BTreeMap<String, SourceConfig> {
        self.lock()
            .iter()
            .filter_map(|(n, r)| r.source.clone().map(|s| (n.clone(), s)))
            .collect()
    }

    /// Makes the configured paths equal `wanted`, touching only those that
    /// differ. Built-in paths are left alone.
    pub fn apply(&self, wanted: &BTreeMap<String, SourceConfig>) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let current = self.list();
        for name in current.keys() {
            if !wanted.contains_key(name) && self.remove(name).is_ok() {
                summary.removed.push(name.clone());
            }
        }
        for (name, source) in wanted {
            match current.get(name) {
                Some(old) if old == source => summary.unchanged.push(name.clone()),
                Some(_) => {
                    if self.change(name, source.clone()).is_ok() {
                        summary.changed.push(name.clone());
                    }
                }
                None => {
                    if self.add(name, source.clone()).is_ok() {
                        summary.added.push(name.clone());
                    }
                }
            }
        }
        summary
    }

    /// The config file in use, if any.
    pub fn config_file(&self) -> Option<&PathBuf> {
        self.config_file.as_ref()
    }

    /// Writes the configured paths into the config file's `[paths]` table.
    /// Does nothing without a config file. The file is edited, not
    /// regenerated (`toml_edit`): comments, key order, other keys and path
    /// entries that already say what is configured stay byte for byte. It is
    /// replaced atomically: written to an exclusively created temporary file
    /// in its directory, given the old file's permission bits (a new file
    /// gets [`NEW_CONFIG_MODE`]), then renamed over it. A symlinked config
    /// file stays a symlink (its target is replaced).
    pub fn persist(&self) -> Result<(), PathError> {
        let Some(file) = &self.config_file else {
            return Ok(());
        };
        let _one_writer = self.persist_lock.lock().unwrap_or_else(|e| e.into_inner());
        let failed = |e: std::io::Error| PathError::Persist(e.to_string());
        let target = match std::fs::canonicalize(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => file.clone(),
            Err(e) => return Err(failed(e)),
        };
        let (text, mode) = match std::fs::metadata(&target) {
            Ok(meta) => (
                std::fs::read_to_string(&target).map_err(failed)?,
                meta.permissions().mode() & 0o777,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), NEW_CONFIG_MODE),
            Err(e) => return Err(failed(e)),
        };
        let mut doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| PathError::Persist(e.to_string()))?;
        write_paths(&mut doc, &self.list());
        replace_file(&target, doc.to_string().as_bytes(), mode).map_err(failed)
    }
}

/// Makes the `[paths]` table of `doc` say `wanted`: entries of other names
/// removed, missing ones appended, and an existing entry rewritten only
/// when it does not already mean its source (so `rtsp://u:p@h/` and
/// `source` + `user` + `pass` forms, and an omitted `transport`, survive).
/// `source = "publisher"` entries are not the API's: they are kept.
fn write_paths(doc: &mut DocumentMut, wanted: &BTreeMap<String, SourceConfig>) {
    let default_transport = doc
        .get("transport")
        .and_then(Item::as_str)
        .and_then(|t| TransportPref::from_str(t, false).ok())
        .unwrap_or_default();
    // Comments after the last key or table: toml_edit renders them after
    // every table, so appended entries would go above them. Put them
    // before the first appended entry instead: old text first, new after.
    let mut trailing = doc
        .trailing()
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .map(str::to_owned);
    let item = doc.entry("paths").or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        // Only `[paths.NAME]` headers, no empty `[paths]`.
        t.set_implicit(true);
        Item::Table(t)
    });
    if item.as_table_like().is_none() {
        // Not a table: the config would not have loaded; start afresh.
        *item = Item::Table(toml_edit::Table::new());
    }
    if !item.is_table() {
        // Inline `paths = { ... }`: its new entries are inline too.
        trailing = None;
    }
    let moving_comments = trailing.is_some();
    let Some(paths) = item.as_table_like_mut() else {
        return;
    };
    let stale: Vec<String> = paths
        .iter()
        .filter(|(_, entry)| entry.get("source").and_then(Item::as_str) != Some("publisher"))
        .map(|(name, _)| name.to_owned())
        .filter(|name| !wanted.contains_key(name))
        .collect();
    for name in stale {
        paths.remove(&name);
    }
    for (name, src) in wanted {
        match paths.get_mut(name).and_then(Item::as_table_like_mut) {
            Some(entry) => {
                if !entry_means(entry, src, default_transport) {
                    set_source_keys(entry, src);
                }
            }
            None => {
                let mut entry = toml_edit::Table::new();
                if let Some(comments) = trailing.take() {
                    entry.decor_mut().set_prefix(format!("{comments}\n"));
                }
                set_source_keys(&mut entry, src);
                // Into an inline `paths = { ... }` this becomes inline too.
                paths.insert(name, Item::Table(entry));
            }
        }
    }
    if moving_comments && trailing.is_none() {
        doc.set_trailing("");
    }
}

/// Whether a `[paths.NAME]` entry, read as the config loader reads it,
/// gives `src`.
fn entry_means(entry: &dyn TableLike, src: &SourceConfig, default: TransportPref) -> bool {
    let text = |key: &str| entry.get(key).and_then(Item::as_str).map(str::to_owned);
    let transport = match entry.get("transport") {
        None => default,
        Some(t) => match t.as_str().map(|t| TransportPref::from_str(t, false)) {
            Some(Ok(t)) => t,
            _ => return false,
        },
    };
    text("source")
        .and_then(|raw| parse_source("", &raw, transport, text("user"), text("pass")).ok())
        .is_some_and(|found| found == *src)
}

/// Sets `source`, `transport`, `user` and `pass` of a `[paths.NAME]` entry,
/// keeping the layout (and trailing comment) of values that stay.
fn set_source_keys(entry: &mut dyn TableLike, src: &SourceConfig) {
    let transport = src.transport.to_string();
    for (key, value) in [
        ("source", Some(src.url.as_str())),
        ("transport", Some(transport.as_str())),
        ("user", src.user.as_deref()),
        ("pass", src.pass.as_deref()),
    ] {
        let Some(value) = value else {
            entry.remove(key);
            continue;
        };
        match entry.get_mut(key).and_then(Item::as_value_mut) {
            Some(old) if old.as_str() == Some(value) => {}
            Some(old) => {
                let decor = old.decor().clone();
                *old = value.into();
                *old.decor_mut() = decor;
            }
            None => {
                entry.insert(key, toml_edit::value(value));
            }
        }
    }
}

/// Replaces `target` with `bytes` atomically, with permission bits `mode`:
/// writes `.<name>.<pid>.tmp` beside it, created exclusively (`O_EXCL`, so
/// never through a planted symlink) and readable by its owner only until
/// it holds the whole text, then renames it over `target`. An existing
/// file of that name can only be left over from a crash (one writer per
/// process, and no live process shares our pid): it is removed first.
fn replace_file(target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = target.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", target.display()),
        )
    })?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(NEW_CONFIG_MODE)
            .open(&tmp)
    };
    let mut f = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    let written = f
        .write_all(bytes)
        // Set exactly: the creation mode went through the umask.
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, target));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_source, TransportPref};

    fn src(url: &str) -> SourceConfig {
        parse_source("test", url, TransportPref::Tcp, None, None).expect("valid test URL")
    }

    #[tokio::test]
    async fn add_change_remove_and_apply() {
        let registry = Registry::new();
        let m = PathManager::new(registry.clone(), None);
        m.add("a", src("rtsp://127.0.0.1:9/a")).unwrap();
        assert_eq!(
            m.add("a", src("rtsp://127.0.0.1:9/x")),
            Err(PathError::Exists("a".into()))
        );
        m.add("b", src("rtsp://127.0.0.1:9/b")).unwrap();
        let stream_b = registry.get("b").unwrap();
        m.change("b", src("rtsp://127.0.0.1:9/b2")).unwrap();
        // Same stream object: readers of b are not dropped by a change.
        assert!(Arc::ptr_eq(&stream_b, &registry.get("b").unwrap()));
        assert_eq!(m.get("b").unwrap().url.path(), "/b2");

        let mut wanted = BTreeMap::new();
        wanted.insert("a".to_owned(), src("rtsp://127.0.0.1:9/a"));
        wanted.insert("c".to_owned(), src("rtsp://127.0.0.1:9/c"));
        let stream_a = registry.get("a").unwrap();
        let s = m.apply(&wanted);
        assert_eq!(s.unchanged, ["a"]);
        assert_eq!(s.added, ["c"]);
        assert_eq!(s.removed, ["b"]);
        assert!(Arc::ptr_eq(&stream_a, &registry.get("a").unwrap()));
        assert!(registry.get("b").is_none());
        assert_eq!(m.remove("b"), Err(PathError::NotFound("b".into())));
    }

    #[tokio::test]
    async fn persist_keeps_publisher_paths() {
        let dir = std::env::temp_dir().join(format!("rtspgate-persist-pub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rtspgate.toml");
        std::fs::write(&file, "[paths.pushed]\nsource = \"publisher\"\n").unwrap();
        let m = PathManager::new(Registry::new(), Some(file.clone()));
        m.add("cam", src("rtsp://127.0.0.1:9/x")).unwrap();
        m.persist().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let back: crate::config::FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.paths["pushed"].source.as_deref(), Some("publisher"));
        assert!(back.paths.contains_key("cam"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn persists_paths_keeping_other_keys() {
        let dir = std::env::temp_dir().join(format!("rtspgate-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rtspgate.toml");
        std::fs::write(
            &file,
            "rtsp_port = 9554\n[paths.old]\nsource = \"rtsp://h/old\"\n",
        )
        .unwrap();
        let m = PathManager::new(Registry::new(), Some(file.clone()));
        let mut s = src("rtsp://127.0.0.1:9/x");
        s.user = Some("admin".into());
        s.pass = Some("pw".into());
        m.add("cam", s.clone()).unwrap();
        m.persist().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let back: crate::config::FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.rtsp_port, Some(9554));
        assert_eq!(back.paths.len(), 1);
        let cam = &back.paths["cam"];
        assert_eq!(cam.source.as_deref(), Some("rtsp://127.0.0.1:9/x"));
        assert_eq!(cam.user.as_deref(), Some("admin"));
        assert_eq!(cam.transport, Some(TransportPref::Tcp));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtspgate-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(file: &Path) -> u32 {
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777
    }

    fn with_creds(url: &str, user: &str, pass: &str) -> SourceConfig {
        let mut s = src(url);
        s.user = Some(user.into());
        s.pass = Some(pass.into());
        s
    }

    const COMMENTED: &str = r#"# rtspgate at the north gate -- ask Jo before changing
rtsp_port = 9554   # the old NVR holds 8554
transport = "tcp"

# Cameras
[paths.keep] # the porch
source = "rtsp://admin:pw@10.0.0.5/h264"  # main stream
# no transport: the default above

[paths.edit]
source = "rtsp://10.0.0.6/a"   # to be changed
transport = "tcp"   # its firmware drops UDP
user = "op"

[paths.gone]
source = "rtsp://10.0.0.7/"
"#;

    #[tokio::test]
    async fn api_writes_keep_comments_layout_and_other_keys() {
        let dir = scratch("comments");
        let file = dir.join("rtspgate.toml");
        std::fs::write(&file, COMMENTED).unwrap();
        let m = PathManager::new(Registry::new(), Some(file.clone()));
        // As loaded from the file.
        m.add("keep", with_creds("rtsp://10.0.0.5/h264", "admin", "pw"))
            .unwrap();
        m.add("edit", {
            let mut s = src("rtsp://10.0.0.6/a");
            s.user = Some("op".into());
            s
        })
        .unwrap();
        m.add("gone", src("rtsp://10.0.0.7/")).unwrap();
        m.persist().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            COMMENTED,
            "nothing changed, nothing rewritten"
        );

        // What the API does: change one, remove one, add one.
        m.change("edit", {
            let mut s = src("rtsp://10.0.0.6/b");
            s.user = Some("op".into());
            s
        })
        .unwrap();
        m.remove("gone").unwrap();
        m.add("new", with_creds("rtsp://10.0.0.8/", "u", "p"))
            .unwrap();
        m.persist().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = COMMENTED
            .replace("rtsp://10.0.0.6/a", "rtsp://10.0.0.6/b")
            .replace("\n[paths.gone]\nsource = \"rtsp://10.0.0.7/\"\n", "")
            + "\n[paths.new]\nsource = \"rtsp://10.0.0.8/\"\ntransport = \"tcp\"\nuser = \"u\"\npass = \"p\"\n";
        assert_eq!(text, expected);
        // And it loads back to the same paths.
        let back: crate::config::FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.rtsp_port, Some(9554));
        assert_eq!(
            back.paths.keys().collect::<Vec<_>>(),
            ["edit", "keep", "new"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn file_mode_is_kept_and_new_files_are_owner_only() {
        let dir = scratch("mode");
        let file = dir.join("rtspgate.toml");
        std::fs::write(&file, "rtsp_port = 9554\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let m = PathManager::new(Registry::new(), Some(file.clone()));
        m.add("cam", with_creds("rtsp://10.0.0.5/", "admin", "pw"))
            .unwrap();
        m.persist().unwrap();
        assert_eq!(mode(&file), 0o640);
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("[paths.cam]"));

        let fresh = dir.join("new.toml");
        let m = PathManager::new(Registry::new(), Some(fresh.clone()));
        m.add("cam", with_creds("rtsp://10.0.0.5/", "admin", "pw"))
            .unwrap();
        m.persist().unwrap();
        assert_eq!(mode(&fresh), NEW_CONFIG_MODE);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A temporary file left by a crash, even a symlink planted at its
    /// name, neither breaks the next write nor is written through.
    #[tokio::test]
    async fn stale_temporary_file_does_not_break_or_redirect_a_write() {
        let dir = scratch("stale");
        let file = dir.join("rtspgate.toml");
        std::fs::write(&file, "# mine\n").unwrap();
        let tmp = dir.join(format!(".rtspgate.toml.{}.tmp", std::process::id()));
        std::fs::write(&tmp, "half a config from a crash [[[").unwrap();
        let m = PathManager::new(Registry::new(), Some(file.clone()));
        m.add("cam", with_creds("rtsp://10.0.0.5/", "admin", "pw"))
            .unwrap();
        m.persist().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# mine\n") && text.contains("[paths.cam]"),
            "{text}"
        );
        assert!(!tmp.exists());

        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        m.remove("cam").unwrap();
        m.persist().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!std::fs::read_to_string(&file).unwrap().contains("cam"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A symlinked config file stays a symlink; its target gets the text.
    #[tokio::test]
    async fn symlinked_config_stays_a_symlink() {
        let dir = scratch("symlink");
        let real = dir.join("real.toml");
        std::fs::write(&real, "").unwrap();
        let link = dir.join("rtspgate.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let m = PathManager::new(Registry::new(), Some(link.clone()));
        m.add("cam", src("rtsp://10.0.0.5/")).unwrap();
        m.persist().unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_to_string(&real)
            .unwrap()
            .contains("[paths.cam]"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Inline and dotted `paths` forms stay valid TOML with every path.
    #[tokio::test]
    async fn inline_and_dotted_paths_tables() {
        let dir = scratch("forms");
        for (i, text) in [
            "paths = { a = { source = \"rtsp://10.0.0.5/\" } } # inline\n",
            "paths.a.source = \"rtsp://10.0.0.5/\" # dotted\n",
            "# only a comment\n",
        ]
        .into_iter()
        .enumerate()
        {
            let file = dir.join(format!("{i}.toml"));
            std::fs::write(&file, text).unwrap();
            let m = PathManager::new(Registry::new(), Some(file.clone()));
            m.add("a", src("rtsp://10.0.0.5/")).unwrap();
            m.add("b", with_creds("rtsp://10.0.0.6/", "u", "p"))
                .unwrap();
            m.persist().unwrap();
            let out = std::fs::read_to_string(&file).unwrap();
            let back: crate::config::FileConfig =
                toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
            assert_eq!(back.paths.len(), 2, "{out}");
            assert_eq!(back.paths["b"].pass.as_deref(), Some("p"), "{out}");
            let first_line = text.lines().next().unwrap();
            assert!(
                out.starts_with(first_line.split(" = ").next().unwrap()),
                "{out}"
            );
            assert!(
                out.contains(first_line.rsplit('#').next().unwrap()),
                "{out}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
