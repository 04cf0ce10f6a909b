//! Everything that reads the bus and serves viewers.

pub mod rtsp;
