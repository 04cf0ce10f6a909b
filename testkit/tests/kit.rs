//! Proves the test kit itself against real peers, with no gateway
//! involved: ffmpeg/ffprobe read the GStreamer camera directly.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;
use testkit::*;

const SECONDS: f64 = 5.0;
/// 25 fps for 5 s is 125 frames; allow for the reader's start-up.
const MIN_VIDEO: u64 = 115;

fn assert_codecs(r: &ReadReport, video: &str, audio: &str) {
    let codecs = r.codecs();
    let want = vec![
        ("video".to_string(), video.to_string()),
        ("audio".to_string(), audio.to_string()),
    ];
    assert_eq!(codecs, want, "unexpected streams\n{r}");
}

#[track_caller]
fn assert_fps(r: &ReadReport, want: f64) {
    let fps = r
        .video()
        .and_then(|v| v.fps())
        .unwrap_or_else(|| panic!("no video fps\n{r}"));
    assert!(
        (fps - want).abs() < want * 0.08,
        "video at {fps:.2} fps, want ~{want}\n{r}"
    );
}

fn min_audio(codec: AudioCodec) -> u64 {
    (codec.frames_per_second() * SECONDS * 0.9) as u64
}

#[test]
fn h264_aac_over_tcp_decodes_cleanly() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let r = ffmpeg_read(&cam.url(), Transport::Tcp, SECONDS);
    r.assert_clean(MIN_VIDEO, min_audio(AudioCodec::Aac));
    assert_codecs(&r, "h264", "aac");
    assert_fps(&r, 25.0);
    assert!(r.errors.is_empty(), "{r}");
    assert_eq!(r.first_video_packet_key, Some(true), "{r}");
}

#[test]
fn h264_aac_over_udp_decodes_cleanly() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let r = ffmpeg_read(&cam.url(), Transport::Udp, SECONDS);
    r.assert_clean(MIN_VIDEO, min_audio(AudioCodec::Aac));
    assert!(!r.fell_back_to_tcp(), "{r}");
    assert_codecs(&r, "h264", "aac");
    assert_fps(&r, 25.0);
}

#[test]
fn h265_pcma_over_tcp_decodes_cleanly() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H265, AudioCodec::Pcma));
    let r = ffmpeg_read(&cam.url(), Transport::Tcp, SECONDS);
    r.assert_clean(MIN_VIDEO, min_audio(AudioCodec::Pcma));
    assert_codecs(&r, "hevc", "pcm_alaw");
    // 8 kHz audio in 20 ms packets must not slow the shared pipeline down.
    assert_fps(&r, 25.0);
    assert_eq!(
        ffprobe_streams(&cam.url(), Transport::Tcp),
        r.codecs(),
        "ffprobe and ffmpeg disagree"
    );
}

#[test]
fn other_payloaders_decode_cleanly() {
    let _guard = serial();
    require_tools();
    for (video, audio, want) in [
        (VideoCodec::H264, AudioCodec::Opus, vec!["h264", "opus"]),
        (VideoCodec::None, AudioCodec::Pcmu, vec!["pcm_mulaw"]),
    ] {
        let cam = Camera::start(CameraOpts::new(video, audio));
        let r = ffmpeg_read(&cam.url(), Transport::Tcp, 3.0);
        let min_video = if video == VideoCodec::None { 0 } else { 65 };
        r.assert_clean(min_video, (audio.frames_per_second() * 2.7) as u64);
        let got: Vec<String> = r.streams.iter().map(|s| s.codec.clone()).collect();
        assert_eq!(got, want, "{r}");
    }
}

#[test]
fn digest_auth_is_enforced() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(
        CameraOpts::new(VideoCodec::H264, AudioCodec::Aac).with_auth("alice", "s3cret"),
    );
    assert!(cam
        .url_with_creds()
        .starts_with("rtsp://alice:s3cret@127.0.0.1:"));

    let ok = ffmpeg_read(&cam.url_with_creds(), Transport::Tcp, SECONDS);
    ok.assert_clean(MIN_VIDEO, min_audio(AudioCodec::Aac));
    assert_codecs(&ok, "h264", "aac");

    for url in [
        cam.url(),
        cam.url().replacen("rtsp://", "rtsp://alice:wrong@", 1),
    ] {
        let denied = ffmpeg_read(&url, Transport::Tcp, 2.0);
        assert_ne!(denied.exit_code, Some(0), "{denied}");
        assert!(
            denied.errors.iter().any(|e| e.contains("401")),
            "expected a 401 error\n{denied}"
        );
        assert_eq!(denied.video_frames(), 0, "{denied}");
    }
}

/// The keyframe detector must be able to say "no": a second reader joining a
/// shared camera mid-GOP gets P-frames first (and the H.264 decoder drops
/// them silently, so only the packet flag reveals it).
#[test]
fn keyframe_detection_sees_mid_gop_joins() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        gop: 250, // one keyframe every 10 s
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    // A fresh pipeline starts with a keyframe.
    assert!(first_video_frame_is_key(&cam.url(), Transport::Tcp));

    let url = cam.url();
    let first = thread::spawn(move || ffmpeg_read(&url, Transport::Tcp, 6.0));
    thread::sleep(Duration::from_millis(2500));
    let late = first_video_frame(&cam.url(), Transport::Tcp).unwrap();
    assert!(!late.packet_key, "{late:?}");
    assert_eq!(late.frame_key, Some(false), "{late:?}");
    assert_eq!(late.pict_type.as_deref(), Some("P"), "{late:?}");

    let late_read = ffmpeg_read(&cam.url(), Transport::Tcp, 2.0);
    assert_eq!(late_read.first_video_packet_key, Some(false), "{late_read}");

    // The late joiners must not disturb the first reader (the camera must
    // not seek/restart the shared pipeline on each PLAY).
    let first = first.join().unwrap();
    first.assert_clean(140, 0);
    assert_eq!(first.first_video_packet_key, Some(true), "{first}");
}

#[test]
fn camera_restarts_on_the_same_port() {
    let _guard = serial();
    require_tools();
    let mut cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Pcmu));
    let port = cam.port();
    cam.kill();
    assert!(!cam.is_running());
    let down = ffmpeg_read(&cam.url(), Transport::Tcp, 1.0);
    assert_ne!(down.exit_code, Some(0), "{down}");
    assert!(
        down.errors.iter().any(|e| e.contains("Connection refused")),
        "{down}"
    );

    cam.restart();
    assert_eq!(cam.port(), port);
    assert!(cam.is_running());
    let r = ffmpeg_read(&cam.url(), Transport::Tcp, 2.0);
    r.assert_clean(40, 80);

    // And a second camera on a port we chose.
    let p = free_port();
    let other = Camera::start_on_port(p, CameraOpts::new(VideoCodec::H265, AudioCodec::None));
    assert_eq!(other.port(), p);
    assert_eq!(other.url(), format!("rtsp://127.0.0.1:{p}/test"));
}

/// The camera counts its RTSP connections (what "the gateway pulls a camera
/// once" is measured with), and the benchmark's fan-out mode serves one
/// encoder on several mounts.
#[test]
fn camera_counts_clients_and_fans_out_to_mounts() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        mounts: 2,
        pattern: "snow".into(),
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    assert_eq!(cam.clients_connected(), 0);
    for mount in 0..2 {
        let url = format!("{}{mount}", cam.url());
        let r = ffmpeg_read(&url, Transport::Tcp, 2.0);
        r.assert_clean(40, 0);
        assert_eq!(r.codecs(), [("video".into(), "h264".into())], "{r}");
    }
    let counted = poll_until(Duration::from_secs(2), Duration::from_millis(50), || {
        (cam.clients_connected() == 2).then_some(())
    });
    assert!(
        counted.is_some(),
        "{} clients counted",
        cam.clients_connected()
    );
}

#[test]
fn free_ports_are_bindable() {
    let p = free_port();
    TcpListener::bind(("127.0.0.1", p)).expect("free_port is bindable");
    let (rtp, rtcp) = free_udp_port_pair();
    assert_eq!(rtp % 2, 0);
    assert_eq!(rtcp, rtp + 1);
}

/// The tiny HTTP client used for the gateway's JSON API.
#[test]
fn http_client_reads_json() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"streams":[{"name":"cam","state":"live"}]}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8(req).unwrap()
    });
    let r = http_get(port, "/api/v1/streams").unwrap();
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /api/v1/streams HTTP/1.0\r\n"), "{req}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json().unwrap()["streams"][0]["state"], "live");
}
