//! One received RTP track to [`SourceFrame`]s, pure: the depacketizer, the
//! codec parameters in force (from the SDP, then in band), MJPEG sizes,
//! loss counts and presentation times. The one home of what a pulled
//! camera (`rtsp_pull`, timestamps extended by retina) and a publisher
//! (`push`, timestamps extended by [`TimestampExtender`]) do per packet.

use bytes::Bytes;

use crate::bus::{Codec, DropReason, SourceFrame, Track};
use crate::codec::{Depacketizer, Output, ParamSets, RtpFormat, RtpPacket, Unsupported};

/// What one packet produced, in order.
#[derive(Debug)]
pub enum RtpEvent {
    /// New codec parameters (in-band parameter sets, an MJPEG size change):
    /// the track is to be updated before the frames that follow.
    Params(Track),
    /// A complete access unit.
    Frame(SourceFrame),
    /// An access unit that could not be rebuilt.
    Dropped(DropReason),
}

/// One track of a session being received. See the module docs.
#[derive(Debug)]
pub struct RtpTrack {
    depacketizer: Depacketizer,
    clock_rate: u32,
    /// H.265 (else H.264 where parameter sets arrive in band).
    h265: bool,
    /// The SDP's `a=framerate`, for an SPS without timing information.
    framerate: Option<f64>,
    /// The codec with the parameter sets in force, once known.
    codec: Option<Codec>,
    /// An MJPEG track as announced (with the last image's size).
    jpeg: Option<Track>,
    /// RTP packets lost since the last frame handed out.
    loss: u32,
    /// The last packet's RTP timestamp as sent, and where it was placed on
    /// the session's timeline (clock units since the start, extended).
    last_packet: Option<(u32, i64)>,
}

impl RtpTrack {
    /// A receiver for `format` (`Err` as [`Depacketizer::new`]);
    /// `announced` is the track as the SDP describes it, if its parameters
    /// are known there; `framerate` the SDP's `a=framerate`.
    pub fn new(
        format: &RtpFormat<'_>,
        announced: Option<&Track>,
        framerate: Option<f64>,
    ) -> Result<RtpTrack, Unsupported> {
        Ok(RtpTrack {
            depacketizer: Depacketizer::new(format)?,
            clock_rate: format.clock_rate,
            h265: format.encoding_name.eq_ignore_ascii_case("h265"),
            framerate,
            codec: announced.map(|t| t.codec.clone()),
            jpeg: announced.filter(|t| t.codec == Codec::Jpeg).cloned(),
            loss: 0,
            last_packet: None,
        })
    }

    /// Clock rate in Hz of the track's timestamps.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Takes one packet of bus track `track`; `extended` is its RTP
    /// timestamp on the session's timeline (clock units, 64 bits). What it
    /// completes is appended to `out`.
    pub fn push(
        &mut self,
        track: usize,
        pkt: RtpPacket<'_>,
        extended: i64,
        out: &mut Vec<RtpEvent>,
    ) {
        self.loss = self.loss.saturating_add(u32::from(pkt.loss));
        self.last_packet = Some((pkt.timestamp, extended));
        self.depacketizer.push(pkt);
        while let Some(output) = self.depacketizer.pull() {
            let au = match output {
                Output::Frame(au) => au,
                Output::Dropped { reason, .. } => {
                    out.push(RtpEvent::Dropped(reason));
                    continue;
                }
            };
            if let Some(sets) = &au.new_param_sets {
                if let Some(codec) = with_param_sets(self.h265, self.codec.as_ref(), sets) {
                    let mut t = Track::new(codec.clone(), self.clock_rate);
                    if t.frame_rate.is_none() {
                        t.frame_rate = self.framerate;
                    }
                    self.codec = Some(codec);
                    out.push(RtpEvent::Params(t));
                }
            }
            // MJPEG: the size is in each image (RFC 2435 has no SDP
            // parameters), and a camera may change it.
            if let Some(t) = self
                .jpeg
                .as_ref()
                .and_then(|t| t.jpeg_dimensions_changed(&au.data))
            {
                self.jpeg = Some(t.clone());
                out.push(RtpEvent::Params(t));
            }
            out.push(RtpEvent::Frame(SourceFrame {
                track,
                pts: self.pts_of(au.timestamp),
                dts: None,
                source_keyframe: au.keyframe,
                loss: std::mem::take(&mut self.loss),
                data: au.data,
            }));
        }
    }

    /// An access unit's presentation time on the session's timeline, in
    /// clock units: an access unit's own timestamp is within a few frames
    /// of the last packet's (AAC: one packet's AUs; B-frames: the reorder
    /// depth), so the signed 32-bit difference places it.
    fn pts_of(&self, timestamp: u32) -> i64 {
        match self.last_packet {
            Some((raw, extended)) => {
                extended.saturating_add(i64::from(timestamp.wrapping_sub(raw) as i32))
            }
            None => 0,
        }
    }
}

/// Extends a track's 32-bit RTP timestamps (RFC 3550 §5.1, wrapping) to a
/// 64-bit timeline that starts at 0 with the first packet; a packet up to
/// 2^31 clock units before the previous one (reordering) goes back.
#[derive(Debug, Default)]
pub struct TimestampExtender {
    last: Option<(u32, i64)>,
}

impl TimestampExtender {
    /// `timestamp` on the track's timeline, in clock units.
    pub fn extend(&mut self, timestamp: u32) -> i64 {
        let at = match self.last {
            Some((raw, at)) => at.saturating_add(i64::from(timestamp.wrapping_sub(raw) as i32)),
            None => 0,
        };
        self.last = Some((timestamp, at));
        at
    }
}

/// `codec` with the in-band parameter sets `sets` in place of its own
/// (those `sets` lacks are kept); `None` for a codec without parameter
/// sets or while one the codec needs is still unknown.
fn with_param_sets(h265: bool, codec: Option<&Codec>, sets: &ParamSets) -> Option<Codec> {
    let pick = |new: &Option<Bytes>, old: Option<&Bytes>| new.clone().or_else(|| old.cloned());
    match codec {
        Some(Codec::H265 { vps, sps, pps }) => Some(Codec::H265 {
            vps: pick(&sets.vps, Some(vps))?,
            sps: pick(&sets.sps, Some(sps))?,
            pps: pick(&sets.pps, Some(pps))?,
        }),
        Some(Codec::H264 { sps, pps }) => Some(Codec::H264 {
            sps: pick(&sets.sps, Some(sps))?,
            pps: pick(&sets.pps, Some(pps))?,
        }),
        Some(_) => None,
        // Parameters not in the SDP: the kind follows from which sets came.
        None if h265 => Some(Codec::H265 {
            vps: sets.vps.clone()?,
            sps: sets.sps.clone()?,
            pps: sets.pps.clone()?,
        }),
        None => Some(Codec::H264 {
            sps: sets.sps.clone()?,
            pps: sets.pps.clone()?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_extend_across_the_wrap_and_back_for_reordering() {
        let mut x = TimestampExtender::default();
        assert_eq!(x.extend(u32::MAX - 10), 0);
        assert_eq!(x.extend(5), 16);
        assert_eq!(x.extend(3), 14);
        assert_eq!(x.extend(3003), 3014);
    }

    #[test]
    fn g711_packets_become_frames_with_their_loss() {
        let format = RtpFormat {
            encoding_name: "PCMA",
            clock_rate: 8000,
            channels: None,
            fmtp: None,
        };
        let announced = format.track();
        let mut t = RtpTrack::new(&format, announced.as_ref(), None).expect("PCMA");
        let mut out = Vec::new();
        let pkt = |seq, ts, loss| RtpPacket {
            sequence_number: seq,
            timestamp: ts,
            marker: false,
            payload: &[1, 2, 3, 4],
            loss,
        };
        t.push(1, pkt(7, 1000, 0), 0, &mut out);
        t.push(1, pkt(9, 1320, 1), 320, &mut out);
        let frames: Vec<(usize, i64, u32)> = out
            .iter()
            .filter_map(|e| match e {
                RtpEvent::Frame(f) => Some((f.track, f.pts, f.loss)),
                _ => None,
            })
            .collect();
        assert_eq!(frames, [(1, 0, 0), (1, 320, 1)]);
    }
}
