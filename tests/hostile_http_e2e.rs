//! The HTTP and WHEP side under hostile load, against the real binary:
//! slowloris connections, WHEP POST floods that never do ICE (with the
//! POST rate raised and at its default), ICE-TCP connections that never
//! speak, and trickle floods on a playing session. A witness reader must
//! not lose a frame meanwhile, and what the flood made must go away.
//!
//! Needs the GStreamer camera's packages (see .ci/run). Figures are
//! printed (`cargo test --release --test hostile_http_e2e -- --nocapture`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::procstat::rss_kib;
use testkit::rtsp_reader::{self, Recording};
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);
/// The test camera's frame rate.
const FPS: f64 = 25.0;
/// The gateway's HTTP header timeout (`http::serve::HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How late after its deadline a connection may still be closed (a loaded
/// 2-core machine, the poll interval of this test).
const MARGIN: Duration = Duration::from_millis(1500);
/// Share of the camera's frames a witness must get while the attack runs.
const WITNESS_SHARE: f64 = 0.98;

/// A Chrome WHEP offer (recvonly H.264/VP8/Opus, trickle ICE).
const OFFER: &str = include_str!("../src/egress/webrtc/testdata/chrome_offer.sdp");

fn camera() -> Arc<Camera> {
    Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None))
}

/// A gateway on `cam` with extra top-level config lines; waits until live.
fn gateway(cam: &Camera, extra: &str) -> Gateway {
    let cfg = scratch_path("hostile-http", "toml");
    std::fs::write(
        &cfg,
        format!("{extra}\n[paths.cam]\nsource = \"{}\"\n", cam.url()),
    )
    .expect("write config");
    let mut gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    gw.wait_live("cam", LIVE);
    gw
}

fn http_addr(gw: &Gateway) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], gw.http_port()))
}

/// A witness reading `cam` over RTSP/TCP until `until`.
fn witness(
    rt: &tokio::runtime::Runtime,
    gw: &Gateway,
    until: Instant,
) -> tokio::task::JoinHandle<Result<Recording, String>> {
    let url = gw.rtsp_url("cam");
    rt.spawn(async move { rtsp_reader::read(&url, rtsp_reader::Via::Tcp, until).await })
}

/// Checks that the witness got at least [`WITNESS_SHARE`] of the camera's
/// frames over `[from, to]`; returns (frames, expected).
fn assert_witness(gw: &mut Gateway, rec: &Recording, from: Instant, to: Instant) -> (usize, f64) {
    let v = rec.video().expect("the witness has a video track");
    let got = v.frames_between(from, to);
    let want = (to - from).as_secs_f64() * FPS;
    if (got as f64) < want * WITNESS_SHARE {
        gw.fail(&format!(
            "the witness got {got} frames over {:.1} s, want >= {:.0} ({:.0} % of {want:.0}): {}",
            (to - from).as_secs_f64(),
            want * WITNESS_SHARE,
            WITNESS_SHARE * 100.0,
            rec.summary()
        ));
    }
    assert_eq!(v.lost(), (0, 0), "{}", rec.summary());
    (got, want)
}

/// Connections that send a partial request header, then one more header
/// byte every `drip` seconds, never finishing; returns, per connection,
/// how long after its connect the gateway closed it (`None`: still open at
/// `give_up`). One thread polls all sockets (non-blocking).
fn slowloris(
    addr: SocketAddr,
    n: usize,
    drip: Duration,
    give_up: Duration,
) -> Vec<Option<Duration>> {
    let mut conns: Vec<(TcpStream, Instant, Option<Duration>)> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("the gateway accepts the connection");
            let at = Instant::now();
            s.write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .expect("first bytes");
            s.set_nonblocking(true).expect("non-blocking");
            (s, at, None)
        })
        .collect();
    let start = Instant::now();
    let mut last_drip = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < give_up && conns.iter().any(|c| c.2.is_none()) {
        let drip_now = last_drip.elapsed() >= drip;
        if drip_now {
            last_drip = Instant::now();
        }
        for (s, at, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            let gone = match s.read(&mut buf) {
                // An answer (408/400) or the end: either way the gateway
                // ended the request; the close follows the answer.
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let gone = gone
                || (drip_now
                    && matches!(s.write(b"a"), Err(e) if e.kind() != ErrorKind::WouldBlock));
            if gone {
                *closed = Some(at.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    conns.into_iter().map(|c| c.2).collect()
}

/// 200 HTTP slowloris connections are all closed within the header timeout
/// while an RTSP witness gets every frame.
#[test]
fn http_slowloris_is_closed_within_the_header_timeout() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = gateway(&cam, "");
    let rt = rtsp_reader::runtime();
    let t0 = Instant::now();
    let until = t0 + HEADER_TIMEOUT + MARGIN + Duration::from_secs(6);
    let reader = witness(&rt, &gw, until);
    // The witness plays before the attack starts.
    thread::sleep(Duration::from_secs(2));
    let from = Instant::now();
    let closed = slowloris(
        http_addr(&gw),
        200,
        Duration::from_secs(2),
        HEADER_TIMEOUT + MARGIN + Duration::from_secs(3),
    );
    let to = Instant::now();
    let rec = rt
        .block_on(reader)
        .expect("witness task")
        .unwrap_or_else(|e| gw.fail(&format!("witness: {e}")));
    let open = closed.iter().filter(|c| c.is_none()).count();
    let mut times: Vec<Duration> = closed.iter().flatten().copied().collect();
    times.sort();
    let (frames, want) = assert_witness(&mut gw, &rec, from, to);
    println!(
        "HTTP slowloris: {} connections, {} closed by the gateway (first after {:.2} s, median {:.2} s, last {:.2} s), {open} still open; witness {frames} frames of {want:.0} over {:.1} s",
        closed.len(),
        times.len(),
        times.first().map_or(0.0, Duration::as_secs_f64),
        times.get(times.len() / 2).map_or(0.0, Duration::as_secs_f64),
        times.last().map_or(0.0, Duration::as_secs_f64),
        (to - from).as_secs_f64(),
    );
    assert_eq!(
        open,
        0,
        "connections still open after {:?}",
        HEADER_TIMEOUT + MARGIN + Duration::from_secs(3)
    );
    let last = times.last().copied().unwrap_or_default();
    assert!(
        last <= HEADER_TIMEOUT + MARGIN,
        "the last slowloris connection was closed after {last:?}, want <= {:?}",
        HEADER_TIMEOUT + MARGIN
    );
    // The gateway still answers.
    assert_eq!(
        gw.http_get("/api/v1/streams").map(|r| r.status).ok(),
        Some(200)
    );
}

/// WebRTC sessions the API lists (`GET /api/v1/webrtc/sessions`).
fn webrtc_sessions(gw: &Gateway) -> usize {
    gw.http_get("/api/v1/webrtc/sessions")
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|v| v["sessions"].as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

/// What a POST flood got.
#[derive(Debug, Default)]
struct Flood {
    created: usize,
    too_many: usize,
    /// 429s with a `Retry-After` of at least one second.
    retry_after: usize,
    other: Vec<String>,
    elapsed: Duration,
}

/// `n` WHEP POSTs of [`OFFER`] from `threads` threads, as fast as they go.
fn whep_flood(addr: SocketAddr, n: usize, threads: usize) -> Flood {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let results: Vec<Flood> = (0..threads)
        .map(|_| {
            let next = next.clone();
            thread::spawn(move || {
                let mut f = Flood::default();
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    match whep::http(
                        addr,
                        "POST",
                        "/cam/whep",
                        &[("Content-Type", "application/sdp")],
                        OFFER.as_bytes(),
                    ) {
                        Ok((201, _, _)) => f.created += 1,
                        Ok((429, headers, _)) => {
                            f.too_many += 1;
                            let retry = headers
                                .iter()
                                .find(|(k, _)| k == "retry-after")
                                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
                            if retry.is_some_and(|s| s >= 1) {
                                f.retry_after += 1;
                            }
                        }
                        Ok((status, _, body)) => f
                            .other
                            .push(format!("{status} {}", String::from_utf8_lossy(&body))),
                        Err(e) => f.other.push(format!("POST: {e}")),
                    }
                }
                f
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("flood thread"))
        .collect();
    let mut all = Flood {
        elapsed: t0.elapsed(),
        ..Flood::default()
    };
    for f in results {
        all.created += f.created;
        all.too_many += f.too_many;
        all.retry_after += f.retry_after;
        all.other.extend(f.other);
    }
    all
}

/// Samples the gateway's VmRSS every 50 ms until stopped; the peak in KiB.
fn rss_peak(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// Polls until the API lists no WebRTC session (at most `within`); the
/// time it took.
fn until_no_sessions(gw: &mut Gateway, within: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = poll_until(within, Duration::from_millis(100), || {
        (webrtc_sessions(gw) == 0).then_some(())
    });
    if ok.is_none() {
        gw.fail(&format!(
            "{} WebRTC sessions still listed {within:?} after the flood",
            webrtc_sessions(gw)
        ));
    }
    t0.elapsed()
}

/// One flood of `n` POSTs that never do ICE and what it left: returns
/// (flood, seconds until 0 sessions, RSS before/peak/after 15 s in KiB).
fn flood_and_settle(gw: &mut Gateway, n: usize) -> (Flood, Duration, [u64; 3]) {
    let pid = gw.pid().expect("the gateway runs");
    let before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = rss_peak(pid, stop.clone());
    let flood = whep_flood(http_addr(gw), n, 8);
    let flood_end = Instant::now();
    println!(
        "  {} sessions listed right after the flood",
        webrtc_sessions(gw)
    );
    until_no_sessions(gw, Duration::from_secs(15));
    let gone_after = flood_end.elapsed();
    thread::sleep(Duration::from_secs(15).saturating_sub(flood_end.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().expect("rss thread");
    let after = rss_kib(pid);
    if std::env::var_os("TRIM_GDB").is_some() {
        let _ = std::process::Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "call (int)malloc_trim(0)",
            ])
            .output();
        println!(
            "  after malloc_trim(0): {:.1} MB",
            rss_kib(pid) as f64 / 1024.0
        );
    }
    (flood, gone_after, [before, peak, after])
}

/// 300 WHEP POSTs with the POST rate raised: all get 201, none ever does
/// ICE; all are gone from the API within the connect timeout (10 s) and
/// RSS is back within 10 MB of where it started 15 s after the flood. A
/// second flood shows the memory is reused, not grown.
#[test]
fn whep_flood_without_ice_leaves_nothing() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = gateway(&cam, "webrtc_post_rate = 1000\nwebrtc_max_sessions = 5000");
    // One session made and ended first, so lazily built state (the path's
    // packetizer, thread-local buffers) is in the baseline.
    let (status, headers, _) = whep::http(
        http_addr(&gw),
        "POST",
        "/cam/whep",
        &[("Content-Type", "application/sdp")],
        OFFER.as_bytes(),
    )
    .expect("warm-up POST");
    assert_eq!(status, 201);
    if let Some((_, loc)) = headers.iter().find(|(k, _)| k == "location") {
        let _ = whep::http(http_addr(&gw), "DELETE", loc, &[], b"");
    }
    until_no_sessions(&mut gw, Duration::from_secs(5));
    let start = rss_kib(gw.pid().expect("the gateway runs"));
    for round in 1..=2 {
        let (flood, gone, [before, peak, after]) = flood_and_settle(&mut gw, 300);
        println!(
            "WHEP flood {round}: {} created, {} refused, in {:.2} s; 0 sessions listed {:.1} s after the flood; RSS before {:.1} MB, peak {:.1} MB, 15 s after {:.1} MB",
            flood.created,
            flood.too_many + flood.other.len(),
            flood.elapsed.as_secs_f64(),
            gone.as_secs_f64(),
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
            after as f64 / 1024.0,
        );
        assert_eq!(flood.created, 300, "every POST gets 201: {flood:?}");
        assert!(
            after <= start + 10 * 1024,
            "RSS {after} KiB 15 s after flood {round}, was {start} KiB before the first"
        );
    }
    gw.assert_no_panic();
}

/// The same flood with the default `webrtc_post_rate` (50 a second, burst
/// of 50): most POSTs get 429 with Retry-After, what was created stays
/// within the rate, the rate refills, and no session is left over.
#[test]
fn whep_flood_at_the_default_post_rate_gets_429() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = gateway(&cam, "");
    let flood = whep_flood(http_addr(&gw), 300, 8);
    let secs = flood.elapsed.as_secs_f64();
    println!(
        "WHEP flood at the default rate: {} created, {} got 429 ({} with Retry-After), {} other, in {secs:.2} s",
        flood.created,
        flood.too_many,
        flood.retry_after,
        flood.other.len()
    );
    assert!(flood.other.is_empty(), "{:?}", flood.other);
    // A burst of 50, then 50 a second.
    let most = 50 + (50.0 * secs).ceil() as usize;
    assert!(
        (50..=most).contains(&flood.created),
        "{} created in {secs:.2} s, want 50..={most}",
        flood.created
    );
    assert_eq!(flood.created + flood.too_many, 300);
    assert_eq!(
        flood.retry_after, flood.too_many,
        "every 429 says Retry-After"
    );
    assert!(flood.too_many >= 150, "{flood:?}");
    // The rate refills: a POST a second later is let through.
    thread::sleep(Duration::from_millis(1100));
    let (status, _, body) = whep::http(
        http_addr(&gw),
        "POST",
        "/cam/whep",
        &[("Content-Type", "application/sdp")],
        OFFER.as_bytes(),
    )
    .expect("POST");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let gone = until_no_sessions(&mut gw, Duration::from_secs(15));
    println!("  0 sessions listed {:.1} s later", gone.as_secs_f64());
}

/// The ICE-TCP address from a WHEP answer (`a=candidate ... tcptype passive`).
fn ice_tcp_addr(gw: &Gateway) -> SocketAddr {
    let (status, headers, body) = whep::http(
        http_addr(gw),
        "POST",
        "/cam/whep",
        &[("Content-Type", "application/sdp")],
        OFFER.as_bytes(),
    )
    .expect("POST");
    assert_eq!(status, 201);
    let answer = String::from_utf8_lossy(&body).into_owned();
    if let Some((_, loc)) = headers.iter().find(|(k, _)| k == "location") {
        let _ = whep::http(http_addr(gw), "DELETE", loc, &[], b"");
    }
    answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains("tcptype passive"))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
        })
        .unwrap_or_else(|| panic!("no ICE-TCP candidate in {answer}"))
}

/// ICE-TCP connections that never send a byte are closed by the gateway
/// after its first-packet timeout (10 s), while a witness plays on.
#[test]
fn silent_ice_tcp_connections_are_closed() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = gateway(&cam, "");
    let addr = ice_tcp_addr(&gw);
    let rt = rtsp_reader::runtime();
    let until = Instant::now() + Duration::from_secs(16);
    let reader = witness(&rt, &gw, until);
    thread::sleep(Duration::from_secs(1));
    let from = Instant::now();
    // Dripping nothing: a drip interval longer than the test.
    let conns: Vec<(TcpStream, Instant, Option<Duration>)> = (0..100)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            s.set_nonblocking(true).expect("non-blocking");
            (s, Instant::now(), None)
        })
        .collect();
    let mut conns = conns;
    let mut buf = [0u8; 64];
    let give_up = HEADER_TIMEOUT + MARGIN + Duration::from_secs(2);
    while from.elapsed() < give_up && conns.iter().any(|c| c.2.is_none()) {
        for (s, at, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            match s.read(&mut buf) {
                Ok(0) => *closed = Some(at.elapsed()),
                Err(e) if e.kind() != ErrorKind::WouldBlock => *closed = Some(at.elapsed()),
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let to = Instant::now();
    let rec = rt
        .block_on(reader)
        .expect("witness task")
        .unwrap_or_else(|e| gw.fail(&format!("witness: {e}")));
    let mut times: Vec<Duration> = conns.iter().filter_map(|c| c.2).collect();
    times.sort();
    let (frames, want) = assert_witness(&mut gw, &rec, from, to);
    println!(
        "silent ICE-TCP: {} connections, {} closed (first after {:.2} s, last {:.2} s); witness {frames} frames of {want:.0}",
        conns.len(),
        times.len(),
        times.first().map_or(0.0, Duration::as_secs_f64),
        times.last().map_or(0.0, Duration::as_secs_f64),
    );
    assert_eq!(
        times.len(),
        conns.len(),
        "silent ICE-TCP connections left open"
    );
    let first = times.first().copied().unwrap_or_default();
    let last = times.last().copied().unwrap_or_default();
    assert!(
        first >= Duration::from_secs(9) && last <= HEADER_TIMEOUT + MARGIN,
        "closed after {first:?}..{last:?}, want about 10 s"
    );
}

/// A trickle flood on a playing WHEP session: PATCHes up to the cap are
/// taken, the one past it gets 422 in plain words, and the viewer keeps
/// playing cleanly.
#[test]
fn trickle_flood_is_capped_and_the_viewer_plays_on() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = gateway(&cam, "");
    let addr = http_addr(&gw);
    let viewer = thread::spawn(move || {
        whep::play(
            addr,
            "cam",
            &whep::Opts::new(whep::Via::Udp, Duration::from_secs(8)),
        )
    });
    // The viewer's session, from the API.
    let id = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let v = gw.http_get("/api/v1/webrtc/sessions").ok()?.json().ok()?;
        v["sessions"][0]["id"].as_str().map(str::to_owned)
    })
    .unwrap_or_else(|| gw.fail("no WebRTC session listed"));
    thread::sleep(Duration::from_secs(2));
    let frag = |first: u16, n: u16| {
        (first..first + n)
            .map(|p| format!("a=candidate:{p} 1 udp 2122260223 192.0.2.7 {p} typ host\r\n"))
            .collect::<String>()
    };
    let patch = |body: String| {
        whep::http(
            addr,
            "PATCH",
            &format!("/cam/whep/{id}"),
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            body.as_bytes(),
        )
        .expect("PATCH")
    };
    let mut accepted = 0;
    let mut refused = None;
    for round in 0..20u16 {
        let (status, _, body) = patch(frag(40000 + round * 10, 10));
        match status {
            204 => accepted += 10,
            422 => {
                refused = Some(String::from_utf8_lossy(&body).into_owned());
                break;
            }
            s => panic!("PATCH {round}: {s} {}", String::from_utf8_lossy(&body)),
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("{accepted} trickled candidates all taken"));
    println!("trickle flood: {accepted} candidates taken, then 422: {refused}");
    assert_eq!(accepted, 60, "at most 64 candidates, in PATCHes of 10");
    assert!(refused.contains("at most 64"), "{refused}");
    let r = viewer.join().expect("viewer thread");
    r.assert_clean(FPS, 0.9, false);
    gw.assert_no_panic();
}
