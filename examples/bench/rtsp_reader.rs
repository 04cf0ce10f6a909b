//! Light RTSP/TCP readers for the fan-out benchmark: DESCRIBE, SETUP
//! (interleaved), PLAY, then parse `$` frames, check RTP sequence numbers
//! and count every packet. Each access unit's last packet (marker bit) is
//! time-stamped under a key made from its last payload bytes, which are the
//! last bytes of the access unit's last NAL unit whoever packetized it: the
//! same access unit read from the camera directly and through a relay has
//! the same key, so the two arrival times give the relay's added latency.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes of the marker packet's payload tail that make up the key.
const KEY_TAIL: usize = 32;
/// Keep-alive period (servers time sessions out after 60 s).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// What one reader has seen so far; read while it runs.
#[derive(Default)]
pub struct Stats {
    /// Set once PLAY was answered 200 and the first RTP packet arrived.
    pub playing: AtomicBool,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Sum of forward sequence-number gaps: packets that never came.
    pub lost: AtomicU64,
    /// Packets with a sequence number at or behind the last one.
    pub reordered: AtomicU64,
    /// (key, arrival) of every access unit's last packet.
    pub marks: Mutex<Vec<(u64, Instant)>>,
    pub error: Mutex<Option<String>>,
}

impl Stats {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

fn key(payload: &[u8]) -> u64 {
    let tail = &payload[payload.len().saturating_sub(KEY_TAIL)..];
    let mut h = DefaultHasher::new();
    tail.hash(&mut h);
    h.finish()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one RTSP response at the start of `buf`: `Some((response, len))`
/// when complete.
fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let total = end + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Response {
            status,
            headers,
            body: buf[end + 4..total].to_vec(),
        },
        total,
    )))
}

struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    session: Option<String>,
}

impl Conn {
    async fn request(&mut self, method: &str, url: &str, extra: &str) -> Result<Response, String> {
        self.cseq += 1;
        let session = self
            .session
            .as_ref()
            .map(|s| format!("Session: {s}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: rtspgate-bench\r\n{session}{extra}\r\n",
            self.cseq
        );
        self.sock
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        loop {
            // GstRtspServer may send media before the PLAY response: skip it.
            while self.buf.len() >= 4 && self.buf[0] == b'$' {
                let len = 4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < len {
                    break;
                }
                self.buf.drain(..len);
            }
            if self.buf.first() == Some(&b'$') {
                // An incomplete interleaved frame: read the rest first.
            } else if let Some((resp, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                if resp.status != 200 {
                    return Err(format!("{method} {url}: status {}", resp.status));
                }
                return Ok(resp);
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .sock
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{method}: {e}"))?;
            if n == 0 {
                return Err(format!("{method}: connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The URL to SETUP for the first video section of `sdp`.
fn setup_url(url: &str, base: Option<&str>, sdp: &str) -> String {
    let mut in_video = false;
    let mut control = None;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            in_video = line.starts_with("m=video");
        } else if in_video {
            if let Some(c) = line.strip_prefix("a=control:") {
                control = Some(c.trim().to_owned());
                break;
            }
        }
    }
    let base = base.unwrap_or(url);
    match control {
        Some(c) if c.starts_with("rtsp://") => c,
        Some(c) if c != "*" => {
            if base.ends_with('/') {
                format!("{base}{c}")
            } else {
                format!("{base}/{c}")
            }
        }
        _ => base.to_owned(),
    }
}

/// Reads `url` over RTSP/TCP until `stop` is set or the connection fails
/// (the error lands in `stats.error`).
pub async fn read(url: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    if let Err(e) = read_inner(&url, &stats, &stop).await {
        if !stop.load(Ordering::Relaxed) {
            if let Ok(mut slot) = stats.error.lock() {
                *slot = Some(e);
            }
        }
    }
}

async fn read_inner(url: &str, stats: &Stats, stop: &AtomicBool) -> Result<(), String> {
    let host = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("bad URL {url}"))?;
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(host))
        .await
        .map_err(|_| format!("connect {host}: timed out"))?
        .map_err(|e| format!("connect {host}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let mut c = Conn {
        sock,
        buf: Vec::with_capacity(256 * 1024),
        cseq: 0,
        session: None,
    };
    let d = c
        .request("DESCRIBE", url, "Accept: application/sdp\r\n")
        .await?;
    let sdp = String::from_utf8_lossy(&d.body).into_owned();
    let track = setup_url(url, d.header("Content-Base"), &sdp);
    let s = c
        .request(
            "SETUP",
            &track,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        )
        .await?;
    let session = s
        .header("Session")
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .ok_or("SETUP: no Session header")?;
    c.session = Some(session);
    c.request("PLAY", url, "Range: npt=0.000-\r\n").await?;

    let Conn {
        mut sock,
        mut buf,
        mut cseq,
        session,
    } = c;
    let session = session.unwrap_or_default();
    let mut start = 0usize;
    let mut last_seq: Option<u16> = None;
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut marks = Vec::with_capacity(1024);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Parse every complete frame in buf[start..].
        loop {
            let avail = &buf[start..];
            if avail.is_empty() {
                break;
            }
            if avail[0] == b'$' {
                if avail.len() < 4 {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([avail[2], avail[3]]));
                if avail.len() < 4 + len {
                    break;
                }
                let channel = avail[1];
                let pkt = &avail[4..4 + len];
                if channel == 0 && pkt.len() >= 12 {
                    let now = Instant::now();
                    let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
                    if let Some(prev) = last_seq {
                        let d = seq.wrapping_sub(prev);
                        if d == 0 || d > 0x8000 {
                            stats.reordered.fetch_add(1, Ordering::Relaxed);
                        } else if d > 1 {
                            stats.lost.fetch_add(u64::from(d - 1), Ordering::Relaxed);
                        }
                    }
                    if last_seq.is_none() {
                        stats.playing.store(true, Ordering::Relaxed);
                    }
                    last_seq = Some(seq);
                    stats.packets.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    if pkt[1] & 0x80 != 0 {
                        let cc = usize::from(pkt[0] & 0x0f);
                        let mut off = 12 + 4 * cc;
                        if pkt[0] & 0x10 != 0 && pkt.len() >= off + 4 {
                            let words =
                                usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]));
                            off += 4 + 4 * words;
                        }
                        if off < pkt.len() {
                            marks.push((key(&pkt[off..]), now));
                            if marks.len() >= 64 {
                                if let Ok(mut m) = stats.marks.lock() {
                                    m.append(&mut marks);
                                }
                            }
                        }
                    }
                }
                start += 4 + len;
            } else {
                // An RTSP response (keep-alive answers) between frames.
                match parse_response(avail)? {
                    Some((_, used)) => start += used,
                    None => break,
                }
            }
        }
        // Compact, then read more.
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = sock.read_buf(&mut buf) => {
                match r {
                    Ok(0) => return Err("server closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            _ = keepalive.tick() => {
                cseq += 1;
                let req = format!("GET_PARAMETER {url} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {session}\r\n\r\n");
                sock.write_all(req.as_bytes()).await.map_err(|e| format!("keep-alive: {e}"))?;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if !marks.is_empty() {
            if let Ok(mut m) = stats.marks.lock() {
                m.append(&mut marks);
            }
        }
    }
    Ok(())
}

/// A group of readers of one URL.
pub struct Readers {
    pub stats: Vec<Arc<Stats>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    /// Starts `n` readers of `url`, at most `parallel` connecting at a time.
    pub async fn start(url: &str, n: usize, parallel: usize) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut stats = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let s = Arc::new(Stats::default());
            stats.push(s.clone());
            let (url, stop, sem) = (url.to_owned(), stop.clone(), sem.clone());
            tasks.push(tokio::spawn(async move {
                // Hold a permit until playing (or failed), so connection
                // storms stay bounded.
                let permit = sem.acquire_owned().await.ok();
                let s2 = s.clone();
                let release = tokio::spawn(async move {
                    while !s2.playing.load(Ordering::Relaxed) {
                        if s2.error.lock().map(|e| e.is_some()).unwrap_or(true) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    drop(permit);
                });
                read(url, s, stop).await;
                release.abort();
            }));
        }
        Readers { stats, stop, tasks }
    }

    /// Waits until every reader plays (or failed), up to `timeout`;
    /// returns how many play.
    pub async fn wait_playing(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let playing = self
                .stats
                .iter()
                .filter(|s| s.playing.load(Ordering::Relaxed))
                .count();
            let failed = self
                .stats
                .iter()
                .filter(|s| s.error.lock().map(|e| e.is_some()).unwrap_or(false))
                .count();
            if playing + failed >= self.stats.len() || Instant::now() >= deadline {
                return playing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum over readers of (packets, lost, bytes).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.stats
            .iter()
            .map(|s| s.snapshot())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }

    pub fn errors(&self) -> Vec<String> {
        self.stats
            .iter()
            .filter_map(|s| s.error.lock().ok().and_then(|e| e.clone()))
            .collect()
    }

    /// Stops every reader (closing its connection).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}
