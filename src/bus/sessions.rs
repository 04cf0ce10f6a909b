//! Every reader session across egresses (RTSP readers now; WHEP sessions and
//! HLS muxers register the same way), for the API's list and kick.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::Notify;

/// A session as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    /// `rtsp`, `webrtc` or `hls`.
    pub kind: &'static str,
    pub path: String,
    /// The reader's address (`ip:port`), when there is one.
    pub remote: Option<String>,
    /// Transport detail, e.g. `tcp` or `udp` for RTSP.
    pub transport: Option<String>,
    /// Seconds since the Unix epoch.
    pub since: u64,
    pub bytes_sent: u64,
}

struct Entry {
    info: SessionInfo,
    bytes: Arc<AtomicU64>,
    kick: Arc<Notify>,
}

/// The registry; cheap to share.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<BTreeMap<String, Entry>>,
}

/// Held by the session's task; dropping it removes the session.
pub struct SessionHandle {
    id: String,
    sessions: Arc<Sessions>,
    /// Bytes sent to the reader; the task adds to it.
    pub bytes: Arc<AtomicU64>,
    /// Notified when the API kicks the session; the task must end.
    pub kick: Arc<Notify>,
}

impl SessionHandle {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

impl Sessions {
    pub fn new() -> Arc<Self> {
        Arc::new(Sessions::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session under `id` (unique per kind; prefixed with the kind).
    pub fn register(
        self: &Arc<Self>,
        kind: &'static str,
        id: &str,
        path: &str,
        remote: Option<String>,
        transport: Option<String>,
    ) -> SessionHandle {
        let id = format!("{kind}-{id}");
        let bytes = Arc::new(AtomicU64::new(0));
        let kick = Arc::new(Notify::new());
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.lock().insert(
            id.clone(),
            Entry {
                info: SessionInfo {
                    id: id.clone(),
                    kind,
                    path: path.to_owned(),
                    remote,
                    transport,
                    since,
                    bytes_sent: 0,
                },
                bytes: bytes.clone(),
                kick: kick.clone(),
            },
        );
        SessionHandle {
            id,
            sessions: self.clone(),
            bytes,
            kick,
        }
    }

    /// All sessions, by id.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock()
            .values()
            .map(|e| SessionInfo {
                bytes_sent: e.bytes.load(Ordering::Relaxed),
                ..e.info.clone()
            })
            .collect()
    }

    /// Asks a session to end; `false` if there is no such session.
    pub fn kick(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(e) => {
                // notify_one stores a permit, so a task not yet waiting still sees it.
                e.kick.notify_one();
                true
            }
            None => false,
        }
    }

    /// Number of sessions of `kind` on `path`.
    pub fn count(&self, kind: &str, path: &str) -> usize {
        self.lock()
            .values()
            .filter(|e| e.info.kind == kind && e.info.path == path)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn register_list_kick_drop() {
        let s = Sessions::new();
        let h = s.register("rtsp", "abc", "cam", Some("127.0.0.1:5".into()), None);
        h.bytes.fetch_add(100, Ordering::Relaxed);
        let list = s.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "rtsp-abc");
        assert_eq!(list[0].bytes_sent, 100);
        assert_eq!(s.count("rtsp", "cam"), 1);
        assert!(s.kick("rtsp-abc"));
        assert!(!s.kick("rtsp-nope"));
        // The permit is stored: the task sees the kick even if it waits later.
        tokio::time::timeout(std::time::Duration::from_secs(1), h.kick.notified())
            .await
            .expect("kick delivered");
        drop(h);
        assert!(s.list().is_empty());
    }
}
