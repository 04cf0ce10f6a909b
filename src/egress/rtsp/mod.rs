//! The RTSP re-serve (RFC 2326): our own server on rtsp-types + sdp-types.
//! `session` is the pure protocol core, `framing` where each message in a
//! connection's input ends, `server` their tokio shell, `media` the shared
//! packetizer, `sdp` and `rtcp` the message builders.

pub mod framing;
pub mod media;
pub mod rtcp;
pub mod sdp;
pub mod server;
pub mod session;

#[cfg(test)]
mod jpeg_tests;

use std::sync::Arc;

use crate::bus::{Protocol, Track};

/// The RTSP re-serve as an [`crate::egress::Egress`]: every codec on the
/// bus has an RTP payload format and an SDP description ([`sdp`]), so every
/// track is carried.
pub struct RtspEgress;

impl crate::egress::Egress for RtspEgress {
    fn protocol(&self) -> Protocol {
        Protocol::Rtsp
    }

    fn label(&self) -> &'static str {
        "RTSP"
    }

    fn carriage(&self, tracks: &[Arc<Track>]) -> Vec<Result<(), String>> {
        tracks.iter().map(|_| Ok(())).collect()
    }
}
