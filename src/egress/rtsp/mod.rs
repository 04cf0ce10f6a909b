//! RTSP server (RFC 2326): re-serves each stream to RTSP readers.

pub mod sdp;
