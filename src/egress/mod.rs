//! Everything that reads the bus and serves viewers.
//!
//! Each egress shows the same face to the API through [`Egress`]: which
//! tracks of a stream it carries and why not, and what it noticed about a
//! stream while serving it. Its sessions are entries of the one registry,
//! [`crate::bus::Sessions`].

pub mod gso;
pub mod hls;
pub mod record;
pub mod rtsp;
pub mod webrtc;

use std::sync::Arc;

use crate::bus::{Protocol, Stream, Track};

/// What an egress makes of a stream, for the API's stream list.
pub trait Egress: Send + Sync {
    /// The protocol its sessions register under; its name in the API.
    fn protocol(&self) -> Protocol;

    /// Its name in plain words (`RTSP`, `WebRTC`, `HLS`).
    fn label(&self) -> &'static str;

    /// For each track of a stream's track set, in order: `Ok(())` when this
    /// egress carries it, else why not, in plain words. Taken over the set
    /// because a choice may depend on the other tracks (HLS carries one
    /// video and one audio track).
    fn carriage(&self, tracks: &[Arc<Track>]) -> Vec<Result<(), String>>;

    /// What the egress noticed about `stream` while serving it (e.g.
    /// B-frames that WebRTC players show out of order), in plain words.
    fn notes(&self, _stream: &Stream) -> Vec<String> {
        Vec::new()
    }
}
