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

// ---- camera quirks (issue 12) ----

use std::process::Command;
use std::time::Instant;
use testkit::process::run_bounded;
use testkit::rtsp_raw::RawRtsp;
use testkit::rtsp_reader::{self, Via};

fn describe(port: u16, path: &str) -> Option<testkit::rtsp_raw::RawResponse> {
    let mut c = RawRtsp::connect(port).ok()?;
    c.exchange(&format!(
        "DESCRIBE rtsp://127.0.0.1:{port}{path} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    ))
}

/// `--max-sessions 1`: while one client plays, a second one's DESCRIBE is
/// answered 503; once the first is gone, a new client is served again.
#[test]
fn one_session_camera_refuses_a_second_describe() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        max_sessions: 1,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::Opus)
    });
    let rt = rtsp_reader::runtime();
    let url = cam.url();
    let first = rt
        .block_on(rtsp_reader::Reader::open(&url, Via::Tcp))
        .unwrap();
    let second = rt.block_on(rtsp_reader::Reader::open(&url, Via::Tcp));
    let err = second.err().expect("second session must be refused");
    assert!(err.starts_with("DESCRIBE: 503"), "{err}");
    let rec = rt.block_on(first.record(
        Instant::now() + Duration::from_secs(1),
        rtsp_reader::Control::default(),
        true,
    ));
    assert!(
        rec.audio().is_some_and(|a| a.packets.len() > 20),
        "{}",
        rec.summary()
    );
    // The first is gone: a new client is served.
    let again = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        describe(cam.port(), "/test").filter(|r| r.status == 200)
    });
    assert!(again.is_some(), "camera still refuses after the first left");
}

/// The relay's `start_mid_fragment`: the first video packet a UDP client
/// gets is an FU-A without the start bit.
#[test]
fn relay_starts_udp_video_mid_fu_a() {
    let _guard = serial();
    require_tools();
    for video in [VideoCodec::H264, VideoCodec::H265] {
        let cam = Camera::start(CameraOpts {
            pattern: "snow".into(),
            bitrate_kbps: 2000,
            ..CameraOpts::new(video, AudioCodec::None)
        });
        let relay = Relay::start(cam.port());
        relay.start_mid_fragment();
        relay.drop_every(50);
        let url = format!("rtsp://127.0.0.1:{}/test", relay.port());
        let rt = rtsp_reader::runtime();
        let rec = rt
            .block_on(rtsp_reader::read(
                &url,
                Via::Udp,
                Instant::now() + Duration::from_secs(2),
            ))
            .unwrap();
        let first = relay.first_video_packet().expect("no video forwarded");
        let payload = &first[12..];
        // (NAL unit type, FU header) of the first packet.
        let (nal_type, fu_header) = match video {
            VideoCodec::H264 => (payload[0] & 0x1f, payload[1]),
            _ => ((payload[0] >> 1) & 0x3f, payload[2]),
        };
        let fu = if video == VideoCodec::H264 { 28 } else { 49 };
        assert_eq!(
            nal_type,
            fu,
            "{video:?}: first packet {:02x?}",
            &payload[..3]
        );
        assert_eq!(fu_header & 0x80, 0, "{video:?}: first FU has the start bit");
        let v = rec.video().unwrap();
        assert_eq!(
            v.packets.first().map(|p| p.seq),
            Some(u16::from_be_bytes([first[2], first[3]]))
        );
        assert!(relay.dropped() > 0, "drop_every dropped nothing");
        let (lost, _) = v.lost();
        assert!(
            lost >= relay.dropped().saturating_sub(1),
            "lost {lost} dropped {}",
            relay.dropped()
        );
        eprintln!(
            "{video:?}: skipped {} to start mid-fragment, dropped {} of {} video packets; {}",
            relay.skipped_to_fragment(),
            relay.dropped(),
            relay.video_seen(),
            rec.summary()
        );
    }
}

/// The relay's `jump_timestamps_back`: after the jump, video timestamps go
/// back by 10 s at 90 kHz and audio by 10 s at 48 kHz; sender reports move
/// with them.
#[test]
fn relay_moves_rtp_timestamps_back() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::H264, AudioCodec::Opus));
    let relay = Relay::start(cam.port());
    relay.jump_timestamps_back(Duration::from_millis(1500), Duration::from_secs(10));
    let url = format!("rtsp://127.0.0.1:{}/test", relay.port());
    let rt = rtsp_reader::runtime();
    let rec = rt
        .block_on(rtsp_reader::read(
            &url,
            Via::Udp,
            Instant::now() + Duration::from_secs(3),
        ))
        .unwrap();
    for (track, rate) in [
        (rec.video().unwrap(), 90_000i64),
        (rec.audio().unwrap(), 48_000),
    ] {
        let steps: Vec<i64> = track
            .packets
            .windows(2)
            .map(|w| i64::from(w[1].ts.wrapping_sub(w[0].ts) as i32))
            .collect();
        let back: Vec<&i64> = steps.iter().filter(|d| **d < 0).collect();
        assert_eq!(back.len(), 1, "{} steps back: {back:?}", track.encoding);
        let want = -10 * rate;
        assert!(
            (back[0] - want).abs() < rate / 10,
            "{}: jumped {} ticks, want about {want}",
            track.encoding,
            back[0]
        );
    }
    assert!(relay.jumped_packets() > 0);
    eprintln!(
        "jumped {} RTP packets and {} sender reports; {}",
        relay.jumped_packets(),
        relay.jumped_sender_reports(),
        rec.summary()
    );
}

/// NAL unit types (H.265: `(b0 >> 1) & 0x3f`) of an Annex B byte stream.
fn hevc_nal_types(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            out.push((data[i + 3] >> 1) & 0x3f);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Copies `seconds` of the camera's video as an elementary stream.
fn copy_video(url: &str, format: &str, seconds: f64) -> Vec<u8> {
    let out = scratch_path("quirk", format);
    let f = run_bounded(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                url,
            ])
            .args([
                "-t",
                &seconds.to_string(),
                "-map",
                "0:v",
                "-c",
                "copy",
                "-f",
                format,
                "-y",
            ])
            .arg(&out),
        Duration::from_secs_f64(seconds + 15.0),
    );
    assert!(f.success(), "ffmpeg copy failed: {}", f.stderr);
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    data
}

/// `--open-gop`: an IDR first, then CRA keyframes each preceded in band by
/// VPS, SPS, PPS; with B-frames and a GOP of 12 (11 frames after a
/// keyframe are not whole B-B-P groups) RASL pictures follow each CRA.
#[test]
fn open_gop_h265_has_cra_keyframes_with_in_band_parameter_sets() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        open_gop: true,
        bframes: true,
        gop: 12,
        ..CameraOpts::new(VideoCodec::H265, AudioCodec::None)
    });
    let types = hevc_nal_types(&copy_video(&cam.url(), "hevc", 2.0));
    let first_vcl = types.iter().find(|t| **t < 32);
    assert!(
        matches!(first_vcl, Some(19 | 20)),
        "first VCL {first_vcl:?}: {types:?}"
    );
    let cras: Vec<usize> = (0..types.len()).filter(|i| types[*i] == 21).collect();
    assert!(
        cras.len() >= 2,
        "CRA keyframes: {} in {types:?}",
        cras.len()
    );
    for i in &cras {
        let before: Vec<u8> = types[..*i]
            .iter()
            .rev()
            .take_while(|t| **t >= 32)
            .copied()
            .collect();
        for ps in [32, 33, 34] {
            assert!(
                before.contains(&ps),
                "CRA at {i} without NAL {ps} before it: {before:?}"
            );
        }
    }
    let rasl = types.iter().filter(|t| matches!(t, 8 | 9)).count();
    for i in &cras {
        let next = types[i + 1..].iter().find(|t| **t < 32);
        assert!(
            matches!(next, Some(8 | 9) | None),
            "no RASL after the CRA at {i}: {types:?}"
        );
    }
    eprintln!(
        "{} CRA, {rasl} RASL NAL units: {:?}",
        cras.len(),
        &types[..types.len().min(80)]
    );
}

/// Video packets (in decode order) presented before an earlier packet:
/// B-frames. Counted from ffprobe's packet PTS over 2 s of RTSP.
fn reordered_packets(url: &str) -> (usize, usize) {
    let f = run_bounded(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-select_streams",
                "v:0",
            ])
            .args([
                "-read_intervals",
                "%+2",
                "-show_entries",
                "packet=pts",
                "-of",
                "csv=p=0",
            ])
            .arg(url),
        Duration::from_secs(15),
    );
    assert!(f.success(), "ffprobe: {}", f.stderr);
    let pts: Vec<i64> = f
        .stdout
        .lines()
        .filter_map(|l| l.trim_matches(',').trim().parse().ok())
        .collect();
    let mut max = i64::MIN;
    let mut reordered = 0;
    for p in &pts {
        if *p < max {
            reordered += 1;
        }
        max = max.max(*p);
    }
    (reordered, pts.len())
}

#[test]
fn bframes_reorder_h264_and_h265() {
    let _guard = serial();
    require_tools();
    for video in [VideoCodec::H264, VideoCodec::H265] {
        let cam = Camera::start(CameraOpts {
            bframes: true,
            ..CameraOpts::new(video, AudioCodec::None)
        });
        let (reordered, total) = reordered_packets(&cam.url());
        assert!(
            total > 20 && reordered > total / 4,
            "{video:?}: {reordered} of {total}"
        );
        let plain = Camera::start(CameraOpts::new(video, AudioCodec::None));
        let (r0, t0) = reordered_packets(&plain.url());
        assert!(
            t0 > 20 && r0 == 0,
            "{video:?} without B-frames: {r0} of {t0}"
        );
        eprintln!("{video:?}: {reordered} of {total} packets presented before an earlier one");
    }
}

#[test]
fn mjpeg_camera_decodes() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::Mjpeg, AudioCodec::None));
    let r = ffmpeg_read(&cam.url(), Transport::Tcp, 3.0);
    r.assert_clean(65, 0);
    assert_eq!(r.codecs(), [("video".into(), "mjpeg".into())], "{r}");
}

/// `resize`: the same session carries 640x360, then 320x180.
#[test]
fn camera_changes_resolution_mid_stream() {
    let _guard = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        resize: Some((1.5, 320, 180)),
        gop: 10,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let f = run_bounded(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-select_streams",
                "v:0",
            ])
            .args([
                "-read_intervals",
                "%+4",
                "-show_entries",
                "frame=width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(cam.url()),
        Duration::from_secs(20),
    );
    let mut sizes: Vec<&str> = f
        .stdout
        .lines()
        .map(|l| l.trim_matches(','))
        .filter(|l| !l.is_empty())
        .collect();
    sizes.dedup();
    assert_eq!(sizes, ["640,360", "320,180"], "{}", f.stderr);
}

/// VLC's RTSP server: DESCRIBE 200 with H.264 video; it serves RTP over
/// UDP and answers a SETUP for TCP interleaved with 461.
#[test]
fn vlc_is_a_udp_only_h264_source() {
    let _guard = serial();
    require_tools();
    let vlc = Vlc::start();
    let d = vlc.describe().expect("DESCRIBE answered");
    let sdp = d.body_text();
    assert_eq!(d.status, 200, "{sdp}");
    assert!(sdp.contains("m=video"), "{sdp}");
    assert!(sdp.contains("H264/90000"), "{sdp}");
    let control = sdp
        .lines()
        .skip_while(|l| !l.starts_with("m=video"))
        .find_map(|l| l.trim().strip_prefix("a=control:"))
        .expect("video control")
        .to_owned();

    let mut tcp = RawRtsp::connect(vlc.port()).unwrap();
    let refused = tcp.exchange(&format!(
        "SETUP {control} RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    ));
    // 461 Unsupported Transport (VLC 3.0).
    assert_eq!(refused.as_ref().map(|r| r.status), Some(461), "{refused:?}");

    let (rtp, rtcp) = free_udp_port_pair();
    let mut udp = RawRtsp::connect(vlc.port()).unwrap();
    let ok = udp
        .exchange(&format!(
            "SETUP {control} RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port={rtp}-{rtcp}\r\n\r\n"
        ))
        .expect("UDP SETUP answered");
    assert_eq!(ok.status, 200, "{ok:?}");

    let rt = rtsp_reader::runtime();
    let rec = rt
        .block_on(rtsp_reader::read(
            &vlc.url(),
            Via::Udp,
            Instant::now() + Duration::from_secs(2),
        ))
        .unwrap();
    assert!(
        rec.video().is_some_and(|v| v.frames() > 30),
        "{}",
        rec.summary()
    );
}

/// `aggregate`: the camera really sends aggregation packets (H.264 STAP-A,
/// NAL unit type 24; H.265 AP, type 48), and the parameter sets before each
/// keyframe travel in them, as the raw reader sees them.
#[test]
fn aggregating_camera_sends_stap_a_and_ap() {
    let _guard = serial();
    require_tools();
    let rt = rtsp_reader::runtime();
    for video in [VideoCodec::H264, VideoCodec::H265] {
        let cam = Camera::start(CameraOpts {
            aggregate: true,
            gop: 10,
            ..CameraOpts::new(video, AudioCodec::None)
        });
        let rec = rt
            .block_on(rtsp_reader::read(
                &cam.url(),
                Via::Tcp,
                Instant::now() + Duration::from_secs(3),
            ))
            .unwrap();
        let v = rec.video().expect("a video track");
        let aggregation = match video {
            VideoCodec::H264 => rtsp_reader::H264_AGGREGATION[0],
            _ => rtsp_reader::H265_AGGREGATION,
        };
        let parameter_sets = rtsp_reader::parameter_set_types(&v.encoding);
        let with_parameter_sets = v
            .packets
            .iter()
            .filter(|p| p.packet_type == Some(aggregation))
            .filter(|p| parameter_sets.iter().all(|t| p.nal_starts.contains(t)))
            .count();
        // 3 s at 25 fps with a keyframe every 10 frames: 7 or 8 keyframes;
        // the first access unit may have been joined in the middle.
        let keyframes: Vec<_> = v
            .keyframe_access_units()
            .into_iter()
            .filter(|k| !k.first_received)
            .collect();
        eprintln!(
            "{video:?} camera: {} aggregation packets, {with_parameter_sets} with all parameter \
             sets, {} keyframes; {}",
            v.aggregation_packets(),
            keyframes.len(),
            rec.summary()
        );
        assert!(
            v.aggregation_packets() > 0,
            "{video:?}: no aggregation packet; {}",
            rec.summary()
        );
        assert!(keyframes.len() >= 6, "{video:?}: {keyframes:?}");
        assert!(
            with_parameter_sets >= keyframes.len(),
            "{video:?}: {with_parameter_sets} aggregation packets with parameter sets for {} \
             keyframes",
            keyframes.len()
        );
        for k in &keyframes {
            assert!(
                k.missing_parameter_sets.is_empty(),
                "{video:?}: keyframe without its parameter sets: {k:?}"
            );
        }
    }
}
