//! Detection of streams whose pictures are reordered (B-frames), which
//! browsers' WebRTC players show jerkily.
//!
//! The fact comes from the track's parameter-set summary (`codec/`) when
//! the SPS states it; an H.264 SPS without a bitstream restriction leaves
//! it to the slice types of the first frames.

use crate::bus::{Codec, Track};
use crate::codec::h264_has_b_slice;

/// Watches a video track for reordered pictures. Browsers' WebRTC video
/// receivers decode in arrival order and show frames as they come out,
/// without a reorder delay, so a stream with B-frames plays jerkily.
#[derive(Debug, Default, Clone)]
pub struct ReorderDetector {
    found: bool,
    frames_checked: u32,
}

/// After this many frames without a B slice, stop parsing (a stream that
/// uses B-frames has them in every GOP).
const CHECK_FRAMES: u32 = 300;

impl ReorderDetector {
    /// Looks at one frame of `track`; returns true the first time
    /// reordering is found.
    pub fn check(&mut self, track: &Track, data: &[u8]) -> bool {
        if self.found || self.frames_checked >= CHECK_FRAMES {
            return false;
        }
        self.frames_checked += 1;
        // HEVC encoders use B slices without reordering (low-delay B), so
        // the SPS's reorder count is what tells; H.264 SPSs without a
        // bitstream restriction do not say, and then B slices tell.
        let found = match (
            track.summary.as_ref().and_then(|s| s.max_reorder()),
            &track.codec,
        ) {
            (Some(n), _) => {
                self.frames_checked = CHECK_FRAMES;
                n > 0
            }
            (None, Codec::H264 { .. }) => h264_has_b_slice(data) == Some(true),
            (None, _) => false,
        };
        self.found = found;
        found
    }

    pub fn found(&self) -> bool {
        self.found
    }
}

/// Plain-words warning shown in the API and logs for a stream with B-frames.
pub const B_FRAMES_WARNING: &str = "the video has B-frames (pictures sent out of order): browsers' WebRTC players show them in decoding order, so motion stutters. Turn B-frames off in the camera's encoder settings (often \"GOP structure\", \"B-frame\" or a \"baseline\"/\"main\" profile without B-frames)";

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::tests::{h264_codec, h265_codec, hex, H264_PPS};

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    /// A Main-profile SPS head that does not say whether it reorders.
    fn silent_h264() -> Track {
        Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x4d, 0x00, 0x1f]),
                pps: hex(H264_PPS),
            },
            90_000,
        )
    }

    #[test]
    fn h264_without_bitstream_restriction_is_judged_by_slice_types() {
        // first_mb_in_slice = 0 ("1"), slice_type ue: P=0 ("1"), B=1 ("010").
        let p = avcc(&[&[0x41, 0b1100_0000]]);
        let b = avcc(&[&[0x01, 0b1010_0000]]);
        let t = silent_h264();
        assert_eq!(t.summary.as_ref().and_then(|s| s.max_reorder()), None);
        let mut d = ReorderDetector::default();
        assert!(!d.check(&t, &p));
        assert!(d.check(&t, &b));
        assert!(!d.check(&t, &b), "reported once");
        assert!(d.found());
    }

    #[test]
    fn sps_reorder_count_decides_when_present() {
        // The codec tests' x265 SPS has sps_max_num_reorder_pics = 2.
        let hevc = Track::new(h265_codec(), 90_000);
        let mut d = ReorderDetector::default();
        assert!(d.check(&hevc, &[]));

        // A Baseline SPS says 0: its B-looking slices (impossible in
        // practice) are not even parsed.
        let h264 = Track::new(h264_codec(), 90_000);
        assert_eq!(h264.summary.as_ref().and_then(|s| s.max_reorder()), Some(0));
        let b = avcc(&[&[0x01, 0b1010_0000]]);
        let mut d = ReorderDetector::default();
        assert!(!d.check(&h264, &b));
        assert!(!d.found());
    }
}
