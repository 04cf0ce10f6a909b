//! WebRTC egress over WHEP (draft-ietf-wish-whep): one str0m `Rtc` per
//! viewer. This is the sans-IO core; the socket task comes next.

pub mod annexb;
pub mod codecs;
pub mod demux;
pub mod offer;
pub mod session;
