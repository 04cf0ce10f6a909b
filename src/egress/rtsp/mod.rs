//! The RTSP re-serve (RFC 2326): our own server on rtsp-types + sdp-types.
//! `session` is the pure protocol core, `server` its tokio shell, `media`
//! the shared packetizer, `sdp` and `rtcp` the message builders.

pub mod media;
pub mod rtcp;
pub mod sdp;
pub mod server;
pub mod session;
