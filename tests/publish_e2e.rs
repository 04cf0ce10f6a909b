//! End to end, RTSP publish (issue 14): ffmpeg (`-f rtsp`, TCP and UDP)
//! and GStreamer's `rtspclientsink` publish into the gateway; ffmpeg (RTSP,
//! LL-HLS), hls.js in Chromium and a WHEP client read it back; the publish
//! rules refuse who and where they must.
//!
//! Needs ffmpeg/ffprobe, GStreamer (gst-launch-1.0, x264enc,
//! rtspclientsink) and Chromium (see .ci/run).

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{self, Via};
use testkit::*;

const FPS: f64 = 25.0;

/// A gateway with two publisher paths (`pub`; `over` with
/// `override_publisher`), a pulled path `cam` (a dead camera: the path
/// exists all the same), anonymous readers and the publisher `pub`.
fn gateway() -> Gateway {
    let cfg = scratch_path("publish", "toml");
    std::fs::write(
        &cfg,
        r#"[paths.pub]
source = "publisher"

[paths.over]
source = "publisher"
override_publisher = true

[paths.cam]
source = "rtsp://127.0.0.1:9/nothing-listens-here"

[[auth.users]]
user = "any"
permissions = [{ action = "read" }, { action = "api" }]

[[auth.users]]
user = "pub"
pass = "secret"
permissions = [{ action = "publish" }]
"#,
    )
    .expect("write config");
    Gateway::start(["--config".to_owned(), cfg.display().to_string()])
}

fn publish_url(gw: &Gateway, path: &str, creds: bool) -> String {
    let url = gw.rtsp_url(path);
    if creds {
        url.replacen("rtsp://", "rtsp://pub:secret@", 1)
    } else {
        url
    }
}

/// ffmpeg publishing `seconds` of 320x180 25 fps test video (H.264 or
/// H.265, keyframe each second) and, with `audio`, a 440 Hz AAC tone at 48 kHz,
/// paced in real time.
fn ffmpeg_publish(url: &str, transport: &str, h265: bool, audio: bool, seconds: u32) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"]);
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=f=440:r=48000"]);
    }
    cmd.args(["-t", &seconds.to_string()]);
    if h265 {
        cmd.args([
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:bframes=0",
        ]);
    } else {
        cmd.args(["-c:v", "libx264", "-tune", "zerolatency"]);
    }
    cmd.args(["-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]);
    if audio {
        cmd.args(["-c:a", "aac"]);
    }
    cmd.args(["-f", "rtsp", "-rtsp_transport", transport])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// ffmpeg's words and exit status, once it ends (killed after `within`).
fn finish(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "killed at the deadline".into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn wait_live(gw: &mut Gateway, path: &str) {
    gw.wait_live(path, Duration::from_secs(15));
}

/// H.264 + AAC over TCP: RTSP, LL-HLS (ffmpeg and hls.js) and WHEP (a str0m
/// client and Chromium) read it.
#[test]
fn ffmpeg_publishes_h264_and_aac_over_tcp_and_every_reader_plays_it() {
    let _g = serial();
    require_tools();
    let mut gw = gateway();
    let publisher = ffmpeg_publish(&publish_url(&gw, "pub", true), "tcp", false, true, 45);
    wait_live(&mut gw, "pub");
    let s = gw.stream("pub").expect("stream");
    let codecs: Vec<&str> = s["tracks"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["codec"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codecs, ["h264", "aac"], "{s}");

    let rtsp = ffmpeg_read(&gw.rtsp_url("pub"), Transport::Tcp, 4.0);
    println!(
        "publish: TCP H.264+AAC -> RTSP {} video, {} audio frames",
        rtsp.video_frames(),
        rtsp.audio_frames()
    );
    // 4 s at 25 fps after the cached GOP; AAC at 48 kHz: 46.9 frames/s.
    rtsp.assert_clean((4.0 * FPS * 0.95) as u64, (4.0 * 46.9 * 0.9) as u64);

    let hls = ffmpeg_read_hls(&gw.http_url("/pub/index.m3u8"), 4);
    println!("publish: LL-HLS (ffmpeg) {hls}");
    let whep = testkit::whep::play(
        std::net::SocketAddr::from(([127, 0, 0, 1], gw.http_port())),
        "pub",
        &testkit::whep::Opts::new(testkit::whep::Via::Udp, Duration::from_secs(4)),
    );
    println!(
        "publish: WHEP {:.1} video fps, {} audio frames",
        whep.video_fps(),
        whep.audio_frames
    );
    // The AAC reaches WebRTC as Opus, transcoded in process.
    whep.assert_clean(FPS, 0.9, true);

    let v = run_browser_script(
        "hls_play.mjs",
        &[
            gw.http_url("/pub/index.m3u8"),
            "--frames".into(),
            "100".into(),
            "--timeout".into(),
            "40".into(),
        ],
        Duration::from_secs(70),
    );
    println!("publish: hls.js {}", v.json);
    assert_eq!(v.code, Some(0), "{}\n{}", v.json, v.stderr);
    let problems = WindowRule::video_25fps(true).problems(&v.json);
    assert!(problems.is_empty(), "{problems:?}\n{}", v.json);
    // 4 s of video; AAC at 48 kHz: 46.9 frames a second.
    hls.assert_clean((4.0 * FPS) as usize - 1, (4.0 * 46.9 * 0.95) as usize);

    // Chromium over WHEP: the H.264, and the AAC as Opus.
    let played = run_browser_script(
        "whep_play.mjs",
        &[
            "--page".to_owned(),
            gw.http_url("/api/v1/streams"),
            "--url".into(),
            gw.http_url("/pub/whep"),
            "--seconds".into(),
            "6".into(),
            "--delete".into(),
            "--timeout".into(),
            "50".into(),
        ],
        Duration::from_secs(80),
    );
    let v = &played.json["viewers"][0];
    println!("publish: Chromium WHEP {v}");
    assert_eq!(v["status"], 201, "{}\n{}", played.json, played.stderr);
    let problems = WindowRule::video_25fps(true).problems(v);
    assert!(problems.is_empty(), "Chromium WHEP: {problems:?}\n{v}");

    let (code, err) = finish(publisher, Duration::from_secs(55));
    assert_eq!(code, Some(0), "the publisher was cut off: {err}");
    gw.assert_no_panic();
}

/// H.265 over UDP, GStreamer's rtspclientsink, and the rules: anonymous,
/// a second publisher, a pulled path and an unconfigured path are refused;
/// `override_publisher` hands the path to the newcomer.
#[test]
fn udp_h265_rtspclientsink_and_the_publish_rules() {
    let _g = serial();
    require_tools();
    let mut gw = gateway();

    // H.265 over UDP.
    let publisher = ffmpeg_publish(&publish_url(&gw, "pub", true), "udp", true, false, 12);
    wait_live(&mut gw, "pub");
    let read = ffmpeg_read(&gw.rtsp_url("pub"), Transport::Tcp, 3.0);
    println!("publish: UDP H.265 -> RTSP {} frames", read.video_frames());
    assert_eq!(
        read.codecs().first().map(|c| c.1.as_str()),
        Some("hevc"),
        "{read}"
    );
    read.assert_clean((3.0 * FPS * 0.95) as u64, 0);

    // While it publishes: a second publisher, anonymous, a pulled path and
    // an unconfigured one are refused, each with its status.
    let refused = |url: String| {
        let (code, err) = finish(
            ffmpeg_publish(&url, "tcp", false, false, 2),
            Duration::from_secs(15),
        );
        assert_ne!(code, Some(0), "publishing to {url} was accepted");
        err
    };
    let err = refused(publish_url(&gw, "pub", false));
    assert!(err.contains("401"), "anonymous: {err}");
    let err = refused(publish_url(&gw, "pub", true));
    assert!(err.contains("4XX") || err.contains("455"), "second: {err}");
    let err = refused(publish_url(&gw, "cam", true));
    assert!(err.contains("4XX") || err.contains("455"), "pulled: {err}");
    let err = refused(publish_url(&gw, "elsewhere", true));
    assert!(err.contains("404"), "unconfigured: {err}");
    let (code, err) = finish(publisher, Duration::from_secs(20));
    assert_eq!(code, Some(0), "the first publisher was cut off: {err}");

    // override_publisher: the second publisher takes over, the first ends.
    let first = ffmpeg_publish(&publish_url(&gw, "over", true), "tcp", false, false, 20);
    wait_live(&mut gw, "over");
    let second = ffmpeg_publish(&publish_url(&gw, "over", true), "tcp", false, false, 6);
    let (code, _) = finish(first, Duration::from_secs(15));
    assert_ne!(code, Some(0), "the first publisher must be disconnected");
    let read = ffmpeg_read(&gw.rtsp_url("over"), Transport::Tcp, 2.0);
    read.assert_clean((2.0 * FPS * 0.9) as u64, 0);
    let (code, err) = finish(second, Duration::from_secs(20));
    assert_eq!(code, Some(0), "the second publisher: {err}");

    // GStreamer's rtspclientsink.
    let mut gst = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "is-live=true", "num-buffers=250", "!"])
        .args(["video/x-raw,width=320,height=180,framerate=25/1", "!"])
        .args(["x264enc", "tune=zerolatency", "key-int-max=25", "!"])
        .args([
            "rtspclientsink",
            "protocols=tcp",
            "user-id=pub",
            "user-pw=secret",
        ])
        .arg(format!("location={}", gw.rtsp_url("pub")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gst-launch-1.0");
    wait_live(&mut gw, "pub");
    let read = ffmpeg_read(&gw.rtsp_url("pub"), Transport::Tcp, 3.0);
    println!(
        "publish: rtspclientsink -> RTSP {} frames",
        read.video_frames()
    );
    read.assert_clean((3.0 * FPS * 0.95) as u64, 0);
    let _ = gst.kill();
    let _ = gst.wait();
    gw.assert_no_panic();
}

/// A reader stays connected while the publisher leaves and comes back, and
/// gets frames from both publications.
#[test]
fn a_reader_outlives_its_publisher_and_gets_the_next_one() {
    let _g = serial();
    require_tools();
    let mut gw = gateway();
    let started = Instant::now();
    let first = ffmpeg_publish(&publish_url(&gw, "pub", true), "tcp", false, false, 4);
    wait_live(&mut gw, "pub");
    let url = gw.rtsp_url("pub");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(11);
    let reader = thread::spawn(move || {
        rtsp_reader::runtime().block_on(rtsp_reader::read(&url, Via::Tcp, until))
    });
    let (code, err) = finish(first, Duration::from_secs(15));
    assert_eq!(code, Some(0), "{err}");
    let left = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    let s = gw.stream("pub").expect("the path stays");
    assert_eq!(s["state"], "reconnecting", "{s}");
    let back = Instant::now();
    let second = ffmpeg_publish(&publish_url(&gw, "pub", true), "tcp", false, false, 5);
    let rec = reader.join().expect("reader").expect("RTSP reader");
    let (code, err) = finish(second, Duration::from_secs(15));
    assert_eq!(code, Some(0), "{err}");
    let video = rec.video().expect("video track");
    // What each publisher sent while the reader read: the first its last
    // (4 s - time to live), the second from 1 s after its start (ffmpeg's
    // own start-up) to the reader's end or its 5 s.
    let before = video.frames_between(t0, left);
    let first_span = (started + Duration::from_secs(4))
        .saturating_duration_since(t0)
        .as_secs_f64();
    let second_from = back + Duration::from_secs(1);
    let second_to = until.min(back + Duration::from_secs(5));
    let after = video.frames_between(second_from, second_to);
    let second_span = second_to
        .saturating_duration_since(second_from)
        .as_secs_f64();
    println!(
        "publish: reader across publishers: {before} frames from the first ({first_span:.1} s), \
         {after} from the second ({second_span:.1} s) ({})",
        rec.summary()
    );
    assert!(
        before as f64 >= first_span * FPS * 0.9,
        "first publication: {before} frames in {first_span:.1} s"
    );
    assert!(
        after as f64 >= second_span * FPS * 0.9,
        "second publication: {after} frames in {second_span:.1} s"
    );
    let (lost, _) = video.lost();
    assert_eq!(lost, 0, "RTP lost across publishers: {}", rec.summary());
    gw.assert_no_panic();
}
