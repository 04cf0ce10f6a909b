//! RTSP reader sessions end to end, with the test kit's raw RTSP reader
//! against the gateway fed by the GStreamer camera (one H.264 + AAC camera
//! for every test): RTCP sender report contents, and UDP sessions kept
//! alive by receiver reports alone, timed out when the reader goes silent,
//! or ended when it vanishes.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::rtsp_reader::{
    self, wall_ntp_secs, wall_of, Control, Reader, Recording, TrackRec, Via,
};
use testkit::*;

fn camera() -> Arc<Camera> {
    Camera::shared(CameraOpts::new(VideoCodec::H264, AudioCodec::Aac))
}

const LIVE: Duration = Duration::from_secs(20);

/// Median of `v` (sorted in place); 0 for none.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Per packet: arrival wall clock minus the sender's wall clock of its RTP
/// timestamp (by the latest SR before it, else the first SR), in seconds,
/// for packets that arrived from `from` on.
fn latencies(t: &TrackRec, from: Instant) -> Vec<f64> {
    let Some(first) = t.srs.first() else {
        return Vec::new();
    };
    t.packets
        .iter()
        .filter(|p| p.at >= from)
        .map(|p| {
            let sr = t.srs.iter().rev().find(|s| s.at <= p.at).unwrap_or(first);
            wall_ntp_secs(p.wall) - wall_of(sr, p.ts, t.clock_rate)
        })
        .collect()
}

/// Median video latency minus median audio latency, seconds.
fn av_skew(r: &Recording, from: Instant) -> f64 {
    let v = r.video().expect("video track");
    let a = r.audio().expect("audio track");
    median(&mut latencies(v, from)) - median(&mut latencies(a, from))
}

/// Sender reports to an RTSP reader over TCP: sent for every track every
/// ~5 s, with the track's SSRC, packet and octet counts equal to what the
/// reader received on that SSRC before the report, an NTP time that is the
/// gateway's wall clock, and an NTP↔RTP mapping under which audio and
/// video captured at the same instant get the same wall clock: the skew
/// between the tracks' mappings matches the camera's own SRs within 20 ms.
#[test]
fn sender_reports_count_and_align_audio_and_video() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let mut gw = Gateway::start([format!("cam={}", cam.url())]);
    gw.wait_live("cam", LIVE);

    let rt = rtsp_reader::runtime();
    let start = Instant::now();
    let until = start + Duration::from_millis(11_500);
    let (gw_url, cam_url) = (gw.rtsp_url("cam"), cam.url());
    let (g, c) = rt.block_on(async move {
        let g = tokio::spawn(async move { rtsp_reader::read(&gw_url, Via::Tcp, until).await });
        let c = tokio::spawn(async move { rtsp_reader::read(&cam_url, Via::Tcp, until).await });
        (g.await, c.await)
    });
    let g = g
        .expect("task")
        .unwrap_or_else(|e| gw.fail(&format!("gateway reader: {e}")));
    let c = c
        .expect("task")
        .unwrap_or_else(|e| panic!("camera reader: {e}"));
    println!("gateway: {}\ncamera: {}", g.summary(), c.summary());

    for t in &g.tracks {
        let what = format!("{} track: {}", t.media, g.summary());
        assert!(t.srs.len() >= 2, "want >= 2 SRs in 11.5 s, {what}");
        let ssrc = t.packets.first().map(|p| p.ssrc);
        for sr in &t.srs {
            assert_eq!(Some(sr.ssrc), ssrc, "SR SSRC is the RTP SSRC; {what}");
            // Over TCP the report follows the packets it counts in order.
            assert_eq!(
                (u64::from(sr.packets), u64::from(sr.octets)),
                (sr.received_packets, sr.received_octets),
                "SR counts (packets, octets) vs received; {what}"
            );
            let skew = wall_ntp_secs(sr.wall) - rtsp_reader::ntp_secs(sr.ntp);
            println!("{} SR: NTP {skew:.4} s behind the wall clock", t.media);
            assert!(
                (-0.02..0.05).contains(&skew),
                "SR NTP time is {skew:.3} s off the wall clock; {what}"
            );
        }
        assert!(t.srs.last().is_some_and(|s| s.packets > 100), "{what}");
        // Every 5 s (the gateway's interval), not a burst nor a pause.
        for w in t.srs.windows(2) {
            let d = w[1].at - w[0].at;
            assert!(
                (Duration::from_millis(4500)..Duration::from_millis(5500)).contains(&d),
                "{d:?} between sender reports; {what}"
            );
        }
    }

    // Skip the first second: the cached GOP arrives at once, late by design.
    let from = start + Duration::from_secs(1);
    for t in &g.tracks {
        let lat = median(&mut latencies(t, from));
        println!(
            "{} packets: median {lat:.4} s after their SR wall clock",
            t.media
        );
        assert!(
            (-0.02..0.1).contains(&lat),
            "{} packets arrive {lat:.3} s after the wall clock their SR mapping gives",
            t.media
        );
    }
    let gw_skew = av_skew(&g, from);
    let cam_skew = av_skew(&c, from);
    println!("A/V skew of the SR mappings: gateway {gw_skew:.4} s, camera {cam_skew:.4} s");
    assert!(
        (gw_skew - cam_skew).abs() < 0.02,
        "audio and video SR mappings disagree: the gateway's skew is {gw_skew:.3} s, the camera's {cam_skew:.3} s"
    );
}

/// With a 2 s session timeout: a UDP reader that sends only RTCP receiver
/// reports (no RTSP request after PLAY) keeps its session for 8 s, listed
/// in /api/v1/sessions and getting packets; once it goes silent (reports
/// stop, the TCP connection stays open, no TEARDOWN), the session is timed
/// out, its packets stop and it leaves /api/v1/sessions. A reader whose
/// process dies (connection gone, no TEARDOWN) leaves at once.
#[test]
fn udp_reader_kept_alive_by_rtcp_alone_and_timed_out_when_silent() {
    let _g = serial();
    require_tools();
    let cam = camera();
    let cfg = scratch_path("timeout", "toml");
    std::fs::write(&cfg, "rtsp_session_timeout = 2\n").expect("write config");
    let mut gw = Gateway::start([
        "--config".to_owned(),
        cfg.display().to_string(),
        format!("cam={}", cam.url()),
    ]);
    gw.wait_live("cam", LIVE);

    let rt = rtsp_reader::runtime();
    let reader = rt
        .block_on(Reader::open(&gw.rtsp_url("cam"), Via::Udp))
        .unwrap_or_else(|e| gw.fail(&format!("UDP reader: {e}")));
    let ctl = Control::default();
    let start = Instant::now();
    let task = rt.spawn(reader.record(start + Duration::from_secs(16), ctl.clone(), false));
    std::thread::sleep(Duration::from_secs(8));
    let listed = gw.sessions("rtsp");
    if listed.len() != 1 || listed[0]["detail"]["transport"] != "udp" {
        gw.fail(&format!(
            "after 8 s on receiver reports alone (timeout 2 s), want the UDP session listed: {listed:?}"
        ));
    }
    // Silence: no more receiver reports; the connection stays open.
    ctl.send_rr
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let silent = Instant::now();
    // Timeout 2 s from the last receiver report (sent each second), checked
    // once a second: gone 1..3.5 s after the silence.
    let gone = poll_until(
        Duration::from_millis(3500),
        Duration::from_millis(100),
        || gw.sessions("rtsp").is_empty().then(Instant::now),
    );
    let Some(gone) = gone else {
        gw.fail(&format!(
            "a silent UDP reader still listed 3.5 s later: {:?}",
            gw.sessions("rtsp")
        ));
    };
    let rec = rt.block_on(task).expect("reader task");
    println!(
        "silent UDP reader removed {:?} after its last report; {}",
        gone - silent,
        rec.summary()
    );
    assert!(
        gone - silent >= Duration::from_millis(1000),
        "removed too early: {:?}",
        gone - silent
    );
    let v = &rec.tracks[0];
    // Packets all along until the silence.
    let frames_alive = v.frames_between(start + Duration::from_secs(1), silent);
    assert!(
        frames_alive as f64
            >= 0.97 * 25.0 * (silent - start - Duration::from_secs(1)).as_secs_f64(),
        "{}",
        rec.summary()
    );
    let last = v.packets.last().map(|p| p.at).unwrap_or(start);
    assert!(
        last > silent,
        "packets stopped before the reader went silent"
    );
    assert!(
        last < gone + Duration::from_millis(500),
        "packets still sent {:?} after the session was removed",
        last - gone
    );
    let ended = rec.ended.as_ref().map(|(at, _)| *at);
    assert!(
        ended.is_some_and(|e| e <= gone + Duration::from_secs(1)),
        "the server closes the connection: {}",
        rec.summary()
    );

    // A reader that vanishes (its process killed: no TEARDOWN) leaves at once.
    let mut child = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "udp",
            "-i",
        ])
        .arg(gw.rtsp_url("cam"))
        .args(["-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ffmpeg");
    let seen = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (gw.sessions("rtsp").len() == 1).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let killed = Instant::now();
    if seen.is_none() {
        gw.fail("ffmpeg's UDP session never showed in /api/v1/sessions");
    }
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        gw.sessions("rtsp").is_empty().then(Instant::now)
    });
    match gone {
        Some(t) => assert!(
            t - killed < Duration::from_secs(1),
            "removed {:?} after the kill",
            t - killed
        ),
        None => gw.fail("a killed UDP reader is still listed"),
    }
}
