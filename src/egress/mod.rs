//! Everything that reads the bus and serves viewers.

pub mod hls;
pub mod rtsp;
pub mod webrtc;
