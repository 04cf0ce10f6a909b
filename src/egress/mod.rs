//! Egress: serving streams to readers.

pub mod rtsp;
