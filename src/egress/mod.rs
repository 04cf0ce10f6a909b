//! Egress: everything that serves a stream to viewers.

pub mod hls;
