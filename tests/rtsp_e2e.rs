//! End to end: a GStreamer RTSP camera -> rtspgate -> ffmpeg/ffprobe, no mocks.
//! Every test runs under `testkit::serial()` so the 2-core CI machine is not
//! oversubscribed by encoders and decoders.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

/// 25 fps for 6 s of reading: 150 frames. A reader may miss at most 3 of
/// them, and never two in a row (the report's pts-gap check).
const READ_SECS: f64 = 6.0;
const MIN_VIDEO: u64 = 147;

fn gateway_for(camera: &Camera, name: &str) -> Gateway {
    let mut gw = Gateway::start([format!("{name}={}", camera.url())]);
    gw.wait_live(name, Duration::from_secs(20));
    gw
}

#[test]
fn h264_aac_over_tcp_and_udp() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let gw = gateway_for(&cam, "cam");
    let url = gw.rtsp_url("cam");
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = ffmpeg_read(&url, transport, READ_SECS);
        report.assert_clean(MIN_VIDEO, (READ_SECS * 40.0) as u64);
        assert_eq!(
            report.codecs(),
            [
                ("video".into(), "h264".into()),
                ("audio".into(), "aac".into())
            ]
        );
        eprintln!(
            "h264+aac over {transport:?}: {} video frames ({:.1} fps), {} audio frames",
            report.video_frames(),
            report.video().and_then(|v| v.fps()).unwrap_or(0.0),
            report.audio_frames()
        );
    }
    let s = gw.stream("cam").expect("stream in API");
    assert!(s["bytes_out"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(s["tracks"][0]["width"], 640, "{s}");
    assert_eq!(s["tracks"][0]["fps"], 25.0, "{s}");
}

#[test]
fn h265_pcma_over_tcp_and_udp() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H265, AudioCodec::Pcma));
    let gw = gateway_for(&cam, "hevc");
    let url = gw.rtsp_url("hevc");
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = ffmpeg_read(&url, transport, READ_SECS);
        // G.711 at 20 ms per packet: 50 audio frames a second.
        report.assert_clean(MIN_VIDEO, (READ_SECS * 40.0) as u64);
        assert_eq!(
            report.codecs(),
            [
                ("video".into(), "hevc".into()),
                ("audio".into(), "pcm_alaw".into())
            ]
        );
    }
}

#[test]
fn two_readers_at_once_and_camera_read_once() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Pcmu));
    let gw = gateway_for(&cam, "cam");
    let url = gw.rtsp_url("cam");
    let u2 = url.clone();
    let second = thread::spawn(move || ffmpeg_read(&u2, Transport::Udp, READ_SECS));
    let first = ffmpeg_read(&url, Transport::Tcp, READ_SECS);
    let second = second.join().expect("reader thread");
    first.assert_clean(MIN_VIDEO, 200);
    second.assert_clean(MIN_VIDEO, 200);
    // The camera saw exactly one client, the gateway, whatever the readers
    // did (counted by the camera: one RTSP connection).
    assert_eq!(
        cam.clients_connected(),
        1,
        "the camera must be pulled once\n{}",
        tail(&gw.log(), 40)
    );
}

#[test]
fn late_reader_starts_with_a_keyframe() {
    let _g = serial();
    require_tools();
    // A 10 s GOP: joining 3 s in lands mid-GOP, 7 s before the camera's
    // next keyframe, so only the GOP cache can give the reader a keyframe
    // first and soon.
    let mut opts = CameraOpts::new(VideoCodec::H264, AudioCodec::None);
    opts.gop = 250;
    let cam = Camera::shared(opts);
    let gw = gateway_for(&cam, "cam");
    thread::sleep(Duration::from_millis(3300));
    let url = gw.rtsp_url("cam");
    let started = Instant::now();
    let first = first_video_frame(&url, Transport::Tcp).expect("a first video frame");
    assert!(
        first.packet_key && first.frame_key == Some(true),
        "the first packet and frame must be a keyframe: {first:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "first frame took {:?}: the GOP cache should make it immediate",
        started.elapsed()
    );
}

#[test]
fn camera_restart_reader_keeps_going() {
    let _g = serial();
    require_tools();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let mut gw = gateway_for(&cam, "cam");
    let url = gw.rtsp_url("cam");
    // Read until 4 s after the stream is live again, however long the
    // gateway's reconnect backoff took (60 s is only the upper bound).
    let reader = FfmpegReader::start(&url, Transport::Tcp, 60.0);
    thread::sleep(Duration::from_secs(3));
    cam.kill();
    gw.wait_state("cam", "reconnecting", Duration::from_secs(15));
    cam.restart();
    gw.wait_live("cam", Duration::from_secs(40));
    thread::sleep(Duration::from_secs(4));
    let report = reader.stop();
    // ~3 s (75 frames, plus the cached GOP) before the outage, and 4 s
    // (100 frames) again after it on the same session: more than the first
    // life alone can give, and ffmpeg was still reading when stopped.
    let v = report.video().expect("video stream");
    assert!(
        report.stopped && v.frames >= 150,
        "reader got {} frames (still reading at the end: {}); it should get frames again \
         after the camera came back\n{report}",
        v.frames,
        report.stopped
    );
    assert!(
        report.errors.is_empty(),
        "decode errors: {:?}\n{report}",
        report.errors
    );
    let s = gw.stream("cam").expect("stream");
    assert!(s["reconnects"].as_u64().unwrap_or(0) >= 1, "{s}");
}

#[test]
fn camera_down_at_startup_comes_live() {
    let _g = serial();
    require_tools();
    let port = free_port();
    let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{port}/test")]);
    let s = gw.wait_state("cam", "reconnecting", Duration::from_secs(10));
    assert!(
        s["error"]
            .as_str()
            .unwrap_or("")
            .contains("connection refused"),
        "{s}"
    );
    let _cam = Camera::start_on_port(port, CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    gw.wait_live("cam", Duration::from_secs(40));
    ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 3.0).assert_clean(72, 0);
}

#[test]
fn digest_auth_and_no_password_leaks() {
    let _g = serial();
    require_tools();
    let secret = "s3cr3t-Pa55";
    let cam = Camera::start(
        CameraOpts::new(VideoCodec::H264, AudioCodec::None).with_auth("admin", secret),
    );
    let good = cam.url_with_creds();
    let bad = good.replace(secret, "wrong-pass");
    let mut gw = Gateway::start(["-vv".to_owned(), format!("ok={good}"), format!("bad={bad}")]);
    gw.wait_live("ok", Duration::from_secs(20));
    let b = gw.wait_state("bad", "reconnecting", Duration::from_secs(20));
    assert!(
        b["error"].as_str().unwrap_or("").contains("401"),
        "a wrong password must be reported in plain words: {b}"
    );
    ffmpeg_read(&gw.rtsp_url("ok"), Transport::Tcp, 3.0).assert_clean(72, 0);
    let api = gw.streams().expect("API answers");
    let log = gw.log();
    for (what, text) in [("API", api.to_string()), ("log", log)] {
        assert!(!text.contains(secret), "password in the {what}:\n{text}");
        assert!(
            !text.contains("wrong-pass"),
            "password in the {what}:\n{text}"
        );
    }
}

/// A TCP proxy between rtspgate and the camera that rewrites RTSP messages,
/// to play a router's RTSP ALG or a camera quirk. `request` rewrites each
/// request from the gateway; `response` each response (header and body, with
/// Content-Length fixed). Interleaved data (`$`) passes through untouched.
fn start_rewriting_proxy(
    upstream_port: u16,
    request: fn(String) -> String,
    response: fn(String) -> String,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("local addr").port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                continue;
            };
            let pairs = [
                (
                    client.try_clone().expect("dup"),
                    server.try_clone().expect("dup"),
                    request,
                ),
                (server, client, response),
            ];
            for (from, to, rewrite) in pairs {
                thread::spawn(move || relay(from, to, rewrite));
            }
        }
    });
    port
}

/// Copies `from` to `to`, rewriting complete RTSP messages until the first
/// interleaved `$` frame, then copying raw.
fn relay(mut from: TcpStream, mut to: TcpStream, rewrite: fn(String) -> String) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut raw = false;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if raw {
            if to.write_all(&chunk[..n]).is_err() {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if buf.first() == Some(&b'$') {
                raw = true;
                if to.write_all(&buf).is_err() {
                    return;
                }
                buf.clear();
                break;
            }
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&buf[..head_end + 4]).into_owned();
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let total = head_end + 4 + body_len;
            if buf.len() < total {
                break;
            }
            let body = String::from_utf8_lossy(&buf[head_end + 4..total]).into_owned();
            let message = rewrite(format!("{head}{body}"));
            let (new_head, new_body) = message
                .split_once("\r\n\r\n")
                .map_or((message.clone(), String::new()), |(h, b)| {
                    (h.to_owned(), b.to_owned())
                });
            let new_head: Vec<String> = new_head
                .split("\r\n")
                .map(|l| {
                    if l.to_ascii_lowercase().starts_with("content-length:") {
                        format!("Content-Length: {}", new_body.len())
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            let out = format!("{}\r\n\r\n{new_body}", new_head.join("\r\n"));
            if to.write_all(out.as_bytes()).is_err() {
                return;
            }
            buf.drain(..total);
        }
    }
    // Half-close, so what the other side still sends gets through.
    let _ = to.shutdown(Shutdown::Write);
}

/// Like a broken router ALG: SETUP's `client_port=` is rewritten so the
/// camera sends its UDP to a dead port.
fn break_client_port(msg: String) -> String {
    match msg.find("client_port=") {
        Some(i) if msg.starts_with("SETUP") => {
            let end = msg[i..].find([';', '\r']).map_or(msg.len(), |e| i + e);
            format!("{}client_port=9-10{}", &msg[..i], &msg[end..])
        }
        _ => msg,
    }
}

fn unchanged(msg: String) -> String {
    msg
}

/// Like cameras that only send parameter sets in-band: no
/// `sprop-parameter-sets` in the SDP.
fn strip_sprop(msg: String) -> String {
    msg.lines()
        .map(|l| {
            if l.starts_with("a=fmtp:") {
                l.split(';')
                    .filter(|p| !p.trim_start().starts_with("sprop-parameter-sets"))
                    .collect::<Vec<_>>()
                    .join(";")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + if msg.ends_with("\r\n") { "\r\n" } else { "" }
}

#[test]
fn udp_blocked_by_alg_falls_back_to_tcp() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let alg = start_rewriting_proxy(cam.port(), break_client_port, unchanged);
    let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{alg}/test")]);
    let s = gw.wait_live("cam", Duration::from_secs(30));
    assert_eq!(s["transport"], "tcp", "{s}");
    let notice = s["notice"].as_str().unwrap_or("");
    assert!(
        notice.contains("no media for 3 s over UDP") && notice.contains("switched to TCP"),
        "the fallback must be explained in plain words: {s}"
    );
    assert!(gw.log().contains("switched to TCP"));
    ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 3.0).assert_clean(72, 0);
}

fn rtsp_exchange(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("send");
    // Half-close: the server answers, sees EOF and closes, so read_to_end ends.
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn garbage_and_bad_requests_do_not_disturb_readers() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let gw = gateway_for(&cam, "cam");
    let url = gw.rtsp_url("cam");
    let reader = thread::spawn(move || ffmpeg_read(&url, Transport::Tcp, READ_SECS));
    thread::sleep(Duration::from_secs(1));
    let port = gw.rtsp_port();

    // Garbage: 400 and the connection is closed (read_to_end returns).
    let reply = rtsp_exchange(port, b"HELLO THERE\r\n\r\n");
    assert!(reply.starts_with("RTSP/1.0 400"), "{reply}");
    let noise: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = rtsp_exchange(port, &noise);
    // Unknown path.
    let reply = rtsp_exchange(
        port,
        b"DESCRIBE rtsp://127.0.0.1/nope RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    );
    assert!(reply.starts_with("RTSP/1.0 404"), "{reply}");
    // Unknown session.
    let reply = rtsp_exchange(
        port,
        b"PLAY rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 2\r\nSession: 12345\r\n\r\n",
    );
    assert!(reply.starts_with("RTSP/1.0 454"), "{reply}");
    // Missing CSeq: 400, connection closed.
    let reply = rtsp_exchange(port, b"OPTIONS rtsp://127.0.0.1/cam RTSP/1.0\r\n\r\n");
    assert!(reply.starts_with("RTSP/1.0 400"), "{reply}");

    let report = reader.join().expect("reader thread");
    report.assert_clean(MIN_VIDEO, 200);
}

#[test]
fn silent_sessions_time_out() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let cfg = scratch_path("timeout", "toml");
    std::fs::write(&cfg, "rtsp_session_timeout = 2\n").expect("write config");
    let mut gw = Gateway::start([
        "--config".to_owned(),
        cfg.display().to_string(),
        format!("cam={}", cam.url()),
    ]);
    gw.wait_live("cam", Duration::from_secs(20));
    let mut s = TcpStream::connect(("127.0.0.1", gw.rtsp_port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let url = gw.rtsp_url("cam");
    write!(
        s,
        "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    )
    .expect("send SETUP");
    let started = Instant::now();
    let mut out = Vec::new();
    // The server answers, then closes the connection once the session expires.
    let r = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        r.is_ok(),
        "connection not closed by the server: {r:?}\n{text}"
    );
    assert!(text.starts_with("RTSP/1.0 200"), "{text}");
    assert!(text.contains("timeout=2"), "{text}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(5),
        "session ended after {waited:?}"
    );
}

#[test]
fn parameter_sets_only_in_band() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let proxy = start_rewriting_proxy(cam.port(), unchanged, strip_sprop);
    // Make sure the rewrite does what it says, against the camera itself.
    let sdp = rtsp_exchange(
        proxy,
        format!("DESCRIBE rtsp://127.0.0.1:{proxy}/test RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes(),
    );
    assert!(
        sdp.contains("a=fmtp:96") && !sdp.contains("sprop-parameter-sets"),
        "{sdp}"
    );
    let gw = {
        let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{proxy}/test")]);
        gw.wait_live("cam", Duration::from_secs(20));
        gw
    };
    let s = gw.stream("cam").expect("stream");
    assert_eq!(s["tracks"][0]["width"], 640, "{s}");
    // Our DESCRIBE carries the parameter sets learnt in-band.
    let ours = rtsp_exchange(
        gw.rtsp_port(),
        format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            gw.rtsp_url("cam")
        )
        .as_bytes(),
    );
    assert!(ours.contains("sprop-parameter-sets="), "{ours}");
    ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, READ_SECS).assert_clean(MIN_VIDEO, 200);
}

#[test]
fn no_arguments_serves_the_demo_clip() {
    let _g = serial();
    require_tools();
    // Only ports are given (tests run side by side): no source, no config.
    let mut gw = Gateway::start(Vec::<String>::new());
    let s = gw.wait_live("demo", Duration::from_secs(10));
    assert_eq!(s["tracks"][0]["codec"], "h264", "{s}");
    assert!(
        gw.log().contains("serving a built-in demo clip"),
        "{}",
        gw.log()
    );
    // 12 s crosses the clip's 10 s loop: timestamps must stay continuous.
    let report = ffmpeg_read(&gw.rtsp_url("demo"), Transport::Tcp, 12.0);
    report.assert_clean(297, 540);
    let v = report.video().expect("video");
    let fps = v.fps().unwrap_or(0.0);
    assert!((24.0..=26.0).contains(&fps), "demo plays at {fps} fps");
}

/// GStreamer's `rtspsrc` as the reader: decodes 100 frames, then EOS.
fn gst_reads(url: &str, protocols: &str) -> (bool, String) {
    let mut child = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            &format!("protocols={protocols}"),
            "latency=200",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "identity",
            "eos-after=100",
            "!",
            "fakesink",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 (see .ci/run)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (ok, err)
}

#[test]
fn gstreamer_rtspsrc_reads_over_tcp_and_udp() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let gw = gateway_for(&cam, "cam");
    let url = gw.rtsp_url("cam");
    for protocols in ["tcp", "udp"] {
        let started = Instant::now();
        let (ok, err) = gst_reads(&url, protocols);
        assert!(
            ok,
            "rtspsrc over {protocols} did not decode 100 frames:\n{err}"
        );
        assert!(
            err.trim().is_empty(),
            "rtspsrc over {protocols} reported: {err}"
        );
        eprintln!(
            "rtspsrc over {protocols}: 100 frames in {:?}",
            started.elapsed()
        );
    }
}

/// Keyframe interval of the aggregating cameras: 10 frames (0.4 s at 25 fps).
const NVR_GOP: u32 = 10;

/// NVR compatibility: many NVRs and VMSs reject aggregation packets (H.264
/// STAP-A/STAP-B/MTAP, H.265 AP) and need the parameter sets in band. From
/// cameras that send aggregation packets, the re-serve carries none, every
/// keyframe's access unit has the parameter sets (SPS+PPS, VPS+SPS+PPS)
/// before its IDR/IRAP NAL unit, and ffmpeg decodes it without an error.
#[test]
fn reserve_never_aggregates_and_sends_parameter_sets_before_keyframes() {
    let _g = serial();
    require_tools();
    let cams = [VideoCodec::H264, VideoCodec::H265].map(|video| {
        Camera::shared(CameraOpts {
            aggregate: true,
            gop: NVR_GOP,
            ..CameraOpts::new(video, AudioCodec::None)
        })
    });
    let mut gw = Gateway::start([
        format!("avc={}", cams[0].url()),
        format!("hevc={}", cams[1].url()),
    ]);
    gw.wait_live("avc", Duration::from_secs(20));
    gw.wait_live("hevc", Duration::from_secs(20));
    let rt = testkit::rtsp_reader::runtime();
    for (name, cam) in ["avc", "hevc"].into_iter().zip(&cams) {
        let url = gw.rtsp_url(name);
        let ffmpeg = FfmpegReader::start(&url, Transport::Tcp, READ_SECS);
        let until = Instant::now() + Duration::from_secs_f64(READ_SECS);
        let record = |url: String| {
            rt.spawn(async move {
                testkit::rtsp_reader::read(&url, testkit::rtsp_reader::Via::Tcp, until).await
            })
        };
        let (ours, theirs) = (record(url.clone()), record(cam.url()));
        let ours = rt
            .block_on(ours)
            .expect("reader task")
            .expect("read rtspgate");
        let theirs = rt
            .block_on(theirs)
            .expect("reader task")
            .expect("read camera");
        let report = ffmpeg.finish();
        let (v, cam_v) = (
            ours.video().expect("video from rtspgate"),
            theirs.video().expect("video from the camera"),
        );
        // The camera does aggregate (see testkit's
        // aggregating_camera_sends_stap_a_and_ap), rtspgate does not.
        assert!(
            cam_v.aggregation_packets() > 0,
            "{name}: the camera sent no aggregation packet; {}",
            theirs.summary()
        );
        assert_eq!(
            v.aggregation_packets(),
            0,
            "{name}: rtspgate sent aggregation packets; {}",
            ours.summary()
        );
        let keyframes = v.keyframe_access_units();
        for k in &keyframes {
            assert!(
                k.missing_parameter_sets.is_empty(),
                "{name}: keyframe without its parameter sets before it: {k:?}"
            );
        }
        // Every NVR_GOP-th frame is a keyframe: over the RTP timestamps
        // received (90 kHz, 3600 per frame) at least that many, and no
        // fewer than READ_SECS gives less the reader's start-up.
        let span = match (v.packets.first(), v.packets.last()) {
            (Some(a), Some(b)) => b.ts.wrapping_sub(a.ts) / 3600 + 1,
            _ => 0,
        };
        let want = (span / NVR_GOP).max((READ_SECS * 25.0) as u32 / NVR_GOP - 1);
        eprintln!(
            "{name}: camera sent {} aggregation packets, rtspgate 0; {} keyframes in {span} \
             frames, each after its parameter sets; {}",
            cam_v.aggregation_packets(),
            keyframes.len(),
            ours.summary()
        );
        assert!(
            keyframes.len() >= want as usize,
            "{name}: {} keyframes in {span} frames, want >= {want}: {keyframes:?}",
            keyframes.len()
        );
        report.assert_clean(MIN_VIDEO, 0);
    }
}
