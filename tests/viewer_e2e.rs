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
