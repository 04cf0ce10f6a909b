//! Audio to Opus, pure: a source audio track's frames in (AAC-LC access
//! units or G.711 samples, [`Frame`]s of the bus), Opus frames out (RFC
//! 6716, 20 ms, 48 kHz RTP clock as RFC 7587 §4.1 requires), same channel
//! count. No I/O and no clock: the shell (`transcode::spawn`) calls
//! [`AudioTranscoder::push`] per source frame.
//!
//! Decoders: symphonia's AAC-LC decoder (pure Rust; no HE-AAC/SBR: such a
//! track is refused in [`AudioTranscoder::new`] with the reason), G.711 by
//! `codec::{alaw_to_linear, ulaw_to_linear}`. Encoder: libopus 1.3
//! transpiled to Rust (`unsafe-libopus`), fed at the source's own sample
//! rate, which Opus accepts for 8, 12, 16, 24 and 48 kHz (RFC 6716 §2):
//! no resampler, so no added delay; other rates are refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration as SymDuration, Timestamp};

use crate::bus::Frame;
use crate::codec::{alaw_to_linear, ulaw_to_linear, AacConfig, Codec, Track};

/// Opus frames are 20 ms (RFC 7587 §4.2 recommends it for WebRTC).
const FRAME_MS: u32 = 20;
/// RTP clock rate of Opus, Hz (RFC 7587 §4.1).
pub const OPUS_CLOCK: u32 = 48_000;
/// Largest Opus packet of one frame (RFC 6716 §3.4 R2: 1275 bytes).
const MAX_PACKET: usize = 1275;
/// Opus encoder complexity (0–10, libopus default 10). Measured with
/// `cargo run --release --example bench -- --sections transcode` on
/// stereo 48 kHz: 10 → 1.39 % of a core per stream, 5 → 1.02 %, 4 → 0.79 %
/// (decoding included); 4 keeps the full-band CELT modes a camera's
/// microphone needs at 64 kbit/s.
const COMPLEXITY: i32 = 4;
/// A source timestamp this far (in 48 kHz units) from where the samples
/// buffered so far end starts over (a gap, a camera restart): 20 ms.
const RESYNC: i64 = 960;

/// Settings of the Opus encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioSettings {
    /// Target bit rate in bit/s (6 000–510 000).
    pub bitrate: u32,
}

enum Decoder {
    Aac(Box<AacDecoder>),
    Pcma,
    Pcmu,
}

/// One source audio track transcoded to Opus. See the module docs.
pub struct AudioTranscoder {
    decoder: Decoder,
    channels: usize,
    /// Source (and encoder input) sample rate, Hz.
    rate: u32,
    encoder: OpusEncoder,
    /// Decoded samples not yet encoded, interleaved.
    pcm: Vec<i16>,
    /// pts of `pcm[0]` in 48 kHz units, once a frame has arrived.
    pcm_start: Option<i64>,
    /// The last source frame's pts (48 kHz units) and arrival: output frames
    /// get arrival times on the same mapping, so that a reader's wall clock
    /// (RTCP SR) puts audio where the camera's video is.
    anchor: Option<(i64, Instant)>,
    scratch: Vec<i16>,
    source: Track,
    out_track: Track,
    decode_errors: u64,
}

impl AudioTranscoder {
    /// Checks that `source` can be decoded and builds the Opus encoder.
    ///
    /// `Err` (plain words) for: a codec other than AAC/G.711; AAC other
    /// than AAC-LC (HE-AAC, HE-AACv2, a channel layout given only in a
    /// program config element); more than 2 channels; a sample rate Opus
    /// can't take (8, 12, 16, 24, 48 kHz only).
    pub fn new(source: &Track, settings: &AudioSettings) -> Result<Self, String> {
        let rate = source.clock_rate;
        let (decoder, channels) =
            match &source.codec {
                Codec::Aac { config, channels } => {
                    let asc = AacConfig::parse(config)
                        .map_err(|e| format!("AAC config unreadable: {e}"))?;
                    match asc.object_type {
                        2 => {}
                        5 | 29 => return Err(
                            "HE-AAC (SBR) is not transcoded to Opus: its decoder here is AAC-LC \
                             only; set the camera's audio to AAC-LC, G.711 or Opus"
                                .into(),
                        ),
                        t => {
                            return Err(format!(
                                "AAC object type {t} is not transcoded to Opus (AAC-LC only)"
                            ))
                        }
                    }
                    let mut params = AudioCodecParameters::new();
                    params
                        .for_codec(CODEC_ID_AAC)
                        .with_extra_data(config.to_vec().into_boxed_slice());
                    let dec = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
                        .map_err(|e| format!("AAC decoder refused the track: {e}"))?;
                    (Decoder::Aac(Box::new(dec)), *channels)
                }
                Codec::Pcma { channels } => (Decoder::Pcma, *channels),
                Codec::Pcmu { channels } => (Decoder::Pcmu, *channels),
                other => {
                    return Err(format!("{} is not transcoded to Opus", other.name()));
                }
            };
        if !(1..=2).contains(&channels) {
            return Err(format!(
                "{channels}-channel audio is not transcoded to Opus (mono and stereo only)"
            ));
        }
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&rate) {
            return Err(format!(
                "{} at {rate} Hz is not transcoded to Opus (8, 12, 16, 24 or 48 kHz only)",
                source.codec.name()
            ));
        }
        let encoder = OpusEncoder::new(rate, channels, settings.bitrate)?;
        Ok(AudioTranscoder {
            decoder,
            channels: usize::from(channels),
            rate,
            encoder,
            pcm: Vec::new(),
            pcm_start: None,
            anchor: None,
            scratch: Vec::new(),
            source: source.clone(),
            out_track: Track::new(Codec::Opus { channels }, OPUS_CLOCK),
            decode_errors: 0,
        })
    }

    /// The source track this transcoder was made for.
    pub fn source(&self) -> &Track {
        &self.source
    }

    /// The Opus track frames are published with (48 kHz RTP clock).
    pub fn output_track(&self) -> &Track {
        &self.out_track
    }

    /// Source frames that failed to decode so far (each is 20–130 ms of
    /// silence in the output, never an error).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// One source frame (`pts` in the source track's clock units); returns
    /// the Opus frames completed, each with `pts` in 48 kHz units, `track`
    /// copied from the input, and `received` on the source's pts↔arrival
    /// mapping.
    pub fn push(&mut self, frame: &Frame) -> Vec<Frame> {
        self.scratch.clear();
        let ok = match &mut self.decoder {
            Decoder::Aac(dec) => {
                let packet = PacketRef::new(
                    0,
                    Timestamp::from(0i64),
                    SymDuration::from(1024u32),
                    &frame.data,
                );
                match dec.decode_ref(&packet) {
                    Ok(buf) => {
                        buf.copy_to_vec_interleaved::<i16>(&mut self.scratch);
                        true
                    }
                    Err(_) => false,
                }
            }
            Decoder::Pcma => {
                self.scratch
                    .extend(frame.data.iter().map(|&b| alaw_to_linear(b)));
                true
            }
            Decoder::Pcmu => {
                self.scratch
                    .extend(frame.data.iter().map(|&b| ulaw_to_linear(b)));
                true
            }
        };
        if !ok {
            self.decode_errors += 1;
            return Vec::new();
        }
        let Some(pts48) = rescale(frame.pts, self.rate, OPUS_CLOCK) else {
            return Vec::new();
        };
        let expected = self.pcm_start.and_then(|s| {
            let frames = (self.pcm.len() / self.channels) as i64;
            s.checked_add(rescale(frames, self.rate, OPUS_CLOCK)?)
        });
        if expected.is_none_or(|e| (e - pts48).abs() > RESYNC) {
            // A gap or a jump: start over at this frame rather than play
            // samples at the wrong time.
            self.pcm.clear();
            self.pcm_start = Some(pts48);
        }
        self.anchor = Some((pts48, frame.received));
        // A decoder that lost the channel layout gives another count:
        // only whole sample frames are kept.
        let whole = self.scratch.len() - self.scratch.len() % self.channels;
        self.pcm.extend_from_slice(&self.scratch[..whole]);

        let per_frame = (self.rate * FRAME_MS / 1000) as usize * self.channels;
        let step = i64::from(OPUS_CLOCK * FRAME_MS / 1000);
        let mut out = Vec::new();
        let mut consumed = 0;
        while self.pcm.len() - consumed >= per_frame {
            let Some(start) = self.pcm_start else { break };
            let pcm = &self.pcm[consumed..consumed + per_frame];
            consumed += per_frame;
            self.pcm_start = Some(start + step);
            let Some(data) = self.encoder.encode(pcm, per_frame / self.channels) else {
                continue;
            };
            out.push(Frame {
                track: frame.track,
                pts: start,
                dts: start,
                keyframe: true,
                received: self.arrival_of(start),
                data,
            });
        }
        self.pcm.drain(..consumed);
        out
    }

    /// `pts` (48 kHz units) on the last source frame's pts↔arrival mapping.
    fn arrival_of(&self, pts: i64) -> Instant {
        let Some((at_pts, at)) = self.anchor else {
            return Instant::now();
        };
        let delta = pts - at_pts;
        let d = Duration::from_micros(delta.unsigned_abs() * 1_000_000 / u64::from(OPUS_CLOCK));
        if delta >= 0 {
            at.checked_add(d).unwrap_or(at)
        } else {
            at.checked_sub(d).unwrap_or(at)
        }
    }
}

/// `v` from clock `from` to clock `to` (Hz), rounded down; `None` on overflow.
fn rescale(v: i64, from: u32, to: u32) -> Option<i64> {
    let r = i128::from(v) * i128::from(to) / i128::from(from.max(1));
    i64::try_from(r).ok()
}

/// libopus's encoder state, owned.
struct OpusEncoder {
    st: *mut unsafe_libopus::OpusEncoder,
    out: Vec<u8>,
}

// SAFETY: the state is plain heap memory owned by this value and used only
// through `&mut self`; libopus keeps no thread-local or global state.
unsafe impl Send for OpusEncoder {}

impl OpusEncoder {
    fn new(rate: u32, channels: u16, bitrate: u32) -> Result<Self, String> {
        let mut err = 0i32;
        // SAFETY: arguments are checked by libopus (OPUS_BAD_ARG); the
        // returned pointer is checked for null before use.
        let st = unsafe {
            unsafe_libopus::opus_encoder_create(
                rate as i32,
                i32::from(channels),
                unsafe_libopus::OPUS_APPLICATION_AUDIO,
                &mut err,
            )
        };
        if st.is_null() || err != unsafe_libopus::OPUS_OK {
            return Err(format!(
                "Opus encoder refused {rate} Hz, {channels} channel(s): error {err}"
            ));
        }
        let enc = OpusEncoder {
            st,
            out: vec![0; MAX_PACKET],
        };
        // SAFETY: `st` is a live encoder; the request takes one i32.
        let r = unsafe {
            unsafe_libopus::opus_encoder_ctl!(
                st,
                unsafe_libopus::OPUS_SET_BITRATE_REQUEST,
                bitrate as i32
            )
        };
        if r != unsafe_libopus::OPUS_OK {
            return Err(format!(
                "Opus encoder refused bit rate {bitrate}: error {r}"
            ));
        }
        // SAFETY: as above.
        let r = unsafe {
            unsafe_libopus::opus_encoder_ctl!(
                st,
                unsafe_libopus::OPUS_SET_COMPLEXITY_REQUEST,
                COMPLEXITY
            )
        };
        if r != unsafe_libopus::OPUS_OK {
            return Err(format!(
                "Opus encoder refused complexity {COMPLEXITY}: error {r}"
            ));
        }
        Ok(enc)
    }

    /// One 20 ms frame of `samples` sample frames (interleaved `pcm`).
    fn encode(&mut self, pcm: &[i16], samples: usize) -> Option<Bytes> {
        // SAFETY: `pcm` holds `samples * channels` values (the caller cuts
        // it so) and `out` has `out.len()` writable bytes.
        let n = unsafe {
            unsafe_libopus::opus_encode(
                self.st,
                pcm.as_ptr(),
                samples as i32,
                self.out.as_mut_ptr(),
                self.out.len() as i32,
            )
        };
        let n = usize::try_from(n).ok()?;
        Some(Bytes::copy_from_slice(self.out.get(..n)?))
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { unsafe_libopus::opus_encoder_destroy(self.st) }
    }
}

#[cfg(test)]
mod tests;
