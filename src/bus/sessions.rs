//! The one registry of sessions of every egress: RTSP readers, WebRTC (WHEP)
//! viewers and LL-HLS muxers. The API lists and kicks through it
//! (`/api/v1/sessions`), `/metrics` and the stream list count readers
//! per path and protocol from it, and authentication attaches the user to
//! an entry here.
//!
//! An entry's owner (the egress task serving the session) holds its
//! [`SessionHandle`]: it adds the bytes it sends, waits for a kick, and
//! removes the entry by dropping the handle. Per-egress [`Detail`] that
//! changes while the session runs (WebRTC ICE state, RTT, loss) is read at
//! list time from the owner's [`DetailSource`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use tokio::sync::Notify;

/// Which egress serves a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    #[serde(rename = "rtsp")]
    Rtsp,
    #[serde(rename = "webrtc")]
    WebRtc,
    #[serde(rename = "hls")]
    Hls,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Rtsp, Protocol::WebRtc, Protocol::Hls];

    /// `rtsp`, `webrtc` or `hls`: the API's key and the `/metrics` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtsp => "rtsp",
            Protocol::WebRtc => "webrtc",
            Protocol::Hls => "hls",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is particular to one egress's session.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Rtsp(RtspDetail),
    /// Boxed: much larger than the others.
    WebRtc(Box<WebRtcDetail>),
    Hls(HlsDetail),
}

impl Detail {
    pub fn protocol(&self) -> Protocol {
        match self {
            Detail::Rtsp(_) => Protocol::Rtsp,
            Detail::WebRtc(_) => Protocol::WebRtc,
            Detail::Hls(_) => Protocol::Hls,
        }
    }

    /// The peer's address when the detail knows it better than the
    /// registration did (WebRTC: the selected ICE pair, learned after the
    /// offer).
    fn remote(&self) -> Option<SocketAddr> {
        match self {
            Detail::WebRtc(w) => w.remote,
            _ => None,
        }
    }
}

/// An RTSP reader (RFC 2326 §12.39 `Transport`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RtspDetail {
    /// `tcp` when any track is interleaved on the RTSP connection, else `udp`.
    pub transport: RtspTransport,
    /// The tracks set up, by bus track index.
    pub tracks: Vec<RtspTrackDetail>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

/// Where one track goes: interleaved channels (TCP) or client ports (UDP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RtspTrackDetail {
    /// Bus track index.
    pub track: usize,
    /// RTP and RTCP channel numbers (`interleaved=0-1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interleaved: Option<[u8; 2]>,
    /// The client's RTP and RTCP ports (`client_port=5000-5001`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ports: Option<[u16; 2]>,
}

/// A WHEP viewer: connection state and RTCP-derived quality, updated by
/// the session as it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebRtcDetail {
    /// `connecting`, `connected` or `closed` (ICE and DTLS).
    pub state: &'static str,
    /// Why it closed, once closed.
    pub closed_reason: Option<String>,
    /// The viewer's address on the selected ICE pair; shown as the
    /// session's `remote`.
    #[serde(skip)]
    pub remote: Option<SocketAddr>,
    /// `udp` or `tcp` (ICE-TCP), once connected.
    pub transport: Option<&'static str>,
    /// Negotiated codecs (`h264`, `opus`, ...), `None` when not sent.
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// RTP packets sent, retransmissions included (all tracks).
    pub packets_sent: u64,
    /// RTCP NACKs received (RFC 4585 §6.2.1).
    pub nacks: u64,
    /// RTCP PLIs received (RFC 4585 §6.3.1).
    pub plis: u64,
    /// RTCP FIRs received (RFC 5104 §4.3.1).
    pub firs: u64,
    /// Round-trip time from RTCP receiver reports, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of packets the viewer reports lost, 0..=1.
    pub loss: Option<f32>,
    /// Video frames handed to str0m.
    pub video_frames: u64,
    /// Audio frames handed to str0m.
    pub audio_frames: u64,
    /// Video frames not sent while waiting for a keyframe (start or PLI/FIR).
    pub frames_skipped: u64,
    /// Milliseconds from the offer to the first video frame written (the
    /// keyframe from the GOP cache), if any.
    pub first_frame_ms: Option<u64>,
    /// Tracks not sent to this viewer, and why.
    pub skipped_tracks: Vec<String>,
}

/// A stream's LL-HLS muxer, shared by all its HLS viewers (HTTP requests
/// are not sessions); its bytes are everything served from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HlsDetail {
    /// Media sequence number of the muxer's first segment.
    pub first_sequence: u64,
    /// Wanted part duration, milliseconds.
    pub part_ms: u64,
    /// Minimum segment duration, milliseconds.
    pub segment_ms: u64,
}

/// Where the registry reads an entry's detail at list time. A detail that
/// never changes is its own source; a session whose detail changes keeps it
/// behind a lock it shares with the registry.
pub trait DetailSource: Send + Sync {
    fn detail(&self) -> Detail;
}

impl DetailSource for Detail {
    fn detail(&self) -> Detail {
        self.clone()
    }
}

/// A session as the API shows it (`GET /api/v1/sessions`).
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    /// `<protocol>-<the egress's own id>`; what `DELETE /api/v1/sessions/<id>` takes.
    pub id: String,
    pub protocol: Protocol,
    pub path: String,
    /// The peer's address (`ip:port`), when there is one.
    pub remote: Option<SocketAddr>,
    /// The authenticated user, when the entry point authenticated one.
    pub user: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(serialize_with = "unix_seconds")]
    pub since: SystemTime,
    /// Media bytes sent to the peer (RTP, or HLS files served).
    pub bytes_sent: u64,
    pub detail: Detail,
}

impl SessionInfo {
    /// The id the egress itself uses (e.g. the WHEP resource id).
    pub fn local_id(&self) -> &str {
        self.id
            .strip_prefix(self.protocol.as_str())
            .and_then(|s| s.strip_prefix('-'))
            .unwrap_or(&self.id)
    }
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// What a new entry is registered with.
#[derive(Clone, Debug, Default)]
pub struct NewSession<'a> {
    /// The egress's own id, unique among that egress's sessions.
    pub id: &'a str,
    pub path: &'a str,
    pub remote: Option<SocketAddr>,
    pub user: Option<String>,
}

/// The part of an entry its owner writes.
#[derive(Default)]
struct Live {
    bytes: AtomicU64,
    kick: Notify,
}

/// What an entry was registered with.
#[derive(Clone)]
struct Meta {
    protocol: Protocol,
    path: String,
    remote: Option<SocketAddr>,
    user: Option<String>,
    since: SystemTime,
}

struct Entry {
    meta: Meta,
    live: Arc<Live>,
    detail: Arc<dyn DetailSource>,
}

/// The registry; cheap to share.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<BTreeMap<String, Entry>>,
}

/// Held by the session's owner; dropping it removes the entry.
pub struct SessionHandle {
    id: String,
    sessions: Arc<Sessions>,
    live: Arc<Live>,
}

impl SessionHandle {
    /// The registry id (`<protocol>-<own id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counts `n` bytes sent to the peer.
    pub fn add_bytes(&self, n: u64) {
        self.live.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Replaces the user shown on the entry (an LL-HLS muxer learns its
    /// viewers' users as they fetch from it).
    pub fn set_user(&self, user: Option<String>) {
        if let Some(e) = self.sessions.lock().get_mut(&self.id) {
            // The id may have been re-registered by a newer owner.
            if Arc::ptr_eq(&e.live, &self.live) {
                e.meta.user = user;
            }
        }
    }

    /// Completes when the API kicks the session; the owner must then end
    /// it. A kick that came before this is called is not lost.
    pub fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let live = self.live.clone();
        async move { live.kick.notified().await }
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .finish()
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

    /// Registers a session; its protocol is its detail's. The registry id
    /// is `<protocol>-<new.id>`; registering an id that is already there
    /// replaces that entry (its old handle then removes the new one, so
    /// egresses keep their own ids unique).
    pub fn register(
        self: &Arc<Self>,
        new: NewSession<'_>,
        detail: Arc<dyn DetailSource>,
    ) -> SessionHandle {
        let protocol = detail.detail().protocol();
        let id = format!("{protocol}-{}", new.id);
        let live = Arc::new(Live::default());
        self.lock().insert(
            id.clone(),
            Entry {
                meta: Meta {
                    protocol,
                    path: new.path.to_owned(),
                    remote: new.remote,
                    user: new.user,
                    since: SystemTime::now(),
                },
                live: live.clone(),
                detail,
            },
        );
        SessionHandle {
            id,
            sessions: self.clone(),
            live,
        }
    }

    /// All sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        // Details are read outside the map lock: a source may take its own.
        let rows: Vec<(String, Meta, u64, Arc<dyn DetailSource>)> = self
            .lock()
            .iter()
            .map(|(id, e)| {
                let bytes = e.live.bytes.load(Ordering::Relaxed);
                (id.clone(), e.meta.clone(), bytes, e.detail.clone())
            })
            .collect();
        let mut out: Vec<SessionInfo> = rows
            .into_iter()
            .map(|(id, m, bytes_sent, source)| {
                let detail = source.detail();
                SessionInfo {
                    id,
                    protocol: m.protocol,
                    path: m.path,
                    remote: m.remote.or_else(|| detail.remote()),
                    user: m.user,
                    since: m.since,
                    bytes_sent,
                    detail,
                }
            })
            .collect();
        out.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Asks a session to end; `false` if there is no such session.
    pub fn kick(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(e) => {
                // notify_one stores a permit, so an owner not yet waiting still sees it.
                e.live.kick.notify_one();
                true
            }
            None => false,
        }
    }

    /// Number of sessions of `protocol` on `path`.
    pub fn count(&self, protocol: Protocol, path: &str) -> usize {
        self.lock()
            .values()
            .filter(|e| e.meta.protocol == protocol && e.meta.path == path)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rtsp_detail() -> Arc<dyn DetailSource> {
        Arc::new(Detail::Rtsp(RtspDetail {
            transport: RtspTransport::Tcp,
            tracks: vec![RtspTrackDetail {
                track: 0,
                interleaved: Some([0, 1]),
                client_ports: None,
            }],
        }))
    }

    fn new<'a>(id: &'a str, path: &'a str) -> NewSession<'a> {
        NewSession {
            id,
            path,
            remote: Some(SocketAddr::from(([127, 0, 0, 1], 5))),
            user: None,
        }
    }

    #[tokio::test]
    async fn register_list_kick_drop() {
        let s = Sessions::new();
        let h = s.register(new("abc", "cam"), rtsp_detail());
        h.add_bytes(100);
        let list = s.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "rtsp-abc");
        assert_eq!(list[0].local_id(), "abc");
        assert_eq!(list[0].protocol, Protocol::Rtsp);
        assert_eq!(list[0].bytes_sent, 100);
        assert_eq!(list[0].user, None);
        assert!(s.kick("rtsp-abc"));
        assert!(!s.kick("rtsp-nope"));
        // The permit is stored: the owner sees the kick even if it waits later.
        tokio::time::timeout(Duration::from_secs(1), h.kicked())
            .await
            .expect("kick delivered");
        drop(h);
        assert!(s.list().is_empty());
        assert!(!s.kick("rtsp-abc"));
    }

    #[test]
    fn json_shape() {
        let s = Sessions::new();
        let _h = s.register(new("abc", "cam"), rtsp_detail());
        let v = serde_json::to_value(s.list()).unwrap();
        assert_eq!(v[0]["protocol"], "rtsp");
        assert_eq!(v[0]["remote"], "127.0.0.1:5");
        assert!(v[0]["user"].is_null());
        assert!(v[0]["since"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v[0]["detail"]["transport"], "tcp");
        assert_eq!(v[0]["detail"]["tracks"][0]["interleaved"][1], 1);
        assert!(v[0]["detail"]["tracks"][0].get("client_ports").is_none());
    }

    /// A WebRTC-like owner: changes its detail while it runs.
    struct Changing(Mutex<WebRtcDetail>);

    impl DetailSource for Changing {
        fn detail(&self) -> Detail {
            Detail::WebRtc(Box::new(self.0.lock().unwrap().clone()))
        }
    }

    #[test]
    fn detail_updates_are_visible_in_the_list() {
        let s = Sessions::new();
        let live = Arc::new(Changing(Mutex::new(WebRtcDetail {
            state: "connecting",
            ..WebRtcDetail::default()
        })));
        let _h = s.register(
            NewSession {
                id: "ff",
                path: "cam",
                ..NewSession::default()
            },
            live.clone(),
        );
        let first = s.list();
        assert_eq!(first[0].protocol, Protocol::WebRtc);
        assert_eq!(first[0].remote, None);
        {
            let mut d = live.0.lock().unwrap();
            d.state = "connected";
            d.rtt_ms = Some(12.5);
            d.remote = Some(SocketAddr::from(([10, 0, 0, 2], 50000)));
        }
        let now = s.list();
        let Detail::WebRtc(d) = &now[0].detail else {
            panic!("{:?}", now[0].detail)
        };
        assert_eq!((d.state, d.rtt_ms), ("connected", Some(12.5)));
        assert_eq!(
            now[0].remote,
            Some(SocketAddr::from(([10, 0, 0, 2], 50000)))
        );
        // The ICE address is the session's remote, not repeated in the detail.
        let v = serde_json::to_value(&now[0]).unwrap();
        assert_eq!(v["remote"], "10.0.0.2:50000");
        assert!(v["detail"].get("remote").is_none());
        assert_eq!(v["detail"]["rtt_ms"], 12.5);
    }

    #[test]
    fn count_by_protocol_and_path() {
        let s = Sessions::new();
        let _a = s.register(new("a", "cam"), rtsp_detail());
        let _b = s.register(new("b", "cam"), rtsp_detail());
        let _c = s.register(new("c", "other"), rtsp_detail());
        let hls = Arc::new(Detail::Hls(HlsDetail {
            first_sequence: 1,
            part_ms: 200,
            segment_ms: 1000,
        }));
        let d = s.register(new("cam-1", "cam"), hls);
        assert_eq!(s.count(Protocol::Rtsp, "cam"), 2);
        assert_eq!(s.count(Protocol::Rtsp, "other"), 1);
        assert_eq!(s.count(Protocol::Hls, "cam"), 1);
        assert_eq!(s.count(Protocol::WebRtc, "cam"), 0);
        drop(d);
        assert_eq!(s.count(Protocol::Hls, "cam"), 0);
        let ids: Vec<String> = s.list().into_iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), 3);
    }
}
