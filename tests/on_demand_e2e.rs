//! On-demand sources end to end: a GStreamer camera behind
//! `source_on_demand = true` is not contacted before the first reader, an
//! ffmpeg RTSP reader starts it and gets frames, the camera is closed after
//! `source_on_demand_close_after`, and a camera that never answers gives the
//! reader an error after the start timeout instead of a hang.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

/// Established TCP connections to `port` on this host (the camera's side),
/// from `ss`.
fn open_connections(port: u16) -> usize {
    let out = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn gateway(path_toml: &str) -> Gateway {
    let cfg = scratch_path("on_demand", "toml");
    std::fs::write(&cfg, path_toml).expect("write config");
    Gateway::start(["--config".to_owned(), cfg.display().to_string()])
}

fn state(gw: &Gateway) -> String {
    gw.stream("cam")
        .and_then(|s| s["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn an_on_demand_camera_is_read_only_while_someone_watches() {
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let gw = gateway(&format!(
        "[paths.cam]\nsource = \"{}\"\nsource_on_demand = true\n\
             source_on_demand_close_after = 10\n",
        cam.url()
    ));
    thread::sleep(Duration::from_secs(4));
    assert_eq!(open_connections(cam.port()), 0, "contacted before a reader");
    assert_eq!(state(&gw), "idle");

    let report = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 5.0);
    let fps = 25.0;
    assert!(
        report.video_frames() as f64 >= 5.0 * fps * 0.8,
        "frames: {}",
        report.video_frames()
    );
    // Within close_after: the open session is reused.
    let reader = FfmpegReader::start(&gw.rtsp_url("cam"), Transport::Tcp, 3.0);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(open_connections(cam.port()), 1, "one camera session");
    assert_eq!(state(&gw), "live");
    assert!(reader.finish().video_frames() > 0);

    thread::sleep(Duration::from_secs(15));
    assert_eq!(
        open_connections(cam.port()),
        0,
        "still open 15 s after the last reader"
    );
    assert_eq!(state(&gw), "idle");
}

#[test]
fn a_camera_that_never_answers_fails_the_reader_after_the_start_timeout() {
    require_tools();
    let port = free_port();
    let gw = gateway(&format!(
        "[paths.cam]\nsource = \"rtsp://127.0.0.1:{port}/none\"\nsource_on_demand = true\n\
             source_on_demand_start_timeout = 3\n"
    ));
    let started = Instant::now();
    let got = first_video_frame(&gw.rtsp_url("cam"), Transport::Tcp);
    assert!(got.is_err(), "a frame from nowhere");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the reader waited {:?}",
        started.elapsed()
    );
}
