//! rtspgate side by side with real peers, on the same camera in the same run.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench
//! ```
//!
//! Options: `--sections rtsp,webrtc,ingest,hls,ttff,transcode` (default: all),
//! `--seconds W` (measurement window per point, default 10),
//! `--readers 1,50,200,500`, `--viewers 1,50,200`, `--cameras 1,20,100`,
//! `--chromium-runs 5`, `--no-peers` (rtspgate only, for profiling),
//! `--markdown FILE` (also write the tables there). For profiles,
//! `BENCH_GATEWAY_WRAPPER="perf record -g -o FILE"` (or heaptrack, valgrind)
//! runs every rtspgate under that command.
//!
//! One camera process (testkit/camera.py --mounts M: ONE x264 encoder of
//! noise, 960x540 25 fps ~2 Mbit/s, served by one GstRtspServer on mounts
//! /test0../testM-1) feeds every section:
//!
//! 1. **RTSP fan-out** to N RTSP/TCP readers (examples/bench/rtsp_reader.rs),
//!    through rtspgate and through a GStreamer RTSP relay
//!    (examples/bench/relay.py). Figures: the relay's CPU seconds over the
//!    window (/proc/PID/stat utime+stime), RSS (VmRSS), packets lost
//!    (RTP sequence gaps), frames missing (access units read directly from
//!    the camera that a reader never got), and the latency each access
//!    unit gained: its last packet's arrival at a reader minus its arrival
//!    at a reader of the camera itself (same process, same clock).
//! 2. **WebRTC fan-out** to N str0m viewers (testkit/src/whep.rs): rtspgate
//!    over WHEP vs Janus's streaming plugin over its HTTP API. Both run in
//!    a network namespace the benchmark creates (Janus gathers no ICE
//!    candidates on loopback), behind the same veth pair.
//! 3. **Ingest**: M camera mounts, no viewers: rtspgate vs GStreamer
//!    (rtspsrc ! rtph264depay per camera, one process) vs Janus (one RTSP
//!    mountpoint per camera).
//! 4. **LL-HLS** part latency (examples/bench/hls.rs, as
//!    examples/bench/hls_latency.rs).
//! 5. **Time to first frame** in headless Chromium: WHEP
//!    (tests/browser/whep_play.mjs) vs Janus (tests/browser/janus_play.mjs).
//!
//! Needs root for `ip netns` (sections 2 and 5, and Janus in 3); without
//! it those parts are skipped with the reason. All traffic stays on
//! 127.0.0.1 and the namespace's veth pair (10.200.0.0/30); every process
//! started is killed and the namespace deleted on exit and on Ctrl-C.

mod hls;
mod janus;
mod procs;
mod rtsp_reader;
mod transcode;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procs::{NetNs, Proc};
use testkit::procstat::{self, CpuWindow};
use testkit::whep;

const SECTIONS: [&str; 6] = ["rtsp", "webrtc", "ingest", "hls", "ttff", "transcode"];

struct Args {
    sections: Vec<String>,
    seconds: u64,
    readers: Vec<usize>,
    viewers: Vec<usize>,
    cameras: Vec<usize>,
    chromium_runs: usize,
    peers: bool,
    markdown: Option<PathBuf>,
    bitrate: u32,
    size: String,
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    procs::cleanup_all();
    std::process::exit(2);
}

fn list(v: &str, what: &str) -> Vec<usize> {
    v.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| die(&format!("{what}: numbers, e.g. 1,50")))
        })
        .collect()
}

fn parse_args() -> Args {
    let mut a = Args {
        sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
        seconds: 10,
        readers: vec![1, 50, 200, 500],
        viewers: vec![1, 50, 200],
        cameras: vec![1, 20, 100],
        chromium_runs: 5,
        peers: true,
        markdown: None,
        bitrate: 2000,
        size: "960x540".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--sections" => {
                a.sections = v().split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = a.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    die(&format!(
                        "unknown section {bad}; sections: {}",
                        SECTIONS.join(",")
                    ));
                }
            }
            "--seconds" => a.seconds = v().parse().unwrap_or_else(|_| die("--seconds: a number")),
            "--readers" => a.readers = list(&v(), "--readers"),
            "--viewers" => a.viewers = list(&v(), "--viewers"),
            "--cameras" => a.cameras = list(&v(), "--cameras"),
            "--chromium-runs" => {
                a.chromium_runs = v()
                    .parse()
                    .unwrap_or_else(|_| die("--chromium-runs: a number"))
            }
            "--no-peers" => a.peers = false,
            "--markdown" => a.markdown = Some(PathBuf::from(v())),
            "--bitrate" => a.bitrate = v().parse().unwrap_or_else(|_| die("--bitrate: kbit/s")),
            "--size" => a.size = v(),
            "-h" | "--help" => {
                println!("{}", HELP);
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument {k} (--help)")),
        }
    }
    a
}

const HELP: &str =
    "cargo run --release --example bench -- [--sections rtsp,webrtc,ingest,hls,ttff,transcode] \
[--seconds 10] [--readers 1,50,200,500] [--viewers 1,50,200] [--cameras 1,20,100] \
[--chromium-runs 5] [--no-peers] [--markdown FILE] [--bitrate 2000] [--size 960x540]";

/// Everything printed, also kept for --markdown.
struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    // `+ 0.0` turns -0.0 into 0.0 for printing.
    v[((v.len() - 1) as f64 * p).round() as usize] + 0.0
}

/// One decimal, never "-0.0".
fn f1(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0 + 0.0;
    format!("{r:.1}")
}

fn ratio(peer: f64, ours: f64) -> String {
    if ours > 0.0 && peer.is_finite() && ours.is_finite() {
        format!("{:.2}", peer / ours)
    } else {
        "–".into()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- camera

struct Camera {
    _proc: Proc,
    /// `rtsp://ADDR:PORT/test`; mount i is this plus i.
    base: String,
}

impl Camera {
    fn start(addr: Ipv4Addr, mounts: usize, a: &Args) -> Camera {
        let (width, height) = a
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or_else(|| die("--size: WxH, e.g. 960x540"));
        let opts = testkit::CameraOpts {
            address: addr.to_string(),
            mounts: mounts as u32,
            pattern: "snow".into(),
            width,
            height,
            bitrate_kbps: a.bitrate,
            fps: 25,
            gop: 25,
            ..Default::default()
        };
        let mut cmd = opts.command(0);
        procs::stdio_null(&mut cmd);
        let (proc, base) = Proc::spawn_ready("camera.py", &mut cmd, Duration::from_secs(20))
            .unwrap_or_else(|e| {
                die(&format!(
                    "{e} (needs /usr/bin/python3 with GStreamer, see .ci/run)"
                ))
            });
        Camera { _proc: proc, base }
    }

    fn url(&self, i: usize) -> String {
        format!("{}{i}", self.base)
    }
}

// ---------------------------------------------------------------- rtspgate

struct Gateway {
    proc: Proc,
    /// The rtspgate process itself (a descendant of `proc` under a
    /// profiling wrapper, else `proc`).
    pid: u32,
    http: SocketAddr,
    rtsp: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.pid != self.proc.pid() {
            // Under a profiler: stop rtspgate alone and let the wrapper
            // write its data before the process group is killed.
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.proc.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Gateway {
    /// rtspgate serving `cams` as cam0.. (or `cam` for one camera), on
    /// 127.0.0.1 or inside `ns`.
    fn start(cams: &[String], ns: Option<&NetNs>) -> Result<Gateway, String> {
        let bin = testkit::gateway::try_gateway_bin()?;
        let (ip, rtsp, http, rtp, webrtc) = match ns {
            // A fresh namespace: every port is free.
            Some(ns) => (ns.peer, 8554, 8888, 8000, 8189),
            None => (
                Ipv4Addr::LOCALHOST,
                testkit::free_port_on(Ipv4Addr::LOCALHOST),
                testkit::free_port_on(Ipv4Addr::LOCALHOST),
                testkit::free_udp_port_pair().0,
                testkit::free_udp_tcp_port(),
            ),
        };
        // Profiling aid: BENCH_GATEWAY_WRAPPER="perf record -g -o /tmp/p.data"
        // runs the gateway under that command (figures then include the
        // profiler's overhead: only use it for profiles).
        let wrapper: Vec<String> = std::env::var("BENCH_GATEWAY_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let program = match wrapper.first() {
            Some(w) => PathBuf::from(w),
            None => bin.clone(),
        };
        let mut cmd = match ns {
            Some(ns) => ns.command(&program),
            None => Command::new(&program),
        };
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg(&bin);
        }
        cmd.args(["--listen", &ip.to_string()])
            .args(["--rtsp-port", &rtsp.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(["--rtp-port", &rtp.to_string()])
            .args(["--webrtc-port", &webrtc.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        procs::stdio_null(&mut cmd);
        if cams.len() == 1 {
            cmd.arg(format!("cam={}", cams[0]));
        } else {
            for (i, c) in cams.iter().enumerate() {
                cmd.arg(format!("cam{i}={c}"));
            }
        }
        let proc = Proc::spawn("rtspgate", &mut cmd)?;
        let mut pid = proc.pid();
        if !wrapper.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(p) = procs::descendant_named(proc.pid(), "rtspgate") {
                    pid = p;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let g = Gateway {
            proc,
            pid,
            http: SocketAddr::from((ip, http)),
            rtsp: SocketAddr::from((ip, rtsp)),
        };
        g.wait_live(cams.len(), Duration::from_secs(30))?;
        Ok(g)
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// Streams live among the first `n` paths (`cam`, or `cam0`..),
    /// asked one by one: `GET /api/v1/streams/<name>` needs only `read`,
    /// which anyone has by default, where the list needs `api` (loopback
    /// only, and the gateway may run in a namespace).
    fn live_count(&self, n: usize) -> usize {
        let names: Vec<String> = if n == 1 {
            vec!["cam".into()]
        } else {
            (0..n).map(|i| format!("cam{i}")).collect()
        };
        names
            .iter()
            .filter(|name| {
                whep::http(
                    self.http,
                    "GET",
                    &format!("/api/v1/streams/{name}"),
                    &[],
                    b"",
                )
                .ok()
                .is_some_and(|(_, _, body)| {
                    String::from_utf8_lossy(&body).contains("\"state\":\"live\"")
                })
            })
            .count()
    }

    fn wait_live(&self, n: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live_count(n);
            if live >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("rtspgate: only {live} of {n} streams went live"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------- 1. RTSP fan-out

#[derive(Default)]
struct FanoutPoint {
    playing: usize,
    cpu_s: f64,
    wall_s: f64,
    rss_kib: u64,
    packets: u64,
    bytes: u64,
    lost: u64,
    frames_expected: u64,
    frames_missing: u64,
    latency_ms: Vec<f64>,
    errors: Vec<String>,
}

fn signed_ms(t: Instant, t0: Instant) -> f64 {
    if t >= t0 {
        t.duration_since(t0).as_secs_f64() * 1000.0
    } else {
        -(t0.duration_since(t).as_secs_f64() * 1000.0)
    }
}

async fn rtsp_point(
    target: &str,
    camera: &str,
    n: usize,
    pid: u32,
    tck: f64,
    window: Duration,
) -> FanoutPoint {
    let direct = rtsp_reader::Readers::start(camera, 1, 1).await;
    let readers = rtsp_reader::Readers::start(target, n, 32).await;
    direct.wait_playing(Duration::from_secs(20)).await;
    let playing = readers.wait_playing(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = readers.totals();
    let ws = Instant::now();
    let cpu = CpuWindow::start(&[pid], tck);
    tokio::time::sleep(window).await;
    let (cpu_s, wall_s) = cpu.end();
    let rss_kib = procstat::rss_kib(pid);
    let after = readers.totals();
    let we = Instant::now();
    // Let the last access units of the window reach every reader.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut p = FanoutPoint {
        playing,
        cpu_s,
        wall_s,
        rss_kib,
        packets: after.0 - before.0,
        lost: after.1 - before.1,
        bytes: after.2 - before.2,
        errors: readers.errors(),
        ..Default::default()
    };
    let direct_marks: HashMap<u64, Instant> = direct.stats[0]
        .marks
        .lock()
        .map(|m| m.iter().copied().collect())
        .unwrap_or_default();
    // Access units the camera sent during the window (but not in its last
    // 300 ms, which may still be on their way).
    let expected: Vec<u64> = direct_marks
        .iter()
        .filter(|(_, t)| **t >= ws && **t + Duration::from_millis(300) <= we)
        .map(|(k, _)| *k)
        .collect();
    for s in &readers.stats {
        let marks = s.marks.lock().map(|m| m.clone()).unwrap_or_default();
        let seen: HashSet<u64> = marks.iter().map(|(k, _)| *k).collect();
        for (k, t) in &marks {
            if *t >= ws && *t <= we {
                if let Some(t0) = direct_marks.get(k) {
                    p.latency_ms.push(signed_ms(*t, *t0));
                }
            }
        }
        if s.playing.load(Ordering::Relaxed) {
            p.frames_expected += expected.len() as u64;
            p.frames_missing += expected.iter().filter(|k| !seen.contains(k)).count() as u64;
        }
    }
    readers.stop().await;
    direct.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    p
}

fn fanout_row(name: &str, n: usize, p: &mut FanoutPoint) -> String {
    let missing = if p.frames_expected > 0 {
        100.0 * p.frames_missing as f64 / p.frames_expected as f64
    } else {
        f64::NAN
    };
    format!(
        "| {name} | {n} | {}/{n} | {:.2} | {:.1} | {:.1} | {:.0} | {} / {} | {:.2} | {} | {} |",
        p.playing,
        p.cpu_s,
        100.0 * p.cpu_s / p.wall_s.max(1e-9),
        mib(p.rss_kib),
        p.bytes as f64 * 8.0 / p.wall_s.max(1e-9) / 1e6,
        p.lost,
        p.packets,
        missing,
        f1(pct(&mut p.latency_ms, 0.5)),
        f1(pct(&mut p.latency_ms, 0.99)),
    )
}

async fn section_rtsp(a: &Args, cam: &Camera, r: &mut Report, tck: f64) {
    let w = Duration::from_secs(a.seconds);
    r.line("");
    r.line(format!(
        "### 1. RTSP fan-out: one H.264 camera ({} ~{} kbit/s, 25 fps) to N RTSP/TCP readers, {} s window",
        a.size, a.bitrate, a.seconds
    ));
    r.line("");
    r.line("| server | N | playing | CPU s | CPU % core | RSS MiB | Mbit/s out | packets lost / received | frames missing % | added latency p50 ms | p99 ms |");
    r.line("|---|---|---|---|---|---|---|---|---|---|---|");
    let camera_url = cam.url(0);
    let mut ours: Vec<(f64, u64, f64, f64)> = Vec::new();
    let mut theirs: Vec<(f64, u64, f64, f64)> = Vec::new();
    match Gateway::start(std::slice::from_ref(&camera_url), None) {
        Ok(g) => {
            let url = format!("rtsp://{}/cam", g.rtsp);
            for &n in &a.readers {
                let mut p = rtsp_point(&url, &camera_url, n, g.pid(), tck, w).await;
                r.line(fanout_row("rtspgate", n, &mut p));
                for e in p.errors.iter().take(1) {
                    r.line(format!(
                        "|  | {} reader(s) failed, e.g.: {e} |",
                        p.errors.len()
                    ));
                }
                ours.push((
                    p.cpu_s,
                    p.rss_kib,
                    pct(&mut p.latency_ms, 0.5),
                    pct(&mut p.latency_ms, 0.99),
                ));
            }
        }
        Err(e) => r.line(format!("| rtspgate | – | failed to start: {e} |")),
    }
    if a.peers {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(testkit::repo_root().join("examples/bench/relay.py"))
            .args(["--source", &camera_url]);
        procs::stdio_null(&mut cmd);
        match Proc::spawn_ready("relay.py", &mut cmd, Duration::from_secs(20)) {
            Ok((relay, url)) => {
                for &n in &a.readers {
                    let mut p = rtsp_point(&url, &camera_url, n, relay.pid(), tck, w).await;
                    r.line(fanout_row("GStreamer relay", n, &mut p));
                    for e in p.errors.iter().take(1) {
                        r.line(format!(
                            "|  | {} reader(s) failed, e.g.: {e} |",
                            p.errors.len()
                        ));
                    }
                    theirs.push((
                        p.cpu_s,
                        p.rss_kib,
                        pct(&mut p.latency_ms, 0.5),
                        pct(&mut p.latency_ms, 0.99),
                    ));
                }
            }
            Err(e) => r.line(format!("| GStreamer relay | – | failed to start: {e} |")),
        }
    }
    if !theirs.is_empty() && theirs.len() == ours.len() {
        r.line("");
        r.line("GStreamer relay ÷ rtspgate (above 1: rtspgate better):");
        r.line("");
        r.line("| N | CPU | RSS | added latency p50, ms (GStreamer / rtspgate) | p99 |");
        r.line("|---|---|---|---|---|");
        for (i, &n) in a.readers.iter().enumerate() {
            let (o, t) = (ours[i], theirs[i]);
            r.line(format!(
                "| {n} | {} | {} | {} / {} | {} / {} |",
                ratio(t.0, o.0),
                ratio(t.1 as f64, o.1 as f64),
                f1(t.2),
                f1(o.2),
                f1(t.3),
                f1(o.3)
            ));
        }
    }
}

// ---------------------------------------------------------------- 2. WebRTC fan-out

#[derive(Clone, Copy)]
enum Peer<'a> {
    Rtspgate(&'a Gateway),
    Janus(&'a janus::Janus),
}

impl Peer<'_> {
    fn pid(&self) -> u32 {
        match self {
            Peer::Rtspgate(g) => g.pid(),
            Peer::Janus(j) => j.pid(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Peer::Rtspgate(_) => "rtspgate",
            Peer::Janus(_) => "Janus",
        }
    }
}

struct WebrtcPoint {
    n: usize,
    playing: usize,
    cpu_s: f64,
    wall_s: f64,
    rss_kib: u64,
    fps: f64,
    nacks: u64,
    first_ms: f64,
    /// rtspgate only: packets it dropped because its UDP send buffer was
    /// full, during this point.
    dropped: Option<u64>,
    errors: Vec<String>,
}

/// rtspgate's count of packets dropped on a full UDP send buffer.
fn gateway_dropped(http: SocketAddr) -> Option<u64> {
    whep::http(http, "GET", "/api/v1/webrtc/sessions", &[], b"")
        .ok()
        .and_then(|(_, _, b)| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["dropped_packets"].as_u64())
}

fn webrtc_point(peer: Peer, host: Ipv4Addr, n: usize, tck: f64, window: Duration) -> WebrtcPoint {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let opts = whep::Opts {
        stop: Some(stop.clone()),
        progress: Some(progress.clone()),
        bind: IpAddr::V4(host),
        ..whep::Opts::new(whep::Via::Udp, Duration::from_secs(180))
    };
    let http = match peer {
        Peer::Rtspgate(g) => g.http,
        Peer::Janus(j) => j.api,
    };
    let is_janus = matches!(peer, Peer::Janus(_));
    let dropped_before = if is_janus {
        None
    } else {
        gateway_dropped(http)
    };
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let opts = opts.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = if is_janus {
                    janus::view(http, 1, &opts)
                } else {
                    whep::play(http, "cam", &opts)
                };
                (r, t, Instant::now())
            })
        })
        .collect();
    // Wait for every viewer's first frame (or failure), then let the
    // start-up burst pass before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let done = handles.iter().filter(|h| h.is_finished()).count();
        if progress.load(Ordering::Relaxed) + done >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = peer.pid();
    let cpu = CpuWindow::start(&[pid], tck);
    std::thread::sleep(window);
    let (cpu_s, wall_s) = cpu.end();
    let rss_kib = procstat::rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    let mut first = Vec::new();
    let mut fps = Vec::new();
    let mut errors = Vec::new();
    let mut nacks = 0;
    let mut playing = 0;
    for (r, t0, t1) in &results {
        if let Some(e) = &r.error {
            errors.push(e.clone());
        }
        nacks += r.nacks;
        if let Some(fk) = r.first_keyframe {
            first.push(fk.as_secs_f64() * 1000.0);
        }
        if let Some(ff) = r.first_frame {
            playing += 1;
            let secs = t1.saturating_duration_since(*t0 + ff).as_secs_f64();
            if secs > 1.0 {
                fps.push(r.video_frames as f64 / secs);
            }
        }
    }
    let dropped = dropped_before.and_then(|b| Some(gateway_dropped(http)?.saturating_sub(b)));
    // Let sessions close before the next point.
    std::thread::sleep(Duration::from_secs(2));
    WebrtcPoint {
        n,
        playing,
        cpu_s,
        wall_s,
        rss_kib,
        fps: pct(&mut fps, 0.5),
        nacks,
        first_ms: pct(&mut first, 0.5),
        dropped,
        errors,
    }
}

fn idle(pid: u32, tck: f64) -> (f64, u64) {
    let w = CpuWindow::start(&[pid], tck);
    std::thread::sleep(Duration::from_secs(3));
    let (c, s) = w.end();
    (100.0 * c / s, procstat::rss_kib(pid))
}

fn webrtc_rows(peer: Peer, host: Ipv4Addr, a: &Args, tck: f64, r: &mut Report) -> Vec<WebrtcPoint> {
    let (idle_cpu, idle_rss) = idle(peer.pid(), tck);
    r.line(format!(
        "| {} | 0 (idle) | – | – | {idle_cpu:.1} | – | {:.1} | – | – | – | – |",
        peer.name(),
        mib(idle_rss)
    ));
    let mut out = Vec::new();
    for &n in &a.viewers {
        let p = webrtc_point(peer, host, n, tck, Duration::from_secs(a.seconds));
        let cpu_pct = 100.0 * p.cpu_s / p.wall_s.max(1e-9);
        r.line(format!(
            "| {} | {n} | {}/{n} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} | {:.1} | {} | {:.0} |",
            peer.name(),
            p.playing,
            p.cpu_s,
            cpu_pct,
            (cpu_pct - idle_cpu) / n.max(1) as f64,
            mib(p.rss_kib),
            p.rss_kib.saturating_sub(idle_rss) as f64 / n.max(1) as f64,
            p.fps,
            p.nacks,
            p.first_ms,
        ));
        if let Some(e) = p.errors.first() {
            r.line(format!(
                "|  | {} viewer(s) failed, e.g.: {e} |",
                p.errors.len()
            ));
        }
        if let Some(d) = p.dropped.filter(|d| *d > 0) {
            r.line(format!(
                "|  | rtspgate dropped {d} packets on a full UDP send buffer (repaired by NACK/RTX) |"
            ));
        }
        out.push(p);
    }
    out
}

// ---------------------------------------------------------------- 5. first frame in Chromium

fn node_json(args: &[String]) -> Result<serde_json::Value, String> {
    let out = Command::new("timeout")
        .arg("60")
        .arg("node")
        .args(args)
        .output()
        .map_err(|e| format!("node: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no result: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

fn chromium_missing() -> Option<String> {
    let dir = testkit::repo_root().join("tests/browser");
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Some("no /usr/bin/chromium (apt-get install chromium)".into());
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some("no playwright-core (npm ci --prefix tests/browser)".into());
    }
    None
}

/// POST/watch → first decoded frame, ms, over `runs` Chromium runs.
fn ttff(peer: Peer, runs: usize) -> (Vec<f64>, Vec<String>) {
    let dir = testkit::repo_root().join("tests/browser");
    let mut first = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..runs {
        let args: Vec<String> = match peer {
            Peer::Rtspgate(g) => vec![
                dir.join("whep_play.mjs").display().to_string(),
                "--page".into(),
                format!("http://{}/api/v1/streams", g.http),
                "--url".into(),
                format!("http://{}/cam/whep", g.http),
                "--seconds".into(),
                "2".into(),
                "--delete".into(),
            ],
            Peer::Janus(j) => vec![
                dir.join("janus_play.mjs").display().to_string(),
                "--api".into(),
                format!("http://{}/janus", j.api),
                "--id".into(),
                "1".into(),
                "--seconds".into(),
                "2".into(),
            ],
        };
        match node_json(&args) {
            Ok(v) => match v["viewers"][0]["firstFrameMs"].as_f64() {
                Some(f) => first.push(f),
                None => errors.push(format!("{}", v["viewers"][0]["error"])),
            },
            Err(e) => errors.push(e),
        }
    }
    (first, errors)
}

fn ttff_row(name: &str, what: &str, mut v: Vec<f64>, errors: &[String]) -> String {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = format!(
        "| {name} | {what} | {} | {:.0} | {:.0} | {:.0} |",
        v.len(),
        min,
        pct(&mut v, 0.5),
        max
    );
    if let Some(e) = errors.first() {
        let _ = write!(s, " {} failed, e.g. {e}", errors.len());
    }
    s
}

// ---------------------------------------------------------------- 2 + 5 together

fn section_webrtc(a: &Args, cam: &Camera, ns: Result<&NetNs, &str>, r: &mut Report, tck: f64) {
    let want_webrtc = a.sections.iter().any(|s| s == "webrtc");
    let want_ttff = a.sections.iter().any(|s| s == "ttff");
    let ns = match ns {
        Ok(ns) => ns,
        Err(why) => {
            r.line("");
            r.line(format!("### 2./5. WebRTC: skipped: {why}"));
            return;
        }
    };
    let chromium = chromium_missing();
    let janus_missing = janus::missing();
    let mut ttff_lines = Vec::new();
    if want_webrtc {
        r.line("");
        r.line(format!(
            "### 2. WebRTC fan-out: N str0m viewers (UDP, SRTP decrypted and depacketized), {} s window; servers in a network namespace behind one veth pair",
            a.seconds
        ));
        r.line("");
        r.line("| server | viewers | playing | CPU s | CPU % core | CPU %/viewer over idle | RSS MiB | KiB/viewer over idle | fps/viewer p50 | NACKs sent | first keyframe ms p50 |");
        r.line("|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    match Gateway::start(&[cam.url(0)], Some(ns)) {
        Ok(g) => {
            if want_webrtc {
                ours = webrtc_rows(Peer::Rtspgate(&g), ns.host, a, tck, r);
            }
            if want_ttff && chromium.is_none() {
                let (v, e) = ttff(Peer::Rtspgate(&g), a.chromium_runs);
                ttff_lines.push(ttff_row(
                    "rtspgate",
                    "WHEP POST → first decoded frame",
                    v,
                    &e,
                ));
            }
        }
        Err(e) => r.line(format!("| rtspgate | – | failed to start: {e} |")),
    }
    if a.peers {
        match &janus_missing {
            Some(why) => r.line(format!("| Janus | – | skipped: {why} |")),
            None => match janus::Janus::start(ns, &[cam.url(0)]) {
                Ok(j) => {
                    if j.wait_media(1, Duration::from_secs(20)) < 1 {
                        r.line(format!(
                            "| Janus | – | its mountpoint got no media ({}) |",
                            j.log_tail()
                        ));
                    } else {
                        if want_webrtc {
                            theirs = webrtc_rows(Peer::Janus(&j), ns.host, a, tck, r);
                        }
                        if want_ttff && chromium.is_none() {
                            let (v, e) = ttff(Peer::Janus(&j), a.chromium_runs);
                            ttff_lines.push(ttff_row(
                                "Janus",
                                "`watch` request → first decoded frame",
                                v,
                                &e,
                            ));
                        }
                    }
                }
                Err(e) => r.line(format!("| Janus | – | failed to start: {e} |")),
            },
        }
    }
    if !ours.is_empty() && ours.len() == theirs.len() {
        r.line("");
        r.line("Janus ÷ rtspgate (above 1: rtspgate better):");
        r.line("");
        r.line("| viewers | CPU | RSS | NACKs |");
        r.line("|---|---|---|---|");
        for (o, t) in ours.iter().zip(&theirs) {
            r.line(format!(
                "| {} | {} | {} | {} / {} |",
                o.n,
                ratio(t.cpu_s, o.cpu_s),
                ratio(t.rss_kib as f64, o.rss_kib as f64),
                t.nacks,
                o.nacks
            ));
        }
    }
    if want_ttff {
        r.line("");
        r.line(format!(
            "### 5. Time to first frame in headless Chromium ({} runs each)",
            a.chromium_runs
        ));
        r.line("");
        if let Some(why) = chromium {
            r.line(format!("skipped: {why}"));
        } else {
            r.line("| server | measured | runs | min ms | p50 ms | max ms |");
            r.line("|---|---|---|---|---|---|");
            for l in ttff_lines {
                r.line(l);
            }
        }
    }
}

// ---------------------------------------------------------------- 3. ingest

fn ingest_row(name: &str, m: usize, live: usize, cpu_s: f64, wall_s: f64, rss: u64) -> String {
    let cpu_pct = 100.0 * cpu_s / wall_s.max(1e-9);
    format!(
        "| {name} | {m} | {live}/{m} | {cpu_s:.2} | {cpu_pct:.1} | {:.2} | {:.1} | {:.0} |",
        cpu_pct / m.max(1) as f64,
        mib(rss),
        rss as f64 / m.max(1) as f64
    )
}

fn measure_pid(pid: u32, tck: f64, settle: Duration, window: Duration) -> (f64, f64, u64) {
    std::thread::sleep(settle);
    let w = CpuWindow::start(&[pid], tck);
    std::thread::sleep(window);
    let (c, s) = w.end();
    (c, s, procstat::rss_kib(pid))
}

fn section_ingest(a: &Args, cam: &Camera, ns: Result<&NetNs, &str>, r: &mut Report, tck: f64) {
    let window = Duration::from_secs(a.seconds);
    let settle = Duration::from_secs(2);
    r.line("");
    r.line(format!(
        "### 3. Ingest: M camera mounts of one GStreamer server, no viewers, {} s window",
        a.seconds
    ));
    r.line("");
    r.line(
        "| server | cameras | live | CPU s | CPU % core | CPU %/camera | RSS MiB | KiB/camera |",
    );
    r.line("|---|---|---|---|---|---|---|---|");
    let mut rows: HashMap<(&str, usize), f64> = HashMap::new();
    for &m in &a.cameras {
        let urls: Vec<String> = (0..m).map(|i| cam.url(i)).collect();
        match Gateway::start(&urls, None) {
            Ok(g) => {
                let (c, s, rss) = measure_pid(g.pid(), tck, settle, window);
                let live = g.live_count(m);
                rows.insert(("rtspgate", m), c);
                r.line(ingest_row("rtspgate", m, live, c, s, rss));
            }
            Err(e) => r.line(format!("| rtspgate | {m} | failed: {e} |")),
        }
        if !a.peers {
            continue;
        }
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(testkit::repo_root().join("examples/bench/relay.py"))
            .args(["--source", &cam.base, "--ingest", &m.to_string()]);
        procs::stdio_null(&mut cmd);
        match Proc::spawn_ready("relay.py --ingest", &mut cmd, Duration::from_secs(30)) {
            Ok((p, n)) => {
                // rtspsrc connects after PLAYING: give it time to set up.
                let (c, s, rss) =
                    measure_pid(p.pid(), tck, settle + Duration::from_secs(3), window);
                rows.insert(("gst", m), c);
                let live: usize = n.parse().unwrap_or(0);
                r.line(ingest_row(
                    "GStreamer (rtspsrc ! rtph264depay)",
                    m,
                    live,
                    c,
                    s,
                    rss,
                ));
            }
            Err(e) => r.line(format!("| GStreamer | {m} | failed: {e} |")),
        }
        match (&ns, janus::missing()) {
            (Ok(ns), None) => match janus::Janus::start(ns, &urls) {
                Ok(j) => {
                    let live = j.wait_media(m, Duration::from_secs(30));
                    let (c, s, rss) = measure_pid(j.pid(), tck, settle, window);
                    rows.insert(("janus", m), c);
                    r.line(ingest_row("Janus (rtsp mountpoints)", m, live, c, s, rss));
                }
                Err(e) => r.line(format!("| Janus | {m} | failed: {e} |")),
            },
            (Err(why), _) => r.line(format!("| Janus | {m} | skipped: {why} |")),
            (_, Some(why)) => r.line(format!("| Janus | {m} | skipped: {why} |")),
        }
    }
    if a.peers {
        r.line("");
        r.line("peer ÷ rtspgate, CPU (above 1: rtspgate better):");
        r.line("");
        r.line("| cameras | GStreamer | Janus |");
        r.line("|---|---|---|");
        for &m in &a.cameras {
            let ours = rows.get(&("rtspgate", m)).copied().unwrap_or(f64::NAN);
            let g = rows.get(&("gst", m)).copied().unwrap_or(f64::NAN);
            let j = rows.get(&("janus", m)).copied().unwrap_or(f64::NAN);
            r.line(format!("| {m} | {} | {} |", ratio(g, ours), ratio(j, ours)));
        }
    }
}

// ---------------------------------------------------------------- 4. LL-HLS

async fn section_hls(a: &Args, cam: &Camera, r: &mut Report) {
    r.line("");
    r.line(format!(
        "### 4. LL-HLS: part served after its last frame reached the gateway (200 ms parts, {} s)",
        a.seconds.max(10)
    ));
    r.line("");
    let run = match hls::HlsRun::start(&cam.url(0)).await {
        Ok(run) => run,
        Err(e) => {
            r.line(format!("failed: {e}"));
            return;
        }
    };
    match run.measure(a.seconds.max(10)).await {
        Ok(d) => {
            r.line("| client | parts | p50 ms | p99 ms | max ms |");
            r.line("|---|---|---|---|---|");
            for (what, v) in [
                (
                    "preload-hint GET (held until the part is complete)",
                    d.hinted,
                ),
                ("blocking playlist reload, then GET (hls.js)", d.reloaded),
            ] {
                let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
                let max = ms.iter().cloned().fold(f64::NAN, f64::max);
                r.line(format!(
                    "| {what} | {} | {:.1} | {:.1} | {:.1} |",
                    ms.len(),
                    pct(&mut ms, 0.5),
                    pct(&mut ms, 0.99),
                    max
                ));
            }
            r.line("");
            r.line("Includes one frame interval (40 ms): a sample's duration is known only when the next frame arrives. No LL-HLS peer is installed here to compare with (GStreamer's hlssink3 is not in Debian 12).");
        }
        Err(e) => r.line(format!("failed: {e}")),
    }
}

// ---------------------------------------------------------------- main

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{nproc} cores (nproc), {cpu}, Linux {kernel}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse_args();
    tokio::spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        eprintln!("bench: interrupted; cleaning up");
        procs::cleanup_all();
        std::process::exit(130);
    });
    if let Err(e) = testkit::gateway::try_gateway_bin() {
        die(&e);
    }
    let tck = procstat::clk_tck();
    let started = Instant::now();
    let mut r = Report {
        text: String::new(),
    };
    r.line(format!("## rtspgate benchmark ({})", machine()));
    r.line("");
    r.line(format!(
        "Command: `cargo run --release --example bench -- {}`",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));

    let want = |s: &str| a.sections.iter().any(|x| x == s);
    let need_ns = want("webrtc") || want("ttff") || (want("ingest") && a.peers);
    let ns: Result<NetNs, String> = if need_ns {
        NetNs::create(0)
    } else {
        Err("not needed".into())
    };
    if let Err(e) = &ns {
        if need_ns {
            r.line(format!(
                "No network namespace ({e}): WebRTC, time-to-first-frame and Janus are skipped (creating one needs root)."
            ));
        }
    }
    // The camera listens on the namespace's host side (reachable from the
    // namespace and from here), or on 127.0.0.1 without one.
    let cam_addr = ns.as_ref().map(|n| n.host).unwrap_or(Ipv4Addr::LOCALHOST);
    let mounts = if want("ingest") {
        a.cameras.iter().copied().max().unwrap_or(1)
    } else {
        1
    };
    let cam = Camera::start(cam_addr, mounts, &a);
    r.line(format!(
        "Camera: one x264 encoder (videotestsrc snow, {} at 25 fps, ~{} kbit/s, keyframe every 25 frames) served by one GstRtspServer on {} mount(s) at {}N. {}",
        a.size,
        a.bitrate,
        mounts,
        cam.base,
        if a.peers {
            format!("Peers: GStreamer {} RTSP server (relay.py), {}.", gst_version(), janus::missing().unwrap_or_else(janus::version))
        } else {
            "Peers: none (--no-peers).".into()
        }
    ));
    let ns_ref = ns.as_ref().map_err(|e| e.as_str());

    if want("rtsp") {
        section_rtsp(&a, &cam, &mut r, tck).await;
    }
    if want("webrtc") || want("ttff") {
        let (a2, cam2) = (&a, &cam);
        let mut r2 = Report {
            text: String::new(),
        };
        tokio::task::block_in_place(|| section_webrtc(a2, cam2, ns_ref, &mut r2, tck));
        r.text.push_str(&r2.text);
    }
    if want("ingest") {
        let mut r2 = Report {
            text: String::new(),
        };
        tokio::task::block_in_place(|| section_ingest(&a, &cam, ns_ref, &mut r2, tck));
        r.text.push_str(&r2.text);
    }
    if want("hls") {
        section_hls(&a, &cam, &mut r).await;
    }
    if want("transcode") {
        transcode::section(&mut r);
    }
    r.line("");
    r.line(format!(
        "Whole run: {:.0} s. Absolute figures on a shared machine are noisy; compare the ratios, measured on the same camera in the same run.",
        started.elapsed().as_secs_f64()
    ));
    if let Some(path) = &a.markdown {
        if let Err(e) = std::fs::write(path, &r.text) {
            eprintln!("bench: {}: {e}", path.display());
        }
    }
    drop(cam);
    drop(ns);
}

fn gst_version() -> String {
    Command::new("gst-launch-1.0")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("GStreamer ").map(str::to_owned))
        })
        .unwrap_or_default()
}
