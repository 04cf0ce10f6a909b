//! WHEP load benchmark (not a test): how much a WebRTC viewer costs the
//! gateway, and how soon a browser shows the first picture.
//!
//! ```text
//! cargo build --release && cargo run --release --example whep_load -- \
//!     [--viewers 10,25,50] [--seconds 10] [--tcp] [--size 1280x720] \
//!     [--bitrate 2000] [--noise] [--stalled K] [--chromium-runs 5]
//! ```
//!
//! Starts the GStreamer test camera (testkit/camera.py, H.264 + Opus)
//! and the release `rtspgate` next to this example's binary, all on
//! 127.0.0.1. The test camera's moving ball compresses to about 100 kbit/s
//! whatever the target; `--noise` instead encodes `videotestsrc
//! pattern=snow`, which fills the target bitrate, for a realistic packet
//! rate. Then, for each viewer count N, runs N str0m WHEP viewers
//! (testkit/src/whep.rs: they negotiate, receive, decrypt and depacketize)
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

use testkit::procstat::{clk_tck, cpu_seconds, rss_kib};
use testkit::whep;
use testkit::{AudioCodec, Camera, CameraOpts, Gateway, VideoCodec};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

struct Args {
    viewers: Vec<usize>,
    seconds: u64,
    via: whep::Via,
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
        via: whep::Via::Udp,
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
            "--tcp" => a.via = whep::Via::Tcp,
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

fn start_camera(a: &Args) -> Camera {
    let (width, height) = a
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or_else(|| die("--size: WxH, e.g. 1280x720"));
    Camera::start(CameraOpts {
        pattern: if a.noise { "snow" } else { "ball" }.into(),
        width,
        height,
        bitrate_kbps: a.bitrate,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::Opus)
    })
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
    let camera = start_camera(&a);
    let mut gw = Gateway::start_quiet([format!("cam={}", camera.url())]);
    gw.wait_live("cam", Duration::from_secs(30));
    let pid = gw.pid().unwrap_or_else(|| die("the gateway exited"));
    let http = SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
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
                    whep::play(
                        http,
                        "cam",
                        &whep::Opts {
                            stall_after: Some(Duration::from_millis(500)),
                            ..whep::Opts::new(whep::Via::Tcp, Duration::from_secs(secs))
                        },
                    )
                })
            })
            .collect();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                std::thread::spawn(move || {
                    whep::play(
                        http,
                        "cam",
                        &whep::Opts::new(via, Duration::from_secs(secs)),
                    )
                })
            })
            .collect();
        // Skip the joining burst; measure the steady middle of the run.
        let settle = Duration::from_secs(2.min(secs / 3).max(1));
        std::thread::sleep(settle);
        let window = Duration::from_secs(secs.saturating_sub(2 * settle.as_secs()).max(1));
        let (cpu, rss) = measure(pid, tck, window);
        let results: Vec<whep::Received> = handles
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
            let dropped = whep::http(http, "GET", "/api/v1/webrtc/sessions", &[], b"")
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
        let script = testkit::browser_dir().join("whep_play.mjs");
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
