//! Low-Latency HLS, pure core: no sockets, tasks or HTTP; frames and
//! wall-clock time come in as values.

pub mod fmp4;
pub mod params;
pub mod playlist;
pub mod segmenter;

#[cfg(test)]
mod testutil;

pub use playlist::{
    init_uri, parse_uri, part_uri, segment_uri, write_multivariant, MediaPlaylist, PlaylistConfig,
    ReloadDecision, Resource, StreamInfo,
};
pub use segmenter::{
    hls_support, select_tracks, Notice, Segmenter, SegmenterConfig, SegmenterOutput,
    TrackSelection, UnsupportedTrack,
};
