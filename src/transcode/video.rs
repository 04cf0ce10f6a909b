//! Video to H.264, pure apart from the codec library: a source video track's
//! access units in ([`Frame`]s of the bus, H.265 or H.264), H.264 access
//! units out, one per source picture, with the source's pts and keyframes.
//! No I/O and no clock: the shell (`transcode`) calls
//! [`VideoTranscoder::push`] per source frame.
//!
//! Built with the cargo feature `transcode`: libavcodec's decoder and
//! libx264 through `ffmpeg-next` (ffmpeg's system libraries). Encoder:
//! same size (4:2:0 8-bit, converted by swscale when the camera sends
//! Main 10), `preset=veryfast`, `tune=zerolatency` (no lookahead, no
//! B-frames: one access unit out per picture in), an IDR wherever the
//! source has a keyframe, `transcode_bitrate` or ~0.1 bit per pixel.
//! Without the feature, [`VideoTranscoder::new`] answers
//! [`TranscodeError::NotBuilt`].

use crate::bus::Frame;
use crate::codec::Track;

/// Settings of the H.264 encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoSettings {
    /// Target bit rate in bit/s; `None`: about 0.1 bit per pixel per frame,
    /// 300 kbit/s to 8 Mbit/s.
    pub bitrate: Option<u32>,
}

/// Why video can't be transcoded, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    #[error(
        "this rtspgate was built without H.265 -> H.264 transcoding: build it with \
         `cargo build --release --features transcode` (needs ffmpeg's -dev packages: \
         libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libclang-dev pkg-config)"
    )]
    NotBuilt,
    #[error("{0}")]
    Unsupported(String),
    #[error("video codec library: {0}")]
    Codec(String),
}

/// Whether this binary can transcode video.
pub const AVAILABLE: bool = cfg!(feature = "transcode");

/// One source video track transcoded to H.264. See the module docs.
pub struct VideoTranscoder {
    #[cfg(feature = "transcode")]
    inner: imp::Inner,
}

impl VideoTranscoder {
    /// A transcoder for `source` (H.265 or H.264 with parameter sets).
    ///
    /// `Err(NotBuilt)` without the `transcode` feature; `Unsupported` for
    /// another codec; `Codec` when the library refuses (no libx264).
    pub fn new(source: &Track, settings: &VideoSettings) -> Result<Self, TranscodeError> {
        #[cfg(feature = "transcode")]
        {
            Ok(VideoTranscoder {
                inner: imp::Inner::new(source, settings)?,
            })
        }
        #[cfg(not(feature = "transcode"))]
        {
            let _ = (source, settings);
            Err(TranscodeError::NotBuilt)
        }
    }

    /// New parameter sets of the source, used before its next keyframe.
    pub fn set_source(&mut self, source: &Track) {
        #[cfg(feature = "transcode")]
        self.inner.set_source(source);
        #[cfg(not(feature = "transcode"))]
        let _ = source;
    }

    /// One source access unit (pts/dts in 90 kHz units, NAL units with
    /// 4-byte length prefixes, parameter sets not in band). Returns the
    /// H.264 access units ready: `track` and `received` of their source
    /// picture, `pts` = `dts` = the source picture's pts (the encoder has
    /// no B-frames), NAL units with 4-byte length prefixes without
    /// SPS/PPS/AUD/SEI (the SPS/PPS are in [`VideoTranscoder::output_track`]).
    /// A picture that fails to decode is counted and skipped.
    pub fn push(&mut self, frame: &Frame) -> Vec<Frame> {
        #[cfg(feature = "transcode")]
        {
            self.inner.push(frame)
        }
        #[cfg(not(feature = "transcode"))]
        {
            let _ = frame;
            Vec::new()
        }
    }

    /// The H.264 track (SPS/PPS, 90 kHz) once the encoder has produced its
    /// first access unit; it changes if the source's picture size does.
    pub fn output_track(&self) -> Option<&Track> {
        #[cfg(feature = "transcode")]
        {
            self.inner.output_track()
        }
        #[cfg(not(feature = "transcode"))]
        {
            None
        }
    }

    /// Source pictures that failed to decode or encode so far.
    pub fn errors(&self) -> u64 {
        #[cfg(feature = "transcode")]
        {
            self.inner.errors
        }
        #[cfg(not(feature = "transcode"))]
        {
            0
        }
    }
}

/// A decoded picture: `rgb` holds `height` rows of `width` pixels, 3 bytes
/// (R, G, B) each, no padding.
pub struct RgbPicture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// Decodes one keyframe (an IDR/IRAP access unit of `source`, H.265 or
/// H.264) on its own, with the track's parameter sets, into RGB.
///
/// `Err(NotBuilt)` without the `transcode` feature; `Unsupported` for
/// another codec; `Codec` when the picture does not decode.
pub fn decode_keyframe(source: &Track, keyframe: &Frame) -> Result<RgbPicture, TranscodeError> {
    #[cfg(feature = "transcode")]
    {
        imp::decode_keyframe(source, keyframe)
    }
    #[cfg(not(feature = "transcode"))]
    {
        let _ = (source, keyframe);
        Err(TranscodeError::NotBuilt)
    }
}

#[cfg(feature = "transcode")]
mod imp {
    use std::collections::HashMap;
    use std::time::Instant;

    use bytes::{BufMut, Bytes, BytesMut};
    use ffmpeg_next as ff;

    use super::{TranscodeError, VideoSettings};
    use crate::bus::Frame;
    use crate::codec::{annexb_access_unit, annexb_nal_units, Codec, Track};

    fn lib(e: ff::Error) -> TranscodeError {
        TranscodeError::Codec(e.to_string())
    }

    /// A decoder for H.265 or H.264 access units in Annex B.
    fn open_decoder(codec: &Codec) -> Result<ff::decoder::Video, TranscodeError> {
        ff::init().map_err(lib)?;
        let id = match codec {
            Codec::H265 { .. } => ff::codec::Id::HEVC,
            Codec::H264 { .. } => ff::codec::Id::H264,
            other => {
                return Err(TranscodeError::Unsupported(format!(
                    "{} video is not decoded here",
                    other.name()
                )))
            }
        };
        let found = ff::decoder::find(id)
            .ok_or_else(|| TranscodeError::Codec(format!("no {id:?} decoder")))?;
        let mut ctx = ff::codec::context::Context::new_with_codec(found);
        // One thread, no frame threading: a picture comes out as soon
        // as it can be shown, not a thread-count later.
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        ctx.decoder().video().map_err(lib)
    }

    /// See [`super::decode_keyframe`].
    pub(super) fn decode_keyframe(
        source: &Track,
        keyframe: &Frame,
    ) -> Result<super::RgbPicture, TranscodeError> {
        let mut decoder = open_decoder(&source.codec)?;
        let annexb = annexb_access_unit(&source.codec, &keyframe.data, true);
        let bad =
            |e: ff::Error| TranscodeError::Codec(format!("the keyframe does not decode: {e}"));
        decoder
            .send_packet(&ff::Packet::copy(&annexb))
            .map_err(bad)?;
        decoder.send_eof().map_err(bad)?;
        let mut pic = ff::frame::Video::empty();
        decoder.receive_frame(&mut pic).map_err(bad)?;
        let (w, h) = (pic.width(), pic.height());
        let mut scaler = ff::software::scaling::Context::get(
            pic.format(),
            w,
            h,
            ff::format::Pixel::RGB24,
            w,
            h,
            ff::software::scaling::Flags::BILINEAR,
        )
        .map_err(lib)?;
        let mut rgb = ff::frame::Video::empty();
        scaler.run(&pic, &mut rgb).map_err(lib)?;
        let row = usize::try_from(w).unwrap_or(0).saturating_mul(3);
        let stride = rgb.stride(0);
        let mut out = Vec::with_capacity(row.saturating_mul(usize::try_from(h).unwrap_or(0)));
        for line in rgb.data(0).chunks(stride.max(1)).take(h as usize) {
            out.extend_from_slice(line.get(..row).unwrap_or(line));
        }
        Ok(super::RgbPicture {
            width: w,
            height: h,
            rgb: out,
        })
    }

    pub(super) struct Inner {
        decoder: ff::decoder::Video,
        /// The source's codec and parameter sets, put before each keyframe.
        source: Codec,
        h265: bool,
        settings: VideoSettings,
        frame_rate: f64,
        encoder: Option<Encoder>,
        /// Source pts → (arrival, track, keyframe) of pictures in flight.
        in_flight: HashMap<i64, (Instant, usize, bool)>,
        out_track: Option<Track>,
        pub(super) errors: u64,
    }

    struct Encoder {
        enc: ff::encoder::Video,
        size: (u32, u32),
        scaler: Option<Scaler>,
    }

    /// swscale's context, owned by one transcoder.
    struct Scaler(ff::software::scaling::Context);

    // SAFETY: the context is used only through `&mut Inner` (never from two
    // threads at once); swscale keeps no thread-bound state in it.
    unsafe impl Send for Scaler {}

    impl Inner {
        pub(super) fn new(
            source: &Track,
            settings: &VideoSettings,
        ) -> Result<Self, TranscodeError> {
            let h265 = matches!(source.codec, Codec::H265 { .. });
            let decoder = open_decoder(&source.codec)?;
            let mut me = Inner {
                decoder,
                source: source.codec.clone(),
                h265,
                settings: *settings,
                frame_rate: source
                    .frame_rate
                    .filter(|r| *r > 1.0 && *r < 121.0)
                    .unwrap_or(25.0),
                encoder: None,
                in_flight: HashMap::new(),
                out_track: None,
                errors: 0,
            };
            me.set_source(source);
            Ok(me)
        }

        pub(super) fn set_source(&mut self, source: &Track) {
            self.source = source.codec.clone();
        }

        pub(super) fn output_track(&self) -> Option<&Track> {
            self.out_track.as_ref()
        }

        pub(super) fn push(&mut self, frame: &Frame) -> Vec<Frame> {
            let _ = self.h265;
            let annexb = annexb_access_unit(&self.source, &frame.data, frame.keyframe);
            let mut packet = ff::Packet::copy(&annexb);
            packet.set_pts(Some(frame.pts));
            packet.set_dts(Some(frame.dts));
            // Pictures whose pts repeats (a broken camera) would be
            // ambiguous below: the newest wins.
            self.in_flight
                .insert(frame.pts, (frame.received, frame.track, frame.keyframe));
            if self.in_flight.len() > 64 {
                // Pictures the decoder dropped never come out: forget the
                // oldest so the map stays small.
                if let Some(&oldest) = self.in_flight.keys().min() {
                    self.in_flight.remove(&oldest);
                }
            }
            if self.decoder.send_packet(&packet).is_err() {
                self.errors += 1;
                return Vec::new();
            }
            let mut out = Vec::new();
            let mut decoded = ff::frame::Video::empty();
            while self.decoder.receive_frame(&mut decoded).is_ok() {
                let Some(pts) = decoded.pts() else {
                    self.errors += 1;
                    continue;
                };
                let Some((received, track, key)) = self.in_flight.remove(&pts) else {
                    self.errors += 1;
                    continue;
                };
                if let Err(e) = self.encode(&mut decoded, pts, key) {
                    tracing::debug!("H.264 encoder: {e}");
                    self.errors += 1;
                    continue;
                }
                self.drain(received, track, &mut out);
            }
            out
        }

        fn encode(
            &mut self,
            pic: &mut ff::frame::Video,
            pts: i64,
            key: bool,
        ) -> Result<(), TranscodeError> {
            let size = (pic.width(), pic.height());
            if self.encoder.as_ref().is_none_or(|e| e.size != size) {
                self.encoder = Some(self.open_encoder(pic)?);
            }
            let Some(enc) = self.encoder.as_mut() else {
                return Ok(());
            };
            let mut converted;
            let input = match enc.scaler.as_mut() {
                Some(Scaler(s)) => {
                    converted = ff::frame::Video::empty();
                    s.run(pic, &mut converted).map_err(lib)?;
                    &mut converted
                }
                None => pic,
            };
            input.set_pts(Some(pts));
            // The source's keyframes stay keyframes: same GOP, and a reader
            // that joins at a camera keyframe joins here too.
            input.set_kind(if key {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            enc.enc.send_frame(input).map_err(lib)
        }

        fn open_encoder(&self, pic: &ff::frame::Video) -> Result<Encoder, TranscodeError> {
            let (w, h) = (pic.width(), pic.height());
            let codec = ff::encoder::find_by_name("libx264")
                .ok_or_else(|| TranscodeError::Codec("ffmpeg has no libx264 encoder".into()))?;
            let mut enc = ff::codec::context::Context::new_with_codec(codec)
                .encoder()
                .video()
                .map_err(lib)?;
            let fps = self.frame_rate.round().max(1.0) as i32;
            enc.set_width(w);
            enc.set_height(h);
            enc.set_format(ff::format::Pixel::YUV420P);
            enc.set_time_base(ff::Rational::new(1, 90_000));
            enc.set_frame_rate(Some(ff::Rational::new(fps, 1)));
            let bitrate = self.settings.bitrate.unwrap_or_else(|| {
                let bits = f64::from(w) * f64::from(h) * self.frame_rate * 0.1;
                bits.clamp(300_000.0, 8_000_000.0) as u32
            });
            enc.set_bit_rate(bitrate as usize);
            enc.set_max_bit_rate(bitrate as usize * 3 / 2);
            enc.set_max_b_frames(0);
            // The source's keyframes are forced; this only caps a GOP.
            enc.set_gop(u32::try_from(fps).unwrap_or(25).saturating_mul(10));
            let mut opts = ff::Dictionary::new();
            opts.set("preset", "veryfast");
            opts.set("tune", "zerolatency");
            opts.set("forced-idr", "1");
            opts.set("threads", "1");
            let enc = enc.open_with(opts).map_err(lib)?;
            let scaler = if pic.format() == ff::format::Pixel::YUV420P {
                None
            } else {
                Some(Scaler(
                    ff::software::scaling::Context::get(
                        pic.format(),
                        w,
                        h,
                        ff::format::Pixel::YUV420P,
                        w,
                        h,
                        ff::software::scaling::Flags::BILINEAR,
                    )
                    .map_err(lib)?,
                ))
            };
            Ok(Encoder {
                enc,
                size: (w, h),
                scaler,
            })
        }

        /// Encoded packets → bus frames; SPS/PPS go to the output track.
        fn drain(&mut self, received: Instant, track: usize, out: &mut Vec<Frame>) {
            let Some(enc) = self.encoder.as_mut() else {
                return;
            };
            let mut packet = ff::Packet::empty();
            while enc.enc.receive_packet(&mut packet).is_ok() {
                let Some(data) = packet.data() else { continue };
                let pts = packet.pts().unwrap_or(0);
                let mut sps = None;
                let mut pps = None;
                let mut au = BytesMut::with_capacity(data.len() + 16);
                let mut idr = false;
                for nal in annexb_nal_units(data) {
                    match nal.first().map(|b| b & 0x1f) {
                        Some(7) => sps = Some(Bytes::copy_from_slice(nal)),
                        Some(8) => pps = Some(Bytes::copy_from_slice(nal)),
                        Some(6) | Some(9) | None => {}
                        Some(t) => {
                            idr |= t == 5;
                            au.put_u32(nal.len() as u32);
                            au.put_slice(nal);
                        }
                    }
                }
                if let (Some(sps), Some(pps)) = (sps, pps) {
                    let changed = !matches!(
                        self.out_track.as_ref().map(|t| &t.codec),
                        Some(Codec::H264 { sps: s, pps: p }) if *s == sps && *p == pps
                    );
                    if changed {
                        self.out_track = Some(Track::new(Codec::H264 { sps, pps }, 90_000));
                    }
                }
                if au.is_empty() || self.out_track.is_none() {
                    continue;
                }
                out.push(Frame {
                    track,
                    pts,
                    dts: pts,
                    keyframe: idr,
                    received,
                    data: au.freeze(),
                });
            }
        }
    }
}

#[cfg(all(test, not(feature = "transcode")))]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn without_the_feature_the_reason_says_how_to_build_it() {
        let t = Track::new(Codec::Jpeg, 90_000);
        let e = VideoTranscoder::new(&t, &VideoSettings::default()).err();
        assert_eq!(e, Some(TranscodeError::NotBuilt));
        assert!(TranscodeError::NotBuilt
            .to_string()
            .contains("--features transcode"));
    }
}

#[cfg(all(test, feature = "transcode"))]
mod tests;
