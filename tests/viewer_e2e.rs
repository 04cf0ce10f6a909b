//! The viewer page in headless Chromium (playwright-core, Debian's chromium):
//! the index lists the streams, the player decodes frames, falls back to
//! LL-HLS when WebRTC fails, and shows a picture that is not blank.

mod common;

use std::time::Duration;

use common::*;

/// Runs tests/browser/viewer_page.mjs; returns its JSON report plus the
/// screenshot's size.
fn viewer(base: &str, path: &str, extra: &[&str]) -> serde_json::Value {
    let shot = scratch_path("viewer", "png");
    let mut args: Vec<String> = vec![base.into(), path.into(), "--timeout".into(), "45".into()];
    args.extend(["--screenshot".to_owned(), shot.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut v = run_browser_script("viewer_page.mjs", &args, Duration::from_secs(90)).json;
    v["screenshot_bytes"] = std::fs::metadata(&shot).map_or(0, |m| m.len()).into();
    v
}

#[test]
fn demo_page_falls_back_to_ll_hls_when_webrtc_fails() {
    let _g = serial();
    require_tools();
    require_browser();
    let mut gw = Gateway::start(Vec::<String>::new());
    gw.wait_live("demo", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{}", gw.http_port());
    let v = viewer(&base, "demo", &["--block-webrtc", "--frames", "100"]);
    assert_eq!(v["ok"], true, "{v}\n{}", gw.log());
    assert_eq!(v["index"], serde_json::json!(["demo"]), "{v}");
    assert_eq!(v["transport"], "ll-hls", "{v}");
    assert!(v["frames"].as_u64().unwrap_or(0) >= 100, "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360)),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap_or("").contains("using LL-HLS"),
        "the page says why it fell back: {v}"
    );
    assert!(
        v["overlay"].as_str().unwrap_or("").contains("ll-hls"),
        "{v}"
    );
    assert!(
        v["lumaStdDev"].as_f64().unwrap_or(0.0) > 10.0,
        "blank picture: {v}"
    );
    assert!(v["screenshot_bytes"].as_u64().unwrap_or(0) > 10_000, "{v}");
}

#[test]
fn page_plays_on_when_the_camera_comes_back() {
    let _g = serial();
    require_tools();
    require_browser();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let base = format!("http://127.0.0.1:{}", gw.http_port());
    let page =
        std::thread::spawn(move || viewer(&base, "cam", &["--frames", "50", "--watch", "16"]));
    // Give the page time to reach 50 frames, then take the camera away for a while.
    std::thread::sleep(Duration::from_secs(6));
    cam.kill();
    let down = gw.wait_state("cam", "reconnecting", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    cam.restart();
    gw.wait_live("cam", Duration::from_secs(20));
    let v = page.join().expect("page thread");
    assert_eq!(v["ok"], true, "{v}");
    let timeline = v["timeline"].as_array().expect("timeline").clone();
    let frames: Vec<u64> = timeline
        .iter()
        .map(|t| t["frames"].as_u64().unwrap_or(0))
        .collect();
    // The page said what was wrong while the camera was away...
    let error = down["error"].as_str().unwrap_or("").to_owned();
    assert!(
        timeline
            .iter()
            .any(|t| t["message"].as_str().unwrap_or("").contains("reconnecting")),
        "the page never showed the outage ({error}): {v}"
    );
    // ...and frames were decoded again at the end, without a reload.
    let n = frames.len();
    assert!(n >= 4, "{v}");
    assert!(
        frames[n - 1] > frames[n - 4] + 25,
        "no new frames after the camera came back: {frames:?}\n{v}"
    );
}
