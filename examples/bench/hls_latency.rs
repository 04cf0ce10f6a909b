//! LL-HLS latency benchmark: a GStreamer camera (testkit/camera.py,
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

// This file sits next to the benchmark's `hls.rs` (declared as an
// `[[example]]` in Cargo.toml), so both examples share one `hls` module.
mod hls;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::{AudioCodec, Camera, CameraOpts, VideoCodec};

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
    let dir = testkit::browser_dir();
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

    let camera = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let run = hls::HlsRun::start(&camera.url())
        .await
        .expect("the gateway starts and the camera goes live");
    let port = run.port;
    println!("measuring {seconds} s of 200 ms parts (camera H.264 640x360 25 fps + AAC)");
    let d = run.measure(seconds).await.expect("LL-HLS playlist");
    print_figures(
        "part served after its last frame arrived, preload-hint GET",
        d.hinted,
    );
    print_figures(
        "part served after its last frame arrived, blocking reload + GET",
        d.reloaded,
    );

    if browser_seconds > 0 {
        let url = format!("http://127.0.0.1:{port}/cam/index.m3u8");
        tokio::task::spawn_blocking(move || browser(&url, browser_seconds))
            .await
            .expect("browser task");
    }
}
