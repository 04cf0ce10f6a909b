//! CMAF (ISO/IEC 23000-19) between the bus and the readers that write
//! fragmented MP4: [`fmp4`] writes the boxes (init segment, `moof`+`mdat`
//! fragments) and [`segmenter`] turns bus frames into an init segment and
//! fragments grouped into segments, on one output timeline per stream.
//! Pure: no files, sockets or clocks.
//!
//! Shared by LL-HLS (`egress::hls`: parts of about 200 ms, segments of
//! about a second) and recording (`egress::record`: fragments of about a
//! second, segments of an hour), so neither egress imports the other.

pub mod fmp4;
pub mod segmenter;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod testutil;
