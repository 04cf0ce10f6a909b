//! Many readers of one camera at once, end to end: 50 RTSP readers (the
//! test kit's raw readers, TCP and UDP), 20 WebRTC viewers (the str0m WHEP
//! client), and RTSP + WebRTC + HLS together on an H.264 + Opus path; and
//! that Opus camera through RTSP and HLS readers that decode it. Every
//! reader must get (nearly) every frame the gateway took in while it read,
//! with no lost packets.
//!
//! The cameras' GOP is short (10 frames) so the cached GOP a new reader
//! gets first adds little to its count. Two cameras serve all the tests
//! (`Camera::shared`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{self, Reader, Recording, Via};
use testkit::*;

const LIVE: Duration = Duration::from_secs(20);
/// Share of the frames taken in that every reader must get.
const MIN_SHARE: f64 = 0.99;
/// How much later than the earliest a reader's packets may come, relative
/// to their media time (the camera's encoder jitter included); see
/// [`rtsp_reader::TrackRec::delay_spread`].
const MAX_DELAY_SPREAD: Duration = Duration::from_millis(100);

fn camera(audio: AudioCodec) -> Arc<Camera> {
    Camera::shared(CameraOpts {
        gop: 10,
        ..CameraOpts::new(VideoCodec::H264, audio)
    })
}

/// `frames_in` of the stream (every track).
fn frames_in(gw: &Gateway) -> u64 {
    gw.stream("cam")
        .and_then(|s| s["frames_in"].as_u64())
        .unwrap_or(0)
}

/// Opens `n` raw RTSP readers (every `udp_every`th over UDP), all playing
/// before it returns.
fn open_readers(
    rt: &tokio::runtime::Runtime,
    gw: &mut Gateway,
    n: usize,
    udp_every: usize,
) -> Vec<Reader> {
    let url = gw.rtsp_url("cam");
    let opened = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let url = url.clone();
                let via = if udp_every > 0 && i % udp_every == 0 {
                    Via::Udp
                } else {
                    Via::Tcp
                };
                tokio::spawn(async move { Reader::open(&url, via).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        out
    });
    opened
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| gw.fail(&format!("RTSP reader {i}: {e}"))))
        .collect()
}

fn record_all(
    rt: &tokio::runtime::Runtime,
    readers: Vec<Reader>,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<Recording>> {
    let _e = rt.enter();
    readers
        .into_iter()
        .map(|r| tokio::spawn(r.record(until, rtsp_reader::Control::default(), true)))
        .collect()
}

/// Every RTSP reader: no lost or reordered packet on any track, and at
/// least [`MIN_SHARE`] of `taken` video frames in `[from, to]`.
fn check_rtsp(gw: &mut Gateway, recs: &[Recording], from: Instant, to: Instant, taken: u64) {
    let want = (taken as f64 * MIN_SHARE).floor() as usize;
    let mut worst = usize::MAX;
    let mut worst_spread = Duration::ZERO;
    for (i, r) in recs.iter().enumerate() {
        let v = r.video().expect("video track");
        let got = v.frames_between(from, to);
        worst = worst.min(got);
        let spread = v.delay_spread(from, to).unwrap_or(Duration::MAX);
        worst_spread = worst_spread.max(spread);
        let lost: Vec<(u64, u64)> = r.tracks.iter().map(|t| t.lost()).collect();
        if got < want
            || lost.iter().any(|l| *l != (0, 0))
            || r.ended.is_some()
            || spread > MAX_DELAY_SPREAD
        {
            gw.fail(&format!(
                "RTSP reader {i}: {got} of {taken} frames in the window (want >= {want}), lost/disorder {lost:?}, \
                 delay spread {spread:?} (want <= {MAX_DELAY_SPREAD:?}): {}",
                r.summary()
            ));
        }
    }
    println!(
        "{} RTSP readers: the worst got {worst} of {taken} frames; the worst delay spread {worst_spread:?}",
        recs.len()
    );
}

/// 50 RTSP readers on one path (40 over TCP, 10 over UDP): each gets every
/// frame the gateway took in while they read, nothing lost.
#[test]
fn fifty_rtsp_readers_get_every_frame() {
    let _g = serial();
    require_tools();
    let cam = camera(AudioCodec::None);
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);
    let rt = rtsp_reader::runtime();
    let readers = open_readers(&rt, &mut gw, 50, 5);
    let until = Instant::now() + Duration::from_secs(10);
    let tasks = record_all(&rt, readers, until);
    // Let the cached GOPs go out, then count over a window.
    thread::sleep(Duration::from_secs(1));
    let (from, f0) = (Instant::now(), frames_in(&gw));
    thread::sleep(Duration::from_secs(8));
    let (to, f1) = (Instant::now(), frames_in(&gw));
    let s = gw.stream("cam").expect("stream");
    assert_eq!(s["readers"]["rtsp"], 50, "{s}");
    let recs: Vec<Recording> = tasks
        .into_iter()
        .map(|t| rt.block_on(t).expect("reader task"))
        .collect();
    assert!(
        f1 - f0 >= 180,
        "the camera sent only {} frames in 8 s",
        f1 - f0
    );
    check_rtsp(&mut gw, &recs, from, to, f1 - f0);
}

/// Starts `n` WHEP viewers (UDP) for `dur`; returns their threads and a
/// counter of viewers that have shown their first keyframe.
fn start_viewers(
    gw: &Gateway,
    n: usize,
    dur: Duration,
) -> (Vec<thread::JoinHandle<whep::Received>>, Arc<AtomicUsize>) {
    let http = SocketAddr::from(([127, 0, 0, 1], gw.http_port()));
    let progress = Arc::new(AtomicUsize::new(0));
    let handles = (0..n)
        .map(|_| {
            let opts = whep::Opts {
                progress: Some(progress.clone()),
                ..whep::Opts::new(whep::Via::Udp, dur)
            };
            thread::spawn(move || whep::play(http, "cam", &opts))
        })
        .collect();
    (handles, progress)
}

/// Every viewer: no error, no NACK (nothing lost), and at least
/// [`MIN_SHARE`] of the `taken` frames (taken in while all were playing;
/// each also got a short cached GOP first, at most 9 frames).
fn check_webrtc(gw: &mut Gateway, rs: &[whep::Received], taken: u64, audio: bool) {
    let want = (taken as f64 * MIN_SHARE).floor() as u64;
    let mut worst = u64::MAX;
    for (i, r) in rs.iter().enumerate() {
        worst = worst.min(r.video_frames);
        // Also: >= 85 % of 25 fps after the first frame, nothing lost.
        let mut p = r.problems(25.0, 0.85, audio);
        if r.video_frames < want {
            p.push(format!("{} video frames, want >= {want}", r.video_frames));
        }
        // Opus: two 20 ms frames per video frame.
        if audio && r.audio_frames < 2 * want {
            p.push(format!(
                "{} audio frames, want >= {}",
                r.audio_frames,
                2 * want
            ));
        }
        if !p.is_empty() {
            gw.fail(&format!(
                "WebRTC viewer {i} ({taken} frames taken in while all played):\n  - {}\n{r:?}",
                p.join("\n  - ")
            ));
        }
    }
    println!(
        "{} WebRTC viewers: the worst got {worst} video frames; {taken} taken in while all played",
        rs.len()
    );
}

/// 20 WebRTC viewers on one path: each gets every frame, no NACK.
#[test]
fn twenty_webrtc_viewers_get_every_frame() {
    let _g = serial();
    let cam = camera(AudioCodec::None);
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);
    let dur = Duration::from_secs(10);
    let t0 = Instant::now();
    let (handles, progress) = start_viewers(&gw, 20, dur);
    let all = poll_until(Duration::from_secs(8), Duration::from_millis(20), || {
        (progress.load(Ordering::Relaxed) == 20).then(Instant::now)
    });
    let f0 = frames_in(&gw);
    if all.is_none() {
        gw.fail(&format!(
            "only {} of 20 viewers showed a picture within 8 s",
            progress.load(Ordering::Relaxed)
        ));
    }
    // The viewers stop at t0 + dur (each a little later: they start later).
    thread::sleep((t0 + dur).saturating_duration_since(Instant::now()));
    let f1 = frames_in(&gw);
    let s = gw.stream("cam").expect("stream");
    let rs: Vec<whep::Received> = handles
        .into_iter()
        .map(|h| h.join().expect("viewer"))
        .collect();
    assert_eq!(s["readers"]["webrtc"], 20, "{s}");
    check_webrtc(&mut gw, &rs, f1 - f0, false);
}

/// RTSP (10 raw readers), WebRTC (5 viewers) and HLS (2 ffmpeg readers) on
/// one H.264 + Opus path at once: each gets every frame.
#[test]
fn rtsp_webrtc_and_hls_readers_together() {
    let _g = serial();
    require_tools();
    let cam = camera(AudioCodec::Opus);
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);
    let hls_url = gw.http_url("/cam/index.m3u8");
    let hls: Vec<_> = (0..2)
        .map(|_| {
            let url = hls_url.clone();
            thread::spawn(move || ffmpeg_read_hls(&url, HLS_SECONDS))
        })
        .collect();
    let rt = rtsp_reader::runtime();
    let readers = open_readers(&rt, &mut gw, 10, 2);
    let dur = Duration::from_secs(10);
    let t0 = Instant::now();
    let tasks = record_all(&rt, readers, t0 + dur);
    let (viewers, progress) = start_viewers(&gw, 5, dur);
    let all = poll_until(Duration::from_secs(8), Duration::from_millis(20), || {
        (progress.load(Ordering::Relaxed) == 5).then(Instant::now)
    });
    let (from, f0) = (Instant::now(), frames_in(&gw));
    if all.is_none() {
        gw.fail("the WebRTC viewers showed no picture within 8 s");
    }
    thread::sleep((t0 + dur).saturating_duration_since(Instant::now()));
    let (to, f1) = (Instant::now(), frames_in(&gw));
    let recs: Vec<Recording> = tasks
        .into_iter()
        .map(|t| rt.block_on(t).expect("reader task"))
        .collect();
    let rs: Vec<whep::Received> = viewers
        .into_iter()
        .map(|h| h.join().expect("viewer"))
        .collect();
    // frames_in counts video and audio: 25 + 50 a second.
    let video_taken = (f1 - f0) / 3;
    check_rtsp(&mut gw, &recs, from, to, video_taken);
    for r in &recs {
        let a = r.audio().expect("Opus track");
        let got = a.frames_between(from, to) as f64;
        assert!(
            got >= 2.0 * video_taken as f64 * MIN_SHARE,
            "Opus frames {got}: {}",
            r.summary()
        );
    }
    check_webrtc(&mut gw, &rs, video_taken, true);
    for h in hls {
        let r = h.join().expect("HLS reader");
        // Every video frame (no pts gap) and 50 Opus frames a second.
        r.assert_clean(
            (HLS_SECONDS * 25 - 1) as usize,
            (HLS_SECONDS as f64 * OPUS_FPS * 0.97) as usize,
        );
        assert!(r.input_has("Audio: opus"), "{r}");
    }
}

const HLS_SECONDS: u64 = 8;
/// 20 ms Opus frames.
const OPUS_FPS: f64 = 50.0;

/// An H.264 + Opus camera: the Opus track (read in the gateway's one RTSP
/// session with the camera, by our RFC 7587 depacketizer) reaches RTSP
/// readers and HLS readers, and decodes, at 50 frames a second.
#[test]
fn opus_camera_through_rtsp_and_hls() {
    let _g = serial();
    require_tools();
    let cam = camera(AudioCodec::Opus);
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    let s = gw.wait_live("cam", LIVE);
    let codecs: Vec<&str> = s["tracks"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["codec"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codecs, ["h264", "opus"], "{s}");

    let secs = 5.0;
    let r = ffmpeg_read(&gw.rtsp_url("cam"), Transport::Tcp, secs);
    r.assert_clean((secs * 25.0) as u64 - 3, (secs * OPUS_FPS * 0.97) as u64);
    assert_eq!(
        r.codecs(),
        [
            ("video".to_owned(), "h264".to_owned()),
            ("audio".to_owned(), "opus".to_owned())
        ]
    );

    let secs = 6;
    let h = ffmpeg_read_hls(&gw.http_url("/cam/index.m3u8"), secs);
    println!(
        "HLS: {} video frames, {} Opus frames in {secs} s; RTSP: {} / {}",
        h.video().len(),
        h.audio().len(),
        r.video_frames(),
        r.audio_frames()
    );
    h.assert_clean(
        (secs * 25 - 1) as usize,
        (secs as f64 * OPUS_FPS * 0.97) as usize,
    );
    assert!(h.input_has("Audio: opus"), "{h}");
}
