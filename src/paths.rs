//! The configured paths at run time: each path's source task, added,
//! changed and removed through the API or a config reload (SIGHUP) without
//! touching the paths that did not change, and written back to the config
//! file when one is in use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::bus::{Registry, Stream};
use crate::config::SourceConfig;
use crate::ingest::{self, Source};

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
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a path pulling `source`. Must run inside a tokio runtime.
    pub fn add(&self, name: &str, source: SourceConfig) -> Result<(), PathError> {
        let mut running = self.lock();
        if running.contains_key(name) {
            return Err(PathError::Exists(name.to_owned()));
        }
        let stream = Stream::new(name, source.display_url());
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

    /// Writes the configured paths into the config file's `[paths]` table,
    /// keeping its other keys. Does nothing without a config file. The file
    /// is replaced atomically (write to a temporary file, then rename).
    pub fn persist(&self) -> Result<(), PathError> {
        let Some(file) = &self.config_file else {
            return Ok(());
        };
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(PathError::Persist(e.to_string())),
        };
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| PathError::Persist(e.to_string()))?;
        let mut paths = toml::Table::new();
        for (name, src) in self.list() {
            paths.insert(
                name,
                toml::Value::Table(crate::config::source_to_toml(&src)),
            );
        }
        doc.insert("paths".into(), toml::Value::Table(paths));
        let out = toml::to_string_pretty(&doc).map_err(|e| PathError::Persist(e.to_string()))?;
        let tmp = file.with_extension("toml.tmp");
        std::fs::write(&tmp, out).map_err(|e| PathError::Persist(e.to_string()))?;
        std::fs::rename(&tmp, file).map_err(|e| PathError::Persist(e.to_string()))
    }
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
}
