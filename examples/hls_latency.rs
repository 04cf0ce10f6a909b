//! LL-HLS latency benchmark: a GStreamer camera (tests/support/camera.py,
//! H.264 640x360 25 fps + AAC) into an in-process gateway, read by:
//!
//! - a *preload-hint* client: asks for each part before it exists (the
//!   request is held until the part is complete), as the part named by
//!   EXT-X-PRELOAD-HINT is fetched;
//! - a *blocking-reload* client: `stream.m3u8?_HLS_msn=M&_HLS_part=P`, then
//!   GET the part, as hls.js does;
//! - hls.js in headless Chromium (tests/browser/hls_play.mjs), for how far
//!   behind live the player plays.
//!
//! For every part, the figure is the time from the arrival at the gateway
//! of the part's last video frame (the bus frame whose last NAL unit is the
//! part's last sample's) to the moment the client has the whole part.
//! Because a sample's duration is known only from the next frame, this
//! includes one frame interval (40 ms at 25 fps).
//!
//! ```sh
//! cargo run --release --example hls_latency -- [--seconds 20] [--browser-seconds 10]
//! ```
//! `--browser-seconds 0` skips Chromium. Needs Debian's python3 with
//! GStreamer (see .ci/run); Chromium and `npm ci --prefix tests/browser` for
//! the browser figure.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp4_atom::{Any, Decode};
use rtspgate::bus::{MediaKind, StreamState};
use rtspgate::config::{parse_source, Config, TransportPref};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arrival time of each video frame, by a hash of its last NAL unit.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

struct Camera(Child);

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_camera() -> (Camera, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/camera.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--port", "0", "--video", "h264", "--audio", "aac"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("/usr/bin/python3 runs tests/support/camera.py (see .ci/run)");
    let stdout = child.stdout.take().expect("stdout is piped");
    let camera = Camera(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("READY ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("camera.py prints READY within 20 s");
    (camera, url)
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

fn free_rtp_port() -> u16 {
    loop {
        let a = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let p = a.local_addr().expect("bound").port();
        if p.is_multiple_of(2) && p < u16::MAX && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// GET over HTTP/1.0; (status, body).
async fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
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
                other => panic!("blocking reload {path}: {other:?}"),
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
            other => panic!("GET {path}: {other:?}"),
        }
    }
    delays
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn print_figures(what: &str, mut d: Vec<Duration>) {
    if d.is_empty() {
        println!("{what}: no parts measured");
        return;
    }
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    println!(
        "{what}: {} parts, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (min {:.1} ms)",
        d.len(),
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.99)),
        ms(d[d.len() - 1]),
        ms(d[0])
    );
}

fn browser(url: &str, seconds: u32) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new("/usr/bin/chromium").exists() || !dir.join("node_modules/hls.js").exists() {
        println!("hls.js: skipped (needs /usr/bin/chromium and npm ci --prefix tests/browser)");
        return;
    }
    let out = Command::new("timeout")
        .arg(format!("{}", seconds + 90))
        .arg("node")
        .arg(dir.join("hls_play.mjs"))
        .arg(url)
        .args(["--frames", "100", "--seconds", &seconds.to_string()])
        .args(["--timeout", &(seconds + 60).to_string()])
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
        println!(
            "hls.js: no report ({}): {line} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let median = |key: &str| {
        let mut xs: Vec<f64> = v["latency"][key]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied()
    };
    println!(
        "hls.js (Chromium, lowLatencyMode): {} frames decoded, {} dropped, {} parts loaded; \
         behind live: hls.latency median {:.3} s, now - PROGRAM-DATE-TIME of the frame shown median {:.3} s ({} samples); errors {}",
        v["frames"],
        v["droppedFrames"],
        v["partsLoaded"],
        median("hls").unwrap_or(f64::NAN),
        median("wall").unwrap_or(f64::NAN),
        v["latency"]["wall"].as_array().map_or(0, Vec::len),
        v["errors"]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut seconds = 20u64;
    let mut browser_seconds = 10u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--seconds", Some(v)) => seconds = v,
            ("--browser-seconds", Some(v)) => browser_seconds = v as u32,
            _ => {
                eprintln!("usage: hls_latency [--seconds N] [--browser-seconds N]");
                std::process::exit(2);
            }
        }
    }

    let (_camera, camera_url) = start_camera();
    let mut config = Config {
        listen: [127, 0, 0, 1].into(),
        rtsp_port: free_tcp_port(),
        http_port: free_tcp_port(),
        rtp_port: free_rtp_port(),
        ..Config::default()
    };
    let source = parse_source("cam", &camera_url, TransportPref::Auto, None, None)
        .expect("camera.py prints a valid URL");
    config.paths.insert("cam".into(), source);
    let gateway = rtspgate::Gateway::start(&config)
        .await
        .expect("the gateway starts");
    let stream = gateway.registry.get("cam").expect("configured");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.state() != StreamState::Live {
        assert!(Instant::now() < deadline, "not live: {:?}", stream.state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let video = stream
        .tracks()
        .and_then(|set| set.tracks.iter().position(|t| t.kind() == MediaKind::Video))
        .expect("a video track");

    let arrivals: Arrivals = Arc::default();
    let mut bus = stream.subscribe();
    let recorder = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(f) = bus.recv().await {
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

    let port = config.http_port;
    let (status, body) = get(port, "/cam/stream.m3u8").await.expect("playlist");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let hint = preload_hint(&String::from_utf8_lossy(&body)).expect("a preload hint");
    println!(
        "measuring {seconds} s of 200 ms parts (camera H.264 640x360 25 fps + AAC, part start {hint:?})"
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    let a = tokio::spawn(client(port, arrivals.clone(), hint, until, false));
    let b = tokio::spawn(client(port, arrivals.clone(), hint, until, true));
    let hinted = a.await.expect("client task");
    let reloaded = b.await.expect("client task");
    print_figures(
        "part served after its last frame arrived, preload-hint GET",
        hinted,
    );
    print_figures(
        "part served after its last frame arrived, blocking reload + GET",
        reloaded,
    );
    recorder.abort();

    if browser_seconds > 0 {
        let url = format!("http://127.0.0.1:{port}/cam/index.m3u8");
        tokio::task::spawn_blocking(move || browser(&url, browser_seconds))
            .await
            .expect("browser task");
    }
}
