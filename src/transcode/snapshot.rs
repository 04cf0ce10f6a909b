//! Snapshots: one keyframe of a stream's video as a JPEG image, pure apart
//! from the codec libraries (no I/O, no clock; the HTTP shell finds the
//! keyframe on the bus and calls [`jpeg_of_keyframe`] off the runtime).
//!
//! - MJPEG: the keyframe *is* a JPEG image (ITU-T T.81); returned as is.
//! - H.264: decoded by OpenH264 (bundled sources, every build), written as
//!   baseline JPEG by `jpeg-encoder`.
//! - H.265: decoded by libavcodec with the `transcode` feature
//!   ([`super::video::decode_keyframe`]); without it,
//!   [`SnapshotError::Unsupported`] says how to build it.

use crate::bus::{Codec, Frame, Track};

use super::video::{self, RgbPicture, TranscodeError};

/// JPEG quality of snapshots (1–100): a tile or a thumbnail, not an archive.
pub const JPEG_QUALITY: u8 = 80;

/// Why no snapshot could be made, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The stream has no video track.
    #[error("the stream has no video")]
    NoVideo,
    /// The codec can't be decoded by this binary (H.265 without the
    /// `transcode` feature).
    #[error("{0}")]
    Unsupported(String),
    /// The keyframe did not decode, or the picture could not be written.
    #[error("{0}")]
    Failed(String),
}

/// The keyframe `keyframe` of `track` (an IDR/IRAP access unit with 4-byte
/// length prefixes, parameter sets from `track`; or a JFIF image) as JPEG
/// bytes (SOI .. EOI) at [`JPEG_QUALITY`], full size.
///
/// `Err(NoVideo)` for an audio track; `Err(Unsupported)` for H.265 in a
/// build without the `transcode` feature; `Err(Failed)` when the access
/// unit does not decode (a cut or corrupt keyframe) or the picture is
/// larger than JPEG's 65 535 × 65 535.
pub fn jpeg_of_keyframe(track: &Track, keyframe: &Frame) -> Result<Vec<u8>, SnapshotError> {
    let picture = match &track.codec {
        Codec::Jpeg => return Ok(keyframe.data.to_vec()),
        Codec::H264 { .. } => decode_h264(track, keyframe)?,
        Codec::H265 { .. } => video::decode_keyframe(track, keyframe).map_err(|e| match e {
            TranscodeError::NotBuilt => SnapshotError::Unsupported(format!(
                "H.265 snapshots need libavcodec: {}",
                TranscodeError::NotBuilt
            )),
            other => SnapshotError::Failed(other.to_string()),
        })?,
        _ => return Err(SnapshotError::NoVideo),
    };
    encode(&picture)
}

fn decode_h264(track: &Track, keyframe: &Frame) -> Result<RgbPicture, SnapshotError> {
    use openh264::formats::YUVSource;

    let failed = |e: openh264::Error| SnapshotError::Failed(format!("H.264 keyframe: {e}"));
    let annexb = crate::codec::annexb_access_unit(&track.codec, &keyframe.data, true);
    let mut decoder = openh264::decoder::Decoder::new().map_err(failed)?;
    let picture = match decoder.decode(&annexb).map_err(failed)? {
        Some(yuv) => to_rgb(&yuv),
        None => {
            // A decoder that holds the picture back gives it up here.
            let rest = decoder.flush_remaining().map_err(failed)?;
            let yuv = rest.first().ok_or_else(|| {
                SnapshotError::Failed("the H.264 keyframe gave no picture".into())
            })?;
            to_rgb(yuv)
        }
    };

    fn to_rgb(yuv: &openh264::decoder::DecodedYUV<'_>) -> RgbPicture {
        let (w, h) = yuv.dimensions();
        let mut rgb = vec![0; w.saturating_mul(h).saturating_mul(3)];
        // OpenH264's conversion (BT.601, what H.264 cameras use unless
        // their VUI says otherwise).
        yuv.write_rgb8(&mut rgb);
        RgbPicture {
            width: u32::try_from(w).unwrap_or(u32::MAX),
            height: u32::try_from(h).unwrap_or(u32::MAX),
            rgb,
        }
    }
    Ok(picture)
}

fn encode(picture: &RgbPicture) -> Result<Vec<u8>, SnapshotError> {
    let too_big = || {
        SnapshotError::Failed(format!(
            "a {}x{} picture does not fit in a JPEG image",
            picture.width, picture.height
        ))
    };
    let w = u16::try_from(picture.width).map_err(|_| too_big())?;
    let h = u16::try_from(picture.height).map_err(|_| too_big())?;
    let mut out = Vec::with_capacity(picture.rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY)
        .encode(&picture.rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Failed(format!("JPEG: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MediaKind;
    use bytes::Bytes;
    use std::time::Instant;

    fn frame(data: Vec<u8>) -> Frame {
        Frame {
            track: 0,
            pts: 0,
            dts: 0,
            keyframe: true,
            received: Instant::now(),
            data: Bytes::from(data),
        }
    }

    #[test]
    fn an_mjpeg_keyframe_is_its_own_snapshot() {
        let image = vec![0xff, 0xd8, 1, 2, 3, 0xff, 0xd9];
        let t = Track::new(Codec::Jpeg, 90_000);
        assert_eq!(jpeg_of_keyframe(&t, &frame(image.clone())), Ok(image));
    }

    #[test]
    fn audio_has_no_snapshot() {
        let t = Track::new(Codec::Opus { channels: 2 }, 48_000);
        assert_eq!(t.kind(), MediaKind::Audio);
        assert_eq!(
            jpeg_of_keyframe(&t, &frame(vec![1, 2, 3])),
            Err(SnapshotError::NoVideo)
        );
    }

    #[test]
    fn a_cut_h264_keyframe_is_an_error_not_a_picture() {
        let t = Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e, 0xd9]),
                pps: Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
            },
            90_000,
        );
        // An IDR slice header cut after two bytes.
        let e = jpeg_of_keyframe(&t, &frame(vec![0, 0, 0, 3, 0x65, 0x88, 0x84]));
        assert!(matches!(e, Err(SnapshotError::Failed(_))), "{e:?}");
    }

    #[cfg(not(feature = "transcode"))]
    #[test]
    fn h265_without_the_feature_says_how_to_build_it() {
        let t = Track::new(
            Codec::H265 {
                vps: Bytes::from_static(&[0x40, 0x01]),
                sps: Bytes::from_static(&[0x42, 0x01]),
                pps: Bytes::from_static(&[0x44, 0x01]),
            },
            90_000,
        );
        let Err(SnapshotError::Unsupported(why)) =
            jpeg_of_keyframe(&t, &frame(vec![0, 0, 0, 2, 0x26, 0x01]))
        else {
            panic!("H.265 must be refused without the transcode feature");
        };
        assert!(why.contains("--features transcode"), "{why}");
    }
}
