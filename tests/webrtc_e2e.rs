//! WebRTC end to end with real peers: GStreamer camera → rtspgate →
//! headless Chromium (Debian's /usr/bin/chromium driven by playwright-core
//! from tests/browser) negotiating through WHEP.
//!
//! Needs: the GStreamer camera's packages (see .ci/run), `chromium`, `node`
//! and `npm ci --prefix tests/browser`. All traffic stays on 127.0.0.1.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

/// Seconds of playback per browser run (at least; the script also waits for
/// the 4 s window after each viewer's first decoded frame).
const PLAY_SECONDS: u64 = 6;
/// The test camera's frame rate.
const CAMERA_FPS: f64 = 25.0;
/// A str0m viewer must get this share of the camera's frame rate after its
/// first frame, over loopback.
const MIN_FPS_SHARE: f64 = 0.85;

/// The harness gives every gateway its own RTP and WebRTC ports.
fn start_gateway(sources: &[String]) -> Gateway {
    Gateway::start(sources)
}

/// What the browser run reported.
struct Play {
    json: serde_json::Value,
    stderr: String,
}

impl Play {
    fn viewers(&self) -> &Vec<serde_json::Value> {
        self.json["viewers"].as_array().unwrap_or_else(|| {
            panic!(
                "no viewers in browser output: {}\n{}",
                self.json, self.stderr
            )
        })
    }
}

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// How the browser leaves after playing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// WHEP DELETE on each session, then close the peer connections.
    Delete,
    /// Chromium is killed with the peer connections open: no goodbye.
    Vanish,
}

/// Spawns the browser script (see tests/browser/whep_play.mjs). Returns the
/// child; [`finish`] collects its result. Killed after `seconds + 60` s.
fn spawn_play(gw: &Gateway, paths: &[&str], viewers: u32, end: End) -> std::process::Child {
    require_browser();
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("whep_play.mjs"))
        .arg("--page")
        .arg(gw.http_url("/api/v1/streams"))
        .arg("--viewers")
        .arg(viewers.to_string())
        .arg("--seconds")
        .arg(PLAY_SECONDS.to_string())
        .arg("--timeout")
        .arg((PLAY_SECONDS + 50).to_string());
    for p in paths {
        cmd.arg("--url").arg(gw.http_url(&format!("/{p}/whep")));
    }
    cmd.arg(match end {
        End::Delete => "--delete",
        End::Vanish => "--vanish",
    });
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (is nodejs installed?)")
}

fn finish(mut child: std::process::Child, gw: &mut Gateway) -> Play {
    let deadline = Instant::now() + Duration::from_secs(PLAY_SECONDS + 60);
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                gw.fail("the browser script did not finish in time");
            }
        }
    }
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let json: serde_json::Value = match stdout.lines().last().map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => gw.fail(&format!(
            "browser script printed no result\nstdout: {stdout}\nstderr: {stderr}"
        )),
    };
    if json["ok"] != true {
        gw.fail(&format!("browser run failed: {json}\nstderr: {stderr}"));
    }
    Play { json, stderr }
}

fn play(gw: &mut Gateway, paths: &[&str], viewers: u32, end: End) -> Play {
    let child = spawn_play(gw, paths, viewers, end);
    finish(child, gw)
}

/// A Chromium viewer decoded `width`-wide H.264 and played the fixed window
/// after its first frame cleanly (see [`WindowRule::video_25fps`]), with
/// audio samples when `audio`.
#[track_caller]
fn assert_video(gw: &mut Gateway, v: &serde_json::Value, width: u64, audio: bool) {
    assert_video_with(gw, v, width, WindowRule::video_25fps(audio));
}

fn assert_video_with(gw: &mut Gateway, v: &serde_json::Value, width: u64, rule: WindowRule) {
    let problems = rule.problems(v);
    if !problems.is_empty() || u(v, "frameWidth") != width {
        gw.fail(&format!(
            "want {width}-wide frames played cleanly: {}\n{v}",
            problems.join("; ")
        ));
    }
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["videoCodec"], "video/H264", "{v}");
    assert!(
        v["location"].as_str().is_some_and(|l| l.contains("/whep/")),
        "{v}"
    );
    println!(
        "viewer {}: POST→answer {:.0} ms, POST→first decoded frame {:.0} ms, {} frames, {} audio packets",
        v["location"],
        v["postMs"].as_f64().unwrap_or(-1.0),
        v["firstFrameMs"].as_f64().unwrap_or(-1.0),
        u(v, "framesDecoded"),
        u(v, "audioPackets")
    );
}

fn sessions(gw: &Gateway) -> Vec<serde_json::Value> {
    let r = gw
        .http_get("/api/v1/webrtc/sessions")
        .expect("GET sessions");
    assert_eq!(r.status, 200);
    r.json().expect("JSON")["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// An H.264 + Opus camera that allows one RTSP session (503 to a second
/// DESCRIBE, like many cameras): read once, it plays in Chromium with
/// Opus audio.
#[test]
fn h264_opus_camera_plays_in_chromium_with_audio_and_delete_frees_it() {
    let _guard = serial();
    let cam = Camera::start(CameraOpts {
        max_sessions: 1,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::Opus)
    });
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    let live = gw.wait_live("cam", Duration::from_secs(20));
    let codecs: Vec<&str> = live["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["codec"].as_str())
        .collect();
    assert_eq!(codecs, ["h264", "opus"], "{live}");

    let p = play(&mut gw, &["cam"], 1, End::Delete);
    let v = &p.viewers()[0];
    assert_video(&mut gw, v, 640, true);
    if u(v, "audioPackets") < 100 || v["audioCodec"] != "audio/opus" || u(v, "audioSamples") == 0 {
        gw.fail(&format!("want Opus audio, got: {v}"));
    }
    assert!(v["firstFrameMs"].as_f64().is_some(), "{v}");
    assert_eq!(v["deleteStatus"], 200, "{v}");
    assert_eq!(
        cam.clients_connected(),
        1,
        "the camera is read in one session"
    );

    // DELETE freed everything: no session, no WebRTC reader, no subscriber.
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = gw.stream("cam")?;
        (sessions(&gw).is_empty() && s["readers"]["webrtc"] == 0).then_some(())
    });
    if gone.is_none() {
        gw.fail("session still listed after DELETE");
    }
    let log = gw.log();
    assert!(
        log.contains("WebRTC viewer gone: ended by the viewer (DELETE)"),
        "{}",
        tail(&log, 40)
    );
}

/// The frequency in Hz of the first audio track of `url` as ffmpeg decodes
/// 2 s of it (mono 48 kHz), by zero crossings after the first 200 ms.
fn tone_of(url: &str) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
        ])
        .args([
            "-map", "0:a:0", "-t", "2.2", "-ac", "1", "-ar", "48000", "-f", "s16le", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .skip(9600)
        .collect();
    assert!(
        pcm.len() > 48_000,
        "{} samples; {}",
        pcm.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 48_000.0)
}

/// AAC is no WebRTC codec: a viewer offering Opus gets the `cam~opus`
/// rendition (AAC decoded and encoded to Opus once, in process), with the
/// camera's 440 Hz tone audible (Chromium's audio level), in real time.
#[test]
fn h264_aac_camera_plays_with_opus_sound_transcoded_in_process() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));

    let p = play(&mut gw, &["cam"], 1, End::Delete);
    let v = &p.viewers()[0];
    // Video as always, and audio decoded through the window (>= 90 % of
    // 48 kHz samples over it).
    assert_video(&mut gw, v, 640, true);
    assert_eq!(v["audioCodec"], "audio/opus", "{v}");
    assert!(u(v, "audioPackets") > 100, "{v}");
    assert_eq!(v["deleteStatus"], 200, "{v}");
    // The same Opus stream, read over RTSP while the rendition lingers and
    // decoded by ffmpeg: the camera's 440 Hz sine, not noise or silence
    // (headless Chromium reports no audio level without an output device).
    let hz = tone_of(&gw.rtsp_url("cam~opus"));
    assert!((hz - 440.0).abs() < 5.0, "tone at {hz:.1} Hz");
    let rendition = gw
        .stream("cam~opus")
        .expect("rendition listed while in use");
    assert_eq!(rendition["tracks"][0]["codec"], "h264", "{rendition}");
    assert_eq!(rendition["tracks"][1]["codec"], "opus", "{rendition}");
    assert_eq!(gw.stream("cam").expect("cam")["tracks"][1]["codec"], "aac");
    // The reader is the rendition's; the path's own stream shows the AAC
    // track's note for viewers that can't take Opus.
    let stream = gw.stream("cam").expect("stream listed");
    assert!(
        stream["tracks"][1]["webrtc"]
            .to_string()
            .contains("transcoded to Opus"),
        "{stream}"
    );
}

#[test]
fn five_viewers_at_once() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Opus));
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));

    let child = spawn_play(&gw, &["cam"], 5, End::Vanish);
    // While they play, the API counts five connected WebRTC readers.
    let seen = poll_until(
        Duration::from_secs(PLAY_SECONDS + 10),
        Duration::from_millis(200),
        || {
            let list = sessions(&gw);
            let connected = list.iter().filter(|s| s["state"] == "connected").count();
            (connected == 5 && gw.stream("cam")?["readers"]["webrtc"] == 5).then_some(list)
        },
    );
    let p = finish(child, &mut gw);
    let Some(list) = seen else {
        gw.fail("never saw 5 connected sessions in the API");
    };
    for s in &list {
        assert_eq!(s["path"], "cam");
        assert_eq!(s["video_codec"], "h264");
        assert_eq!(s["audio_codec"], "opus");
    }
    assert_eq!(p.viewers().len(), 5);
    // Five Chromium decoders share the CI machine's cores with other suites:
    // a decoder running late drops frames that arrived whole (CI saw 17 of
    // ~120 with 0 packets lost and 0 freezes). What the gateway controls
    // (>= 90 frames decoded, no loss, no freeze, 1x) is held as for one viewer.
    let rule = WindowRule {
        max_dropped: 25,
        ..WindowRule::video_25fps(true)
    };
    for v in p.viewers() {
        assert_video_with(&mut gw, v, 640, rule);
        assert!(u(v, "audioPackets") > 100, "{v}");
    }
    // Chromium was killed without DELETE or DTLS close_notify: the sessions
    // go away at the ICE consent timeout (15 s without STUN), not before.
    let after = sessions(&gw);
    assert!(!after.is_empty() && after.len() <= 5, "{after:?}");
    let stats = &after[0];
    // The test camera's ball scene encodes to about 100 kbit/s.
    assert!(
        u(stats, "packets_sent") > 300 && u(stats, "bytes_sent") > 20_000,
        "{stats}"
    );
    assert!(stats["rtt_ms"].as_f64().is_some(), "{stats}");
    let dropped = poll_until(Duration::from_secs(40), Duration::from_millis(500), || {
        sessions(&gw).is_empty().then_some(())
    });
    if dropped.is_none() {
        gw.fail("vanished viewers were not dropped at the ICE consent timeout");
    }
    assert!(
        gw.log().contains("the viewer stopped answering"),
        "{}",
        tail(&gw.log(), 30)
    );
}

#[test]
fn two_stream_paths_at_once() {
    let _guard = serial();
    let big = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Opus));
    let small = Camera::start(CameraOpts {
        width: 320,
        height: 180,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let mut gw = start_gateway(&[format!("a={}", big.url()), format!("b={}", small.url())]);
    gw.wait_live("a", Duration::from_secs(20));
    gw.wait_live("b", Duration::from_secs(20));

    let p = play(&mut gw, &["a", "b"], 2, End::Delete);
    let vs = p.viewers().clone();
    assert_eq!(vs.len(), 4);
    // Four Chromium decoders and two lanes of tests on CI's two cores: one
    // freeze (a frame shown 3x late) is the machine's; lost or dropped
    // frames and a low rate still fail.
    let one_freeze = |audio| WindowRule {
        max_freezes: 1,
        ..WindowRule::video_25fps(audio)
    };
    for v in &vs {
        let url = v["url"].as_str().unwrap_or_default();
        if url.ends_with("/a/whep") {
            assert_video_with(&mut gw, v, 640, one_freeze(true));
            assert!(u(v, "audioPackets") > 100, "{v}");
        } else {
            assert_video_with(&mut gw, v, 320, one_freeze(false));
            assert_eq!(u(v, "audioPackets"), 0, "{v}");
        }
    }
}

#[test]
fn b_frames_are_reported() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts {
        bframes: true,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let p = play(&mut gw, &["cam"], 1, End::Delete);
    // Reported, and decoded: Chromium shows 640-wide pictures from the
    // stream in the window after its first frame. (Not the full frame
    // rate: today Chromium decodes only ~8 of the ~100 frames of a 4 s
    // window of this B-frame stream, asking for keyframes (PLI) all the
    // time: the reason the gateway warns about B-frames.)
    let v = &p.viewers()[0];
    let frames = v["window"]["frames"].as_u64().unwrap_or(0);
    if frames == 0 || u(v, "frameWidth") != 640 {
        gw.fail(&format!("B-frame stream not decoded: {v}"));
    }
    let stream = gw.stream("cam").expect("stream listed");
    let notes = stream["webrtc"]["notes"].to_string();
    assert!(notes.contains("B-frames"), "{stream}");
    assert!(
        gw.log().contains("the video has B-frames"),
        "{}",
        tail(&gw.log(), 30)
    );
}

#[test]
fn whep_errors_from_a_real_gateway() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let mut gw = start_gateway(&[
        format!("cam={}", cam.url()),
        "down=rtsp://127.0.0.1:9/none".to_owned(),
    ]);
    gw.wait_live("cam", Duration::from_secs(20));
    let port = gw.http_port();
    let r = http_request(
        port,
        "POST",
        "/cam/whep",
        &[("Content-Type", "text/plain")],
        b"v=0",
    )
    .unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    let r = http_request(
        port,
        "POST",
        "/nope/whep",
        &[("Content-Type", "application/sdp")],
        b"v=0",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    let r = http_request(
        port,
        "POST",
        "/cam/whep",
        &[("Content-Type", "application/sdp")],
        b"garbage",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let r = http_request(
        port,
        "POST",
        "/down/whep",
        &[("Content-Type", "application/sdp")],
        b"v=0",
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("not live"), "{}", r.text());
    let r = http_request(port, "OPTIONS", "/cam/whep", &[], b"").unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
}

/// ICE-TCP (RFC 6544) on the same port number, with a str0m viewer that
/// only connects over TCP: media flows and the API says `tcp`.
#[test]
fn ice_tcp_viewer_receives_media() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Opus));
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let handle = std::thread::spawn(move || {
        testkit::whep::play(
            http,
            "cam",
            &testkit::whep::Opts {
                delete: false,
                ..testkit::whep::Opts::new(testkit::whep::Via::Tcp, Duration::from_secs(5))
            },
        )
    });
    let seen = poll_until(Duration::from_secs(8), Duration::from_millis(200), || {
        sessions(&gw)
            .into_iter()
            .find(|s| s["state"] == "connected" && s["transport"] == "tcp")
    });
    let r = handle.join().expect("viewer thread");
    let problems = r.problems(CAMERA_FPS, MIN_FPS_SHARE, true);
    if !problems.is_empty() || seen.is_none() {
        gw.fail(&format!(
            "ICE-TCP viewer: {problems:?}\n{r:?}; API saw tcp session: {seen:?}"
        ));
    }
    assert!(
        r.first_frame_has_sps,
        "the first frame carries SPS/PPS: {r:?}"
    );
    println!(
        "ICE-TCP viewer: connected {:?}, first frame {:?}, {} video / {} audio frames, {} packets",
        r.connected, r.first_frame, r.video_frames, r.audio_frames, r.packets
    );
}

/// The same over UDP with the str0m viewer, joining mid-GOP of a 10 s GOP:
/// the first frame is a keyframe with parameter sets and arrives within 3 s
/// (only the GOP cache can do that; the camera's next keyframe is ~7 s
/// away), and every frame after it arrives.
#[test]
fn str0m_udp_viewer_starts_at_a_keyframe() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts {
        gop: 250,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let r = testkit::whep::play(
        http,
        "cam",
        &testkit::whep::Opts {
            delete: true,
            ..testkit::whep::Opts::new(testkit::whep::Via::Udp, Duration::from_secs(5))
        },
    );
    let mut problems = r.problems(CAMERA_FPS, MIN_FPS_SHARE, false);
    if r.first_keyframe.is_none() || r.first_keyframe != r.first_frame || !r.first_frame_has_sps {
        problems.push("the first frame is not a keyframe with SPS/PPS".into());
    }
    if r.first_frame.is_none_or(|t| t >= Duration::from_secs(3)) {
        problems.push(format!("first frame after {:?}, want < 3 s", r.first_frame));
    }
    if !problems.is_empty() {
        gw.fail(&format!("UDP viewer: {problems:?}\n{r:?}"));
    }
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        sessions(&gw).is_empty().then_some(())
    });
    assert!(gone.is_some(), "DELETE frees the session");
}

/// G.711 passes through: a PCMA camera's audio reaches Chromium.
#[test]
fn pcma_camera_audio_plays_in_chromium() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Pcma));
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let p = play(&mut gw, &["cam"], 1, End::Delete);
    let v = &p.viewers()[0];
    assert_video(&mut gw, v, 640, true);
    if u(v, "audioPackets") < 100 || v["audioCodec"] != "audio/PCMA" {
        gw.fail(&format!("want PCMA audio, got: {v}"));
    }
}

/// H.265 goes to viewers that offer it (the str0m viewer does), with
/// VPS/SPS/PPS before the first keyframe; a browser that does not offer
/// H.265 gets 422 naming the codec.
#[test]
fn h265_goes_to_viewers_that_offer_it() {
    let _guard = serial();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H265, AudioCodec::None));
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let r = testkit::whep::play(
        http,
        "cam",
        &testkit::whep::Opts {
            delete: true,
            ..testkit::whep::Opts::new(testkit::whep::Via::Udp, Duration::from_secs(5))
        },
    );
    // H.265 NAL header byte: type in bits 1..=6; VPS 32, SPS 33, PPS 34.
    let types: Vec<u8> = r
        .first_frame_nal_headers
        .iter()
        .map(|h| (h >> 1) & 0x3f)
        .collect();
    let problems = r.problems(CAMERA_FPS, MIN_FPS_SHARE, false);
    if !problems.is_empty() || !types.starts_with(&[32, 33, 34]) {
        gw.fail(&format!(
            "H.265 viewer: {problems:?}\n{r:?}, first frame NAL types {types:?}"
        ));
    }

    let child = spawn_play(&gw, &["cam"], 1, End::Delete);
    let mut out = String::new();
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let v: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap_or_default();
    let viewer = &v["viewers"][0];
    match viewer["status"].as_u64() {
        // Chromium without H.265, a gateway that transcodes: the `~h264`
        // rendition (the `transcode` feature; transcode_e2e checks it).
        Some(201) if viewer["videoCodec"] == "video/H264" => {
            let transcodes = cfg!(feature = "transcode");
            assert!(
                transcodes,
                "H.264 from a gateway that can't transcode: {viewer}"
            );
            assert!(
                viewer["location"].to_string().contains("/cam~h264/"),
                "{viewer}"
            );
        }
        Some(201) => {
            // Chromium offered H.265: then it must decode and play it.
            assert_eq!(viewer["videoCodec"], "video/H265", "{viewer}");
            let problems = WindowRule::video_25fps(false).problems(viewer);
            if !problems.is_empty() {
                gw.fail(&format!("Chromium took H.265 but: {problems:?}\n{viewer}"));
            }
        }
        Some(422) => {
            let transcodes = cfg!(feature = "transcode");
            assert!(!transcodes, "422 although the gateway transcodes: {viewer}");
            assert!(viewer["error"].to_string().contains("h265"), "{viewer}");
        }
        _ => gw.fail(&format!("Chromium and H.265: {v}")),
    }
    println!("Chromium and H.265: HTTP {}", viewer["status"]);
}

/// A stalled ICE-TCP viewer (connected, then never reads) does not hold up
/// a UDP viewer of the same stream: its own packets are dropped once its
/// queue is full, and the other viewer gets every frame. The camera sends
/// noise at 8 Mbit/s, video only (a ball scene would compress to ~100 kbit/s) and the
/// stalled viewer advertises a tiny TCP window, so the stall backs up into
/// the gateway within a second instead of vanishing into kernel buffers.
#[test]
fn stalled_tcp_viewer_does_not_block_others() {
    let _guard = serial();
    let cam = Camera::start(CameraOpts {
        bitrate_kbps: 8000,
        pattern: "snow".into(),
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let mut gw = start_gateway(&[format!("cam={}", cam.url())]);
    gw.wait_live("cam", Duration::from_secs(20));
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let dropped = |gw: &Gateway| {
        gw.http_get("/api/v1/webrtc/sessions")
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v["dropped_packets"].as_u64())
            .unwrap_or(0)
    };
    let dropped_before = dropped(&gw);
    let stalled = std::thread::spawn(move || {
        testkit::whep::play(
            http,
            "cam",
            &testkit::whep::Opts {
                stall_after: Some(Duration::from_millis(500)),
                delete: false,
                ..testkit::whep::Opts::new(testkit::whep::Via::Tcp, Duration::from_secs(10))
            },
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let r = testkit::whep::play(
        http,
        "cam",
        &testkit::whep::Opts::new(testkit::whep::Via::Udp, Duration::from_secs(8)),
    );
    let drops = dropped(&gw) - dropped_before;
    let s = stalled.join().expect("stalled viewer thread");
    // Video only: with the 8 Mbit/s noise encoder the camera's Opus branch
    // starves on a 2-core machine (0 audio frames even without a stalled
    // viewer), which is the camera's problem, not the gateway's.
    // At 8 Mbit/s on two loaded cores the test's own str0m receiver can miss
    // a datagram now and then (a NACK, repaired by RTX): what this test is
    // about is that the bystander gets its frames, so loss repaired in time
    // is not held against it here (the other WebRTC tests demand none).
    let problems: Vec<String> = r
        .problems(CAMERA_FPS, MIN_FPS_SHARE, false)
        .into_iter()
        .filter(|p| !(p.starts_with("lost packets on loopback") && r.nacks <= 5))
        .collect();
    if !problems.is_empty() {
        gw.fail(&format!(
            "UDP viewer beside a stalled one: {problems:?}\n{r:?}\nstalled: {s:?}"
        ));
    }
    assert!(
        s.connected.is_some(),
        "the stalled viewer had connected: {s:?}"
    );
    if drops == 0 {
        gw.fail(&format!(
            "the stalled viewer's queue never filled (0 packets dropped): the stall \
             did not reach the gateway's per-viewer drop path\nstalled: {s:?}"
        ));
    }
    println!(
        "UDP viewer beside a stalled ICE-TCP viewer: {} video / {} audio frames, {:.1} fps; \
         {drops} packets of the stalled viewer dropped",
        r.video_frames,
        r.audio_frames,
        r.video_fps()
    );
}

/// The gateway's own viewer page (web/player.js) plays over WebRTC first:
/// the built-in demo clip, no camera needed.
#[test]
fn viewer_page_plays_the_demo_over_webrtc() {
    let _guard = serial();
    let mut gw = Gateway::start(Vec::<String>::new());
    gw.wait_live("demo", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{}", gw.http_port());
    let run = run_browser_script(
        "viewer_page.mjs",
        &[base.as_str(), "demo", "--frames", "100", "--timeout", "45"],
        Duration::from_secs(90),
    );
    let v = run.json;
    let problems = WindowRule::video_25fps(false).problems(&v);
    if v["ok"] != true || v["transport"] != "webrtc" || !problems.is_empty() {
        gw.fail(&format!(
            "viewer page over WebRTC: {problems:?}\n{v}\n{}",
            run.stderr
        ));
    }
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360)),
        "{v}"
    );
}
