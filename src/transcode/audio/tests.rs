//! The transcoder against ffmpeg's encoders: a tone in, the same tone out
//! of libopus's decoder.

use std::process::Command;
use std::time::Instant;

use bytes::Bytes;

use super::*;

/// Runs ffmpeg with `args` and returns what it wrote to stdout.
fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ADTS frames (ISO/IEC 14496-3 §1.A.2) → (AudioSpecificConfig, raw access units).
fn adts_frames(mut data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut asc = Vec::new();
    let mut aus = Vec::new();
    while data.len() >= 7 {
        assert_eq!((data[0], data[1] & 0xf0), (0xff, 0xf0), "ADTS sync");
        let protection_absent = data[1] & 1 == 1;
        let profile = (data[2] >> 6) + 1;
        let sr_index = (data[2] >> 2) & 0x0f;
        let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
        let len = (usize::from(data[3] & 3) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        let header = if protection_absent { 7 } else { 9 };
        asc = vec![
            (profile << 3) | (sr_index >> 1),
            ((sr_index & 1) << 7) | (channels << 3),
        ];
        aus.push(data[header..len].to_vec());
        data = &data[len..];
    }
    (asc, aus)
}

fn frame(pts: i64, data: Vec<u8>) -> Frame {
    Frame {
        track: 1,
        pts,
        dts: pts,
        keyframe: true,
        received: Instant::now(),
        data: Bytes::from(data),
    }
}

/// Decodes Opus packets with libopus into interleaved 48 kHz samples.
fn opus_decode(packets: &[Frame], channels: usize) -> Vec<i16> {
    let mut err = 0;
    // SAFETY: test-only use of the decoder API: checked pointer, buffer of
    // 120 ms per call as libopus allows.
    unsafe {
        let dec = unsafe_libopus::opus_decoder_create(48_000, channels as i32, &mut err);
        assert!(!dec.is_null() && err == 0);
        let mut out = Vec::new();
        let mut buf = vec![0i16; 5760 * channels];
        for p in packets {
            let n = unsafe_libopus::opus_decode(
                dec,
                p.data.as_ptr(),
                p.data.len() as i32,
                buf.as_mut_ptr(),
                5760,
                0,
            );
            assert!(n > 0, "opus_decode: {n}");
            out.extend_from_slice(&buf[..n as usize * channels]);
        }
        unsafe_libopus::opus_decoder_destroy(dec);
        out
    }
}

/// Frequency of the first channel's tone by zero crossings, Hz, skipping
/// the first 100 ms (codec start-up).
fn tone_hz(pcm: &[i16], channels: usize, rate: f64) -> f64 {
    let s: Vec<i16> = pcm
        .iter()
        .step_by(channels)
        .copied()
        .skip((rate / 10.0) as usize)
        .collect();
    let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (s.len() as f64 / rate)
}

#[test]
fn aac_lc_stereo_becomes_opus_with_the_same_tone_and_timeline() {
    let adts = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000:duration=2",
        "-ac",
        "2",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-f",
        "adts",
        "-",
    ]);
    let (asc, aus) = adts_frames(&adts);
    let track = Track::new(
        Codec::Aac {
            config: Bytes::from(asc),
            channels: 2,
        },
        48_000,
    );
    let mut t = AudioTranscoder::new(&track, &AudioSettings { bitrate: 64_000 }).expect("AAC-LC");
    assert_eq!(t.output_track().codec, Codec::Opus { channels: 2 });
    let start = 1_000_000i64;
    let mut out = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        out.extend(t.push(&frame(start + i as i64 * 1024, au.clone())));
    }
    assert_eq!(t.decode_errors(), 0);
    // Every 20 ms of the input's samples is one Opus frame (a partial
    // frame's samples wait for the next input).
    let samples = aus.len() * 1024;
    assert_eq!(out.len(), samples / 960, "{} AAC frames", aus.len());
    for (i, f) in out.iter().enumerate() {
        assert_eq!(f.pts, start + i as i64 * 960, "frame {i}");
        assert_eq!(f.track, 1);
        assert!(
            f.data.len() > 20 && f.data.len() < 400,
            "{} bytes",
            f.data.len()
        );
    }
    // ~64 kbit/s as set.
    let bytes: usize = out.iter().map(|f| f.data.len()).sum();
    let kbps = bytes as f64 * 8.0 / (out.len() as f64 * 0.02) / 1000.0;
    assert!((48.0..80.0).contains(&kbps), "{kbps:.1} kbit/s");
    let pcm = opus_decode(&out, 2);
    let hz = tone_hz(&pcm, 2, 48_000.0);
    assert!((hz - 1000.0).abs() < 10.0, "tone at {hz:.1} Hz");
}

#[test]
fn g711_at_8_khz_becomes_opus_on_the_48_khz_clock() {
    for (fmt, codec) in [
        ("alaw", Codec::Pcma { channels: 1 }),
        ("mulaw", Codec::Pcmu { channels: 1 }),
    ] {
        let raw = ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=8000:duration=2",
            "-ac",
            "1",
            "-f",
            fmt,
            "-",
        ]);
        let track = Track::new(codec, 8_000);
        let mut t =
            AudioTranscoder::new(&track, &AudioSettings { bitrate: 32_000 }).expect("G.711");
        let mut out = Vec::new();
        // 40 ms packets from the camera, 20 ms Opus frames out.
        for (i, chunk) in raw.chunks(320).enumerate() {
            out.extend(t.push(&frame(i as i64 * 320, chunk.to_vec())));
        }
        assert_eq!(out.len(), raw.len() / 160, "{fmt}");
        assert!(
            out.iter().enumerate().all(|(i, f)| f.pts == i as i64 * 960),
            "{fmt}"
        );
        let hz = tone_hz(&opus_decode(&out, 1), 1, 48_000.0);
        assert!((hz - 440.0).abs() < 5.0, "{fmt}: tone at {hz:.1} Hz");
    }
}

#[test]
fn a_gap_in_the_source_restarts_the_opus_timeline_at_the_new_pts() {
    let track = Track::new(Codec::Pcmu { channels: 1 }, 8_000);
    let mut t = AudioTranscoder::new(&track, &AudioSettings { bitrate: 32_000 }).expect("G.711");
    // 30 ms: one Opus frame out, 10 ms waiting.
    let first = t.push(&frame(0, vec![0xff; 240]));
    assert_eq!(first.iter().map(|f| f.pts).collect::<Vec<_>>(), [0]);
    // 1 s later (a lost second): the waiting 10 ms are dropped, not played
    // at the wrong time.
    let after = t.push(&frame(8_000, vec![0xff; 160]));
    assert_eq!(after.iter().map(|f| f.pts).collect::<Vec<_>>(), [48_000]);
}

#[test]
fn tracks_opus_cannot_take_are_refused_with_the_reason() {
    let s = AudioSettings { bitrate: 64_000 };
    // HE-AAC: object type 5, 24 kHz (index 6), stereo.
    let he = Track::new(
        Codec::Aac {
            config: Bytes::from_static(&[0x2b, 0x10]),
            channels: 2,
        },
        24_000,
    );
    let e = AudioTranscoder::new(&he, &s).err().expect("refused");
    assert!(e.contains("HE-AAC"), "{e}");
    // AAC-LC at 44.1 kHz (index 4).
    let cd = Track::new(
        Codec::Aac {
            config: Bytes::from_static(&[0x12, 0x10]),
            channels: 2,
        },
        44_100,
    );
    let e = AudioTranscoder::new(&cd, &s).err().expect("refused");
    assert!(e.contains("44100 Hz"), "{e}");
    let six = Track::new(Codec::Pcma { channels: 6 }, 8_000);
    assert!(AudioTranscoder::new(&six, &s).is_err());
}
