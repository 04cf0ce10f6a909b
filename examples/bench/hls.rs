//! LL-HLS part latency, shared by `examples/bench/hls_latency.rs` and
//! `examples/bench`: an in-process gateway pulls a camera; two clients fetch
//! every part as soon as it can exist:
//!
//! - a *preload-hint* client asks for each part before it exists (the
//!   request is held until the part is complete), as the part named by
//!   EXT-X-PRELOAD-HINT is fetched;
//! - a *blocking-reload* client: `stream.m3u8?_HLS_msn=M&_HLS_part=P`, then
//!   GET the part, as hls.js does.
//!
//! For every part, the figure is the time from the arrival at the gateway
//! of the part's last video frame (the bus frame whose last NAL unit is the
//! part's last sample's) to the moment the client has the whole part.
//! Because a sample's duration is known only from the next frame, this
//! includes one frame interval (40 ms at 25 fps).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp4_atom::{Any, Decode};
use rtspgate::bus::{MediaKind, StreamState};
use rtspgate::config::{parse_source, Config, TransportPref};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arrival time of each video frame, by a hash of its last NAL unit.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

/// An in-process gateway (all on 127.0.0.1) serving `camera_url` as `cam`,
/// with a recorder of every video frame's arrival.
pub struct HlsRun {
    _gateway: rtspgate::Gateway,
    /// HTTP port (`/cam/index.m3u8`).
    pub port: u16,
    arrivals: Arrivals,
    recorder: tokio::task::JoinHandle<()>,
}

impl Drop for HlsRun {
    fn drop(&mut self) {
        self.recorder.abort();
    }
}

/// Per part: time from its last frame's arrival to the client having it.
pub struct PartDelays {
    pub hinted: Vec<Duration>,
    pub reloaded: Vec<Duration>,
}

impl HlsRun {
    pub async fn start(camera_url: &str) -> Result<HlsRun, String> {
        let mut config = Config {
            listen: [127, 0, 0, 1].into(),
            rtsp_port: testkit::free_port(),
            http_port: testkit::free_port(),
            rtp_port: testkit::free_udp_port_pair().0,
            ..Config::default()
        };
        config.webrtc.port = testkit::free_udp_tcp_port();
        let source = parse_source("cam", camera_url, TransportPref::Auto, None, None)
            .map_err(|e| format!("camera URL: {e}"))?;
        config.paths.insert("cam".into(), source);
        let gateway = rtspgate::Gateway::start(&config)
            .await
            .map_err(|e| format!("gateway: {e}"))?;
        let stream = gateway.registry.get("cam").ok_or("no stream cam")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while stream.state() != StreamState::Live {
            if Instant::now() > deadline {
                return Err(format!("not live: {:?}", stream.state()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let video = stream
            .tracks()
            .and_then(|set| set.tracks.iter().position(|t| t.kind() == MediaKind::Video))
            .ok_or("no video track")?;
        let arrivals: Arrivals = Arc::default();
        let mut bus = stream.subscribe();
        let recorder = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                while let Ok(item) = bus.recv().await {
                    let rtspgate::bus::Item::Frame(f) = item else {
                        continue;
                    };
                    if f.track == video {
                        if let Some(nal) = last_nal(&f.data) {
                            if let Ok(mut map) = arrivals.lock() {
                                map.insert(hash(nal), f.received);
                            }
                        }
                    }
                }
            })
        };
        Ok(HlsRun {
            port: config.http_port,
            _gateway: gateway,
            arrivals,
            recorder,
        })
    }

    /// Runs both clients for `seconds`.
    pub async fn measure(&self, seconds: u64) -> Result<PartDelays, String> {
        let port = self.port;
        let (status, body) = get(port, "/cam/stream.m3u8")
            .await
            .map_err(|e| format!("playlist: {e}"))?;
        if status != 200 {
            return Err(format!(
                "playlist: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let hint = preload_hint(&String::from_utf8_lossy(&body)).ok_or("no EXT-X-PRELOAD-HINT")?;
        let until = Instant::now() + Duration::from_secs(seconds);
        let a = tokio::spawn(client(port, self.arrivals.clone(), hint, until, false));
        let b = tokio::spawn(client(port, self.arrivals.clone(), hint, until, true));
        Ok(PartDelays {
            hinted: a.await.map_err(|e| e.to_string())?,
            reloaded: b.await.map_err(|e| e.to_string())?,
        })
    }
}

/// GET over HTTP/1.0; (status, body).
pub async fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&raw[..end])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// The last NAL unit of an AVCC access unit (4-byte lengths).
fn last_nal(au: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    let mut last = None;
    while pos + 4 <= au.len() {
        let len = u32::from_be_bytes(au[pos..pos + 4].try_into().ok()?) as usize;
        let nal = au.get(pos + 4..pos + 4 + len)?;
        last = Some(nal);
        pos += 4 + len;
    }
    last
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The last sample of `track_id` in a part (`moof` + `mdat`).
fn last_sample(part: &[u8], track_id: u32) -> Option<&[u8]> {
    let mut buf = part;
    let Ok(Any::Moof(moof)) = Any::decode(&mut buf) else {
        return None;
    };
    let traf = moof.traf.iter().find(|t| t.tfhd.track_id == track_id)?;
    let trun = traf.trun.first()?;
    let mut off = usize::try_from(trun.data_offset?).ok()?;
    let mut last = None;
    for s in trun.samples.iter() {
        let size = s.size? as usize;
        last = Some(part.get(off..off + size)?);
        off += size;
    }
    last
}

/// The (MSN, index) of EXT-X-PRELOAD-HINT.
fn preload_hint(playlist: &str) -> Option<(u64, u64)> {
    let uri = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-"))?;
    let (msn, rest) = uri.split_once('-')?;
    let index = rest.strip_suffix(".mp4\"")?;
    Some((msn.parse().ok()?, index.parse().ok()?))
}

/// Time from the arrival of the part's last video frame to `served`.
async fn delay(arrivals: &Arrivals, part: &[u8], served: Instant) -> Option<Duration> {
    // Video is track 1 (the lead track) when the stream has video.
    let key = hash(last_nal(last_sample(part, 1)?)?);
    // The recorder reads the bus in parallel; give it a moment.
    for _ in 0..50 {
        if let Some(t) = arrivals.lock().ok()?.get(&key) {
            return Some(served.saturating_duration_since(*t));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Fetches every part from `start` on until `until`; `blocking_reload`
/// first waits for the part with a blocking playlist reload.
async fn client(
    port: u16,
    arrivals: Arrivals,
    start: (u64, u64),
    until: Instant,
    blocking_reload: bool,
) -> Vec<Duration> {
    let (mut msn, mut index) = start;
    let mut delays = Vec::new();
    while Instant::now() < until {
        if blocking_reload {
            let path = format!("/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={index}");
            match get(port, &path).await {
                Ok((200, body)) => {
                    let text = String::from_utf8_lossy(&body);
                    if !text.contains(&format!("part-{msn}-{index}.mp4")) {
                        // The segment ended with fewer parts.
                        (msn, index) = (msn + 1, 0);
                        continue;
                    }
                }
                other => {
                    eprintln!("blocking reload {path}: {other:?}");
                    break;
                }
            }
        }
        let path = format!("/cam/part-{msn}-{index}.mp4");
        match get(port, &path).await {
            Ok((200, body)) => {
                let served = Instant::now();
                if let Some(d) = delay(&arrivals, &body, served).await {
                    delays.push(d);
                }
                index += 1;
            }
            // The segment ended with fewer parts: on to the next one.
            Ok((404, _)) => (msn, index) = (msn + 1, 0),
            other => {
                eprintln!("GET {path}: {other:?}");
                break;
            }
        }
    }
    delays
}
