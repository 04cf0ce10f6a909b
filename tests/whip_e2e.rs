//! WHIP publish (RFC 9725) end to end with real peers: headless Chromium
//! publishes its fake camera and microphone (H.264 + Opus) to
//! `POST /live/whip` (tests/browser/whip_publish.mjs); another Chromium
//! plays the path over WHEP and ffmpeg reads its RTSP re-serve.
//!
//! Needs `chromium`, `node`, `npm ci --prefix tests/browser` and ffmpeg.
//! All traffic stays on 127.0.0.1.

use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

/// Share of the publisher's frame rate (frames Chromium sent a second) a
/// WHEP viewer must decode over its window, over loopback.
const MIN_FPS_SHARE: f64 = 0.85;
/// Seconds the publisher stays on: long enough for the refusal checks,
/// the WHEP viewer and the ffmpeg read one after the other.
const PUBLISH_SECONDS: u64 = 30;

/// A gateway where anyone may read and use the API, and `obs:secret` may
/// publish `live` (anonymous publishing stays refused).
fn gateway() -> Gateway {
    let cfg = scratch_path("whip", "toml");
    std::fs::write(
        &cfg,
        r#"allow_unconfigured_publish = true

[[auth.users]]
user = "any"
permissions = [{ action = "read" }, { action = "api" }]

[[auth.users]]
user = "obs"
pass = "secret"
permissions = [{ action = "publish", path = "live" }]
"#,
    )
    .expect("write config");
    Gateway::start(["--config".to_owned(), cfg.display().to_string()])
}

fn publish(gw: &Gateway, auth: Option<&str>, seconds: u64) -> Vec<String> {
    let mut args = vec![
        "--page".to_owned(),
        gw.http_url("/web/style.css"),
        "--url".to_owned(),
        gw.http_url("/live/whip"),
        "--seconds".to_owned(),
        seconds.to_string(),
        "--timeout".to_owned(),
        (seconds + 60).to_string(),
    ];
    if let Some(a) = auth {
        args.push("--auth".to_owned());
        args.push(a.to_owned());
    }
    args
}

#[test]
fn chromium_publishes_over_whip_and_every_egress_serves_it() {
    require_browser();
    let mut gw = gateway();

    // Anonymous publishing is refused with the challenge.
    let anon = run_browser_script(
        "whip_publish.mjs",
        &publish(&gw, None, 1),
        Duration::from_secs(60),
    );
    assert_eq!(anon.json["status"], 401, "anonymous WHIP: {}", anon.json);
    assert!(gw.stream("live").is_none(), "nothing published");

    // The publisher, in the background for PUBLISH_SECONDS.
    let args = publish(&gw, Some("obs:secret"), PUBLISH_SECONDS);
    let publisher = thread::spawn(move || {
        run_browser_script(
            "whip_publish.mjs",
            &args,
            Duration::from_secs(PUBLISH_SECONDS + 90),
        )
    });
    let entry = gw.wait_live("live", Duration::from_secs(30));
    eprintln!("published: {entry}");

    // A second publisher of the same path is refused.
    let second = run_browser_script(
        "whip_publish.mjs",
        &publish(&gw, Some("obs:secret"), 1),
        Duration::from_secs(60),
    );
    assert_eq!(
        second.json["status"], 409,
        "second publisher: {}",
        second.json
    );
    assert!(
        second.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("in use")),
        "{}",
        second.json
    );

    // Another Chromium plays it over WHEP.
    let played = run_browser_script(
        "whep_play.mjs",
        &[
            "--page".to_owned(),
            gw.http_url("/web/style.css"),
            "--url".to_owned(),
            gw.http_url("/live/whep"),
            "--seconds".to_owned(),
            "6".to_owned(),
            "--delete".to_owned(),
            "--timeout".to_owned(),
            "60".to_owned(),
        ],
        Duration::from_secs(90),
    );
    let v = &played.json["viewers"][0];
    assert_eq!(v["status"], 201, "{}", played.json);
    eprintln!("WHEP viewer of the WHIP publisher: {v}");
    assert_eq!(v["videoCodec"], "video/H264", "{v}");
    assert_eq!(v["audioCodec"], "audio/opus", "{v}");
    assert!(v["audioPackets"].as_u64().unwrap_or(0) > 0, "audio: {v}");

    // ffmpeg reads the RTSP re-serve: H.264 and Opus, decoded (video
    // first, whatever the browser's order).
    let read = ffmpeg_read(&gw.rtsp_url("live"), Transport::Tcp, 4.0);
    eprintln!(
        "ffmpeg: {:?}, {} video frames, {} audio frames, fps {:?}",
        read.codecs(),
        read.video_frames(),
        read.audio_frames(),
        read.video().and_then(|s| s.fps())
    );
    assert_eq!(
        read.codecs(),
        [
            ("video".to_owned(), "h264".to_owned()),
            ("audio".to_owned(), "opus".to_owned())
        ],
        "{}",
        read.stderr
    );

    let published = publisher.join().expect("publisher thread");
    let p = &published.json;
    eprintln!("publisher: {p}");
    assert_eq!(p["status"], 201, "{p}\n{}", published.stderr);
    assert_eq!(p["ok"], true, "{p}");
    assert_eq!(p["video"]["codec"], "video/H264", "{p}");
    assert_eq!(p["audio"]["codec"], "audio/opus", "{p}");
    assert_eq!(p["deleteStatus"], 200, "{p}");

    // The frame rates readers got, against what the publisher sent.
    let fps = p["video"]["fps"].as_f64().unwrap_or(0.0);
    assert!(fps >= 10.0, "the fake camera sent {fps:.1} fps: {p}");
    let window_frames = v["window"]["frames"].as_f64().unwrap_or(0.0);
    let window_secs = v["window"]["seconds"].as_f64().unwrap_or(0.0);
    assert!(
        window_frames >= MIN_FPS_SHARE * fps * window_secs,
        "WHEP: {window_frames} frames decoded in {window_secs:.1} s, want >= {MIN_FPS_SHARE} \
         of the publisher's {fps:.1} fps: {v}"
    );
    read.assert_clean((0.7 * fps * 4.0) as u64, 50);

    // DELETE ended the publication: the path is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.stream("live").is_some() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        gw.stream("live").is_none(),
        "the path outlived its publisher"
    );
    gw.assert_no_panic();
}
