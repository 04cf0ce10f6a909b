//! Packetize once per path, share with every WebRTC viewer.
//!
//! str0m's frame API packetizes each frame again for each viewer (an
//! Annex B scan and a payload copy per packet per viewer). Sessions run
//! str0m in RTP mode instead: a path's frames are cut into RTP payloads
//! here, once, by the same payloaders as the RTSP re-serve (FU-A / FU
//! fragmentation, parameter sets before keyframes that lack them), and each
//! viewer's str0m writes its own RTP headers (sequence numbers, SSRC,
//! timestamps) and SRTP around the shared payloads (`Arc<[u8]>`, which
//! str0m's send queue and retransmission cache also keep without copying).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::{Codec, Frame};
use crate::codec::{PayloadError, Payloader, RTP_HEADER_LEN};

/// Largest RTP packet (header + payload) made for WebRTC: str0m adds the
/// mid header extension (8 bytes) and SRTP its 16-byte tag, which keeps
/// datagrams near 1200 bytes, inside any path MTU (IPv6 minimum 1280)
/// with room for TURN or VPN overhead.
pub const WEBRTC_RTP_MTU: usize = 1180;

/// Frames whose payloads are kept for viewers that have not written them
/// yet (viewers of a path take a frame within the same wake-up).
const RECENT: usize = 8;

/// One RTP payload of a frame.
#[derive(Debug, Clone)]
pub struct RtpPayload {
    pub payload: Arc<[u8]>,
    pub marker: bool,
    /// Added to the frame's RTP timestamp (G.711 frames split at the MTU
    /// advance it per packet).
    pub ts_delta: u32,
}

/// A frame's RTP payloads, in order.
#[derive(Debug, Default)]
pub struct RtpFrame {
    pub packets: Vec<RtpPayload>,
}

/// One track's payloader and the codec it was made for.
struct TrackPayloader {
    codec: Codec,
    payloader: Payloader,
}

/// A path's payloaders (one per track) and its recently packetized frames.
#[derive(Default)]
pub struct PathPacketizer {
    tracks: Vec<Option<TrackPayloader>>,
    recent: VecDeque<(Arc<Frame>, Arc<RtpFrame>)>,
    scratch: Vec<bytes::Bytes>,
}

impl PathPacketizer {
    /// `frame`'s payloads for `codec` (the viewer's current codec of the
    /// frame's track), packetized on the first request and shared after.
    pub fn packets(
        &mut self,
        codec: &Codec,
        frame: &Arc<Frame>,
    ) -> Result<Arc<RtpFrame>, PayloadError> {
        if let Some((_, p)) = self.recent.iter().find(|(f, _)| Arc::ptr_eq(f, frame)) {
            return Ok(p.clone());
        }
        if self.tracks.len() <= frame.track {
            self.tracks.resize_with(frame.track + 1, || None);
        }
        let slot = &mut self.tracks[frame.track];
        match slot {
            Some(t) if t.codec == *codec => {}
            Some(t) => {
                t.payloader.set_codec(codec);
                t.codec = codec.clone();
            }
            None => {
                // Header fields are the viewers' own: only payloads are used.
                let payloader = Payloader::new(codec, 0, 0, 0, WEBRTC_RTP_MTU)?;
                *slot = Some(TrackPayloader {
                    codec: codec.clone(),
                    payloader,
                });
            }
        }
        let Some(t) = slot else {
            return Err(PayloadError::Config("no payloader".into()));
        };
        let ts = frame.pts as u32;
        self.scratch.clear();
        t.payloader
            .payload(&frame.data, ts, frame.keyframe, &mut self.scratch)?;
        let packets = self
            .scratch
            .iter()
            .filter(|p| p.len() > RTP_HEADER_LEN)
            .map(|p| RtpPayload {
                payload: Arc::from(&p[RTP_HEADER_LEN..]),
                marker: p[1] & 0x80 != 0,
                ts_delta: u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_sub(ts),
            })
            .collect();
        let rtp = Arc::new(RtpFrame { packets });
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((frame.clone(), rtp.clone()));
        Ok(rtp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    fn frame(track: usize, pts: i64, keyframe: bool, data: Vec<u8>) -> Arc<Frame> {
        Arc::new(Frame {
            track,
            pts,
            dts: pts,
            keyframe,
            received: Instant::now(),
            data: Bytes::from(data),
        })
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn h264() -> Codec {
        Codec::H264 {
            sps: Bytes::from_static(SPS),
            pps: Bytes::from_static(PPS),
        }
    }

    /// An AVCC access unit with one NAL unit of `len` bytes.
    fn au(nal_type: u8, len: usize) -> Vec<u8> {
        let mut v = (len as u32).to_be_bytes().to_vec();
        v.push(nal_type);
        v.extend(std::iter::repeat_n(0xab, len - 1));
        v
    }

    #[test]
    fn keyframe_gets_parameter_sets_and_fragments_within_the_mtu() {
        let mut p = PathPacketizer::default();
        let f = frame(0, 90_000, true, au(0x65, 5000));
        let rtp = p.packets(&h264(), &f).unwrap();
        // SPS, PPS, then FU-A fragments; marker on the last only.
        assert_eq!(&rtp.packets[0].payload[..], SPS);
        assert_eq!(&rtp.packets[1].payload[..], PPS);
        assert!(rtp.packets.len() > 5);
        assert!(rtp.packets[2].payload[0] & 0x1f == 28, "FU-A");
        assert!(rtp
            .packets
            .iter()
            .all(|x| x.payload.len() + RTP_HEADER_LEN <= WEBRTC_RTP_MTU));
        let markers: Vec<bool> = rtp.packets.iter().map(|x| x.marker).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert!(markers[markers.len() - 1]);
        assert!(rtp.packets.iter().all(|x| x.ts_delta == 0));
    }

    #[test]
    fn a_frame_is_packetized_once_for_all_viewers() {
        let mut p = PathPacketizer::default();
        let f = frame(0, 0, false, au(0x41, 100));
        let a = p.packets(&h264(), &f).unwrap();
        let b = p.packets(&h264(), &f).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a.packets[0].payload, &b.packets[0].payload));
    }

    #[test]
    fn g711_packets_advance_the_timestamp() {
        let mut p = PathPacketizer::default();
        let codec = Codec::Pcma { channels: 1 };
        let f = frame(1, 8000, false, vec![0xd5; 3000]);
        let rtp = p.packets(&codec, &f).unwrap();
        assert!(rtp.packets.len() >= 3);
        assert_eq!(rtp.packets[0].ts_delta, 0);
        assert_eq!(
            rtp.packets[1].ts_delta as usize,
            rtp.packets[0].payload.len()
        );
    }

    #[test]
    fn malformed_frame_is_an_error() {
        let mut p = PathPacketizer::default();
        let f = frame(0, 0, false, vec![0, 0, 0, 9, 1]);
        assert!(p.packets(&h264(), &f).is_err());
    }
}
