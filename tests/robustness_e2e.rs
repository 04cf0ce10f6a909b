//! End to end, with real peers, for what goes wrong between a camera and
//! the gateway: packet loss on a real UDP link, a camera that only offers
//! Basic auth, and a camera that comes back with other codecs.
//!
//! Needs the GStreamer camera's packages, ffmpeg/ffprobe (see .ci/run).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{self, Via};
use testkit::udp_relay::Relay;
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);
const FPS: f64 = 25.0;

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `rtspgate_rtp_packets_lost_total{path="<path>"}` from `/metrics`.
fn metric_lost(gw: &Gateway, path: &str) -> Option<u64> {
    let text = gw.http_get("/metrics").ok()?.text();
    let key = format!("rtspgate_rtp_packets_lost_total{{path=\"{path}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// `rtspgate_frames_dropped_total{path="<path>",...}` from `/metrics`,
/// summed over the reasons.
fn metric_frames_dropped(gw: &Gateway, path: &str) -> Option<u64> {
    let text = gw.http_get("/metrics").ok()?.text();
    let key = format!("rtspgate_frames_dropped_total{{path=\"{path}\",");
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&key))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// A burst of video packets lost on the UDP link between camera and
/// gateway (every video packet for 300 ms): the loss is counted (API and
/// /metrics agree with what was dropped), the access units it spoiled are
/// dropped and counted, the source stays live without reconnecting, video
/// resumes at the next keyframe (the GOP is 1 s) and every frame after it
/// passes, and an ffmpeg reader of the re-serve reading across the burst
/// decodes with no error (a frame that lost its reference is never sent).
#[test]
fn udp_packet_loss_is_counted_and_video_resumes_at_the_next_keyframe() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let relay = Relay::start(cam.port());
    let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{}/test", relay.port())]);
    let live = gw.wait_live("cam", LIVE);
    assert_eq!(
        live["transport"], "udp",
        "the source must be read over UDP: {live}"
    );

    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    let start = Instant::now();
    let reader = rt.spawn(async move {
        rtsp_reader::read(&url, Via::Tcp, start + Duration::from_secs(10)).await
    });
    let ffmpeg = FfmpegReader::start(&gw.rtsp_url("cam"), Transport::Tcp, 8.0);
    thread::sleep(Duration::from_secs(3));
    let lost_before = u(&gw.stream("cam").expect("stream"), "packets_lost");
    relay.drop_every(1);
    thread::sleep(Duration::from_millis(300));
    relay.drop_every(0);
    let loss_to = Instant::now();
    let dropped = relay.dropped();
    let rec = rt
        .block_on(reader)
        .expect("reader task")
        .unwrap_or_else(|e| gw.fail(&format!("reader: {e}")));
    let read = ffmpeg.finish();
    let s = gw.stream("cam").expect("stream in the API");
    let lost = u(&s, "packets_lost");
    let frames_dropped = metric_frames_dropped(&gw, "cam");
    println!(
        "dropped {dropped} video packets; the API says {lost} lost ({lost_before} before); \
         frames dropped {frames_dropped:?}; reader: {}\n{read}",
        rec.summary()
    );
    assert_eq!(lost_before, 0, "nothing lost before the relay dropped");
    assert!(dropped >= 5, "the relay dropped only {dropped} packets");
    if lost != dropped {
        gw.fail(&format!(
            "packets_lost {lost} in the API, but {dropped} were dropped on the link: {s}"
        ));
    }
    assert_eq!(
        metric_lost(&gw, "cam"),
        Some(lost),
        "/metrics and the API agree"
    );
    // At least the frames of the 300 ms burst (7 at 25 fps), at most the
    // burst and the GOP after it.
    let fd = frames_dropped.unwrap_or(0);
    assert!(
        (5..=40).contains(&fd),
        "{fd} frames dropped for a 300 ms burst"
    );
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(
        u(&s, "reconnects"),
        0,
        "loss must not restart the source: {s}"
    );

    // The reader: nothing lost between gateway and reader; the one gap is
    // the burst plus the rest of its GOP, and the frame after it is a
    // keyframe; from there on every frame.
    let v = rec.video().expect("video track");
    assert_eq!(v.lost(), (0, 0), "{}", rec.summary());
    let frames: Vec<(Instant, bool)> = v
        .packets
        .iter()
        .filter(|p| p.marker)
        .map(|p| (p.at, p.key))
        .collect();
    let (gap, resumed_key) = frames
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[1].1))
        .max_by_key(|g| g.0)
        .unwrap_or_default();
    assert!(
        gap > Duration::from_millis(250) && gap < Duration::from_millis(1700),
        "longest gap {gap:?}: want the burst up to the next keyframe (1 s GOP): {}",
        rec.summary()
    );
    assert!(
        resumed_key,
        "video resumed on a frame that is not a keyframe"
    );
    let after_from = loss_to + Duration::from_millis(1300);
    let after_to = start + Duration::from_secs(9);
    let after = v.frames_between(after_from, after_to);
    let want = ((after_to - after_from).as_secs_f64() * FPS * 0.95) as usize;
    assert!(
        after >= want,
        "{after} frames after the loss, want >= {want}: {}",
        rec.summary()
    );
    // ffmpeg: no decode error, and one hole in video time (the burst up to
    // the next keyframe); 8 s at 25 fps less that; AAC at 44.1 kHz: 43/s.
    let gaps = read.video().map(|v| v.pts_gaps()).unwrap_or_default();
    assert!(
        matches!(gaps[..], [(a, b)] if b - a > 0.25 && b - a < 1.7),
        "want one video pts gap of the burst up to the next keyframe, got {gaps:?}\n{read}"
    );
    let problems: Vec<String> = read
        .problems(((8.0 - 1.7) * FPS * 0.95) as u64, 300)
        .into_iter()
        .filter(|p| !p.starts_with("1 pts gap(s) in video"))
        .collect();
    assert!(problems.is_empty(), "unclean read: {problems:?}\n{read}");
}

/// A camera that offers only Basic auth (RFC 7617; e.g. older cameras):
/// credentials in the source URL work, a wrong password is reported in
/// plain words, and neither password shows in the API or the log.
#[test]
fn basic_auth_camera() {
    let _g = serial();
    require_tools();
    let secret = "b4sic-Pa55";
    let cam = Camera::start(
        CameraOpts::new(VideoCodec::H264, AudioCodec::None).with_basic_auth("admin", secret),
    );
    let good = cam.url_with_creds();
    let bad = good.replace(secret, "wrong-pass");
    let mut gw = Gateway::start([format!("ok={good}"), format!("bad={bad}")]);
    gw.wait_live("ok", LIVE);
    let b = gw.wait_state("bad", "reconnecting", LIVE);
    let err = b["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("refused the credentials") && err.contains("401"),
        "a wrong password must be reported in plain words: {b}"
    );
    ffmpeg_read(&gw.rtsp_url("ok"), Transport::Tcp, 3.0).assert_clean(73, 0);
    let api = gw.streams().expect("API answers").to_string();
    let paths = gw.http_get("/api/v1/paths").expect("paths").text();
    let log = gw.log();
    for (what, text) in [("streams API", api), ("paths API", paths), ("log", log)] {
        for pass in [secret, "wrong-pass"] {
            assert!(!text.contains(pass), "password in the {what}:\n{text}");
        }
    }
}

/// The camera restarts on the same port with H.265 instead of H.264. An
/// RTSP reader described for H.264 is ended (connection closed, no packet
/// of the new codec); a new DESCRIBE gets H.265, which decodes. A WebRTC
/// session negotiated for H.264 is ended by the gateway at the new
/// stream's first keyframe ("the source restarted with different tracks;
/// reconnect"), it gets no frame of the new codec, and a new WHEP session
/// gets H.265.
#[test]
fn camera_back_with_other_codecs() {
    let _g = serial();
    require_tools();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let port = cam.port();
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);

    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    let t0 = Instant::now();
    let reader =
        rt.spawn(
            async move { rtsp_reader::read(&url, Via::Tcp, t0 + Duration::from_secs(40)).await },
        );
    let http = SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let viewer = thread::spawn(move || {
        let opts = whep::Opts {
            delete: false,
            ..whep::Opts::new(whep::Via::Udp, Duration::from_secs(20))
        };
        whep::play(http, "cam", &opts)
    });
    let connected = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = gw.sessions("webrtc");
        (s.len() == 1 && s[0]["detail"]["state"] == "connected").then_some(s)
    });
    let Some(connected) = connected else {
        gw.fail(&format!(
            "no connected WebRTC session: {:?}",
            gw.sessions("webrtc")
        ));
    };
    assert_eq!(
        connected[0]["detail"]["video_codec"], "h264",
        "{connected:?}"
    );
    thread::sleep(Duration::from_secs(2));

    cam.kill();
    let killed = Instant::now();
    gw.wait_state("cam", "reconnecting", LIVE);
    let _h265 = Camera::start_on_port(port, CameraOpts::new(VideoCodec::H265, AudioCodec::None));
    let s = gw.wait_live("cam", Duration::from_secs(40));
    assert_eq!(s["tracks"][0]["codec"], "h265", "{s}");

    // The RTSP reader: ended by the server, nothing after the camera died.
    let rec = rt
        .block_on(reader)
        .expect("reader task")
        .unwrap_or_else(|e| gw.fail(&format!("reader: {e}")));
    let Some((ended_at, why)) = &rec.ended else {
        gw.fail(&format!(
            "the H.264 reader was not ended: {}",
            rec.summary()
        ));
    };
    assert!(*ended_at > killed, "{why}");
    let v = &rec.tracks[0];
    assert_eq!(v.encoding, "h264");
    let late = v
        .packets
        .iter()
        .filter(|p| p.at > killed + Duration::from_millis(500))
        .count();
    assert_eq!(
        late,
        0,
        "packets after the restart reached the H.264 reader: {}",
        rec.summary()
    );
    let want = ((killed - t0).as_secs_f64() * FPS * 0.95) as usize;
    assert!(v.frames() >= want, "want >= {want}: {}", rec.summary());

    // A new DESCRIBE: H.265, decodable.
    let r = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 3.0);
    r.assert_clean(73, 0);
    assert_eq!(r.codecs(), [("video".to_owned(), "hevc".to_owned())]);

    // The WebRTC session: gone from the API, with the reason in the log.
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        gw.sessions("webrtc").is_empty().then_some(())
    });
    if gone.is_none() {
        gw.fail(&format!(
            "the H.264 WebRTC session outlived the codec change: {:?}",
            gw.sessions("webrtc")
        ));
    }
    assert!(
        gw.log()
            .contains("the source restarted with different tracks; reconnect"),
        "{}",
        tail(&gw.log(), 30)
    );
    let old = viewer.join().expect("viewer thread");
    // 25 fps until the kill, plus at most one cached GOP at the start.
    let most = (killed - t0).as_secs_f64() * FPS + FPS + 5.0;
    let least = (killed - t0).as_secs_f64() * FPS * 0.85;
    assert!(
        (least..=most).contains(&(old.video_frames as f64)),
        "the H.264 viewer got {} frames; want {least:.0}..={most:.0} (those before the restart): {old:?}",
        old.video_frames
    );
    let new = whep::play(
        http,
        "cam",
        &whep::Opts::new(whep::Via::Udp, Duration::from_secs(4)),
    );
    let types: Vec<u8> = new
        .first_frame_nal_headers
        .iter()
        .map(|h| (h >> 1) & 0x3f)
        .collect();
    // VPS, SPS, PPS first: an H.265 keyframe.
    if !new.problems(FPS, 0.85, false).is_empty() || !types.starts_with(&[32, 33, 34]) {
        gw.fail(&format!(
            "new WHEP session after the change: {:?}, NAL types {types:?}: {new:?}",
            new.problems(FPS, 0.85, false)
        ));
    }
}

/// A restart storm: the camera is killed and started again 10 times while
/// one RTSP reader watches. Each time, the picture is back (the reader's
/// first video packet after the camera answers again) within 2 s, and the
/// reader's one session carries on throughout (no reconnect, no loss).
#[test]
fn restart_storm_every_restart_back_within_2_s() {
    let _g = serial();
    require_tools();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    // The reader sends no keepalive: the session outlives the storm.
    let cfg = scratch_path("storm", "toml");
    std::fs::write(&cfg, "rtsp_session_timeout = 600\n").expect("write config");
    let mut gw = Gateway::start([
        "--config".to_owned(),
        cfg.display().to_string(),
        format!("cam={}", cam.url()),
    ]);
    gw.wait_live("cam", LIVE);
    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    let reader = rt
        .block_on(rtsp_reader::Reader::open(&url, Via::Tcp))
        .unwrap_or_else(|e| gw.fail(&format!("reader: {e}")));
    let ctl = rtsp_reader::Control::default();
    let task = {
        let _e = rt.enter();
        tokio::spawn(reader.record(Instant::now() + Duration::from_secs(300), ctl.clone(), true))
    };
    // (killed at, answering again at)
    let mut restarts = Vec::new();
    for i in 0..10u64 {
        // Live for a while, as a camera between reboots.
        thread::sleep(Duration::from_secs(3));
        let killed = Instant::now();
        cam.kill();
        gw.wait_state("cam", "reconnecting", Duration::from_secs(10));
        // Down for 1.5 to 3.75 s, as a rebooting camera: a plain doubling
        // backoff (1, 2, 4 s) is mid-wait when it answers again.
        thread::sleep(Duration::from_millis(1500 + 250 * i));
        cam.restart();
        restarts.push((killed, Instant::now()));
    }
    thread::sleep(Duration::from_secs(3));
    ctl.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rec = rt.block_on(task).expect("reader task");
    let v = rec.video().expect("video track");
    let mut backs = Vec::new();
    for (i, (killed, ready)) in restarts.iter().enumerate() {
        let first = v.packets.iter().find(|p| p.at > *ready).map(|p| p.at);
        let Some(first) = first else {
            gw.fail(&format!("no picture after restart {i}: {}", rec.summary()));
        };
        backs.push((first - *ready).as_secs_f64());
        let during = v
            .packets
            .iter()
            .filter(|p| p.at > *killed + Duration::from_millis(200) && p.at < *ready)
            .count();
        assert_eq!(during, 0, "packets while the camera was down (restart {i})");
    }
    let max = backs.iter().cloned().fold(0.0, f64::max);
    let mut sorted = backs.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "restart storm: picture back {:.2} s (median), {max:.2} s (max) after the camera answered; per restart {backs:.2?}; reader: {}",
        sorted[sorted.len() / 2],
        rec.summary()
    );
    assert!(
        rec.ended.is_none(),
        "the reader's session ended: {:?}",
        rec.ended
    );
    if max >= 2.0 {
        gw.fail(&format!(
            "a restart took {max:.2} s to show pictures again, want < 2 s: {backs:.2?}"
        ));
    }
    let s = gw.stream("cam").expect("stream");
    assert!(u(&s, "reconnects") >= 10, "{s}");
}
