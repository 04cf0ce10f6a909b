//! The viewer page in headless Chromium (playwright-core, Debian's chromium):
//! the index lists the streams, the player decodes frames, falls back to
//! LL-HLS when WebRTC fails, and shows a picture that is not blank.

use std::time::Duration;

use testkit::*;

/// Runs tests/browser/viewer_page.mjs; returns its JSON report plus the
/// screenshot's size.
fn viewer(base: &str, path: &str, timeout_s: u64, extra: &[&str]) -> serde_json::Value {
    let shot = scratch_path("viewer", "png");
    let mut args: Vec<String> = vec![
        base.into(),
        path.into(),
        "--timeout".into(),
        timeout_s.to_string(),
    ];
    args.extend(["--screenshot".to_owned(), shot.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut v = run_browser_script(
        "viewer_page.mjs",
        &args,
        Duration::from_secs(timeout_s + 45),
    )
    .json;
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
    let v = viewer(&base, "demo", 45, &["--block-webrtc", "--frames", "100"]);
    assert_eq!(v["ok"], true, "{v}\n{}", gw.log());
    // The 4 s after the first frame play in real time over LL-HLS.
    let problems = WindowRule::video_25fps(false).problems(&v);
    assert!(problems.is_empty(), "{problems:?}\n{v}");
    assert_eq!(v["index"], serde_json::json!(["demo"]), "{v}");
    // The tile shows the stream's snapshot until it plays.
    assert!(
        v["posters"][0]
            .as_str()
            .unwrap_or("")
            .contains("/demo/snapshot.jpg"),
        "{v}"
    );
    assert_eq!(v["poster"]["status"], 200, "{v}");
    assert_eq!(v["poster"]["type"], "image/jpeg", "{v}");
    assert!(v["poster"]["bytes"].as_u64().unwrap_or(0) > 5_000, "{v}");
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
    // The page watches for 30 s after its first 4 s: long enough for any
    // reconnect backoff below; the check below is relative to the moment
    // the stream is live again, wherever the retry landed.
    let page =
        std::thread::spawn(move || viewer(&base, "cam", 75, &["--frames", "50", "--watch", "30"]));
    // Give the page time to play its first window, then take the camera
    // away for a while.
    std::thread::sleep(Duration::from_secs(8));
    cam.kill();
    let down = gw.wait_state("cam", "reconnecting", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    cam.restart();
    gw.wait_live("cam", Duration::from_secs(20));
    let live_again = unix_ms();
    let v = page.join().expect("page thread");
    assert_eq!(v["ok"], true, "{v}");
    let timeline = v["timeline"].as_array().expect("timeline").clone();
    // The page said what was wrong while the camera was away...
    let error = down["error"].as_str().unwrap_or("").to_owned();
    assert!(
        timeline
            .iter()
            .any(|t| t["message"].as_str().unwrap_or("").contains("reconnecting")),
        "the page never showed the outage ({error}): {v}"
    );
    // ...and decoded frames again once the stream was live again, without a
    // reload: at least 2 s worth (50 frames) between 1 s after that moment
    // and the end of the watch.
    let after: Vec<u64> = timeline
        .iter()
        .filter(|t| t["at"].as_u64().unwrap_or(0) >= live_again + 1000)
        .map(|t| t["frames"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        after.len() >= 4 && after[after.len() - 1] >= after[0] + 50,
        "no new frames after the camera came back (live again at {live_again}): {after:?}\n{v}"
    );
}

/// Milliseconds since the Unix epoch (the browser's `Date.now()` clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
