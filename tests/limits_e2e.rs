//! End to end against the real binary: the connection caps of the TCP
//! listeners (`max_connections`, `max_connections_per_ip`) and the
//! descriptors kept in reserve for cameras.
//!
//! Needs the GStreamer camera's packages (see .ci/run).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{self, Via};
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);
const FPS: f64 = 25.0;

/// A TCP connection to 127.0.0.1:`port` from `from` (any address of
/// 127.0.0.0/8 is this machine, so one test can be several clients).
fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("bind");
        let c = s
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap_or_else(|e| panic!("connect to {port} from {from}: {e}"));
        let c = c.into_std().expect("std stream");
        c.set_nonblocking(false).expect("blocking");
        c
    })
}

/// Everything the gateway sends on `s` until it closes (or 3 s pass), and
/// how long it took.
fn read_all(s: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// Whether the gateway still holds `s` open: nothing to read yet, no EOF.
fn held(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

/// Opens `n` connections from `from` to `port` and checks the gateway
/// holds them all (none was refused).
fn fill(from: Ipv4Addr, port: u16, n: usize, what: &str) -> Vec<TcpStream> {
    let conns: Vec<TcpStream> = (0..n).map(|_| connect_from(from, port)).collect();
    thread::sleep(Duration::from_millis(300));
    let open = conns.iter().filter(|c| held(c)).count();
    assert_eq!(
        open, n,
        "{what}: {open} of {n} connections from {from} held"
    );
    conns
}

/// A metric's value from a `/metrics` text.
fn metric(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// With `max_connections = 20` and `max_connections_per_ip = 10`, on RTSP
/// and HTTP: one connection over the per-address cap is answered at once,
/// unread (RTSP `503`, HTTP `429`, both with `Retry-After`), so is one over
/// the total cap (`503` on both), and closed; the reader already playing
/// gets every frame meanwhile; once the flood is gone, a new reader plays.
#[test]
fn over_a_cap_the_extra_connection_is_answered_and_the_reader_plays_on() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let cfg = scratch_path("limits", "toml");
    std::fs::write(
        &cfg,
        format!(
            "max_connections = 20\nmax_connections_per_ip = 10\n\
             [paths.cam]\nsource = \"{}\"\n",
            cam.url()
        ),
    )
    .expect("write config");
    let mut gw = Gateway::start(["--config".to_owned(), cfg.display().to_string()]);
    gw.wait_live("cam", LIVE);
    let (rtsp, http) = (gw.rtsp_port(), gw.http_port());

    // The witness: a reader over TCP from 127.0.0.1 for 12 s.
    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    let start = Instant::now();
    let reader = rt.spawn(async move {
        rtsp_reader::read(&url, Via::Tcp, start + Duration::from_secs(12)).await
    });
    thread::sleep(Duration::from_secs(2));
    let flood_from = Instant::now();
    let one = Ipv4Addr::new(127, 0, 0, 1);

    // Per address: the reader's connection + 9 = 10 RTSP from 127.0.0.1;
    // 10 idle HTTP connections from 127.0.0.1.
    let mut flood = fill(one, rtsp, 9, "RTSP from the reader's address");
    flood.extend(fill(one, http, 10, "HTTP"));
    let t = Instant::now();
    let mut extra = connect_from(one, rtsp);
    let (rtsp_per_ip, rtsp_per_ip_took) = read_all(&mut extra);
    let mut extra = connect_from(one, http);
    // An HTTP client sends its request at once; the gateway answers
    // without reading it.
    let _ = extra.write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\n");
    let (http_per_ip, http_per_ip_took) = read_all(&mut extra);
    println!(
        "per address: RTSP answered in {rtsp_per_ip_took:?}: {rtsp_per_ip:?}; \
         HTTP in {http_per_ip_took:?}: {http_per_ip:?}"
    );
    assert!(
        rtsp_per_ip.starts_with("RTSP/1.0 503 ") && rtsp_per_ip.contains("\r\nRetry-After: 1\r\n"),
        "the 11th RTSP connection from one address: {rtsp_per_ip:?}"
    );
    assert!(
        http_per_ip.starts_with("HTTP/1.1 429 ") && http_per_ip.contains("\r\nRetry-After: 1\r\n"),
        "the 11th HTTP connection from one address: {http_per_ip:?}"
    );
    // Other addresses still get in: 10 more of each from 127.0.0.2 fill
    // the listeners to 20.
    let two = Ipv4Addr::new(127, 0, 0, 2);
    flood.extend(fill(two, rtsp, 10, "RTSP"));
    flood.extend(fill(two, http, 10, "HTTP"));
    let three = Ipv4Addr::new(127, 0, 0, 3);
    let mut extra = connect_from(three, rtsp);
    let (rtsp_total, rtsp_total_took) = read_all(&mut extra);
    let mut extra = connect_from(three, http);
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (http_total, http_total_took) = read_all(&mut extra);
    println!(
        "listener full: RTSP answered in {rtsp_total_took:?}: {rtsp_total:?}; \
         HTTP in {http_total_took:?}: {http_total:?}"
    );
    assert!(
        rtsp_total.starts_with("RTSP/1.0 503 ") && rtsp_total.contains("\r\nRetry-After: 1\r\n"),
        "the 21st RTSP connection: {rtsp_total:?}"
    );
    assert!(
        http_total.starts_with("HTTP/1.1 503 ")
            && http_total.contains("\r\nRetry-After: 1\r\n")
            && http_total.contains("\r\nConnection: close\r\n"),
        "the 21st HTTP connection: {http_total:?}"
    );
    for took in [
        rtsp_per_ip_took,
        http_per_ip_took,
        rtsp_total_took,
        http_total_took,
    ] {
        assert!(
            took < Duration::from_secs(1),
            "a refusal took {took:?}: answered and closed at once"
        );
    }
    // A flood of 40 more against the full listeners, all refused.
    let mut refused = 0;
    for i in 0..20u8 {
        for port in [rtsp, http] {
            let mut c = connect_from(Ipv4Addr::new(127, 0, 1, i), port);
            let (answer, _) = read_all(&mut c);
            refused += usize::from(answer.contains(" 503 "));
        }
    }
    assert_eq!(refused, 40, "every connection over the cap is refused");
    println!(
        "held {} flood connections; refusals took {:?} in all",
        flood.len(),
        t.elapsed()
    );
    // The flood stays open for a while; the witness reads on.
    thread::sleep(Duration::from_secs(3));
    let flood_to = Instant::now();
    drop(flood);

    let rec = rt
        .block_on(reader)
        .expect("reader task")
        .unwrap_or_else(|e| gw.fail(&format!("reader: {e}")));
    let v = rec.video().expect("video");
    let got = v.frames_between(flood_from, flood_to);
    let sent = (flood_to - flood_from).as_secs_f64() * FPS;
    println!(
        "witness: {got} frames during the flood of {:?} ({sent:.0} sent); {}",
        flood_to - flood_from,
        rec.summary()
    );
    assert_eq!(v.lost(), (0, 0), "{}", rec.summary());
    assert!(
        got as f64 >= sent * 0.95,
        "{got} frames during the flood, {sent:.0} sent: {}",
        rec.summary()
    );

    // The slots come back: a new reader plays, HTTP answers.
    let until = Instant::now() + Duration::from_secs(3);
    let url = gw.rtsp_url("cam");
    let rec = rt
        .block_on(rtsp_reader::read(&url, Via::Tcp, until))
        .unwrap_or_else(|e| gw.fail(&format!("a reader after the flood: {e}")));
    assert!(
        rec.video().map_or(0, |v| v.frames()) >= 60,
        "a reader after the flood: {}",
        rec.summary()
    );
    let m = gw.http_get("/metrics").expect("GET /metrics");
    assert_eq!(m.status, 200);
    let m = m.text();
    let get = |k: &str| metric(&m, k).unwrap_or_else(|| panic!("{k} not in /metrics:\n{m}"));
    let counts = [
        get("rtspgate_connections_refused_total{listener=\"rtsp\",reason=\"max_connections_per_ip\"}"),
        get("rtspgate_connections_refused_total{listener=\"rtsp\",reason=\"max_connections\"}"),
        get("rtspgate_connections_refused_total{listener=\"http\",reason=\"max_connections_per_ip\"}"),
        get("rtspgate_connections_refused_total{listener=\"http\",reason=\"max_connections\"}"),
    ];
    println!("refused (rtsp per ip, rtsp total, http per ip, http total): {counts:?}");
    assert_eq!(counts, [1, 21, 1, 21], "{m}");
    assert_eq!(get("rtspgate_connections_max{listener=\"rtsp\"}"), 20);
    assert!(gw.log().contains("rtsp listener: refusing new connections"));
    gw.assert_no_panic();
}

/// The port of the gateway's ICE-TCP listener, from its banner.
fn webrtc_port(gw: &Gateway) -> u16 {
    gw.log()
        .lines()
        .find_map(|l| l.split("WebRTC on UDP/TCP ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .expect("WebRTC port in the banner")
}

/// Keeps `port` full of idle connections (reopening those the gateway
/// closes, e.g. at the HTTP header timeout) until `stop`, trying `want`
/// at once; counts the connections the gateway refused.
fn flood(
    port: u16,
    want: usize,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    held_now: Arc<AtomicU64>,
) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while !stop.load(Ordering::Relaxed) {
        while conns.len() < want {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
        thread::sleep(Duration::from_millis(300));
        let before = conns.len();
        conns.retain(held);
        refused.fetch_add((before - conns.len()) as u64, Ordering::Relaxed);
        held_now.store(conns.len() as u64, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
    }
}

/// The gateway runs with an open-file limit of 256 (soft and hard, so it
/// can't raise it) and default caps; its RTSP, HTTP and ICE-TCP listeners
/// are flooded with idle connections until each refuses; the camera then
/// restarts: the source reconnects and goes live again during the flood
/// (its descriptors were kept in reserve), and a reader plays once the
/// flood ends.
#[test]
fn a_flood_up_to_the_file_limit_leaves_room_for_the_camera() {
    let _g = serial();
    require_tools();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let mut gw = Gateway::start_with_fd_limit(256, [format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);
    let lowered = gw
        .log()
        .lines()
        .find(|l| l.contains("caps are lowered to"))
        .map(str::to_owned)
        .unwrap_or_else(|| gw.fail("no log line saying the caps were lowered"));
    println!("{lowered}");
    let ports = [gw.rtsp_port(), gw.http_port(), webrtc_port(&gw)];
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> = ports
        .iter()
        .map(|_| (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))))
        .collect();
    let flooders: Vec<_> = ports
        .iter()
        .zip(&stats)
        .map(|(&port, (refused, held_now))| {
            let (stop, refused, held_now) = (stop.clone(), refused.clone(), held_now.clone());
            thread::spawn(move || flood(port, 150, stop, refused, held_now))
        })
        .collect();
    let flood_from = Instant::now();
    let full = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        stats
            .iter()
            .all(|(r, _)| r.load(Ordering::Relaxed) > 0)
            .then_some(())
    });
    let snapshot = |stats: &[(Arc<AtomicU64>, Arc<AtomicU64>)]| {
        stats
            .iter()
            .map(|(r, h)| (h.load(Ordering::Relaxed), r.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
    };
    if full.is_none() {
        stop.store(true, Ordering::Relaxed);
        gw.fail(&format!(
            "the listeners (rtsp, http, ice-tcp) never refused: (held, refused) {:?}",
            snapshot(&stats)
        ));
    }
    println!(
        "listeners full after {:?}: (held, refused) per rtsp, http, ice-tcp: {:?}",
        flood_from.elapsed(),
        snapshot(&stats)
    );

    let live_before = gw.log().matches("source live").count();
    let restarted = Instant::now();
    cam.restart();
    let again = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        (gw.log().matches("source live").count() > live_before).then_some(())
    });
    let took = restarted.elapsed();
    let during = snapshot(&stats);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().expect("flood thread");
    }
    println!(
        "camera restarted: source live again after {took:?} ({}), flood (held, refused): {during:?}",
        if again.is_some() { "yes" } else { "no" }
    );
    if again.is_none() {
        gw.fail("the source did not come back while the listeners were flooded");
    }
    assert!(
        during.iter().all(|&(held, _)| held > 0),
        "the flood still held connections when the source came back: {during:?}"
    );

    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    // The flood's connections are gone once the gateway sees them close.
    let rec = poll_until(Duration::from_secs(10), Duration::from_millis(300), || {
        rt.block_on(rtsp_reader::read(
            &url,
            Via::Tcp,
            Instant::now() + Duration::from_secs(3),
        ))
        .ok()
    })
    .unwrap_or_else(|| gw.fail("no reader played after the flood"));
    let frames = rec.video().map_or(0, |v| v.frames());
    println!("a reader after the flood: {}", rec.summary());
    assert!(frames >= 60, "{}", rec.summary());
    let log = gw.log();
    assert!(
        !log.contains("Too many open files"),
        "the gateway ran out of descriptors"
    );
    gw.wait_live("cam", LIVE);
}
