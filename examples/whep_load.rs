//! WHEP load benchmark (not a test): how much a WebRTC viewer costs the
//! gateway, and how soon a browser shows the first picture.
//!
//! ```text
//! cargo build --release && cargo run --release --example whep_load -- \
//!     [--viewers 10,25,50] [--seconds 10] [--tcp] [--size 1280x720] \
//!     [--bitrate 2000] [--noise] [--stalled K] [--chromium-runs 5]
//! ```
//!
//! Starts the GStreamer test camera (tests/support/camera.py, H.264 + Opus)
//! and the release `rtspgate` next to this example's binary, all on
//! 127.0.0.1. The test camera's moving ball compresses to about 100 kbit/s
//! whatever the target; `--noise` instead runs a GstRtspServer camera
//! encoding `videotestsrc pattern=snow`, which fills the target bitrate, for
//! a realistic packet rate. Then, for each viewer count N, runs N str0m WHEP viewers
//! (tests/whep_client: they negotiate, receive, decrypt and depacketize)
//! for `--seconds` and prints the gateway's CPU (utime+stime from
//! /proc/PID/stat over the middle of the run, in % of one core) and RSS
//! (/proc/PID/status VmRSS) against the idle baseline, per viewer. Finally
//! it runs headless Chromium (tests/browser/whep_play.mjs) `--chromium-runs`
//! times and prints the time from POST to the first decoded frame.
//!
//! `--stalled K` adds K ICE-TCP viewers per step that stop reading 0.5 s
//! after connecting, to show that they cost the others nothing (their
//! packets are dropped once their queue is full: `dropped_packets`).
//!
//! The viewers run in this process, on the same machine: their CPU use is
//! not counted for the gateway, but they compete with it for cores.

#[path = "../tests/whep_client/mod.rs"]
mod whep_client;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    viewers: Vec<usize>,
    seconds: u64,
    via: whep_client::Via,
    size: String,
    bitrate: u32,
    chromium_runs: usize,
    noise: bool,
    stalled: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        viewers: vec![10, 25, 50],
        seconds: 10,
        via: whep_client::Via::Udp,
        size: "1280x720".into(),
        bitrate: 2000,
        chromium_runs: 5,
        noise: false,
        stalled: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--viewers" => {
                a.viewers = v()
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .unwrap_or_else(|_| die("--viewers: numbers, e.g. 10,25"))
                    })
                    .collect()
            }
            "--seconds" => a.seconds = v().parse().unwrap_or_else(|_| die("--seconds: a number")),
            "--tcp" => a.via = whep_client::Via::Tcp,
            "--noise" => a.noise = true,
            "--stalled" => a.stalled = v().parse().unwrap_or_else(|_| die("--stalled: a number")),
            "--size" => a.size = v(),
            "--bitrate" => a.bitrate = v().parse().unwrap_or_else(|_| die("--bitrate: kbit/s")),
            "--chromium-runs" => {
                a.chromium_runs = v()
                    .parse()
                    .unwrap_or_else(|_| die("--chromium-runs: a number"))
            }
            _ => die(&format!("unknown argument {k}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("whep_load: {msg}");
    std::process::exit(2);
}

/// Kills the child on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port(udp_too: bool) -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| die(&format!("bind: {e}")));
        if !udp_too || UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn even_udp_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
        let p = s.local_addr().map(|a| a.port()).unwrap_or(1);
        if p.is_multiple_of(2) && p < u16::MAX && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A GstRtspServer camera sending noise (H.264 at the target bitrate) and
/// an Opus tone; prints `READY <url>` like tests/support/camera.py.
const NOISE_CAMERA: &str = r#"
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
w, h = sys.argv[1].split("x"); kbps = sys.argv[2]
launch = ("( videotestsrc is-live=true pattern=snow ! video/x-raw,format=I420,width=%s,height=%s,framerate=25/1 "
          "! x264enc tune=zerolatency speed-preset=ultrafast bitrate=%s vbv-buf-capacity=1000 key-int-max=25 "
          "! h264parse config-interval=-1 ! rtph264pay pt=96 name=pay0 "
          " audiotestsrc is-live=true wave=sine samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 ! queue "
          "! audioconvert ! opusenc bitrate=64000 frame-size=20 ! rtpopuspay pt=97 name=pay1 )") % (w, h, kbps)
server = GstRtspServer.RTSPServer(); server.set_address("127.0.0.1"); server.set_service("0")
f = GstRtspServer.RTSPMediaFactory(); f.set_launch(launch); f.set_shared(True)
server.get_mount_points().add_factory("/noise", f)
server.attach(None)
print("READY rtsp://127.0.0.1:%d/noise" % server.get_bound_port(), flush=True)
GLib.MainLoop().run()
"#;

fn start_camera(a: &Args) -> (Proc, String) {
    let mut cmd = Command::new("/usr/bin/python3");
    if a.noise {
        cmd.arg("-c")
            .arg(NOISE_CAMERA)
            .args([&a.size, &a.bitrate.to_string()]);
    } else {
        cmd.arg(repo().join("tests/support/camera.py"))
            .args(["--port", "0", "--video", "h264", "--audio", "opus"])
            .args(["--size", &a.size, "--bitrate", &a.bitrate.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&format!("camera.py: {e}")));
    let out = child.stdout.take().unwrap_or_else(|| die("camera stdout"));
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    let url = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| die(&format!("camera did not start: {line:?}")))
        .to_owned();
    (Proc(child), url)
}

fn gateway_bin() -> PathBuf {
    // target/<profile>/examples/whep_load -> target/<profile>/rtspgate
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("rtspgate"))
        .unwrap_or_else(|| die("no target dir"));
    if !bin.exists() {
        die(&format!(
            "{} missing: cargo build --release first",
            bin.display()
        ));
    }
    bin
}

fn start_gateway(camera: &str) -> (Proc, u16) {
    let http = free_port(false);
    let child = Command::new(gateway_bin())
        .args(["--listen", "127.0.0.1"])
        .args(["--rtsp-port", &free_port(false).to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--rtp-port", &even_udp_port().to_string()])
        .args(["--webrtc-port", &free_port(true).to_string()])
        .arg(format!("cam={camera}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&format!("rtspgate: {e}")));
    (Proc(child), http)
}

fn wait_live(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _, body)) = whep_client::http(http, "GET", "/api/v1/streams/cam", &[], b"")
        {
            if String::from_utf8_lossy(&body).contains("\"state\":\"live\"") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    die("the stream did not go live");
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in seconds (proc(5): fields 14 and 15).
fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11.
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tck
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU % of one core over `window`, and RSS at its end.
fn measure(pid: u32, tck: f64, window: Duration) -> (f64, u64) {
    let c0 = cpu_seconds(pid, tck);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1 = cpu_seconds(pid, tck);
    (100.0 * (c1 - c0) / t0.elapsed().as_secs_f64(), rss_kib(pid))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = parse_args();
    let tck = clk_tck();
    let (_camera, cam_url) = start_camera(&a);
    let (gw, http_port) = start_gateway(&cam_url);
    let pid = gw.0.id();
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    wait_live(http);
    std::thread::sleep(Duration::from_secs(2));

    let (idle_cpu, idle_rss) = measure(pid, tck, Duration::from_secs(4));
    println!(
        "camera {} H.264 ({}) at {} kbit/s target + Opus; viewers over {:?}; gateway pid {pid}",
        a.size,
        if a.noise { "noise" } else { "test ball" },
        a.bitrate,
        a.via
    );
    println!(
        "idle (0 viewers): gateway CPU {idle_cpu:.1} % of a core, RSS {} KiB",
        idle_rss
    );
    println!();
    println!(
        "{:>7} {:>9} {:>11} {:>12} {:>10} {:>13} {:>11} {:>14} {:>12}",
        "viewers",
        "CPU %",
        "CPU %/view",
        "RSS KiB",
        "KiB/view",
        "frames/view",
        "fps/view",
        "Mbit/s total",
        "first ms p50"
    );
    for &n in &a.viewers {
        let secs = a.seconds;
        let via = a.via;
        let stalled: Vec<_> = (0..a.stalled)
            .map(|_| {
                std::thread::spawn(move || {
                    whep_client::play(
                        http,
                        "cam",
                        &whep_client::Opts {
                            stall_after: Some(Duration::from_millis(500)),
                            ..whep_client::Opts::new(
                                whep_client::Via::Tcp,
                                Duration::from_secs(secs),
                            )
                        },
                    )
                })
            })
            .collect();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                std::thread::spawn(move || {
                    whep_client::play(
                        http,
                        "cam",
                        &whep_client::Opts::new(via, Duration::from_secs(secs)),
                    )
                })
            })
            .collect();
        // Skip the joining burst; measure the steady middle of the run.
        let settle = Duration::from_secs(2.min(secs / 3).max(1));
        std::thread::sleep(settle);
        let window = Duration::from_secs(secs.saturating_sub(2 * settle.as_secs()).max(1));
        let (cpu, rss) = measure(pid, tck, window);
        let results: Vec<whep_client::Received> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();
        let frames: u64 = results.iter().map(|r| r.video_frames).sum();
        let bytes: u64 = results.iter().map(|r| r.bytes).sum();
        let mut first: Vec<f64> = results
            .iter()
            .filter_map(|r| r.first_frame.map(|d| d.as_secs_f64() * 1000.0))
            .collect();
        let per = n.max(1) as f64;
        println!(
            "{:>7} {:>9.1} {:>11.2} {:>12} {:>10.0} {:>13.0} {:>11.1} {:>14.2} {:>12.0}",
            n,
            cpu,
            (cpu - idle_cpu) / per,
            rss,
            (rss.saturating_sub(idle_rss)) as f64 / per,
            frames as f64 / per,
            frames as f64 / per / secs as f64,
            bytes as f64 * 8.0 / secs as f64 / 1e6,
            percentile(&mut first, 0.5),
        );
        if !errors.is_empty() {
            println!(
                "        {} viewer(s) failed, e.g.: {}",
                errors.len(),
                errors[0]
            );
        }
        for h in stalled {
            let _ = h.join();
        }
        if a.stalled > 0 {
            let dropped = whep_client::http(http, "GET", "/api/v1/webrtc/sessions", &[], b"")
                .ok()
                .and_then(|(_, _, b)| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["dropped_packets"].as_u64())
                .unwrap_or(0);
            println!(
                "        with {} stalled ICE-TCP viewer(s): gateway dropped {dropped} packets in total so far",
                a.stalled
            );
        }
        // Let DELETEs land and memory settle before the next step.
        std::thread::sleep(Duration::from_secs(2));
    }

    if a.chromium_runs > 0 {
        println!();
        let script = repo().join("tests/browser/whep_play.mjs");
        let mut first = Vec::new();
        let mut post = Vec::new();
        for _ in 0..a.chromium_runs {
            let out = Command::new("timeout")
                .arg("60")
                .arg("node")
                .arg(&script)
                .args(["--page", &format!("http://{http}/api/v1/streams")])
                .args(["--url", &format!("http://{http}/cam/whep")])
                .args(["--seconds", "3", "--delete"])
                .output();
            let Ok(out) = out else {
                println!("chromium: cannot run node");
                break;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = match text.lines().last().map(serde_json::from_str) {
                Some(Ok(v)) => v,
                _ => {
                    println!("chromium: no result: {text}");
                    continue;
                }
            };
            let row = &v["viewers"][0];
            if let (Some(f), Some(p)) = (row["firstFrameMs"].as_f64(), row["postMs"].as_f64()) {
                first.push(f);
                post.push(p);
            } else {
                println!("chromium run failed: {v}");
            }
        }
        let (n, min_f) = (
            first.len(),
            first.iter().cloned().fold(f64::INFINITY, f64::min),
        );
        let max_f = first.iter().cloned().fold(0.0, f64::max);
        println!(
            "Chromium, {n} runs: POST→201 answer p50 {:.0} ms; POST→first decoded frame min {:.0} / p50 {:.0} / max {:.0} ms",
            percentile(&mut post, 0.5),
            min_f,
            percentile(&mut first, 0.5),
            max_f
        );
    }
}
