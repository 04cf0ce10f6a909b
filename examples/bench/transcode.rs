//! Section `transcode`: what a rendition costs per stream, beside ffmpeg
//! doing the same conversion (the tool users run next to other gateways).
//!
//! AAC→Opus: 60 s of stereo 48 kHz AAC-LC (a tone with noise, made by
//! ffmpeg) pushed through `transcode::audio::AudioTranscoder` on one
//! thread; CPU is that thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! the figure is per stream. ffmpeg's is its user+system time for
//! `-c:a libopus` on the same file (demuxing included, so a little high).
//!
//! Added latency of the audio path = processing per source frame (p99) +
//! framing (an Opus frame waits for the AAC frame that completes its 20 ms;
//! computed on the stream's own timestamps) + the Opus encoder's lookahead
//! (`OPUS_GET_LOOKAHEAD`).

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtspgate::bus::{Codec, Frame, Track};
use rtspgate::transcode::audio::{AudioSettings, AudioTranscoder};

use super::{f1, pct, ratio, Report};

const SECONDS: u32 = 60;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-parameter for the calling thread's clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `cmd` to completion; its children's user+system CPU time.
fn child_cpu(cmd: &mut Command) -> Option<Duration> {
    let before = rusage_children();
    let ok = cmd.status().ok()?.success();
    ok.then(|| rusage_children().saturating_sub(before))
}

fn rusage_children() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// ADTS frames → (AudioSpecificConfig, raw access units).
fn adts(mut data: &[u8]) -> (Vec<u8>, Vec<Bytes>) {
    let mut asc = Vec::new();
    let mut aus = Vec::new();
    while data.len() >= 7 && data[0] == 0xff {
        let header = if data[1] & 1 == 1 { 7 } else { 9 };
        let profile = (data[2] >> 6) + 1;
        let sr = (data[2] >> 2) & 0x0f;
        let ch = ((data[2] & 1) << 2) | (data[3] >> 6);
        let len = (usize::from(data[3] & 3) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        if len < header || len > data.len() {
            break;
        }
        asc = vec![(profile << 3) | (sr >> 1), ((sr & 1) << 7) | (ch << 3)];
        aus.push(Bytes::copy_from_slice(&data[header..len]));
        data = &data[len..];
    }
    (asc, aus)
}

pub fn section(r: &mut Report) {
    r.line("");
    r.line("### Transcoding (per stream, one thread)");
    r.line("");
    let dir = std::env::temp_dir().join(format!("rtspgate-bench-transcode-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let aac = dir.join("tone.aac");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-filter_complex"])
        .arg(format!(
            "sine=f=440:r=48000:d={SECONDS}[a];anoisesrc=r=48000:d={SECONDS}:a=0.05[b];\
             [a][b]amix=inputs=2,aformat=channel_layouts=stereo"
        ))
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "adts"])
        .arg(&aac)
        .status()
        .is_ok_and(|s| s.success());
    let data = std::fs::read(&aac).unwrap_or_default();
    let (asc, aus) = adts(&data);
    if !made || aus.is_empty() {
        r.line("ffmpeg could not make the AAC input: section skipped.");
        return;
    }
    let track = Track::new(
        Codec::Aac {
            config: Bytes::from(asc),
            channels: 2,
        },
        48_000,
    );
    let Ok(mut t) = AudioTranscoder::new(&track, &AudioSettings { bitrate: 64_000 }) else {
        r.line("the transcoder refused the input: section skipped.");
        return;
    };
    let mut per_frame = Vec::with_capacity(aus.len());
    let mut framing = Vec::new();
    let mut out_frames = 0usize;
    let cpu0 = thread_cpu();
    for (i, au) in aus.iter().enumerate() {
        let f = Frame {
            track: 1,
            pts: i as i64 * 1024,
            dts: i as i64 * 1024,
            keyframe: true,
            received: Instant::now(),
            data: au.clone(),
        };
        let t0 = Instant::now();
        let out = t.push(&f);
        per_frame.push(t0.elapsed().as_secs_f64() * 1e3);
        // Media time at which this AAC frame's last sample exists.
        let have = (i as f64 + 1.0) * 1024.0 / 48_000.0;
        for o in &out {
            let end = (o.pts + 960) as f64 / 48_000.0;
            framing.push((have - end) * 1e3);
        }
        out_frames += out.len();
    }
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64();
    let media = aus.len() as f64 * 1024.0 / 48_000.0;
    let ours_pct = cpu / media * 100.0;
    let ffmpeg = child_cpu(
        Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(&aac)
            .args([
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
                "-frame_duration",
                "20",
                "-f",
                "null",
                "-",
            ]),
    )
    .map(|d| d.as_secs_f64() / media * 100.0);
    // Opus at 48 kHz, application audio: 2.5 ms + 4 ms delay compensation
    // (RFC 6716 §2.1.8, what OPUS_GET_LOOKAHEAD returns: 312 samples).
    let lookahead_ms = 312.0 / 48.0;
    let p99 = pct(&mut per_frame.clone(), 0.99);
    let p50 = pct(&mut per_frame, 0.5);
    let frame_p99 = pct(&mut framing.clone(), 0.99);
    let frame_mean = framing.iter().sum::<f64>() / framing.len().max(1) as f64;
    r.line("| conversion | rtspgate CPU % of a core | ffmpeg CPU % | ffmpeg / rtspgate | per source frame p50 / p99 ms | framing mean / p99 ms | codec lookahead ms | added latency ms (p99 sum) |");
    r.line("|---|---|---|---|---|---|---|---|");
    r.line(format!(
        "| AAC-LC stereo 48 kHz → Opus 64 kbit/s, 20 ms ({:.0} s, {} → {} frames) | {:.2} | {} | {} | {:.3} / {:.3} | {} / {} | {} | {} |",
        media,
        aus.len(),
        out_frames,
        ours_pct,
        ffmpeg.map_or("–".into(), |v| format!("{v:.2}")),
        ffmpeg.map_or("–".into(), |v| ratio(v, ours_pct)),
        p50,
        p99,
        f1(frame_mean),
        f1(frame_p99),
        f1(lookahead_ms),
        f1(p99 + frame_p99 + lookahead_ms),
    ));
    video(r, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// H.265 → H.264: 10 s of 1280x720 25 fps x265 (keyframe every 50, no
/// B-frames) through `transcode::video::VideoTranscoder` on one thread;
/// ffmpeg's figure is the same conversion with the same x264 settings and
/// one thread.
#[cfg(feature = "transcode")]
fn video(r: &mut Report, dir: &std::path::Path) {
    use bytes::BufMut;
    use rtspgate::codec::annexb_nal_units;
    use rtspgate::transcode::video::{VideoSettings, VideoTranscoder};

    let clip = dir.join("clip.hevc");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
        ])
        .args(["-t", "10", "-c:v", "libx265", "-b:v", "2M"])
        .args([
            "-x265-params",
            "keyint=50:bframes=0:aud=1:log-level=error",
            "-f",
            "hevc",
        ])
        .arg(&clip)
        .status()
        .is_ok_and(|s| s.success());
    let data = std::fs::read(&clip).unwrap_or_default();
    let (mut vps, mut sps, mut pps) = (None, None, None);
    let mut aus: Vec<(bool, bytes::BytesMut)> = Vec::new();
    for nal in annexb_nal_units(&data) {
        let t = (nal[0] >> 1) & 0x3f;
        match t {
            35 => aus.push((false, bytes::BytesMut::new())),
            32 => vps = Some(Bytes::copy_from_slice(nal)),
            33 => sps = Some(Bytes::copy_from_slice(nal)),
            34 => pps = Some(Bytes::copy_from_slice(nal)),
            39 | 40 => {}
            _ => {
                if let Some(au) = aus.last_mut() {
                    au.0 |= (16..=21).contains(&t);
                    au.1.put_u32(nal.len() as u32);
                    au.1.put_slice(nal);
                }
            }
        }
    }
    let (Some(vps), Some(sps), Some(pps), true) = (vps, sps, pps, made) else {
        r.line("ffmpeg could not make the H.265 input: video row skipped.");
        return;
    };
    let track = Track::new(Codec::H265 { vps, sps, pps }, 90_000);
    let Ok(mut t) = VideoTranscoder::new(
        &track,
        &VideoSettings {
            bitrate: Some(2_000_000),
        },
    ) else {
        r.line("the video transcoder refused the input: row skipped.");
        return;
    };
    let mut lat = Vec::new();
    let mut out = 0usize;
    let cpu0 = thread_cpu();
    for (i, (key, au)) in aus.into_iter().enumerate() {
        let f = Frame {
            track: 0,
            pts: i as i64 * 3600,
            dts: i as i64 * 3600,
            keyframe: key,
            received: Instant::now(),
            data: au.freeze(),
        };
        let t0 = Instant::now();
        let n = t.push(&f).len();
        if n > 0 {
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        out += n;
    }
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64();
    let media = out as f64 / 25.0;
    let ours = cpu / media.max(0.001) * 100.0;
    let ffmpeg = child_cpu(
        Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-threads", "1", "-i"])
            .arg(&clip)
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-b:v",
                "2M",
            ])
            .args(["-threads", "1", "-f", "null", "-"]),
    )
    .map(|d| d.as_secs_f64() / media.max(0.001) * 100.0);
    r.line(format!(
        "| H.265 1280x720 25 fps → H.264 2 Mbit/s, veryfast/zerolatency ({out} pictures) | {:.1} | {} | {} | {:.1} / {:.1} | 0 (one picture out per picture in) | 0 | {:.1} |",
        ours,
        ffmpeg.map_or("–".into(), |v| format!("{v:.1}")),
        ffmpeg.map_or("–".into(), |v| ratio(v, ours)),
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat.clone(), 0.99),
        pct(&mut lat, 0.99),
    ));
}

#[cfg(not(feature = "transcode"))]
fn video(r: &mut Report, _dir: &std::path::Path) {
    r.line("| H.265 → H.264 | – | – | – | – | – | – | – (build with `--features transcode`) |");
}
