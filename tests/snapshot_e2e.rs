//! End to end, `GET /<path>/snapshot.jpg` (issue 14): GStreamer cameras
//! (videotestsrc's "ball": a white ball on black) behind the gateway, the
//! snapshots read back with ffmpeg/ffprobe.
//!
//! Needs the GStreamer camera's packages and ffmpeg/ffprobe (see .ci/run).

use std::fs;
use std::process::Command;
use std::thread;
use std::time::Duration;

use testkit::process::{run_bounded, scratch_path};
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);

/// What ffmpeg sees in a JPEG: its size and its luma histogram.
struct Picture {
    width: u64,
    height: u64,
    /// Share of pixels darker than 40 (of 255).
    dark: f64,
    /// Share of pixels brighter than 200.
    bright: f64,
}

/// Decodes `jpeg` with ffprobe/ffmpeg; panics with ffmpeg's words if it
/// is not a JPEG image that decodes cleanly.
fn picture(jpeg: &[u8]) -> Picture {
    let file = scratch_path("snapshot", "jpg");
    fs::write(&file, jpeg).expect("write snapshot");
    let probe = run_bounded(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "json"])
            .arg(&file),
        Duration::from_secs(20),
    );
    assert!(probe.success(), "ffprobe: {}", probe.stderr);
    let v: serde_json::Value = serde_json::from_str(&probe.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "mjpeg", "{v}");
    let gray = scratch_path("snapshot", "gray");
    let conv = run_bounded(
        Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-y", "-i"])
            .arg(&file)
            .args(["-f", "rawvideo", "-pix_fmt", "gray"])
            .arg(&gray),
        Duration::from_secs(20),
    );
    assert!(
        conv.success() && conv.stderr.trim().is_empty(),
        "ffmpeg: {}",
        conv.stderr
    );
    let px = fs::read(&gray).expect("gray pixels");
    let n = px.len().max(1) as f64;
    Picture {
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
        dark: px.iter().filter(|&&y| y < 40).count() as f64 / n,
        bright: px.iter().filter(|&&y| y > 200).count() as f64 / n,
    }
}

/// The ball pattern decoded right: mostly black with a white ball (~0.5 %
/// of a 640x360 picture is brighter than 200; a grey or green picture
/// from a decoder fed garbage has neither).
fn assert_ball(p: &Picture, what: &str) {
    println!(
        "snapshot: {what}: {}x{}, {:.1} % dark, {:.2} % bright",
        p.width,
        p.height,
        p.dark * 100.0,
        p.bright * 100.0
    );
    assert_eq!((p.width, p.height), (640, 360), "{what}: size");
    assert!(p.dark > 0.97, "{what}: {:.1} % dark pixels", p.dark * 100.0);
    assert!(
        p.bright > 0.003,
        "{what}: {:.2} % bright pixels",
        p.bright * 100.0
    );
}

#[test]
fn snapshots_of_h264_h265_mjpeg_and_audio_only_cameras() {
    let _g = serial();
    require_tools();
    let h264 = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let h265 = Camera::start(CameraOpts::new(VideoCodec::H265, AudioCodec::None));
    let mjpeg = Camera::start(CameraOpts::new(VideoCodec::Mjpeg, AudioCodec::None));
    let audio = Camera::start(CameraOpts::new(VideoCodec::None, AudioCodec::Aac));
    let mut gw = Gateway::start([
        format!("h264={}", h264.url()),
        format!("h265={}", h265.url()),
        format!("mjpeg={}", mjpeg.url()),
        format!("audio={}", audio.url()),
    ]);
    for name in ["h264", "h265", "mjpeg", "audio"] {
        gw.wait_live(name, LIVE);
    }
    let get = |path: &str| gw.http_get(path).expect("http");

    // H.264: the newest keyframe, decoded.
    let first = get("/h264/snapshot.jpg");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("content-type"), Some("image/jpeg"));
    assert_ball(&picture(&first.body), "H.264 snapshot");
    // A keyframe comes every second (GOP 25 at 25 fps) and the ball moves:
    // a snapshot 1.5 s later is another picture, not the cached one.
    thread::sleep(Duration::from_millis(1500));
    let later = get("/h264/snapshot.jpg");
    assert_eq!(later.status, 200);
    assert!(
        later.body != first.body,
        "the snapshot did not follow the stream"
    );
    assert_ball(&picture(&later.body), "H.264 snapshot 1.5 s later");

    // H.265: decoded with the transcode feature, refused in plain words
    // without it.
    let r = get("/h265/snapshot.jpg");
    if cfg!(feature = "transcode") {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ball(&picture(&r.body), "H.265 snapshot");
    } else {
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("--features transcode"), "{}", r.text());
    }

    // MJPEG: the camera's own image.
    let r = get("/mjpeg/snapshot.jpg");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(&[0xff, 0xd8]) && r.body.ends_with(&[0xff, 0xd9]));
    assert_ball(&picture(&r.body), "MJPEG snapshot");

    let r = get("/audio/snapshot.jpg");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("no video"), "{}", r.text());
    assert_eq!(get("/nosuch/snapshot.jpg").status, 404);
    gw.assert_no_panic();
}
