//! Test fixtures: real encoder output split into access units, and
//! synthetic frame builders.
//!
//! `src/egress/hls/testdata/h264_640x360_25fps.h264` was made with
//! `gst-launch-1.0 videotestsrc num-buffers=50 ! video/x-raw,format=I420,width=640,height=360,framerate=25/1
//!  ! x264enc key-int-max=25 bframes=0 bitrate=300 speed-preset=veryfast
//!  ! video/x-h264,stream-format=byte-stream,profile=high ! filesink`,
//! and `src/egress/hls/testdata/h265_320x180_25fps.h265` likewise with `x265enc key-int-max=5`
//! (10 frames, 320x180, Main).
//!
//! Also built (with the `fuzzing` feature) for the fuzz targets' fixtures,
//! which use only some of it.
#![cfg_attr(not(test), allow(dead_code))]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};

use crate::bus::{Codec, Frame, Track};

/// One elementary stream read from an Annex B file.
pub struct VideoFixture {
    pub vps: Vec<u8>,
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// Access units in AVCC/HVCC form (4-byte lengths), parameter sets left
    /// out, with their keyframe flag.
    pub frames: Vec<(Bytes, bool)>,
}

/// Splits Annex B into NAL units (start codes removed).
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // A 4-byte start code leaves one zero byte before the next one.
        while e > s && data[e - 1] == 0 {
            e -= 1;
        }
        out.push(&data[s..e]);
    }
    out
}

fn read_fixture(data: &[u8], hevc: bool) -> VideoFixture {
    let mut fx = VideoFixture {
        vps: Vec::new(),
        sps: Vec::new(),
        pps: Vec::new(),
        frames: Vec::new(),
    };
    let mut au = BytesMut::new();
    let mut au_has_vcl = false;
    let mut au_key = false;
    for nal in nal_units(data) {
        let (ty, vcl, first_in_pic, key) = if hevc {
            let ty = (nal[0] >> 1) & 0x3f;
            (
                ty,
                ty < 32,
                ty < 32 && nal[2] & 0x80 != 0,
                (16..=23).contains(&ty),
            )
        } else {
            let ty = nal[0] & 0x1f;
            (ty, (1..=5).contains(&ty), nal[1] & 0x80 != 0, ty == 5)
        };
        let starts_au = if vcl {
            first_in_pic
        } else if hevc {
            matches!(ty, 32..=35 | 39)
        } else {
            matches!(ty, 6..=9)
        };
        if starts_au && au_has_vcl {
            fx.frames.push((au.split().freeze(), au_key));
            au_has_vcl = false;
            au_key = false;
        }
        match (hevc, ty) {
            (true, 32) => fx.vps = nal.to_vec(),
            (true, 33) | (false, 7) => fx.sps = nal.to_vec(),
            (true, 34) | (false, 8) => fx.pps = nal.to_vec(),
            _ => {
                au.put_u32(nal.len() as u32);
                au.put_slice(nal);
            }
        }
        au_has_vcl |= vcl;
        au_key |= key;
    }
    if au_has_vcl {
        fx.frames.push((au.freeze(), au_key));
    }
    fx
}

pub fn h264_fixture() -> VideoFixture {
    read_fixture(
        include_bytes!("../egress/hls/testdata/h264_640x360_25fps.h264"),
        false,
    )
}

pub fn h265_fixture() -> VideoFixture {
    read_fixture(
        include_bytes!("../egress/hls/testdata/h265_320x180_25fps.h265"),
        true,
    )
}

/// The fixture's track; dimensions and frame rate come from its SPS.
pub fn h264_track(fx: &VideoFixture) -> Arc<Track> {
    Arc::new(Track::new(
        Codec::H264 {
            sps: Bytes::from(fx.sps.clone()),
            pps: Bytes::from(fx.pps.clone()),
        },
        90_000,
    ))
}

/// The fixture's track; dimensions and frame rate come from its SPS.
pub fn h265_track(fx: &VideoFixture) -> Arc<Track> {
    Arc::new(Track::new(
        Codec::H265 {
            vps: Bytes::from(fx.vps.clone()),
            sps: Bytes::from(fx.sps.clone()),
            pps: Bytes::from(fx.pps.clone()),
        },
        90_000,
    ))
}

/// AAC-LC, 48 kHz, stereo (AudioSpecificConfig `11 90`).
pub fn aac_track() -> Arc<Track> {
    Arc::new(Track::new(
        Codec::Aac {
            config: Bytes::from_static(&[0x11, 0x90]),
            channels: 2,
        },
        48_000,
    ))
}

pub fn opus_track() -> Arc<Track> {
    Arc::new(Track::new(Codec::Opus { channels: 2 }, 48_000))
}

pub fn pcma_track() -> Arc<Track> {
    Arc::new(Track::new(Codec::Pcma { channels: 1 }, 8_000))
}

/// A frame with `pts == dts`.
pub fn frame(track: usize, dts: i64, keyframe: bool, data: Bytes) -> Frame {
    frame_pts(track, dts, dts, keyframe, data)
}

pub fn frame_pts(track: usize, pts: i64, dts: i64, keyframe: bool, data: Bytes) -> Frame {
    Frame {
        track,
        pts,
        dts,
        keyframe,
        received: Instant::now(),
        data,
    }
}

/// A one-NAL video access unit of `len` bytes (non-IDR slice or IDR by `key`),
/// with a recognisable fill byte.
pub fn synthetic_au(key: bool, len: usize, fill: u8) -> Bytes {
    let mut b = BytesMut::with_capacity(len + 4);
    b.put_u32(len as u32);
    b.put_u8(if key { 0x65 } else { 0x41 });
    b.put_bytes(fill, len - 1);
    b.freeze()
}

/// A wall clock that starts at 2024-01-01T00:00:00Z.
pub fn wall(offset: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200) + offset
}
