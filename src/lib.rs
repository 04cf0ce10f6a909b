//! rtspgate: an RTSP-to-browser gateway. See `shared/DESIGN.md` for the architecture.

pub mod bus;
pub mod egress;
