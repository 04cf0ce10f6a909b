//! End to end, cameras that bend the specs the way real ones do (issue 12):
//! each quirk read by the gateway once, then played by real peers. Each
//! test prints one `quirk:` line with what the peers saw (frames, errors,
//! time to live), the figures of the closing note's table.
//!
//! Needs the GStreamer camera's packages, ffmpeg/ffprobe and VLC (see
//! .ci/run).

use std::thread;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{self, Via};
use testkit::vlc::Vlc;
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);
const FPS: f64 = 25.0;

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `rtspgate_frames_dropped_total{path="cam",reason="<reason>"}`.
fn frames_dropped(gw: &Gateway, reason: &str) -> u64 {
    let key = format!("rtspgate_frames_dropped_total{{path=\"cam\",reason=\"{reason}\"}} ");
    gw.http_get("/metrics")
        .ok()
        .and_then(|r| {
            r.text()
                .lines()
                .find_map(|l| l.strip_prefix(&key).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Seconds from `since` until the path is live.
fn time_to_live(gw: &mut Gateway, since: Instant) -> f64 {
    gw.wait_live("cam", LIVE);
    since.elapsed().as_secs_f64()
}

/// An H.264 + Opus camera that answers 503 to a second session (many
/// cameras allow one): the gateway reads every track in its one session
/// (the camera counts one connection), and the Opus track reaches an RTSP
/// reader and an LL-HLS reader, decoding at 50 frames a second.
#[test]
fn opus_camera_that_allows_one_session() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        max_sessions: 1,
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::Opus)
    });
    let t0 = Instant::now();
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    let live_after = time_to_live(&mut gw, t0);
    let rtsp = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 4.0);
    let hls = ffmpeg_read_hls(&gw.http_url("/cam/index.m3u8"), 4);
    println!(
        "quirk: opus one-session camera: live after {live_after:.2} s; camera connections {}; \
         ffmpeg RTSP {} video / {} audio frames, {} errors; ffmpeg LL-HLS {} video / {} audio frames, {} errors",
        cam.clients_connected(),
        rtsp.video_frames(),
        rtsp.audio_frames(),
        rtsp.errors.len(),
        hls.video().len(),
        hls.audio().len(),
        hls.errors.len(),
    );
    // ffmpeg's probe of 4 s reads: 3.5 s of 25 fps video and 50/s Opus.
    rtsp.assert_clean((3.5 * FPS * 0.95) as u64, (3.5 * 50.0 * 0.95) as u64);
    hls.assert_clean((3.5 * FPS * 0.95) as usize, (3.5 * 50.0 * 0.95) as usize);
    assert_eq!(
        cam.clients_connected(),
        1,
        "the gateway must read the camera in one RTSP session"
    );
}

/// A UDP camera whose first packet reaching the gateway is the rest of an
/// FU-A (no start bit): the access unit is dropped (`mid_fragment`), the pictures up
/// to the next IDR too (`no_reference`), and the stream is live at that
/// IDR (GOP 1 s) without a reconnect; an ffmpeg reader decodes cleanly.
#[test]
fn udp_camera_whose_first_packet_is_mid_fu_a() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::None));
    let relay = Relay::start(cam.port());
    relay.start_mid_fragment();
    let t0 = Instant::now();
    let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{}/test", relay.port())]);
    let live_after = time_to_live(&mut gw, t0);
    let s = gw.stream("cam").expect("stream");
    let read = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 3.0);
    let mid = frames_dropped(&gw, "mid_fragment");
    println!(
        "quirk: first packet mid-FU-A over UDP: {} packets skipped to it; live after {live_after:.2} s, \
         reconnects {}; dropped mid_fragment {mid}, no_reference {}; ffmpeg RTSP {} frames, {} errors",
        relay.skipped_to_fragment(),
        u(&s, "reconnects"),
        frames_dropped(&gw, "no_reference"),
        read.video_frames(),
        read.errors.len()
    );
    assert!(
        relay.skipped_to_fragment() > 0,
        "the relay never forwarded an FU-A continuation first"
    );
    assert_eq!(s["transport"], "udp", "{s}");
    assert_eq!(u(&s, "reconnects"), 0, "{s}");
    assert_eq!(mid, 1, "the first access unit is dropped as mid_fragment");
    // The camera's GOP is 1 s: live at its next IDR, plus start-up.
    assert!(live_after < 3.0, "live only after {live_after:.2} s");
    read.assert_clean((2.5 * FPS * 0.95) as u64, 0);
}

/// H.265 with open GOPs (x265 `open-gop=1:repeat-headers=1`, B-frames): an
/// IDR first, then CRA keyframes with VPS/SPS/PPS in band, each followed by
/// RASL pictures. A reader that joins starts at a CRA: RTSP readers get a
/// keyframe first and decode cleanly, LL-HLS (whose muxer starts at a CRA
/// and skips its RASL pictures) completes segments and decodes cleanly.
#[test]
fn h265_camera_with_cra_keyframes() {
    let _g = serial();
    require_tools();
    // B-frames and a 12-frame GOP: x265 then puts two RASL pictures after
    // each CRA.
    let cam = Camera::start(CameraOpts {
        open_gop: true,
        bframes: true,
        gop: 12,
        ..CameraOpts::new(VideoCodec::H265, AudioCodec::None)
    });
    let t0 = Instant::now();
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    let live_after = time_to_live(&mut gw, t0);
    // Past the first IDR: from here every GOP starts with a CRA.
    thread::sleep(Duration::from_millis(1500));
    let first_key = first_video_frame_is_key(&gw.rtsp_url("cam"), Transport::Tcp);
    let rtsp = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 4.0);
    let hls = ffmpeg_read_hls(&gw.http_url("/cam/index.m3u8"), 4);
    println!(
        "quirk: H.265 CRA keyframes: live after {live_after:.2} s; RTSP first frame key {first_key}, \
         ffmpeg RTSP {} frames, {} errors; ffmpeg LL-HLS {} frames, {} errors",
        rtsp.video_frames(),
        rtsp.errors.len(),
        hls.video().len(),
        hls.errors.len()
    );
    assert!(first_key, "an RTSP reader's first frame must be a keyframe");
    rtsp.assert_clean((3.5 * FPS * 0.95) as u64, 0);
    hls.assert_clean((3.5 * FPS * 0.95) as usize, 0);
}

/// A camera whose RTP timestamps jump 10 s back mid-stream (its clock was
/// reset): the bus timeline carries on, so a reader of the re-serve keeps
/// getting every frame and ffmpeg sees no jump and no error.
#[test]
fn camera_whose_rtp_timestamps_jump_back() {
    let _g = serial();
    require_tools();
    let cam = Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac));
    let relay = Relay::start(cam.port());
    let mut gw = Gateway::start([format!("cam=rtsp://127.0.0.1:{}/test", relay.port())]);
    gw.wait_live("cam", LIVE);
    let rt = rtsp_reader::runtime();
    let url = gw.rtsp_url("cam");
    let start = Instant::now();
    let reader =
        rt.spawn(
            async move { rtsp_reader::read(&url, Via::Tcp, start + Duration::from_secs(6)).await },
        );
    let ffmpeg = FfmpegReader::start(&gw.rtsp_url("cam"), Transport::Tcp, 5.0);
    relay.jump_timestamps_back(Duration::from_secs(2), Duration::from_secs(10));
    let rec = rt
        .block_on(reader)
        .expect("reader task")
        .unwrap_or_else(|e| gw.fail(&format!("reader: {e}")));
    let read = ffmpeg.finish();
    let s = gw.stream("cam").expect("stream");
    let v = rec.video().expect("video");
    println!(
        "quirk: RTP timestamps 10 s back ({} packets moved): reconnects {}; reader {}; ffmpeg RTSP {} video / {} audio frames, {} errors",
        relay.jumped_packets(),
        u(&s, "reconnects"),
        rec.summary(),
        read.video_frames(),
        read.audio_frames(),
        read.errors.len()
    );
    assert!(
        relay.jumped_packets() > 100,
        "the relay moved only {} timestamps back",
        relay.jumped_packets()
    );
    assert_eq!(u(&s, "reconnects"), 0, "{s}");
    assert_eq!(v.lost(), (0, 0), "{}", rec.summary());
    let frames = v.frames_between(
        start + Duration::from_millis(500),
        start + Duration::from_millis(5500),
    );
    assert!(
        frames as f64 >= 5.0 * FPS * 0.95,
        "{frames} frames in 5 s: {}",
        rec.summary()
    );
    // ffmpeg: timestamps without a jump (no pts gap) and no error.
    read.assert_clean((4.5 * FPS * 0.95) as u64, (4.5 * 46.0 * 0.9) as u64);
}

/// VLC's RTSP server (UDP only; a client joins its running stream, often
/// mid-FU-A) reaches `live` within 5 s and plays cleanly.
#[test]
fn vlc_udp_only_source_is_live_within_5_s() {
    let _g = serial();
    require_tools();
    let vlc = Vlc::start();
    let t0 = Instant::now();
    let mut gw = Gateway::start([format!("cam={}", vlc.url())]);
    let live_after = time_to_live(&mut gw, t0);
    let s = gw.stream("cam").expect("stream");
    let read = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 3.0);
    println!(
        "quirk: VLC UDP-only source: live after {live_after:.2} s over {}, reconnects {}; \
         dropped mid_fragment {}; ffmpeg RTSP {} frames, {} errors",
        s["transport"],
        u(&s, "reconnects"),
        frames_dropped(&gw, "mid_fragment"),
        read.video_frames(),
        read.errors.len()
    );
    assert!(live_after < 5.0, "live only after {live_after:.2} s: {s}");
    assert_eq!(s["transport"], "udp", "{s}");
    // VLC restarts its looped clip with a hole in its own timestamps that
    // grows with the machine's load; the clip lasts 15 s so that a read in
    // the first few seconds never spans it. Should one, pts gaps are VLC's;
    // errors and lost frames are not.
    let problems: Vec<String> = read
        .problems((2.8 * FPS * 0.95) as u64, 0)
        .into_iter()
        .filter(|p| !p.contains("pts gap(s) in video"))
        .collect();
    assert!(problems.is_empty(), "unclean read: {problems:?}\n{read}");
}

/// A camera whose resolution is changed while it streams (640x360, then
/// 320x180 after 3 s: a new SPS in band at an IDR): the path stays live
/// without a reconnect, the API reports the new size, an RTSP reader that
/// reads across the change decodes every frame cleanly, and LL-HLS plays
/// the new size.
#[test]
fn camera_that_changes_resolution_mid_stream() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts {
        resize: Some((3.0, 320, 180)),
        ..CameraOpts::new(VideoCodec::H264, AudioCodec::None)
    });
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    let live = gw.wait_live("cam", LIVE);
    let width = |s: &serde_json::Value| s["tracks"][0]["width"].as_u64();
    assert_eq!(width(&live), Some(640), "{live}");
    let across = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 5.0);
    let s = gw.stream("cam").expect("stream");
    let hls = ffmpeg_read_hls(&gw.http_url("/cam/index.m3u8"), 3);
    println!(
        "quirk: resolution change 640x360 -> 320x180: width now {:?}, reconnects {}; \
         ffmpeg RTSP across it {} frames, {} errors; ffmpeg LL-HLS after {} frames, {} errors",
        width(&s),
        u(&s, "reconnects"),
        across.video_frames(),
        across.errors.len(),
        hls.video().len(),
        hls.errors.len()
    );
    assert_eq!(
        width(&s),
        Some(320),
        "the API must report the new size: {s}"
    );
    assert_eq!(u(&s, "reconnects"), 0, "{s}");
    across.assert_clean((4.5 * FPS * 0.95) as u64, 0);
    hls.assert_clean((2.5 * FPS * 0.95) as usize, 0);
}

/// An MJPEG camera (RFC 2435, JPEG/90000): carried through the bus,
/// re-served over RTSP (ffmpeg decodes every image), played in browsers'
/// way at `/<path>/mjpeg` (ffmpeg's mpjpeg demuxer decodes the parts), and
/// the API gives its size and says WebRTC/HLS don't carry it.
#[test]
fn mjpeg_camera() {
    let _g = serial();
    require_tools();
    let cam = Camera::start(CameraOpts::new(VideoCodec::Mjpeg, AudioCodec::None));
    let t0 = Instant::now();
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    let live_after = time_to_live(&mut gw, t0);
    let rtsp = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, 4.0);
    let http = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-f", "mpjpeg"])
        .args(["-rw_timeout", "10000000", "-i"])
        .arg(gw.http_url("/cam/mjpeg"))
        .args(["-t", "3", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let http_frames = String::from_utf8_lossy(&http.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let http_errors = String::from_utf8_lossy(&http.stderr).trim().to_owned();
    let s = gw.stream("cam").expect("stream");
    println!(
        "quirk: MJPEG camera: live after {live_after:.2} s, track {}; ffmpeg RTSP {} frames, {} errors; \
         /cam/mjpeg {http_frames} frames in 3 s, errors {http_errors:?}",
        s["tracks"][0],
        rtsp.video_frames(),
        rtsp.errors.len()
    );
    assert_eq!(s["tracks"][0]["codec"], "mjpeg", "{s}");
    assert_eq!(s["tracks"][0]["width"], 640, "{s}");
    assert!(
        s["urls"]["mjpeg"]
            .as_str()
            .is_some_and(|u| u.ends_with("/cam/mjpeg")),
        "{s}"
    );
    rtsp.assert_clean((3.5 * FPS * 0.95) as u64, 0);
    assert!(
        http.status.success() && http_errors.is_empty(),
        "ffmpeg on /cam/mjpeg: {:?} {http_errors}",
        http.status
    );
    assert!(
        http_frames as f64 >= 3.0 * FPS * 0.9,
        "{http_frames} images from /cam/mjpeg in 3 s"
    );
}
