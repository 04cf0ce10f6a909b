//! The transcoder against ffmpeg: an x265 clip in, H.264 out that ffmpeg
//! decodes without an error, one picture out per picture in.

use std::process::Command;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::codec::{annexb_nal_units, Codec};

const PICTURES: usize = 50;

/// 2 s of 320x240 H.265 from x265 with an AUD before each access unit and
/// a keyframe every 25 pictures: (track, access units with their keyframe flag).
fn clip() -> (Track, Vec<(bool, Bytes)>) {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
        ])
        .args(["-frames:v", &PICTURES.to_string(), "-c:v", "libx265"])
        .args([
            "-x265-params",
            "keyint=25:min-keyint=25:bframes=0:aud=1:log-level=error",
        ])
        .args(["-f", "hevc", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut vps, mut sps, mut pps) = (None, None, None);
    let mut aus: Vec<(bool, BytesMut)> = Vec::new();
    for nal in annexb_nal_units(&out.stdout) {
        let t = (nal[0] >> 1) & 0x3f;
        match t {
            35 => aus.push((false, BytesMut::new())),
            32 => vps = Some(Bytes::copy_from_slice(nal)),
            33 => sps = Some(Bytes::copy_from_slice(nal)),
            34 => pps = Some(Bytes::copy_from_slice(nal)),
            39 | 40 => {}
            _ => {
                let au = aus.last_mut().expect("AUD first");
                au.0 |= (16..=21).contains(&t);
                au.1.put_u32(nal.len() as u32);
                au.1.put_slice(nal);
            }
        }
    }
    let codec = Codec::H265 {
        vps: vps.expect("VPS"),
        sps: sps.expect("SPS"),
        pps: pps.expect("PPS"),
    };
    let aus = aus.into_iter().map(|(k, b)| (k, b.freeze())).collect();
    (Track::new(codec, 90_000), aus)
}

#[test]
fn every_h265_picture_becomes_one_h264_picture_that_ffmpeg_decodes() {
    let (track, aus) = clip();
    assert_eq!(aus.len(), PICTURES);
    let mut t = VideoTranscoder::new(&track, &VideoSettings::default()).expect("transcoder");
    let mut out = Vec::new();
    let mut late = 0;
    for (i, (key, data)) in aus.iter().enumerate() {
        let pts = 1_000 + i as i64 * 3600;
        let f = Frame {
            track: 0,
            pts,
            dts: pts,
            keyframe: *key,
            received: Instant::now(),
            data: data.clone(),
        };
        let got = t.push(&f);
        // Zero latency: each picture comes out while it is pushed.
        if got.len() != 1 {
            late += 1;
        }
        out.extend(got);
    }
    assert_eq!(t.errors(), 0);
    assert_eq!(late, 0, "pictures not out at once");
    assert_eq!(out.len(), PICTURES);
    let pts: Vec<i64> = out.iter().map(|f| f.pts).collect();
    assert_eq!(
        pts,
        (0..PICTURES as i64)
            .map(|i| 1_000 + i * 3600)
            .collect::<Vec<_>>()
    );
    // The source's keyframes, and only those, are IDRs.
    let keys: Vec<bool> = out.iter().map(|f| f.keyframe).collect();
    let source_keys: Vec<bool> = aus.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, source_keys);
    assert!(keys.iter().filter(|k| **k).count() >= 2);
    let Some(Codec::H264 { sps, pps }) = t.output_track().map(|t| t.codec.clone()) else {
        panic!("no H.264 track");
    };
    assert_eq!(
        t.output_track().and_then(|t| t.dimensions),
        Some((320, 240))
    );
    // Annex B with SPS/PPS first, decoded by ffmpeg.
    let mut es = Vec::new();
    for p in [&sps, &pps] {
        es.extend_from_slice(&[0, 0, 0, 1]);
        es.extend_from_slice(p);
    }
    for f in &out {
        for nal in crate::codec::avcc_nal_units(&f.data).map_while(Result::ok) {
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(nal);
        }
    }
    let dir = std::env::temp_dir().join(format!("rtspgate-vt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("out.h264");
    std::fs::write(&file, &es).expect("write");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    assert_eq!(
        text,
        format!("h264,{PICTURES}"),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        probe.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}
