//! Everything that reads the bus and serves viewers.

pub mod gso;
pub mod hls;
pub mod rtsp;
pub mod webrtc;
